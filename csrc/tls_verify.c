/*
** tls_verify.c: verification of peers: handshake callbacks (chain through
** the cache, allowed CN/hostname, ALPN), CRL and client SAN checks after the
** handshake.
*/
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include "tls.h"

static int note_idx = -1;

static const char *session_peer_check (pl_tls *t, X509 *leaf, char *msg, size_t msglen);

static void note_free (void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
                       long argl, void *argp) {
  (void)parent; (void)ad; (void)idx; (void)argl; (void)argp;
  free(ptr);
}

void tls_verify_init (void) {
  if (note_idx < 0)
    note_idx = CRYPTO_get_ex_new_index(CRYPTO_EX_INDEX_SSL, 0, NULL, NULL, NULL, note_free);
}

sslnote *note_get (SSL *ssl, int create) {
  sslnote *n;
  if (note_idx < 0) return NULL;
  n = (sslnote *)SSL_get_ex_data(ssl, note_idx);
  if (n == NULL && create) {
    n = (sslnote *)calloc(1, sizeof(*n));
    if (n != NULL && !SSL_set_ex_data(ssl, note_idx, n)) {
      free(n);
      n = NULL;
    }
  }
  return n;
}

/* ---------------------------------------------------------------------
** CRL: reloaded when the file changes, checked by serial (etcd's rule).
** The file is read and parsed without t->mu (the loop thread takes it for
** the chain cache: a slow read must not stall it); the result is installed
** under it.
*/
static void pending_locked (pl_tls *t, logent *e) {
  if (e != NULL && t->npending < MAX_PENDING) {
    *t->pending_tail = e;
    t->pending_tail = &e->next;
    t->npending++;
  }
  else logent_free(e);
}

/* Reads and parses the CRL file (PEM or DER); NULL with err filled. */
static X509_CRL *crl_read (const char *path, char *err, size_t errlen) {
  size_t len = 0;
  char *buf = x509_read_file(path, &len, err, errlen, NULL);
  X509_CRL *crl = NULL;
  if (buf == NULL) return NULL;
  if (len >= 10 && strstr(buf, "-----BEGIN") != NULL) {
    BIO *b = BIO_new_mem_buf(buf, (int)len);
    if (b != NULL) crl = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL);
    BIO_free(b);
  }
  else {
    const unsigned char *d = (const unsigned char *)buf;
    crl = d2i_X509_CRL(NULL, &d, (long)len);
  }
  ERR_clear_error();
  free(buf);
  if (crl == NULL) snprintf(err, errlen, "x509: malformed crl");
  return crl;
}

/* Beyond etcd: when the trusted CA issued the CRL, check its signature and
** freshness; only warn (revocations still apply). */
static void crl_warn_locked (pl_tls *t, X509_CRL *crl) {
  int i;
  for (i = 0; t->ca_certs != NULL && i < sk_X509_num(t->ca_certs); i++) {
    X509 *ca = sk_X509_value(t->ca_certs, i);
    if (X509_NAME_cmp(X509_get_subject_name(ca), X509_CRL_get_issuer(crl)) != 0) continue;
    if (X509_CRL_verify(crl, X509_get0_pubkey(ca)) != 1) {
      ERR_clear_error();
      pending_locked(t, logent_new("warn", "CRL signature verification failed", "crl-file",
                                   t->crl_file, NULL, NULL, NULL, NULL));
    }
    else {
      const ASN1_TIME *nu = X509_CRL_get0_nextUpdate(crl);
      if (nu != NULL && X509_cmp_current_time(nu) < 0) {
        char ts[40];
        x509_time_str(nu, ts, sizeof(ts));
        pending_locked(t, logent_new("warn", "CRL is past its nextUpdate", "crl-file", t->crl_file,
                                     "next-update", ts, NULL, NULL));
      }
    }
    break;
  }
}

/* Installs the result of a (re)load: the CRL, or its failure (fail closed). */
static void crl_install_locked (pl_tls *t, const filesig *sig, X509_CRL *crl, const char *err) {
  /* the CRL changed (not its first load): verify chains afresh.  Revocation
  ** is checked after every handshake anyway; this is belt and braces. */
  if (t->crl_ever) vcache_flush_locked(t->vc);
  t->crl_ever = 1;
  X509_CRL_free(t->crl);
  t->crl = crl;
  reload_done(&t->crl_rl, sig, 1, crl != NULL);
  if (crl == NULL) {
    t->crl_rl.loaded = 0;
    snprintf(t->crl_err, sizeof(t->crl_err), "%s", err);
  }
  else {
    t->crl_err[0] = '\0';
    crl_warn_locked(t, crl);
  }
}

/* The serial of the leaf or a chain certificate on the CRL: "revoked". */
static const char *crl_match_locked (pl_tls *t, SSL *ssl, char *msg, size_t msglen) {
  X509 *leaf = SSL_get0_peer_certificate(ssl);
  STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
  int i, n = chain ? sk_X509_num(chain) : 0;
  for (i = -1; i < n; i++) {
    X509 *x = i < 0 ? leaf : sk_X509_value(chain, i);
    X509_REVOKED *rev = NULL;
    if (i >= 0 && x == leaf) continue;
    if (X509_CRL_get0_by_serial(t->crl, &rev, X509_get0_serialNumber(x)) != 0) {
      char hex[100];
      x509_serial_hex(x, hex, sizeof(hex));
      snprintf(msg, msglen, "transport: certificate serial %s revoked", hex);
      return "revoked";
    }
  }
  return NULL;
}

static const char *crl_check (pl_tls *t, SSL *ssl, char *msg, size_t msglen) {
  filesig sig;
  const char *reason = NULL;
  int due;
  if (SSL_get0_peer_certificate(ssl) == NULL) return NULL;
  sig_of(t->crl_file, &sig);
  uv_mutex_lock(&t->mu);
  if (sig.err != 0) {
    t->crl_rl.loaded = 0;
    X509_CRL_free(t->crl);
    t->crl = NULL;
    uv_mutex_unlock(&t->mu);
    go_errno(msg, msglen, "open", t->crl_file, sig.err);
    return "crl";
  }
  due = reload_due(&t->crl_rl, &sig, 1);
  if (due == RELOAD_NOW) {
    char err[256];
    X509_CRL *crl;
    uv_mutex_unlock(&t->mu);
    crl = crl_read(t->crl_file, err, sizeof(err));
    uv_mutex_lock(&t->mu);
    crl_install_locked(t, &sig, crl, err);
  }
  if (t->crl == NULL) {
    snprintf(msg, msglen, "%s", t->crl_err[0] ? t->crl_err : "x509: malformed crl");
    reason = "crl";
  }
  else reason = crl_match_locked(t, ssl, msg, msglen);
  uv_mutex_unlock(&t->mu);
  return reason;
}

/* ---------------------------------------------------------------------
** Client SAN against the remote address (etcd's checkCertSAN).
*/
static int parse_ip (const char *s, unsigned char out[16]) {
  static const unsigned char v4pre[12] = {0,0,0,0,0,0,0,0,0,0,0xff,0xff};
  unsigned char b[16];
  if (inet_pton(AF_INET, s, b) == 1) {
    memcpy(out, v4pre, 12);
    memcpy(out + 12, b, 4);
    return 1;
  }
  if (inet_pton(AF_INET6, s, out) == 1) return 1;
  return 0;
}

static int san_ip_match (x509_sans *s, const char *remote_ip) {
  static const unsigned char v4pre[12] = {0,0,0,0,0,0,0,0,0,0,0xff,0xff};
  unsigned char r[16], c[16];
  int i;
  if (!parse_ip(remote_ip, r)) return 0;
  for (i = 0; i < s->nip; i++) {
    if (s->iplen[i] == 4) { memcpy(c, v4pre, 12); memcpy(c + 12, s->ip[i], 4); }
    else memcpy(c, s->ip[i], 16);
    if (memcmp(c, r, 16) == 0) return 1;
  }
  return 0;
}

static int has_suffix (const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Reverse lookup of the remote IP, then forward lookups of the plain DNS
** SANs.  Returns 1 on a match; else 0 with the last lookup error in lerr. */
static int host_in_dns (const char *host, strlist *dns, char *lerr, size_t lerrlen) {
  unsigned char ipb[16];
  struct sockaddr_storage ss;
  socklen_t sl;
  char name[NI_MAXHOST];
  int i, r;
  lerr[0] = '\0';
  memset(&ss, 0, sizeof(ss));
  if (inet_pton(AF_INET, host, ipb) == 1) {
    struct sockaddr_in *a = (struct sockaddr_in *)(void *)&ss;
    a->sin_family = AF_INET;
    memcpy(&a->sin_addr, ipb, 4);
    sl = sizeof(*a);
  }
  else {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)(void *)&ss;
    a->sin6_family = AF_INET6;
    if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) {
      snprintf(lerr, lerrlen, "lookup %s: invalid address", host);
      return 0;
    }
    sl = sizeof(*a);
  }
  r = getnameinfo((struct sockaddr *)(void *)&ss, sl, name, sizeof(name), NULL, 0, NI_NAMEREQD);
  if (r == 0) {
    size_t n = strlen(name);
    if (n > 0 && name[n - 1] == '.') name[n - 1] = '\0';
    for (i = 0; i < dns->n; i++) {
      const char *d = dns->v[i];
      if (strncmp(d, "*.", 2) == 0 ? has_suffix(name, d + 1) : strcmp(d, name) == 0)
        return 1;
    }
  }
  else snprintf(lerr, lerrlen, "lookup %s: %s", host,
                r == EAI_NONAME ? "no such host" : gai_strerror(r));
  for (i = 0; i < dns->n; i++) {
    struct addrinfo hints, *res = NULL, *ai;
    if (strncmp(dns->v[i], "*.", 2) == 0) continue;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    r = getaddrinfo(dns->v[i], NULL, &hints, &res);
    if (r != 0) {
      snprintf(lerr, lerrlen, "lookup %s: %s", dns->v[i],
               (r == EAI_NONAME || r == EAI_NODATA) ? "no such host" : gai_strerror(r));
      continue;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
      char a[INET6_ADDRSTRLEN];
      if (getnameinfo(ai->ai_addr, ai->ai_addrlen, a, sizeof(a), NULL, 0, NI_NUMERICHOST) != 0)
        continue;
      if (strcmp(a, host) == 0) { freeaddrinfo(res); return 1; }
    }
    freeaddrinfo(res);
  }
  return 0;
}

static const char *san_check (SSL *ssl, const char *remote_ip, char *msg, size_t msglen) {
  X509 *leaf = SSL_get0_peer_certificate(ssl);
  x509_sans s;
  const char *reason = NULL;
  if (leaf == NULL) return NULL;
  x509_sans_get(leaf, &s);
  if (s.malformed) {
    snprintf(msg, msglen, "x509: SAN dNSName is malformed");
    reason = "san_mismatch";
    goto out;
  }
  if (s.nip == 0 && s.ndns == 0) goto out;
  if (s.nip > 0) {
    if (san_ip_match(&s, remote_ip)) goto out;
    if (s.ndns == 0) {
      char list[512], b[64];
      size_t used = 0;
      int i;
      list[0] = '\0';
      for (i = 0; i < s.nip && used < sizeof(list); i++) {
        if (!x509_ip_str(s.ip[i], s.iplen[i], b, sizeof(b))) continue;
        used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", used ? ", " : "", b);
      }
      snprintf(msg, msglen, "x509: certificate is valid for %s, not %s", list, remote_ip);
      reason = "san_mismatch";
      goto out;
    }
  }
  {
    char lerr[300], q[600];
    if (host_in_dns(remote_ip, &s.dns, lerr, sizeof(lerr))) goto out;
    go_quote_list(q, sizeof(q), &s.dns);
    snprintf(msg, msglen, "tls: \"%s\" does not match any of DNSNames %s%s%s%s", remote_ip, q,
             lerr[0] ? " (" : "", lerr, lerr[0] ? ")" : "");
    reason = "san_mismatch";
  }
out:
  x509_sans_free(&s);
  return reason;
}

/* The CRL check stats the file and, when it changed, reads and parses it:
** always on the thread pool, so that a slow file system or a large CRL
** never stalls the loop. */
int pl_tls_post_check_may_block (pl_tls *t, SSL *ssl, const char *remote_ip) {
  X509 *leaf = SSL_get0_peer_certificate(ssl);
  x509_sans s;
  int block;
  if (leaf != NULL && t->crl_file != NULL) return 1;
  if (t->skip_san || remote_ip == NULL || leaf == NULL) return 0;
  x509_sans_get(leaf, &s);
  block = s.ndns > 0 && !(s.nip > 0 && san_ip_match(&s, remote_ip));
  x509_sans_free(&s);
  return block;
}

const char *pl_tls_post_check (pl_tls *t, SSL *ssl, const char *remote_ip,
                               char *msg, size_t msglen) {
  const char *r = NULL;
  msg[0] = '\0';
  if (SSL_get0_peer_certificate(ssl) == NULL) return NULL;
  if (t->verify_client && SSL_session_reused(ssl))
    r = session_peer_check(t, SSL_get0_peer_certificate(ssl), msg, msglen);
  if (r == NULL && !t->skip_san && remote_ip != NULL) r = san_check(ssl, remote_ip, msg, msglen);
  if (r == NULL && t->crl_file != NULL) r = crl_check(t, ssl, msg, msglen);
  return r;
}



/* etcd's allowed CN / hostname rule on a leaf: 1 when it passes (or no
** list is set). */
static int leaf_allowed (pl_tls *t, X509 *leaf) {
  int i;
  if (t->allowed_cns.n == 0 && t->allowed_hostnames.n == 0) return 1;
  if (t->allowed_cns.n > 0) {
    char cn[256];
    if (x509_leaf_cn(leaf, cn, sizeof(cn)))
      for (i = 0; i < t->allowed_cns.n; i++)
        if (strcmp(cn, t->allowed_cns.v[i]) == 0) return 1;
    return 0;
  }
  for (i = 0; i < t->allowed_hostnames.n; i++) {
    const char *h = t->allowed_hostnames.v[i];
    unsigned char ipb[16];
    int r;
    if (inet_pton(AF_INET, h, ipb) == 1 || inet_pton(AF_INET6, h, ipb) == 1)
      r = X509_check_ip_asc(leaf, h, 0);
    else
      r = X509_check_host(leaf, h, 0, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT |
                          X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL);
    if (r == 1) return 1;
  }
  ERR_clear_error();
  return 0;
}

/* Chain verification through the cache (when on), then etcd's allowed CN /
** hostname rule on the leaf.  Installed when client certs are verified and
** either the cache is on or an allow list is set. */
int verify_allowed_cb (X509_STORE_CTX *xs, void *arg) {
  pl_tls *t = (pl_tls *)arg;
  int ok = vcache_verify(t, xs);
  if (ok <= 0) return ok;
  if (leaf_allowed(t, X509_STORE_CTX_get0_cert(xs))) return 1;
  {
    SSL *ssl = (SSL *)X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    sslnote *n = ssl ? note_get(ssl, 1) : NULL;
    if (n != NULL) n->cn_rejected = 1;
  }
  X509_STORE_CTX_set_error(xs, X509_V_ERR_CERT_REJECTED);   /* alert bad_certificate */
  return 0;
}

/* ---------------------------------------------------------------------
** Resumption: a resumed session skips chain verification, so what may have
** changed since the session was made is checked again on the client
** certificate it carries: validity against the current clock and the allow
** lists (the CRL is checked after every handshake).  As Go does, such a
** session is not resumed (the client falls back to a full handshake, which
** verifies afresh); a session resumed from the server cache (TLS 1.2 session
** IDs, no ticket callback) is refused after the handshake instead.
*/

/* NULL when leaf may still be used, else a reason with etcd-like words. */
static const char *session_peer_check (pl_tls *t, X509 *leaf, char *msg, size_t msglen) {
  time_t now = tls_now();
  int late = X509_cmp_time(X509_get0_notAfter(leaf), &now) < 0;
  if (late || X509_cmp_time(X509_get0_notBefore(leaf), &now) > 0) {
    char ts[40], lim[40];
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    x509_time_str(late ? X509_get0_notAfter(leaf) : X509_get0_notBefore(leaf), lim, sizeof(lim));
    snprintf(msg, msglen, "tls: failed to verify client certificate: x509: certificate has "
             "expired or is not yet valid: current time %s is %s %s", ts, late ? "after" : "before", lim);
    return "bad_client_cert";
  }
  if (!leaf_allowed(t, leaf)) {
    snprintf(msg, msglen, "client certificate authentication failed");
    return "cn_not_allowed";
  }
  return NULL;
}

/* The ticket decryption callback (TLS 1.2 tickets and TLS 1.3 PSKs). */
int ticket_decrypt_cb (SSL *ssl, SSL_SESSION *ss, const unsigned char *keyname,
                       size_t keynamelen, SSL_TICKET_STATUS status, void *arg) {
  pl_tls *t = (pl_tls *)arg;
  (void)ssl; (void)keyname; (void)keynamelen;
  switch (status) {
    case SSL_TICKET_SUCCESS:
    case SSL_TICKET_SUCCESS_RENEW: {
      X509 *leaf = SSL_SESSION_get0_peer(ss);
      char msg[256];
      if (t->verify_client && (leaf == NULL || session_peer_check(t, leaf, msg, sizeof(msg)) != NULL))
        return SSL_TICKET_RETURN_IGNORE_RENEW;
      return status == SSL_TICKET_SUCCESS ? SSL_TICKET_RETURN_USE : SSL_TICKET_RETURN_USE_RENEW;
    }
    case SSL_TICKET_EMPTY:
    case SSL_TICKET_NO_DECRYPT:
      return SSL_TICKET_RETURN_IGNORE_RENEW;
    case SSL_TICKET_NONE:
      return SSL_TICKET_RETURN_IGNORE;
    default:
      return SSL_TICKET_RETURN_ABORT;
  }
}

/* Records the validity bound of an expired (or not yet valid) certificate
** for Go's error text; never changes the verdict. */
int verify_note_cb (int ok, X509_STORE_CTX *xs) {
  if (!ok) {
    int e = X509_STORE_CTX_get_error(xs);
    if (e == X509_V_ERR_CERT_HAS_EXPIRED || e == X509_V_ERR_CERT_NOT_YET_VALID) {
      SSL *ssl = (SSL *)X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
      X509 *x = X509_STORE_CTX_get_current_cert(xs);
      sslnote *n = ssl ? note_get(ssl, 1) : NULL;
      if (n != NULL && x != NULL)
        x509_time_str(e == X509_V_ERR_CERT_HAS_EXPIRED ? X509_get0_notAfter(x) : X509_get0_notBefore(x),
                 n->bad_time, sizeof(n->bad_time));
    }
  }
  return ok;
}

/* ALPN as Go: server preference; a client offering http/1.1 (when we offer
** h2) falls back to no ALPN; any other mismatch is no_application_protocol. */
int alpn_cb (SSL *ssl, const unsigned char **out, unsigned char *outlen,
                    const unsigned char *in, unsigned int inlen, void *arg) {
  pl_tls *t = (pl_tls *)arg;
  size_t si;
  unsigned int ci;
  int fallback = 0;
  for (si = 0; si < t->alpn_wirelen; si += 1 + t->alpn_wire[si]) {
    unsigned sl = t->alpn_wire[si];
    for (ci = 0; ci < inlen && ci + 1 + in[ci] <= inlen; ci += 1u + in[ci]) {
      if (in[ci] == sl && memcmp(in + ci + 1, t->alpn_wire + si + 1, sl) == 0) {
        *out = t->alpn_wire + si + 1;
        *outlen = (unsigned char)sl;
        return SSL_TLSEXT_ERR_OK;
      }
      if (sl == 2 && memcmp(t->alpn_wire + si + 1, "h2", 2) == 0 &&
          in[ci] == 8 && memcmp(in + ci + 1, "http/1.1", 8) == 0)
        fallback = 1;
    }
  }
  if (fallback) return SSL_TLSEXT_ERR_NOACK;
  {
    sslnote *n = note_get(ssl, 1);
    if (n != NULL) {
      size_t used = 0;
      used += (size_t)snprintf(n->alpn_offered, sizeof(n->alpn_offered), "[");
      for (ci = 0; ci < inlen && ci + 1 + in[ci] <= inlen && used < sizeof(n->alpn_offered);
           ci += 1u + in[ci])
        used += (size_t)snprintf(n->alpn_offered + used, sizeof(n->alpn_offered) - used,
                                 "%s%.*s", ci ? " " : "", (int)in[ci], (const char *)in + ci + 1);
      if (used < sizeof(n->alpn_offered))
        snprintf(n->alpn_offered + used, sizeof(n->alpn_offered) - used, "]");
    }
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

