/*
** tls_cache.c: the verified-chain cache.
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

/*
** Peers reconnect with the same certificate chain,
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

vcache *vcache_new (void) {
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

void vcache_flush_locked (vcache *c) {
  if (c == NULL) return;
  while (c->head != NULL) vcent_unlink(c, c->head);
  c->flushes++;
}

void vcache_free (vcache *c) {
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

/* Tightens [*nb, *na) by the validity of every certificate in sk. */
static int chain_bounds (STACK_OF(X509) *sk, time_t *nb, time_t *na) {
  int i;
  for (i = 0; sk != NULL && i < sk_X509_num(sk); i++) {
    X509 *x = sk_X509_value(sk, i);
    time_t b, a;
    if (!x509_epoch(X509_get0_notBefore(x), &b) || !x509_epoch(X509_get0_notAfter(x), &a))
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

/* Verifies the chain of xs, through the cache when it is on. */
int vcache_verify (pl_tls *t, X509_STORE_CTX *xs) {
  unsigned char buf[8192], *der = NULL, md[32];
  size_t len = 0;
  unsigned int mdlen = 0;
  int ok, keyed = 0;
  time_t now = tls_now();
  if (t->vc != NULL && chain_der(xs, buf, sizeof(buf), &der, &len)) {
    keyed = EVP_Digest(der, len, md, &mdlen, t->vc->sha256, NULL) == 1 && mdlen == 32;
    if (!keyed) ERR_clear_error();
    else if (vcache_lookup(t, md, der, len, now)) {
      if (der != buf) free(der);
      X509_STORE_CTX_set_error(xs, X509_V_OK);
      return 1;
    }
  }
#ifdef PL_TEST_HOOKS
  if (pl_tls_clock_shift != 0) X509_STORE_CTX_set_time(xs, 0, now);
#endif
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
  if (der != NULL && der != buf) free(der);
  return ok;
}

#ifdef PL_TEST_HOOKS
/* Test build: policy:_verify_cache([max]) -> { on =, entries =, max =,
** hits =, misses =, flushes = }; max (an integer >= 0) bounds the cache. */
int pl_tls_test_cache (lua_State *L, pl_tls *t, lua_Integer max) {
  vcache *c = t->vc;
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
#endif
