/*
** tls_report.c: wording of handshake failures (Go's texts) and the tables
** conn:tls_info() and the listener logs show.
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

/* Go's text for an alert description. */
const char *alert_text (int a) {
  switch (a) {
    case 0: return "close notify";
    case 10: return "unexpected message";
    case 20: return "bad record MAC";
    case 21: return "decryption failed";
    case 22: return "record overflow";
    case 30: return "decompression failure";
    case 40: return "handshake failure";
    case 42: return "bad certificate";
    case 43: return "unsupported certificate";
    case 44: return "revoked certificate";
    case 45: return "expired certificate";
    case 46: return "unknown certificate";
    case 47: return "illegal parameter";
    case 48: return "unknown certificate authority";
    case 49: return "access denied";
    case 50: return "error decoding message";
    case 51: return "error decrypting message";
    case 70: return "protocol version not supported";
    case 71: return "insufficient security level";
    case 80: return "internal error";
    case 86: return "inappropriate fallback";
    case 90: return "user canceled";
    case 100: return "no renegotiation";
    case 109: return "missing extension";
    case 110: return "unsupported extension";
    case 112: return "unrecognized name";
    case 116: return "certificate required";
    case 120: return "no application protocol";
    default: return NULL;
  }
}

/* Go's x509 wording for a chain verification error. */
void verify_text (SSL *ssl, long v, char *buf, size_t len) {
  switch (v) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
      snprintf(buf, len, "x509: certificate signed by unknown authority");
      return;
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID: {
      sslnote *n = note_get(ssl, 0);
      char now[40], lim[40];
      time_t tt = tls_now();
      struct tm tm;
      gmtime_r(&tt, &tm);
      strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%SZ", &tm);
      snprintf(lim, sizeof(lim), "%s", n != NULL ? n->bad_time : "");
      snprintf(buf, len, "x509: certificate has expired or is not yet valid: current time %s is %s %s",
               now, v == X509_V_ERR_CERT_HAS_EXPIRED ? "after" : "before", lim);
      return;
    }
    case X509_V_ERR_INVALID_PURPOSE:
      snprintf(buf, len, "x509: certificate specifies an incompatible key usage");
      return;
    default:
      snprintf(buf, len, "x509: %s", X509_verify_cert_error_string(v));
  }
}

const char *pl_tls_handshake_failure (SSL *ssl, int ssl_error, char *msg, size_t msglen) {
  unsigned long e = 0, q;
  int reason;
  sslnote *n = note_get(ssl, 0);
  /* the first SSL-library error is the one that failed the handshake */
  while ((q = ERR_get_error()) != 0)
    if (e == 0 && ERR_GET_LIB(q) == ERR_LIB_SSL) e = q;
  if (ssl_error != SSL_ERROR_SSL || e == 0) {
    snprintf(msg, msglen, "EOF");
    return "eof";
  }
  reason = ERR_GET_REASON(e);
  switch (reason) {
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
      snprintf(msg, msglen, "tls: client didn't provide a certificate");
      return "no_client_cert";
    case SSL_R_CERTIFICATE_VERIFY_FAILED: {
      char v[200];
      if (n != NULL && n->cn_rejected) {
        snprintf(msg, msglen, "client certificate authentication failed");
        return "cn_not_allowed";
      }
      verify_text(ssl, SSL_get_verify_result(ssl), v, sizeof(v));
      snprintf(msg, msglen, "tls: failed to verify client certificate: %s", v);
      return "bad_client_cert";
    }
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_VERSION_TOO_HIGH:
    case SSL_R_UNKNOWN_PROTOCOL: {
      int cv = SSL_client_version(ssl), v;
      size_t used = (size_t)snprintf(msg, msglen, "tls: client offered only unsupported versions: [");
      for (v = cv; v >= 0x0301 && v < 0x0303 && used < msglen; v--)
        used += (size_t)snprintf(msg + used, msglen - used, "%s%x", v == cv ? "" : " ", v);
      if (used < msglen) snprintf(msg + used, msglen - used, "]");
      return "protocol_version";
    }
    case SSL_R_NO_SHARED_CIPHER:
      snprintf(msg, msglen, "tls: no cipher suite supported by both client and server");
      return "no_shared_cipher";
    case SSL_R_NO_APPLICATION_PROTOCOL:
      snprintf(msg, msglen, "tls: client requested unsupported application protocols (%s)",
               n != NULL && n->alpn_offered[0] ? n->alpn_offered : "[]");
      return "alpn";
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
      snprintf(msg, msglen, "tls: first record does not look like a TLS handshake");
      return "not_tls";
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH:
    case SSL_R_UNEXPECTED_RECORD:
    case SSL_R_UNEXPECTED_MESSAGE: {
      /* only before any ClientHello was parsed (client_version still the
      ** SSL's initial "any version" value) is this "not TLS at all" */
      int cv = SSL_client_version(ssl);
      if (cv == 0 || cv > TLS1_3_VERSION) {
        snprintf(msg, msglen, "tls: first record does not look like a TLS handshake");
        return "not_tls";
      }
      break;
    }
    case SSL_R_UNEXPECTED_EOF_WHILE_READING:
      snprintf(msg, msglen, "EOF");
      return "eof";
    default:
      break;
  }
  if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256 &&
      alert_text(reason - SSL_AD_REASON_OFFSET) != NULL) {
    snprintf(msg, msglen, "remote error: tls: %s", alert_text(reason - SSL_AD_REASON_OFFSET));
    return "remote_alert";
  }
  {
    const char *rs = ERR_reason_error_string(e);
    snprintf(msg, msglen, "tls: %s", rs ? rs : "handshake failure");
  }
  return "handshake";
}


/* ---------------------------------------------------------------------
** Info for connections and logs.
*/
const char *version_name (int v) {
  switch (v) {
    case TLS1_3_VERSION: return "TLS1.3";
    case TLS1_2_VERSION: return "TLS1.2";
    case TLS1_1_VERSION: return "TLS1.1";
    case TLS1_VERSION: return "TLS1.0";
    default: return "";
  }
}


void pl_tls_push_info (lua_State *L, SSL *ssl) {
  const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
  const unsigned char *alpn = NULL;
  unsigned int alen = 0;
  const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  X509 *peer = SSL_get0_peer_certificate(ssl);
  lua_createtable(L, 0, 8);
  lua_pushstring(L, version_name(SSL_version(ssl)));
  lua_setfield(L, -2, "version");
  if (c != NULL) {
    const cipher_def *d = cipher_by_id((unsigned)(SSL_CIPHER_get_protocol_id(c) & 0xffff));
    const char *std = SSL_CIPHER_standard_name(c);
    lua_pushstring(L, d ? d->name : (std ? std : SSL_CIPHER_get_name(c)));
    lua_setfield(L, -2, "cipher");
    lua_pushstring(L, SSL_CIPHER_get_name(c));
    lua_setfield(L, -2, "cipher_openssl");
  }
  SSL_get0_alpn_selected(ssl, &alpn, &alen);
  if (alen > 0) {
    lua_pushlstring(L, (const char *)alpn, alen);
    lua_setfield(L, -2, "alpn");
  }
  if (sni != NULL) {
    lua_pushstring(L, sni);
    lua_setfield(L, -2, "server_name");
  }
  lua_pushboolean(L, SSL_session_reused(ssl));
  lua_setfield(L, -2, "resumed");
  if (peer != NULL) {
    x509_push_info(L, peer);
    lua_setfield(L, -2, "peer_cert");
  }
}

void pl_tls_push_peer_names (lua_State *L, SSL *ssl) {
  X509 *peer = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
  x509_sans s;
  if (peer == NULL) {
    lua_newtable(L);
    lua_newtable(L);
    return;
  }
  x509_sans_get(peer, &s);
  x509_push_sans(L, &s);
  x509_sans_free(&s);
}

void pl_tls_push_pending_logs (lua_State *L, pl_tls *t) {
  logent *list, *e;
  int i = 0;
  if (t == NULL || !t->mu_ok) { lua_pushnil(L); return; }
  uv_mutex_lock(&t->mu);
  list = t->pending;
  t->pending = NULL;
  t->pending_tail = &t->pending;
  t->npending = 0;
  uv_mutex_unlock(&t->mu);
  if (list == NULL) { lua_pushnil(L); return; }
  lua_newtable(L);
  for (e = list; e != NULL; e = e->next) {
    logent_push(L, e, 1);
    lua_rawseti(L, -2, ++i);
  }
  logent_free(list);
}

/* Go's words for a server certificate that does not carry the name or IP
** address we dialed: the names it has, or that it has none of that kind. */
static void mismatch_text (SSL *ssl, char *buf, size_t len) {
  STACK_OF(X509) *sk = SSL_get_peer_cert_chain(ssl);
  X509 *leaf = sk != NULL && sk_X509_num(sk) > 0 ? sk_X509_value(sk, 0) : NULL;
  X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
  char *ip = X509_VERIFY_PARAM_get1_ip_asc(vp), a[64];
  const char *host = X509_VERIFY_PARAM_get0_host(vp, 0);
  size_t used = 0;
  int i, n = 0;
  x509_sans s;
  memset(&s, 0, sizeof(s));
  if (leaf != NULL) x509_sans_get(leaf, &s);
  if (ip != NULL && s.nip == 0)
    snprintf(buf, len, "x509: cannot validate certificate for %s because it doesn't contain any IP SANs", ip);
  else if (ip == NULL && s.ndns == 0)
    snprintf(buf, len, "x509: certificate relies on legacy Common Name field, use SANs instead");
  else {
    used = (size_t)snprintf(buf, len, "x509: certificate is valid for ");
    for (i = 0; ip != NULL && i < s.nip && used < len; i++)
      if (x509_ip_str(s.ip[i], s.iplen[i], a, sizeof(a)))
        used += (size_t)snprintf(buf + used, len - used, "%s%s", n++ ? ", " : "", a);
    for (i = 0; ip == NULL && i < s.ndns && used < len; i++)
      used += (size_t)snprintf(buf + used, len - used, "%s%s", n++ ? ", " : "", s.dns.v[i]);
    if (used < len) snprintf(buf + used, len - used, ", not %s", ip ? ip : (host ? host : ""));
  }
  x509_sans_free(&s);
  OPENSSL_free(ip);
}

/* A failed client handshake: which side refused it.  ESERVERCERT: we did
** not accept the server's certificate; EPEERREJECTED: the server sent an
** alert (our certificate, version, cipher suites); ENOTTLS: the server
** does not speak TLS; ETLS: anything else. */
const char *pl_tls_client_failure (SSL *ssl, int ssl_error, char *msg, size_t msglen) {
  unsigned long e = 0, q;
  int reason;
  char v[400];
  while ((q = ERR_get_error()) != 0)
    if (e == 0 && ERR_GET_LIB(q) == ERR_LIB_SSL) e = q;
  if (ssl_error != SSL_ERROR_SSL || e == 0) {
    snprintf(msg, msglen, "EOF");
    return "ETLS";
  }
  reason = ERR_GET_REASON(e);
  if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
    long r = SSL_get_verify_result(ssl);
    if (r == X509_V_ERR_HOSTNAME_MISMATCH || r == X509_V_ERR_IP_ADDRESS_MISMATCH)
      mismatch_text(ssl, v, sizeof(v));
    else
      verify_text(ssl, r, v, sizeof(v));
    snprintf(msg, msglen, "tls: failed to verify certificate: %s", v);
    return "ESERVERCERT";
  }
  if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256 &&
      alert_text(reason - SSL_AD_REASON_OFFSET) != NULL) {
    snprintf(msg, msglen, "remote error: tls: %s", alert_text(reason - SSL_AD_REASON_OFFSET));
    return reason - SSL_AD_REASON_OFFSET == TLS1_AD_NO_APPLICATION_PROTOCOL ? "EALPN" : "EPEERREJECTED";
  }
  /* the first bytes back are no TLS record: a plain-text server answered */
  if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG ||
      reason == SSL_R_UNKNOWN_PROTOCOL) {
    snprintf(msg, msglen, "tls: first record does not look like a TLS handshake");
    return "ENOTTLS";
  }
  {
    const char *rs = ERR_reason_error_string(e);
    snprintf(msg, msglen, "tls: %s", rs ? rs : "handshake failure");
  }
  return "ETLS";
}
