/*
** tls_stream.c: TLS on a connection, over a BIO that reads the bytes of
** libuv's read callback and writes into a malloc'ed output buffer; the
** handshake driver (server and client side), its deadline and the
** post-handshake checks, run on libuv's thread pool when they may block.
** The connection's state is conn.h's pl_conn; conn.c owns its lifecycle.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "conn.h"

#define TLS_CHUNK 16384

typedef struct checkwork {
  uv_work_t req;
  pl_conn *c;
  const char *reason;
  char msg[512];
  char ip[48];
} checkwork;

/* ---- the BIO between OpenSSL and libuv ---- */

/* One BIO method shared by every loop of the process, freed with the last
** loop (pl_conn_loops).  The mutex guards both. */
static BIO_METHOD *bio_method = NULL;
static int bio_loops = 0;
static uv_mutex_t bio_mutex;
static uv_once_t bio_once = UV_ONCE_INIT;

static int bio_write (BIO *b, const char *data, int len) {
  pl_conn *c = (pl_conn *)BIO_get_data(b);
  size_t need;
  BIO_clear_retry_flags(b);
  if (c == NULL || len < 0) return -1;
  need = c->woutlen + (size_t)len;
  if (need > c->woutcap) {
    size_t cap = c->woutcap ? c->woutcap : 4096;
    char *nb;
    while (cap < need) cap *= 2;
    nb = (char *)realloc(c->wout, cap);
    if (nb == NULL) return -1;
    c->wout = nb;
    c->woutcap = cap;
  }
  memcpy(c->wout + c->woutlen, data, (size_t)len);
  c->woutlen += (size_t)len;
  return len;
}

static int bio_read (BIO *b, char *out, int len) {
  pl_conn *c = (pl_conn *)BIO_get_data(b);
  size_t n;
  BIO_clear_retry_flags(b);
  if (c == NULL || len <= 0) return 0;
  if (c->inlen == 0) {
    if (c->eof) return 0;
    BIO_set_retry_read(b);
    return -1;
  }
  n = c->inlen < (size_t)len ? c->inlen : (size_t)len;
  memcpy(out, c->in, n);
  c->in += n;
  c->inlen -= n;
  return (int)n;
}

static long bio_ctrl (BIO *b, int cmd, long num, void *ptr) {
  pl_conn *c = (pl_conn *)BIO_get_data(b);
  (void)num; (void)ptr;
  switch (cmd) {
    case BIO_CTRL_FLUSH: return 1;
    case BIO_CTRL_PENDING: return c ? (long)c->inlen : 0;
    case BIO_CTRL_WPENDING: return 0;
    case BIO_CTRL_EOF: return c ? (c->eof && c->inlen == 0) : 1;
    default: return 0;
  }
}

static int bio_create (BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

static void bio_mutex_init (void) {
  if (uv_mutex_init(&bio_mutex) != 0) abort();
}

/* Returns the BIO method, creating it on first use; NULL when out of memory. */
static BIO_METHOD *bio_method_get (void) {
  BIO_METHOD *m;
  uv_once(&bio_once, bio_mutex_init);
  uv_mutex_lock(&bio_mutex);
  if (bio_method == NULL) {
    m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "peerlisten libuv stream");
    if (m != NULL) {
      BIO_meth_set_write(m, bio_write);
      BIO_meth_set_read(m, bio_read);
      BIO_meth_set_ctrl(m, bio_ctrl);
      BIO_meth_set_create(m, bio_create);
      bio_method = m;
    }
  }
  m = bio_method;
  uv_mutex_unlock(&bio_mutex);
  return m;
}

void pl_conn_loops (int delta) {
  uv_once(&bio_once, bio_mutex_init);
  uv_mutex_lock(&bio_mutex);
  bio_loops += delta;
  if (bio_loops <= 0 && bio_method != NULL) {
    BIO_meth_free(bio_method);
    bio_method = NULL;
  }
  uv_mutex_unlock(&bio_mutex);
}

/* ---- output ---- */

int pl_ts_flush (pl_conn *c) {
  char *data = c->wout;
  size_t len = c->woutlen;
  if (len == 0 || c->h == NULL) return 0;
  c->wout = NULL;
  c->woutlen = c->woutcap = 0;
  return pl_conn_send_owned(c, data, len);
}

void pl_ts_flush_try (pl_conn *c) {
  if (c->woutlen > 0 && c->h != NULL && c->pending_writes == 0) {
    /* alerts and close_notify: a socket takes far less than 1 MiB now */
    size_t n = c->woutlen < ((size_t)1 << 20) ? c->woutlen : ((size_t)1 << 20);
    uv_buf_t buf = uv_buf_init(c->wout, (unsigned int)n);
    (void)uv_try_write(c->h, &buf, 1);
  }
  c->woutlen = 0;
}

void pl_ts_shutdown (pl_conn *c) {
  ERR_clear_error();
  SSL_shutdown(c->ssl);
  ERR_clear_error();
  pl_ts_flush_try(c);
}

int pl_ts_write (pl_conn *c, const char *data, size_t len, char *msg, size_t msglen) {
  size_t off = 0;
  while (off < len) {
    int chunk = len - off > (1u << 30) ? (1 << 30) : (int)(len - off);
    int n;
    ERR_clear_error();
    n = SSL_write(c->ssl, data + off, chunk);
    if (n <= 0) {
      pl_ssl_errstr(msg, msglen);
      if (msg[0] == '\0') snprintf(msg, msglen, "TLS error");
      c->woutlen = 0;
      return -1;
    }
    off += (size_t)n;
  }
  return pl_ts_flush(c);
}

/* ---- input ---- */

void pl_ts_pump (pl_conn *c) {
  for (;;) {
    int n, e;
    /* nothing new to decrypt: an SSL_read now would only set up (and free
    ** again) a 16 KB record buffer to learn it must wait */
    if (c->inlen == 0 && !SSL_has_pending(c->ssl)) break;
    if (pl_conn_rbuf_reserve(c, TLS_CHUNK) != 0) { c->rerr = UV_ENOMEM; break; }
    ERR_clear_error();
    n = SSL_read(c->ssl, c->rbuf + c->rlen, (int)(c->rcap - c->rlen));
    if (n > 0) { c->rlen += (size_t)n; continue; }
    e = SSL_get_error(c->ssl, n);
    if (e == SSL_ERROR_WANT_READ) break;
    if (e == SSL_ERROR_ZERO_RETURN) { c->eof = 1; break; }
    if (c->eof) break;   /* EOF without close_notify: a plain EOF */
    if (c->tlserr == NULL) c->tlserr = (char *)malloc(PL_TLSERR_LEN);
    if (c->tlserr != NULL && c->is_client) {
      /* TLS 1.3: a server's refusal of our certificate arrives after the
      ** handshake, as the alert this first read finds */
      const char *code = pl_tls_client_failure(c->ssl, e, c->tlserr, PL_TLSERR_LEN);
      c->peer_alert = (unsigned char)(strcmp(code, "EPEERREJECTED") == 0);
    }
    else if (c->tlserr != NULL) {
      pl_ssl_errstr(c->tlserr, PL_TLSERR_LEN);
      if (c->tlserr[0] == '\0') snprintf(c->tlserr, PL_TLSERR_LEN, "TLS error");
    }
    c->rerr = UV_EPROTO;
    break;
  }
  c->inlen = 0;
  c->in = NULL;
  pl_conn_rbuf_trim(c);
  ERR_clear_error();
  if (pl_ts_flush(c) != 0 && c->rerr == 0) c->rerr = UV_EPIPE;
}

/* ---- the handshake ---- */

void pl_ts_stop_timer (pl_conn *c) {
  pl_close_handle((uv_handle_t *)c->hs_timer);
  c->hs_timer = NULL;
}

static void hs_timeout_cb (uv_timer_t *t) {
  pl_conn *c = (pl_conn *)t->data;
  if (c == NULL) return;
  pl_conn_hs_timeout(c);
}

/* Why the handshake failed, in the words of our side's role. */
static const char *hs_failure (pl_conn *c, int ssl_error, char *msg, size_t len) {
  if (c->is_client) return pl_tls_client_failure(c->ssl, ssl_error, msg, len);
  return pl_tls_handshake_failure(c->ssl, ssl_error, msg, len);
}

static void check_work (uv_work_t *req) {
  checkwork *w = (checkwork *)req->data;
  w->reason = pl_tls_post_check(w->c->tls, w->c->ssl, w->ip[0] ? w->ip : NULL,
                                w->msg, sizeof(w->msg));
}

static void check_after (uv_work_t *req, int status) {
  checkwork *w = (checkwork *)req->data;
  pl_conn *c = w->c;
  const char *reason = w->reason;
  char msg[512];
  memcpy(msg, w->msg, sizeof(msg));
  free(w);
  c->work_pending = 0;
  if (c->h == NULL || status == UV_ECANCELED) {
    pl_conn_discard(c);
    return;
  }
  pl_conn_hs_end(c, reason, msg, 0);
}

/* The handshake completed: the server side runs the post-handshake checks,
** on the thread pool when they may block (DNS). */
static void hs_done (pl_conn *c) {
  const char *ip = c->is_unix ? NULL : pl_conn_peer_name(c);
  char msg[512];
  const char *reason;
  pl_ts_pump(c);   /* early application data stays buffered */
  c->phase = PH_CHECKING;
  if (c->is_client) { pl_conn_hs_end(c, NULL, "", 1); return; }
  if (pl_tls_post_check_may_block(c->tls, c->ssl, ip)) {
    checkwork *w = (checkwork *)malloc(sizeof(checkwork));
    if (w != NULL) {
      w->req.data = w;
      w->c = c;
      w->reason = NULL;
      w->msg[0] = '\0';
      snprintf(w->ip, sizeof(w->ip), "%s", ip ? ip : "");
      if (uv_queue_work(c->loop, &w->req, check_work, check_after) == 0) {
        c->work_pending = 1;
        if (c->reading) { uv_read_stop(c->h); c->reading = 0; }
        return;
      }
      free(w);
    }
  }
  msg[0] = '\0';
  reason = pl_tls_post_check(c->tls, c->ssl, ip, msg, sizeof(msg));
  pl_conn_hs_end(c, reason, msg, 0);
}

/* Advances the handshake with the input the BIO holds. */
static void hs_step (pl_conn *c) {
  int r, e;
  char msg[256];
  const char *reason;
  ERR_clear_error();
  r = SSL_do_handshake(c->ssl);
  if (r == 1) {
    if (pl_ts_flush(c) != 0) { pl_conn_hs_end(c, "handshake", "write: broken pipe", 1); return; }
    hs_done(c);
    return;
  }
  e = SSL_get_error(c->ssl, r);
  if (e == SSL_ERROR_WANT_READ) {
    c->in = NULL;
    c->inlen = 0;
    if (pl_ts_flush(c) != 0) pl_conn_hs_end(c, "handshake", "write: broken pipe", 1);
    return;
  }
  reason = hs_failure(c, e, msg, sizeof(msg));
  ERR_clear_error();
  c->in = NULL;
  c->inlen = 0;
  pl_conn_hs_end(c, reason, msg, 1);
}

void pl_ts_input (pl_conn *c, const char *data, size_t len) {
  c->in = data;
  c->inlen = len;
  if (c->phase == PH_HANDSHAKE) { hs_step(c); return; }
  pl_ts_pump(c);
}

void pl_ts_input_end (pl_conn *c) {
  char msg[256];
  const char *reason;
  if (c->eof) reason = hs_failure(c, SSL_ERROR_SYSCALL, msg, sizeof(msg));
  else {
    snprintf(msg, sizeof(msg), "read: %s", uv_strerror(c->rerr));
    reason = c->is_client ? uv_err_name(c->rerr) : "handshake";
  }
  pl_conn_hs_end(c, reason, msg, 1);
}

const char *pl_ts_start (pl_conn *c, SSL *ssl, int client, double hs_timeout) {
  BIO_METHOD *m = bio_method_get();
  BIO *bio = m ? BIO_new(m) : NULL;
  int r;
  c->ssl = ssl;   /* c owns it from here, also when starting fails */
  c->is_client = (unsigned char)(client != 0);
  c->phase = PH_HANDSHAKE;
  if (bio == NULL) return "cannot create TLS BIO";
  BIO_set_data(bio, c);
  SSL_set_bio(ssl, bio, bio);
  if (client) SSL_set_connect_state(ssl);
  else SSL_set_accept_state(ssl);
  if (hs_timeout > 0) {
    c->hs_timer = (uv_timer_t *)malloc(sizeof(uv_timer_t));
    if (c->hs_timer != NULL) {
      uv_timer_init(c->loop, c->hs_timer);
      uv_update_time(c->loop);
      c->hs_timer->data = c;
      uv_timer_start(c->hs_timer, hs_timeout_cb, (uint64_t)(hs_timeout * 1000.0 + 0.5), 0);
    }
  }
  r = pl_conn_read_start(c);
  if (r != 0) return "read: cannot start reading";
  if (client) hs_step(c);   /* the ClientHello */
  return NULL;
}
