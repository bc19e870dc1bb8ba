/*
** peerlisten.h: internal declarations shared by the C files in csrc (never installed).
** Each userdata type's struct stays private to its own file; what crosses
** files is declared here and is hidden from the shared object's symbol table.
*/
#ifndef PEERLISTEN_H
#define PEERLISTEN_H

#include <stdarg.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <lua.h>
#include <lauxlib.h>
#include <uv.h>
#include <openssl/ssl.h>

#define PL_HIDDEN __attribute__((visibility("hidden")))

#define PL_LISTENER_MT  "peerlisten.Listener"
#define PL_CONN_MT      "peerlisten.Conn"
#define PL_TLSPOLICY_MT "peerlisten.TlsPolicy"

/* ---- module openers: each adds its functions to the table on top ---- */
PL_HIDDEN int pl_open_listener (lua_State *L);
PL_HIDDEN int pl_open_conn (lua_State *L);
PL_HIDDEN int pl_open_tlspolicy (lua_State *L);
PL_HIDDEN int pl_open_cert (lua_State *L);
PL_HIDDEN int pl_open_signal (lua_State *L);   /* signal.c: core.on_signal, core.walltime */
PL_HIDDEN int pl_open_dial (lua_State *L);     /* dial.c: core.dial */
PL_HIDDEN int pl_open_files (lua_State *L);    /* files.c (cert.lua's file primitives) */
PL_HIDDEN int pl_open_signal (lua_State *L);   /* signal.c (Lua-layer helper) */
#ifdef PL_TEST_HOOKS
struct pl_tls;
/* test_hooks.c, only in the test build (make defines PL_TEST_HOOKS) */
PL_HIDDEN int pl_open_test_hooks (lua_State *L);
PL_HIDDEN extern long pl_tls_clock_shift;    /* seconds added to verification's "now" */
PL_HIDDEN int pl_tls_test_cache (lua_State *L, struct pl_tls *t, lua_Integer max);
#endif

/* ---- errors.c: fail triples (push nil, message, code; return 3) ---- */
PL_HIDDEN int pl_fail (lua_State *L, const char *code, const char *fmt, ...);
PL_HIDDEN int pl_failv (lua_State *L, const char *code, const char *fmt, va_list ap);
PL_HIDDEN int pl_uverror (lua_State *L, const char *what, int uverr);
/* nil, "<formatted>: <libuv message>", libuv's error name (uv_err_name) */
PL_HIDDEN int pl_uverrorf (lua_State *L, int uverr, const char *fmt, ...);
/* The same for an errno value (translated to libuv's names). */
PL_HIDDEN int pl_syserrorf (lua_State *L, int err, const char *fmt, ...);
/* Options of the table at index 1: nil gives dflt, a wrong type raises "bad
** option 'key' (... expected, got ...)"; range checks are the caller's.
** pl_opt_string sets *embedded_nul (when not NULL) for a string holding a
** NUL byte, which C would silently cut it at. */
PL_HIDDEN double pl_opt_number (lua_State *L, const char *key, double dflt);
PL_HIDDEN int pl_opt_bool (lua_State *L, const char *key);
PL_HIDDEN const char *pl_opt_string (lua_State *L, const char *key, const char *dflt,
                                     int *embedded_nul);
/* Formats the first queued OpenSSL error into buf ("" if none), clears the queue. */
PL_HIDDEN void pl_ssl_errstr (char *buf, size_t len);
/* A message handler adding a traceback (for lua_pcallk). */
PL_HIDDEN int pl_traceback (lua_State *L);
/* lua_pcall with a traceback handler; on error the message is left on the stack. */
PL_HIDDEN int pl_pcall (lua_State *L, int nargs, int nresults);

/* ---- sock.c: addresses and unix socket files (listener.c, dial.c) ---- */
/* URL schemes of peer URLs, as option values; names in pl_scheme_names. */
enum { PL_SCHEME_HTTP, PL_SCHEME_HTTPS, PL_SCHEME_UNIX, PL_SCHEME_UNIXS };
PL_HIDDEN extern const char *const pl_scheme_names[];
/* TCP keep-alive idle time (seconds) of every connection, as Go's default */
#define PL_KEEPALIVE_IDLE 30
/* TCP_NODELAY and keep-alive on a socket; 1 when all were set. */
PL_HIDDEN int pl_tcp_sockopts_set (int fd);
/* Did an accepted socket inherit them from its listening socket? */
PL_HIDDEN int pl_tcp_sockopts_inherited (uv_stream_t *c);
/* host:port the way Go prints addresses ("[::1]:2380" for IPv6). */
PL_HIDDEN void pl_fmt_hostport (char *out, size_t len, const char *host, int port);
/* An IPv4 or IPv6 literal to a socket address; 0 or UV_EINVAL. */
PL_HIDDEN int pl_sockaddr_ip (const char *ip, int port, struct sockaddr_storage *ss);
/* The IP text (and port when port != NULL) of a socket address. */
PL_HIDDEN void pl_sockaddr_name (const struct sockaddr_storage *ss, char *ip,
                                 size_t iplen, int *port);
/* Removes a stale socket file at path (see sock.c); 0 or pushes a triple. */
PL_HIDDEN int pl_unix_clear_stale (lua_State *L, const char *path);
/* The identity of the socket file at path; 0 when it is not a socket. */
PL_HIDDEN int pl_unix_identify (const char *path, dev_t *dev, ino_t *ino);
/* Removes path if it is still the socket dev/ino. */
PL_HIDDEN void pl_unix_remove_ours (const char *path, dev_t dev, ino_t ino);

/* ---- TLS policy (tls_policy.c), used by listener.c and conn.c ----
** A pl_tls is the C state behind one peerlisten.TlsPolicy userdata: one
** SSL_CTX plus the peer checks.  It is reference counted so that a listener
** and every connection handshaking with it keep it alive after the Lua
** userdata is collected.  All functions below are loop-thread only, except
** pl_tls_post_check, which is also safe on libuv's thread pool.
*/
typedef struct pl_tls pl_tls;

PL_HIDDEN pl_tls *pl_tls_check (lua_State *L, int idx);   /* raises on non-policy/closed */
PL_HIDDEN pl_tls *pl_tls_opt (lua_State *L, int idx, const char *key);  /* the same, naming option key */
PL_HIDDEN pl_tls *pl_tls_retain (pl_tls *t);              /* returns t */
PL_HIDDEN void pl_tls_release (pl_tls *t);                /* NULL is a no-op */
PL_HIDDEN int pl_tls_has_cert (const pl_tls *t);          /* cert and key configured */
PL_HIDDEN double pl_tls_handshake_timeout (const pl_tls *t);  /* seconds, > 0 */

/* A new server-side SSL for one accepted connection (the certificate pair is
** re-read first if its files changed).  NULL with a message in err on failure. */
PL_HIDDEN SSL *pl_tls_new_ssl (pl_tls *t, char *err, size_t errlen);

/* Why a handshake failed: returns a stable reason name ("handshake",
** "no_client_cert", "bad_client_cert", "cn_not_allowed", "protocol_version",
** "no_shared_cipher", "alpn", "not_tls", ...) and writes etcd's wording of
** the error into msg. ssl_error is SSL_get_error()'s result. */
PL_HIDDEN const char *pl_tls_handshake_failure (SSL *ssl, int ssl_error,
                                                char *msg, size_t msglen);

/* Post-handshake checks in etcd's order: client SAN against remote_ip
** (NULL for unix peers: skipped), then CRL.  Returns NULL when the connection
** is accepted, else a reason name ("san_mismatch", "revoked", "crl") with
** etcd's error text in msg.  May block on DNS when the client certificate
** has DNS SANs, and reads the CRL file: call it on the thread pool when
** pl_tls_post_check_may_block says so. */
PL_HIDDEN int pl_tls_post_check_may_block (pl_tls *t, SSL *ssl, const char *remote_ip);
PL_HIDDEN const char *pl_tls_post_check (pl_tls *t, SSL *ssl, const char *remote_ip,
                                         char *msg, size_t msglen);

/* Pushes conn:tls_info()'s table for an established SSL. */
/* Client side (dialing a peer): an SSL in connect state from the policy's
** client SSL_CTX (built on the first call; loop thread).  host is the name
** (SNI and host name check) or, with host_is_ip, the IP address the server
** certificate must carry; the server is not verified with
** insecure_skip_verify, or when a self-signed policy has no trusted CA.
** NULL with err filled on failure. */
PL_HIDDEN SSL *pl_tls_new_client_ssl (pl_tls *t, const char *host, int host_is_ip,
                                      char *err, size_t errlen);
/* Words a failed client handshake (errors drained from the queue) and
** says who refused it: "ESERVERCERT" (we rejected the server's
** certificate), "EPEERREJECTED" (the server sent an alert: our certificate,
** version, cipher suites), "EALPN" (its alert was no_application_protocol),
** "ENOTTLS" (the server does not speak TLS), or "ETLS". */
PL_HIDDEN const char *pl_tls_client_failure (SSL *ssl, int ssl_error, char *msg, size_t msglen);
PL_HIDDEN void pl_tls_push_info (lua_State *L, SSL *ssl);

/* Pushes the ip-addresses and dns-names arrays of the peer certificate (two
** values; empty arrays when there is none), for the rejection log fields. */
PL_HIDDEN void pl_tls_push_peer_names (lua_State *L, SSL *ssl);

/* Warnings the policy wants logged (a reload that failed, a CRL past its
** nextUpdate): pops them into a Lua array of {level=, msg=, fields...} tables
** and pushes it, or pushes nil when there are none.  Listeners call it after
** each handshake and route the entries to their logger. */
PL_HIDDEN void pl_tls_push_pending_logs (lua_State *L, pl_tls *t);

/* ---- core.c: the loop and coroutine plumbing ----
** One pl_loop per Lua state lives in the registry; uv_loop_t.data points to
** it.  Blocking calls use a pl_waiter: inside a coroutine started by
** pl_spawn/core.spawn they yield, elsewhere they drive the loop.
*/
enum { PL_IDLE = 0, PL_WAITING, PL_DONE, PL_TIMEDOUT, PL_CLOSED };

typedef struct pl_waiter {
  lua_State *co;        /* waiting coroutine, or NULL (idle or main-thread wait) */
  int ref;              /* registry ref anchoring co while it waits */
  int state;            /* PL_IDLE, PL_WAITING, then how the wait ended */
  uv_timer_t *timer;    /* deadline timer (malloc'ed, lazily), data = waiter */
} pl_waiter;

PL_HIDDEN uv_loop_t *pl_uvloop (lua_State *L);
/* The one close callback of every malloc'ed uv handle: frees it. */
PL_HIDDEN void pl_free_handle (uv_handle_t *h);
/* Detaches h (data = NULL: callbacks return at once) and closes it; the
** memory is freed by pl_free_handle.  NULL is a no-op. */
PL_HIDDEN void pl_close_handle (uv_handle_t *h);
PL_HIDDEN lua_State *pl_mainthread (uv_loop_t *loop);
/* A 64 KiB buffer shared by every read callback of this loop. */
PL_HIDDEN char *pl_readbuf (uv_loop_t *loop, size_t *len);
/* Pushes a new table whose keys or values are weak (mode "k" or "v"). */
PL_HIDDEN void pl_newweaktable (lua_State *L, const char *mode);

PL_HIDDEN void pl_waiter_init (pl_waiter *w);
/* Raises when pl_wait(L, w, ...) would raise (a blocking wait inside a loop
** callback or a foreign coroutine, or w already has a waiter): lets a caller
** check before it changes state that pl_wait would have to undo.  loop is
** L's loop (the caller's handle has it: no registry look-up). */
PL_HIDDEN void pl_wait_check (lua_State *L, uv_loop_t *loop, pl_waiter *w);
/* Waits until pl_wake*(w) or timeout (seconds, <= 0: none); then returns
** k(L, LUA_OK, ctx), whose results are the call's results.  k reads
** w->state.  Raises when a blocking wait is impossible (inside a callback). */
PL_HIDDEN int pl_wait (lua_State *L, pl_waiter *w, double timeout,
                       lua_KFunction k, lua_KContext ctx);
/* Ends a wait now (resumes the coroutine inline: call it last in a callback). */
PL_HIDDEN void pl_wake (uv_loop_t *loop, pl_waiter *w, int state);
/* Ends a wait; the coroutine resumes on the next loop turn (safe anywhere,
** also in release paths). */
PL_HIDDEN void pl_wake_later (uv_loop_t *loop, pl_waiter *w, int state);
/* Release path of an object owning w: a pending wait ends with PL_CLOSED
** (deferred) and the timer is closed. */
PL_HIDDEN void pl_waiter_cancel (uv_loop_t *loop, pl_waiter *w);
/* Starts a coroutine running the function below nargs values on L's top;
** pops them.  Errors are logged with a traceback. */
PL_HIDDEN void pl_spawn (lua_State *L, int nargs);
/* Parks the running coroutine (one started by pl_spawn, already anchored by
** the caller's registry ref) until pl_resume_parked(co, that ref, nargs)
** hands it nargs values pushed on co's stack; k continues it then.  Lets
** listener:serve reuse finished handler coroutines. */
PL_HIDDEN int pl_park (lua_State *L, lua_KFunction k);
PL_HIDDEN void pl_resume_parked (uv_loop_t *loop, lua_State *co, int ref, int nargs);
/* Logs msg with the fields table on top of L's stack (popped) through the
** function at registry ref logger_ref (LUA_NOREF: the log hook, then
** lua_warning).  Never raises. */
PL_HIDDEN void pl_log (lua_State *L, int logger_ref, const char *level,
                       const char *msg);

/* ---- conn.c: connections; listener.c owns a pl_group of them ----
** The group is the listener's side of its connections: conn.c keeps the
** lists and counts, the listener keeps its logging and counters and hears
** about each connection through the callbacks (called with the connection
** pinned, so Lua may run in them). */
typedef struct pl_conn pl_conn;
typedef struct pl_group pl_group;
struct pl_group {
  pl_conn *head;            /* live connections (handshaking, queued, in Lua) */
  pl_conn *ready_head, *ready_tail;  /* accepted, not yet given to Lua */
  int active;               /* connections in head's list */
  int handshaking;          /* of which TLS handshakes and checks in progress */
  int queued;               /* of which in the ready queue */
  double read_timeout, write_timeout;
  const char *local;        /* "127.0.0.1:2380" or the socket path, for messages */
  int is_unix;
  pl_tls *tls;              /* retained by the listener; NULL for plain */
  void *owner;              /* the listener */
  void (*on_ready) (pl_group *g, pl_conn *c);  /* handshake and checks passed */
  void (*on_change) (pl_group *g);             /* active decreased */
  /* a TLS connection was refused (reason name, etcd's wording in msg;
  ** handshake: it failed in the handshake, not in a later check); c is
  ** closed afterwards */
  void (*on_reject) (pl_group *g, pl_conn *c, const char *reason,
                     const char *msg, int handshake);
  /* a TLS connection passed its checks (before on_ready) */
  void (*on_verified) (pl_group *g, pl_conn *c);
};

/* Wraps an accepted stream (malloc'ed, initialized, accepted) into a
** connection of group g: plain ones go to g->on_ready at once, TLS ones after
** their handshake and checks. */
PL_HIDDEN void pl_conn_start (pl_group *g, uv_stream_t *h);
PL_HIDDEN void pl_group_push_ready (pl_group *g, pl_conn *c);
PL_HIDDEN pl_conn *pl_group_pop_ready (pl_group *g);
/* Closes the connections of g that Lua has not seen (handshakes, queue). */
PL_HIDDEN void pl_group_close_pending (pl_group *g);
/* Closes every connection of g (force); with detach, Lua-held ones are only
** detached from g instead (the listener is being collected). */
PL_HIDDEN void pl_group_close_all (pl_group *g, int detach);
/* Counts loops using tls_stream.c's process-wide BIO method (+1 when a loop is
** created, -1 when it is closed: the last one frees it). */
PL_HIDDEN void pl_conn_loops (int delta);
/* Pushes a new peerlisten.Conn userdata owning c. */
PL_HIDDEN void pl_conn_push (lua_State *L, pl_conn *c);
/* Closes a connection not (yet) given to Lua. */
PL_HIDDEN void pl_conn_discard (pl_conn *c);
/* For the listener's rejection log: the remote address as Go prints it
** ("1.2.3.4:5", "[::1]:5", "@" for unix peers) and the SSL (NULL: plain). */
PL_HIDDEN void pl_conn_remote (pl_conn *c, char *buf, size_t len);
PL_HIDDEN SSL *pl_conn_ssl (pl_conn *c);

#endif
