/*
** x509.h: X.509 helpers shared by cert.c and the TLS files (private to csrc).
*/
#ifndef PL_X509_H
#define PL_X509_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <lua.h>
#include <openssl/x509.h>

#include "peerlisten.h"

typedef struct strlist {
  int n;
  char **v;
} strlist;

/* Every IP and DNS SAN of a certificate (no cap: Go checks them all).
** malformed: a dNSName with an embedded NUL, which Go refuses to parse. */
typedef struct x509_sans {
  int nip, ndns, malformed;
  unsigned char (*ip)[16];
  int *iplen;
  strlist dns;
} x509_sans;

PL_HIDDEN void strlist_free (strlist *l);
/* Go's wording of an OS error: "<op> <path>: <strerror, lower-case first>". */
PL_HIDDEN void go_errno (char *buf, size_t len, const char *op, const char *path, int e);
/* The fail triple of an OS error: nil, Go's words, libuv's error name. */
PL_HIDDEN int pl_os_fail (lua_State *L, const char *op, const char *path, int e);

PL_HIDDEN void x509_name_str (X509_NAME *nm, char *buf, size_t len);
PL_HIDDEN void x509_serial_hex (X509 *x, char *buf, size_t len);
/* An ASN1_TIME as epoch seconds into *out; 0 when it cannot be read. */
PL_HIDDEN int x509_epoch (const ASN1_TIME *a, time_t *out);
PL_HIDDEN void x509_time_str (const ASN1_TIME *t, char *buf, size_t len);
PL_HIDDEN int x509_ip_str (const unsigned char *p, int n, char *buf, size_t len);
PL_HIDDEN void x509_sans_get (X509 *x, x509_sans *s);
PL_HIDDEN void x509_sans_free (x509_sans *s);
/* Pushes two arrays: ip_addresses, then dns_names. */
PL_HIDDEN void x509_push_sans (lua_State *L, x509_sans *s);
PL_HIDDEN int x509_leaf_cn (X509 *x, char *buf, size_t len);


/* Every file the TLS side and cert.lua read goes through x509_read_file,
** which refuses files bigger than this (EFBIG). */
#define X509_MAX_FILE (16 * 1024 * 1024)
PL_HIDDEN char *x509_read_file (const char *path, size_t *len, char *err, size_t errlen, int *eno);

/* PEM blocks of a text, broken blocks skipped as Go's pem.Decode does. */
typedef struct x509_pem {
  char *name;
  unsigned char *data;
  long len;
} x509_pem;
PL_HIDDEN int x509_pem_split (const char *buf, size_t len, x509_pem **out);
PL_HIDDEN void x509_pem_free (x509_pem *v, int n);

/* Key usage: our (Go's) name, the OpenSSL configuration name, the bit;
** a NULL name ends the table. */
typedef struct x509_usage {
  const char *name, *conf;
  uint32_t bit;
} x509_usage;
PL_HIDDEN extern const x509_usage x509_key_usages[];

PL_HIDDEN void x509_push_bio (lua_State *L, BIO *b);
PL_HIDDEN void x509_push_hex (lua_State *L, const unsigned char *p, size_t n);
PL_HIDDEN void x509_push_keyinfo (lua_State *L, EVP_PKEY *pk);
/* The certificate table shared by cert.inspect() and tls_info().peer_cert. */
PL_HIDDEN void x509_push_info (lua_State *L, X509 *x);

#endif
