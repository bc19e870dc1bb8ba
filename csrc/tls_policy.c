/*
** tls_policy.c: the peerlisten.TlsPolicy userdata.  One pl_tls owns one
** server SSL_CTX plus etcd's peer checks (allowed CNs/hostnames, client SAN
** against the remote address, CRL) and the certificate reload logic.
** conn.c and listener.c use it only through the pl_tls_* contract in
** peerlisten.h; nothing outside this file reads struct pl_tls.
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
#include <netdb.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "peerlisten.h"

#define TLS_CLOSED_MSG "attempt to use a closed TLS policy"
#define MAX_PENDING 64

/* ---------------------------------------------------------------------
** Cipher suites: every name etcd (Go 1.19) accepts, with its IANA id,
** OpenSSL name and TLS versions.  v13 marks TLS 1.3 suites (set with
** SSL_CTX_set_ciphersuites); old marks suites that exist for TLS 1.0-1.2.
*/
typedef struct cipher_def {
  const char *name;
  unsigned id;
  const char *ossl;
  int v13;        /* TLS 1.3 suite */
  int old;        /* also TLS 1.0/1.1 */
  int legacy;     /* RC4/3DES: accepted, never usable with OpenSSL 3 */
} cipher_def;

static const cipher_def cipher_table[] = {
  {"TLS_RSA_WITH_RC4_128_SHA", 0x0005, "RC4-SHA", 0, 1, 1},
  {"TLS_RSA_WITH_3DES_EDE_CBC_SHA", 0x000A, "DES-CBC3-SHA", 0, 1, 1},
  {"TLS_RSA_WITH_AES_128_CBC_SHA", 0x002F, "AES128-SHA", 0, 1, 0},
  {"TLS_RSA_WITH_AES_256_CBC_SHA", 0x0035, "AES256-SHA", 0, 1, 0},
  {"TLS_RSA_WITH_AES_128_CBC_SHA256", 0x003C, "AES128-SHA256", 0, 0, 0},
  {"TLS_RSA_WITH_AES_128_GCM_SHA256", 0x009C, "AES128-GCM-SHA256", 0, 0, 0},
  {"TLS_RSA_WITH_AES_256_GCM_SHA384", 0x009D, "AES256-GCM-SHA384", 0, 0, 0},
  {"TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", 0xC007, "ECDHE-ECDSA-RC4-SHA", 0, 1, 1},
  {"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", 0xC009, "ECDHE-ECDSA-AES128-SHA", 0, 1, 0},
  {"TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", 0xC00A, "ECDHE-ECDSA-AES256-SHA", 0, 1, 0},
  {"TLS_ECDHE_RSA_WITH_RC4_128_SHA", 0xC011, "ECDHE-RSA-RC4-SHA", 0, 1, 1},
  {"TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", 0xC012, "ECDHE-RSA-DES-CBC3-SHA", 0, 1, 1},
  {"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", 0xC013, "ECDHE-RSA-AES128-SHA", 0, 1, 0},
  {"TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", 0xC014, "ECDHE-RSA-AES256-SHA", 0, 1, 0},
  {"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", 0xC023, "ECDHE-ECDSA-AES128-SHA256", 0, 0, 0},
  {"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", 0xC027, "ECDHE-RSA-AES128-SHA256", 0, 0, 0},
  {"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", 0xC02B, "ECDHE-ECDSA-AES128-GCM-SHA256", 0, 0, 0},
  {"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", 0xC02C, "ECDHE-ECDSA-AES256-GCM-SHA384", 0, 0, 0},
  {"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 0xC02F, "ECDHE-RSA-AES128-GCM-SHA256", 0, 0, 0},
  {"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", 0xC030, "ECDHE-RSA-AES256-GCM-SHA384", 0, 0, 0},
  {"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", 0xCCA8, "ECDHE-RSA-CHACHA20-POLY1305", 0, 0, 0},
  {"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", 0xCCA9, "ECDHE-ECDSA-CHACHA20-POLY1305", 0, 0, 0},
  {"TLS_AES_128_GCM_SHA256", 0x1301, "TLS_AES_128_GCM_SHA256", 1, 0, 0},
  {"TLS_AES_256_GCM_SHA384", 0x1302, "TLS_AES_256_GCM_SHA384", 1, 0, 0},
  {"TLS_CHACHA20_POLY1305_SHA256", 0x1303, "TLS_CHACHA20_POLY1305_SHA256", 1, 0, 0},
  /* the two legacy aliases etcd accepts */
  {"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", 0xCCA8, "ECDHE-RSA-CHACHA20-POLY1305", 0, 0, 0},
  {"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", 0xCCA9, "ECDHE-ECDSA-CHACHA20-POLY1305", 0, 0, 0},
};
#define NCIPHERS ((int)(sizeof(cipher_table) / sizeof(cipher_table[0])))

/* TLS 1.2 suites used when no cipher_suites are given: ECDHE only, AEAD
** first (what current Go enables by default), in server preference order. */
static const char default_cipher_list[] =
  "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
  "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:"
  "ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA";

static int cipher_avail[NCIPHERS];   /* -1 no, 1 yes, 0 not probed yet */

static const cipher_def *cipher_by_name (const char *name) {
  int i;
  for (i = 0; i < NCIPHERS; i++)
    if (strcmp(cipher_table[i].name, name) == 0) return &cipher_table[i];
  return NULL;
}

static const cipher_def *cipher_by_id (unsigned id) {
  int i;
  for (i = 0; i < NCIPHERS; i++)
    if (cipher_table[i].id == id) return &cipher_table[i];
  return NULL;
}

/* Whether this OpenSSL can negotiate the suite (probed once, loop thread). */
static int cipher_available (const cipher_def *c) {
  int i = (int)(c - cipher_table);
  if (cipher_avail[i] == 0) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    int ok = 0;
    if (ctx != NULL) {
      ok = c->v13 ? SSL_CTX_set_ciphersuites(ctx, c->ossl)
                  : SSL_CTX_set_cipher_list(ctx, c->ossl);
      SSL_CTX_free(ctx);
    }
    ERR_clear_error();
    cipher_avail[i] = ok == 1 ? 1 : -1;
  }
  return cipher_avail[i] == 1;
}

/* ---------------------------------------------------------------------
** The policy state.
*/
typedef struct filesig {
  int err;                 /* 0, or the errno of a failed stat */
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtim, ctim;
} filesig;

typedef struct logent {
  struct logent *next;
  char *level, *msg;
  int nf;
  char *kv[8];             /* key, value, key, value, ... */
} logent;

typedef struct strlist {
  int n;
  char **v;
} strlist;

struct pl_tls {
  int refs;                      /* loop thread only */
  SSL_CTX *ctx;
  /* configuration (immutable after construction) */
  char *cert_file, *key_file, *client_cert_file, *client_key_file;
  char *trusted_ca_file, *crl_file;
  int client_cert_auth, verify_client, skip_san, session_tickets;
  int min_version, max_version;  /* TLS1_2_VERSION / TLS1_3_VERSION, 0 unset */
  strlist ciphers, allowed_cns, allowed_hostnames, alpn;
  unsigned char *alpn_wire;
  size_t alpn_wirelen;
  int alpn_has_h2;
  double handshake_timeout;
  STACK_OF(X509) *ca_certs;      /* certificates of trusted_ca_file */
  logent *warnings;              /* construction warnings (immutable) */
  /* server certificate reload (loop thread only) */
  filesig cert_sig, key_sig;
  /* everything below is shared with the thread pool: guarded by mu */
  uv_mutex_t mu;
  int mu_ok;
  struct vcache *vc;             /* verified-chain cache, or NULL (see below) */
  filesig crl_sig;
  int crl_loaded, crl_ever;
  X509_CRL *crl;
  char crl_err[256];
  logent *pending, **pending_tail;
  int npending;
};

/* Per-SSL notes kept only when a handshake fails in our callbacks. */
typedef struct sslnote {
  int cn_rejected;
  char bad_time[40];         /* notAfter/notBefore of an expired cert */
  char alpn_offered[300];
} sslnote;

static int note_idx = -1;

struct vcache;
static void vcache_flush_locked (struct vcache *c);

static void note_free (void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
                       long argl, void *argp) {
  (void)parent; (void)ad; (void)idx; (void)argl; (void)argp;
  free(ptr);
}

static sslnote *note_get (SSL *ssl, int create) {
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
** Small helpers.
*/
static char *xstrdup (const char *s) {
  size_t n = strlen(s) + 1;
  char *d = (char *)malloc(n);
  if (d != NULL) memcpy(d, s, n);
  return d;
}

static void strlist_free (strlist *l) {
  int i;
  for (i = 0; i < l->n; i++) free(l->v[i]);
  free(l->v);
  l->v = NULL;
  l->n = 0;
}

/* Go's wording of an errno: strerror with a lower-case first letter. */
static void go_errno (char *buf, size_t len, const char *op, const char *path, int e) {
  char s[128];
  snprintf(s, sizeof(s), "%s", strerror(e));
  s[0] = (char)tolower((unsigned char)s[0]);
  snprintf(buf, len, "%s %s: %s", op, path, s);
}

/* Reads a whole file; on failure writes Go's "open <path>: ..." error and
** the errno into *eno (when eno is not NULL). */
static char *read_file (const char *path, size_t *len, char *err, size_t errlen, int *eno) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  size_t cap = 0, n = 0;
  if (f == NULL) {
    int e = errno;
    go_errno(err, errlen, "open", path, e);
    if (eno) *eno = e;
    return NULL;
  }
  for (;;) {
    size_t r;
    if (n == cap) {
      char *nb;
      cap = cap ? cap * 2 : 8192;
      nb = (char *)realloc(buf, cap + 1);
      if (nb == NULL) {
        free(buf);
        fclose(f);
        if (eno) *eno = ENOMEM;
        snprintf(err, errlen, "read %s: out of memory", path);
        return NULL;
      }
      buf = nb;
    }
    r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (r == 0) {
      if (ferror(f)) {
        int e = errno;
        free(buf);
        fclose(f);
        if (eno) *eno = e;
        go_errno(err, errlen, "read", path, e);
        return NULL;
      }
      break;
    }
  }
  fclose(f);
  if (buf == NULL) buf = (char *)malloc(1);
  if (buf == NULL) {
    snprintf(err, errlen, "read %s: out of memory", path);
    return NULL;
  }
  buf[n] = '\0';
  *len = n;
  return buf;
}

static void sig_of (const char *path, filesig *s) {
  struct stat st;
  memset(s, 0, sizeof(*s));
  if (stat(path, &st) != 0) {
    s->err = errno ? errno : ENOENT;
    return;
  }
  s->dev = st.st_dev;
  s->ino = st.st_ino;
  s->size = st.st_size;
  s->mtim = st.st_mtim;
  s->ctim = st.st_ctim;
}

static int sig_eq (const filesig *a, const filesig *b) {
  return a->err == b->err && a->dev == b->dev && a->ino == b->ino &&
         a->size == b->size && a->mtim.tv_sec == b->mtim.tv_sec &&
         a->mtim.tv_nsec == b->mtim.tv_nsec && a->ctim.tv_sec == b->ctim.tv_sec &&
         a->ctim.tv_nsec == b->ctim.tv_nsec;
}

/* Log entries: level, msg, then up to 4 key/value string pairs (NULL ends). */
static logent *logent_new (const char *level, const char *msg, const char *k1,
                           const char *v1, const char *k2, const char *v2,
                           const char *k3, const char *v3) {
  logent *e = (logent *)calloc(1, sizeof(*e));
  const char *kv[6];
  int i;
  if (e == NULL) return NULL;
  kv[0] = k1; kv[1] = v1; kv[2] = k2; kv[3] = v2; kv[4] = k3; kv[5] = v3;
  e->level = xstrdup(level);
  e->msg = xstrdup(msg);
  for (i = 0; i < 6 && kv[i] != NULL; i += 2) {
    e->kv[e->nf * 2] = xstrdup(kv[i]);
    e->kv[e->nf * 2 + 1] = xstrdup(kv[i + 1] ? kv[i + 1] : "");
    e->nf++;
  }
  return e;
}

static void logent_free (logent *e) {
  while (e != NULL) {
    logent *next = e->next;
    int i;
    for (i = 0; i < e->nf * 2; i++) free(e->kv[i]);
    free(e->level);
    free(e->msg);
    free(e);
    e = next;
  }
}

/* Pushes {level=, msg=, fields={...}} for one entry, or with flat set the
** fields beside level and msg: {level=, msg=, ["cert-file"]=, ...} (the
** pending-log form of the peerlisten.h contract). */
static void logent_push (lua_State *L, const logent *e, int flat) {
  int i;
  lua_createtable(L, 0, 3 + e->nf);
  lua_pushstring(L, e->level ? e->level : "warn");
  lua_setfield(L, -2, "level");
  lua_pushstring(L, e->msg ? e->msg : "");
  lua_setfield(L, -2, "msg");
  if (!flat) lua_createtable(L, 0, e->nf);
  for (i = 0; i < e->nf; i++) {
    if (e->kv[i * 2] == NULL) continue;
    lua_pushstring(L, e->kv[i * 2 + 1] ? e->kv[i * 2 + 1] : "");
    lua_setfield(L, -2, e->kv[i * 2]);
  }
  if (!flat) lua_setfield(L, -2, "fields");
}

/* Queues a runtime warning (any thread; takes mu). */
static void pending_add (pl_tls *t, logent *e) {
  if (e == NULL) return;
  uv_mutex_lock(&t->mu);
  if (t->npending >= MAX_PENDING) {
    uv_mutex_unlock(&t->mu);
    logent_free(e);
    return;
  }
  *t->pending_tail = e;
  t->pending_tail = &e->next;
  t->npending++;
  uv_mutex_unlock(&t->mu);
}

static void warning_add (pl_tls *t, logent *e) {
  logent **p = &t->warnings;
  if (e == NULL) return;
  while (*p != NULL) p = &(*p)->next;
  *p = e;
}

/* Go's %q of a string list: ["a" "b"]. */
static void go_quote_list (char *buf, size_t len, const strlist *l) {
  size_t n = 0;
  int i;
  buf[0] = '\0';
  n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "[");
  for (i = 0; i < l->n && n < len; i++) {
    const char *s;
    n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%s\"", i ? " " : "");
    for (s = l->v[i]; *s && n + 2 < len; s++) {
      if (*s == '"' || *s == '\\') buf[n++] = '\\';
      buf[n++] = *s;
    }
    if (n < len) buf[n] = '\0';
    n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "\"");
  }
  if (n < len) snprintf(buf + n, len - n, "]");
}

/* ---------------------------------------------------------------------
** Certificate and key loading, worded like Go's tls.LoadX509KeyPair.
*/
typedef struct pemblock {
  char *name;
  unsigned char *data;
  long len;
} pemblock;

/* Splits PEM text into blocks (invalid blocks are skipped, as Go does).
** Returns the number of blocks; *out is malloc'ed (free with pem_free). */
static int pem_split (const char *buf, size_t len, pemblock **out) {
  BIO *b = BIO_new_mem_buf(buf, (int)len);
  pemblock *v = NULL;
  int n = 0, cap = 0;
  *out = NULL;
  if (b == NULL) return 0;
  for (;;) {
    char *name = NULL, *header = NULL;
    unsigned char *data = NULL;
    long dlen = 0;
    if (!PEM_read_bio(b, &name, &header, &data, &dlen)) {
      unsigned long e = ERR_peek_last_error();
      ERR_clear_error();
      if (ERR_GET_REASON(e) == PEM_R_NO_START_LINE || BIO_pending(b) == 0) break;
      continue;   /* a broken block: skip it and go on */
    }
    OPENSSL_free(header);
    if (n == cap) {
      pemblock *nv;
      cap = cap ? cap * 2 : 4;
      nv = (pemblock *)realloc(v, (size_t)cap * sizeof(*v));
      if (nv == NULL) {
        OPENSSL_free(name);
        OPENSSL_free(data);
        break;
      }
      v = nv;
    }
    v[n].name = name;
    v[n].data = data;
    v[n].len = dlen;
    n++;
  }
  BIO_free(b);
  *out = v;
  return n;
}

static void pem_free (pemblock *v, int n) {
  int i;
  for (i = 0; i < n; i++) {
    OPENSSL_free(v[i].name);
    OPENSSL_free(v[i].data);
  }
  free(v);
}

static void skipped_types (char *buf, size_t len, pemblock *v, int n, const char *skip) {
  size_t used = 0;
  int i, first = 1;
  buf[0] = '\0';
  used += (size_t)snprintf(buf, len, "[");
  for (i = 0; i < n && used < len; i++) {
    if (skip != NULL && strcmp(v[i].name, skip) == 0) continue;
    used += (size_t)snprintf(buf + used, len - used, "%s%s", first ? "" : " ", v[i].name);
    first = 0;
  }
  if (used < len) snprintf(buf + used, len - used, "]");
}

static int is_key_block (const char *name) {
  size_t n = strlen(name);
  return strcmp(name, "PRIVATE KEY") == 0 ||
         (n > 12 && strcmp(name + n - 12, " PRIVATE KEY") == 0);
}

typedef struct certpair {
  X509 *cert;
  STACK_OF(X509) *chain;
  EVP_PKEY *key;
} certpair;

static void pair_free (certpair *p) {
  X509_free(p->cert);
  sk_X509_pop_free(p->chain, X509_free);
  EVP_PKEY_free(p->key);
  p->cert = NULL;
  p->chain = NULL;
  p->key = NULL;
}

/* Loads and checks a certificate/key pair.  Returns 0 and fills *p, or -1
** with Go's wording in err; *code_errno gets the errno of a file error. */
static int pair_load (const char *certfile, const char *keyfile, certpair *p,
                      char *err, size_t errlen, int *file_errno) {
  char *cbuf = NULL, *kbuf = NULL;
  size_t clen = 0, klen = 0;
  pemblock *cb = NULL, *kb = NULL;
  int nc = 0, nk = 0, i, rc = -1, ncert = 0, ki = -1;
  memset(p, 0, sizeof(*p));
  *file_errno = 0;
  cbuf = read_file(certfile, &clen, err, errlen, file_errno);
  if (cbuf == NULL) goto done;
  kbuf = read_file(keyfile, &klen, err, errlen, file_errno);
  if (kbuf == NULL) goto done;
  nc = pem_split(cbuf, clen, &cb);
  for (i = 0; i < nc; i++) {
    const unsigned char *d = cb[i].data;
    X509 *x;
    if (strcmp(cb[i].name, "CERTIFICATE") != 0) continue;
    x = d2i_X509(NULL, &d, cb[i].len);
    if (x == NULL) {
      ERR_clear_error();
      snprintf(err, errlen, "x509: malformed certificate");
      goto done;
    }
    if (p->cert == NULL) p->cert = x;
    else {
      if (p->chain == NULL) p->chain = sk_X509_new_null();
      if (p->chain == NULL || !sk_X509_push(p->chain, x)) {
        X509_free(x);
        snprintf(err, errlen, "tls: out of memory");
        goto done;
      }
    }
    ncert++;
  }
  if (ncert == 0) {
    if (nc == 0) snprintf(err, errlen, "tls: failed to find any PEM data in certificate input");
    else {
      char types[256];
      skipped_types(types, sizeof(types), cb, nc, NULL);
      snprintf(err, errlen, "tls: failed to find \"CERTIFICATE\" PEM block in certificate input "
               "after skipping PEM blocks of the following types: %s", types);
    }
    goto done;
  }
  nk = pem_split(kbuf, klen, &kb);
  for (i = 0; i < nk; i++)
    if (is_key_block(kb[i].name)) { ki = i; break; }
  if (ki < 0) {
    int onlycert = nk > 0;
    for (i = 0; i < nk; i++)
      if (strcmp(kb[i].name, "CERTIFICATE") != 0) onlycert = 0;
    if (nk == 0) snprintf(err, errlen, "tls: failed to find any PEM data in key input");
    else if (onlycert)
      snprintf(err, errlen, "tls: found a certificate rather than a key in the PEM for the private key");
    else {
      char types[256];
      skipped_types(types, sizeof(types), kb, nk, NULL);
      snprintf(err, errlen, "tls: failed to find \"PRIVATE KEY\" PEM block in key input "
               "after skipping PEM blocks of the following types: %s", types);
    }
    goto done;
  }
  {
    const unsigned char *d = kb[ki].data;
    p->key = d2i_AutoPrivateKey(NULL, &d, kb[ki].len);
  }
  if (p->key == NULL) {
    ERR_clear_error();
    snprintf(err, errlen, "tls: failed to parse private key");
    goto done;
  }
  if (X509_check_private_key(p->cert, p->key) != 1) {
    ERR_clear_error();
    snprintf(err, errlen, "tls: private key does not match public key");
    goto done;
  }
  rc = 0;
done:
  if (rc != 0) pair_free(p);
  pem_free(cb, nc);
  pem_free(kb, nk);
  if (cbuf) OPENSSL_cleanse(cbuf, clen);
  if (kbuf) OPENSSL_cleanse(kbuf, klen);
  free(cbuf);
  free(kbuf);
  return rc;
}

/* Loads a CA bundle like etcd's NewCertPool: every PEM block must parse as
** a certificate; no blocks at all is an empty pool (not an error). */
static int ca_load (const char *path, STACK_OF(X509) **out, char *err, size_t errlen) {
  size_t len = 0;
  char *buf = read_file(path, &len, err, errlen, NULL);
  pemblock *v = NULL;
  int n, i, rc = 0;
  STACK_OF(X509) *sk;
  *out = NULL;
  if (buf == NULL) return -1;
  sk = sk_X509_new_null();
  n = pem_split(buf, len, &v);
  for (i = 0; i < n && sk != NULL; i++) {
    const unsigned char *d = v[i].data;
    X509 *x = NULL;
    if (strcmp(v[i].name, "CERTIFICATE") == 0) x = d2i_X509(NULL, &d, v[i].len);
    if (x == NULL) {
      ERR_clear_error();
      snprintf(err, errlen, strcmp(v[i].name, "CERTIFICATE") == 0
               ? "x509: malformed certificate" : "x509: malformed tbs certificate");
      rc = -1;
      break;
    }
    if (!sk_X509_push(sk, x)) { X509_free(x); rc = -1; snprintf(err, errlen, "out of memory"); break; }
  }
  if (sk == NULL) { rc = -1; snprintf(err, errlen, "out of memory"); }
  pem_free(v, n);
  free(buf);
  if (rc != 0) sk_X509_pop_free(sk, X509_free);
  else *out = sk;
  return rc;
}

/* ---------------------------------------------------------------------
** Certificate helpers for info tables and checks.
*/
static void name_str (X509_NAME *nm, char *buf, size_t len) {
  BIO *b = BIO_new(BIO_s_mem());
  int n;
  buf[0] = '\0';
  if (b == NULL) return;
  X509_NAME_print_ex(b, nm, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  n = BIO_read(b, buf, (int)len - 1);
  buf[n > 0 ? n : 0] = '\0';
  BIO_free(b);
}

/* Lower-case hex without leading zeros, like Go's %x of a big.Int. */
static void serial_hex (X509 *x, char *buf, size_t len) {
  BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
  char *h = bn ? BN_bn2hex(bn) : NULL, *s;
  buf[0] = '\0';
  if (h != NULL) {
    s = h;
    if (*s == '-') s++;
    while (s[0] == '0' && s[1] != '\0') s++;
    snprintf(buf, len, "%s%s", h[0] == '-' ? "-" : "", s);
    for (s = buf; *s; s++) *s = (char)tolower((unsigned char)*s);
  }
  OPENSSL_free(h);
  BN_free(bn);
}

static void time_str (const ASN1_TIME *t, char *buf, size_t len) {
  struct tm tm;
  buf[0] = '\0';
  if (t != NULL && ASN1_TIME_to_tm(t, &tm) == 1)
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* IP SAN bytes to Go's string form (v4-mapped IPv6 printed as IPv4). */
static int ip_str (const unsigned char *p, int n, char *buf, size_t len) {
  static const unsigned char v4pre[12] = {0,0,0,0,0,0,0,0,0,0,0xff,0xff};
  if (n == 4) return inet_ntop(AF_INET, p, buf, (socklen_t)len) != NULL;
  if (n == 16 && memcmp(p, v4pre, 12) == 0) return inet_ntop(AF_INET, p + 12, buf, (socklen_t)len) != NULL;
  if (n == 16) return inet_ntop(AF_INET6, p, buf, (socklen_t)len) != NULL;
  return 0;
}

/* Every IP and DNS SAN of a certificate (no cap: Go checks them all).
** malformed: a dNSName with an embedded NUL, which Go refuses to parse. */
typedef struct sans {
  int nip, ndns, malformed;
  unsigned char (*ip)[16];
  int *iplen;
  strlist dns;
} sans;

static void sans_free (sans *s) {
  free(s->ip);
  free(s->iplen);
  s->ip = NULL;
  s->iplen = NULL;
  strlist_free(&s->dns);
}

static void sans_get (X509 *x, sans *s) {
  GENERAL_NAMES *g = (GENERAL_NAMES *)X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
  int i, n;
  memset(s, 0, sizeof(*s));
  if (g == NULL) { ERR_clear_error(); return; }
  n = sk_GENERAL_NAME_num(g);
  s->dns.v = (char **)calloc((size_t)n + 1, sizeof(char *));
  s->ip = (unsigned char (*)[16])calloc((size_t)n + 1, sizeof(*s->ip));
  s->iplen = (int *)calloc((size_t)n + 1, sizeof(int));
  for (i = 0; i < n; i++) {
    GENERAL_NAME *gn = sk_GENERAL_NAME_value(g, i);
    if (gn->type == GEN_DNS && s->dns.v != NULL) {
      const unsigned char *d = ASN1_STRING_get0_data(gn->d.dNSName);
      int l = ASN1_STRING_length(gn->d.dNSName);
      char *c;
      if (memchr(d, '\0', (size_t)l) != NULL) { s->malformed = 1; continue; }
      c = (char *)malloc((size_t)l + 1);
      if (c == NULL) continue;
      memcpy(c, d, (size_t)l);
      c[l] = '\0';
      s->dns.v[s->dns.n++] = c;
    }
    else if (gn->type == GEN_IPADD && s->ip != NULL && s->iplen != NULL) {
      int l = ASN1_STRING_length(gn->d.iPAddress);
      if (l == 4 || l == 16) {
        memcpy(s->ip[s->nip], ASN1_STRING_get0_data(gn->d.iPAddress), (size_t)l);
        s->iplen[s->nip++] = l;
      }
    }
  }
  s->ndns = s->dns.n;
  GENERAL_NAMES_free(g);
}

static void push_sans (lua_State *L, sans *s) {
  int i;
  char b[64];
  lua_createtable(L, s->nip, 0);
  for (i = 0; i < s->nip; i++) {
    if (!ip_str(s->ip[i], s->iplen[i], b, sizeof(b))) continue;
    lua_pushstring(L, b);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  }
  lua_createtable(L, s->ndns, 0);
  for (i = 0; i < s->ndns; i++) {
    lua_pushstring(L, s->dns.v[i]);
    lua_rawseti(L, -2, i + 1);
  }
}

/* Leaf CN: the last commonName attribute (Go keeps the last one). */
static int leaf_cn (X509 *x, char *buf, size_t len) {
  X509_NAME *nm = X509_get_subject_name(x);
  int i = -1, last = -1;
  while ((i = X509_NAME_get_index_by_NID(nm, NID_commonName, i)) >= 0) last = i;
  buf[0] = '\0';
  if (last < 0) return 0;
  {
    ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(nm, last));
    int l = ASN1_STRING_length(d);
    if (l < 0 || (size_t)l >= len) return 0;
    memcpy(buf, ASN1_STRING_get0_data(d), (size_t)l);
    buf[l] = '\0';
    return (int)strlen(buf) == l;   /* no embedded NUL */
  }
}

/* ---------------------------------------------------------------------
** CRL: reloaded when the file changes, checked by serial (etcd's rule).
** Everything here runs with t->mu held.
*/
static void crl_reload_locked (pl_tls *t, const filesig *sig) {
  size_t len = 0;
  char *buf;
  X509_CRL *crl = NULL;
  char err[256];
  t->crl_sig = *sig;
  t->crl_loaded = 1;
  /* the CRL changed (not its first load): verify chains afresh.  Revocation
  ** is checked after every handshake anyway; this is belt and braces. */
  if (t->crl_ever) vcache_flush_locked(t->vc);
  t->crl_ever = 1;
  X509_CRL_free(t->crl);
  t->crl = NULL;
  t->crl_err[0] = '\0';
  buf = read_file(t->crl_file, &len, err, sizeof(err), NULL);
  if (buf == NULL) {
    snprintf(t->crl_err, sizeof(t->crl_err), "%s", err);
    return;
  }
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
  if (crl == NULL) {
    snprintf(t->crl_err, sizeof(t->crl_err), "x509: malformed crl");
    return;
  }
  t->crl = crl;
  /* Beyond etcd: when the trusted CA issued the CRL, check its signature
  ** and freshness; only warn (revocations still apply). */
  if (t->ca_certs != NULL) {
    int i;
    for (i = 0; i < sk_X509_num(t->ca_certs); i++) {
      X509 *ca = sk_X509_value(t->ca_certs, i);
      if (X509_NAME_cmp(X509_get_subject_name(ca), X509_CRL_get_issuer(crl)) != 0) continue;
      if (X509_CRL_verify(crl, X509_get0_pubkey(ca)) != 1) {
        logent *e = logent_new("warn", "CRL signature verification failed", "crl-file",
                               t->crl_file, NULL, NULL, NULL, NULL);
        ERR_clear_error();
        if (e && t->npending < MAX_PENDING) {
          *t->pending_tail = e; t->pending_tail = &e->next; t->npending++;
        }
        else logent_free(e);
      }
      else {
        const ASN1_TIME *nu = X509_CRL_get0_nextUpdate(crl);
        if (nu != NULL && X509_cmp_current_time(nu) < 0) {
          char ts[40];
          logent *e;
          time_str(nu, ts, sizeof(ts));
          e = logent_new("warn", "CRL is past its nextUpdate", "crl-file", t->crl_file,
                         "next-update", ts, NULL, NULL);
          if (e && t->npending < MAX_PENDING) {
            *t->pending_tail = e; t->pending_tail = &e->next; t->npending++;
          }
          else logent_free(e);
        }
      }
      break;
    }
  }
}

static const char *crl_check (pl_tls *t, SSL *ssl, char *msg, size_t msglen) {
  X509 *leaf = SSL_get0_peer_certificate(ssl);
  STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
  filesig sig;
  const char *reason = NULL;
  int i, n;
  if (leaf == NULL) return NULL;
  sig_of(t->crl_file, &sig);
  uv_mutex_lock(&t->mu);
  if (sig.err != 0) {
    t->crl_loaded = 0;
    X509_CRL_free(t->crl);
    t->crl = NULL;
    go_errno(msg, msglen, "open", t->crl_file, sig.err);
    reason = "crl";
    goto out;
  }
  if (!t->crl_loaded || !sig_eq(&sig, &t->crl_sig)) crl_reload_locked(t, &sig);
  if (t->crl == NULL) {
    snprintf(msg, msglen, "%s", t->crl_err[0] ? t->crl_err : "x509: malformed crl");
    reason = "crl";
    goto out;
  }
  n = chain ? sk_X509_num(chain) : 0;
  for (i = -1; i < n; i++) {
    X509 *x = i < 0 ? leaf : sk_X509_value(chain, i);
    X509_REVOKED *rev = NULL;
    if (i >= 0 && x == leaf) continue;
    if (X509_CRL_get0_by_serial(t->crl, &rev, X509_get0_serialNumber(x)) != 0) {
      char hex[100];
      serial_hex(x, hex, sizeof(hex));
      snprintf(msg, msglen, "transport: certificate serial %s revoked", hex);
      reason = "revoked";
      break;
    }
  }
out:
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

static int san_ip_match (sans *s, const char *remote_ip) {
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
  sans s;
  const char *reason = NULL;
  if (leaf == NULL) return NULL;
  sans_get(leaf, &s);
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
        if (!ip_str(s.ip[i], s.iplen[i], b, sizeof(b))) continue;
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
  sans_free(&s);
  return reason;
}

int pl_tls_post_check_may_block (pl_tls *t, SSL *ssl, const char *remote_ip) {
  X509 *leaf = SSL_get0_peer_certificate(ssl);
  sans s;
  int block;
  if (t->skip_san || remote_ip == NULL || leaf == NULL) return 0;
  sans_get(leaf, &s);
  block = s.ndns > 0 && !(s.nip > 0 && san_ip_match(&s, remote_ip));
  sans_free(&s);
  return block;
}

const char *pl_tls_post_check (pl_tls *t, SSL *ssl, const char *remote_ip,
                               char *msg, size_t msglen) {
  const char *r = NULL;
  msg[0] = '\0';
  if (SSL_get0_peer_certificate(ssl) == NULL) return NULL;
  if (!t->skip_san && remote_ip != NULL) r = san_check(ssl, remote_ip, msg, msglen);
  if (r == NULL && t->crl_file != NULL) r = crl_check(t, ssl, msg, msglen);
  return r;
}

/* ---------------------------------------------------------------------
** Handshake callbacks.
*/

/* ---------------------------------------------------------------------
** Verified-chain cache.  Peers reconnect with the same certificate chain,
** and OpenSSL 3.0 spends ~15 % of a mutual-TLS handshake re-building and
** re-verifying it (store look-ups, the CA's ECDSA signature, extension
** caching).  A successful X509_verify_cert is remembered, keyed by the
** SHA-256 of the presented chain's DER; a later handshake presenting the
** very same bytes (compared in full, not only by hash) skips the chain
** verification.  Everything else still runs every time: OpenSSL checks the
** CertificateVerify signature (proof of the private key), we check the
** allowed CN/hostname, the client SAN and the CRL (post-handshake).
** Only with trusted_ca_file: then the trust store is fixed in memory for the
** policy's life (a system store may look certificates up on disk).
** An entry is used only while every certificate of the presented and the
** verified chain is within its validity period (latest notBefore <= now <
** earliest notAfter); failures are never cached; the cache is flushed when
** the CRL file is (re)loaded.  Bounded, least recently used first out.
** Guarded by t->mu (handshakes may run on more than one loop thread).
*/
#define VCACHE_MAX 1024
#define VCACHE_BUCKETS 2048     /* power of two */

typedef struct vcent {
  struct vcent *prev, *next;    /* LRU list, most recently used first */
  struct vcent *hnext;          /* bucket chain */
  unsigned char md[32];         /* SHA-256 of der */
  unsigned char *der;           /* the presented chain, DER, concatenated */
  size_t derlen;
  time_t not_before, not_after; /* latest notBefore, earliest notAfter */
} vcent;

typedef struct vcache {
  vcent *bucket[VCACHE_BUCKETS];
  vcent *head, *tail;
  int n, max;
  unsigned long hits, misses, flushes;
  EVP_MD *sha256;               /* fetched once */
} vcache;

static long clock_shift;        /* test hook (core._tls_clock_shift): seconds added to "now" */

static time_t tls_now (void) {
  return time(NULL) + (time_t)clock_shift;
}

static vcache *vcache_new (void) {
  vcache *c = (vcache *)calloc(1, sizeof(*c));
  if (c == NULL) return NULL;
  c->max = VCACHE_MAX;
  c->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
  if (c->sha256 == NULL) {
    ERR_clear_error();
    free(c);
    return NULL;
  }
  return c;
}

static unsigned vc_index (const unsigned char *md) {
  return md[0] | ((unsigned)(md[1] & 0x07) << 8);
}

static void vcent_unlink (vcache *c, vcent *e) {
  vcent **pp = &c->bucket[vc_index(e->md)];
  while (*pp != NULL && *pp != e) pp = &(*pp)->hnext;
  if (*pp == e) *pp = e->hnext;
  if (e->prev) e->prev->next = e->next; else c->head = e->next;
  if (e->next) e->next->prev = e->prev; else c->tail = e->prev;
  c->n--;
  free(e->der);
  free(e);
}

static void vcache_flush_locked (vcache *c) {
  if (c == NULL) return;
  while (c->head != NULL) vcent_unlink(c, c->head);
  c->flushes++;
}

static void vcache_free (vcache *c) {
  if (c == NULL) return;
  vcache_flush_locked(c);
  EVP_MD_free(c->sha256);
  free(c);
}

/* Presented chain (leaf first, then what the peer sent) as one DER buffer:
** *der is buf when it fits, else malloc'ed.  Returns 0 on failure. */
static int chain_der (X509_STORE_CTX *xs, unsigned char *buf, size_t buflen,
                      unsigned char **der, size_t *len) {
  STACK_OF(X509) *sk = X509_STORE_CTX_get0_untrusted(xs);
  X509 *leaf = X509_STORE_CTX_get0_cert(xs);
  int i, n = sk ? sk_X509_num(sk) : 0, l;
  size_t total = 0;
  unsigned char *p;
  if (leaf == NULL) return 0;
  for (i = -1; i < n; i++) {
    l = i2d_X509(i < 0 ? leaf : sk_X509_value(sk, i), NULL);
    if (l <= 0) return 0;
    total += (size_t)l;
  }
  *der = total <= buflen ? buf : (unsigned char *)malloc(total);
  if (*der == NULL) return 0;
  p = *der;
  for (i = -1; i < n; i++)
    if (i2d_X509(i < 0 ? leaf : sk_X509_value(sk, i), &p) <= 0) {
      if (*der != buf) free(*der);
      return 0;
    }
  *len = (size_t)(p - *der);
  return 1;
}

static int asn1_time_t (const ASN1_TIME *a, time_t *out) {
  struct tm tm;
  if (a == NULL || ASN1_TIME_to_tm(a, &tm) != 1) return 0;
  *out = timegm(&tm);
  return 1;
}

/* Tightens [*nb, *na) by the validity of every certificate in sk. */
static int chain_bounds (STACK_OF(X509) *sk, time_t *nb, time_t *na) {
  int i;
  for (i = 0; sk != NULL && i < sk_X509_num(sk); i++) {
    X509 *x = sk_X509_value(sk, i);
    time_t b, a;
    if (!asn1_time_t(X509_get0_notBefore(x), &b) || !asn1_time_t(X509_get0_notAfter(x), &a))
      return 0;
    if (b > *nb) *nb = b;
    if (a < *na) *na = a;
  }
  return 1;
}

/* 1 when the exact chain was verified before and is still within every
** certificate's validity period (the entry moves to the LRU front). */
static int vcache_lookup (pl_tls *t, const unsigned char *md, const unsigned char *der,
                          size_t len, time_t now) {
  vcache *c = t->vc;
  vcent *e;
  int hit = 0;
  uv_mutex_lock(&t->mu);
  for (e = c->bucket[vc_index(md)]; e != NULL; e = e->hnext)
    if (e->derlen == len && memcmp(e->md, md, 32) == 0 && memcmp(e->der, der, len) == 0) break;
  if (e != NULL) {
    if (now >= e->not_before && now < e->not_after) {
      hit = 1;
      if (e != c->head) {
        e->prev->next = e->next;
        if (e->next) e->next->prev = e->prev; else c->tail = e->prev;
        e->prev = NULL;
        e->next = c->head;
        c->head->prev = e;
        c->head = e;
      }
    }
    else vcent_unlink(c, e);     /* out of its validity: verify afresh */
  }
  if (hit) c->hits++; else c->misses++;
  uv_mutex_unlock(&t->mu);
  return hit;
}

static void vcache_insert (pl_tls *t, const unsigned char *md, const unsigned char *der,
                           size_t len, time_t nb, time_t na) {
  vcache *c = t->vc;
  vcent *e = (vcent *)calloc(1, sizeof(*e)), *o;
  unsigned h = vc_index(md);
  if (e == NULL) return;
  e->der = (unsigned char *)malloc(len);
  if (e->der == NULL) { free(e); return; }
  memcpy(e->der, der, len);
  memcpy(e->md, md, 32);
  e->derlen = len;
  e->not_before = nb;
  e->not_after = na;
  uv_mutex_lock(&t->mu);
  for (o = c->bucket[h]; o != NULL; o = o->hnext)
    if (o->derlen == len && memcmp(o->md, md, 32) == 0 && memcmp(o->der, der, len) == 0) break;
  if (o != NULL) vcent_unlink(c, o);     /* verified again (another thread, or expired) */
  while (c->n >= c->max && c->tail != NULL) vcent_unlink(c, c->tail);
  if (c->max <= 0) {
    uv_mutex_unlock(&t->mu);
    free(e->der);
    free(e);
    return;
  }
  e->hnext = c->bucket[h];
  c->bucket[h] = e;
  e->next = c->head;
  if (c->head) c->head->prev = e; else c->tail = e;
  c->head = e;
  c->n++;
  uv_mutex_unlock(&t->mu);
}

/* Chain verification through the cache (when on), then etcd's allowed CN /
** hostname rule on the leaf.  Installed when client certs are verified and
** either the cache is on or an allow list is set. */
static int verify_allowed_cb (X509_STORE_CTX *xs, void *arg) {
  pl_tls *t = (pl_tls *)arg;
  X509 *leaf;
  unsigned char buf[8192], *der = NULL, md[32];
  size_t len = 0;
  unsigned int mdlen = 0;
  int i, ok, keyed = 0, hit = 0;
  time_t now = tls_now();
  if (t->vc != NULL && chain_der(xs, buf, sizeof(buf), &der, &len)) {
    keyed = EVP_Digest(der, len, md, &mdlen, t->vc->sha256, NULL) == 1 && mdlen == 32;
    if (!keyed) ERR_clear_error();
    else hit = vcache_lookup(t, md, der, len, now);
  }
  if (hit) {
    X509_STORE_CTX_set_error(xs, X509_V_OK);
    ok = 1;
  }
  else {
    if (clock_shift != 0) X509_STORE_CTX_set_time(xs, 0, now);
    ok = X509_verify_cert(xs);
    if (ok > 0 && keyed) {
      time_t nb = (time_t)0, na = (time_t)INT64_MAX;   /* time_t is 64-bit here */
      X509 *lf = X509_STORE_CTX_get0_cert(xs);
      STACK_OF(X509) *one = sk_X509_new_null();
      int good = one != NULL && sk_X509_push(one, lf) &&
                 chain_bounds(one, &nb, &na) &&
                 chain_bounds(X509_STORE_CTX_get0_untrusted(xs), &nb, &na) &&
                 chain_bounds(X509_STORE_CTX_get0_chain(xs), &nb, &na);
      sk_X509_free(one);
      if (good && now >= nb && now < na) vcache_insert(t, md, der, len, nb, na);
    }
  }
  if (der != NULL && der != buf) free(der);
  if (ok <= 0) return ok;
  if (t->allowed_cns.n == 0 && t->allowed_hostnames.n == 0) return 1;
  leaf = X509_STORE_CTX_get0_cert(xs);
  if (t->allowed_cns.n > 0) {
    char cn[256];
    if (leaf_cn(leaf, cn, sizeof(cn)))
      for (i = 0; i < t->allowed_cns.n; i++)
        if (strcmp(cn, t->allowed_cns.v[i]) == 0) return 1;
  }
  else {
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
  }
  ERR_clear_error();
  {
    SSL *ssl = (SSL *)X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    sslnote *n = ssl ? note_get(ssl, 1) : NULL;
    if (n != NULL) n->cn_rejected = 1;
  }
  X509_STORE_CTX_set_error(xs, X509_V_ERR_CERT_REJECTED);   /* alert bad_certificate */
  return 0;
}

/* Records the validity bound of an expired (or not yet valid) certificate
** for Go's error text; never changes the verdict. */
static int verify_note_cb (int ok, X509_STORE_CTX *xs) {
  if (!ok) {
    int e = X509_STORE_CTX_get_error(xs);
    if (e == X509_V_ERR_CERT_HAS_EXPIRED || e == X509_V_ERR_CERT_NOT_YET_VALID) {
      SSL *ssl = (SSL *)X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
      X509 *x = X509_STORE_CTX_get_current_cert(xs);
      sslnote *n = ssl ? note_get(ssl, 1) : NULL;
      if (n != NULL && x != NULL)
        time_str(e == X509_V_ERR_CERT_HAS_EXPIRED ? X509_get0_notAfter(x) : X509_get0_notBefore(x),
                 n->bad_time, sizeof(n->bad_time));
    }
  }
  return ok;
}

/* ALPN as Go: server preference; a client offering http/1.1 (when we offer
** h2) falls back to no ALPN; any other mismatch is no_application_protocol. */
static int alpn_cb (SSL *ssl, const unsigned char **out, unsigned char *outlen,
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

/* Go's text for an alert description. */
static const char *alert_text (int a) {
  switch (a) {
    case 0: return "close notify";
    case 10: return "unexpected message";
    case 20: return "bad record MAC";
    case 21: return "decryption failed";
    case 22: return "record overflow";
    case 30: return "decompression failure";
    case 40: return "handshake failure";
    case 42: return "bad certificate";
    case 43: return "unsupported certificate";
    case 44: return "revoked certificate";
    case 45: return "expired certificate";
    case 46: return "unknown certificate";
    case 47: return "illegal parameter";
    case 48: return "unknown certificate authority";
    case 49: return "access denied";
    case 50: return "error decoding message";
    case 51: return "error decrypting message";
    case 70: return "protocol version not supported";
    case 71: return "insufficient security level";
    case 80: return "internal error";
    case 86: return "inappropriate fallback";
    case 90: return "user canceled";
    case 100: return "no renegotiation";
    case 109: return "missing extension";
    case 110: return "unsupported extension";
    case 112: return "unrecognized name";
    case 116: return "certificate required";
    case 120: return "no application protocol";
    default: return NULL;
  }
}

/* Go's x509 wording for a chain verification error. */
static void verify_text (SSL *ssl, long v, char *buf, size_t len) {
  switch (v) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
      snprintf(buf, len, "x509: certificate signed by unknown authority");
      return;
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID: {
      sslnote *n = note_get(ssl, 0);
      char now[40], lim[40];
      time_t tt = tls_now();
      struct tm tm;
      gmtime_r(&tt, &tm);
      strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%SZ", &tm);
      snprintf(lim, sizeof(lim), "%s", n != NULL ? n->bad_time : "");
      snprintf(buf, len, "x509: certificate has expired or is not yet valid: current time %s is %s %s",
               now, v == X509_V_ERR_CERT_HAS_EXPIRED ? "after" : "before", lim);
      return;
    }
    case X509_V_ERR_INVALID_PURPOSE:
      snprintf(buf, len, "x509: certificate specifies an incompatible key usage");
      return;
    default:
      snprintf(buf, len, "x509: %s", X509_verify_cert_error_string(v));
  }
}

const char *pl_tls_handshake_failure (SSL *ssl, int ssl_error, char *msg, size_t msglen) {
  unsigned long e = 0, q;
  int reason;
  sslnote *n = note_get(ssl, 0);
  /* the first SSL-library error is the one that failed the handshake */
  while ((q = ERR_get_error()) != 0)
    if (e == 0 && ERR_GET_LIB(q) == ERR_LIB_SSL) e = q;
  if (ssl_error != SSL_ERROR_SSL || e == 0) {
    snprintf(msg, msglen, "EOF");
    return "eof";
  }
  reason = ERR_GET_REASON(e);
  switch (reason) {
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
      snprintf(msg, msglen, "tls: client didn't provide a certificate");
      return "no_client_cert";
    case SSL_R_CERTIFICATE_VERIFY_FAILED: {
      char v[200];
      if (n != NULL && n->cn_rejected) {
        snprintf(msg, msglen, "client certificate authentication failed");
        return "cn_not_allowed";
      }
      verify_text(ssl, SSL_get_verify_result(ssl), v, sizeof(v));
      snprintf(msg, msglen, "tls: failed to verify client certificate: %s", v);
      return "bad_client_cert";
    }
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_VERSION_TOO_HIGH:
    case SSL_R_UNKNOWN_PROTOCOL: {
      int cv = SSL_client_version(ssl), v;
      size_t used = (size_t)snprintf(msg, msglen, "tls: client offered only unsupported versions: [");
      for (v = cv; v >= 0x0301 && v < 0x0303 && used < msglen; v--)
        used += (size_t)snprintf(msg + used, msglen - used, "%s%x", v == cv ? "" : " ", v);
      if (used < msglen) snprintf(msg + used, msglen - used, "]");
      return "protocol_version";
    }
    case SSL_R_NO_SHARED_CIPHER:
      snprintf(msg, msglen, "tls: no cipher suite supported by both client and server");
      return "no_shared_cipher";
    case SSL_R_NO_APPLICATION_PROTOCOL:
      snprintf(msg, msglen, "tls: client requested unsupported application protocols (%s)",
               n != NULL && n->alpn_offered[0] ? n->alpn_offered : "[]");
      return "alpn";
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
      snprintf(msg, msglen, "tls: first record does not look like a TLS handshake");
      return "not_tls";
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH:
    case SSL_R_UNEXPECTED_RECORD:
    case SSL_R_UNEXPECTED_MESSAGE: {
      /* only before any ClientHello was parsed (client_version still the
      ** SSL's initial "any version" value) is this "not TLS at all" */
      int cv = SSL_client_version(ssl);
      if (cv == 0 || cv > TLS1_3_VERSION) {
        snprintf(msg, msglen, "tls: first record does not look like a TLS handshake");
        return "not_tls";
      }
      break;
    }
    case SSL_R_UNEXPECTED_EOF_WHILE_READING:
      snprintf(msg, msglen, "EOF");
      return "eof";
    default:
      break;
  }
  if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256 &&
      alert_text(reason - SSL_AD_REASON_OFFSET) != NULL) {
    snprintf(msg, msglen, "remote error: tls: %s", alert_text(reason - SSL_AD_REASON_OFFSET));
    return "remote_alert";
  }
  {
    const char *rs = ERR_reason_error_string(e);
    snprintf(msg, msglen, "tls: %s", rs ? rs : "handshake failure");
  }
  return "handshake";
}

/* ---------------------------------------------------------------------
** Certificate reload and new connections.
*/

/* Re-reads cert+key when either file changed since the last attempt; a
** good new pair replaces the old one in the shared SSL_CTX (SSLs already
** created keep theirs), a bad one is reported once and the old pair stays. */
static void cert_maybe_reload (pl_tls *t) {
  filesig cs, ks;
  certpair p;
  char err[512];
  int ferr;
  sig_of(t->cert_file, &cs);
  sig_of(t->key_file, &ks);
  if (sig_eq(&cs, &t->cert_sig) && sig_eq(&ks, &t->key_sig)) return;
  t->cert_sig = cs;
  t->key_sig = ks;
  if (pair_load(t->cert_file, t->key_file, &p, err, sizeof(err), &ferr) != 0) {
    pending_add(t, logent_new("warn", ferr == ENOENT ? "failed to find peer cert files"
                                                     : "failed to create peer certificate",
                              "cert-file", t->cert_file, "key-file", t->key_file, "error", err));
    return;
  }
  ERR_clear_error();
  if (SSL_CTX_use_cert_and_key(t->ctx, p.cert, p.key, p.chain, 1) != 1) {
    char e2[256];
    unsigned long q = ERR_get_error();
    ERR_error_string_n(q, e2, sizeof(e2));
    ERR_clear_error();
    pending_add(t, logent_new("warn", "failed to create peer certificate", "cert-file",
                              t->cert_file, "key-file", t->key_file, "error", e2));
  }
  pair_free(&p);
}

SSL *pl_tls_new_ssl (pl_tls *t, char *err, size_t errlen) {
  SSL *ssl;
  if (t->cert_file == NULL || t->key_file == NULL) {
    snprintf(err, errlen, "KeyFile and CertFile are not presented");
    return NULL;
  }
  cert_maybe_reload(t);
  ERR_clear_error();
  ssl = SSL_new(t->ctx);
  if (ssl == NULL) {
    unsigned long q = ERR_get_error();
    char e2[256];
    ERR_error_string_n(q, e2, sizeof(e2));
    ERR_clear_error();
    snprintf(err, errlen, "tls: %s", e2);
  }
  return ssl;
}

/* ---------------------------------------------------------------------
** Info for connections and logs.
*/
static const char *version_name (int v) {
  switch (v) {
    case TLS1_3_VERSION: return "TLS1.3";
    case TLS1_2_VERSION: return "TLS1.2";
    case TLS1_1_VERSION: return "TLS1.1";
    case TLS1_VERSION: return "TLS1.0";
    default: return "";
  }
}

static void push_cert_info (lua_State *L, X509 *x) {
  char b[1024];
  sans s;
  int i, k = 0;
  lua_createtable(L, 0, 8);
  name_str(X509_get_subject_name(x), b, sizeof(b));
  lua_pushstring(L, b);
  lua_setfield(L, -2, "subject");
  name_str(X509_get_issuer_name(x), b, sizeof(b));
  lua_pushstring(L, b);
  lua_setfield(L, -2, "issuer");
  serial_hex(x, b, sizeof(b));
  lua_pushstring(L, b);
  lua_setfield(L, -2, "serial");
  time_str(X509_get0_notBefore(x), b, sizeof(b));
  lua_pushstring(L, b);
  lua_setfield(L, -2, "not_before");
  time_str(X509_get0_notAfter(x), b, sizeof(b));
  lua_pushstring(L, b);
  lua_setfield(L, -2, "not_after");
  if (leaf_cn(x, b, sizeof(b))) {
    lua_pushstring(L, b);
    lua_setfield(L, -2, "cn");
  }
  sans_get(x, &s);
  push_sans(L, &s);                  /* info ips dns */
  lua_createtable(L, s.nip + s.ndns, 0);   /* info ips dns sans */
  for (i = 0; i < s.ndns; i++) {
    lua_pushfstring(L, "DNS:%s", s.dns.v[i]);
    lua_rawseti(L, -2, ++k);
  }
  for (i = 0; i < s.nip; i++) {
    if (!ip_str(s.ip[i], s.iplen[i], b, sizeof(b))) continue;
    lua_pushfstring(L, "IP:%s", b);
    lua_rawseti(L, -2, ++k);
  }
  lua_setfield(L, -4, "sans");
  lua_setfield(L, -3, "dns_names");
  lua_setfield(L, -2, "ip_addresses");
  sans_free(&s);
}

void pl_tls_push_info (lua_State *L, SSL *ssl) {
  const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
  const unsigned char *alpn = NULL;
  unsigned int alen = 0;
  const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  X509 *peer = SSL_get0_peer_certificate(ssl);
  lua_createtable(L, 0, 8);
  lua_pushstring(L, version_name(SSL_version(ssl)));
  lua_setfield(L, -2, "version");
  if (c != NULL) {
    const cipher_def *d = cipher_by_id((unsigned)(SSL_CIPHER_get_protocol_id(c) & 0xffff));
    const char *std = SSL_CIPHER_standard_name(c);
    lua_pushstring(L, d ? d->name : (std ? std : SSL_CIPHER_get_name(c)));
    lua_setfield(L, -2, "cipher");
    lua_pushstring(L, SSL_CIPHER_get_name(c));
    lua_setfield(L, -2, "cipher_openssl");
  }
  SSL_get0_alpn_selected(ssl, &alpn, &alen);
  if (alen > 0) {
    lua_pushlstring(L, (const char *)alpn, alen);
    lua_setfield(L, -2, "alpn");
  }
  if (sni != NULL) {
    lua_pushstring(L, sni);
    lua_setfield(L, -2, "server_name");
  }
  lua_pushboolean(L, SSL_session_reused(ssl));
  lua_setfield(L, -2, "resumed");
  if (peer != NULL) {
    push_cert_info(L, peer);
    lua_setfield(L, -2, "peer_cert");
  }
}

void pl_tls_push_peer_names (lua_State *L, SSL *ssl) {
  X509 *peer = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
  sans s;
  if (peer == NULL) {
    lua_newtable(L);
    lua_newtable(L);
    return;
  }
  sans_get(peer, &s);
  push_sans(L, &s);
  sans_free(&s);
}

void pl_tls_push_pending_logs (lua_State *L, pl_tls *t) {
  logent *list, *e;
  int i = 0;
  if (t == NULL || !t->mu_ok) { lua_pushnil(L); return; }
  uv_mutex_lock(&t->mu);
  list = t->pending;
  t->pending = NULL;
  t->pending_tail = &t->pending;
  t->npending = 0;
  uv_mutex_unlock(&t->mu);
  if (list == NULL) { lua_pushnil(L); return; }
  lua_newtable(L);
  for (e = list; e != NULL; e = e->next) {
    logent_push(L, e, 1);
    lua_rawseti(L, -2, ++i);
  }
  logent_free(list);
}

/* ---------------------------------------------------------------------
** Reference counting.
*/
static void tls_free (pl_tls *t) {
  SSL_CTX_free(t->ctx);
  vcache_free(t->vc);
  free(t->cert_file); free(t->key_file);
  free(t->client_cert_file); free(t->client_key_file);
  free(t->trusted_ca_file); free(t->crl_file);
  strlist_free(&t->ciphers);
  strlist_free(&t->allowed_cns);
  strlist_free(&t->allowed_hostnames);
  strlist_free(&t->alpn);
  free(t->alpn_wire);
  sk_X509_pop_free(t->ca_certs, X509_free);
  X509_CRL_free(t->crl);
  logent_free(t->warnings);
  logent_free(t->pending);
  if (t->mu_ok) uv_mutex_destroy(&t->mu);
  free(t);
}

pl_tls *pl_tls_retain (pl_tls *t) {
  t->refs++;
  return t;
}

void pl_tls_release (pl_tls *t) {
  if (t == NULL) return;
  if (--t->refs == 0) tls_free(t);
}

int pl_tls_has_cert (const pl_tls *t) {
  return t->cert_file != NULL && t->key_file != NULL;
}

double pl_tls_handshake_timeout (const pl_tls *t) {
  return t->handshake_timeout;
}

/* ---------------------------------------------------------------------
** Lua face: core.tls_policy{...}, core.cipher_suites(), policy methods.
*/

/***
A TLS policy: one server SSL_CTX plus etcd's peer checks.  Listeners and
their connections hold their own reference, so closing or collecting the
policy never breaks a listener that uses it.
@type TlsPolicy
*/

/***
core.tls_policy{...}: builds a policy.
Options: cert_file, key_file, client_cert_file, client_key_file,
trusted_ca_file, client_cert_auth, crl_file, cipher_suites (Go/IANA names),
min_version, max_version ("TLS1.2" | "TLS1.3" | ""), allowed_cns,
allowed_hostnames, skip_client_san_verify, alpn (default {"h2"}),
handshake_timeout (seconds, default 10), session_tickets (default false).
@treturn[1] TlsPolicy
@treturn[1] table warnings, each { level =, msg =, fields = {} } (may be empty)
@treturn[2] nil
@treturn[2] string etcd's message
@treturn[2] string "ETLSCONFIG" (options) or "ECERT" (file contents, unreadable files)
@function tls_policy
*/
typedef struct tlsbox {
  pl_tls *t;     /* NULL once closed */
} tlsbox;

pl_tls *pl_tls_check (lua_State *L, int idx) {
  tlsbox *b = (tlsbox *)luaL_checkudata(L, idx, PL_TLSPOLICY_MT);
  if (b->t == NULL) luaL_error(L, TLS_CLOSED_MSG);
  return b->t;
}

static const char *const known_opts[] = {
  "cert_file", "key_file", "client_cert_file", "client_key_file", "trusted_ca_file",
  "client_cert_auth", "crl_file", "cipher_suites", "min_version", "max_version",
  "allowed_cns", "allowed_hostnames", "skip_client_san_verify", "alpn",
  "handshake_timeout", "session_tickets", NULL
};

typedef struct cfgerr {
  char msg[700];
  const char *code;
} cfgerr;

static int cfg_fail (cfgerr *e, const char *code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
  va_end(ap);
  e->code = code;
  return -1;
}

/* Option readers: table at index 1; a wrong type is an ETLSCONFIG failure. */
static int opt_str (lua_State *L, const char *k, char **out, cfgerr *e) {
  int ty = lua_getfield(L, 1, k);
  *out = NULL;
  if (ty == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    if (n > 0) {
      if (strlen(s) != n) { lua_pop(L, 1); return cfg_fail(e, "ETLSCONFIG", "TLS policy option \"%s\": path contains a NUL byte", k); }
      *out = xstrdup(s);
    }
  }
  else if (ty != LUA_TNIL) {
    lua_pop(L, 1);
    return cfg_fail(e, "ETLSCONFIG", "TLS policy option \"%s\": string expected, got %s", k,
                    lua_typename(L, ty));
  }
  lua_pop(L, 1);
  return 0;
}

static int opt_bool (lua_State *L, const char *k, int *out, cfgerr *e) {
  int ty = lua_getfield(L, 1, k);
  if (ty == LUA_TBOOLEAN) *out = lua_toboolean(L, -1);
  else if (ty != LUA_TNIL) {
    lua_pop(L, 1);
    return cfg_fail(e, "ETLSCONFIG", "TLS policy option \"%s\": boolean expected, got %s", k,
                    lua_typename(L, ty));
  }
  lua_pop(L, 1);
  return 0;
}

/* A list of strings (a single string counts as a one-element list).
** *set tells whether the key was present at all. */
static int opt_list (lua_State *L, const char *k, strlist *out, int *set, cfgerr *e) {
  int ty = lua_getfield(L, 1, k);
  lua_Integer i, n;
  if (set) *set = ty != LUA_TNIL;
  if (ty == LUA_TNIL) { lua_pop(L, 1); return 0; }
  if (ty == LUA_TSTRING) {
    out->v = (char **)calloc(1, sizeof(char *));
    if (out->v) { out->v[0] = xstrdup(lua_tostring(L, -1)); out->n = 1; }
    lua_pop(L, 1);
    return 0;
  }
  if (ty != LUA_TTABLE) {
    lua_pop(L, 1);
    return cfg_fail(e, "ETLSCONFIG", "TLS policy option \"%s\": list of strings expected, got %s",
                    k, lua_typename(L, ty));
  }
  n = (lua_Integer)lua_rawlen(L, -1);
  out->v = (char **)calloc((size_t)n + 1, sizeof(char *));
  for (i = 1; i <= n && out->v != NULL; i++) {
    if (lua_rawgeti(L, -1, i) != LUA_TSTRING) {
      const char *tn = luaL_typename(L, -1);
      lua_pop(L, 2);
      return cfg_fail(e, "ETLSCONFIG", "TLS policy option \"%s\": item %d: string expected, got %s",
                      k, (int)i, tn);
    }
    out->v[out->n++] = xstrdup(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 0;
}

static int parse_version (const char *s, int *v, cfgerr *e) {
  if (s == NULL) *v = 0;
  else if (strcmp(s, "TLS1.2") == 0) *v = TLS1_2_VERSION;
  else if (strcmp(s, "TLS1.3") == 0) *v = TLS1_3_VERSION;
  else return cfg_fail(e, "ETLSCONFIG", "unexpected TLS version \"%s\" (must be one of: TLS1.2, TLS1.3)", s);
  return 0;
}

static void join_list (char *buf, size_t len, const strlist *l, const char *sep) {
  size_t used = 0;
  int i;
  buf[0] = '\0';
  for (i = 0; i < l->n && used < len; i++)
    used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? sep : "", l->v[i]);
}

/* Validates the options in etcd's order and builds the SSL_CTX. */
static int tls_configure (lua_State *L, pl_tls *t, cfgerr *e) {
  char *minv = NULL, *maxv = NULL, tmp[700];
  int alpn_set = 0, i, ty;
  certpair p;
  int ferr;
  char *list12 = NULL, *list13 = NULL;
  size_t l12 = 0, l13 = 0;
  int usable12 = 0, rc = -1;
  long opts;

  /* unknown keys first: nothing is silently dropped */
  lua_pushnil(L);
  while (lua_next(L, 1) != 0) {
    int ok = 0;
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING) {
      const char *k = lua_tostring(L, -1);
      for (i = 0; known_opts[i] != NULL; i++)
        if (strcmp(known_opts[i], k) == 0) ok = 1;
    }
    if (!ok) {
      luaL_tolstring(L, -1, NULL);
      cfg_fail(e, "ETLSCONFIG", "unknown TLS policy option \"%s\"", lua_tostring(L, -1));
      lua_pop(L, 2);
      return -1;
    }
  }
  if (opt_str(L, "cert_file", &t->cert_file, e) || opt_str(L, "key_file", &t->key_file, e) ||
      opt_str(L, "client_cert_file", &t->client_cert_file, e) ||
      opt_str(L, "client_key_file", &t->client_key_file, e) ||
      opt_str(L, "trusted_ca_file", &t->trusted_ca_file, e) ||
      opt_str(L, "crl_file", &t->crl_file, e) ||
      opt_bool(L, "client_cert_auth", &t->client_cert_auth, e) ||
      opt_bool(L, "skip_client_san_verify", &t->skip_san, e) ||
      opt_bool(L, "session_tickets", &t->session_tickets, e) ||
      opt_list(L, "cipher_suites", &t->ciphers, NULL, e) ||
      opt_list(L, "allowed_cns", &t->allowed_cns, NULL, e) ||
      opt_list(L, "allowed_hostnames", &t->allowed_hostnames, NULL, e) ||
      opt_list(L, "alpn", &t->alpn, &alpn_set, e) ||
      opt_str(L, "min_version", &minv, e) || opt_str(L, "max_version", &maxv, e))
    goto out;
  ty = lua_getfield(L, 1, "handshake_timeout");
  if (ty != LUA_TNIL) {
    lua_Number n = lua_tonumber(L, -1);
    if (ty != LUA_TNUMBER || !(n > 0) || n > 1e9) {
      lua_pop(L, 1);
      cfg_fail(e, "ETLSCONFIG", "TLS policy option \"handshake_timeout\": positive number of seconds expected");
      goto out;
    }
    t->handshake_timeout = (double)n;
  }
  lua_pop(L, 1);
  /* ALPN wire format */
  if (!alpn_set) {
    t->alpn.v = (char **)calloc(1, sizeof(char *));
    if (t->alpn.v) { t->alpn.v[0] = xstrdup("h2"); t->alpn.n = 1; }
  }
  for (i = 0; i < t->alpn.n; i++) {
    size_t n = strlen(t->alpn.v[i]);
    if (n == 0 || n > 255) {
      cfg_fail(e, "ETLSCONFIG", "TLS policy option \"alpn\": protocol names must be 1 to 255 bytes");
      goto out;
    }
    t->alpn_wirelen += n + 1;
    if (strcmp(t->alpn.v[i], "h2") == 0) t->alpn_has_h2 = 1;
  }
  if (t->alpn_wirelen > 0) {
    size_t off = 0;
    t->alpn_wire = (unsigned char *)malloc(t->alpn_wirelen);
    if (t->alpn_wire == NULL) { cfg_fail(e, "ENOMEM", "out of memory"); goto out; }
    for (i = 0; i < t->alpn.n; i++) {
      size_t n = strlen(t->alpn.v[i]);
      t->alpn_wire[off++] = (unsigned char)n;
      memcpy(t->alpn_wire + off, t->alpn.v[i], n);
      off += n;
    }
  }

  /* reference §3.2 items 4-6 */
  if (parse_version(minv, &t->min_version, e) || parse_version(maxv, &t->max_version, e)) goto out;
  if (t->max_version != 0 && t->min_version > t->max_version) {
    cfg_fail(e, "ETLSCONFIG", "min version (%s) is greater than max version (%s)", minv, maxv);
    goto out;
  }
  if (t->min_version == TLS1_3_VERSION && t->ciphers.n > 0) {
    cfg_fail(e, "ETLSCONFIG", "cipher suites cannot be configured when only TLS1.3 is enabled");
    goto out;
  }
  /* reference §3.3: names, then our OpenSSL lists */
  for (i = 0; i < t->ciphers.n; i++) {
    const cipher_def *c = cipher_by_name(t->ciphers.v[i]);
    char **lp;
    size_t *ll, n;
    if (c == NULL) {
      cfg_fail(e, "ETLSCONFIG", "unexpected TLS cipher suite \"%s\"", t->ciphers.v[i]);
      goto out;
    }
    if (!cipher_available(c)) {
      warning_add(t, logent_new("warn", c->legacy
          ? "cipher suite cannot be negotiated by OpenSSL; ignoring it"
          : "cipher suite is not available in this OpenSSL; ignoring it",
          "cipher-suite", c->name, NULL, NULL, NULL, NULL));
      continue;
    }
    lp = c->v13 ? &list13 : &list12;
    ll = c->v13 ? &l13 : &l12;
    n = strlen(c->ossl);
    {
      char *nb = (char *)realloc(*lp, *ll + n + 2);
      if (nb == NULL) { cfg_fail(e, "ENOMEM", "out of memory"); goto out; }
      *lp = nb;
    }
    if (*ll > 0) (*lp)[(*ll)++] = ':';
    memcpy(*lp + *ll, c->ossl, n + 1);
    *ll += n;
    if (!c->v13) usable12 = 1;
  }
  if (t->ciphers.n > 0 && !usable12 && t->min_version != TLS1_3_VERSION &&
      (t->max_version == 0 || t->max_version >= TLS1_2_VERSION)) {
    join_list(tmp, sizeof(tmp), &t->ciphers, " ");
    cfg_fail(e, "ETLSCONFIG", "cipher suites [%s] leave no TLS 1.2 cipher suite OpenSSL can use "
             "while TLS1.2 is allowed (add one, or set min_version = \"TLS1.3\" without cipher_suites)", tmp);
    goto out;
  }

  /* the context */
  t->ctx = SSL_CTX_new(TLS_server_method());
  if (t->ctx == NULL) { ERR_clear_error(); cfg_fail(e, "ETLSCONFIG", "tls: cannot create SSL_CTX"); goto out; }
  SSL_CTX_set_app_data(t->ctx, t);
  SSL_CTX_set_min_proto_version(t->ctx, t->min_version ? t->min_version : TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(t->ctx, t->max_version ? t->max_version : TLS1_3_VERSION);
  opts = SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION;
  if (!t->session_tickets) opts |= SSL_OP_NO_TICKET;
  SSL_CTX_set_options(t->ctx, (uint64_t)opts);
  /* No auto-chaining: send what the cert file holds (leaf + its intermediates,
  ** set explicitly by SSL_CTX_use_cert_and_key), as Go/etcd and nginx do.
  ** Auto-chaining would re-build and re-verify the server chain against the
  ** trusted CA store on every handshake (an X509_verify_cert per handshake). */
  SSL_CTX_set_mode(t->ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_NO_AUTO_CHAIN);
  SSL_CTX_set_session_id_context(t->ctx, (const unsigned char *)"peerlisten", 10);
  if (t->session_tickets) {
    SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_SERVER);
    /* TLS 1.3: one ticket per handshake, not OpenSSL's default two (each is
    ** an encoded + encrypted session); a resuming peer gets a fresh one each
    ** time, which is what Go and OpenSSL clients keep. */
    SSL_CTX_set_num_tickets(t->ctx, 1);
  }
  else {
    SSL_CTX_set_num_tickets(t->ctx, 0);
    SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_OFF);
  }
  if (SSL_CTX_set1_groups_list(t->ctx, "X25519:P-256:P-384") != 1) ERR_clear_error();
  if (SSL_CTX_set_cipher_list(t->ctx, list12 ? list12 : default_cipher_list) != 1 ||
      (list13 != NULL && SSL_CTX_set_ciphersuites(t->ctx, list13) != 1)) {
    ERR_clear_error();
    cfg_fail(e, "ETLSCONFIG", "tls: OpenSSL rejected the cipher suite list");
    goto out;
  }
  if (t->alpn_wirelen > 0) SSL_CTX_set_alpn_select_cb(t->ctx, alpn_cb, t);

  /* reference §3.4, in etcd's order */
  if ((t->cert_file == NULL) != (t->key_file == NULL)) {
    cfg_fail(e, "ETLSCONFIG", "KeyFile and CertFile must both be present[key: %s, cert: %s]",
             t->key_file ? t->key_file : "", t->cert_file ? t->cert_file : "");
    goto out;
  }
  if (t->cert_file != NULL) {
    if (pair_load(t->cert_file, t->key_file, &p, tmp, sizeof(tmp), &ferr) != 0) {
      cfg_fail(e, "ECERT", "%s", tmp);
      goto out;
    }
    sig_of(t->cert_file, &t->cert_sig);
    sig_of(t->key_file, &t->key_sig);
    ERR_clear_error();
    if (SSL_CTX_use_cert_and_key(t->ctx, p.cert, p.key, p.chain, 1) != 1) {
      unsigned long q = ERR_get_error();
      ERR_error_string_n(q, tmp, sizeof(tmp));
      ERR_clear_error();
      pair_free(&p);
      cfg_fail(e, "ECERT", "tls: %s", tmp);
      goto out;
    }
    pair_free(&p);
  }
  if ((t->client_cert_file == NULL) != (t->client_key_file == NULL)) {
    cfg_fail(e, "ETLSCONFIG", "ClientKeyFile and ClientCertFile must both be present or both absent: key: %s, cert: %s]",
             t->client_key_file ? t->client_key_file : "", t->client_cert_file ? t->client_cert_file : "");
    goto out;
  }
  if (t->client_cert_file != NULL) {
    if (pair_load(t->client_cert_file, t->client_key_file, &p, tmp, sizeof(tmp), &ferr) != 0) {
      cfg_fail(e, "ECERT", "%s", tmp);
      goto out;
    }
    pair_free(&p);
  }
  if (t->allowed_cns.n > 0 && t->allowed_hostnames.n > 0) {
    char a[300], b[300];
    go_quote_list(a, sizeof(a), &t->allowed_cns);
    go_quote_list(b, sizeof(b), &t->allowed_hostnames);
    cfg_fail(e, "ETLSCONFIG", "AllowedCNs and AllowedHostnames are mutually exclusive (cns=%s, hostnames=%s)", a, b);
    goto out;
  }
  t->verify_client = t->trusted_ca_file != NULL || t->client_cert_auth;
  if (t->trusted_ca_file != NULL) {
    X509_STORE *st = SSL_CTX_get_cert_store(t->ctx);
    if (ca_load(t->trusted_ca_file, &t->ca_certs, tmp, sizeof(tmp)) != 0) {
      cfg_fail(e, "ECERT", "%s", tmp);
      goto out;
    }
    for (i = 0; i < sk_X509_num(t->ca_certs); i++) {
      X509 *x = sk_X509_value(t->ca_certs, i);
      X509_STORE_add_cert(st, x);
      SSL_CTX_add_client_CA(t->ctx, x);
    }
    ERR_clear_error();
    /* Go trusts every pool certificate as an anchor, intermediates included */
    X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(t->ctx), X509_V_FLAG_PARTIAL_CHAIN);
    if (sk_X509_num(t->ca_certs) == 0)
      warning_add(t, logent_new("warn", "trusted CA file contains no certificates; every client certificate will be rejected",
                                "trusted-ca-file", t->trusted_ca_file, NULL, NULL, NULL, NULL));
  }
  else if (t->client_cert_auth) {
    if (SSL_CTX_set_default_verify_paths(t->ctx) != 1) ERR_clear_error();
  }
  if (t->verify_client) {
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_note_cb);
    /* the chain cache needs a trust store fixed in memory (trusted_ca_file) */
    if (t->trusted_ca_file != NULL) t->vc = vcache_new();
    if (t->vc != NULL || t->allowed_cns.n > 0 || t->allowed_hostnames.n > 0)
      SSL_CTX_set_cert_verify_callback(t->ctx, verify_allowed_cb, t);
  }
  else {
    if (t->allowed_cns.n > 0 || t->allowed_hostnames.n > 0) {
      char a[300];
      join_list(a, sizeof(a), t->allowed_cns.n > 0 ? &t->allowed_cns : &t->allowed_hostnames, ",");
      warning_add(t, logent_new("warn", t->allowed_cns.n > 0
          ? "allowed CNs cannot be enforced without client certificate authentication (set trusted_ca_file or client_cert_auth)"
          : "allowed hostnames cannot be enforced without client certificate authentication (set trusted_ca_file or client_cert_auth)",
          t->allowed_cns.n > 0 ? "allowed-cn" : "allowed-hostname", a, NULL, NULL, NULL, NULL));
    }
    if (t->crl_file != NULL)
      warning_add(t, logent_new("warn", "CRL cannot be checked without client certificate authentication (set trusted_ca_file or client_cert_auth)",
                                "crl-file", t->crl_file, NULL, NULL, NULL, NULL));
  }
  rc = 0;
out:
  free(minv);
  free(maxv);
  free(list12);
  free(list13);
  return rc;
}

static int tls_new (lua_State *L) {
  tlsbox *b;
  pl_tls *t;
  cfgerr e;
  logent *w;
  int i = 0;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  b = (tlsbox *)lua_newuserdatauv(L, sizeof(*b), 0);
  b->t = NULL;
  luaL_setmetatable(L, PL_TLSPOLICY_MT);
  t = (pl_tls *)calloc(1, sizeof(*t));
  if (t == NULL) return luaL_error(L, "out of memory");
  t->refs = 1;
  t->pending_tail = &t->pending;
  t->handshake_timeout = 10;
  if (uv_mutex_init(&t->mu) != 0) { free(t); return luaL_error(L, "cannot create mutex"); }
  t->mu_ok = 1;
  b->t = t;
  memset(&e, 0, sizeof(e));
  if (tls_configure(L, t, &e) != 0) {
    b->t = NULL;
    pl_tls_release(t);
    lua_pushnil(L);
    lua_pushstring(L, e.msg);
    lua_pushstring(L, e.code ? e.code : "ETLSCONFIG");
    return 3;
  }
  lua_newtable(L);
  for (w = t->warnings; w != NULL; w = w->next) {
    logent_push(L, w, 0);
    lua_rawseti(L, -2, ++i);
  }
  return 2;
}

static void push_list (lua_State *L, const strlist *l) {
  int i;
  lua_createtable(L, l->n, 0);
  for (i = 0; i < l->n; i++) {
    lua_pushstring(L, l->v[i]);
    lua_rawseti(L, -2, i + 1);
  }
}

static void set_str (lua_State *L, const char *k, const char *v) {
  lua_pushstring(L, v ? v : "");
  lua_setfield(L, -2, k);
}

/***
policy:info() -> table of effective settings.
*/
static int tls_info (lua_State *L) {
  pl_tls *t = pl_tls_check(L, 1);
  lua_createtable(L, 0, 20);
  set_str(L, "cert_file", t->cert_file);
  set_str(L, "key_file", t->key_file);
  set_str(L, "client_cert_file", t->client_cert_file);
  set_str(L, "client_key_file", t->client_key_file);
  set_str(L, "trusted_ca_file", t->trusted_ca_file);
  set_str(L, "crl_file", t->crl_file);
  lua_pushboolean(L, t->client_cert_auth);
  lua_setfield(L, -2, "client_cert_auth");
  set_str(L, "client_auth", t->verify_client ? "require_and_verify" : "none");
  set_str(L, "client_ca", t->trusted_ca_file ? "file" : (t->verify_client ? "system" : "none"));
  push_list(L, &t->ciphers);
  lua_setfield(L, -2, "cipher_suites");
  set_str(L, "min_version", version_name(t->min_version ? t->min_version : TLS1_2_VERSION));
  set_str(L, "max_version", version_name(t->max_version ? t->max_version : TLS1_3_VERSION));
  push_list(L, &t->allowed_cns);
  lua_setfield(L, -2, "allowed_cns");
  push_list(L, &t->allowed_hostnames);
  lua_setfield(L, -2, "allowed_hostnames");
  lua_pushboolean(L, t->skip_san);
  lua_setfield(L, -2, "skip_client_san_verify");
  push_list(L, &t->alpn);
  lua_setfield(L, -2, "alpn");
  lua_pushnumber(L, (lua_Number)t->handshake_timeout);
  lua_setfield(L, -2, "handshake_timeout");
  lua_pushboolean(L, t->session_tickets);
  lua_setfield(L, -2, "session_tickets");
  lua_pushboolean(L, pl_tls_has_cert(t));
  lua_setfield(L, -2, "has_cert");
  lua_pushboolean(L, (t->allowed_cns.n > 0 || t->allowed_hostnames.n > 0) && t->verify_client);
  lua_setfield(L, -2, "allow_list_enforced");
  {
    STACK_OF(SSL_CIPHER) *sk = SSL_CTX_get_ciphers(t->ctx);
    int i, k = 0;
    lua_createtable(L, sk ? sk_SSL_CIPHER_num(sk) : 0, 0);
    for (i = 0; sk != NULL && i < sk_SSL_CIPHER_num(sk); i++) {
      const SSL_CIPHER *c = sk_SSL_CIPHER_value(sk, i);
      const cipher_def *d = cipher_by_id((unsigned)(SSL_CIPHER_get_protocol_id(c) & 0xffff));
      lua_pushstring(L, d ? d->name : SSL_CIPHER_standard_name(c));
      lua_rawseti(L, -2, ++k);
    }
    lua_setfield(L, -2, "effective_cipher_suites");
  }
  return 1;
}

static void tls_info_buf (pl_tls *t, luaL_Buffer *b) {
  luaL_addstring(b, "cert = "); luaL_addstring(b, t->cert_file ? t->cert_file : "");
  luaL_addstring(b, ", key = "); luaL_addstring(b, t->key_file ? t->key_file : "");
  luaL_addstring(b, ", client-cert="); luaL_addstring(b, t->client_cert_file ? t->client_cert_file : "");
  luaL_addstring(b, ", client-key="); luaL_addstring(b, t->client_key_file ? t->client_key_file : "");
  luaL_addstring(b, ", trusted-ca = "); luaL_addstring(b, t->trusted_ca_file ? t->trusted_ca_file : "");
  luaL_addstring(b, ", client-cert-auth = "); luaL_addstring(b, t->client_cert_auth ? "true" : "false");
  luaL_addstring(b, ", crl-file = "); luaL_addstring(b, t->crl_file ? t->crl_file : "");
}

/***
policy:tls_info_string() -> etcd's tls-info string (for `starting with peer TLS`).
*/
static int tls_info_string (lua_State *L) {
  pl_tls *t = pl_tls_check(L, 1);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  tls_info_buf(t, &b);
  luaL_pushresult(&b);
  return 1;
}

/***
policy:has_cert() -> true when cert_file and key_file are set.
*/
static int tls_has_cert (lua_State *L) {
  lua_pushboolean(L, pl_tls_has_cert(pl_tls_check(L, 1)));
  return 1;
}

/***
policy:warnings() -> array of {level=, msg=, fields=} found at construction.
*/
static int tls_warnings (lua_State *L) {
  pl_tls *t = pl_tls_check(L, 1);
  logent *w;
  int i = 0;
  lua_newtable(L);
  for (w = t->warnings; w != NULL; w = w->next) {
    logent_push(L, w, 0);
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

/* Hidden: policy:_pending_logs() drains runtime warnings (reload failures,
** CRL signature/nextUpdate), as listeners do after each handshake: an array
** of flat { level =, msg =, <field> = ... } tables, or nil. */
static int tls_pending_logs (lua_State *L) {
  pl_tls_push_pending_logs(L, pl_tls_check(L, 1));
  return 1;
}

/* Hidden: policy:_new_ssl() runs the reload path as a new connection would
** (specs use it to test cert reload without sockets); returns the subject
** of the certificate the SSL would present, or nil, msg. */
static int tls_new_ssl_probe (lua_State *L) {
  pl_tls *t = pl_tls_check(L, 1);
  char err[512], b[512];
  SSL *ssl = pl_tls_new_ssl(t, err, sizeof(err));
  X509 *x;
  if (ssl == NULL) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  x = SSL_get_certificate(ssl);
  name_str(x ? X509_get_subject_name(x) : NULL, b, sizeof(b));
  SSL_free(ssl);
  lua_pushstring(L, x ? b : "");
  return 1;
}


/* Hidden test helper: core._tls_handshake(policy, client_opts) runs one
** handshake in memory (a client SSL over a BIO pair) through the same
** pl_tls_* calls conn.c makes.  client_opts: cert, key, ca, min_version,
** max_version, ciphers (OpenSSL TLS1.2 list), ciphersuites (TLS1.3 list),
** alpn (array), raw (bytes sent instead of a ClientHello), remote_ip.
** Returns true, tls_info, ip_addresses, dns_names | false, reason, msg, side. */
static int opt_cstr (lua_State *L, int idx, const char *k, char *buf, size_t len) {
  const char *s;
  lua_getfield(L, idx, k);
  s = lua_tostring(L, -1);
  buf[0] = '\0';
  if (s != NULL) snprintf(buf, len, "%s", s);
  lua_pop(L, 1);
  return buf[0] != '\0';
}

static int test_tickets;    /* NewSessionTickets the test client got */

static int test_ticket_cb (SSL *ssl, SSL_SESSION *sess) {
  (void)ssl; (void)sess;
  test_tickets++;
  return 0;                  /* not kept */
}

static int tls_handshake_test (lua_State *L) {
  pl_tls *t = pl_tls_check(L, 1);
  char err[600], b[600], b2[600], remote[64];
  const char *reason = NULL, *side = "server";
  SSL_CTX *cctx = NULL;
  SSL *srv, *cli = NULL;
  BIO *sb = NULL, *cb = NULL;
  int i, sdone = 0, cdone = 0, cfail = 0, have_raw;
  size_t rawlen = 0;
  const char *raw;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_getfield(L, 2, "raw");
  raw = lua_tolstring(L, -1, &rawlen);
  have_raw = raw != NULL;
  lua_pop(L, 1);
  if (!opt_cstr(L, 2, "remote_ip", remote, sizeof(remote))) snprintf(remote, sizeof(remote), "127.0.0.1");
  ERR_clear_error();
  test_tickets = 0;
  srv = pl_tls_new_ssl(t, err, sizeof(err));
  if (srv == NULL) {
    lua_pushboolean(L, 0); lua_pushliteral(L, "new_ssl"); lua_pushstring(L, err);
    return 3;
  }
  BIO_new_bio_pair(&sb, 0, &cb, 0);
  SSL_set_bio(srv, sb, sb);
  SSL_set_accept_state(srv);
  if (!have_raw) {
    cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_security_level(cctx, 0);
    SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(cctx, test_ticket_cb);
    if (opt_cstr(L, 2, "min_version", b, sizeof(b)))
      SSL_CTX_set_min_proto_version(cctx, strcmp(b, "TLS1.3") == 0 ? TLS1_3_VERSION :
                                    strcmp(b, "TLS1.2") == 0 ? TLS1_2_VERSION :
                                    strcmp(b, "TLS1.1") == 0 ? TLS1_1_VERSION : TLS1_VERSION);
    if (opt_cstr(L, 2, "max_version", b, sizeof(b)))
      SSL_CTX_set_max_proto_version(cctx, strcmp(b, "TLS1.3") == 0 ? TLS1_3_VERSION :
                                    strcmp(b, "TLS1.2") == 0 ? TLS1_2_VERSION :
                                    strcmp(b, "TLS1.1") == 0 ? TLS1_1_VERSION : TLS1_VERSION);
    if (opt_cstr(L, 2, "ciphers", b, sizeof(b))) SSL_CTX_set_cipher_list(cctx, b);
    if (opt_cstr(L, 2, "ciphersuites", b, sizeof(b))) SSL_CTX_set_ciphersuites(cctx, b);
    if (opt_cstr(L, 2, "cert", b, sizeof(b)) && opt_cstr(L, 2, "key", b2, sizeof(b2))) {
      SSL_CTX_use_certificate_chain_file(cctx, b);
      SSL_CTX_use_PrivateKey_file(cctx, b2, SSL_FILETYPE_PEM);
    }
    if (lua_getfield(L, 2, "alpn") == LUA_TTABLE) {
      unsigned char w[512];
      size_t n = 0;
      for (i = 1; lua_rawgeti(L, -1, i) == LUA_TSTRING; i++) {
        size_t l;
        const char *s = lua_tolstring(L, -1, &l);
        if (n + l + 1 < sizeof(w)) { w[n++] = (unsigned char)l; memcpy(w + n, s, l); n += l; }
        lua_pop(L, 1);
      }
      lua_pop(L, 1);
      SSL_CTX_set_alpn_protos(cctx, w, (unsigned)n);
    }
    lua_pop(L, 1);
    ERR_clear_error();
    cli = SSL_new(cctx);
    SSL_set_bio(cli, cb, cb);
    SSL_set_connect_state(cli);
  }
  else {
    BIO_write(cb, raw, (int)rawlen);
    BIO_shutdown_wr(cb);
  }
  for (i = 0; i < 50 && !(sdone && (cdone || cfail || cli == NULL)); i++) {
    int r;
    if (cli != NULL && !cdone && !cfail) {
      r = SSL_do_handshake(cli);
      if (r == 1) cdone = 1;
      else if (SSL_get_error(cli, r) != SSL_ERROR_WANT_READ) cfail = 1;
      ERR_clear_error();
    }
    if (!sdone) {
      r = SSL_do_handshake(srv);
      if (r == 1) sdone = 1;
      else {
        int se = SSL_get_error(srv, r);
        if (se != SSL_ERROR_WANT_READ || (cfail && i > 2) || (have_raw && i > 2)) {
          if (se == SSL_ERROR_WANT_READ) se = SSL_ERROR_SYSCALL;   /* peer gone: EOF */
          reason = pl_tls_handshake_failure(srv, se, err, sizeof(err));
          break;
        }
      }
    }
    else if (cli != NULL && cdone) {
      /* TLS 1.3: let the client read the server's post-handshake output */
      char tmp[16];
      if (SSL_read(cli, tmp, sizeof(tmp)) <= 0) ERR_clear_error();
      break;
    }
  }
  if (reason == NULL && sdone && cdone && cli != NULL) {
    /* TLS 1.3: let the client read the tickets sent after the handshake */
    char tmp[16];
    if (SSL_read(cli, tmp, sizeof(tmp)) <= 0) ERR_clear_error();
  }
  if (reason == NULL && !sdone) { reason = "incomplete"; snprintf(err, sizeof(err), "handshake did not finish"); }
  if (reason == NULL && cli != NULL && cfail) { reason = "client"; side = "client"; snprintf(err, sizeof(err), "client failed"); }
  if (reason == NULL) {
    side = "post";
    reason = pl_tls_post_check(t, srv, strcmp(remote, "unix") == 0 ? NULL : remote, err, sizeof(err));
  }
  if (reason != NULL) {
    lua_pushboolean(L, 0);
    lua_pushstring(L, reason);
    lua_pushstring(L, err);
    lua_pushstring(L, side);
    pl_tls_push_peer_names(L, srv);
    i = 6;
  }
  else {
    lua_pushboolean(L, 1);
    pl_tls_push_info(L, srv);
    lua_pushinteger(L, test_tickets);
    lua_setfield(L, -2, "client_tickets");
    pl_tls_push_peer_names(L, srv);
    lua_pushboolean(L, pl_tls_post_check_may_block(t, srv, remote));
    i = 5;
  }
  SSL_free(cli);
  SSL_free(srv);
  if (cli == NULL) BIO_free(cb);   /* raw mode: the client half has no SSL */
  SSL_CTX_free(cctx);
  ERR_clear_error();
  return i;
}

/* Hidden: policy:_verify_cache([max]) -> { on =, entries =, max =, hits =,
** misses =, flushes = }; max (an integer >= 0) bounds the cache (specs). */
static int tls_verify_cache (lua_State *L) {
  pl_tls *t = pl_tls_check(L, 1);
  vcache *c = t->vc;
  lua_Integer max = luaL_optinteger(L, 2, -1);
  lua_createtable(L, 0, 6);
  lua_pushboolean(L, c != NULL);
  lua_setfield(L, -2, "on");
  if (c == NULL) return 1;
  uv_mutex_lock(&t->mu);
  if (max >= 0) {
    c->max = max > VCACHE_MAX ? VCACHE_MAX : (int)max;
    while (c->n > c->max && c->tail != NULL) vcent_unlink(c, c->tail);
  }
  lua_pushinteger(L, c->n); lua_setfield(L, -2, "entries");
  lua_pushinteger(L, c->max); lua_setfield(L, -2, "max");
  lua_pushinteger(L, (lua_Integer)c->hits); lua_setfield(L, -2, "hits");
  lua_pushinteger(L, (lua_Integer)c->misses); lua_setfield(L, -2, "misses");
  lua_pushinteger(L, (lua_Integer)c->flushes); lua_setfield(L, -2, "flushes");
  uv_mutex_unlock(&t->mu);
  return 1;
}

/* Hidden test hook: core._tls_clock_shift(seconds) shifts the "now" of client
** chain verification (fresh and cached alike) and of its error texts;
** returns the previous shift.  0 restores the real clock. */
static int tls_clock_shift (lua_State *L) {
  long prev = clock_shift;
  clock_shift = (long)luaL_checkinteger(L, 1);
  lua_pushinteger(L, prev);
  return 1;
}

static int tls_release_box (lua_State *L) {
  tlsbox *b = (tlsbox *)luaL_checkudata(L, 1, PL_TLSPOLICY_MT);
  pl_tls *t = b->t;
  if (t == NULL) return 0;
  b->t = NULL;
  pl_tls_release(t);
  return 1;
}

/***
policy:close(): drops this userdata's reference (idempotent; also __close and __gc).
*/
static int tls_close (lua_State *L) {
  tls_release_box(L);
  return 0;
}

static int tls__tostring (lua_State *L) {
  tlsbox *bx = (tlsbox *)luaL_checkudata(L, 1, PL_TLSPOLICY_MT);
  luaL_Buffer b;
  if (bx->t == NULL) {
    lua_pushliteral(L, "peerlisten.TlsPolicy (closed)");
    return 1;
  }
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "peerlisten.TlsPolicy (");
  tls_info_buf(bx->t, &b);
  luaL_addstring(&b, ")");
  luaL_pushresult(&b);
  return 1;
}

/***
core.cipher_suites() -> array of {name=, id=, versions={...}, available=, openssl=, tls13=}
*/
static int tls_cipher_suites (lua_State *L) {
  int i;
  lua_createtable(L, NCIPHERS, 0);
  for (i = 0; i < NCIPHERS; i++) {
    const cipher_def *c = &cipher_table[i];
    lua_createtable(L, 0, 7);
    lua_pushstring(L, c->name);
    lua_setfield(L, -2, "name");
    lua_pushinteger(L, (lua_Integer)c->id);
    lua_setfield(L, -2, "id");
    lua_pushstring(L, c->ossl);
    lua_setfield(L, -2, "openssl");
    lua_pushboolean(L, cipher_available(c));
    lua_setfield(L, -2, "available");
    lua_pushboolean(L, c->v13);
    lua_setfield(L, -2, "tls13");
    lua_pushboolean(L, i >= NCIPHERS - 2);
    lua_setfield(L, -2, "alias");
    if (c->v13) {
      lua_createtable(L, 1, 0);
      lua_pushliteral(L, "TLS1.3"); lua_rawseti(L, -2, 1);
    }
    else if (c->old) {
      lua_createtable(L, 3, 0);
      lua_pushliteral(L, "TLS1.0"); lua_rawseti(L, -2, 1);
      lua_pushliteral(L, "TLS1.1"); lua_rawseti(L, -2, 2);
      lua_pushliteral(L, "TLS1.2"); lua_rawseti(L, -2, 3);
    }
    else {
      lua_createtable(L, 1, 0);
      lua_pushliteral(L, "TLS1.2"); lua_rawseti(L, -2, 1);
    }
    lua_setfield(L, -2, "versions");
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static const luaL_Reg tls_methods[] = {
  {"info", tls_info},
  {"tls_info_string", tls_info_string},
  {"has_cert", tls_has_cert},
  {"warnings", tls_warnings},
  {"close", tls_close},
  {"_pending_logs", tls_pending_logs},
  {"_new_ssl", tls_new_ssl_probe},
  {"_verify_cache", tls_verify_cache},
  {NULL, NULL}
};

static const luaL_Reg tls_meta[] = {
  {"__gc", tls_close},
  {"__close", tls_close},
  {"__tostring", tls__tostring},
  {NULL, NULL}
};

static const luaL_Reg tls_funcs[] = {
  {"tls_policy", tls_new},
  {"cipher_suites", tls_cipher_suites},
  {"_tls_handshake", tls_handshake_test},
  {"_tls_clock_shift", tls_clock_shift},
  {NULL, NULL}
};

/* Adds tls_policy and cipher_suites to the module table on top. */
int pl_open_tlspolicy (lua_State *L) {
  if (note_idx < 0)
    note_idx = CRYPTO_get_ex_new_index(CRYPTO_EX_INDEX_SSL, 0, NULL, NULL, NULL, note_free);
  if (luaL_newmetatable(L, PL_TLSPOLICY_MT)) {
    luaL_setfuncs(L, tls_meta, 0);
    luaL_newlib(L, tls_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, tls_funcs, 0);
  return 0;
}
