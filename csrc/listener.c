/*
** listener.c: the peerlisten.Listener userdata over a bound TCP or unix
** socket (listen.c binds it): accept, serve (one coroutine per connection)
** and draining close; etcd's log line and the counters for refused TLS
** connections.
*/

/***
The C core (private: applications `require "peerlisten"`); its userdata
types are what the Lua API hands out.
@module peerlisten.core
*/
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include "listener.h"

const char pl_listener_selfs = 'W';   /* registry: weak table pointer -> userdata */

static listener *listener_check (lua_State *L, int idx) {
  return (listener *)luaL_checkudata(L, idx, PL_LISTENER_MT);
}

static listener *listener_checkopen (lua_State *L, int idx) {
  listener *l = listener_check(L, idx);
  if (l->released || l->h == NULL) luaL_error(L, "attempt to use a closed listener");
  return l;
}

/* ---- anchoring: while a callback may need to run Lua for us ---- */

static void anchor_update (listener *l) {
  lua_State *L = pl_mainthread(l->loop);
  int want = !l->released && (l->serving || l->g.handshaking > 0);
  if (want && l->anchor_ref == LUA_NOREF) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &pl_listener_selfs);
    lua_rawgetp(L, -1, l);
    if (lua_isuserdata(L, -1)) {
      l->anchor_ref = luaL_ref(L, LUA_REGISTRYINDEX);
      lua_pop(L, 1);
    }
    else lua_pop(L, 2);
  }
  else if (!want && l->anchor_ref != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, l->anchor_ref);
    l->anchor_ref = LUA_NOREF;
  }
}

/* The listening handle keeps run() going only while someone accepts. */
static void listener_ref_update (listener *l) {
  if (l->h == NULL) return;
  if (l->serving || l->aw.state == PL_WAITING) uv_ref((uv_handle_t *)l->h);
  else uv_unref((uv_handle_t *)l->h);
}

/* ---- accepting ---- */

static void group_on_change (pl_group *g) {
  listener *l = (listener *)g->owner;
  if (l->cw.state == PL_WAITING && g->active == 0)
    pl_wake_later(l->loop, &l->cw, PL_DONE);
  anchor_update(l);
}

/* Drops the parked serve coroutines (they are collected). */
static void park_drain (lua_State *L, listener *l) {
  while (l->npark > 0) {
    l->npark--;
    luaL_unref(L, LUA_REGISTRYINDEX, l->park_ref[l->npark]);
    l->park_co[l->npark] = NULL;
  }
}

static int serve_run (lua_State *L);

/* Resumed by group_on_ready with (l conn) after parking. */
static int serve_parked_k (lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  return serve_run(L);
}

/* Runs handler(conn) in the connection's coroutine; closes conn afterwards,
** then parks the coroutine for the next connection (up to PARK_MAX). */
static int serve_trampoline_k (lua_State *L, int status, lua_KContext ctx) {
  listener *l = (listener *)lua_touserdata(L, 1);
  (void)ctx;
  if (status != LUA_OK && status != LUA_YIELD) {   /* stack: l conn msgh err */
    lua_createtable(L, 0, 1);
    lua_insert(L, -2);
    lua_setfield(L, -2, "error");
    pl_log(L, l->released ? LUA_NOREF : l->logger_ref, "error",
           "connection handler failed");
  }
  lua_settop(L, 2);
  if (luaL_getmetafield(L, 2, "__close") != LUA_TNIL) {
    lua_pushvalue(L, 2);
    lua_call(L, 1, 0);
  }
  if (l->released || !l->serving || l->npark >= PARK_MAX) return 0;
  lua_settop(L, 0);   /* parked: holds nothing but itself */
  lua_pushthread(L);
  l->park_ref[l->npark] = luaL_ref(L, LUA_REGISTRYINDEX);
  l->park_co[l->npark] = L;
  l->npark++;
  return pl_park(L, serve_parked_k);
}

static int serve_run (lua_State *L) {          /* l conn */
  lua_settop(L, 2);
  lua_pushcfunction(L, pl_traceback);          /* l conn msgh */
  lua_getiuservalue(L, 1, UV_HANDLER);         /* l conn msgh handler */
  lua_pushvalue(L, 2);
  return serve_trampoline_k(L, lua_pcallk(L, 1, 0, 3, 0, serve_trampoline_k), 0);
}

static int serve_trampoline (lua_State *L) {   /* l conn */
  return serve_run(L);
}

static void group_on_ready (pl_group *g, pl_conn *c) {
  listener *l = (listener *)g->owner;
  l->accepted++;
  if (l->serving && l->anchor_ref != LUA_NOREF) {
    lua_State *L = pl_mainthread(l->loop);
    if (l->npark > 0) {   /* reuse a parked coroutine */
      int i = --l->npark;
      lua_State *co = l->park_co[i];
      l->park_co[i] = NULL;
      lua_checkstack(co, 4);
      lua_rawgeti(co, LUA_REGISTRYINDEX, l->anchor_ref);
      pl_conn_push(co, c);
      pl_resume_parked(l->loop, co, l->park_ref[i], 2);
      return;
    }
    lua_checkstack(L, 4);
    lua_pushcfunction(L, serve_trampoline);
    lua_rawgeti(L, LUA_REGISTRYINDEX, l->anchor_ref);
    pl_conn_push(L, c);
    pl_spawn(L, 2);
    return;
  }
  pl_group_push_ready(g, c);
  pl_wake(l->loop, &l->aw, PL_DONE);   /* last: may run Lua */
}

/* ---- what happens to TLS connections: etcd's log lines and our counters ---- */

/* Routes the policy's pending warnings (reload failures, stale CRL) to the
** listener's logger. */
static void route_pending_logs (lua_State *L, listener *l) {
  int i, n;
  if (l->released || l->g.tls == NULL) return;
  pl_tls_push_pending_logs(L, l->g.tls);
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
    pl_log(L, l->logger_ref, level ? level : "warn", msg ? msg : "");
    lua_pop(L, 3);
  }
  lua_pop(L, 1);
}

static void count_rejected (lua_State *L, listener *l, const char *reason) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, l->rejected_ref);
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

/* Logs etcd's "rejected connection" warning and counts it (the listener
** stays anchored while c handshakes; conn.c closes c afterwards). */
static void group_on_reject (pl_group *g, pl_conn *c, const char *reason,
                             const char *msg, int handshake) {
  listener *l = (listener *)g->owner;
  lua_State *L = pl_mainthread(l->loop);
  SSL *ssl = pl_conn_ssl(c);
  const char *sni = ssl ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : NULL;
  char remote[64];
  if (handshake) l->handshake_failures++;
  lua_checkstack(L, 8);
  count_rejected(L, l, reason);
  lua_createtable(L, 0, 7);
  pl_conn_remote(c, remote, sizeof(remote));
  lua_pushstring(L, remote);
  lua_setfield(L, -2, "remote-addr");
  lua_pushstring(L, sni ? sni : "");
  lua_setfield(L, -2, "server-name");
  if (ssl != NULL) {
    pl_tls_push_peer_names(L, ssl);
    lua_setfield(L, -3, "dns-names");
    lua_setfield(L, -2, "ip-addresses");
  }
  lua_pushstring(L, msg);
  lua_setfield(L, -2, "error");
  lua_pushstring(L, reason);
  lua_setfield(L, -2, "reason");
  pl_log(L, l->logger_ref, "warn", "rejected connection");
  route_pending_logs(L, l);
}

static void group_on_verified (pl_group *g, pl_conn *c) {
  listener *l = (listener *)g->owner;
  (void)c;
  route_pending_logs(pl_mainthread(l->loop), l);
}

/* Accepts one connection from libuv and starts it. */
static void do_accept (listener *l) {
  uv_stream_t *c;
  int r;
  if (l->scheme == PL_SCHEME_UNIX || l->scheme == PL_SCHEME_UNIXS) {
    c = (uv_stream_t *)malloc(sizeof(uv_pipe_t));
    if (c == NULL) return;
    uv_pipe_init(l->loop, (uv_pipe_t *)c, 0);
  }
  else {
    c = (uv_stream_t *)malloc(sizeof(uv_tcp_t));
    if (c == NULL) return;
    uv_tcp_init(l->loop, (uv_tcp_t *)c);
  }
  c->data = NULL;
  r = uv_accept(l->h, c);
  if (r != 0) {
    pl_close_handle((uv_handle_t *)c);
    return;
  }
  if ((l->scheme == PL_SCHEME_HTTP || l->scheme == PL_SCHEME_HTTPS) && l->sockopts != 1) {
    if (l->sockopts == -1 && pl_tcp_sockopts_inherited(c)) l->sockopts = 1;
    else {
      l->sockopts = 0;
      uv_tcp_nodelay((uv_tcp_t *)c, 1);
      uv_tcp_keepalive((uv_tcp_t *)c, 1, PL_KEEPALIVE_IDLE);
    }
  }
  pl_conn_start(&l->g, c);
}

void pl_listener_connection_cb (uv_stream_t *server, int status) {
  listener *l = (listener *)server->data;
  if (l == NULL) return;
  if (status < 0) {
    l->accept_err = status;
    pl_wake(l->loop, &l->aw, PL_DONE);
    return;
  }
  if (!l->serving && l->aw.state != PL_WAITING) {
    l->deferred = 1;   /* libuv stops polling until we accept */
    return;
  }
  do_accept(l);
}

/* ---- the one release path ---- */

static void remove_our_socket (listener *l) {
  if (l->path == NULL) return;
  pl_unix_remove_ours(l->path, l->sock_dev, l->sock_ino);
  free(l->path);
  l->path = NULL;
}

/* Stops listening (idempotent): closes the socket, removes our socket file,
** ends a pending accept, closes handshakes and queued connections. */
static void listener_stop (listener *l) {
  pl_close_handle((uv_handle_t *)l->h);
  l->h = NULL;
  remove_our_socket(l);
  l->serving = 0;
  l->deferred = 0;
  if (l->loop != NULL) park_drain(pl_mainthread(l->loop), l);
  if (l->loop != NULL) pl_waiter_cancel(l->loop, &l->aw);
  pl_group_close_pending(&l->g);   /* handshakes and queued connections */
}

int pl_listener_release (lua_State *L, listener *l, int collecting) {
  if (l->released) return 0;
  listener_stop(l);
  l->released = 1;
  pl_group_close_all(&l->g, collecting);
  if (l->loop != NULL) pl_waiter_cancel(l->loop, &l->cw);
  if (l->logger_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, l->logger_ref);
  if (l->rejected_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, l->rejected_ref);
  l->logger_ref = l->rejected_ref = LUA_NOREF;
  pl_tls_release(l->g.tls);
  l->g.tls = NULL;
  if (l->anchor_ref != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, l->anchor_ref);
    l->anchor_ref = LUA_NOREF;
  }
  return 1;
}

static int listener__gc (lua_State *L) {
  pl_listener_release(L, listener_check(L, 1), 1);
  return 0;
}

static int listener__close (lua_State *L) {
  pl_listener_release(L, listener_check(L, 1), 0);
  return 0;
}

static int close_k (lua_State *L, int status, lua_KContext ctx) {
  listener *l = listener_check(L, 1);
  (void)status; (void)ctx;
  /* a forced close() while another caller drains must not clear that
  ** caller's wait: release wakes it (it would hang forever) */
  if (l->cw.state != PL_WAITING) l->cw.state = PL_IDLE;
  pl_listener_release(L, l, 0);
  lua_pushboolean(L, 1);
  return 1;
}

/***
A listening socket (TCP or unix, plain or TLS), from `core.listen`.
@type peerlisten.Listener
*/

/***
Stops accepting at once, closes TLS handshakes in progress, lets open
connections finish for up to `timeout` seconds, then closes them.
Idempotent; inside a coroutine the wait yields.
@function close
@tparam[opt=0] number timeout seconds
@treturn boolean true
*/
static int listener_close (lua_State *L) {
  listener *l = listener_check(L, 1);
  double timeout = luaL_optnumber(L, 2, 0);
  luaL_argcheck(L, timeout >= 0, 2, "negative timeout");
  lua_settop(L, 1);
  if (l->released) { lua_pushboolean(L, 1); return 1; }
  listener_stop(l);
  if (timeout > 0 && l->g.active > 0 && l->cw.state != PL_WAITING)
    return pl_wait(L, &l->cw, timeout, close_k, 0);
  return close_k(L, LUA_OK, 0);
}

/* ---- methods ---- */

static int accept_k (lua_State *L, int status, lua_KContext ctx) {
  listener *l = listener_check(L, 1);
  pl_conn *c;
  int st = l->aw.state;
  (void)status; (void)ctx;
  if (st != PL_WAITING) l->aw.state = PL_IDLE;
  listener_ref_update(l);
  c = l->released ? NULL : pl_group_pop_ready(&l->g);
  if (c != NULL) {
    pl_conn_push(L, c);
    return 1;
  }
  if (l->accept_err != 0) {
    int e = l->accept_err;
    l->accept_err = 0;
    return pl_uverror(L, "accept", e);
  }
  if (st == PL_CLOSED || l->h == NULL)
    return pl_fail(L, "ECLOSED", "use of closed network connection");
  return pl_fail(L, "ETIMEDOUT", "timeout");
}

/***
Waits for the next connection (TLS: handshaken and checked).
@function accept
@tparam[opt] number timeout seconds; none waits forever, 0 polls
@treturn[1] peerlisten.Conn
@treturn[2] nil
@treturn[2] string "timeout" or "use of closed network connection"
@treturn[2] string "ETIMEDOUT" or "ECLOSED"
*/
static int listener_accept (lua_State *L) {
  listener *l = listener_checkopen(L, 1);
  double timeout = -1;
  if (!lua_isnoneornil(L, 2)) {
    timeout = luaL_checknumber(L, 2);
    luaL_argcheck(L, timeout >= 0, 2, "negative timeout");
  }
  lua_settop(L, 1);
  if (l->serving) return luaL_error(L, "listener is serving: accept is not available");
  if (l->g.ready_head == NULL && l->deferred) {
    l->deferred = 0;
    do_accept(l);
  }
  if (l->g.ready_head != NULL || l->accept_err != 0) return accept_k(L, LUA_OK, 0);
  if (timeout == 0) return pl_fail(L, "ETIMEDOUT", "timeout");
  pl_wait_check(L, l->loop, &l->aw);   /* a raise below would leave the handle ref'ed */
  if (l->h) uv_ref((uv_handle_t *)l->h);
  return pl_wait(L, &l->aw, timeout > 0 ? timeout : 0, accept_k, 0);
}

/***
Runs `handler(conn)` in a new coroutine for every connection and closes the
connection when the handler returns.  Errors are logged with a traceback.
Returns at once; run the loop with `peerlisten.run()`.
@function serve
@tparam function handler
@treturn peerlisten.Listener self
*/
static int listener_serve (lua_State *L) {
  listener *l = listener_checkopen(L, 1);
  pl_conn *c;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (l->serving) return luaL_error(L, "listener is already serving");
  if (l->aw.state == PL_WAITING) return luaL_error(L, "listener has a pending accept");
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, UV_HANDLER);
  l->serving = 1;
  listener_ref_update(l);
  anchor_update(l);
  while (l->serving && (c = pl_group_pop_ready(&l->g)) != NULL)
    group_on_ready(&l->g, c);
  if (l->serving && l->deferred) {
    l->deferred = 0;
    do_accept(l);
  }
  lua_settop(L, 1);
  return 1;
}

/***
The URL given to `listen` (or built from the bound address).
@function url
@treturn string
*/
static int listener_url (lua_State *L) {
  listener_check(L, 1);
  lua_getiuservalue(L, 1, UV_URL);
  return 1;
}

/***
The bound address.
@function addr
@treturn string host (or the unix socket path)
@treturn[opt] integer port (TCP only)
*/
static int listener_addr (lua_State *L) {
  listener *l = listener_checkopen(L, 1);
  if (l->scheme == PL_SCHEME_UNIX || l->scheme == PL_SCHEME_UNIXS) {
    lua_pushstring(L, l->g.local);
    return 1;
  }
  lua_pushstring(L, l->host);
  lua_pushinteger(L, l->port);
  return 2;
}

/***
@function scheme
@treturn string "http", "https", "unix" or "unixs"
*/
static int listener_scheme (lua_State *L) {
  listener *l = listener_check(L, 1);
  lua_pushstring(L, pl_scheme_names[l->scheme]);
  return 1;
}

/***
@function tls
@treturn[opt] peerlisten.TlsPolicy the policy of a TLS listener
*/
static int listener_tls (lua_State *L) {
  listener_check(L, 1);
  lua_getiuservalue(L, 1, UV_TLS);
  return 1;
}

/***
Counters: `accepted`, `active`, `handshaking`, `queued`,
`handshake_failures`, `rejected` (reason -> count), `serving`.
@function stats
@treturn table
*/
static int listener_stats (lua_State *L) {
  listener *l = listener_check(L, 1);
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, l->accepted);
  lua_setfield(L, -2, "accepted");
  lua_pushinteger(L, l->g.active);
  lua_setfield(L, -2, "active");
  lua_pushinteger(L, l->g.handshaking);
  lua_setfield(L, -2, "handshaking");
  lua_pushinteger(L, l->g.queued);
  lua_setfield(L, -2, "queued");
  lua_pushinteger(L, l->handshake_failures);
  lua_setfield(L, -2, "handshake_failures");
  lua_newtable(L);
  if (l->rejected_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, l->rejected_ref);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -5);
    }
    lua_pop(L, 1);
  }
  lua_setfield(L, -2, "rejected");
  lua_pushboolean(L, l->serving);
  lua_setfield(L, -2, "serving");
  return 1;
}

static int listener__tostring (lua_State *L) {
  listener *l = listener_check(L, 1);
  if (l->released || l->h == NULL) {
    lua_pushliteral(L, "peerlisten.Listener (closed)");
    return 1;
  }
  lua_getiuservalue(L, 1, UV_URL);
  lua_pushfstring(L, "peerlisten.Listener (%s)", lua_tostring(L, -1));
  return 1;
}

listener *pl_listener_new (lua_State *L, int scheme, double rto, double wto) {
  listener *l = (listener *)lua_newuserdatauv(L, sizeof(listener), UV_COUNT);
  memset(l, 0, sizeof(*l));
  l->anchor_ref = LUA_NOREF;
  l->logger_ref = LUA_NOREF;
  l->rejected_ref = LUA_NOREF;
  pl_waiter_init(&l->aw);
  pl_waiter_init(&l->cw);
  luaL_setmetatable(L, PL_LISTENER_MT);
  l->loop = pl_uvloop(L);
  l->scheme = scheme;
  l->g.owner = l;
  l->g.read_timeout = rto;
  l->g.write_timeout = wto;
  l->g.local = l->local;
  l->g.is_unix = (scheme == PL_SCHEME_UNIX || scheme == PL_SCHEME_UNIXS);
  l->g.on_ready = group_on_ready;
  l->g.on_change = group_on_change;
  l->g.on_reject = group_on_reject;
  l->g.on_verified = group_on_verified;
  return l;
}

static const luaL_Reg listener_methods[] = {
  {"url", listener_url},
  {"addr", listener_addr},
  {"scheme", listener_scheme},
  {"tls", listener_tls},
  {"stats", listener_stats},
  {"accept", listener_accept},
  {"serve", listener_serve},
  {"close", listener_close},
  {NULL, NULL}
};

static const luaL_Reg listener_meta[] = {
  {"__gc", listener__gc},
  {"__close", listener__close},
  {"__tostring", listener__tostring},
  {"__index", NULL},
  {NULL, NULL}
};

int pl_open_listener (lua_State *L) {
  luaL_newmetatable(L, PL_LISTENER_MT);
  luaL_setfuncs(L, listener_meta, 0);
  luaL_newlib(L, listener_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  pl_newweaktable(L, "v");   /* pointer -> listener userdata */
  lua_rawsetp(L, LUA_REGISTRYINDEX, &pl_listener_selfs);
  lua_pushcfunction(L, pl_core_listen);
  lua_setfield(L, -2, "listen");
  return 0;
}
