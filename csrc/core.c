/*
** core.c: luaopen_peerlisten_core, the per-state libuv loop, run/step/spawn/
** stop/sleep, the log hook and the wait/wake plumbing every blocking call
** uses.
*/
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "peerlisten.h"

#define READBUF_SIZE (64 * 1024)

typedef struct pl_loop {
  uv_loop_t loop;         /* initialized in luaopen, closed by loop__gc */
  lua_State *L;           /* the main thread */
  int running;            /* inside uv_run (run, step or a blocking wait) */
  int waityield;          /* set by pl_wait/sleep right before they yield */
  int closed;
  lua_State *resuming;    /* the coroutine pl_resume is running, or NULL */
  char *readbuf;          /* shared read buffer, malloc'ed lazily */
  uv_timer_t *steptimer;  /* bounds step(timeout) */
} pl_loop;

/* A coroutine resumed from a one-shot timer (deferred wakes, sleep). */
typedef struct resume_later {
  uv_timer_t timer;
  lua_State *co;          /* NULL: main-thread sleep, donep is set */
  int ref;
  int *donep;
} resume_later;

static const char loop_key = 'L';     /* registry: the pl_loop userdata */
static const char spawned_key = 'S';  /* registry: weak set of our coroutines */
static const char hook_key = 'H';     /* registry: the log hook */

static pl_loop *loop_get (lua_State *L) {
  pl_loop *lp;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &loop_key);
  lp = (pl_loop *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (lp == NULL || lp->closed) luaL_error(L, "peerlisten: event loop is gone");
  return lp;
}

uv_loop_t *pl_uvloop (lua_State *L) {
  return &loop_get(L)->loop;
}

lua_State *pl_mainthread (uv_loop_t *loop) {
  return ((pl_loop *)loop->data)->L;
}

char *pl_readbuf (uv_loop_t *loop, size_t *len) {
  pl_loop *lp = (pl_loop *)loop->data;
  if (lp->readbuf == NULL) lp->readbuf = (char *)malloc(READBUF_SIZE);
  *len = lp->readbuf ? READBUF_SIZE : 0;
  return lp->readbuf;
}

void pl_newweaktable (lua_State *L, const char *mode) {
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushstring(L, mode);
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
}

void pl_free_handle (uv_handle_t *h) {
  free(h);
}

void pl_close_handle (uv_handle_t *h) {
  if (h == NULL) return;
  h->data = NULL;
  uv_close(h, pl_free_handle);
}

/* Seconds to a libuv timeout in ms.  Converting a double beyond uint64_t's
** range is undefined (on x86-64 1e30 or math.huge became 0: a wait that
** should last "forever" ended at once), so huge values are capped at about
** 285000 years; NaN and negatives give 0. */
static uint64_t timeout_ms (double s) {
  double ms = s * 1000.0 + 0.5;
  if (!(ms >= 1.0)) return 0;
  if (ms >= 9.0e15) return (uint64_t)9.0e15;
  return (uint64_t)ms;
}

/* ---- logging ---- */

void pl_log (lua_State *L, int logger_ref, const char *level, const char *msg) {
  int fields = lua_gettop(L);
  if (!lua_checkstack(L, 6)) { lua_pop(L, 1); return; }
  if (logger_ref != LUA_NOREF && logger_ref != LUA_REFNIL)
    lua_rawgeti(L, LUA_REGISTRYINDEX, logger_ref);
  else
    lua_rawgetp(L, LUA_REGISTRYINDEX, &hook_key);
  if (lua_isfunction(L, -1)) {
    lua_pushstring(L, level);
    lua_pushstring(L, msg);
    lua_pushvalue(L, fields);
    if (pl_pcall(L, 3, 0) != LUA_OK) {
      lua_warning(L, "peerlisten: logger failed: ", 1);
      lua_warning(L, lua_isstring(L, -1) ? lua_tostring(L, -1) : "?", 0);
      lua_pop(L, 1);
    }
  }
  else {
    const char *err;
    lua_pop(L, 1);
    lua_getfield(L, fields, "error");
    err = lua_tostring(L, -1);
    lua_warning(L, "peerlisten: ", 1);
    lua_warning(L, level, 1);
    lua_warning(L, ": ", 1);
    lua_warning(L, msg, err == NULL);
    if (err != NULL) {
      lua_warning(L, ": ", 1);
      lua_warning(L, err, 0);
    }
    lua_pop(L, 1);
  }
  lua_settop(L, fields - 1);
}

/* set_log_hook(fn | nil) -> previous hook */
static int core_set_log_hook (lua_State *L) {
  if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &hook_key);
  lua_pushvalue(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &hook_key);
  return 1;
}

/* ---- coroutines ---- */

static void resume_later_start (pl_loop *lp, lua_State *co, int ref,
                                int *donep, double delay);

/* Resumes co (anchored by ref, dropped afterwards) with nargs values. */
static void pl_resume (pl_loop *lp, lua_State *co, int ref, int nargs) {
  lua_State *L = lp->L;
  int nres = 0;
  int status;
  lua_State *outer = lp->resuming;
  lp->waityield = 0;
  lp->resuming = co;
  status = lua_resume(co, L, nargs, &nres);
  lp->resuming = outer;
  if (status == LUA_YIELD) {
    lua_pop(co, nres);
    if (lp->waityield) {   /* a pl_wait anchored it again */
      lp->waityield = 0;
      luaL_unref(L, LUA_REGISTRYINDEX, ref);
    }
    else                   /* a bare coroutine.yield(): resume next turn */
      resume_later_start(lp, co, ref, NULL, 0);
    return;
  }
  if (status != LUA_OK) {
    const char *msg = lua_tostring(co, -1);
    lua_checkstack(L, 4);
    if (msg == NULL) msg = "(error object is not a string)";
    lua_createtable(L, 0, 1);
    luaL_traceback(L, co, msg, 0);
    lua_setfield(L, -2, "error");
    pl_log(L, LUA_NOREF, "error", "uncaught error in a peerlisten coroutine");
    lua_resetthread(co);
  }
  else
    lua_settop(co, 0);
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

static void resume_later_cb (uv_timer_t *t) {
  resume_later *r = (resume_later *)t;
  pl_loop *lp;
  lua_State *co;
  int ref;
  if (t->data == NULL) return;
  lp = (pl_loop *)t->loop->data;
  co = r->co;
  ref = r->ref;
  if (r->donep != NULL) *r->donep = 1;
  pl_close_handle((uv_handle_t *)t);
  if (co != NULL) pl_resume(lp, co, ref, 0);
}

/* Resumes co (ref already taken) after delay seconds; or sets *donep. */
static void resume_later_start (pl_loop *lp, lua_State *co, int ref,
                                int *donep, double delay) {
  resume_later *r = (resume_later *)malloc(sizeof(*r));
  if (r == NULL) {   /* out of memory: the coroutine is lost, say so */
    lua_warning(lp->L, "peerlisten: out of memory scheduling a coroutine", 0);
    luaL_unref(lp->L, LUA_REGISTRYINDEX, ref);
    if (donep) *donep = 1;
    return;
  }
  uv_timer_init(&lp->loop, &r->timer);
  r->timer.data = r;
  r->co = co;
  r->ref = ref;
  r->donep = donep;
  if (delay > 0) uv_update_time(&lp->loop);
  uv_timer_start(&r->timer, resume_later_cb, timeout_ms(delay), 0);
}

/* Is L a coroutine started by spawn that may yield to us?  Every coroutine
** pl_resume runs is one of ours, so the one it is running now needs no
** look-up in the set (two registry reads on every blocking call). */
static int is_ours (lua_State *L, pl_loop *lp) {
  int ours;
  if (!lua_isyieldable(L)) return 0;
  if (L == lp->resuming) return 1;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &spawned_key);
  lua_pushthread(L);
  ours = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 2);
  return ours;
}

/* Drives the loop until *flag stops being `value`. */
static void drive (lua_State *L, pl_loop *lp, volatile int *flag, int value) {
  if (lp->running)
    luaL_error(L, "blocking peerlisten call inside a loop callback or a foreign "
                  "coroutine (use peerlisten.spawn)");
  lp->running = 1;
  while (*flag == value)
    uv_run(&lp->loop, UV_RUN_ONCE);
  lp->running = 0;
}

/* Pushes a new coroutine registered as ours; returns it. */
static lua_State *new_spawned (lua_State *L) {
  lua_State *co;
  luaL_checkstack(L, 4, NULL);
  co = lua_newthread(L);                              /* co */
  lua_rawgetp(L, LUA_REGISTRYINDEX, &spawned_key);    /* co set */
  lua_pushvalue(L, -2);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);                                      /* co */
  return co;
}

void pl_spawn (lua_State *L, int nargs) {
  pl_loop *lp = loop_get(L);
  lua_State *co = new_spawned(L);                     /* fn args co */
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);           /* fn args */
  lua_xmove(L, co, nargs + 1);
  pl_resume(lp, co, ref, nargs);
}

int pl_park (lua_State *L, lua_KFunction k) {
  loop_get(L)->waityield = 1;   /* the parker holds a ref: pl_resume drops its own */
  return lua_yieldk(L, 0, 0, k);
}

void pl_resume_parked (uv_loop_t *loop, lua_State *co, int ref, int nargs) {
  pl_resume((pl_loop *)loop->data, co, ref, nargs);
}

static void waiter_timer_cb (uv_timer_t *t) {
  pl_waiter *w = (pl_waiter *)t->data;
  if (w == NULL) return;
  pl_wake(t->loop, w, PL_TIMEDOUT);
}

void pl_waiter_init (pl_waiter *w) {
  w->co = NULL;
  w->ref = LUA_NOREF;
  w->state = PL_IDLE;
  w->timer = NULL;
}

/* may_block: L is ours or the loop is idle (a wait may drive it) */
static void wait_raise (lua_State *L, int may_block, pl_waiter *w) {
  if (!may_block)
    luaL_error(L, "blocking peerlisten call inside a loop callback or a foreign "
                  "coroutine (use peerlisten.spawn)");
  if (w->state == PL_WAITING)
    luaL_error(L, "another coroutine is already waiting on this object");
}

void pl_wait_check (lua_State *L, uv_loop_t *loop, pl_waiter *w) {
  pl_loop *lp = (pl_loop *)loop->data;
  if (lp->closed) luaL_error(L, "peerlisten: event loop is gone");
  /* ownership only matters while the loop runs: look it up only then */
  wait_raise(L, !lp->running || is_ours(L, lp), w);
}

int pl_wait (lua_State *L, pl_waiter *w, double timeout,
             lua_KFunction k, lua_KContext ctx) {
  pl_loop *lp = loop_get(L);
  int ours = is_ours(L, lp);
  wait_raise(L, ours || !lp->running, w);
  w->state = PL_WAITING;
  if (timeout > 0) {
    if (w->timer == NULL) {
      w->timer = (uv_timer_t *)malloc(sizeof(uv_timer_t));
      if (w->timer == NULL) {
        w->state = PL_IDLE;
        luaL_error(L, "not enough memory");
      }
      uv_timer_init(&lp->loop, w->timer);
      w->timer->data = w;
    }
    uv_update_time(&lp->loop);   /* the cached time may be old */
    uv_timer_start(w->timer, waiter_timer_cb, timeout_ms(timeout), 0);
  }
  if (ours) {
    lua_pushthread(L);
    w->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    w->co = L;
    lp->waityield = 1;
    return lua_yieldk(L, 0, ctx, k);
  }
  drive(L, lp, &w->state, PL_WAITING);
  return k(L, LUA_OK, ctx);
}

void pl_wake (uv_loop_t *loop, pl_waiter *w, int state) {
  lua_State *co;
  int ref;
  if (w->state != PL_WAITING) return;
  w->state = state;
  if (w->timer != NULL) uv_timer_stop(w->timer);
  co = w->co;
  ref = w->ref;
  w->co = NULL;
  w->ref = LUA_NOREF;
  if (co != NULL) pl_resume((pl_loop *)loop->data, co, ref, 0);
}

void pl_wake_later (uv_loop_t *loop, pl_waiter *w, int state) {
  lua_State *co;
  if (w->state != PL_WAITING) return;
  w->state = state;
  if (w->timer != NULL) uv_timer_stop(w->timer);
  co = w->co;
  w->co = NULL;
  if (co != NULL) resume_later_start((pl_loop *)loop->data, co, w->ref, NULL, 0);
  w->ref = LUA_NOREF;
}

void pl_waiter_cancel (uv_loop_t *loop, pl_waiter *w) {
  pl_wake_later(loop, w, PL_CLOSED);
  pl_close_handle((uv_handle_t *)w->timer);
  w->timer = NULL;
}

/* ---- Lua functions ---- */

/* spawn(fn, ...) -> coroutine (already started: it ran until its first wait) */
static int core_spawn (lua_State *L) {
  int n = lua_gettop(L);
  pl_loop *lp = loop_get(L);
  lua_State *co;
  int ref;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  co = new_spawned(L);                 /* fn args co */
  lua_insert(L, 1);                    /* co fn args */
  lua_pushvalue(L, 1);
  ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_xmove(L, co, n);                 /* co */
  pl_resume(lp, co, ref, n - 1);
  return 1;
}

/* run() -> true: runs the loop until stop() or no work is left */
static int core_run (lua_State *L) {
  pl_loop *lp = loop_get(L);
  if (lp->running) return luaL_error(L, "the peerlisten loop is already running");
  lp->running = 1;
  uv_run(&lp->loop, UV_RUN_DEFAULT);
  lp->running = 0;
  lua_pushboolean(L, 1);
  return 1;
}

static void step_timer_cb (uv_timer_t *t) {
  (void)t;
}

/* step([timeout]) -> alive: one loop turn waiting at most timeout seconds */
static int core_step (lua_State *L) {
  pl_loop *lp = loop_get(L);
  double timeout = luaL_optnumber(L, 1, 0);
  int alive;
  if (lp->running) return luaL_error(L, "the peerlisten loop is already running");
  lp->running = 1;
  if (timeout > 0) {
    if (lp->steptimer == NULL) {
      lp->steptimer = (uv_timer_t *)malloc(sizeof(uv_timer_t));
      if (lp->steptimer == NULL) { lp->running = 0; return luaL_error(L, "not enough memory"); }
      uv_timer_init(&lp->loop, lp->steptimer);
      lp->steptimer->data = lp;
      uv_unref((uv_handle_t *)lp->steptimer);
    }
    uv_update_time(&lp->loop);
    uv_timer_start(lp->steptimer, step_timer_cb, timeout_ms(timeout), 0);
    uv_ref((uv_handle_t *)lp->steptimer);
    uv_run(&lp->loop, UV_RUN_ONCE);
    uv_timer_stop(lp->steptimer);
    uv_unref((uv_handle_t *)lp->steptimer);
  }
  else
    uv_run(&lp->loop, UV_RUN_NOWAIT);
  lp->running = 0;
  alive = uv_loop_alive(&lp->loop);
  lua_pushboolean(L, alive);
  return 1;
}

static int core_stop (lua_State *L) {
  uv_stop(&loop_get(L)->loop);
  return 0;
}

static int sleep_k (lua_State *L, int status, lua_KContext ctx) {
  (void)L; (void)status; (void)ctx;
  return 0;
}

/* sleep(seconds): yields inside spawned coroutines, else drives the loop */
static int core_sleep (lua_State *L) {
  pl_loop *lp = loop_get(L);
  double s = luaL_checknumber(L, 1);
  luaL_argcheck(L, s >= 0, 1, "negative duration");
  if (is_ours(L, lp)) {
    lua_pushthread(L);
    resume_later_start(lp, L, luaL_ref(L, LUA_REGISTRYINDEX), NULL, s);
    lp->waityield = 1;
    return lua_yieldk(L, 0, 0, sleep_k);
  }
  else {
    int done = 0;
    if (lp->running)
      return luaL_error(L, "blocking peerlisten call inside a loop callback or a "
                           "foreign coroutine (use peerlisten.spawn)");
    resume_later_start(lp, NULL, LUA_NOREF, &done, s);
    drive(L, lp, &done, 0);
    return 0;
  }
}

/* ---- the loop userdata ---- */

static void walk_close (uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) pl_close_handle(h);
}

static int loop__gc (lua_State *L) {
  pl_loop *lp = (pl_loop *)lua_touserdata(L, 1);
  if (lp->closed) return 0;
  lp->closed = 1;
  lp->steptimer = NULL;   /* closed by the walk below */
  uv_walk(&lp->loop, walk_close, NULL);
  while (uv_loop_close(&lp->loop) == UV_EBUSY) {
    uv_walk(&lp->loop, walk_close, NULL);
    uv_run(&lp->loop, UV_RUN_ONCE);
  }
  free(lp->readbuf);
  lp->readbuf = NULL;
  pl_conn_loops(-1);
  return 0;
}

static const luaL_Reg core_funcs[] = {
  {"run", core_run},
  {"step", core_step},
  {"spawn", core_spawn},
  {"stop", core_stop},
  {"sleep", core_sleep},
  {"set_log_hook", core_set_log_hook},
  {NULL, NULL}
};

/* Gets or creates this state's loop (kept in the registry). */
static void loop_open (lua_State *L) {
  pl_loop *lp;
  int r;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &loop_key) != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lp = (pl_loop *)lua_newuserdatauv(L, sizeof(pl_loop), 0);
  memset(lp, 0, sizeof(*lp));
  lp->closed = 1;   /* until uv_loop_init succeeded */
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, loop__gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  r = uv_loop_init(&lp->loop);
  if (r != 0) luaL_error(L, "peerlisten: cannot create event loop: %s", uv_strerror(r));
  lp->closed = 0;
  lp->loop.data = lp;
  pl_conn_loops(1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  lp->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &loop_key);
  pl_newweaktable(L, "k");   /* the set of coroutines started by spawn */
  lua_rawsetp(L, LUA_REGISTRYINDEX, &spawned_key);
}

#if defined(__GNUC__)
__attribute__((visibility("default")))
#endif
int luaopen_peerlisten_core (lua_State *L);

int luaopen_peerlisten_core (lua_State *L) {
  {
    /* A peer closing mid-write must give EPIPE, not kill the process
    ** (libuv writes with write(2)); only a default disposition is changed. */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
      signal(SIGPIPE, SIG_IGN);
  }
  loop_open(L);
  luaL_newlib(L, core_funcs);
  pl_open_listener(L);
  pl_open_conn(L);
  pl_open_tlspolicy(L);
  pl_open_cert(L);
  pl_open_files(L);
  pl_open_signal(L);
  pl_open_dial(L);
#ifdef PL_TEST_HOOKS
  pl_open_test_hooks(L);
#endif
  lua_pushliteral(L, "scm-1");
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
