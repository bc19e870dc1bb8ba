/*
** tls.h: private to the tls_*.c files.  struct pl_tls and the helpers those
** files share; everything else goes through the pl_tls_* contract in
** peerlisten.h.  Only the tls_*.c files take the policy's mutex.
*/
#ifndef PL_TLS_H
#define PL_TLS_H

#include <stdint.h>
#include <time.h>
#include <sys/types.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "peerlisten.h"
#include "x509.h"

#define MAX_PENDING 64     /* queued runtime warnings, beyond which they drop */

typedef struct filesig {
  int err;                 /* 0, or the errno of a failed stat */
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtim, ctim;
} filesig;

/* When to re-read a file (or a cert/key pair: n = 2): its stat signatures
** are recorded only after a successful load, so a load that failed for a
** passing reason (EMFILE, ENOMEM, EIO) is retried; a file that keeps failing
** unchanged is retried at most every RELOAD_RETRY_MS. */
#define RELOAD_RETRY_MS 1000
typedef struct reloader {
  filesig ok[2], bad[2];   /* of the last good load, of the last failed one */
  int loaded, failed;
  uint64_t retry_at;       /* uv_hrtime() after which a failed load is retried */
} reloader;
enum { RELOAD_KEEP, RELOAD_NOW, RELOAD_STILL_BAD };

typedef struct logent {
  struct logent *next;
  char *level, *msg;
  int nf;
  char *kv[8];             /* key, value, key, value, ... */
} logent;

struct vcache;

struct pl_tls {
  int refs;                      /* loop thread only */
  SSL_CTX *ctx;
  SSL_CTX *client_ctx;           /* built on first pl_tls_new_client_ssl, loop thread */
  /* configuration (immutable after construction) */
  char *cert_file, *key_file, *client_cert_file, *client_key_file;
  char *trusted_ca_file, *crl_file;
  int client_cert_auth, verify_client, skip_san, session_tickets, insecure_skip_verify;
  int min_version, max_version;  /* TLS1_2_VERSION / TLS1_3_VERSION, 0 unset */
  strlist ciphers, allowed_cns, allowed_hostnames, alpn;
  char *list12, *list13;         /* OpenSSL cipher lists from ciphers, or NULL */
  unsigned char *alpn_wire;
  size_t alpn_wirelen;
  int alpn_has_h2;
  double handshake_timeout;
  STACK_OF(X509) *ca_certs;      /* certificates of trusted_ca_file */
  logent *warnings;              /* construction warnings (immutable) */
  /* server certificate reload (loop thread only) */
  reloader cert_rl;
  char cert_err[256];            /* last reload failure reported */
  /* everything below is shared with the thread pool: guarded by mu */
  uv_mutex_t mu;
  int mu_ok;
  struct vcache *vc;             /* verified-chain cache, or NULL */
  reloader crl_rl;
  int crl_ever;
  X509_CRL *crl;
  char crl_err[256];
  logent *pending, **pending_tail;
  int npending;
};

/* An error while building a policy: message and fail-triple code. */
typedef struct cfgerr {
  char msg[700];
  const char *code;
} cfgerr;

PL_HIDDEN int cfg_fail (cfgerr *e, const char *code, const char *fmt, ...);

/* ---- tls_ciphers.c ---- */
typedef struct cipher_def {
  const char *name;        /* Go/IANA name etcd accepts */
  unsigned id;             /* IANA id */
  const char *ossl;        /* OpenSSL name */
  int v13;                 /* TLS 1.3 suite (SSL_CTX_set_ciphersuites) */
  int old;                 /* also TLS 1.0/1.1 */
  int legacy;              /* RC4/3DES: accepted, never usable with OpenSSL 3 */
  int alias;               /* a second name etcd accepts for the same suite */
} cipher_def;

PL_HIDDEN const cipher_def *cipher_by_id (unsigned id);
/* Builds t->list12/list13 from t->ciphers (warnings for unusable ones). */
PL_HIDDEN int tls_cipher_lists (pl_tls *t, cfgerr *e);
PL_HIDDEN int tls_apply_ciphers (const pl_tls *t, SSL_CTX *ctx);
PL_HIDDEN int tls_cipher_suites (lua_State *L);

/* ---- tls_files.c ---- */
typedef struct certpair {
  X509 *cert;
  STACK_OF(X509) *chain;
  EVP_PKEY *key;
} certpair;

PL_HIDDEN char *xstrdup (const char *s);
PL_HIDDEN void sig_of (const char *path, filesig *s);
PL_HIDDEN int sig_eq (const filesig *a, const filesig *b);
/* RELOAD_KEEP (the loaded version is current), RELOAD_NOW (read it) or
** RELOAD_STILL_BAD (failed before, unchanged, not yet time to retry). */
PL_HIDDEN int reload_due (const reloader *r, const filesig *sig, int n);
PL_HIDDEN void reload_done (reloader *r, const filesig *sig, int n, int ok);
/* Log entries: level, msg, then up to 3 key/value string pairs (NULL ends). */
PL_HIDDEN logent *logent_new (const char *level, const char *msg, const char *k1,
                              const char *v1, const char *k2, const char *v2,
                              const char *k3, const char *v3);
PL_HIDDEN void logent_free (logent *e);
PL_HIDDEN void logent_push (lua_State *L, const logent *e, int flat);
PL_HIDDEN void pending_add (pl_tls *t, logent *e);
PL_HIDDEN void warning_add (pl_tls *t, logent *e);
PL_HIDDEN void join_list (char *buf, size_t len, const strlist *l, const char *sep);
PL_HIDDEN void go_quote_list (char *buf, size_t len, const strlist *l);
PL_HIDDEN void pair_free (certpair *p);
PL_HIDDEN int pair_load (const char *certfile, const char *keyfile, certpair *p,
                         char *err, size_t errlen, int *ferr);
PL_HIDDEN int ca_load (const char *path, STACK_OF(X509) **out, char *err, size_t errlen);

/* ---- tls_verify.c ---- */
/* Per-SSL notes kept only when a handshake fails in our callbacks. */
typedef struct sslnote {
  int cn_rejected;
  char bad_time[40];         /* notAfter/notBefore of an expired cert */
  char alpn_offered[300];
} sslnote;

PL_HIDDEN void tls_verify_init (void);
PL_HIDDEN sslnote *note_get (SSL *ssl, int create);
PL_HIDDEN int verify_allowed_cb (X509_STORE_CTX *xs, void *arg);
PL_HIDDEN int verify_note_cb (int ok, X509_STORE_CTX *xs);
PL_HIDDEN int ticket_decrypt_cb (SSL *ssl, SSL_SESSION *ss, const unsigned char *keyname,
                                 size_t keynamelen, SSL_TICKET_STATUS status, void *arg);
PL_HIDDEN int alpn_cb (SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg);

/* ---- tls_cache.c ---- */
PL_HIDDEN struct vcache *vcache_new (void);
PL_HIDDEN void vcache_free (struct vcache *c);
PL_HIDDEN void vcache_flush_locked (struct vcache *c);
/* X509_verify_cert through the cache: a chain verified before (same bytes,
** still within every validity period) is accepted without re-verifying. */
PL_HIDDEN int vcache_verify (pl_tls *t, X509_STORE_CTX *xs);

/* "Now" of client chain verification.  Only the test build can shift it. */
#ifdef PL_TEST_HOOKS
PL_HIDDEN extern long pl_tls_clock_shift;
#define tls_now() (time(NULL) + (time_t)pl_tls_clock_shift)
#else
#define tls_now() time(NULL)
#endif

/* ---- tls_report.c ---- */
PL_HIDDEN const char *version_name (int v);
PL_HIDDEN void verify_text (SSL *ssl, long v, char *buf, size_t len);
PL_HIDDEN const char *alert_text (int a);

#endif
