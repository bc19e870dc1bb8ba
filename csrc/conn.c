/*
** conn.c: connections (peerlisten.Conn): plain or TLS over a BIO that reads
** from libuv's read callback and writes into a malloc'ed output buffer.  The
** C state (pl_conn) is malloc'ed and owned by its listener's pl_group until
** the handshake and checks passed; then a Conn userdata owns it.
** Owned by the core helper.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "peerlisten.h"

#define TLS_CHUNK 16384
#define READ_HIGH (64 * 1024)   /* stop reading when this much waits unread */
#define TLSERR_LEN 128

enum { PH_HANDSHAKE, PH_CHECKING, PH_OPEN };

struct pl_conn {
  uv_stream_t *h;          /* uv_tcp_t or uv_pipe_t (malloc'ed); NULL: closed */
  uv_loop_t *loop;
  pl_group *g;             /* owning listener's group; NULL once detached */
  pl_conn *prev, *next;    /* in g->head */
  pl_conn *rnext;          /* in g's ready queue */
  SSL *ssl;                /* NULL for plain connections */
  pl_tls *tls;             /* retained while ssl exists */
  char *rbuf;              /* plaintext not yet read by Lua: rbuf[roff..rlen) */
  size_t roff, rlen, rcap;
  const char *in;          /* raw TLS bytes of the current read callback */
  size_t inlen;
  char *wout;              /* TLS output not yet given to libuv */
  size_t woutlen, woutcap;
  uv_timer_t *hs_timer;    /* whole-handshake deadline */
  char *tlserr;            /* why a TLS read failed (malloc'ed, only then) */
  pl_waiter rw, ww;
  double rto, wto;         /* default read/write deadlines (seconds, 0: none) */
  int rerr, werr;          /* libuv error codes (0: none) */
  int pending_writes;
  unsigned short peer_port;
  /* flags: one byte each (every idle connection carries this struct) */
  unsigned char phase;
  unsigned char has_ud;    /* a Conn userdata owns this struct */
  unsigned char user_closed;   /* close() was called */
  unsigned char work_pending;  /* a post-handshake check runs on the thread pool */
  unsigned char pinned;    /* C code still uses it while Lua runs (loggers) */
  unsigned char reading;
  unsigned char eof;
  unsigned char is_unix;
  unsigned char peer_raw;  /* peer holds the raw sockaddr, formatted on demand */
  char peer[46];           /* remote IP ("@" for unix peers); INET6_ADDRSTRLEN */
};

typedef struct conn_ud {
  pl_conn *c;              /* NULL after __gc */
} conn_ud;

typedef struct wreq {
  uv_write_t req;
  char *data;              /* malloc'ed, freed by write_cb */
} wreq;

typedef struct checkwork {
  uv_work_t req;
  pl_conn *c;
  const char *reason;
  char msg[512];
  char ip[48];
} checkwork;

static const char *peer_name (pl_conn *c);

static void free_handle (uv_handle_t *h) {
  free(h);
}

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

/* ---- group bookkeeping ---- */

static void group_unlink (pl_conn *c) {
  pl_group *g = c->g;
  if (g == NULL) return;
  if (c->prev) c->prev->next = c->next; else g->head = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
  g->active--;
  if (c->phase != PH_OPEN && c->ssl != NULL) g->handshaking--;
  c->g = NULL;
  if (g->on_change) g->on_change(g);
}

void pl_group_push_ready (pl_group *g, pl_conn *c) {
  c->rnext = NULL;
  if (g->ready_tail) g->ready_tail->rnext = c; else g->ready_head = c;
  g->ready_tail = c;
  g->queued++;
}

pl_conn *pl_group_pop_ready (pl_group *g) {
  pl_conn *c = g->ready_head;
  if (c == NULL) return NULL;
  g->ready_head = c->rnext;
  if (g->ready_head == NULL) g->ready_tail = NULL;
  c->rnext = NULL;
  g->queued--;
  return c;
}

static void group_unqueue (pl_conn *c) {
  pl_group *g = c->g;
  pl_conn **p;
  if (g == NULL) return;
  for (p = &g->ready_head; *p != NULL; p = &(*p)->rnext) {
    if (*p == c) {
      *p = c->rnext;
      if (g->ready_tail == c) {
        pl_conn *t = g->ready_head;
        while (t && t->rnext) t = t->rnext;
        g->ready_tail = t;
      }
      c->rnext = NULL;
      g->queued--;
      return;
    }
  }
}

/* ---- closing and freeing ---- */

/* Frees c once nothing refers to it any more. */
static void conn_free_maybe (pl_conn *c) {
  if (c->h != NULL || c->has_ud || c->work_pending || c->pinned) return;
  if (c->ssl) SSL_free(c->ssl);
  pl_tls_release(c->tls);
  free(c->rbuf);
  free(c->wout);
  free(c->tlserr);
  free(c);
}

static void flush_try (pl_conn *c);

/* Closes the socket (idempotent): wakes waiters (deferred), leaves the group. */
static void conn_close_handle (pl_conn *c, int graceful) {
  if (c->h == NULL) return;
  if (graceful && c->ssl != NULL && c->phase == PH_OPEN && c->werr == 0) {
    ERR_clear_error();
    SSL_shutdown(c->ssl);    /* queue close_notify; sent if the socket takes it now */
    ERR_clear_error();
    flush_try(c);
  }
  if (c->hs_timer) {
    c->hs_timer->data = NULL;
    uv_close((uv_handle_t *)c->hs_timer, free_handle);
    c->hs_timer = NULL;
  }
  pl_waiter_cancel(c->loop, &c->rw);
  pl_waiter_cancel(c->loop, &c->ww);
  c->h->data = NULL;
  uv_close((uv_handle_t *)c->h, free_handle);
  c->h = NULL;
  c->reading = 0;
  free(c->rbuf);
  c->rbuf = NULL;
  c->roff = c->rlen = c->rcap = 0;
  group_unqueue(c);
  group_unlink(c);
}

void pl_conn_discard (pl_conn *c) {
  conn_close_handle(c, 0);
  conn_free_maybe(c);
}

void pl_group_close_pending (pl_group *g) {
  pl_conn *c = g->head;
  while (c != NULL) {
    pl_conn *next = c->next;
    if (!c->has_ud) pl_conn_discard(c);
    c = next;
  }
}

void pl_group_close_all (pl_group *g, int detach) {
  pl_conn *c = g->head;
  while (c != NULL) {
    pl_conn *next = c->next;
    if (!c->has_ud)
      pl_conn_discard(c);
    else if (!detach)
      conn_close_handle(c, 1);
    else {   /* a Lua-held connection outlives a collected listener */
      if (c->prev) c->prev->next = c->next; else g->head = c->next;
      if (c->next) c->next->prev = c->prev;
      c->prev = c->next = NULL;
      g->active--;
      c->g = NULL;
    }
    c = next;
  }
}

/* ---- writing ---- */

static void write_cb (uv_write_t *req, int status) {
  wreq *w = (wreq *)req;
  pl_conn *c = (pl_conn *)req->handle->data;
  free(w->data);
  free(w);
  if (c == NULL) return;
  c->pending_writes--;
  if (status < 0 && c->werr == 0) c->werr = status;
  if (c->pending_writes == 0 || c->werr != 0)
    pl_wake(c->loop, &c->ww, PL_DONE);   /* last: may run Lua */
}

/* Hands len bytes at data (malloc'ed, ownership taken) to libuv after trying
** to write them at once.  Returns 0 or a libuv error. */
static int send_owned (pl_conn *c, char *data, size_t len) {
  size_t off = 0;
  uv_buf_t buf;
  wreq *w;
  int r;
  if (c->pending_writes == 0) {
    buf = uv_buf_init(data, (unsigned int)len);
    r = uv_try_write(c->h, &buf, 1);
    if (r >= 0) off = (size_t)r;
    else if (r != UV_EAGAIN && r != UV_ENOSYS) { free(data); return r; }
  }
  if (off == len) { free(data); return 0; }
  if (off > 0) memmove(data, data + off, len - off);
  w = (wreq *)malloc(sizeof(wreq));
  if (w == NULL) { free(data); return UV_ENOMEM; }
  w->data = data;
  buf = uv_buf_init(data, (unsigned int)(len - off));
  r = uv_write(&w->req, c->h, &buf, 1, write_cb);
  if (r < 0) { free(data); free(w); return r; }
  c->pending_writes++;
  return 0;
}

/* Sends the TLS output buffer. */
static int flush_out (pl_conn *c) {
  char *data = c->wout;
  size_t len = c->woutlen;
  if (len == 0 || c->h == NULL) return 0;
  c->wout = NULL;
  c->woutlen = c->woutcap = 0;
  return send_owned(c, data, len);
}

/* Best effort: write what the socket takes now, drop the rest (alerts,
** close_notify right before closing). */
static void flush_try (pl_conn *c) {
  if (c->woutlen > 0 && c->h != NULL && c->pending_writes == 0) {
    uv_buf_t buf = uv_buf_init(c->wout, (unsigned int)c->woutlen);
    (void)uv_try_write(c->h, &buf, 1);
  }
  c->woutlen = 0;
}

/* ---- reading ---- */

static int rbuf_reserve (pl_conn *c, size_t extra) {
  if (c->roff == c->rlen) c->roff = c->rlen = 0;
  if (c->rcap - c->rlen < extra) {
    size_t cap = c->rlen + extra;
    char *nb;
    if (c->roff > 0) {   /* compact first */
      memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
      c->rlen -= c->roff;
      c->roff = 0;
      if (c->rcap - c->rlen >= extra) return 0;
      cap = c->rlen + extra;
    }
    nb = (char *)realloc(c->rbuf, cap);
    if (nb == NULL) return UV_ENOMEM;
    c->rbuf = nb;
    c->rcap = cap;
  }
  return 0;
}

static void rbuf_trim (pl_conn *c) {
  if (c->roff == c->rlen) {   /* idle connections keep no buffer */
    free(c->rbuf);
    c->rbuf = NULL;
    c->roff = c->rlen = c->rcap = 0;
  }
}

/* Decrypts everything the BIO holds into rbuf. */
static void tls_pump (pl_conn *c) {
  for (;;) {
    int n, e;
    /* nothing new to decrypt: an SSL_read now would only set up (and free
    ** again) a 16 KB record buffer to learn it must wait */
    if (c->inlen == 0 && !SSL_has_pending(c->ssl)) break;
    if (rbuf_reserve(c, TLS_CHUNK) != 0) { c->rerr = UV_ENOMEM; break; }
    ERR_clear_error();
    n = SSL_read(c->ssl, c->rbuf + c->rlen, (int)(c->rcap - c->rlen));
    if (n > 0) { c->rlen += (size_t)n; continue; }
    e = SSL_get_error(c->ssl, n);
    if (e == SSL_ERROR_WANT_READ) break;
    if (e == SSL_ERROR_ZERO_RETURN) { c->eof = 1; break; }
    if (c->eof) break;   /* EOF without close_notify: a plain EOF */
    if (c->tlserr == NULL) c->tlserr = (char *)malloc(TLSERR_LEN);
    if (c->tlserr != NULL) {
      pl_ssl_errstr(c->tlserr, TLSERR_LEN);
      if (c->tlserr[0] == '\0') snprintf(c->tlserr, TLSERR_LEN, "TLS error");
    }
    c->rerr = UV_EPROTO;
    break;
  }
  c->inlen = 0;
  c->in = NULL;
  rbuf_trim(c);
  ERR_clear_error();
  if (flush_out(c) != 0 && c->rerr == 0) c->rerr = UV_EPIPE;
}

static void alloc_cb (uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  size_t len;
  (void)hint;
  buf->base = pl_readbuf(h->loop, &len);
  buf->len = len;
}

static void hs_input (pl_conn *c);
static void hs_reject (pl_conn *c, const char *reason, const char *msg, int handshake);

static void read_cb (uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  pl_conn *c = (pl_conn *)s->data;
  if (c == NULL || nread == 0) return;
  if (nread < 0) {
    if (nread == UV_EOF) c->eof = 1; else c->rerr = (int)nread;
    uv_read_stop(s);
    c->reading = 0;
    if (c->phase == PH_HANDSHAKE) {
      char msg[256];
      const char *reason;
      if (c->eof) reason = pl_tls_handshake_failure(c->ssl, SSL_ERROR_SYSCALL, msg, sizeof(msg));
      else {
        snprintf(msg, sizeof(msg), "read: %s", uv_strerror(c->rerr));
        reason = "handshake";
      }
      hs_reject(c, reason, msg, 1);
      return;
    }
    if (c->phase == PH_CHECKING) return;   /* seen when the check finishes */
    if (c->ssl != NULL && c->eof) tls_pump(c);
    pl_wake(c->loop, &c->rw, PL_DONE);
    return;
  }
  if (c->ssl != NULL) {
    c->in = buf->base;
    c->inlen = (size_t)nread;
    if (c->phase == PH_HANDSHAKE) { hs_input(c); return; }
    tls_pump(c);
    if (c->phase != PH_OPEN) return;
  }
  else {
    if (rbuf_reserve(c, (size_t)nread) != 0) c->rerr = UV_ENOMEM;
    else {
      memcpy(c->rbuf + c->rlen, buf->base, (size_t)nread);
      c->rlen += (size_t)nread;
    }
  }
  /* keep reading between read() calls (no epoll_ctl per call) until
  ** READ_HIGH bytes wait unread */
  if (c->rlen - c->roff >= READ_HIGH || c->eof || c->rerr) {
    uv_read_stop(s);
    c->reading = 0;
  }
  if (c->rlen > c->roff || c->eof || c->rerr)
    pl_wake(c->loop, &c->rw, PL_DONE);   /* last: may run Lua */
}

/* ---- TLS handshake ---- */

static void group_incr_rejected (lua_State *L, pl_group *g, const char *reason) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, g->rejected_ref);
  if (lua_istable(L, -1)) {
    lua_Integer n;
    lua_getfield(L, -1, reason);
    n = lua_tointeger(L, -1);
    lua_pop(L, 1);
    lua_pushinteger(L, n + 1);
    lua_setfield(L, -2, reason);
  }
  lua_pop(L, 1);
}

/* Routes the policy's pending warnings to the group's logger. */
static void route_pending_logs (lua_State *L, pl_group *g, pl_tls *t) {
  int i, n;
  pl_tls_push_pending_logs(L, t);
  if (!lua_istable(L, -1)) { lua_pop(L, 1); return; }
  n = (int)luaL_len(L, -1);
  for (i = 1; i <= n; i++) {
    const char *level, *msg;
    lua_rawgeti(L, -1, i);                    /* logs e */
    lua_getfield(L, -1, "level");
    lua_getfield(L, -2, "msg");
    level = lua_tostring(L, -2);
    msg = lua_tostring(L, -1);
    lua_pushnil(L);                           /* e's other keys are the fields */
    lua_setfield(L, -4, "level");
    lua_pushnil(L);
    lua_setfield(L, -4, "msg");
    lua_pushvalue(L, -3);                     /* logs e level msg e */
    pl_log(L, g ? g->logger_ref : LUA_NOREF, level ? level : "warn", msg ? msg : "");
    lua_pop(L, 3);
  }
  lua_pop(L, 1);
}

/* Logs etcd's "rejected connection" warning, counts it, closes c. */
static void hs_reject (pl_conn *c, const char *reason, const char *msg, int handshake) {
  pl_group *g = c->g;
  lua_State *L = pl_mainthread(c->loop);
  flush_try(c);   /* alerts */
  if (g != NULL) {
    const char *sni = c->ssl ? SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name) : NULL;
    pl_tls *t = c->tls;
    if (handshake) g->handshake_failures++;
    lua_checkstack(L, 8);
    group_incr_rejected(L, g, reason);
    lua_createtable(L, 0, 7);
    if (c->is_unix) lua_pushstring(L, "@");
    else if (strchr(peer_name(c), ':')) lua_pushfstring(L, "[%s]:%d", c->peer, c->peer_port);
    else lua_pushfstring(L, "%s:%d", c->peer, c->peer_port);
    lua_setfield(L, -2, "remote-addr");
    lua_pushstring(L, sni ? sni : "");
    lua_setfield(L, -2, "server-name");
    if (c->ssl != NULL) {
      pl_tls_push_peer_names(L, c->ssl);
      lua_setfield(L, -3, "dns-names");
      lua_setfield(L, -2, "ip-addresses");
    }
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "error");
    lua_pushstring(L, reason);
    lua_setfield(L, -2, "reason");
    /* the listener stays anchored while c is handshaking; c is pinned */
    c->pinned = 1;
    pl_log(L, g->logger_ref, "warn", "rejected connection");
    if (c->g != NULL) route_pending_logs(L, c->g, t);
    c->pinned = 0;
  }
  pl_conn_discard(c);
}

static void hs_timeout_cb (uv_timer_t *t) {
  pl_conn *c = (pl_conn *)t->data;
  char msg[256];
  if (c == NULL) return;
  if (c->is_unix)
    snprintf(msg, sizeof(msg), "read unix %s->@: i/o timeout", c->g ? c->g->local : "");
  else
    snprintf(msg, sizeof(msg), strchr(peer_name(c), ':') ? "read tcp %s->[%s]:%d: i/o timeout"
                                                    : "read tcp %s->%s:%d: i/o timeout",
             c->g ? c->g->local : "", c->peer, c->peer_port);
  hs_reject(c, "timeout", msg, 1);
}

/* All checks passed: hand c to the listener. */
static void hs_accept (pl_conn *c) {
  pl_group *g = c->g;
  pl_tls *t = c->tls;
  lua_State *L = pl_mainthread(c->loop);
  if (c->hs_timer) {
    c->hs_timer->data = NULL;
    uv_close((uv_handle_t *)c->hs_timer, free_handle);
    c->hs_timer = NULL;
  }
  if (c->reading) { uv_read_stop(c->h); c->reading = 0; }
  if (g == NULL) { pl_conn_discard(c); return; }
  SSL_free_buffers(c->ssl);   /* an idle connection keeps no record buffers */
  c->pinned = 1;   /* while Lua runs the loggers */
  route_pending_logs(L, g, t);
  c->pinned = 0;
  if (c->g == NULL || c->h == NULL) { pl_conn_discard(c); return; }
  g->handshaking--;
  c->phase = PH_OPEN;
  g->accepted++;
  if (g->on_change) g->on_change(g);
  g->on_ready(g, c);   /* last */
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
  if (reason != NULL) hs_reject(c, reason, msg, 0);
  else hs_accept(c);
}

/* The handshake completed: run the post-handshake checks. */
static void hs_done (pl_conn *c) {
  const char *ip = c->is_unix ? NULL : peer_name(c);
  tls_pump(c);   /* early application data stays buffered */
  c->phase = PH_CHECKING;
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
  {
    char msg[512];
    const char *reason;
    msg[0] = '\0';
    reason = pl_tls_post_check(c->tls, c->ssl, ip, msg, sizeof(msg));
    if (reason != NULL) hs_reject(c, reason, msg, 0);
    else hs_accept(c);
  }
}

static void hs_input (pl_conn *c) {
  int r, e;
  ERR_clear_error();
  r = SSL_do_handshake(c->ssl);
  if (r == 1) {
    if (flush_out(c) != 0) { hs_reject(c, "handshake", "write: broken pipe", 1); return; }
    hs_done(c);
    return;
  }
  e = SSL_get_error(c->ssl, r);
  if (e == SSL_ERROR_WANT_READ) {
    c->in = NULL;
    c->inlen = 0;
    if (flush_out(c) != 0) hs_reject(c, "handshake", "write: broken pipe", 1);
    return;
  }
  {
    char msg[256];
    const char *reason = pl_tls_handshake_failure(c->ssl, e, msg, sizeof(msg));
    ERR_clear_error();
    c->in = NULL;
    c->inlen = 0;
    hs_reject(c, reason, msg, 1);
  }
}

/* ---- starting a connection ---- */

/* The remote IP as text: formatted from the raw address on first use (most
** plain connections never ask). */
static const char *peer_name (pl_conn *c) {
  if (c->peer_raw) {
    struct sockaddr_in6 sa;   /* large enough for either family */
    c->peer_raw = 0;
    memcpy(&sa, c->peer, sizeof(sa));
    if (sa.sin6_family == AF_INET6) {
      uv_ip6_name(&sa, c->peer, sizeof(c->peer));
      if (strncmp(c->peer, "::ffff:", 7) == 0 && strchr(c->peer + 7, '.'))
        memmove(c->peer, c->peer + 7, strlen(c->peer + 7) + 1);
    }
    else uv_ip4_name((struct sockaddr_in *)&sa, c->peer, sizeof(c->peer));
  }
  return c->peer;
}

void pl_conn_start (pl_group *g, uv_stream_t *h) {
  pl_conn *c = (pl_conn *)calloc(1, sizeof(pl_conn));
  if (c == NULL) {
    h->data = NULL;
    uv_close((uv_handle_t *)h, free_handle);
    return;
  }
  c->h = h;
  h->data = c;
  c->loop = h->loop;
  c->is_unix = g->is_unix;
  c->rto = g->read_timeout;
  c->wto = g->write_timeout;
  c->phase = PH_OPEN;
  pl_waiter_init(&c->rw);
  pl_waiter_init(&c->ww);
  if (c->is_unix) { c->peer[0] = '@'; c->peer[1] = '\0'; }
  else {
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getpeername((uv_tcp_t *)h, (struct sockaddr *)&ss, &len) == 0) {
      if (ss.ss_family == AF_INET6) {
        c->peer_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        memcpy(c->peer, &ss, sizeof(struct sockaddr_in6));
        c->peer_raw = 1;
      }
      else if (ss.ss_family == AF_INET) {
        c->peer_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        memcpy(c->peer, &ss, sizeof(struct sockaddr_in));
        c->peer_raw = 1;
      }
    }
    if (g->tls != NULL) peer_name(c);   /* the handshake checks and logs use it */
  }
  /* link into the group */
  c->g = g;
  c->next = g->head;
  if (g->head) g->head->prev = c;
  g->head = c;
  g->active++;
  if (g->tls == NULL) {
    g->accepted++;
    g->on_ready(g, c);
    return;
  }
  /* TLS: handshake on the loop under one deadline */
  {
    char err[256];
    BIO *bio;
    c->phase = PH_HANDSHAKE;
    c->tls = pl_tls_retain(g->tls);
    g->handshaking++;
    if (g->on_change) g->on_change(g);
    err[0] = '\0';
    c->ssl = pl_tls_new_ssl(c->tls, err, sizeof(err));
    if (c->ssl == NULL) {
      g->handshaking--;   /* counted again by group_unlink otherwise */
      c->phase = PH_OPEN;
      hs_reject(c, "handshake", err[0] ? err : "cannot create TLS session", 1);
      return;
    }
    {
      BIO_METHOD *m = bio_method_get();
      bio = m ? BIO_new(m) : NULL;
    }
    if (bio == NULL) {
      hs_reject(c, "handshake", "cannot create TLS BIO", 1);
      return;
    }
    BIO_set_data(bio, c);
    SSL_set_bio(c->ssl, bio, bio);
    SSL_set_accept_state(c->ssl);
    c->hs_timer = (uv_timer_t *)malloc(sizeof(uv_timer_t));
    if (c->hs_timer != NULL) {
      uv_timer_init(c->loop, c->hs_timer);
      uv_update_time(c->loop);
      c->hs_timer->data = c;
      uv_timer_start(c->hs_timer, hs_timeout_cb,
                     (uint64_t)(pl_tls_handshake_timeout(c->tls) * 1000.0 + 0.5), 0);
    }
    if (uv_read_start(h, alloc_cb, read_cb) == 0) c->reading = 1;
    else hs_reject(c, "handshake", "read: cannot start reading", 1);
  }
}

/* ---- the Conn userdata ---- */

/***
An accepted connection, plain or TLS.
@type peerlisten.Conn
*/

static const char conn_mt_key = 'C';   /* registry: the Conn metatable */

/* Every Conn method and metamethod has the metatable as upvalue 1: checking
** against it saves luaL_checkudata's look-up by name (several per request). */
static conn_ud *conn_check (lua_State *L, int idx) {
  void *p = lua_touserdata(L, idx);
  if (p != NULL && lua_getmetatable(L, idx)) {
    int same = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (same) return (conn_ud *)p;
  }
  return (conn_ud *)luaL_checkudata(L, idx, PL_CONN_MT);   /* raises */
}

/* A connection the user did not close (it may have been closed under them). */
static pl_conn *conn_checkopen (lua_State *L, int idx) {
  conn_ud *u = conn_check(L, idx);
  if (u->c == NULL || u->c->user_closed)
    luaL_error(L, "attempt to use a closed connection");
  return u->c;
}

void pl_conn_push (lua_State *L, pl_conn *c) {
  conn_ud *u = (conn_ud *)lua_newuserdatauv(L, sizeof(conn_ud), 0);
  u->c = NULL;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &conn_mt_key);
  lua_setmetatable(L, -2);
  u->c = c;
  c->has_ud = 1;
}

/* The one release path: closes once, returns 1; 0 if already closed. */
static int conn_release (lua_State *L, conn_ud *u) {
  pl_conn *c = u->c;
  (void)L;
  if (c == NULL || c->user_closed) return 0;
  c->user_closed = 1;
  conn_close_handle(c, 1);
  /* nothing uses the TLS state of a closed connection: free it now, not
  ** when Lua collects the Conn (about 14 KB per connection) */
  if (c->ssl != NULL && !c->work_pending && !c->pinned) {
    SSL_free(c->ssl);
    c->ssl = NULL;
  }
  free(c->wout);
  c->wout = NULL;
  c->woutlen = c->woutcap = 0;
  return 1;
}

static int conn__gc (lua_State *L) {
  conn_ud *u = conn_check(L, 1);
  pl_conn *c = u->c;
  conn_release(L, u);
  if (c != NULL) {
    u->c = NULL;
    c->has_ud = 0;
    conn_free_maybe(c);
  }
  return 0;
}

/***
Closes the connection (TLS: close_notify, best effort).  Idempotent.
@function close
@treturn boolean true
*/
static int conn_close (lua_State *L) {
  conn_release(L, conn_check(L, 1));
  lua_pushboolean(L, 1);
  return 1;
}

static int timeout_arg (lua_State *L, int idx, double dflt, double *out) {
  if (lua_isnoneornil(L, idx)) { *out = dflt; return 0; }
  *out = luaL_checknumber(L, idx);
  luaL_argcheck(L, *out >= 0, idx, "negative timeout");
  return 0;
}

/* Pushes up to max buffered bytes (1 result) or the end/error triple. */
static int read_deliver (lua_State *L, pl_conn *c, size_t max) {
  if (c->rlen > c->roff) {
    size_t n = c->rlen - c->roff;
    if (n > max) n = max;
    lua_pushlstring(L, c->rbuf + c->roff, n);
    c->roff += n;
    rbuf_trim(c);
    return 1;
  }
  if (c->rerr != 0) {
    if (c->rerr == UV_EPROTO && c->tlserr != NULL && c->tlserr[0])
      return pl_fail(L, "EPROTO", "read: %s", c->tlserr);
    return pl_uverror(L, "read", c->rerr);
  }
  if (c->eof) return pl_fail(L, "EOF", "EOF");
  if (c->h == NULL) return pl_fail(L, "ECLOSED", "use of closed network connection");
  return -1;
}

static int conn_read_k (lua_State *L, int status, lua_KContext ctx) {
  pl_conn *c = ((conn_ud *)lua_touserdata(L, 1))->c;   /* checked by conn_read */
  int n;
  (void)status;
  if (c == NULL) return pl_fail(L, "ECLOSED", "use of closed network connection");
  if (c->rw.state == PL_TIMEDOUT && c->rlen == c->roff) {
    c->rw.state = PL_IDLE;
    if (c->reading && c->h) { uv_read_stop(c->h); c->reading = 0; }
    return pl_fail(L, "ETIMEDOUT", "timeout");
  }
  c->rw.state = PL_IDLE;
  n = read_deliver(L, c, (size_t)ctx);
  if (n < 0) return pl_fail(L, "ECLOSED", "use of closed network connection");
  return n;
}

/* conn:read([max [, timeout]]) -> string | nil, msg, code */
/***
Reads what arrived, at most `max` bytes; waits (yields in a coroutine)
until something arrives or the deadline passes.
@function read
@tparam[opt=65536] integer max
@tparam[opt] number timeout seconds (default: the listener's read_timeout; 0: none)
@treturn[1] string
@treturn[2] nil
@treturn[2] string "EOF", "timeout", ...
@treturn[2] string "EOF", "ETIMEDOUT", "ECLOSED", a libuv code
*/
static int conn_read (lua_State *L) {
  pl_conn *c = conn_checkopen(L, 1);
  lua_Integer max = luaL_optinteger(L, 2, 65536);
  double timeout;
  int n, r;
  luaL_argcheck(L, max > 0, 2, "max must be positive");
  timeout_arg(L, 3, c->rto, &timeout);
  lua_settop(L, 1);
  n = read_deliver(L, c, (size_t)max);
  if (n >= 0) return n;
  if (!c->reading) {
    r = uv_read_start(c->h, alloc_cb, read_cb);
    if (r != 0) return pl_uverror(L, "read", r);
    c->reading = 1;
  }
  return pl_wait(L, &c->rw, timeout, conn_read_k, (lua_KContext)max);
}

static int conn_write_k (lua_State *L, int status, lua_KContext ctx) {
  pl_conn *c = ((conn_ud *)lua_touserdata(L, 1))->c;   /* checked by conn_write */
  int st;
  (void)status; (void)ctx;
  if (c == NULL) return pl_fail(L, "ECLOSED", "use of closed network connection");
  st = c->ww.state;
  c->ww.state = PL_IDLE;
  if (c->werr != 0) return pl_uverror(L, "write", c->werr);
  if (st == PL_TIMEDOUT && c->pending_writes > 0) return pl_fail(L, "ETIMEDOUT", "timeout");
  if (st == PL_CLOSED || c->h == NULL)
    return pl_fail(L, "ECLOSED", "use of closed network connection");
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:write(data [, timeout]) -> true | nil, msg, code  (all of data or an error) */
/***
Writes all of `data`.
@function write
@tparam string data
@tparam[opt] number timeout seconds (default: the listener's write_timeout; 0: none)
@treturn[1] boolean true
@treturn[2] nil
@treturn[2] string
@treturn[2] string "ETIMEDOUT", "ECLOSED", "EPIPE", ...
*/
static int conn_write (lua_State *L) {
  pl_conn *c = conn_checkopen(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  double timeout;
  int r;
  timeout_arg(L, 3, c->wto, &timeout);
  if (c->h == NULL) return pl_fail(L, "ECLOSED", "use of closed network connection");
  if (c->werr != 0) return pl_uverror(L, "write", c->werr);
  if (len == 0) { lua_pushboolean(L, 1); return 1; }
  if (c->ssl != NULL) {
    size_t off = 0;
    while (off < len) {
      int chunk = len - off > (1u << 30) ? (1 << 30) : (int)(len - off);
      int n;
      ERR_clear_error();
      n = SSL_write(c->ssl, data + off, chunk);
      if (n <= 0) {
        char msg[128];
        pl_ssl_errstr(msg, sizeof(msg));
        c->woutlen = 0;
        return pl_fail(L, "EPROTO", "write: %s", msg[0] ? msg : "TLS error");
      }
      off += (size_t)n;
    }
    r = flush_out(c);
  }
  else {
    size_t off = 0;
    char *copy;
    if (c->pending_writes == 0) {
      uv_buf_t buf = uv_buf_init((char *)data, (unsigned int)len);
      r = uv_try_write(c->h, &buf, 1);
      if (r >= 0) off = (size_t)r;
      else if (r != UV_EAGAIN) return pl_uverror(L, "write", r);
    }
    if (off == len) { lua_pushboolean(L, 1); return 1; }
    copy = (char *)malloc(len - off);
    if (copy == NULL) return pl_fail(L, "ENOMEM", "write: not enough memory");
    memcpy(copy, data + off, len - off);
    r = send_owned(c, copy, len - off);
  }
  if (r != 0) {
    c->werr = r;
    return pl_uverror(L, "write", r);
  }
  if (c->pending_writes == 0) { lua_pushboolean(L, 1); return 1; }
  lua_settop(L, 1);
  return pl_wait(L, &c->ww, timeout, conn_write_k, 0);
}

/* conn:peer() -> ip, port  ("@" for unix peers) */
/***
@function peer
@treturn string remote IP ("@" for unix peers)
@treturn[opt] integer remote port
*/
static int conn_peer (lua_State *L) {
  pl_conn *c = conn_checkopen(L, 1);
  lua_pushstring(L, peer_name(c));
  if (c->is_unix) return 1;
  lua_pushinteger(L, c->peer_port);
  return 2;
}

/* conn:tls_info() -> table | nil for plain connections */
/***
@function tls_info
@treturn[opt] table version, cipher, alpn, peer_cert (nil for plain connections)
*/
static int conn_tls_info (lua_State *L) {
  pl_conn *c = conn_checkopen(L, 1);
  if (c->ssl == NULL) { lua_pushnil(L); return 1; }
  pl_tls_push_info(L, c->ssl);
  return 1;
}

static int conn__tostring (lua_State *L) {
  conn_ud *u = conn_check(L, 1);
  pl_conn *c = u->c;
  if (c == NULL || c->user_closed || c->h == NULL)
    lua_pushliteral(L, "peerlisten.Conn (closed)");
  else if (c->is_unix)
    lua_pushfstring(L, "peerlisten.Conn (%s @)", c->ssl ? "unixs" : "unix");
  else
    lua_pushfstring(L, strchr(peer_name(c), ':') ? "peerlisten.Conn (%s [%s]:%d)"
                                            : "peerlisten.Conn (%s %s:%d)",
                    c->ssl ? "tls" : "tcp", c->peer, c->peer_port);
  return 1;
}

static int conn__close (lua_State *L) {
  conn_release(L, conn_check(L, 1));
  return 0;
}

static const luaL_Reg conn_methods[] = {
  {"read", conn_read},
  {"write", conn_write},
  {"close", conn_close},
  {"peer", conn_peer},
  {"tls_info", conn_tls_info},
  {NULL, NULL}
};

static const luaL_Reg conn_meta[] = {
  {"__gc", conn__gc},
  {"__close", conn__close},
  {"__tostring", conn__tostring},
  {"__index", NULL},
  {NULL, NULL}
};

int pl_open_conn (lua_State *L) {
  luaL_newmetatable(L, PL_CONN_MT);           /* mt */
  lua_pushvalue(L, -1);
  luaL_setfuncs(L, conn_meta, 1);
  luaL_newlibtable(L, conn_methods);          /* mt methods */
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, conn_methods, 1);
  lua_setfield(L, -2, "__index");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &conn_mt_key);
  return 0;
}
