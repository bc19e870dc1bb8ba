/*
** conn.c: connections (peerlisten.Conn), accepted or dialled, plain or TLS
** (tls_stream.c): their lifecycle, the group bookkeeping of a listener's
** connections, plain reads and writes, and the Conn userdata.  The C state
** (conn.h's pl_conn) is malloc'ed and owned by its listener's pl_group until
** the handshake and checks passed; then a Conn userdata owns it.
*/

/***
The C core (private: applications `require "peerlisten"`); its userdata
types are what the Lua API hands out.
@module peerlisten.core
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"

#define READ_HIGH (64 * 1024)   /* stop reading when this much waits unread */
/* a uv_buf_t's length is an unsigned int: longer data goes in pieces */
#define BUF_MAX ((size_t)1 << 30)

typedef struct conn_ud {
  pl_conn *c;              /* NULL after __gc */
} conn_ud;

/* One queued write: data is either malloc'ed (TLS output) or a Lua string
** kept alive by a registry ref until libuv is done with it. */
typedef struct wreq {
  uv_write_t req;
  char *data;
  int ref;
} wreq;

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

void pl_conn_free_maybe (pl_conn *c) {
  if (c->h != NULL || c->has_ud || c->work_pending || c->pinned) return;
  if (c->ssl) SSL_free(c->ssl);
  pl_tls_release(c->tls);
  free(c->rbuf);
  free(c->wout);
  free(c->tlserr);
  free(c->dial);
  free(c);
}

/* Closes the socket (idempotent): wakes waiters (deferred), leaves the group. */
static void conn_close_handle (pl_conn *c, int graceful) {
  if (c->h == NULL) return;
  if (graceful && c->ssl != NULL && c->phase == PH_OPEN && c->werr == 0)
    pl_ts_shutdown(c);   /* close_notify, sent if the socket takes it now */
  pl_ts_stop_timer(c);
  pl_waiter_cancel(c->loop, &c->rw);
  pl_waiter_cancel(c->loop, &c->ww);
  pl_close_handle((uv_handle_t *)c->h);
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
  pl_conn_free_maybe(c);
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
  if (w->ref != LUA_NOREF)
    luaL_unref(pl_mainthread(req->handle->loop), LUA_REGISTRYINDEX, w->ref);
  free(w);
  if (c == NULL) return;
  c->pending_writes--;
  if (status < 0 && c->werr == 0) c->werr = status;
  if (c->pending_writes == 0 || c->werr != 0)
    pl_wake(c->loop, &c->ww, PL_DONE);   /* last: may run Lua */
}

/* Writes what the socket takes now of the first piece; returns the count or
** a libuv error (UV_EAGAIN: nothing). */
static int try_write (pl_conn *c, const char *data, size_t len) {
  uv_buf_t buf = uv_buf_init((char *)data, (unsigned int)(len < BUF_MAX ? len : BUF_MAX));
  int r = uv_try_write(c->h, &buf, 1);
  return r == UV_ENOSYS ? UV_EAGAIN : r;
}

/* Queues len bytes at data as one write request w, in pieces of at most
** BUF_MAX bytes.  Returns 0 or a libuv error (w untouched then). */
static int queue_write (pl_conn *c, wreq *w, const char *data, size_t len) {
  uv_buf_t few[8], *bufs = few;
  size_t n = (len + BUF_MAX - 1) / BUF_MAX, i;
  int r, heap = n > sizeof(few) / sizeof(few[0]);
  memset(few, 0, sizeof(few));
  if (heap) {
    bufs = (uv_buf_t *)malloc(n * sizeof(uv_buf_t));
    if (bufs == NULL) return UV_ENOMEM;
  }
  for (i = 0; i < n; i++) {
    size_t piece = len - i * BUF_MAX < BUF_MAX ? len - i * BUF_MAX : BUF_MAX;
    bufs[i] = uv_buf_init((char *)data + i * BUF_MAX, (unsigned int)piece);
  }
  r = uv_write(&w->req, c->h, bufs, (unsigned int)n, write_cb);   /* copies bufs */
  if (heap) free(bufs);
  if (r == 0) c->pending_writes++;
  return r;
}

int pl_conn_send_owned (pl_conn *c, char *data, size_t len) {
  size_t off = 0;
  wreq *w;
  int r;
  if (c->pending_writes == 0) {
    r = try_write(c, data, len);
    if (r >= 0) off = (size_t)r;
    else if (r != UV_EAGAIN) { free(data); return r; }
  }
  if (off == len) { free(data); return 0; }
  w = (wreq *)malloc(sizeof(wreq));
  if (w == NULL) { free(data); return UV_ENOMEM; }
  w->data = data;
  w->ref = LUA_NOREF;
  r = queue_write(c, w, data + off, len - off);
  if (r < 0) { free(data); free(w); }
  return r;
}

/* Writes the Lua string at index idx (len bytes at data): what the socket
** does not take now is queued without a copy, the string anchored.  Returns
** 0 or a libuv error. */
static int send_lua (lua_State *L, pl_conn *c, int idx, const char *data, size_t len) {
  size_t off = 0;
  wreq *w;
  int r;
  if (c->pending_writes == 0) {
    r = try_write(c, data, len);
    if (r >= 0) off = (size_t)r;
    else if (r != UV_EAGAIN) return r;
  }
  if (off == len) return 0;
  w = (wreq *)malloc(sizeof(wreq));
  if (w == NULL) return UV_ENOMEM;
  w->data = NULL;
  lua_pushvalue(L, idx);
  w->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  r = queue_write(c, w, data + off, len - off);
  if (r < 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, w->ref);
    free(w);
    c->werr = r;   /* part of the data may have gone out */
  }
  return r;
}

/* ---- reading ---- */

int pl_conn_rbuf_reserve (pl_conn *c, size_t extra) {
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

void pl_conn_rbuf_trim (pl_conn *c) {
  if (c->roff == c->rlen) {   /* idle connections keep no buffer */
    free(c->rbuf);
    c->rbuf = NULL;
    c->roff = c->rlen = c->rcap = 0;
  }
}

static void alloc_cb (uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  size_t len;
  (void)hint;
  buf->base = pl_readbuf(h->loop, &len);
  buf->len = len;
}

static void read_cb (uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  pl_conn *c = (pl_conn *)s->data;
  if (c == NULL || nread == 0) return;
  if (nread < 0) {
    if (nread == UV_EOF) c->eof = 1; else c->rerr = (int)nread;
    uv_read_stop(s);
    c->reading = 0;
    if (c->phase == PH_HANDSHAKE) { pl_ts_input_end(c); return; }
    if (c->phase == PH_CHECKING) return;   /* seen when the check finishes */
    if (c->ssl != NULL && c->eof) pl_ts_pump(c);
    pl_wake(c->loop, &c->rw, PL_DONE);
    return;
  }
  if (c->ssl != NULL) {
    if (c->phase == PH_HANDSHAKE) {   /* c may be gone afterwards */
      pl_ts_input(c, buf->base, (size_t)nread);
      return;
    }
    pl_ts_input(c, buf->base, (size_t)nread);
    if (c->phase != PH_OPEN) return;
  }
  else {
    if (pl_conn_rbuf_reserve(c, (size_t)nread) != 0) c->rerr = UV_ENOMEM;
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

int pl_conn_read_start (pl_conn *c) {
  int r;
  if (c->reading) return 0;
  r = uv_read_start(c->h, alloc_cb, read_cb);
  if (r == 0) c->reading = 1;
  return r;
}

/* ---- the end of a TLS handshake ---- */

/* Tells the listener why c was refused, then closes c. */
static void conn_reject (pl_conn *c, const char *reason, const char *msg, int handshake) {
  pl_group *g = c->g;
  pl_ts_flush_try(c);   /* alerts */
  if (g != NULL && g->on_reject != NULL) {
    c->pinned = 1;   /* the listener's logger runs Lua */
    g->on_reject(g, c, reason, msg, handshake);
    c->pinned = 0;
  }
  pl_conn_discard(c);
}

/* All checks passed: hand c to the listener. */
static void conn_verified (pl_conn *c) {
  pl_group *g = c->g;
  pl_ts_stop_timer(c);
  if (c->reading) { uv_read_stop(c->h); c->reading = 0; }
  if (g == NULL) { pl_conn_discard(c); return; }
  SSL_free_buffers(c->ssl);   /* an idle connection keeps no record buffers */
  if (g->on_verified != NULL) {
    c->pinned = 1;
    g->on_verified(g, c);
    c->pinned = 0;
  }
  if (c->g == NULL || c->h == NULL) { pl_conn_discard(c); return; }
  g->handshaking--;
  c->phase = PH_OPEN;
  if (g->on_change) g->on_change(g);
  g->on_ready(g, c);   /* last */
}

void pl_conn_hs_end (pl_conn *c, const char *reason, const char *msg, int handshake) {
  if (c->dial != NULL) pl_dial_hs_end(c, reason, msg);
  else if (reason != NULL) conn_reject(c, reason, msg, handshake);
  else conn_verified(c);
}

void pl_conn_hs_timeout (pl_conn *c) {
  char msg[256];
  const char *local = c->g ? c->g->local : "";
  if (c->is_unix)
    snprintf(msg, sizeof(msg), "read unix %s->@: i/o timeout", local);
  else
    snprintf(msg, sizeof(msg), strchr(pl_conn_peer_name(c), ':')
             ? "read tcp %s->[%s]:%d: i/o timeout" : "read tcp %s->%s:%d: i/o timeout",
             local, c->peer, c->peer_port);
  conn_reject(c, "timeout", msg, 1);
}

/* ---- starting a connection ---- */

/* The remote IP as text: formatted from the raw address on first use (most
** plain connections never ask). */
const char *pl_conn_peer_name (pl_conn *c) {
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

void pl_conn_remote (pl_conn *c, char *buf, size_t len) {
  if (c->is_unix) snprintf(buf, len, "@");
  else if (strchr(pl_conn_peer_name(c), ':')) snprintf(buf, len, "[%s]:%d", c->peer, c->peer_port);
  else snprintf(buf, len, "%s:%d", c->peer, c->peer_port);
}

SSL *pl_conn_ssl (pl_conn *c) {
  return c->ssl;
}

pl_conn *pl_conn_new (uv_stream_t *h, int is_unix) {
  pl_conn *c = (pl_conn *)calloc(1, sizeof(pl_conn));
  if (c == NULL) return NULL;
  c->h = h;
  h->data = c;
  c->loop = h->loop;
  c->is_unix = (unsigned char)(is_unix != 0);
  c->phase = PH_OPEN;
  pl_waiter_init(&c->rw);
  pl_waiter_init(&c->ww);
  if (c->is_unix) { c->peer[0] = '@'; c->peer[1] = '\0'; }
  return c;
}

void pl_conn_set_peer (pl_conn *c) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  if (c->is_unix || uv_tcp_getpeername((uv_tcp_t *)c->h, (struct sockaddr *)&ss, &len) != 0)
    return;
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

void pl_conn_start (pl_group *g, uv_stream_t *h) {
  pl_conn *c = pl_conn_new(h, g->is_unix);
  char err[256];
  const char *e;
  SSL *ssl;
  if (c == NULL) {
    pl_close_handle((uv_handle_t *)h);
    return;
  }
  c->rto = g->read_timeout;
  c->wto = g->write_timeout;
  pl_conn_set_peer(c);
  if (g->tls != NULL && !c->is_unix) pl_conn_peer_name(c);   /* the checks and logs use it */
  /* link into the group */
  c->g = g;
  c->next = g->head;
  if (g->head) g->head->prev = c;
  g->head = c;
  g->active++;
  if (g->tls == NULL) {
    g->on_ready(g, c);
    return;
  }
  /* TLS: handshake on the loop under one deadline */
  c->phase = PH_HANDSHAKE;
  c->tls = pl_tls_retain(g->tls);
  g->handshaking++;
  if (g->on_change) g->on_change(g);
  err[0] = '\0';
  ssl = pl_tls_new_ssl(c->tls, err, sizeof(err));
  if (ssl == NULL) {
    g->handshaking--;   /* counted again by group_unlink otherwise */
    c->phase = PH_OPEN;
    conn_reject(c, "handshake", err[0] ? err : "cannot create TLS session", 1);
    return;
  }
  e = pl_ts_start(c, ssl, 0, pl_tls_handshake_timeout(c->tls));
  if (e != NULL) conn_reject(c, "handshake", e, 1);
}

/* ---- the Conn userdata ---- */

/***
A connection, accepted (`listener:accept`) or dialled (`core.dial`), plain or TLS.
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
  pl_conn_attach(pl_conn_push_empty(L), c);
}

void *pl_conn_push_empty (lua_State *L) {
  conn_ud *u = (conn_ud *)lua_newuserdatauv(L, sizeof(conn_ud), 0);
  u->c = NULL;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &conn_mt_key);
  lua_setmetatable(L, -2);
  return u;
}

void pl_conn_attach (void *ud, pl_conn *c) {
  ((conn_ud *)ud)->c = c;
  c->has_ud = 1;
}

pl_conn *pl_conn_of (void *ud) {
  return ((conn_ud *)ud)->c;
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

void pl_conn_close_ud (void *ud) {
  conn_release(NULL, (conn_ud *)ud);
}

static int conn__gc (lua_State *L) {
  conn_ud *u = conn_check(L, 1);
  pl_conn *c = u->c;
  conn_release(L, u);
  if (c != NULL) {
    u->c = NULL;
    c->has_ud = 0;
    pl_conn_free_maybe(c);
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
    pl_conn_rbuf_trim(c);
    return 1;
  }
  if (c->rerr != 0) {
    if (c->rerr == UV_EPROTO && c->tlserr != NULL && c->tlserr[0])
      return pl_fail(L, c->peer_alert ? "EPEERREJECTED" : "EPROTO", "read: %s", c->tlserr);
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
  /* raise now, not after the data went out: a caller that retries after
  ** the error would send it twice */
  pl_wait_check(L, c->loop, &c->ww);
  if (c->ssl != NULL) {
    char msg[128];
    r = pl_ts_write(c, data, len, msg, sizeof(msg));
    if (r == -1) return pl_fail(L, "EPROTO", "write: %s", msg);
  }
  else {
    r = send_lua(L, c, 2, data, len);
    if (r != 0) return pl_uverror(L, "write", r);
  }
  if (r != 0) {
    c->werr = r;
    return pl_uverror(L, "write", r);
  }
  if (c->pending_writes == 0) { lua_pushboolean(L, 1); return 1; }
  lua_settop(L, 1);
  return pl_wait(L, &c->ww, timeout, conn_write_k, 0);
}

/***
@function peer
@treturn string remote IP ("@" for unix peers)
@treturn[opt] integer remote port
*/
static int conn_peer (lua_State *L) {
  pl_conn *c = conn_checkopen(L, 1);
  lua_pushstring(L, pl_conn_peer_name(c));
  if (c->is_unix) return 1;
  lua_pushinteger(L, c->peer_port);
  return 2;
}

/***
@function local_addr
@treturn string the local IP of a TCP connection ("@" for unix sockets)
@treturn[opt] integer the local port
*/
static int conn_local_addr (lua_State *L) {
  pl_conn *c = conn_checkopen(L, 1);
  struct sockaddr_storage ss;
  int len = (int)sizeof(ss), port = 0, r;
  char ip[INET6_ADDRSTRLEN];
  if (c->is_unix) { lua_pushliteral(L, "@"); return 1; }
  r = uv_tcp_getsockname((uv_tcp_t *)c->h, (struct sockaddr *)&ss, &len);
  if (r != 0) return pl_uverror(L, "getsockname", r);
  pl_sockaddr_name(&ss, ip, sizeof(ip), &port);
  lua_pushstring(L, ip);
  lua_pushinteger(L, port);
  return 2;
}

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
    lua_pushfstring(L, strchr(pl_conn_peer_name(c), ':') ? "peerlisten.Conn (%s [%s]:%d)"
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
  {"local_addr", conn_local_addr},
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
