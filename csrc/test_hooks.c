/*
** test_hooks.c: hooks the specs use to reach inside the TLS side without
** sockets (in-memory handshakes, the chain cache's counters, a shifted
** clock).  Compiled only with -DPL_TEST_HOOKS (the in-tree build of `make`);
** the rockspec build leaves this file empty, so the installed module has
** none of them and its verification path reads the real clock only.
*/
#ifdef PL_TEST_HOOKS
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "peerlisten.h"
#include "x509.h"

long pl_tls_clock_shift;


/* policy:_pending_logs() drains runtime warnings (reload failures,
** CRL signature/nextUpdate), as listeners do after each handshake: an array
** of flat { level =, msg =, <field> = ... } tables, or nil. */
static int tls_pending_logs (lua_State *L) {
  pl_tls_push_pending_logs(L, pl_tls_check(L, 1));
  return 1;
}

/* policy:_new_ssl() runs the reload path as a new connection would
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
  x509_name_str(x ? X509_get_subject_name(x) : NULL, b, sizeof(b));
  SSL_free(ssl);
  lua_pushstring(L, x ? b : "");
  return 1;
}


/* core._tls_handshake(policy, client_opts) runs one
** handshake in memory (a client SSL over a BIO pair) through the same
** pl_tls_* calls conn.c makes.  client_opts: cert, key, ca, min_version,
** max_version, ciphers (OpenSSL TLS1.2 list), ciphersuites (TLS1.3 list),
** groups, alpn (array), raw (bytes sent instead of a ClientHello),
** remote_ip, cert_pem/key_pem (the pair from memory), session (DER of
** info.session from an earlier call: offered for resumption), no_ticket.
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
static SSL_SESSION *test_session;   /* the last one, for client_opts.session */

static int test_ticket_cb (SSL *ssl, SSL_SESSION *sess) {
  (void)ssl;
  test_tickets++;
  SSL_SESSION_free(test_session);
  test_session = sess;
  return 1;                  /* kept until the handshake call returns */
}

/* client_opts.session: a session (DER, from info.session of an earlier
** call) the client offers for resumption. */
static void test_set_session (lua_State *L, SSL *cli) {
  size_t n = 0;
  const char *der;
  lua_getfield(L, 2, "session");
  der = lua_tolstring(L, -1, &n);
  if (der != NULL) {
    const unsigned char *d = (const unsigned char *)der;
    SSL_SESSION *ss = d2i_SSL_SESSION(NULL, &d, (long)n);
    if (ss != NULL) SSL_set_session(cli, ss);
    SSL_SESSION_free(ss);
  }
  lua_pop(L, 1);
}

/* Sets info.session (DER of the last session the client got) on the table on top. */
static void test_push_session (lua_State *L) {
  int n = test_session ? i2d_SSL_SESSION(test_session, NULL) : 0;
  if (n > 0) {
    unsigned char *buf = (unsigned char *)malloc((size_t)n), *q = buf;
    if (buf != NULL && i2d_SSL_SESSION(test_session, &q) == n) {
      lua_pushlstring(L, (const char *)buf, (size_t)n);
      lua_setfield(L, -2, "session");
    }
    free(buf);
  }
  SSL_SESSION_free(test_session);
  test_session = NULL;
}

static int test_version (const char *b) {
  return strcmp(b, "TLS1.3") == 0 ? TLS1_3_VERSION : strcmp(b, "TLS1.2") == 0 ? TLS1_2_VERSION :
         strcmp(b, "TLS1.1") == 0 ? TLS1_1_VERSION : TLS1_VERSION;
}

/* client_opts.cert_pem/key_pem: the client pair from memory (no file is
** opened: the specs use it while this process has no fd to spare). */
static void test_client_pem (lua_State *L, SSL_CTX *cctx) {
  size_t cn = 0, kn = 0;
  const char *c, *k;
  lua_getfield(L, 2, "cert_pem");
  lua_getfield(L, 2, "key_pem");
  c = lua_tolstring(L, -2, &cn);
  k = lua_tolstring(L, -1, &kn);
  if (c != NULL && k != NULL) {
    BIO *cb = BIO_new_mem_buf(c, (int)cn), *kb = BIO_new_mem_buf(k, (int)kn);
    X509 *x = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    EVP_PKEY *pk = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    if (x != NULL && pk != NULL) {
      SSL_CTX_use_certificate(cctx, x);
      SSL_CTX_use_PrivateKey(cctx, pk);
    }
    X509_free(x);
    EVP_PKEY_free(pk);
    BIO_free(cb);
    BIO_free(kb);
  }
  lua_pop(L, 2);
}

/* The in-memory client: a context from the options at index 2. */
static SSL_CTX *test_client_ctx (lua_State *L) {
  SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
  char b[600], b2[600];
  int i;
  if (cctx == NULL) return NULL;
  SSL_CTX_set_security_level(cctx, 0);
  SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(cctx, test_ticket_cb);
  if (opt_cstr(L, 2, "min_version", b, sizeof(b))) SSL_CTX_set_min_proto_version(cctx, test_version(b));
  if (opt_cstr(L, 2, "max_version", b, sizeof(b))) SSL_CTX_set_max_proto_version(cctx, test_version(b));
  if (opt_cstr(L, 2, "ciphers", b, sizeof(b))) SSL_CTX_set_cipher_list(cctx, b);
  if (opt_cstr(L, 2, "ciphersuites", b, sizeof(b))) SSL_CTX_set_ciphersuites(cctx, b);
  if (opt_cstr(L, 2, "groups", b, sizeof(b))) SSL_CTX_set1_groups_list(cctx, b);
  if (lua_getfield(L, 2, "no_ticket") == LUA_TBOOLEAN && lua_toboolean(L, -1))
    SSL_CTX_set_options(cctx, SSL_OP_NO_TICKET);
  lua_pop(L, 1);
  if (opt_cstr(L, 2, "cert", b, sizeof(b)) && opt_cstr(L, 2, "key", b2, sizeof(b2))) {
    SSL_CTX_use_certificate_chain_file(cctx, b);
    SSL_CTX_use_PrivateKey_file(cctx, b2, SSL_FILETYPE_PEM);
  }
  test_client_pem(L, cctx);
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
  return cctx;
}

/* Drives both sides until the server finishes or fails (NULL reason: the
** server finished); *cfail tells whether the client gave up. */
static const char *test_pump (SSL *srv, SSL *cli, int have_raw, int *cfail,
                              char *err, size_t errlen) {
  int i, sdone = 0, cdone = 0;
  for (i = 0; i < 50 && !(sdone && (cdone || *cfail || cli == NULL)); i++) {
    int r;
    if (cli != NULL && !cdone && !*cfail) {
      r = SSL_do_handshake(cli);
      if (r == 1) cdone = 1;
      else if (SSL_get_error(cli, r) != SSL_ERROR_WANT_READ) *cfail = 1;
      ERR_clear_error();
    }
    if (!sdone) {
      r = SSL_do_handshake(srv);
      if (r == 1) sdone = 1;
      else {
        int se = SSL_get_error(srv, r);
        if (se != SSL_ERROR_WANT_READ || (*cfail && i > 2) || (have_raw && i > 2)) {
          if (se == SSL_ERROR_WANT_READ) se = SSL_ERROR_SYSCALL;   /* peer gone: EOF */
          return pl_tls_handshake_failure(srv, se, err, errlen);
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
  if (sdone && cdone && cli != NULL) {
    /* TLS 1.3: let the client read the tickets sent after the handshake */
    char tmp[16];
    if (SSL_read(cli, tmp, sizeof(tmp)) <= 0) ERR_clear_error();
  }
  if (!sdone) { snprintf(err, errlen, "handshake did not finish"); return "incomplete"; }
  return NULL;
}

static int tls_handshake_test (lua_State *L) {
  pl_tls *t = pl_tls_check(L, 1);
  char err[600], remote[64];
  const char *reason, *side = "server", *raw;
  SSL_CTX *cctx = NULL;
  SSL *srv, *cli = NULL;
  BIO *sb = NULL, *cb = NULL;
  int n, cfail = 0;
  size_t rawlen = 0;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_getfield(L, 2, "raw");
  raw = lua_tolstring(L, -1, &rawlen);
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
  if (raw == NULL) {
    cctx = test_client_ctx(L);
    cli = SSL_new(cctx);
    SSL_set_bio(cli, cb, cb);
    SSL_set_connect_state(cli);
    test_set_session(L, cli);
  }
  else {
    BIO_write(cb, raw, (int)rawlen);
    BIO_shutdown_wr(cb);
  }
  reason = test_pump(srv, cli, raw != NULL, &cfail, err, sizeof(err));
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
    n = 6;
  }
  else {
    lua_pushboolean(L, 1);
    pl_tls_push_info(L, srv);
    lua_pushinteger(L, test_tickets);
    lua_setfield(L, -2, "client_tickets");
    test_push_session(L);
    pl_tls_push_peer_names(L, srv);
    lua_pushboolean(L, pl_tls_post_check_may_block(t, srv, remote));
    n = 5;
  }
  SSL_SESSION_free(test_session);
  test_session = NULL;
  /* closed cleanly, as far as the session cache goes (SSL_free of an SSL
  ** that never sent close_notify drops its session from the cache) */
  SSL_set_shutdown(srv, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  SSL_free(cli);
  SSL_free(srv);
  if (cli == NULL) BIO_free(cb);   /* raw mode: the client half has no SSL */
  SSL_CTX_free(cctx);
  ERR_clear_error();
  return n;
}

/* core._tls_clock_shift(seconds) shifts the "now" of client chain
** verification (fresh and cached alike) and of its error texts; returns the
** previous shift.  0 restores the real clock. */
static int tls_clock_shift (lua_State *L) {
  long prev = pl_tls_clock_shift;
  pl_tls_clock_shift = (long)luaL_checkinteger(L, 1);
  lua_pushinteger(L, prev);
  return 1;
}

/* policy:_verify_cache([max]): the verified-chain cache's counters. */
static int tls_verify_cache (lua_State *L) {
  return pl_tls_test_cache(L, pl_tls_check(L, 1), luaL_optinteger(L, 2, -1));
}

/* Drives a client SSL and a server SSL over a BIO pair; NULL when the
** client is through (a TLS 1.3 alert the server sends after the client's
** Finished is read as a peer would see it: on its first read). */
static const char *dial_pump (SSL *cli, SSL *srv, char *msg, size_t msglen) {
  int i, cdone = 0, sdone = 0, sfail = 0, r;
  char b[1];
  for (i = 0; i < 50 && !(cdone && (sdone || sfail)); i++) {
    if (!cdone) {
      r = SSL_do_handshake(cli);
      if (r == 1) cdone = 1;
      else if (SSL_get_error(cli, r) != SSL_ERROR_WANT_READ)
        return pl_tls_client_failure(cli, SSL_get_error(cli, r), msg, msglen);
    }
    if (!sdone && !sfail) {
      r = SSL_do_handshake(srv);
      if (r == 1) sdone = 1;
      else if (SSL_get_error(srv, r) != SSL_ERROR_WANT_READ) sfail = 1;
      ERR_clear_error();
    }
  }
  if (!cdone) { snprintf(msg, msglen, "handshake did not finish"); return "incomplete"; }
  r = SSL_read(cli, b, sizeof(b));
  if (r <= 0 && SSL_get_error(cli, r) == SSL_ERROR_SSL)
    return pl_tls_client_failure(cli, SSL_ERROR_SSL, msg, msglen);
  ERR_clear_error();
  return NULL;
}

/* core._tls_dial(server_policy, client_policy, host [, host_is_ip]) runs a
** client handshake from pl_tls_new_client_ssl against pl_tls_new_ssl in
** memory.  Returns true, tls_info (the client's view) | false, code, msg. */
static int tls_dial_test (lua_State *L) {
  pl_tls *srvp = pl_tls_check(L, 1), *clip = pl_tls_check(L, 2);
  const char *host = luaL_optstring(L, 3, NULL), *code;
  char msg[600];
  SSL *srv, *cli;
  BIO *sb = NULL, *cb = NULL;
  ERR_clear_error();
  cli = pl_tls_new_client_ssl(clip, host, lua_toboolean(L, 4), msg, sizeof(msg));
  if (cli == NULL) {
    lua_pushboolean(L, 0); lua_pushliteral(L, "new_client_ssl"); lua_pushstring(L, msg);
    return 3;
  }
  srv = pl_tls_new_ssl(srvp, msg, sizeof(msg));
  if (srv == NULL) {
    SSL_free(cli);
    lua_pushboolean(L, 0); lua_pushliteral(L, "new_ssl"); lua_pushstring(L, msg);
    return 3;
  }
  BIO_new_bio_pair(&sb, 0, &cb, 0);
  SSL_set_bio(srv, sb, sb);
  SSL_set_accept_state(srv);
  SSL_set_bio(cli, cb, cb);
  code = dial_pump(cli, srv, msg, sizeof(msg));
  if (code != NULL) {
    lua_pushboolean(L, 0);
    lua_pushstring(L, code);
    lua_pushstring(L, msg);
  }
  else {
    lua_pushboolean(L, 1);
    pl_tls_push_info(L, cli);
    lua_pushnil(L);
  }
  SSL_free(cli);
  SSL_free(srv);
  ERR_clear_error();
  return 3;
}

static const luaL_Reg hook_methods[] = {
  {"_pending_logs", tls_pending_logs},
  {"_new_ssl", tls_new_ssl_probe},
  {"_verify_cache", tls_verify_cache},
  {NULL, NULL}
};

static const luaL_Reg hook_funcs[] = {
  {"_tls_handshake", tls_handshake_test},
  {"_tls_clock_shift", tls_clock_shift},
  {"_tls_dial", tls_dial_test},
  {NULL, NULL}
};

/* Adds the hooks to the module table on top and to the policy methods. */
int pl_open_test_hooks (lua_State *L) {
  luaL_setfuncs(L, hook_funcs, 0);
  luaL_getmetatable(L, PL_TLSPOLICY_MT);
  lua_getfield(L, -1, "__index");
  luaL_setfuncs(L, hook_methods, 0);
  lua_pop(L, 2);
  return 0;
}

#else
/* ISO C wants at least one declaration in a translation unit. */
typedef int pl_no_test_hooks;
#endif
