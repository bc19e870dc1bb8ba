/*
** tls_policy.c: the peerlisten.TlsPolicy userdata: construction in etcd's
** order, reference counting, certificate reload and the Lua methods.
** conn.c and listener.c use it only through the pl_tls_* contract in
** peerlisten.h.
*/

/***
The C core (private: applications `require "peerlisten"`); its userdata
types are what the Lua API hands out.
@module peerlisten.core
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

#define TLS_CLOSED_MSG "attempt to use a closed TLS policy"

/* ---------------------------------------------------------------------
** Certificate reload and new connections.
*/

/* Reports a failed reload once per file version and error text. */
static void cert_reload_failed (pl_tls *t, const char *msg, const char *err, int changed) {
  if (!changed && strcmp(err, t->cert_err) == 0) return;
  snprintf(t->cert_err, sizeof(t->cert_err), "%s", err);
  pending_add(t, logent_new("warn", msg, "cert-file", t->cert_file, "key-file", t->key_file,
                            "error", err));
}

/* Re-reads cert+key when either file changed since the last good load; a
** good new pair replaces the old one in the shared SSL_CTX (SSLs already
** created keep theirs), a bad one is reported and the old pair stays.  A
** failed load is retried (at most once a second while the files stay as
** they are): the failure may have been EMFILE or ENOMEM.
** This runs on the loop thread: x509_read_file refuses without blocking
** anything that is not a regular file and caps the size, and the files are
** read only when their stat signature changed. */
static void cert_maybe_reload (pl_tls *t) {
  filesig sig[2];
  certpair p;
  char err[512];
  int ferr, changed;
  sig_of(t->cert_file, &sig[0]);
  sig_of(t->key_file, &sig[1]);
  if (reload_due(&t->cert_rl, sig, 2) != RELOAD_NOW) return;
  changed = !t->cert_rl.failed || !sig_eq(&sig[0], &t->cert_rl.bad[0]) ||
            !sig_eq(&sig[1], &t->cert_rl.bad[1]);
  if (pair_load(t->cert_file, t->key_file, &p, err, sizeof(err), &ferr) != 0) {
    reload_done(&t->cert_rl, sig, 2, 0);
    cert_reload_failed(t, ferr == ENOENT ? "failed to find peer cert files"
                                         : "failed to create peer certificate", err, changed);
    return;
  }
  ERR_clear_error();
  if (SSL_CTX_use_cert_and_key(t->ctx, p.cert, p.key, p.chain, 1) != 1) {
    pl_ssl_errstr(err, sizeof(err));
    reload_done(&t->cert_rl, sig, 2, 0);
    cert_reload_failed(t, "failed to create peer certificate", err, changed);
  }
  else {
    reload_done(&t->cert_rl, sig, 2, 1);
    t->cert_err[0] = '\0';
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
  free(t->list12);
  free(t->list13);
  SSL_CTX_free(t->client_ctx);
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
handshake_timeout (seconds, default 10), session_tickets (default false),
insecure_skip_verify (default false; client side: do not verify the server).
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

pl_tls *pl_tls_opt (lua_State *L, int idx, const char *key) {
  tlsbox *b = (tlsbox *)luaL_testudata(L, idx, PL_TLSPOLICY_MT);
  if (b == NULL)
    luaL_error(L, "bad option '%s' (" PL_TLSPOLICY_MT " expected, got %s)", key, luaL_typename(L, idx));
  else if (b->t == NULL)
    luaL_error(L, "bad option '%s' (" TLS_CLOSED_MSG ")", key);
  return b->t;
}

static const char *const known_opts[] = {
  "cert_file", "key_file", "client_cert_file", "client_key_file", "trusted_ca_file",
  "client_cert_auth", "crl_file", "cipher_suites", "min_version", "max_version",
  "allowed_cns", "allowed_hostnames", "skip_client_san_verify", "alpn",
  "handshake_timeout", "session_tickets", "insecure_skip_verify", NULL
};

int cfg_fail (cfgerr *e, const char *code, const char *fmt, ...) {
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

/* Unknown keys first: nothing is silently dropped. */
static int check_keys (lua_State *L, cfgerr *e) {
  int i;
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
  return 0;
}

static int read_options (lua_State *L, pl_tls *t, char **minv, char **maxv, int *alpn_set,
                         cfgerr *e) {
  int ty;
  if (opt_str(L, "cert_file", &t->cert_file, e) || opt_str(L, "key_file", &t->key_file, e) ||
      opt_str(L, "client_cert_file", &t->client_cert_file, e) ||
      opt_str(L, "client_key_file", &t->client_key_file, e) ||
      opt_str(L, "trusted_ca_file", &t->trusted_ca_file, e) ||
      opt_str(L, "crl_file", &t->crl_file, e) ||
      opt_bool(L, "client_cert_auth", &t->client_cert_auth, e) ||
      opt_bool(L, "skip_client_san_verify", &t->skip_san, e) ||
      opt_bool(L, "session_tickets", &t->session_tickets, e) ||
      opt_bool(L, "insecure_skip_verify", &t->insecure_skip_verify, e) ||
      opt_list(L, "cipher_suites", &t->ciphers, NULL, e) ||
      opt_list(L, "allowed_cns", &t->allowed_cns, NULL, e) ||
      opt_list(L, "allowed_hostnames", &t->allowed_hostnames, NULL, e) ||
      opt_list(L, "alpn", &t->alpn, alpn_set, e) ||
      opt_str(L, "min_version", minv, e) || opt_str(L, "max_version", maxv, e))
    return -1;
  ty = lua_getfield(L, 1, "handshake_timeout");
  if (ty != LUA_TNIL) {
    lua_Number n = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (ty != LUA_TNUMBER || !(n > 0) || n > 1e9)
      return cfg_fail(e, "ETLSCONFIG", "TLS policy option \"handshake_timeout\": positive number of seconds expected");
    t->handshake_timeout = (double)n;
    return 0;
  }
  lua_pop(L, 1);
  return 0;
}

/* ALPN protocol names in wire format (default {"h2"}). */
static int build_alpn (pl_tls *t, int alpn_set, cfgerr *e) {
  size_t off = 0;
  int i;
  if (!alpn_set) {
    t->alpn.v = (char **)calloc(1, sizeof(char *));
    if (t->alpn.v) { t->alpn.v[0] = xstrdup("h2"); t->alpn.n = 1; }
  }
  for (i = 0; i < t->alpn.n; i++) {
    size_t n = strlen(t->alpn.v[i]);
    if (n == 0 || n > 255)
      return cfg_fail(e, "ETLSCONFIG", "TLS policy option \"alpn\": protocol names must be 1 to 255 bytes");
    t->alpn_wirelen += n + 1;
    if (strcmp(t->alpn.v[i], "h2") == 0) t->alpn_has_h2 = 1;
  }
  if (t->alpn_wirelen == 0) return 0;
  t->alpn_wire = (unsigned char *)malloc(t->alpn_wirelen);
  if (t->alpn_wire == NULL) return cfg_fail(e, "ENOMEM", "out of memory");
  for (i = 0; i < t->alpn.n; i++) {
    size_t n = strlen(t->alpn.v[i]);
    t->alpn_wire[off++] = (unsigned char)n;
    memcpy(t->alpn_wire + off, t->alpn.v[i], n);
    off += n;
  }
  return 0;
}

static int check_versions (pl_tls *t, const char *minv, const char *maxv, cfgerr *e) {
  if (parse_version(minv, &t->min_version, e) || parse_version(maxv, &t->max_version, e)) return -1;
  if (t->max_version != 0 && t->min_version > t->max_version)
    return cfg_fail(e, "ETLSCONFIG", "min version (%s) is greater than max version (%s)", minv, maxv);
  return 0;
}

/* The server context: versions, ciphers, sessions, ALPN. */
static int build_ctx (pl_tls *t, cfgerr *e) {
  long opts = SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION;
  t->ctx = SSL_CTX_new(TLS_server_method());
  if (t->ctx == NULL) { ERR_clear_error(); return cfg_fail(e, "ETLSCONFIG", "tls: cannot create SSL_CTX"); }
  SSL_CTX_set_app_data(t->ctx, t);
  SSL_CTX_set_min_proto_version(t->ctx, t->min_version ? t->min_version : TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(t->ctx, t->max_version ? t->max_version : TLS1_3_VERSION);
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
  if (tls_apply_ciphers(t, t->ctx) != 0) {
    ERR_clear_error();
    return cfg_fail(e, "ETLSCONFIG", "tls: OpenSSL rejected the cipher suite list");
  }
  if (t->alpn_wirelen > 0) SSL_CTX_set_alpn_select_cb(t->ctx, alpn_cb, t);
  return 0;
}

static int load_server_pair (pl_tls *t, cfgerr *e) {
  char tmp[700];
  certpair p;
  filesig sig[2];
  int ferr;
  if ((t->cert_file == NULL) != (t->key_file == NULL))
    return cfg_fail(e, "ETLSCONFIG", "KeyFile and CertFile must both be present[key: %s, cert: %s]",
                    t->key_file ? t->key_file : "", t->cert_file ? t->cert_file : "");
  if (t->cert_file == NULL) return 0;
  /* the signatures before the read: a change during it shows up next time */
  sig_of(t->cert_file, &sig[0]);
  sig_of(t->key_file, &sig[1]);
  if (pair_load(t->cert_file, t->key_file, &p, tmp, sizeof(tmp), &ferr) != 0)
    return cfg_fail(e, "ECERT", "%s", tmp);
  ERR_clear_error();
  if (SSL_CTX_use_cert_and_key(t->ctx, p.cert, p.key, p.chain, 1) != 1) {
    unsigned long q = ERR_get_error();
    ERR_error_string_n(q, tmp, sizeof(tmp));
    ERR_clear_error();
    pair_free(&p);
    return cfg_fail(e, "ECERT", "tls: %s", tmp);
  }
  pair_free(&p);
  reload_done(&t->cert_rl, sig, 2, 1);
  return 0;
}

static int check_client_pair (pl_tls *t, cfgerr *e) {
  char tmp[700];
  certpair p;
  int ferr;
  if ((t->client_cert_file == NULL) != (t->client_key_file == NULL))
    return cfg_fail(e, "ETLSCONFIG", "ClientKeyFile and ClientCertFile must both be present or both absent: key: %s, cert: %s]",
                    t->client_key_file ? t->client_key_file : "", t->client_cert_file ? t->client_cert_file : "");
  if (t->client_cert_file == NULL) return 0;
  if (pair_load(t->client_cert_file, t->client_key_file, &p, tmp, sizeof(tmp), &ferr) != 0)
    return cfg_fail(e, "ECERT", "%s", tmp);
  pair_free(&p);
  return 0;
}

static int check_allow_lists (pl_tls *t, cfgerr *e) {
  char a[300], b[300];
  if (t->allowed_cns.n == 0 || t->allowed_hostnames.n == 0) return 0;
  go_quote_list(a, sizeof(a), &t->allowed_cns);
  go_quote_list(b, sizeof(b), &t->allowed_hostnames);
  return cfg_fail(e, "ETLSCONFIG", "AllowedCNs and AllowedHostnames are mutually exclusive (cns=%s, hostnames=%s)", a, b);
}

static int load_trusted_ca (pl_tls *t, cfgerr *e) {
  char tmp[700];
  X509_STORE *st = SSL_CTX_get_cert_store(t->ctx);
  int i;
  if (ca_load(t->trusted_ca_file, &t->ca_certs, tmp, sizeof(tmp)) != 0)
    return cfg_fail(e, "ECERT", "%s", tmp);
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
  return 0;
}

/* Checks we cannot enforce without client certificates are warned about. */
static void warn_unverified (pl_tls *t) {
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

/* Client certificate verification: the trust store, then the callbacks. */
static int setup_client_verify (pl_tls *t, cfgerr *e) {
  t->verify_client = t->trusted_ca_file != NULL || t->client_cert_auth;
  if (t->trusted_ca_file != NULL) {
    if (load_trusted_ca(t, e) != 0) return -1;
  }
  else if (t->client_cert_auth) {
    if (SSL_CTX_set_default_verify_paths(t->ctx) != 1) ERR_clear_error();
  }
  if (!t->verify_client) {
    warn_unverified(t);
    return 0;
  }
  SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_note_cb);
  /* the chain cache needs a trust store fixed in memory (trusted_ca_file) */
  if (t->trusted_ca_file != NULL) t->vc = vcache_new();
  if (t->vc != NULL || t->allowed_cns.n > 0 || t->allowed_hostnames.n > 0)
    SSL_CTX_set_cert_verify_callback(t->ctx, verify_allowed_cb, t);
  if (t->session_tickets &&
      SSL_CTX_set_session_ticket_cb(t->ctx, NULL, ticket_decrypt_cb, t) != 1) {
    ERR_clear_error();
    return cfg_fail(e, "ETLSCONFIG", "tls: cannot install the session ticket callback");
  }
  return 0;
}

/* Validates the options and builds the SSL_CTX, one step at a time in
** etcd's order: versions, cipher suites, then the files and checks of
** etcd's TLSInfo (cert pair, client pair, allow lists, trusted CA). */
static int tls_configure (lua_State *L, pl_tls *t, cfgerr *e) {
  char *minv = NULL, *maxv = NULL;
  int alpn_set = 0;
  int rc = check_keys(L, e) || read_options(L, t, &minv, &maxv, &alpn_set, e) ||
           build_alpn(t, alpn_set, e) || check_versions(t, minv, maxv, e) ||
           tls_cipher_lists(t, e) || build_ctx(t, e) || load_server_pair(t, e) ||
           check_client_pair(t, e) || check_allow_lists(t, e) || setup_client_verify(t, e);
  free(minv);
  free(maxv);
  return rc ? -1 : 0;
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
  lua_pushboolean(L, t->insecure_skip_verify);
  lua_setfield(L, -2, "insecure_skip_verify");
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



static const luaL_Reg tls_methods[] = {
  {"info", tls_info},
  {"tls_info_string", tls_info_string},
  {"has_cert", tls_has_cert},
  {"warnings", tls_warnings},
  {"close", tls_close},
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
  {NULL, NULL}
};

/* Adds tls_policy and cipher_suites to the module table on top. */
int pl_open_tlspolicy (lua_State *L) {
  tls_verify_init();
  if (luaL_newmetatable(L, PL_TLSPOLICY_MT)) {
    luaL_setfuncs(L, tls_meta, 0);
    luaL_newlib(L, tls_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, tls_funcs, 0);
  return 0;
}
