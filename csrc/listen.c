/*
** listen.c: core.listen: reads and checks every option before acquiring
** anything, then binds a TCP socket (addresses resolved like Go's
** net.Listen) or a unix socket file, and hands it to a new listener.
*/
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>
#include <netinet/in.h>

#include "listener.h"


/* core.listen's options, all read and checked before anything is acquired */
typedef struct listen_opts {
  int scheme, backlog, reuse_port;
  double rto, wto;
  const char *host, *path, *url;
  lua_Integer port;
  pl_tls *tls;
  int logger_idx, tls_idx;   /* stack slots (0: not given) */
} listen_opts;

/* Resolves host (literal, wildcard or name: the first address, as Go's
** net.Listen does) into ss; *dual: listen dual-stack on [::].  0 or pushes
** a fail triple. */
static int resolve_listen (lua_State *L, const char *host, int port,
                           struct sockaddr_storage *ss, int *dual) {
  struct addrinfo hints, *res = NULL;
  int e;
  memset(ss, 0, sizeof(*ss));
  *dual = 0;
  if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0) {
    /* Go's "tcp" wildcard: dual-stack [::] when IPv6 works */
    int probe = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
      close(probe);
      *dual = 1;
      return pl_sockaddr_ip("::", port, ss);
    }
    return pl_sockaddr_ip("0.0.0.0", port, ss);
  }
  if (pl_sockaddr_ip(host, port, ss) == 0) return 0;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  e = getaddrinfo(host, NULL, &hints, &res);
  if (e != 0 || res == NULL) {
    if (res) freeaddrinfo(res);
    return pl_fail(L, e == EAI_NONAME || e == EAI_AGAIN ? "ENOTFOUND" : "EAI",
                   "listen tcp: lookup %s: %s", host,
                   e == EAI_NONAME ? "no such host" : gai_strerror(e));
  }
  memcpy(ss, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (ss->ss_family == AF_INET) ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
  else ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
  return 0;
}

/* Takes the bound socket fd into a libuv stream (h: malloc'ed, initialized)
** and listens.  Returns 0 or pushes a triple (what names the address). */
static int listen_stream (lua_State *L, listener *l, uv_stream_t *h, int fd,
                          int backlog, const char *proto, const char *what) {
  int r = l->g.is_unix ? uv_pipe_open((uv_pipe_t *)h, (uv_file)fd)
                       : uv_tcp_open((uv_tcp_t *)h, (uv_os_sock_t)fd);
  if (r != 0) {
    close(fd);
    pl_close_handle((uv_handle_t *)h);
    return pl_uverrorf(L, r, "listen %s %s", proto, what);
  }
  l->h = h;   /* owned from here: release closes it */
  r = uv_listen(l->h, backlog, pl_listener_connection_cb);
  if (r != 0) return pl_uverrorf(L, r, "listen %s %s: listen", proto, what);
  uv_unref((uv_handle_t *)h);
  return 0;
}

/* Binds and listens a TCP socket; fills l.  Returns 0 or pushes a triple (3). */
static int listen_tcp (lua_State *L, listener *l, const listen_opts *o) {
  struct sockaddr_storage ss;
  char want[INET6_ADDRSTRLEN + 16];
  int fd, one = 1, r, dual, wildcard;
  uv_tcp_t *h;
  if (o->port < 0 || o->port > 65535) {
    char p[32];
    snprintf(p, sizeof(p), "%lld", (long long)o->port);
    return pl_fail(L, "EINVAL", "listen tcp: address %s: invalid port", p);
  }
  r = resolve_listen(L, o->host, (int)o->port, &ss, &dual);
  if (r != 0) return r;
  pl_sockaddr_name(&ss, l->host, sizeof(l->host), NULL);
  /* Go names the address as resolved: a wildcard as written ("0.0.0.0:2380",
  ** ":2380", "[::]:2380") even though it listens dual-stack on [::] */
  wildcard = o->host[0] == '\0' || strcmp(o->host, "0.0.0.0") == 0 || strcmp(o->host, "::") == 0;
  pl_fmt_hostport(want, sizeof(want), wildcard ? o->host : l->host, (int)o->port);
  fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return pl_syserrorf(L, errno, "listen tcp %s: socket", want);
  /* Go sets SO_REUSEADDR on every listening socket (reuse_address keeps it) */
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (o->reuse_port) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  if (dual) {
    int zero = 0;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  }
  l->sockopts = pl_tcp_sockopts_set(fd) ? -1 : 0;
  if (bind(fd, (struct sockaddr *)&ss, ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                                : sizeof(struct sockaddr_in)) != 0) {
    int e = errno;
    close(fd);
    return pl_syserrorf(L, e, "listen tcp %s: bind", want);
  }
  h = (uv_tcp_t *)malloc(sizeof(uv_tcp_t));
  if (h == NULL) {
    close(fd);
    return pl_fail(L, "ENOMEM", "listen tcp %s: not enough memory", want);
  }
  uv_tcp_init(l->loop, h);
  h->data = NULL;
  r = listen_stream(L, l, (uv_stream_t *)h, fd, o->backlog, "tcp", want);
  if (r != 0) return r;
  {
    struct sockaddr_storage b;
    int blen = sizeof(b);
    if (uv_tcp_getsockname(h, (struct sockaddr *)&b, &blen) == 0)
      pl_sockaddr_name(&b, l->host, sizeof(l->host), &l->port);
  }
  pl_fmt_hostport(l->local, sizeof(l->local), l->host, l->port);
  h->data = l;
  return 0;
}

/* Binds and listens a unix socket at path.  Returns 0 or pushes a triple. */
static int listen_unix (lua_State *L, listener *l, const char *path, int backlog) {
  struct sockaddr_un sa;
  uv_pipe_t *h;
  int r, fd;
  if (path[0] == '\0')
    return pl_fail(L, "EINVAL", "listen unix : bind: empty socket path");
  if (strlen(path) >= sizeof(sa.sun_path))
    return pl_fail(L, "ENAMETOOLONG", "listen unix %s: bind: socket path longer than %d bytes",
                   path, (int)sizeof(sa.sun_path) - 1);
  r = pl_unix_clear_stale(L, path);
  if (r != 0) return r;
  /* our own socket and bind: uv_pipe_bind reports a missing directory
  ** (ENOENT) as EACCES, "permission denied" */
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return pl_syserrorf(L, errno, "listen unix %s: socket", path);
  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, path, strlen(path) + 1);
  if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    int e = errno;
    close(fd);
    return pl_syserrorf(L, e, "listen unix %s: bind", path);
  }
  /* the file exists from here: remember it so that release removes it */
  l->path = (char *)malloc(strlen(path) + 1);
  if (l->path == NULL) {
    unlink(path);
    close(fd);
    return pl_fail(L, "ENOMEM", "listen unix %s: not enough memory", path);
  }
  memcpy(l->path, path, strlen(path) + 1);
  pl_unix_identify(path, &l->sock_dev, &l->sock_ino);
  h = (uv_pipe_t *)malloc(sizeof(uv_pipe_t));
  if (h == NULL) {
    close(fd);
    return pl_fail(L, "ENOMEM", "listen unix %s: not enough memory", path);
  }
  uv_pipe_init(l->loop, h, 0);
  h->data = NULL;
  r = listen_stream(L, l, (uv_stream_t *)h, fd, backlog, "unix", path);
  if (r != 0) return r;
  snprintf(l->local, sizeof(l->local), "%s", path);
  h->data = l;
  return 0;
}

/* The endpoint options: path for unix schemes, host and port for TCP.
** Returns 0 or pushes a triple. */
static int read_endpoint (lua_State *L, listen_opts *o) {
  int nul = 0;
  if (o->scheme == PL_SCHEME_UNIX || o->scheme == PL_SCHEME_UNIXS) {
    o->path = pl_opt_string(L, "path", NULL, &nul);
    if (o->path == NULL) o->path = pl_opt_string(L, "host", NULL, &nul);
    if (o->path == NULL) return luaL_error(L, "bad option 'path' (string expected, got nil)");
    if (nul)
      return pl_fail(L, "EINVAL", "listen unix %s: bind: socket path contains a NUL byte", o->path);
    return 0;
  }
  o->host = pl_opt_string(L, "host", "", &nul);
  if (nul)
    return pl_fail(L, "EINVAL", "listen tcp: address %s: host contains a NUL byte", o->host);
  if (lua_getfield(L, 1, "port") != LUA_TNIL) {
    int isnum;
    if (!lua_isnumber(L, -1) && !lua_isstring(L, -1))
      return luaL_error(L, "bad option 'port' (number expected, got %s)", luaL_typename(L, -1));
    o->port = lua_tointegerx(L, -1, &isnum);
    if (!isnum) {
      const char *ps = lua_tostring(L, -1);
      lua_pop(L, 1);
      return pl_fail(L, "EINVAL", "listen tcp: address %s: invalid port", ps);
    }
  }
  lua_pop(L, 1);
  return 0;
}

/* Reads and checks every option of core.listen (table at 1): wrong types
** raise, bad values of the right type push a fail triple (returns 3).  The
** logger and policy are left on the stack (o->logger_idx, o->tls_idx). */
static int read_opts (lua_State *L, listen_opts *o) {
  double b;
  int r;
  memset(o, 0, sizeof(*o));
  lua_getfield(L, 1, "scheme");
  o->scheme = luaL_checkoption(L, -1, "http", pl_scheme_names);
  lua_pop(L, 1);
  (void)pl_opt_bool(L, "reuse_address");   /* Go sets SO_REUSEADDR anyway */
  o->reuse_port = pl_opt_bool(L, "reuse_port");
  b = pl_opt_number(L, "backlog", 511);
  o->rto = pl_opt_number(L, "read_timeout", 5);
  o->wto = pl_opt_number(L, "write_timeout", 5);
  o->url = pl_opt_string(L, "url", NULL, NULL);
  if (lua_getfield(L, 1, "logger") != LUA_TNIL) {
    if (lua_istable(L, -1) && luaL_getmetafield(L, -1, "__index") != LUA_TNIL) {
      lua_pop(L, 1);   /* a logger object: use logger:hook() */
      lua_getfield(L, -1, "hook");
      lua_insert(L, -2);
      lua_call(L, 1, 1);
    }
    if (!lua_isfunction(L, -1))
      return luaL_error(L, "bad option 'logger' (function expected, got %s)", luaL_typename(L, -1));
    o->logger_idx = lua_gettop(L);
  }
  else lua_pop(L, 1);
  if (lua_getfield(L, 1, "tls") != LUA_TNIL && (o->scheme == PL_SCHEME_HTTPS || o->scheme == PL_SCHEME_UNIXS)) {
    o->tls = pl_tls_check(L, -1);
    o->tls_idx = lua_gettop(L);
  }
  else lua_pop(L, 1);
  if (!(b >= 1 && b <= 65535) || b != (double)(int)b)
    return pl_fail(L, "EINVAL", "bad option 'backlog': %f is not an integer in 1..65535", b);
  o->backlog = (int)b;
  if (!(o->rto >= 0))
    return pl_fail(L, "EINVAL", "bad option 'read_timeout': %f is not a duration >= 0", o->rto);
  if (!(o->wto >= 0))
    return pl_fail(L, "EINVAL", "bad option 'write_timeout': %f is not a duration >= 0", o->wto);
  r = read_endpoint(L, o);
  if (r != 0) return r;
  if ((o->scheme == PL_SCHEME_HTTPS || o->scheme == PL_SCHEME_UNIXS) &&
      (o->tls == NULL || !pl_tls_has_cert(o->tls))) {
    char where[INET6_ADDRSTRLEN + 128];
    if (o->path != NULL) snprintf(where, sizeof(where), "%s", o->path);
    else pl_fmt_hostport(where, sizeof(where), o->host, (int)o->port);
    return pl_fail(L, "ETLSCONFIG",
                   "cannot listen on TLS for %s: KeyFile and CertFile are not presented", where);
  }
  return 0;
}

/* core.listen{ scheme=, host=, port=, path=, url=, tls=, reuse_address=,
**   reuse_port=, backlog=, read_timeout=, write_timeout=, logger= }
** -> listener | nil, message, code */
int pl_core_listen (lua_State *L) {
  listen_opts o;
  listener *l;
  int r, ud;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  r = read_opts(L, &o);
  if (r != 0) return r;
  l = pl_listener_new(L, o.scheme, o.rto, o.wto);
  ud = lua_gettop(L);
  if (o.logger_idx) {
    lua_pushvalue(L, o.logger_idx);
    l->logger_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  if (o.tls_idx) {
    l->g.tls = pl_tls_retain(o.tls);
    lua_pushvalue(L, o.tls_idx);
    lua_setiuservalue(L, ud, UV_TLS);
  }
  lua_newtable(L);
  l->rejected_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  /* weak self entry, for anchoring from callbacks */
  lua_rawgetp(L, LUA_REGISTRYINDEX, &pl_listener_selfs);
  lua_pushvalue(L, ud);
  lua_rawsetp(L, -2, l);
  lua_pop(L, 1);
  if (l->g.is_unix) r = listen_unix(L, l, o.path, o.backlog);
  else r = listen_tcp(L, l, &o);
  if (r != 0) {
    pl_listener_release(L, l, 0);
    return r;
  }
  if (o.url != NULL) lua_pushstring(L, o.url);
  else lua_pushfstring(L, "%s://%s", pl_scheme_names[o.scheme], l->local);
  lua_setiuservalue(L, ud, UV_URL);
  lua_settop(L, ud);
  return 1;
}

