/*
** listener.h: the listener's C state, private to listener.c (the userdata,
** accept, serve, close) and listen.c (core.listen: options and binding).
*/
#ifndef PL_LISTENER_H
#define PL_LISTENER_H

#include <sys/un.h>
#include <netinet/in.h>

#include "peerlisten.h"


/* user values of the listener userdata */
enum { UV_URL = 1, UV_TLS, UV_HANDLER, UV_COUNT = UV_HANDLER };

/* serve: finished handler coroutines kept for the next connections (saves a
** lua_newthread, its registration and its collection per connection) */
#define PARK_MAX 16

typedef struct listener {
  uv_stream_t *h;          /* uv_tcp_t or uv_pipe_t (malloc'ed); NULL: not listening */
  uv_loop_t *loop;
  int scheme;
  int released;            /* the one release path ran */
  int serving;
  int deferred;            /* libuv holds a connection we have not accepted */
  int accept_err;          /* a libuv error seen by the connection callback */
  int anchor_ref;          /* registry ref on ourselves while callbacks need Lua */
  int sockopts;            /* TCP: 1 accepted sockets inherit our options, 0 set
                           ** them per connection, -1 not checked yet */
  int npark;               /* finished serve coroutines parked for reuse */
  int park_ref[PARK_MAX];  /* their registry refs */
  lua_State *park_co[PARK_MAX];
  pl_waiter aw;            /* accept */
  pl_waiter cw;            /* close(timeout) draining */
  pl_group g;
  long accepted;           /* connections that passed every check */
  long handshake_failures;
  int logger_ref;          /* registry ref of the logger function or LUA_NOREF */
  int rejected_ref;        /* registry ref of the rejected[reason] table */
  char *path;              /* unix socket file we created (malloc'ed) */
  dev_t sock_dev;
  ino_t sock_ino;
  char host[INET6_ADDRSTRLEN];
  int port;
  /* "127.0.0.1:2380", "[::1]:2380" or the socket path (up to 107 bytes) */
  char local[sizeof(((struct sockaddr_un *)0)->sun_path) + 8];
} listener;


/* registry key of the weak table: listener pointer -> its userdata */
PL_HIDDEN extern const char pl_listener_selfs;

/* A new listener userdata (pushed), all-NULL, before anything is acquired. */
PL_HIDDEN listener *pl_listener_new (lua_State *L, int scheme, double rto, double wto);
/* The one release path (idempotent); with collecting, Lua-held connections
** are only detached. */
PL_HIDDEN int pl_listener_release (lua_State *L, listener *l, int collecting);
PL_HIDDEN void pl_listener_connection_cb (uv_stream_t *server, int status);
/* core.listen */
PL_HIDDEN int pl_core_listen (lua_State *L);

#endif
