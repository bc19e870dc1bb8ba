/*
** signal.c: process-level helpers for the CLI: core.on_signal (libuv signal
** handles as "peerlisten.Signal" userdata) and core.walltime (the wall clock
** with microseconds, for log timestamps).
*/

/***
The C core (private: applications `require "peerlisten"`); its userdata
types are what the Lua API hands out.
@module peerlisten.core
*/
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <time.h>

#include "peerlisten.h"

#define PL_SIGNAL_MT "peerlisten.Signal"

typedef struct pl_signal {
  uv_signal_t *h;   /* NULL: closed; malloc'ed, freed by the close callback */
  int ref;          /* registry ref of the Lua callback */
  int self_ref;     /* registry ref anchoring the userdata while active */
  int signum;
} pl_signal;

static const char *const signal_names[] = {
  "SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGQUIT", NULL
};
static const int signal_numbers[] = { SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2, SIGQUIT };

/* The only code that frees: stops the handle and drops the refs. */
static int signal_release (lua_State *L, pl_signal *s) {
  uv_signal_t *h = s->h;
  if (h == NULL) return 0;
  s->h = NULL;
  pl_close_handle((uv_handle_t *)h);
  luaL_unref(L, LUA_REGISTRYINDEX, s->ref);
  luaL_unref(L, LUA_REGISTRYINDEX, s->self_ref);
  s->ref = s->self_ref = LUA_NOREF;
  return 1;
}

/* libuv callback: calls the Lua function with the signal's name (errors are
** logged by pl_pcall's handler and dropped). */
static void signal_cb (uv_signal_t *h, int signum) {
  pl_signal *s = (pl_signal *)h->data;
  lua_State *L;
  int i;
  if (s == NULL) return;
  L = pl_mainthread(h->loop);
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);          /* fn */
  lua_pushstring(L, "?");
  for (i = 0; signal_names[i] != NULL; i++)
    if (signal_numbers[i] == signum) {
      lua_pop(L, 1);
      lua_pushstring(L, signal_names[i]);             /* fn name */
      break;
    }
  if (pl_pcall(L, 1, 0) != LUA_OK) {
    lua_warning(L, lua_tostring(L, -1), 0);
    lua_pop(L, 1);
  }
}

/*** core.on_signal(name, fn) -> handle: fn(name) runs on the loop each time
** the process gets that signal ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1",
** "SIGUSR2", "SIGQUIT").  The handle does not keep the loop alive.
** handle:close() restores the default disposition. */
static int core_on_signal (lua_State *L) {
  int which = luaL_checkoption(L, 1, NULL, signal_names);
  pl_signal *s;
  int r;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  s = (pl_signal *)lua_newuserdatauv(L, sizeof(pl_signal), 0);
  s->h = NULL;
  s->ref = s->self_ref = LUA_NOREF;
  s->signum = signal_numbers[which];
  luaL_setmetatable(L, PL_SIGNAL_MT);
  s->h = (uv_signal_t *)malloc(sizeof(uv_signal_t));
  if (s->h == NULL) return luaL_error(L, "not enough memory");
  r = uv_signal_init(pl_uvloop(L), s->h);
  if (r != 0) {
    free(s->h);
    s->h = NULL;
    return pl_uverror(L, "signal", r);
  }
  s->h->data = s;
  lua_pushvalue(L, 2);
  s->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  s->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  r = uv_signal_start(s->h, signal_cb, s->signum);
  if (r != 0) {
    signal_release(L, s);
    return pl_uverror(L, "signal", r);
  }
  uv_unref((uv_handle_t *)s->h);
  return 1;
}

static int signal_close (lua_State *L) {
  signal_release(L, (pl_signal *)luaL_checkudata(L, 1, PL_SIGNAL_MT));
  return 0;
}

static int signal__tostring (lua_State *L) {
  pl_signal *s = (pl_signal *)luaL_checkudata(L, 1, PL_SIGNAL_MT);
  if (s->h == NULL) lua_pushliteral(L, "peerlisten.Signal (closed)");
  else lua_pushfstring(L, "peerlisten.Signal (%d)", s->signum);
  return 1;
}

/*** core.walltime() -> seconds since the epoch, with microseconds. */
static int core_walltime (lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)(ts.tv_nsec / 1000) / 1e6);
  return 1;
}

static const luaL_Reg signal_methods[] = {
  {"close", signal_close},
  {NULL, NULL}
};

static const luaL_Reg signal_funcs[] = {
  {"on_signal", core_on_signal},
  {"walltime", core_walltime},
  {NULL, NULL}
};

/* Adds on_signal and walltime to the module table on top of the stack. */
int pl_open_signal (lua_State *L) {
  if (luaL_newmetatable(L, PL_SIGNAL_MT)) {
    luaL_newlib(L, signal_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, signal_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, signal_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, signal__tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, signal_funcs, 0);
  return 0;
}
