/*
** tls_client.c: the client side of a policy, for dialing peers as etcd's
** peer transport does: one client SSL_CTX per policy, built on first use,
** with the policy's versions and cipher suites, the client certificate
** (client_cert_file/client_key_file, else cert_file/key_file) and
** trusted_ca_file as the trust store.
*/
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

#include "tls.h"

/* Verification of the server is skipped only when asked to, or when the
** policy is self-signed (auto-TLS) and has no CA to check against: etcd's
** transport does the same for a self-signed TLSInfo. */
static int skip_server_verify (const pl_tls *t, SSL_CTX *cctx) {
  X509 *own = SSL_CTX_get0_certificate(cctx);
  if (t->insecure_skip_verify) return 1;
  return t->trusted_ca_file == NULL && own != NULL && X509_self_signed(own, 0) == 1;
}

static int client_cert (const pl_tls *t, SSL_CTX *cctx, char *err, size_t errlen) {
  const char *cf = t->client_cert_file ? t->client_cert_file : t->cert_file;
  const char *kf = t->client_cert_file ? t->client_key_file : t->key_file;
  certpair p;
  int ferr, ok;
  if (cf == NULL || kf == NULL) return 0;    /* no certificate to present */
  if (pair_load(cf, kf, &p, err, errlen, &ferr) != 0) return -1;
  ERR_clear_error();
  ok = SSL_CTX_use_cert_and_key(cctx, p.cert, p.key, p.chain, 1) == 1;
  pair_free(&p);
  if (!ok) {
    char e2[256];
    ERR_error_string_n(ERR_get_error(), e2, sizeof(e2));
    ERR_clear_error();
    snprintf(err, errlen, "tls: %s", e2);
    return -1;
  }
  return 0;
}

static int client_trust (pl_tls *t, SSL_CTX *cctx) {
  X509_STORE *st = SSL_CTX_get_cert_store(cctx);
  int i;
  if (t->trusted_ca_file == NULL) {
    if (SSL_CTX_set_default_verify_paths(cctx) != 1) ERR_clear_error();
    return 0;
  }
  for (i = 0; i < sk_X509_num(t->ca_certs); i++)
    X509_STORE_add_cert(st, sk_X509_value(t->ca_certs, i));
  ERR_clear_error();
  /* as on the server side: every certificate of the file is an anchor */
  X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(cctx), X509_V_FLAG_PARTIAL_CHAIN);
  return 0;
}

static SSL_CTX *client_ctx_new (pl_tls *t, char *err, size_t errlen) {
  SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
  if (cctx == NULL) {
    ERR_clear_error();
    snprintf(err, errlen, "tls: cannot create SSL_CTX");
    return NULL;
  }
  SSL_CTX_set_min_proto_version(cctx, t->min_version ? t->min_version : TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(cctx, t->max_version ? t->max_version : TLS1_3_VERSION);
  SSL_CTX_set_options(cctx, (uint64_t)(SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION));
  SSL_CTX_set_mode(cctx, SSL_MODE_RELEASE_BUFFERS);
  if (tls_apply_ciphers(t, cctx) != 0) {
    ERR_clear_error();
    snprintf(err, errlen, "tls: OpenSSL rejected the cipher suite list");
    SSL_CTX_free(cctx);
    return NULL;
  }
  if (t->alpn_wirelen > 0 &&
      SSL_CTX_set_alpn_protos(cctx, t->alpn_wire, (unsigned)t->alpn_wirelen) != 0)
    ERR_clear_error();
  if (client_cert(t, cctx, err, errlen) != 0 || client_trust(t, cctx) != 0) {
    SSL_CTX_free(cctx);
    return NULL;
  }
  if (skip_server_verify(t, cctx)) SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
  else SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, verify_note_cb);
  return cctx;
}

/* The name (SNI and host name check) or IP address (IP SAN check) the
** server's certificate must carry. */
static int client_target (SSL *ssl, const char *host, int host_is_ip, int verify) {
  X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
  if (host_is_ip)
    return !verify || X509_VERIFY_PARAM_set1_ip_asc(vp, host) == 1;
  if (SSL_set_tlsext_host_name(ssl, host) != 1) return 0;
  if (!verify) return 1;
  X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  return X509_VERIFY_PARAM_set1_host(vp, host, 0) == 1;
}

SSL *pl_tls_new_client_ssl (pl_tls *t, const char *host, int host_is_ip, char *err, size_t errlen) {
  SSL *ssl;
  int verify;
  if (t->client_ctx == NULL && (t->client_ctx = client_ctx_new(t, err, errlen)) == NULL)
    return NULL;
  verify = SSL_CTX_get_verify_mode(t->client_ctx) != SSL_VERIFY_NONE;
  if (verify && (host == NULL || host[0] == '\0')) {
    snprintf(err, errlen, "tls: either ServerName or InsecureSkipVerify must be specified in the tls.Config");
    return NULL;
  }
  ERR_clear_error();
  ssl = SSL_new(t->client_ctx);
  if (ssl == NULL || (host != NULL && host[0] != '\0' && !client_target(ssl, host, host_is_ip, verify))) {
    char e2[256];
    ERR_error_string_n(ERR_get_error(), e2, sizeof(e2));
    ERR_clear_error();
    SSL_free(ssl);
    snprintf(err, errlen, host_is_ip && ssl != NULL ? "tls: invalid IP address %s" : "tls: %s",
             host_is_ip && ssl != NULL ? host : e2);
    return NULL;
  }
  SSL_set_connect_state(ssl);
  return ssl;
}
