/*
** cert.c: certificate helpers behind lua/peerlisten/cert.lua: key generation,
** self-signed and CA-issued X.509 v3 certificates, inspection, key matching,
** verification and reading PEM files (files.c has the other file
** primitives).  PEM strings cross the boundary; there is no public userdata.
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
#include "x509.h"



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
  X509_CRL *crl;
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
  X509_CRL_free(s->crl); s->crl = NULL;
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
  x509_pem *v = NULL;
  int i, n = sk != NULL ? x509_pem_split(pem, len, &v) : 0;
  for (i = 0; i < n; i++) {
    const unsigned char *d = v[i].data;
    X509 *x;
    if (strcmp(v[i].name, "CERTIFICATE") != 0) continue;
    if ((x = d2i_X509(NULL, &d, v[i].len)) == NULL) break;   /* as PEM_read_bio_X509 stops */
    if (!sk_X509_push(sk, x)) {
      X509_free(x);
      break;
    }
  }
  ERR_clear_error();
  x509_pem_free(v, n);
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
  x509_push_bio(L, s->bio);
  cert_scratch_release(s);
  return 1;
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
  x509_push_keyinfo(L, s->key);
  cert_scratch_release(s);
  return 1;
}


/* ---------------------------------------------------------------------
** Certificate creation
** --------------------------------------------------------------------- */


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
      for (j = 0; x509_key_usages[j].name && strcmp(x509_key_usages[j].name, name); j++) ;
      if (x509_key_usages[j].name == NULL)
        luaL_error(L, "%s: unknown key usage '%s'", field, name);
      luaL_addchar(b, ',');
      luaL_addstring(b, x509_key_usages[j].conf);
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

/* The issuer of a CA-issued certificate: its certificate and matching key. */
static int cert_load_issuer (lua_State *L, cert_scratch *s, const char *icertpem, size_t icertlen,
                             const char *ikeypem, size_t ikeylen) {
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
  return 0;
}

/* Subject from opts.subject = { {name, value}, ... }; NULL or what failed. */
static const char *cert_set_subject (lua_State *L, cert_scratch *s) {
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
      return "cannot generate x509 certificate: bad subject";
    lua_pop(L, 3);
  }
  lua_pop(L, 1);
  return NULL;
}

/* Key usage (ku: "critical" then ",<name>"...), extended key usage (eku:
** ",<name>"...), basic constraints and key identifiers. */
static const char *cert_add_exts (cert_scratch *s, X509V3_CTX *ctx, const char *ku,
                                  const char *eku, int is_ca) {
  if (strlen(ku) > strlen("critical") && !cert_addext(s->cert, ctx, NID_key_usage, ku))
    return "cannot generate x509 certificate: key usage";
  if (eku[0] != '\0' && !cert_addext(s->cert, ctx, NID_ext_key_usage, eku + 1))
    return "cannot generate x509 certificate: extended key usage";
  if (!cert_addext(s->cert, ctx, NID_basic_constraints,
                   is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE"))
    return "cannot generate x509 certificate: basic constraints";
  if ((is_ca || s->issuer != NULL)
      && !cert_addext(s->cert, ctx, NID_subject_key_identifier, "hash"))
    return "cannot generate x509 certificate: subject key identifier";
  if (s->issuer != NULL
      && !cert_addext(s->cert, ctx, NID_authority_key_identifier, "keyid:always"))
    return "cannot generate x509 certificate: authority key identifier";
  return NULL;
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
  int is_ca, sanpos, nret;
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
  if (icertpem != NULL && (nret = cert_load_issuer(L, s, icertpem, icertlen, ikeypem, ikeylen)) != 0)
    return nret;
  s->cert = X509_new();
  s->bn = BN_new();
  if (s->cert == NULL || s->bn == NULL || RAND_bytes(serial, sizeof serial) != 1
      || BN_bin2bn(serial, sizeof serial, s->bn) == NULL
      || BN_to_ASN1_INTEGER(s->bn, X509_get_serialNumber(s->cert)) == NULL
      || !X509_set_version(s->cert, X509_VERSION_3))
    return cert_sslfail(L, s, "cannot generate random number");
  if ((bad = cert_set_subject(L, s)) != NULL)
    return cert_sslfail(L, s, bad);
  signer = s->issuer != NULL ? s->issuer : s->cert;
  if (!X509_set_issuer_name(s->cert, X509_get_subject_name(signer))
      || ASN1_TIME_set(X509_getm_notBefore(s->cert), (time_t)notbefore) == NULL
      || ASN1_TIME_set(X509_getm_notAfter(s->cert), (time_t)notafter) == NULL
      || !X509_set_pubkey(s->cert, s->key))
    return cert_sslfail(L, s, "cannot generate x509 certificate");
  X509V3_set_ctx(&ctx, signer, s->cert, NULL, NULL, 0);
  if ((bad = cert_add_exts(s, &ctx, lua_tostring(L, -3), lua_tostring(L, -2), is_ca)) != NULL)
    return cert_sslfail(L, s, bad);
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
  x509_push_bio(L, s->bio);
  cert_scratch_release(s);
  return 1;
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
  if (s->chain == NULL)
    return cert_sslfail(L, s, "cannot read certificates");
  n = sk_X509_num(s->chain);
  if (n == 0)
    return cert_fail(L, s, "ECERT", "no PEM certificate found");
  lua_createtable(L, n, 0);
  for (i = 0; i < n; i++) {
    x509_push_info(L, sk_X509_value(s->chain, i));
    lua_rawseti(L, -2, i + 1);
  }
  cert_scratch_release(s);
  return 1;
}

/*
** core.cert_crl_info(data) -> { issuer =, this_update =, next_update =,
** revoked = n } | nil, "x509: malformed crl", "ECERT".  Reads data the way
** the TLS policy reads its CRL file on a handshake (PEM when it holds a
** "-----BEGIN" line, DER otherwise), so a preflight sees the same verdict.
*/
static int cert_crl_info (lua_State *L) {
  size_t len;
  const char *data = luaL_checklstring(L, 1, &len);
  cert_scratch *s = cert_scratch_new(L);
  char name[512];
  time_t when = 0;
  STACK_OF(X509_REVOKED) *rev;
  ERR_clear_error();
  if (len >= 10 && strstr(data, "-----BEGIN") != NULL) {
    s->bio = BIO_new_mem_buf(data, (int)len);
    if (s->bio != NULL) s->crl = PEM_read_bio_X509_CRL(s->bio, NULL, NULL, NULL);
  }
  else {
    const unsigned char *d = (const unsigned char *)data;
    s->crl = d2i_X509_CRL(NULL, &d, (long)len);
  }
  if (s->crl == NULL)
    return cert_fail(L, s, "ECERT", "x509: malformed crl");
  lua_createtable(L, 0, 4);
  x509_name_str(X509_CRL_get_issuer(s->crl), name, sizeof name);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "issuer");
  if (x509_epoch(X509_CRL_get0_lastUpdate(s->crl), &when)) {
    lua_pushinteger(L, (lua_Integer)when);
    lua_setfield(L, -2, "this_update");
  }
  if (x509_epoch(X509_CRL_get0_nextUpdate(s->crl), &when)) {
    lua_pushinteger(L, (lua_Integer)when);
    lua_setfield(L, -2, "next_update");
  }
  rev = X509_CRL_get_REVOKED(s->crl);
  lua_pushinteger(L, rev != NULL ? sk_X509_REVOKED_num(rev) : 0);
  lua_setfield(L, -2, "revoked");
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


/* core.cert_read_file(path) -> contents | nil, "open <path>: <reason>", code */
static int cert_read_file (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  cert_scratch *s = cert_scratch_new(L);
  char err[PATH_MAX + 64];
  size_t len = 0;
  int e = 0;
  s->buf = x509_read_file(path, &len, err, sizeof(err), &e);
  if (s->buf == NULL) {
    cert_scratch_release(s);
    return pl_fail(L, uv_err_name(uv_translate_sys_error(e)), "%s", err);
  }
  lua_pushlstring(L, s->buf, len);
  cert_scratch_release(s);
  return 1;
}


static const luaL_Reg cert_funcs[] = {
  {"cert_keygen", cert_keygen},
  {"cert_key_info", cert_key_info},
  {"cert_create", cert_create},
  {"cert_inspect", cert_inspect},
  {"cert_matches_key", cert_matches_key},
  {"cert_crl_info", cert_crl_info},
  {"cert_verify", cert_verify},
  {"cert_ip", cert_ip},
  {"cert_read_file", cert_read_file},
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
