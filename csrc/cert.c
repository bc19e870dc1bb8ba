/*
** cert.c: certificate helpers behind lua/peerlisten/cert.lua: key generation,
** self-signed and CA-issued X.509 v3 certificates, inspection, key matching,
** verification, and the file primitives (mkdir -p, stat, atomic write) the Lua
** layer needs.  PEM strings cross the boundary; there is no public userdata.
*/
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700
#endif

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "peerlisten.h"

#define CERT_MAX_FILE  (16 * 1024 * 1024)   /* refuse to slurp bigger files */


/* ---------------------------------------------------------------------
** Scratch: a private userdata owning every OpenSSL object and buffer a
** function holds while it builds Lua values, so that a memory error raised
** half-way still frees them (its __gc runs cert_scratch_release).
** --------------------------------------------------------------------- */

typedef struct cert_scratch {
  X509 *cert;                 /* certificate being built, or the leaf */
  X509 *issuer;               /* issuer certificate */
  EVP_PKEY *key;              /* subject (or only) key */
  EVP_PKEY *ikey;             /* issuer key */
  BIO *bio;                   /* output or input buffer */
  STACK_OF(X509) *chain;      /* certificates read from PEM */
  STACK_OF(X509) *chain2;     /* second list (CA certificates) */
  X509_STORE *store;
  X509_STORE_CTX *ctx;
  GENERAL_NAMES *names;
  BIGNUM *bn;
  char *buf;                  /* malloc'ed file contents */
  int fd;                     /* -1 when none */
} cert_scratch;

static int cert_scratch_mt;   /* its address is the metatable's registry key */

static void cert_scratch_release (cert_scratch *s) {
  X509_free(s->cert); s->cert = NULL;
  X509_free(s->issuer); s->issuer = NULL;
  EVP_PKEY_free(s->key); s->key = NULL;
  EVP_PKEY_free(s->ikey); s->ikey = NULL;
  BIO_free(s->bio); s->bio = NULL;
  if (s->chain) sk_X509_pop_free(s->chain, X509_free);
  s->chain = NULL;
  if (s->chain2) sk_X509_pop_free(s->chain2, X509_free);
  s->chain2 = NULL;
  X509_STORE_CTX_free(s->ctx); s->ctx = NULL;
  X509_STORE_free(s->store); s->store = NULL;
  GENERAL_NAMES_free(s->names); s->names = NULL;
  BN_free(s->bn); s->bn = NULL;
  free(s->buf); s->buf = NULL;
  if (s->fd >= 0) close(s->fd);
  s->fd = -1;
}

static int cert_scratch__gc (lua_State *L) {
  cert_scratch_release((cert_scratch *)lua_touserdata(L, 1));
  return 0;
}

/* Pushes a fresh scratch (all pointers NULL) and returns it. */
static cert_scratch *cert_scratch_new (lua_State *L) {
  cert_scratch *s = (cert_scratch *)lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  s->fd = -1;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &cert_scratch_mt);
  lua_setmetatable(L, -2);
  return s;
}


/* ---------------------------------------------------------------------
** Failure helpers: each pushes nil, message, code and returns 3.
** --------------------------------------------------------------------- */

/* "<what>: <first queued OpenSSL error>", code ECERT; clears the queue.
** Every helper below first releases the scratch s (NULL: none), so a
** failure never keeps a file descriptor or key until the next GC. */
static int cert_sslfail (lua_State *L, cert_scratch *s, const char *what) {
  char buf[256];
  pl_ssl_errstr(buf, sizeof buf);
  ERR_clear_error();
  if (s != NULL) cert_scratch_release(s);
  if (buf[0] == '\0')
    return pl_fail(L, "ECERT", "%s", what);
  return pl_fail(L, "ECERT", "%s: %s", what, buf);
}

/* pl_fail after releasing the scratch s (may be NULL). */
static int cert_fail (lua_State *L, cert_scratch *s, const char *code,
                      const char *fmt, ...) {
  va_list ap;
  if (s != NULL) cert_scratch_release(s);
  ERR_clear_error();
  luaL_pushfail(L);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_pushstring(L, code);
  return 3;
}

/* Go-worded system error, "<op> <path>: <reason>" (the C library's text
** with a lower-case first letter, as Go prints errno), libuv code name. */
static int cert_oserror (lua_State *L, cert_scratch *s, const char *op,
                         const char *path, int err) {
  int uverr = uv_translate_sys_error(err);
  char reason[128];
  snprintf(reason, sizeof reason, "%s", strerror(err));
  if (reason[0] >= 'A' && reason[0] <= 'Z')   /* Go's wording: lower case */
    reason[0] = (char)(reason[0] - 'A' + 'a');
  if (s != NULL) cert_scratch_release(s);
  return pl_fail(L, uv_err_name(uverr), "%s %s: %s", op, path, reason);
}

/* Password callback that refuses: encrypted keys fail instead of prompting. */
static int cert_nopass (char *buf, int size, int rwflag, void *u) {
  (void)buf; (void)size; (void)rwflag; (void)u;
  return -1;
}


/* ---------------------------------------------------------------------
** PEM in and out
** --------------------------------------------------------------------- */

/* Reads every CERTIFICATE block of pem into a new stack (possibly empty),
** or NULL on an allocation failure.  Other PEM blocks are skipped. */
static STACK_OF(X509) *cert_read_chain (const char *pem, size_t len) {
  STACK_OF(X509) *sk = sk_X509_new_null();
  BIO *b = BIO_new_mem_buf(pem, (int)len);
  X509 *x;
  if (sk == NULL || b == NULL) {
    sk_X509_free(sk);
    BIO_free(b);
    return NULL;
  }
  while ((x = PEM_read_bio_X509(b, NULL, cert_nopass, NULL)) != NULL) {
    if (!sk_X509_push(sk, x)) {
      X509_free(x);
      break;
    }
  }
  ERR_clear_error();   /* the last read always ends with "no start line" */
  BIO_free(b);
  return sk;
}

/* The first private key in pem, or NULL (OpenSSL error queued). */
static EVP_PKEY *cert_read_key (const char *pem, size_t len) {
  BIO *b = BIO_new_mem_buf(pem, (int)len);
  EVP_PKEY *pk = NULL;
  if (b != NULL)
    pk = PEM_read_bio_PrivateKey(b, NULL, cert_nopass, NULL);
  BIO_free(b);
  return pk;
}

/* Pushes the contents of a memory BIO as a Lua string. */
static void cert_push_bio (lua_State *L, BIO *b) {
  char *p = NULL;
  long n = BIO_get_mem_data(b, &p);
  lua_pushlstring(L, p, n > 0 ? (size_t)n : 0);
}

/* Lower-case hex of a byte string. */
static void cert_push_hex (lua_State *L, const unsigned char *p, size_t n) {
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


/* ---------------------------------------------------------------------
** Keys
** --------------------------------------------------------------------- */

static const char *const cert_key_types[] = {
  "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519",
  "rsa-2048", "rsa-3072", "rsa-4096", NULL
};

static EVP_PKEY *cert_keygen_of (int type) {
  switch (type) {
    case 0: return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    case 1: return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    case 2: return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521");
    case 3: return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    case 4: return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    case 5: return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)3072);
    default: return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)4096);
  }
}

/*
** core.cert_keygen(key_type) -> key_pem | nil, msg, "ECERT"
** EC keys are written as SEC1 ("EC PRIVATE KEY") and RSA keys as PKCS#1,
** like Go's x509.Marshal{EC,PKCS1}PrivateKey; Ed25519 as PKCS#8
** ("PRIVATE KEY").  Raises on an unknown key type (the Lua layer checks).
*/
static int cert_keygen (lua_State *L) {
  int type = luaL_checkoption(L, 1, NULL, cert_key_types);
  cert_scratch *s = cert_scratch_new(L);
  int ok;
  ERR_clear_error();
  s->key = cert_keygen_of(type);
  if (s->key == NULL)
    return cert_sslfail(L, s, "key generation failed");
  s->bio = BIO_new(BIO_s_secmem());
  if (s->bio == NULL)
    return cert_sslfail(L, s, "key encoding failed");
  if (EVP_PKEY_get_base_id(s->key) == EVP_PKEY_ED25519)
    ok = PEM_write_bio_PrivateKey(s->bio, s->key, NULL, NULL, 0, NULL, NULL);
  else
    ok = PEM_write_bio_PrivateKey_traditional(s->bio, s->key, NULL, NULL, 0,
                                              NULL, NULL);
  if (!ok)
    return cert_sslfail(L, s, "key encoding failed");
  cert_push_bio(L, s->bio);
  cert_scratch_release(s);
  return 1;
}

/* Pushes { type = "ecdsa"|"rsa"|"ed25519"|..., bits = n, curve = "P-521" }. */
static void cert_push_keyinfo (lua_State *L, EVP_PKEY *pk) {
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

/* core.cert_key_info(key_pem) -> { type=, bits=, curve= } | nil, msg, "ECERT" */
static int cert_key_info (lua_State *L) {
  size_t len;
  const char *pem = luaL_checklstring(L, 1, &len);
  cert_scratch *s = cert_scratch_new(L);
  ERR_clear_error();
  s->key = cert_read_key(pem, len);
  if (s->key == NULL)
    return cert_sslfail(L, s, "cannot parse private key");
  cert_push_keyinfo(L, s->key);
  cert_scratch_release(s);
  return 1;
}


/* ---------------------------------------------------------------------
** Certificate creation
** --------------------------------------------------------------------- */

/* Key usage: our (Go's) name, the OpenSSL configuration name, the bit. */
static const struct { const char *name, *conf; uint32_t bit; } cert_ku[] = {
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

static const char *const cert_eku_names[] = {
  "serverAuth", "clientAuth", "codeSigning", "emailProtection",
  "timeStamping", "OCSPSigning", NULL
};

/* Appends ",<conf name>" of each key-usage name in the list at opts[field]
** to b.  Raises on an unknown name (a programmer error in the Lua layer). */
static void cert_addusages (lua_State *L, int opts, const char *field,
                            int eku, luaL_Buffer *b) {
  lua_Integer i, n;
  lua_getfield(L, opts, field);
  n = lua_istable(L, -1) ? luaL_len(L, -1) : 0;
  for (i = 1; i <= n; i++) {
    const char *name;
    lua_geti(L, -1, i);
    name = lua_tostring(L, -1);
    if (name == NULL)
      luaL_error(L, "%s[%d]: string expected", field, (int)i);
    if (eku) {
      int j;
      for (j = 0; cert_eku_names[j] && strcmp(cert_eku_names[j], name); j++) ;
      if (cert_eku_names[j] == NULL)
        luaL_error(L, "%s: unknown extended key usage '%s'", field, name);
      luaL_addchar(b, ',');
      luaL_addstring(b, name);
    }
    else {
      int j;
      for (j = 0; cert_ku[j].name && strcmp(cert_ku[j].name, name); j++) ;
      if (cert_ku[j].name == NULL)
        luaL_error(L, "%s: unknown key usage '%s'", field, name);
      luaL_addchar(b, ',');
      luaL_addstring(b, cert_ku[j].conf);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* Adds one extension given in OpenSSL's configuration syntax. */
static int cert_addext (X509 *x, X509V3_CTX *ctx, int nid, const char *value) {
  X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, ctx, nid, value);
  int ok;
  if (ext == NULL) return 0;
  ok = X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  return ok;
}

/* Adds the names of the list at opts[field] to s->names as DNS or IP
** entries.  Returns NULL on success, else the offending string (left on
** the stack). */
static const char *cert_addnames (lua_State *L, int opts, const char *field,
                                  int ip, cert_scratch *s) {
  lua_Integer i, n;
  lua_getfield(L, opts, field);
  n = lua_istable(L, -1) ? luaL_len(L, -1) : 0;
  for (i = 1; i <= n; i++) {
    size_t len;
    const char *name;
    GENERAL_NAME *gn;
    lua_geti(L, -1, i);
    name = lua_tolstring(L, -1, &len);
    if (name == NULL)
      luaL_error(L, "%s[%d]: string expected", field, (int)i);
    gn = GENERAL_NAME_new();
    if (gn == NULL) return name;
    if (ip) {
      unsigned char addr[16];
      int alen = 0;
      ASN1_OCTET_STRING *os;
      if (inet_pton(AF_INET, name, addr) == 1) alen = 4;
      else if (inet_pton(AF_INET6, name, addr) == 1) alen = 16;
      os = alen ? ASN1_OCTET_STRING_new() : NULL;
      if (os == NULL || !ASN1_OCTET_STRING_set(os, addr, alen)) {
        ASN1_OCTET_STRING_free(os);
        GENERAL_NAME_free(gn);
        return name;
      }
      GENERAL_NAME_set0_value(gn, GEN_IPADD, os);
    }
    else {
      ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
      if (ia5 == NULL || !ASN1_STRING_set(ia5, name, (int)len)) {
        ASN1_IA5STRING_free(ia5);
        GENERAL_NAME_free(gn);
        return name;
      }
      GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);
    }
    if (!sk_GENERAL_NAME_push(s->names, gn)) {
      GENERAL_NAME_free(gn);
      return name;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return NULL;
}

/* The digest Go would pick for a signing key: by curve size for ECDSA,
** SHA-256 for RSA, none (built in) for Ed25519. */
static const EVP_MD *cert_digest_for (EVP_PKEY *pk) {
  int id = EVP_PKEY_get_base_id(pk);
  if (id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448) return NULL;
  if (id == EVP_PKEY_EC) {
    int bits = EVP_PKEY_get_bits(pk);
    if (bits > 384) return EVP_sha512();
    if (bits > 256) return EVP_sha384();
  }
  return EVP_sha256();
}

/*
** core.cert_create{ key = pem, subject = {{"O","etcd"}, ...},
**   issuer_cert = pem?, issuer_key = pem?, not_before = epoch,
**   not_after = epoch, key_usage = {...}, ext_key_usage = {...},
**   is_ca = bool, dns = {...}, ips = {...} } -> cert_pem | nil, msg, code
** Builds an X.509 v3 certificate with a random 128-bit serial.  Extensions
** in Go's order: key usage (critical), extended key usage, basic constraints
** (critical), subject key identifier (CA or issued certificates), authority
** key identifier (issued certificates), subject alternative names.  Signed
** by issuer_key (or key when self-signed).  Bad PEM input is "ECERT".
*/
static int cert_create (lua_State *L) {
  const char *keypem, *icertpem, *ikeypem, *bad;
  size_t keylen, icertlen = 0, ikeylen = 0;
  lua_Integer notbefore, notafter;
  int is_ca, sanpos;
  unsigned char serial[16];
  cert_scratch *s;
  X509V3_CTX ctx;
  luaL_Buffer ku, eku;
  X509 *signer;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "key");
  keypem = luaL_checklstring(L, -1, &keylen);
  lua_getfield(L, 1, "issuer_cert");
  icertpem = luaL_optlstring(L, -1, NULL, &icertlen);
  lua_getfield(L, 1, "issuer_key");
  ikeypem = luaL_optlstring(L, -1, NULL, &ikeylen);
  luaL_argcheck(L, (icertpem == NULL) == (ikeypem == NULL), 1,
                "issuer_cert and issuer_key go together");
  lua_getfield(L, 1, "not_before");
  notbefore = luaL_checkinteger(L, -1);
  lua_getfield(L, 1, "not_after");
  notafter = luaL_checkinteger(L, -1);
  lua_getfield(L, 1, "is_ca");
  is_ca = lua_toboolean(L, -1);
  lua_pop(L, 6);
  /* usage strings first: they may raise, and nothing is allocated yet */
  luaL_buffinit(L, &ku);
  luaL_addstring(&ku, "critical");
  cert_addusages(L, 1, "key_usage", 0, &ku);
  luaL_pushresult(&ku);                                 /* ku */
  luaL_buffinit(L, &eku);
  cert_addusages(L, 1, "ext_key_usage", 1, &eku);
  luaL_pushresult(&eku);                                /* ku eku */
  s = cert_scratch_new(L);                              /* ku eku scratch */
  ERR_clear_error();
  s->key = cert_read_key(keypem, keylen);
  if (s->key == NULL)
    return cert_sslfail(L, s, "cannot parse private key");
  if (icertpem != NULL) {
    s->chain = cert_read_chain(icertpem, icertlen);
    if (s->chain == NULL || sk_X509_num(s->chain) == 0)
      return cert_fail(L, s, "ECERT", "cannot parse CA certificate: no PEM certificate found");
    s->issuer = sk_X509_shift(s->chain);
    s->ikey = cert_read_key(ikeypem, ikeylen);
    if (s->ikey == NULL)
      return cert_sslfail(L, s, "cannot parse CA private key");
    if (EVP_PKEY_eq(X509_get0_pubkey(s->issuer), s->ikey) != 1) {
      ERR_clear_error();
      return cert_fail(L, s, "ECERT", "CA private key does not match CA certificate");
    }
  }
  s->cert = X509_new();
  s->bn = BN_new();
  if (s->cert == NULL || s->bn == NULL || RAND_bytes(serial, sizeof serial) != 1
      || BN_bin2bn(serial, sizeof serial, s->bn) == NULL
      || BN_to_ASN1_INTEGER(s->bn, X509_get_serialNumber(s->cert)) == NULL
      || !X509_set_version(s->cert, X509_VERSION_3))
    return cert_sslfail(L, s, "cannot generate random number");
  /* subject */
  {
    lua_Integer i, n;
    X509_NAME *name = X509_get_subject_name(s->cert);
    lua_getfield(L, 1, "subject");
    n = lua_istable(L, -1) ? luaL_len(L, -1) : 0;
    for (i = 1; i <= n; i++) {
      const char *k, *v;
      lua_geti(L, -1, i);
      lua_geti(L, -1, 1);
      lua_geti(L, -2, 2);
      k = lua_tostring(L, -2);
      v = lua_tostring(L, -1);
      if (k == NULL || v == NULL)
        luaL_error(L, "subject[%d]: {name, value} expected", (int)i);
      if (!X509_NAME_add_entry_by_txt(name, k, MBSTRING_UTF8,
                                      (const unsigned char *)v, -1, -1, 0))
        return cert_sslfail(L, s, "cannot generate x509 certificate: bad subject");
      lua_pop(L, 3);
    }
    lua_pop(L, 1);
  }
  signer = s->issuer != NULL ? s->issuer : s->cert;
  if (!X509_set_issuer_name(s->cert, X509_get_subject_name(signer))
      || ASN1_TIME_set(X509_getm_notBefore(s->cert), (time_t)notbefore) == NULL
      || ASN1_TIME_set(X509_getm_notAfter(s->cert), (time_t)notafter) == NULL
      || !X509_set_pubkey(s->cert, s->key))
    return cert_sslfail(L, s, "cannot generate x509 certificate");
  X509V3_set_ctx(&ctx, signer, s->cert, NULL, NULL, 0);
  if (lua_rawlen(L, -3) > strlen("critical")
      && !cert_addext(s->cert, &ctx, NID_key_usage, lua_tostring(L, -3)))
    return cert_sslfail(L, s, "cannot generate x509 certificate: key usage");
  if (lua_rawlen(L, -2) > 0
      && !cert_addext(s->cert, &ctx, NID_ext_key_usage, lua_tostring(L, -2) + 1))
    return cert_sslfail(L, s, "cannot generate x509 certificate: extended key usage");
  if (!cert_addext(s->cert, &ctx, NID_basic_constraints,
                   is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE"))
    return cert_sslfail(L, s, "cannot generate x509 certificate: basic constraints");
  if ((is_ca || s->issuer != NULL)
      && !cert_addext(s->cert, &ctx, NID_subject_key_identifier, "hash"))
    return cert_sslfail(L, s, "cannot generate x509 certificate: subject key identifier");
  if (s->issuer != NULL
      && !cert_addext(s->cert, &ctx, NID_authority_key_identifier, "keyid:always"))
    return cert_sslfail(L, s, "cannot generate x509 certificate: authority key identifier");
  /* subject alternative names: DNS first, then IP addresses, as Go does */
  s->names = sk_GENERAL_NAME_new_null();
  if (s->names == NULL)
    return cert_sslfail(L, s, "cannot generate x509 certificate");
  sanpos = lua_gettop(L);
  if ((bad = cert_addnames(L, 1, "dns", 0, s)) != NULL
      || (bad = cert_addnames(L, 1, "ips", 1, s)) != NULL) {
    ERR_clear_error();
    return cert_fail(L, s, "ECERT", "cannot generate x509 certificate: bad name \"%s\"", bad);
  }
  lua_settop(L, sanpos);
  if (sk_GENERAL_NAME_num(s->names) > 0
      && !X509_add1_ext_i2d(s->cert, NID_subject_alt_name, s->names, 0, 0))
    return cert_sslfail(L, s, "cannot generate x509 certificate: subject alternative names");
  if (!X509_sign(s->cert, s->ikey != NULL ? s->ikey : s->key,
                 cert_digest_for(s->ikey != NULL ? s->ikey : s->key)))
    return cert_sslfail(L, s, "cannot generate x509 certificate");
  s->bio = BIO_new(BIO_s_mem());
  if (s->bio == NULL || !PEM_write_bio_X509(s->bio, s->cert))
    return cert_sslfail(L, s, "cannot generate x509 certificate");
  cert_push_bio(L, s->bio);
  cert_scratch_release(s);
  return 1;
}


/* ---------------------------------------------------------------------
** Inspection
** --------------------------------------------------------------------- */

/* Seconds since the epoch of an ASN1_TIME (0 when it cannot be read). */
static lua_Integer cert_epoch (const ASN1_TIME *t) {
  ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
  int days = 0, secs = 0;
  int ok = epoch != NULL && ASN1_TIME_diff(&days, &secs, epoch, t);
  ASN1_TIME_free(epoch);
  return ok ? (lua_Integer)days * 86400 + secs : 0;
}

/* Pushes the RFC 2253 string of name (UTF-8 kept as is). */
static void cert_push_name (lua_State *L, BIO *b, const X509_NAME *name) {
  (void)BIO_reset(b);
  X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  cert_push_bio(L, b);
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
    for (i = 0; cert_ku[i].name != NULL; i++) {
      if (ku & cert_ku[i].bit) {
        lua_pushstring(L, cert_ku[i].name);
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

/* Pushes the inspection table of one certificate (see cert.lua). */
static void cert_push_info (lua_State *L, X509 *x, BIO *b) {
  const ASN1_INTEGER *serial = X509_get0_serialNumber(x);
  const ASN1_OCTET_STRING *kid;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  EVP_PKEY *pk = X509_get0_pubkey(x);
  BIGNUM *bn;
  int nid;
  lua_createtable(L, 0, 24);
  lua_pushinteger(L, X509_get_version(x) + 1);
  lua_setfield(L, -2, "version");
  bn = ASN1_INTEGER_to_BN(serial, NULL);
  if (bn != NULL) {
    char *hex = BN_bn2hex(bn), *p;
    BN_free(bn);
    if (hex != NULL) {
      char *start = hex + (hex[0] == '-');
      for (p = hex; *p; p++)
        if (*p >= 'A' && *p <= 'F') *p = (char)(*p - 'A' + 'a');
      while (start[0] == '0' && start[1] != '\0')
        memmove(start, start + 1, strlen(start));
      lua_pushstring(L, hex);
      OPENSSL_free(hex);
      lua_setfield(L, -2, "serial");
    }
  }
  cert_push_name(L, b, X509_get_subject_name(x));
  lua_setfield(L, -2, "subject");
  cert_push_name_fields(L, X509_get_subject_name(x));
  lua_setfield(L, -2, "subject_fields");
  cert_push_name(L, b, X509_get_issuer_name(x));
  lua_setfield(L, -2, "issuer");
  cert_push_name_fields(L, X509_get_issuer_name(x));
  lua_setfield(L, -2, "issuer_fields");
  lua_pushinteger(L, cert_epoch(X509_get0_notBefore(x)));
  lua_setfield(L, -2, "not_before");
  lua_pushinteger(L, cert_epoch(X509_get0_notAfter(x)));
  lua_setfield(L, -2, "not_after");
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
  ERR_clear_error();
  if (pk != NULL) {
    cert_push_keyinfo(L, pk);
    lua_setfield(L, -2, "key");
  }
  nid = X509_get_signature_nid(x);
  lua_pushstring(L, nid != NID_undef ? OBJ_nid2ln(nid) : "unknown");
  lua_setfield(L, -2, "signature_algorithm");
  if (X509_digest(x, EVP_sha256(), md, &mdlen)) {
    cert_push_hex(L, md, mdlen);
    lua_setfield(L, -2, "fingerprint_sha256");
  }
  if ((kid = X509_get0_subject_key_id(x)) != NULL) {
    cert_push_hex(L, ASN1_STRING_get0_data(kid), (size_t)ASN1_STRING_length(kid));
    lua_setfield(L, -2, "subject_key_id");
  }
  if ((kid = X509_get0_authority_key_id(x)) != NULL) {
    cert_push_hex(L, ASN1_STRING_get0_data(kid), (size_t)ASN1_STRING_length(kid));
    lua_setfield(L, -2, "authority_key_id");
  }
  ERR_clear_error();
}

/*
** core.cert_inspect(pem) -> { info, ... } | nil, msg, "ECERT"
** One table per CERTIFICATE block, in file order.
*/
static int cert_inspect (lua_State *L) {
  size_t len;
  const char *pem = luaL_checklstring(L, 1, &len);
  cert_scratch *s = cert_scratch_new(L);
  int i, n;
  s->chain = cert_read_chain(pem, len);
  s->bio = BIO_new(BIO_s_mem());
  if (s->chain == NULL || s->bio == NULL)
    return cert_sslfail(L, s, "cannot read certificates");
  n = sk_X509_num(s->chain);
  if (n == 0)
    return cert_fail(L, s, "ECERT", "no PEM certificate found");
  lua_createtable(L, n, 0);
  for (i = 0; i < n; i++) {
    cert_push_info(L, sk_X509_value(s->chain, i), s->bio);
    lua_rawseti(L, -2, i + 1);
  }
  cert_scratch_release(s);
  return 1;
}

/* core.cert_matches_key(cert_pem, key_pem) -> true | nil, msg, "ECERT" */
static int cert_matches_key (lua_State *L) {
  size_t clen, klen;
  const char *cpem = luaL_checklstring(L, 1, &clen);
  const char *kpem = luaL_checklstring(L, 2, &klen);
  cert_scratch *s = cert_scratch_new(L);
  ERR_clear_error();
  s->chain = cert_read_chain(cpem, clen);
  if (s->chain == NULL || sk_X509_num(s->chain) == 0)
    return cert_fail(L, s, "ECERT", "no PEM certificate found");
  s->key = cert_read_key(kpem, klen);
  if (s->key == NULL)
    return cert_sslfail(L, s, "cannot parse private key");
  if (EVP_PKEY_eq(X509_get0_pubkey(sk_X509_value(s->chain, 0)), s->key) != 1) {
    ERR_clear_error();
    return cert_fail(L, s, "ECERT", "tls: private key does not match public key");
  }
  cert_scratch_release(s);
  lua_pushboolean(L, 1);
  return 1;
}

/*
** core.cert_verify(cert_pem, ca_pem [, purpose]) -> true | nil, reason, "ECERT"
** The first certificate of cert_pem is the leaf, the others are untrusted
** intermediates; every certificate of ca_pem is trusted.  purpose is
** "server", "client" or nil (any).  reason is OpenSSL's verify error text.
*/
static int cert_verify (lua_State *L) {
  static const char *const purposes[] = {"any", "server", "client", NULL};
  size_t clen, calen;
  const char *cpem = luaL_checklstring(L, 1, &clen);
  const char *capem = luaL_checklstring(L, 2, &calen);
  int purpose = luaL_checkoption(L, 3, "any", purposes);
  cert_scratch *s = cert_scratch_new(L);
  X509 *leaf;
  int i;
  ERR_clear_error();
  s->chain = cert_read_chain(cpem, clen);
  if (s->chain == NULL || sk_X509_num(s->chain) == 0)
    return cert_fail(L, s, "ECERT", "no PEM certificate found");
  s->chain2 = cert_read_chain(capem, calen);
  if (s->chain2 == NULL || sk_X509_num(s->chain2) == 0)
    return cert_fail(L, s, "ECERT", "no PEM certificate found in the CA file");
  s->store = X509_STORE_new();
  s->ctx = X509_STORE_CTX_new();
  if (s->store == NULL || s->ctx == NULL)
    return cert_sslfail(L, s, "cannot verify");
  for (i = 0; i < sk_X509_num(s->chain2); i++)
    if (!X509_STORE_add_cert(s->store, sk_X509_value(s->chain2, i)))
      return cert_sslfail(L, s, "cannot load CA certificate");
  leaf = sk_X509_value(s->chain, 0);
  if (!X509_STORE_CTX_init(s->ctx, s->store, leaf, s->chain))
    return cert_sslfail(L, s, "cannot verify");
  if (purpose != 0
      && !X509_STORE_CTX_set_purpose(s->ctx, purpose == 1 ? X509_PURPOSE_SSL_SERVER
                                                           : X509_PURPOSE_SSL_CLIENT))
    return cert_sslfail(L, s, "cannot verify");
  if (X509_verify_cert(s->ctx) != 1) {
    int err = X509_STORE_CTX_get_error(s->ctx);
    ERR_clear_error();
    return cert_fail(L, s, "ECERT", "%s", X509_verify_cert_error_string(err));
  }
  cert_scratch_release(s);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.cert_ip(text) -> canonical IP text | nil (not an IP literal) */
static int cert_ip (lua_State *L) {
  const char *text = luaL_checkstring(L, 1);
  unsigned char addr[16];
  char out[INET6_ADDRSTRLEN];
  if (inet_pton(AF_INET, text, addr) == 1)
    lua_pushstring(L, inet_ntop(AF_INET, addr, out, sizeof out));
  else if (inet_pton(AF_INET6, text, addr) == 1)
    lua_pushstring(L, inet_ntop(AF_INET6, addr, out, sizeof out));
  else
    lua_pushnil(L);
  return 1;
}


/* ---------------------------------------------------------------------
** Files
** --------------------------------------------------------------------- */

/* Go's os.FileMode string ("drwxr-xr-x") of a stat mode. */
static void cert_modestring (mode_t m, char *out) {
  static const char rwx[] = "rwxrwxrwx";
  int i, n = 0;
  if (S_ISDIR(m)) out[n++] = 'd';
  if (S_ISBLK(m) || S_ISCHR(m)) out[n++] = 'D';
  if (S_ISFIFO(m)) out[n++] = 'p';
  if (S_ISSOCK(m)) out[n++] = 'S';
  if (m & S_ISUID) out[n++] = 'u';
  if (m & S_ISGID) out[n++] = 'g';
  if (S_ISCHR(m)) out[n++] = 'c';
  if (m & S_ISVTX) out[n++] = 't';
  if (n == 0) out[n++] = '-';
  for (i = 0; i < 9; i++)
    out[n++] = (m & (1u << (8 - i))) ? rwx[i] : '-';
  out[n] = '\0';
}

/* core.cert_stat(path) -> { type = "file"|"directory"|"other", mode = perm,
**   mode_string = "drwx------" } | nil, "stat <path>: <reason>", code */
static int cert_stat (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  char ms[24];
  if (stat(path, &st) != 0)
    return cert_oserror(L, NULL, "stat", path, errno);
  lua_createtable(L, 0, 4);
  lua_pushstring(L, S_ISDIR(st.st_mode) ? "directory"
                    : S_ISREG(st.st_mode) ? "file" : "other");
  lua_setfield(L, -2, "type");
  lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
  lua_setfield(L, -2, "mode");
  cert_modestring(st.st_mode, ms);
  lua_pushstring(L, ms);
  lua_setfield(L, -2, "mode_string");
  lua_pushinteger(L, (lua_Integer)st.st_size);
  lua_setfield(L, -2, "size");
  return 1;
}

/*
** core.cert_mkdir_all(path, mode) -> true | nil, "mkdir <p>: <reason>", code
** Creates path and its missing parents with mode (umask applies).  Like Go's
** os.MkdirAll, an existing non-directory on the way is "not a directory"
** naming that entry.
*/
static int cert_mkdir_all (lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  mode_t mode = (mode_t)luaL_optinteger(L, 2, 0700);
  char buf[PATH_MAX];
  struct stat st;
  char *p;
  luaL_argcheck(L, len > 0, 1, "empty path");
  if (stat(path, &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      lua_pushboolean(L, 1);
      return 1;
    }
    return cert_oserror(L, NULL, "mkdir", path, ENOTDIR);
  }
  if (len >= sizeof buf)
    return cert_oserror(L, NULL, "mkdir", path, ENAMETOOLONG);
  memcpy(buf, path, len + 1);
  for (p = buf + 1; ; p++) {
    if (*p == '/' || *p == '\0') {
      char c = *p;
      *p = '\0';
      if (p[-1] != '/' && mkdir(buf, mode) != 0) {
        int err = errno;
        if (err != EEXIST)
          return cert_oserror(L, NULL, "mkdir", buf, err);
        if (stat(buf, &st) != 0)
          return cert_oserror(L, NULL, "stat", buf, errno);
        if (!S_ISDIR(st.st_mode))
          return cert_oserror(L, NULL, "mkdir", buf, ENOTDIR);
      }
      *p = c;
      if (c == '\0') break;
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.cert_probe_dir(dir) -> true | nil, msg, code: creates and removes
** <dir>/.touch (mode 0600), etcd's writability test.  The probe is created
** exclusively: another writer of dir may have planted .touch as a symlink,
** which truncating would follow.  An existing .touch (a leftover, or such a
** link) is unlinked, which never touches a link's target, and tried once more. */
static int cert_probe_dir (lua_State *L) {
  const char *dir = luaL_checkstring(L, 1);
  const char *path = lua_pushfstring(L, "%s/.touch", dir);
  int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
  int fd = open(path, flags, 0600);
  if (fd < 0 && errno == EEXIST && unlink(path) == 0)
    fd = open(path, flags, 0600);
  if (fd < 0)
    return cert_oserror(L, NULL, "open", path, errno);
  close(fd);
  if (unlink(path) != 0)
    return cert_oserror(L, NULL, "remove", path, errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.cert_read_file(path) -> contents | nil, "open <path>: <reason>", code */
static int cert_read_file (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  cert_scratch *s = cert_scratch_new(L);
  size_t used = 0, cap = 4096;
  struct stat st;
  s->fd = open(path, O_RDONLY | O_CLOEXEC);
  if (s->fd < 0)
    return cert_oserror(L, s, "open", path, errno);
  if (fstat(s->fd, &st) == 0 && S_ISDIR(st.st_mode))
    return cert_oserror(L, s, "read", path, EISDIR);
  s->buf = (char *)malloc(cap);
  if (s->buf == NULL)
    return cert_oserror(L, s, "read", path, ENOMEM);
  for (;;) {
    ssize_t n;
    if (used == cap) {
      char *nb;
      if (cap >= CERT_MAX_FILE)
        return cert_oserror(L, s, "read", path, EFBIG);
      nb = (char *)realloc(s->buf, cap * 2);
      if (nb == NULL)
        return cert_oserror(L, s, "read", path, ENOMEM);
      s->buf = nb;
      cap *= 2;
    }
    n = read(s->fd, s->buf + used, cap - used);
    if (n < 0) {
      if (errno == EINTR) continue;
      return cert_oserror(L, s, "read", path, errno);
    }
    if (n == 0) break;
    used += (size_t)n;
  }
  lua_pushlstring(L, s->buf, used);
  cert_scratch_release(s);
  return 1;
}

/*
** core.write_file_atomic(path, data [, mode = 0600]) -> true | nil, msg, code
** Writes data to a new temporary file beside path (created with mode, so a
** key is never readable by others, not even briefly), fsyncs it, renames it
** over path and fsyncs the directory.  On failure the temporary file is
** removed and path is untouched.
*/
static int write_file_atomic (lua_State *L) {
  size_t len, plen, off = 0;
  const char *path = luaL_checklstring(L, 1, &plen);
  const char *data = luaL_checklstring(L, 2, &len);
  mode_t mode = (mode_t)luaL_optinteger(L, 3, 0600);
  char dir[PATH_MAX], tmp[PATH_MAX];
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  int fd = -1, tries, err, dfd;
  if (plen + 32 >= sizeof tmp)
    return cert_oserror(L, NULL, "open", path, ENAMETOOLONG);
  if (slash == NULL) strcpy(dir, ".");
  else if (slash == path) strcpy(dir, "/");
  else {
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
  }
  for (tries = 0; tries < 16 && fd < 0; tries++) {
    unsigned char rnd[6];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
      return cert_sslfail(L, NULL, "cannot generate random number");
    if (snprintf(tmp, sizeof tmp, "%s/.%s.tmp-%02x%02x%02x%02x%02x%02x",
                 dir, base, rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5])
        >= (int)sizeof tmp)
      return cert_oserror(L, NULL, "open", path, ENAMETOOLONG);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0 && errno != EEXIST)
      return cert_oserror(L, NULL, "open", path, errno);
  }
  if (fd < 0)
    return cert_oserror(L, NULL, "open", path, EEXIST);
  while (off < len) {
    ssize_t n = write(fd, data + off, len - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      goto fail_write;
    }
    off += (size_t)n;
  }
  if (fsync(fd) != 0) {
    err = errno;
    goto fail_write;
  }
  if (close(fd) != 0) {
    err = errno;
    fd = -1;
    goto fail_write;
  }
  if (rename(tmp, path) != 0) {
    err = errno;
    unlink(tmp);
    return cert_oserror(L, NULL, "rename", path, err);
  }
  dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)fsync(dfd);   /* the rename is done; a failed flush changes nothing */
    close(dfd);
  }
  lua_pushboolean(L, 1);
  return 1;
fail_write:
  if (fd >= 0) close(fd);
  unlink(tmp);
  return cert_oserror(L, NULL, "write", path, err);
}

/* core.cert_cwd() -> current directory | nil, msg, code */
static int cert_cwd (lua_State *L) {
  char buf[PATH_MAX];
  if (getcwd(buf, sizeof buf) == NULL)
    return cert_oserror(L, NULL, "getwd", ".", errno);
  lua_pushstring(L, buf);
  return 1;
}


static const luaL_Reg cert_funcs[] = {
  {"cert_keygen", cert_keygen},
  {"cert_key_info", cert_key_info},
  {"cert_create", cert_create},
  {"cert_inspect", cert_inspect},
  {"cert_matches_key", cert_matches_key},
  {"cert_verify", cert_verify},
  {"cert_ip", cert_ip},
  {"cert_stat", cert_stat},
  {"cert_mkdir_all", cert_mkdir_all},
  {"cert_probe_dir", cert_probe_dir},
  {"cert_read_file", cert_read_file},
  {"cert_cwd", cert_cwd},
  {"write_file_atomic", write_file_atomic},
  {NULL, NULL}
};

/* Adds the cert functions to the module table on top of the stack. */
int pl_open_cert (lua_State *L) {
  lua_createtable(L, 0, 2);                     /* mt */
  lua_pushcfunction(L, cert_scratch__gc);
  lua_setfield(L, -2, "__gc");
  lua_pushliteral(L, "peerlisten.cert.scratch");
  lua_setfield(L, -2, "__name");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &cert_scratch_mt);
  luaL_setfuncs(L, cert_funcs, 0);
  return 0;
}
