/*
** tls_ciphers.c: the cipher suite catalogue (every name etcd accepts) and
** the OpenSSL cipher lists a policy builds from it.
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

/* Every name etcd (Go 1.19) accepts, with its IANA id, OpenSSL name and
** TLS versions.  Rows marked alias name a suite a row above names too; they
** come last so that a look-up by id finds the primary name. */
static const cipher_def cipher_table[] = {
  {"TLS_RSA_WITH_RC4_128_SHA", 0x0005, "RC4-SHA", 0, 1, 1, 0},
  {"TLS_RSA_WITH_3DES_EDE_CBC_SHA", 0x000A, "DES-CBC3-SHA", 0, 1, 1, 0},
  {"TLS_RSA_WITH_AES_128_CBC_SHA", 0x002F, "AES128-SHA", 0, 1, 0, 0},
  {"TLS_RSA_WITH_AES_256_CBC_SHA", 0x0035, "AES256-SHA", 0, 1, 0, 0},
  {"TLS_RSA_WITH_AES_128_CBC_SHA256", 0x003C, "AES128-SHA256", 0, 0, 0, 0},
  {"TLS_RSA_WITH_AES_128_GCM_SHA256", 0x009C, "AES128-GCM-SHA256", 0, 0, 0, 0},
  {"TLS_RSA_WITH_AES_256_GCM_SHA384", 0x009D, "AES256-GCM-SHA384", 0, 0, 0, 0},
  {"TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", 0xC007, "ECDHE-ECDSA-RC4-SHA", 0, 1, 1, 0},
  {"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", 0xC009, "ECDHE-ECDSA-AES128-SHA", 0, 1, 0, 0},
  {"TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", 0xC00A, "ECDHE-ECDSA-AES256-SHA", 0, 1, 0, 0},
  {"TLS_ECDHE_RSA_WITH_RC4_128_SHA", 0xC011, "ECDHE-RSA-RC4-SHA", 0, 1, 1, 0},
  {"TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", 0xC012, "ECDHE-RSA-DES-CBC3-SHA", 0, 1, 1, 0},
  {"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", 0xC013, "ECDHE-RSA-AES128-SHA", 0, 1, 0, 0},
  {"TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", 0xC014, "ECDHE-RSA-AES256-SHA", 0, 1, 0, 0},
  {"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", 0xC023, "ECDHE-ECDSA-AES128-SHA256", 0, 0, 0, 0},
  {"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", 0xC027, "ECDHE-RSA-AES128-SHA256", 0, 0, 0, 0},
  {"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", 0xC02B, "ECDHE-ECDSA-AES128-GCM-SHA256", 0, 0, 0, 0},
  {"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", 0xC02C, "ECDHE-ECDSA-AES256-GCM-SHA384", 0, 0, 0, 0},
  {"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 0xC02F, "ECDHE-RSA-AES128-GCM-SHA256", 0, 0, 0, 0},
  {"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", 0xC030, "ECDHE-RSA-AES256-GCM-SHA384", 0, 0, 0, 0},
  {"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", 0xCCA8, "ECDHE-RSA-CHACHA20-POLY1305", 0, 0, 0, 0},
  {"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", 0xCCA9, "ECDHE-ECDSA-CHACHA20-POLY1305", 0, 0, 0, 0},
  {"TLS_AES_128_GCM_SHA256", 0x1301, "TLS_AES_128_GCM_SHA256", 1, 0, 0, 0},
  {"TLS_AES_256_GCM_SHA384", 0x1302, "TLS_AES_256_GCM_SHA384", 1, 0, 0, 0},
  {"TLS_CHACHA20_POLY1305_SHA256", 0x1303, "TLS_CHACHA20_POLY1305_SHA256", 1, 0, 0, 0},
  {"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", 0xCCA8, "ECDHE-RSA-CHACHA20-POLY1305", 0, 0, 0, 1},
  {"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", 0xCCA9, "ECDHE-ECDSA-CHACHA20-POLY1305", 0, 0, 0, 1},
};
#define NCIPHERS ((int)(sizeof(cipher_table) / sizeof(cipher_table[0])))

/* TLS 1.2 suites used when no cipher_suites are given: ECDHE only, AEAD
** first (what current Go enables by default), in server preference order. */
static const char tls_default_cipher_list[] =
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

const cipher_def *cipher_by_id (unsigned id) {
  int i;
  for (i = 0; i < NCIPHERS; i++)
    if (cipher_table[i].id == id && !cipher_table[i].alias) return &cipher_table[i];
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

/* Appends one OpenSSL name to a ':'-separated list (malloc'ed). */
static int list_add (char **list, size_t *len, const char *name) {
  size_t n = strlen(name);
  char *nb = (char *)realloc(*list, *len + n + 2);
  if (nb == NULL) return -1;
  *list = nb;
  if (*len > 0) nb[(*len)++] = ':';
  memcpy(nb + *len, name, n + 1);
  *len += n;
  return 0;
}

int tls_cipher_lists (pl_tls *t, cfgerr *e) {
  size_t l12 = 0, l13 = 0;
  int i, usable12 = 0;
  char tmp[600];
  if (t->min_version == TLS1_3_VERSION && t->ciphers.n > 0)
    return cfg_fail(e, "ETLSCONFIG", "cipher suites cannot be configured when only TLS1.3 is enabled");
  for (i = 0; i < t->ciphers.n; i++) {
    const cipher_def *c = cipher_by_name(t->ciphers.v[i]);
    if (c == NULL)
      return cfg_fail(e, "ETLSCONFIG", "unexpected TLS cipher suite \"%s\"", t->ciphers.v[i]);
    if (!cipher_available(c)) {
      warning_add(t, logent_new("warn", c->legacy
          ? "cipher suite cannot be negotiated by OpenSSL; ignoring it"
          : "cipher suite is not available in this OpenSSL; ignoring it",
          "cipher-suite", c->name, NULL, NULL, NULL, NULL));
      continue;
    }
    if (list_add(c->v13 ? &t->list13 : &t->list12, c->v13 ? &l13 : &l12, c->ossl) != 0)
      return cfg_fail(e, "ENOMEM", "out of memory");
    if (!c->v13) usable12 = 1;
  }
  if (t->ciphers.n > 0 && !usable12 && t->min_version != TLS1_3_VERSION &&
      (t->max_version == 0 || t->max_version >= TLS1_2_VERSION)) {
    join_list(tmp, sizeof(tmp), &t->ciphers, " ");
    return cfg_fail(e, "ETLSCONFIG", "cipher suites [%s] leave no TLS 1.2 cipher suite OpenSSL can use "
                    "while TLS1.2 is allowed (add one, or set min_version = \"TLS1.3\" without cipher_suites)", tmp);
  }
  return 0;
}

/* TLS 1.3 suites without cipher_suites: Go's order on hardware with AES
** instructions (OpenSSL's default puts AES-256 first). */
static const char tls_default_suites13[] =
  "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

/* Go's key exchange groups, in its order.  P-521 matters to a peer that
** offers nothing else (a TLS 1.3 client keyed for it, a TLS 1.2 client
** with an RSA certificate). */
static const char tls_groups[] = "X25519:P-256:P-384:P-521";

/* The policy's cipher lists (or the defaults) and Go's groups on ctx. */
int tls_apply_ciphers (const pl_tls *t, SSL_CTX *ctx) {
  if (SSL_CTX_set_cipher_list(ctx, t->list12 ? t->list12 : tls_default_cipher_list) != 1) return -1;
  if (SSL_CTX_set_ciphersuites(ctx, t->list13 ? t->list13 : tls_default_suites13) != 1) return -1;
  if (SSL_CTX_set1_groups_list(ctx, tls_groups) != 1) return -1;
  return 0;
}

/***
core.cipher_suites() -> array of {name=, id=, versions={...}, available=, openssl=, tls13=}
*/
int tls_cipher_suites (lua_State *L) {
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
    lua_pushboolean(L, c->alias);
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
