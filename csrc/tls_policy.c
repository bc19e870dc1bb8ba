/*
** tls_policy.c: the peerlisten.TlsPolicy userdata (one SSL_CTX plus etcd's
** peer checks).  Owned by the TLS helper; conn.c/listener.c use it through
** the pl_tls_* contract in peerlisten.h.  (Initial stub so the build links.)
*/
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peerlisten.h"

struct pl_tls {
  int refs;
  SSL_CTX *ctx;
  double handshake_timeout;
};

pl_tls *pl_tls_check (lua_State *L, int idx) {
  pl_tls **p = (pl_tls **)luaL_checkudata(L, idx, PL_TLSPOLICY_MT);
  luaL_argcheck(L, *p != NULL, idx, "attempt to use a closed TLS policy");
  return *p;
}

pl_tls *pl_tls_retain (pl_tls *t) { t->refs++; return t; }

void pl_tls_release (pl_tls *t) {
  if (t == NULL || --t->refs > 0) return;
  SSL_CTX_free(t->ctx);
  free(t);
}

int pl_tls_has_cert (const pl_tls *t) { (void)t; return 0; }

double pl_tls_handshake_timeout (const pl_tls *t) { return t->handshake_timeout; }

SSL *pl_tls_new_ssl (pl_tls *t, char *err, size_t errlen) {
  (void)t;
  snprintf(err, errlen, "TLS policy not implemented yet");
  return NULL;
}

const char *pl_tls_handshake_failure (SSL *ssl, int ssl_error, char *msg, size_t msglen) {
  (void)ssl; (void)ssl_error;
  snprintf(msg, msglen, "tls: handshake failure");
  return "handshake";
}

int pl_tls_post_check_may_block (pl_tls *t, SSL *ssl, const char *remote_ip) {
  (void)t; (void)ssl; (void)remote_ip;
  return 0;
}

const char *pl_tls_post_check (pl_tls *t, SSL *ssl, const char *remote_ip,
                               char *msg, size_t msglen) {
  (void)t; (void)ssl; (void)remote_ip; (void)msg; (void)msglen;
  return NULL;
}

void pl_tls_push_info (lua_State *L, SSL *ssl) { (void)ssl; lua_newtable(L); }

void pl_tls_push_peer_names (lua_State *L, SSL *ssl) {
  (void)ssl;
  lua_newtable(L);
  lua_newtable(L);
}

void pl_tls_push_pending_logs (lua_State *L, pl_tls *t) { (void)t; lua_pushnil(L); }

int pl_open_tlspolicy (lua_State *L) {
  (void)L;
  return 0;
}
