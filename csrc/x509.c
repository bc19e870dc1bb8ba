/*
** x509.c: X.509 helpers shared by cert.c and the TLS files.
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

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "x509.h"

void strlist_free (strlist *l) {
  int i;
  for (i = 0; i < l->n; i++) free(l->v[i]);
  free(l->v);
  l->v = NULL;
  l->n = 0;
}

/* Go's wording of an errno: strerror with a lower-case first letter. */
void go_errno (char *buf, size_t len, const char *op, const char *path, int e) {
  char s[128];
  snprintf(s, sizeof(s), "%s", strerror(e));
  s[0] = (char)tolower((unsigned char)s[0]);
  snprintf(buf, len, "%s %s: %s", op, path, s);
}

/* ---------------------------------------------------------------------
** Certificate helpers for info tables and checks.
*/
void x509_name_str (X509_NAME *nm, char *buf, size_t len) {
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
void x509_serial_hex (X509 *x, char *buf, size_t len) {
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

void x509_time_str (const ASN1_TIME *t, char *buf, size_t len) {
  struct tm tm;
  buf[0] = '\0';
  if (t != NULL && ASN1_TIME_to_tm(t, &tm) == 1)
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* IP SAN bytes to Go's string form (v4-mapped IPv6 printed as IPv4). */
int x509_ip_str (const unsigned char *p, int n, char *buf, size_t len) {
  static const unsigned char v4pre[12] = {0,0,0,0,0,0,0,0,0,0,0xff,0xff};
  if (n == 4) return inet_ntop(AF_INET, p, buf, (socklen_t)len) != NULL;
  if (n == 16 && memcmp(p, v4pre, 12) == 0) return inet_ntop(AF_INET, p + 12, buf, (socklen_t)len) != NULL;
  if (n == 16) return inet_ntop(AF_INET6, p, buf, (socklen_t)len) != NULL;
  return 0;
}

void x509_sans_free (x509_sans *s) {
  free(s->ip);
  free(s->iplen);
  s->ip = NULL;
  s->iplen = NULL;
  strlist_free(&s->dns);
}

void x509_sans_get (X509 *x, x509_sans *s) {
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

void x509_push_sans (lua_State *L, x509_sans *s) {
  int i;
  char b[64];
  lua_createtable(L, s->nip, 0);
  for (i = 0; i < s->nip; i++) {
    if (!x509_ip_str(s->ip[i], s->iplen[i], b, sizeof(b))) continue;
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
int x509_leaf_cn (X509 *x, char *buf, size_t len) {
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

