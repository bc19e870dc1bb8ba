/*
** conn.h: the connection's C state, private to conn.c (lifecycle, plain
** I/O, the Conn userdata), tls_stream.c (TLS over memory BIOs, handshake)
** and dial.c (the client side).  Nothing else includes it.
*/
#ifndef PL_CONN_H
#define PL_CONN_H

#include "peerlisten.h"

#define PL_TLSERR_LEN 128

/* PH_CONNECTING: a dial in progress; PH_HANDSHAKE and PH_CHECKING: TLS
** before the connection is handed over; PH_OPEN: usable */
enum { PH_CONNECTING, PH_HANDSHAKE, PH_CHECKING, PH_OPEN };

typedef struct pl_dial pl_dial;   /* dial.c's state of a connection being dialled */

struct pl_conn {
  uv_stream_t *h;          /* uv_tcp_t or uv_pipe_t (malloc'ed); NULL: closed */
  uv_loop_t *loop;
  pl_group *g;             /* owning listener's group; NULL once detached or dialled */
  pl_conn *prev, *next;    /* in g->head */
  pl_conn *rnext;          /* in g's ready queue */
  pl_dial *dial;           /* dialled connections only (malloc'ed, plain memory) */
  SSL *ssl;                /* NULL for plain connections */
  pl_tls *tls;             /* retained while ssl exists */
  char *rbuf;              /* plaintext not yet read by Lua: rbuf[roff..rlen) */
  size_t roff, rlen, rcap;
  const char *in;          /* raw TLS bytes of the current read callback */
  size_t inlen;
  char *wout;              /* TLS output not yet given to libuv */
  size_t woutlen, woutcap;
  uv_timer_t *hs_timer;    /* whole-handshake deadline (accepted connections) */
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
  unsigned char work_pending;  /* thread pool work (check, resolver) refers to it */
  unsigned char pinned;    /* C code still uses it while Lua runs (loggers) */
  unsigned char reading;
  unsigned char eof;
  unsigned char is_unix;
  unsigned char is_client; /* dialled: TLS runs SSL_connect, no post-checks */
  unsigned char peer_alert;  /* the TLS read error is the peer's alert (client) */
  unsigned char peer_raw;  /* peer holds the raw sockaddr, formatted on demand */
  char peer[46];           /* remote IP ("@" for unix peers); INET6_ADDRSTRLEN */
};

/* ---- conn.c ---- */
/* A new connection on stream h (h->data = c), not in any group, phase
** PH_OPEN; NULL when out of memory (h is then untouched). */
PL_HIDDEN pl_conn *pl_conn_new (uv_stream_t *h, int is_unix);
/* Records the remote address of a TCP connection (formatted lazily). */
PL_HIDDEN void pl_conn_set_peer (pl_conn *c);
PL_HIDDEN const char *pl_conn_peer_name (pl_conn *c);
/* Hands len bytes at data (malloc'ed, ownership taken) to the socket. */
PL_HIDDEN int pl_conn_send_owned (pl_conn *c, char *data, size_t len);
/* Starts reading into c (idempotent); 0 or a libuv error. */
PL_HIDDEN int pl_conn_read_start (pl_conn *c);
/* Makes room for extra bytes in rbuf; 0 or UV_ENOMEM.  rbuf_trim frees an
** empty buffer (idle connections keep none). */
PL_HIDDEN int pl_conn_rbuf_reserve (pl_conn *c, size_t extra);
PL_HIDDEN void pl_conn_rbuf_trim (pl_conn *c);
/* The TLS handshake and checks ended: reason NULL (accepted) or why not. */
PL_HIDDEN void pl_conn_hs_end (pl_conn *c, const char *reason, const char *msg,
                               int handshake);
/* The handshake deadline of an accepted connection passed. */
PL_HIDDEN void pl_conn_hs_timeout (pl_conn *c);
/* Frees c once nothing refers to it any more. */
PL_HIDDEN void pl_conn_free_maybe (pl_conn *c);
/* Pushes a Conn userdata (owning nothing yet) and returns it; pl_conn_attach
** makes it own c. */
PL_HIDDEN void *pl_conn_push_empty (lua_State *L);
PL_HIDDEN void pl_conn_attach (void *ud, pl_conn *c);
/* The connection a Conn userdata owns (NULL after __gc). */
PL_HIDDEN pl_conn *pl_conn_of (void *ud);
/* Closes a Lua-owned connection (the release path of close()/__gc). */
PL_HIDDEN void pl_conn_close_ud (void *ud);

/* ---- tls_stream.c ---- */
/* Starts TLS on c with ssl (c owns it, also on failure): server side
** (accept state, handshake deadline of hs_timeout seconds) or client side
** (connect state: the ClientHello goes out at once).  Returns NULL or a
** message; on failure nothing was started. */
PL_HIDDEN const char *pl_ts_start (pl_conn *c, SSL *ssl, int client, double hs_timeout);
/* Raw bytes of one read callback: drives the handshake or decrypts. */
PL_HIDDEN void pl_ts_input (pl_conn *c, const char *data, size_t len);
/* The peer closed (or the read failed) during the handshake. */
PL_HIDDEN void pl_ts_input_end (pl_conn *c);
/* Decrypts everything the BIO holds into rbuf and flushes TLS output. */
PL_HIDDEN void pl_ts_pump (pl_conn *c);
/* Encrypts len bytes and hands them to the socket; 0, a libuv error, or -1
** with an OpenSSL message in msg. */
PL_HIDDEN int pl_ts_write (pl_conn *c, const char *data, size_t len, char *msg,
                           size_t msglen);
/* Sends the encrypted output buffer (0 or a libuv error). */
PL_HIDDEN int pl_ts_flush (pl_conn *c);
/* Best effort: writes what the socket takes now of the output (alerts,
** close_notify) and drops the rest. */
PL_HIDDEN void pl_ts_flush_try (pl_conn *c);
/* Queues close_notify and sends it if the socket takes it now. */
PL_HIDDEN void pl_ts_shutdown (pl_conn *c);
/* Stops the handshake deadline (idempotent). */
PL_HIDDEN void pl_ts_stop_timer (pl_conn *c);

/* ---- dial.c ---- */
/* The handshake of a dialled connection ended (reason NULL: it succeeded;
** else the code, message in msg). */
PL_HIDDEN void pl_dial_hs_end (pl_conn *c, const char *code, const char *msg);

#endif
