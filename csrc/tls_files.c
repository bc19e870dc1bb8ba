/*
** tls_files.c: small shared helpers of the TLS files (strings, file
** signatures, log entries) and certificate/key loading worded like Go.
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


/* ---------------------------------------------------------------------
** Small helpers.
*/
char *xstrdup (const char *s) {
  size_t n = strlen(s) + 1;
  char *d = (char *)malloc(n);
  if (d != NULL) memcpy(d, s, n);
  return d;
}


void sig_of (const char *path, filesig *s) {
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

int sig_eq (const filesig *a, const filesig *b) {
  return a->err == b->err && a->dev == b->dev && a->ino == b->ino &&
         a->size == b->size && a->mtim.tv_sec == b->mtim.tv_sec &&
         a->mtim.tv_nsec == b->mtim.tv_nsec && a->ctim.tv_sec == b->ctim.tv_sec &&
         a->ctim.tv_nsec == b->ctim.tv_nsec;
}

static int sigs_eq (const filesig *a, const filesig *b, int n) {
  int i;
  for (i = 0; i < n; i++)
    if (!sig_eq(&a[i], &b[i])) return 0;
  return 1;
}

int reload_due (const reloader *r, const filesig *sig, int n) {
  if (r->loaded && sigs_eq(r->ok, sig, n)) return RELOAD_KEEP;
  if (r->failed && sigs_eq(r->bad, sig, n) && uv_hrtime() < r->retry_at) return RELOAD_STILL_BAD;
  return RELOAD_NOW;
}

void reload_done (reloader *r, const filesig *sig, int n, int ok) {
  int i;
  for (i = 0; i < n; i++) {
    if (ok) r->ok[i] = sig[i];
    else r->bad[i] = sig[i];
  }
  if (ok) r->loaded = 1;
  r->failed = !ok;
  if (!ok) r->retry_at = uv_hrtime() + (uint64_t)RELOAD_RETRY_MS * 1000000u;
}

/* Log entries: level, msg, then up to 4 key/value string pairs (NULL ends). */
logent *logent_new (const char *level, const char *msg, const char *k1,
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

void logent_free (logent *e) {
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
void logent_push (lua_State *L, const logent *e, int flat) {
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
void pending_add (pl_tls *t, logent *e) {
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

void warning_add (pl_tls *t, logent *e) {
  logent **p = &t->warnings;
  if (e == NULL) return;
  while (*p != NULL) p = &(*p)->next;
  *p = e;
}

/* Go's %q of a string list: ["a" "b"]. */
void go_quote_list (char *buf, size_t len, const strlist *l) {
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



static void skipped_types (char *buf, size_t len, x509_pem *v, int n, const char *skip) {
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

void pair_free (certpair *p) {
  X509_free(p->cert);
  sk_X509_pop_free(p->chain, X509_free);
  EVP_PKEY_free(p->key);
  p->cert = NULL;
  p->chain = NULL;
  p->key = NULL;
}

/* Loads and checks a certificate/key pair.  Returns 0 and fills *p, or -1
** with Go's wording in err; *code_errno gets the errno of a file error. */
/* The certificates of a cert file's PEM blocks: the leaf, then the chain. */
static int pair_certs (certpair *p, x509_pem *cb, int nc, char *err, size_t errlen) {
  int i, ncert = 0;
  for (i = 0; i < nc; i++) {
    const unsigned char *d = cb[i].data;
    X509 *x;
    if (strcmp(cb[i].name, "CERTIFICATE") != 0) continue;
    x = d2i_X509(NULL, &d, cb[i].len);
    if (x == NULL) {
      ERR_clear_error();
      snprintf(err, errlen, "x509: malformed certificate");
      return -1;
    }
    if (p->cert == NULL) p->cert = x;
    else {
      if (p->chain == NULL) p->chain = sk_X509_new_null();
      if (p->chain == NULL || !sk_X509_push(p->chain, x)) {
        X509_free(x);
        snprintf(err, errlen, "tls: out of memory");
        return -1;
      }
    }
    ncert++;
  }
  if (ncert > 0) return 0;
  if (nc == 0) snprintf(err, errlen, "tls: failed to find any PEM data in certificate input");
  else {
    char types[256];
    skipped_types(types, sizeof(types), cb, nc, NULL);
    snprintf(err, errlen, "tls: failed to find \"CERTIFICATE\" PEM block in certificate input "
             "after skipping PEM blocks of the following types: %s", types);
  }
  return -1;
}

/* The first private key of a key file's PEM blocks. */
static int pair_key (certpair *p, x509_pem *kb, int nk, char *err, size_t errlen) {
  int i, ki = -1;
  const unsigned char *d;
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
    return -1;
  }
  d = kb[ki].data;
  p->key = d2i_AutoPrivateKey(NULL, &d, kb[ki].len);
  if (p->key == NULL) {
    ERR_clear_error();
    snprintf(err, errlen, "tls: failed to parse private key");
    return -1;
  }
  return 0;
}

int pair_load (const char *certfile, const char *keyfile, certpair *p,
               char *err, size_t errlen, int *file_errno) {
  char *cbuf = NULL, *kbuf = NULL;
  size_t clen = 0, klen = 0;
  x509_pem *cb = NULL, *kb = NULL;
  int nc = 0, nk = 0, rc = -1;
  memset(p, 0, sizeof(*p));
  *file_errno = 0;
  cbuf = x509_read_file(certfile, &clen, err, errlen, file_errno);
  if (cbuf == NULL) goto done;
  kbuf = x509_read_file(keyfile, &klen, err, errlen, file_errno);
  if (kbuf == NULL) goto done;
  nc = x509_pem_split(cbuf, clen, &cb);
  if (pair_certs(p, cb, nc, err, errlen) != 0) goto done;
  nk = x509_pem_split(kbuf, klen, &kb);
  if (pair_key(p, kb, nk, err, errlen) != 0) goto done;
  if (X509_check_private_key(p->cert, p->key) != 1) {
    ERR_clear_error();
    snprintf(err, errlen, "tls: private key does not match public key");
    goto done;
  }
  rc = 0;
done:
  if (rc != 0) pair_free(p);
  x509_pem_free(cb, nc);
  x509_pem_free(kb, nk);
  if (cbuf) OPENSSL_cleanse(cbuf, clen);
  if (kbuf) OPENSSL_cleanse(kbuf, klen);
  free(cbuf);
  free(kbuf);
  return rc;
}

/* Loads a CA bundle like etcd's NewCertPool: every PEM block must parse as
** a certificate; no blocks at all is an empty pool (not an error). */
int ca_load (const char *path, STACK_OF(X509) **out, char *err, size_t errlen) {
  size_t len = 0;
  char *buf = x509_read_file(path, &len, err, errlen, NULL);
  x509_pem *v = NULL;
  int n, i, rc = 0;
  STACK_OF(X509) *sk;
  *out = NULL;
  if (buf == NULL) return -1;
  sk = sk_X509_new_null();
  n = x509_pem_split(buf, len, &v);
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
  x509_pem_free(v, n);
  free(buf);
  if (rc != 0) sk_X509_pop_free(sk, X509_free);
  else *out = sk;
  return rc;
}


void join_list (char *buf, size_t len, const strlist *l, const char *sep) {
  size_t used = 0;
  int i;
  buf[0] = '\0';
  for (i = 0; i < l->n && used < len; i++)
    used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? sep : "", l->v[i]);
}
