/*
** dial.c: core.dial, the client side: connects a TCP or unix socket on the
** loop (resolving a host name on the thread pool), binds a source address
** first when asked, runs the client TLS handshake, and returns the same
** peerlisten.Conn an accepted connection is.  One deadline covers it all.
*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <netdb.h>
#include <unistd.h>
#include <errno.h>

#include "conn.h"


#define DIAL_TIMEOUT 5   /* seconds, connect and TLS handshake together */

struct pl_dial {
  const char *code;        /* the failure's code (static), NULL while none */
  char msg[720];           /* its message */
  char addr[300];          /* "10.0.0.2:2380" (resolved) or the socket path */
  char source[64];         /* "127.0.0.2:0" for messages, "" when not bound */
  char server_name[256];   /* what the server certificate must name */
  int port;
};

typedef struct dial_opts {
  int scheme, port, has_source;
  double timeout, rto, wto;
  const char *host, *path, *server_name;
  struct sockaddr_storage source;
  pl_tls *tls;
} dial_opts;

/* ---- ending the dial ---- */

/* Records the failure (the first one wins) and ends the wait. */
static void dial_fail (pl_conn *c, const char *code, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));

static void dial_fail (pl_conn *c, const char *code, const char *fmt, ...) {
  pl_dial *d = c->dial;
  va_list ap;
  if (d->code == NULL) {
    d->code = code;
    va_start(ap, fmt);
    vsnprintf(d->msg, sizeof(d->msg), fmt, ap);
    va_end(ap);
  }
  pl_wake_later(c->loop, &c->ww, PL_DONE);
}

static void dial_ok (pl_conn *c) {
  c->phase = PH_OPEN;
  pl_wake_later(c->loop, &c->ww, PL_DONE);
}

void pl_dial_hs_end (pl_conn *c, const char *code, const char *msg) {
  if (code != NULL) { dial_fail(c, code, "%s", msg); return; }
  pl_ts_stop_timer(c);
  if (c->reading) { uv_read_stop(c->h); c->reading = 0; }
  SSL_free_buffers(c->ssl);   /* an idle connection keeps no record buffers */
  dial_ok(c);
}

/* ---- connecting ---- */

static const char *proto (pl_conn *c) {
  return c->is_unix ? "unix" : "tcp";
}

static void connect_cb (uv_connect_t *req, int status) {
  pl_conn *c = (pl_conn *)req->handle->data;
  pl_dial *d;
  char err[256];
  SSL *ssl;
  const char *e;
  free(req);
  if (c == NULL) return;   /* closed meanwhile */
  d = c->dial;
  if (status < 0) {
    dial_fail(c, uv_err_name(status), "dial %s %s: connect: %s", proto(c), d->addr,
              uv_strerror(status));
    return;
  }
  if (!c->is_unix) {
    pl_conn_set_peer(c);
    uv_tcp_nodelay((uv_tcp_t *)c->h, 1);
    uv_tcp_keepalive((uv_tcp_t *)c->h, 1, PL_KEEPALIVE_IDLE);
  }
  if (c->tls == NULL) { dial_ok(c); return; }
  err[0] = '\0';
  ssl = pl_tls_new_client_ssl(c->tls, d->server_name, pl_sockaddr_ip(d->server_name, 0,
                              &(struct sockaddr_storage){0}) == 0, err, sizeof(err));
  if (ssl == NULL) {
    dial_fail(c, "ETLSCONFIG", "%s", err[0] ? err : "cannot create TLS session");
    return;
  }
  e = pl_ts_start(c, ssl, 1, 0);   /* the dial's deadline covers the handshake */
  if (e != NULL) dial_fail(c, "EPROTO", "dial %s %s: %s", proto(c), d->addr, e);
}

/* Connects c's TCP handle to ss; failures end the dial. */
static void connect_tcp (pl_conn *c, const struct sockaddr_storage *ss) {
  uv_connect_t *req = (uv_connect_t *)malloc(sizeof(uv_connect_t));
  char ip[INET6_ADDRSTRLEN];
  int r;
  pl_sockaddr_name(ss, ip, sizeof(ip), NULL);
  pl_fmt_hostport(c->dial->addr, sizeof(c->dial->addr), ip, c->dial->port);
  if (req == NULL) { dial_fail(c, "ENOMEM", "dial tcp %s: not enough memory", c->dial->addr); return; }
  r = uv_tcp_connect(req, (uv_tcp_t *)c->h, (const struct sockaddr *)ss, connect_cb);
  if (r != 0) {
    free(req);
    dial_fail(c, uv_err_name(r), "dial tcp %s: connect: %s", c->dial->addr, uv_strerror(r));
  }
}

static void resolved_cb (uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  pl_conn *c = (pl_conn *)req->data;
  struct sockaddr_storage ss;
  free(req);
  c->work_pending = 0;
  if (c->h == NULL) {   /* closed meanwhile */
    if (res) uv_freeaddrinfo(res);
    pl_conn_free_maybe(c);
    return;
  }
  if (status < 0 || res == NULL) {
    if (res) uv_freeaddrinfo(res);
    dial_fail(c, status == UV_EAI_NONAME ? "ENOTFOUND" : "EAI", "dial tcp: lookup %s: %s",
              c->dial->server_name, status == UV_EAI_NONAME ? "no such host" : uv_strerror(status));
    return;
  }
  memset(&ss, 0, sizeof(ss));
  memcpy(&ss, res->ai_addr, res->ai_addrlen);
  uv_freeaddrinfo(res);
  if (ss.ss_family == AF_INET) ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)c->dial->port);
  else ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)c->dial->port);
  connect_tcp(c, &ss);
}

/* Starts connecting (after binding the source); returns 0, or a libuv
** error for a failure to report now (with d->msg filled). */
static int dial_start (pl_conn *c, const dial_opts *o) {
  pl_dial *d = c->dial;
  struct sockaddr_storage ss;
  int r;
  if (c->is_unix) {
    uv_connect_t *req = (uv_connect_t *)malloc(sizeof(uv_connect_t));
    if (req == NULL) return UV_ENOMEM;
    uv_pipe_connect(req, (uv_pipe_t *)c->h, o->path, connect_cb);
    return 0;
  }
  if (o->has_source) {
    r = uv_tcp_bind((uv_tcp_t *)c->h, (const struct sockaddr *)&o->source, 0);
    if (r != 0) {
      snprintf(d->msg, sizeof(d->msg), "dial tcp %s->%s: bind: %s", d->source, d->addr,
               uv_strerror(r));
      return r;
    }
  }
  if (pl_sockaddr_ip(o->host, o->port, &ss) == 0) {
    connect_tcp(c, &ss);
    return 0;
  }
  {
    uv_getaddrinfo_t *req = (uv_getaddrinfo_t *)malloc(sizeof(uv_getaddrinfo_t));
    struct addrinfo hints;
    if (req == NULL) return UV_ENOMEM;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = o->has_source ? o->source.ss_family : AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    req->data = c;
    r = uv_getaddrinfo(c->loop, req, resolved_cb, o->host, NULL, &hints);
    if (r != 0) { free(req); return r; }
    c->work_pending = 1;   /* resolved_cb frees c if it was closed meanwhile */
  }
  return 0;
}

/* ---- core.dial ---- */

static int dial_k (lua_State *L, int status, lua_KContext ctx) {
  void *ud = lua_touserdata(L, 2);   /* the Conn, created by core_dial */
  pl_conn *c = pl_conn_of(ud);
  pl_dial *d;
  int st;
  (void)status; (void)ctx;
  if (c == NULL) return pl_fail(L, "ECLOSED", "use of closed network connection");
  d = c->dial;
  st = c->ww.state;
  c->ww.state = PL_IDLE;
  if (d->code == NULL && st == PL_DONE && c->phase == PH_OPEN && c->h != NULL) {
    c->dial = NULL;
    free(d);
    lua_settop(L, 2);
    return 1;
  }
  if (d->code != NULL) pl_fail(L, d->code, "%s", d->msg);
  else if (st == PL_TIMEDOUT && c->phase == PH_HANDSHAKE)
    pl_fail(L, "ETIMEDOUT", "net/http: TLS handshake timeout");
  else if (st == PL_TIMEDOUT)
    pl_fail(L, "ETIMEDOUT", "dial %s %s: i/o timeout", proto(c), d->addr);
  else pl_fail(L, "ECLOSED", "use of closed network connection");
  pl_conn_close_ud(ud);
  return 3;
}

/* Reads and checks every option before anything is acquired: wrong types
** raise, bad values push a fail triple (returns 3). */
static int read_opts (lua_State *L, dial_opts *o) {
  const char *src;
  double port;
  int nul = 0;
  memset(o, 0, sizeof(*o));
  lua_getfield(L, 1, "scheme");
  o->scheme = luaL_checkoption(L, -1, "http", pl_scheme_names);
  lua_pop(L, 1);
  o->timeout = pl_opt_number(L, "timeout", DIAL_TIMEOUT);
  o->rto = pl_opt_number(L, "read_timeout", 5);
  o->wto = pl_opt_number(L, "write_timeout", 5);
  port = pl_opt_number(L, "port", 0);
  o->host = pl_opt_string(L, "host", NULL, &nul);
  o->path = pl_opt_string(L, "path", NULL, &nul);
  o->server_name = pl_opt_string(L, "server_name", NULL, &nul);
  src = pl_opt_string(L, "source", NULL, &nul);
  if (o->scheme == PL_SCHEME_HTTPS || o->scheme == PL_SCHEME_UNIXS) {
    if (lua_getfield(L, 1, "tls") == LUA_TNIL)
      return pl_fail(L, "ETLSCONFIG", "dial %s: a TLS policy is required", pl_scheme_names[o->scheme]);
    o->tls = pl_tls_opt(L, -1, "tls");   /* raises on a wrong type */
    lua_pop(L, 1);
  }
  if (nul) return pl_fail(L, "EINVAL", "dial: an option contains a NUL byte");
  if (!(o->timeout >= 0) || !(o->rto >= 0) || !(o->wto >= 0))
    return pl_fail(L, "EINVAL", "dial: bad timeout (a duration >= 0 expected)");
  if (o->scheme == PL_SCHEME_UNIX || o->scheme == PL_SCHEME_UNIXS) {
    if (o->path == NULL) o->path = o->host;
    if (o->path == NULL || o->path[0] == '\0')
      return pl_fail(L, "EINVAL", "dial unix: missing socket path");
    if (strlen(o->path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
      return pl_fail(L, "ENAMETOOLONG", "dial unix %s: socket path too long", o->path);
    if (o->server_name == NULL) o->server_name = "";
    return 0;
  }
  if (o->host == NULL || o->host[0] == '\0')
    return pl_fail(L, "EINVAL", "dial tcp: missing host");
  if (!(port >= 1 && port <= 65535) || port != (double)(int)port)
    return pl_fail(L, "EINVAL", "dial tcp: address %s: invalid port", o->host);
  o->port = (int)port;
  if (o->server_name == NULL) o->server_name = o->host;
  if (src != NULL) {
    if (pl_sockaddr_ip(src, 0, &o->source) != 0)
      return pl_fail(L, "EINVAL", "dial tcp: source %s: not an IP address", src);
    o->has_source = 1;
  }
  return 0;
}

/* A new handle and connection for the dial, owned by the Conn at ud. */
static pl_conn *dial_conn (lua_State *L, void *ud, const dial_opts *o) {
  uv_loop_t *loop = pl_uvloop(L);
  int is_unix = o->scheme == PL_SCHEME_UNIX || o->scheme == PL_SCHEME_UNIXS;
  uv_stream_t *h = (uv_stream_t *)malloc(is_unix ? sizeof(uv_pipe_t) : sizeof(uv_tcp_t));
  pl_conn *c;
  if (h == NULL) return NULL;
  if (is_unix) uv_pipe_init(loop, (uv_pipe_t *)h, 0);
  else uv_tcp_init(loop, (uv_tcp_t *)h);
  h->data = NULL;
  c = pl_conn_new(h, is_unix);
  if (c == NULL) { pl_close_handle((uv_handle_t *)h); return NULL; }
  pl_conn_attach(ud, c);   /* the Conn's release path frees what follows */
  c->dial = (pl_dial *)calloc(1, sizeof(pl_dial));
  if (c->dial == NULL) return NULL;
  c->is_client = 1;
  c->phase = PH_CONNECTING;
  c->rto = o->rto;
  c->wto = o->wto;
  if (o->tls != NULL) c->tls = pl_tls_retain(o->tls);
  c->dial->port = o->port;
  snprintf(c->dial->server_name, sizeof(c->dial->server_name), "%s", o->server_name);
  if (is_unix) snprintf(c->dial->addr, sizeof(c->dial->addr), "%s", o->path);
  else pl_fmt_hostport(c->dial->addr, sizeof(c->dial->addr), o->host, o->port);
  if (o->has_source) {
    char ip[INET6_ADDRSTRLEN];
    pl_sockaddr_name(&o->source, ip, sizeof(ip), NULL);
    pl_fmt_hostport(c->dial->source, sizeof(c->dial->source), ip, 0);
  }
  return c;
}

/* core.dial{ scheme=, host=, port=, path=, source=, timeout=, tls=,
**   server_name=, read_timeout=, write_timeout= } -> conn | nil, message, code
** Blocks outside coroutines, yields inside spawned ones. */
static int core_dial (lua_State *L) {
  dial_opts o;
  pl_waiter probe;
  void *ud;
  pl_conn *c;
  int r;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  r = read_opts(L, &o);
  if (r != 0) return r;
  pl_waiter_init(&probe);
  pl_wait_check(L, pl_uvloop(L), &probe);   /* a wait must be possible: raise before connecting */
  ud = pl_conn_push_empty(L);  /* opts conn */
  c = dial_conn(L, ud, &o);
  if (c == NULL) {
    pl_conn_close_ud(ud);
    return pl_fail(L, "ENOMEM", "dial: not enough memory");
  }
  r = dial_start(c, &o);
  if (r != 0) {
    if (c->dial->msg[0] == '\0')
      snprintf(c->dial->msg, sizeof(c->dial->msg), "dial %s %s: %s", proto(c), c->dial->addr,
               uv_strerror(r));
    pl_fail(L, uv_err_name(r), "%s", c->dial->msg);
    pl_conn_close_ud(ud);
    return 3;
  }
  return pl_wait(L, &c->ww, o.timeout, dial_k, 0);
}

/* core.route_source(ip[, port]) -> local ip | nil, message, code
** The address the kernel picks as the source for a connection to ip: a UDP
** connect (no packet is sent) and getsockname.  A TCP dial without a bound
** source uses the same route, so this is the address a peer sees. */
static int core_route_source (lua_State *L) {
  const char *ip = luaL_checkstring(L, 1);
  lua_Integer port = luaL_optinteger(L, 2, 2380);
  struct sockaddr_storage ss, me;
  socklen_t len = sizeof(me);
  char out[INET6_ADDRSTRLEN];
  int fd, r;
  if (port < 1 || port > 65535) return pl_fail(L, "EINVAL", "route: invalid port");
  if (pl_sockaddr_ip(ip, (int)port, &ss) != 0)
    return pl_fail(L, "EINVAL", "route %s: not an IP address", ip);
  fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return pl_fail(L, uv_err_name(uv_translate_sys_error(errno)), "route %s: socket: %s", ip, strerror(errno));
  r = connect(fd, (const struct sockaddr *)&ss,
              ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
  if (r == 0) r = getsockname(fd, (struct sockaddr *)&me, &len);
  if (r != 0) {
    int e = errno;
    close(fd);
    return pl_fail(L, uv_err_name(uv_translate_sys_error(e)), "route %s: %s", ip, strerror(e));
  }
  close(fd);
  pl_sockaddr_name(&me, out, sizeof(out), NULL);
  lua_pushstring(L, out);
  return 1;
}

int pl_open_dial (lua_State *L) {
  lua_pushcfunction(L, core_dial);
  lua_setfield(L, -2, "dial");
  lua_pushcfunction(L, core_route_source);
  lua_setfield(L, -2, "route_source");
  return 0;
}
