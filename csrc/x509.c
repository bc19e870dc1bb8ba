/*
** x509.c: X.509 helpers shared by cert.c and the TLS files.
*/
#define _GNU_SOURCE
#include <lauxlib.h>
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

#include <fcntl.h>
#include <limits.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
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

int pl_os_fail (lua_State *L, const char *op, const char *path, int e) {
  char msg[PATH_MAX + 160];
  go_errno(msg, sizeof msg, op, path, e);
  return pl_fail(L, uv_err_name(uv_translate_sys_error(e)), "%s", msg);
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


/* Splits PEM text into blocks (invalid blocks are skipped, as Go does).
** Returns the number of blocks; *out is malloc'ed (free with pem_free). */
int x509_pem_split (const char *buf, size_t len, x509_pem **out) {
  BIO *b = BIO_new_mem_buf(buf, (int)len);
  x509_pem *v = NULL;
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
      x509_pem *nv;
      cap = cap ? cap * 2 : 4;
      nv = (x509_pem *)realloc(v, (size_t)cap * sizeof(*v));
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

void x509_pem_free (x509_pem *v, int n) {
  int i;
  for (i = 0; i < n; i++) {
    OPENSSL_free(v[i].name);
    OPENSSL_free(v[i].data);
  }
  free(v);
}

/* Pushes the contents of a memory BIO as a Lua string. */
void x509_push_bio (lua_State *L, BIO *b) {
  char *p = NULL;
  long n = BIO_get_mem_data(b, &p);
  lua_pushlstring(L, p, n > 0 ? (size_t)n : 0);
}

/* Lower-case hex of a byte string. */
void x509_push_hex (lua_State *L, const unsigned char *p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  luaL_Buffer b;
  size_t i;
  luaL_buffinit(L, &b);
  for (i = 0; i < n; i++) {
    luaL_addchar(&b, digits[p[i] >> 4]);
    luaL_addchar(&b, digits[p[i] & 15]);
  }
  luaL_pushresult(&b);
}

/* Pushes { type = "ecdsa"|"rsa"|"ed25519"|..., bits = n, curve = "P-521" }. */
void x509_push_keyinfo (lua_State *L, EVP_PKEY *pk) {
  int id = EVP_PKEY_get_base_id(pk);
  lua_createtable(L, 0, 3);
  if (id == EVP_PKEY_EC) {
    char group[64];
    size_t glen = 0;
    const char *curve = NULL;
    lua_pushliteral(L, "ecdsa");
    lua_setfield(L, -2, "type");
    if (EVP_PKEY_get_group_name(pk, group, sizeof group, &glen)) {
      if (strcmp(group, "prime256v1") == 0) curve = "P-256";
      else if (strcmp(group, "secp384r1") == 0) curve = "P-384";
      else if (strcmp(group, "secp521r1") == 0) curve = "P-521";
      else curve = group;
      lua_pushstring(L, curve);
      lua_setfield(L, -2, "curve");
    }
    lua_pushinteger(L, EVP_PKEY_get_bits(pk));
  }
  else if (id == EVP_PKEY_ED25519) {
    lua_pushliteral(L, "ed25519");
    lua_setfield(L, -2, "type");
    lua_pushinteger(L, 256);
  }
  else if (id == EVP_PKEY_RSA || id == EVP_PKEY_RSA_PSS) {
    lua_pushliteral(L, "rsa");
    lua_setfield(L, -2, "type");
    lua_pushinteger(L, EVP_PKEY_get_bits(pk));
  }
  else {
    const char *name = OBJ_nid2sn(id);
    lua_pushstring(L, name != NULL ? name : "unknown");
    lua_setfield(L, -2, "type");
    lua_pushinteger(L, EVP_PKEY_get_bits(pk));
  }
  lua_setfield(L, -2, "bits");
}

/* Key usage: our (Go's) name, the OpenSSL configuration name, the bit. */
const x509_usage x509_key_usages[] = {
  {"digitalSignature",  "digitalSignature", KU_DIGITAL_SIGNATURE},
  {"contentCommitment", "nonRepudiation",   KU_NON_REPUDIATION},
  {"keyEncipherment",   "keyEncipherment",  KU_KEY_ENCIPHERMENT},
  {"dataEncipherment",  "dataEncipherment", KU_DATA_ENCIPHERMENT},
  {"keyAgreement",      "keyAgreement",     KU_KEY_AGREEMENT},
  {"keyCertSign",       "keyCertSign",      KU_KEY_CERT_SIGN},
  {"cRLSign",           "cRLSign",          KU_CRL_SIGN},
  {"encipherOnly",      "encipherOnly",     KU_ENCIPHER_ONLY},
  {"decipherOnly",      "decipherOnly",     KU_DECIPHER_ONLY},
  {NULL, NULL, 0}
};

/* ---------------------------------------------------------------------
** Inspection
** --------------------------------------------------------------------- */

/* Seconds since the epoch of an ASN1_TIME; 0 when it cannot be read. */
int x509_epoch (const ASN1_TIME *a, time_t *out) {
  struct tm tm;
  if (a == NULL || ASN1_TIME_to_tm(a, &tm) != 1) return 0;
  *out = timegm(&tm);
  return 1;
}

static lua_Integer cert_epoch (const ASN1_TIME *t) {
  time_t v = 0;
  return x509_epoch(t, &v) ? (lua_Integer)v : 0;
}

/* Pushes the RFC 2253 string of name (UTF-8 kept as is). */
static void cert_push_name (lua_State *L, BIO *b, const X509_NAME *name) {
  (void)BIO_reset(b);
  X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  x509_push_bio(L, b);
}

/* Pushes { O = "etcd", CN = "n1", ... }; a repeated attribute becomes a list. */
static void cert_push_name_fields (lua_State *L, const X509_NAME *name) {
  int i, n = X509_NAME_entry_count(name);
  lua_createtable(L, 0, n);
  for (i = 0; i < n; i++) {
    const X509_NAME_ENTRY *e = X509_NAME_get_entry(name, i);
    const ASN1_OBJECT *obj = X509_NAME_ENTRY_get_object(e);
    unsigned char *utf8 = NULL;
    char key[80];
    int nid = OBJ_obj2nid(obj);
    int len;
    if (nid != NID_undef && OBJ_nid2sn(nid) != NULL)
      snprintf(key, sizeof key, "%s", OBJ_nid2sn(nid));
    else
      OBJ_obj2txt(key, sizeof key, obj, 1);
    len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e));
    if (len < 0) continue;
    lua_pushlstring(L, (const char *)utf8, (size_t)len);   /* t value */
    OPENSSL_free(utf8);
    if (lua_getfield(L, -2, key) == LUA_TNIL) {              /* t value old */
      lua_pop(L, 1);
      lua_setfield(L, -2, key);
    }
    else {
      if (!lua_istable(L, -1)) {                              /* make a list */
        lua_createtable(L, 2, 0);                            /* t v old list */
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);                               /* t v list */
        lua_pushvalue(L, -1);
        lua_setfield(L, -4, key);
      }
      lua_insert(L, -2);                                     /* t list v */
      lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
      lua_pop(L, 1);
    }
  }
}

static void cert_append (lua_State *L, int list) {
  lua_rawseti(L, list, (lua_Integer)lua_rawlen(L, list) + 1);
}

/* Pushes { dns = {...}, ip = {...}, email = {...}, uri = {...} }. */
static void cert_push_sans (lua_State *L, X509 *x) {
  GENERAL_NAMES *gens = (GENERAL_NAMES *)X509_get_ext_d2i(x, NID_subject_alt_name,
                                                          NULL, NULL);
  int i, t;
  lua_createtable(L, 0, 4);
  lua_newtable(L); lua_setfield(L, -2, "dns");
  lua_newtable(L); lua_setfield(L, -2, "ip");
  lua_newtable(L); lua_setfield(L, -2, "email");
  lua_newtable(L); lua_setfield(L, -2, "uri");
  if (gens == NULL) {
    ERR_clear_error();
    return;
  }
  t = lua_gettop(L);
  for (i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
    const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, i);
    int type;
    void *v = GENERAL_NAME_get0_value(gn, &type);
    const char *list = NULL;
    if (type == GEN_DNS) list = "dns";
    else if (type == GEN_EMAIL) list = "email";
    else if (type == GEN_URI) list = "uri";
    if (list != NULL) {
      const ASN1_STRING *str = (const ASN1_STRING *)v;
      lua_getfield(L, t, list);
      lua_pushlstring(L, (const char *)ASN1_STRING_get0_data(str),
                      (size_t)ASN1_STRING_length(str));
      cert_append(L, lua_gettop(L) - 1);
      lua_pop(L, 1);
    }
    else if (type == GEN_IPADD) {
      const ASN1_OCTET_STRING *os = (const ASN1_OCTET_STRING *)v;
      char text[INET6_ADDRSTRLEN];
      int alen = ASN1_STRING_length(os);
      const unsigned char *p = ASN1_STRING_get0_data(os);
      if ((alen == 4 && inet_ntop(AF_INET, p, text, sizeof text))
          || (alen == 16 && inet_ntop(AF_INET6, p, text, sizeof text))) {
        lua_getfield(L, t, "ip");
        lua_pushstring(L, text);
        cert_append(L, lua_gettop(L) - 1);
        lua_pop(L, 1);
      }
    }
  }
  GENERAL_NAMES_free(gens);
}

static void cert_push_usages (lua_State *L, X509 *x) {
  uint32_t ku = X509_get_key_usage(x);
  EXTENDED_KEY_USAGE *eku;
  int i;
  lua_newtable(L);
  if (ku != UINT32_MAX) {
    for (i = 0; x509_key_usages[i].name != NULL; i++) {
      if (ku & x509_key_usages[i].bit) {
        lua_pushstring(L, x509_key_usages[i].name);
        cert_append(L, lua_gettop(L) - 1);
      }
    }
  }
  lua_setfield(L, -2, "key_usage");
  lua_newtable(L);
  eku = (EXTENDED_KEY_USAGE *)X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
  if (eku != NULL) {
    for (i = 0; i < sk_ASN1_OBJECT_num(eku); i++) {
      const ASN1_OBJECT *obj = sk_ASN1_OBJECT_value(eku, i);
      int nid = OBJ_obj2nid(obj);
      char text[80];
      if (nid != NID_undef && OBJ_nid2sn(nid) != NULL)
        snprintf(text, sizeof text, "%s", OBJ_nid2sn(nid));
      else
        OBJ_obj2txt(text, sizeof text, obj, 1);
      lua_pushstring(L, text);
      cert_append(L, lua_gettop(L) - 1);
    }
    EXTENDED_KEY_USAGE_free(eku);
  }
  ERR_clear_error();
  lua_setfield(L, -2, "ext_key_usage");
}

/* not_before / not_after as epoch seconds and RFC 3339 text, and where
** "now" falls: days_left (negative once expired), expired, not_yet_valid. */
static void push_validity (lua_State *L, X509 *x) {
  lua_Integer nb = cert_epoch(X509_get0_notBefore(x)), na = cert_epoch(X509_get0_notAfter(x));
  lua_Integer now = (lua_Integer)time(NULL), left = na - now;
  char b[40];
  lua_pushinteger(L, nb);
  lua_setfield(L, -2, "not_before");
  lua_pushinteger(L, na);
  lua_setfield(L, -2, "not_after");
  x509_time_str(X509_get0_notBefore(x), b, sizeof(b));
  lua_pushstring(L, b);
  lua_setfield(L, -2, "not_before_rfc3339");
  x509_time_str(X509_get0_notAfter(x), b, sizeof(b));
  lua_pushstring(L, b);
  lua_setfield(L, -2, "not_after_rfc3339");
  lua_pushinteger(L, left >= 0 ? left / 86400 : -((-left + 86399) / 86400));   /* floor */
  lua_setfield(L, -2, "days_left");
  lua_pushboolean(L, na <= now);
  lua_setfield(L, -2, "expired");
  lua_pushboolean(L, nb > now);
  lua_setfield(L, -2, "not_yet_valid");
}

/* Key, signature algorithm, fingerprint and key identifiers. */
static void push_key_ids (lua_State *L, X509 *x) {
  const ASN1_OCTET_STRING *kid;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  EVP_PKEY *pk = X509_get0_pubkey(x);
  int nid;
  ERR_clear_error();
  if (pk != NULL) {
    x509_push_keyinfo(L, pk);
    lua_setfield(L, -2, "key");
  }
  nid = X509_get_signature_nid(x);
  lua_pushstring(L, nid != NID_undef ? OBJ_nid2ln(nid) : "unknown");
  lua_setfield(L, -2, "signature_algorithm");
  if (X509_digest(x, EVP_sha256(), md, &mdlen)) {
    x509_push_hex(L, md, mdlen);
    lua_setfield(L, -2, "fingerprint_sha256");
  }
  if ((kid = X509_get0_subject_key_id(x)) != NULL) {
    x509_push_hex(L, ASN1_STRING_get0_data(kid), (size_t)ASN1_STRING_length(kid));
    lua_setfield(L, -2, "subject_key_id");
  }
  if ((kid = X509_get0_authority_key_id(x)) != NULL) {
    x509_push_hex(L, ASN1_STRING_get0_data(kid), (size_t)ASN1_STRING_length(kid));
    lua_setfield(L, -2, "authority_key_id");
  }
  ERR_clear_error();
}

static int bio_gc (lua_State *L) {
  BIO **pb = (BIO **)lua_touserdata(L, 1);
  BIO_free(*pb);
  *pb = NULL;
  return 0;
}

/* The certificate table of cert.inspect() and conn:tls_info().peer_cert
** (its fields are documented in cert.lua).  The BIO the names are printed
** through is owned by a userdata, so a Lua error half-way frees it too. */
void x509_push_info (lua_State *L, X509 *x) {
  char b[128];
  BIO **pb = (BIO **)lua_newuserdatauv(L, sizeof(BIO *), 0);
  *pb = NULL;
  if (luaL_newmetatable(L, "peerlisten.x509bio")) {
    lua_pushcfunction(L, bio_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  *pb = BIO_new(BIO_s_mem());
  if (*pb == NULL) luaL_error(L, "out of memory");
  lua_createtable(L, 0, 28);
  lua_pushinteger(L, X509_get_version(x) + 1);
  lua_setfield(L, -2, "version");
  x509_serial_hex(x, b, sizeof(b));
  lua_pushstring(L, b);
  lua_setfield(L, -2, "serial");
  cert_push_name(L, *pb, X509_get_subject_name(x));
  lua_setfield(L, -2, "subject");
  cert_push_name_fields(L, X509_get_subject_name(x));
  lua_setfield(L, -2, "subject_fields");
  cert_push_name(L, *pb, X509_get_issuer_name(x));
  lua_setfield(L, -2, "issuer");
  cert_push_name_fields(L, X509_get_issuer_name(x));
  lua_setfield(L, -2, "issuer_fields");
  push_validity(L, x);
  cert_push_sans(L, x);
  lua_setfield(L, -2, "sans");
  cert_push_usages(L, x);
  lua_pushboolean(L, (X509_get_extension_flags(x) & EXFLAG_BCONS)
                     && (X509_get_extension_flags(x) & EXFLAG_CA));
  lua_setfield(L, -2, "is_ca");
  if (X509_get_pathlen(x) >= 0) {
    lua_pushinteger(L, X509_get_pathlen(x));
    lua_setfield(L, -2, "path_len");
  }
  lua_pushboolean(L, X509_self_signed(x, 0) == 1);
  lua_setfield(L, -2, "self_signed");
  push_key_ids(L, x);
  BIO_free(*pb);
  *pb = NULL;
  lua_remove(L, -2);
}

/* Reads a whole file, at most X509_MAX_FILE bytes.  On failure writes Go's
** "open <path>: ..." / "read <path>: ..." and the errno into *eno (when not
** NULL).  The buffer is malloc'ed and NUL-terminated.
** Only regular files: the open never waits (O_NONBLOCK: a FIFO without a
** writer would block it forever, a tty could become our terminal) and
** anything fstat does not call a regular file is refused before a byte is
** read, so a FIFO, /dev/zero or a socket cannot hang the caller or grow its
** memory.  A regular file cannot block on read except on a hung network
** filesystem, where open and stat would block too. */
static int read_fd (int fd, off_t size, char **out, size_t *outlen) {
  size_t used = 0, cap = size > 0 && size < X509_MAX_FILE ? (size_t)size + 1 : 4096;
  char *buf = (char *)malloc(cap + 1);
  int e = 0;
  if (buf == NULL) return ENOMEM;
  while (e == 0) {
    ssize_t n;
    if (used == cap) {
      size_t ncap = cap * 2 > X509_MAX_FILE ? X509_MAX_FILE : cap * 2;
      char *nb;
      if (cap >= X509_MAX_FILE) { e = EFBIG; break; }
      nb = (char *)realloc(buf, ncap + 1);
      if (nb == NULL) { e = ENOMEM; break; }
      buf = nb;
      cap = ncap;
    }
    n = read(fd, buf + used, cap - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) e = errno;
    else if (n == 0) break;
    else used += (size_t)n;
  }
  if (e != 0) {
    OPENSSL_cleanse(buf, used);
    free(buf);
    return e;
  }
  buf[used] = '\0';
  *out = buf;
  *outlen = used;
  return 0;
}

char *x509_read_file (const char *path, size_t *len, char *err, size_t errlen, int *eno) {
  struct stat st;
  char *buf = NULL;
  int e = 0, fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    e = errno;
    go_errno(err, errlen, "open", path, e);
    if (eno) *eno = e;
    return NULL;
  }
  if (fstat(fd, &st) != 0) e = errno;
  else if (S_ISDIR(st.st_mode)) e = EISDIR;
  else if (!S_ISREG(st.st_mode)) {
    close(fd);
    snprintf(err, errlen, "open %s: not a regular file", path);
    if (eno) *eno = EINVAL;
    return NULL;
  }
  else if (st.st_size > X509_MAX_FILE) e = EFBIG;
  /* back to blocking reads: O_NONBLOCK only had to cover the open */
  if (e == 0) {
    int fl = fcntl(fd, F_GETFL);
    if (fl == -1 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) e = errno;
  }
  if (e == 0) e = read_fd(fd, st.st_size, &buf, len);
  close(fd);
  if (e != 0) {
    go_errno(err, errlen, "read", path, e);
    if (eno) *eno = e;
    return NULL;
  }
  return buf;
}
