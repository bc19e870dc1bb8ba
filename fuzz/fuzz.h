/* fuzz/fuzz.h: the shared half of every libFuzzer target.  A target drives
** the module only through its Lua-visible API (peerlisten.core and the Lua
** layer loaded from the tree), so the C files may be reorganised freely.
** A target defines FUZZ_LUA: a chunk returning { init = fn, run = fn }; run
** gets the input as a string and the path of a file holding it, and raises
** on anything the API must not do (a raise, a result of the wrong shape),
** which aborts the process as a finding. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <lua.h>
#include <lualib.h>
#include <lauxlib.h>

/* Lua helpers every target's chunk starts with: `expect` checks the API's
** result convention, `pki` makes a throw-away CA, server and client pair. */
#define FZ_PRELUDE \
  "local core = require 'peerlisten.core'\n" \
  "local function expect(where, ok, msg, code, ...)\n" \
  "  if ok then return ok, msg, code, ... end\n" \
  "  if ok == nil and type(msg) == 'string' and msg ~= '' and type(code) == 'string' then return end\n" \
  "  error(where .. ': not a fail triple: ' .. tostring(ok) .. ', ' .. tostring(msg) .. ', ' .. tostring(code))\n" \
  "end\n" \
  "local function pki(dir)\n" \
  "  local cert = require 'peerlisten.cert'\n" \
  "  local log = require 'peerlisten.log'\n" \
  "  local p = { dir = dir }\n" \
  "  p.ca, p.ca_key = assert(cert.ca{ dir = dir, logger = log.null() })\n" \
  "  p.cert, p.key = assert(cert.issue{ ca_cert = p.ca, ca_key = p.ca_key, dir = dir,\n" \
  "    name = 'server', hosts = { '127.0.0.1', 'localhost' }, logger = log.null() })\n" \
  "  p.ccert, p.ckey = assert(cert.issue{ ca_cert = p.ca, ca_key = p.ca_key, dir = dir,\n" \
  "    name = 'client', hosts = { '127.0.0.1' }, logger = log.null() })\n" \
  "  return p\n" \
  "end\n"

#ifndef PL_ROOT
#define PL_ROOT "."
#endif

int luaopen_peerlisten_core (lua_State *L);
int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

/* Lua code is invisible to the compiler's coverage: a line hook marks each
** (previous line, line) pair of the Lua layer in libFuzzer's extra counters,
** so inputs reaching new Lua branches are kept as well. */
#define FZ_NCOUNTERS (1 << 16)
__attribute__((used, section("__libfuzzer_extra_counters")))
static uint8_t fz_counters[FZ_NCOUNTERS];
static uintptr_t fz_prev;

static void fz_line_hook (lua_State *L, lua_Debug *ar) {
  uintptr_t here;
  if (!lua_getinfo(L, "S", ar)) return;
  here = ((uintptr_t)ar->source * 31u) ^ ((uintptr_t)ar->currentline * 2654435761u);
  fz_counters[(here ^ (fz_prev >> 1)) & (FZ_NCOUNTERS - 1)]++;
  fz_prev = here;
}

static lua_State *fz_L;
static char fz_dir[128], fz_input[160];
static unsigned long fz_runs;

static void fz_die (const char *what) {
  fprintf(stderr, "fuzz target: %s: %s\n", what, lua_tostring(fz_L, -1));
  abort();
}

static void fz_cleanup (void) {
  char cmd[200];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fz_dir);
  if (system(cmd) != 0) fprintf(stderr, "fuzz target: could not remove %s\n", fz_dir);
}

int LLVMFuzzerInitialize (int *argc, char ***argv) {
  lua_State *L = luaL_newstate();
  (void)argc; (void)argv;
  fz_L = L;
  /* one scratch directory per process: parallel jobs never share a file */
  snprintf(fz_dir, sizeof(fz_dir), "/dev/shm/peerlisten-fuzz-%ld", (long)getpid());
  if (mkdir(fz_dir, 0700) != 0 && errno != EEXIST) { perror(fz_dir); abort(); }
  snprintf(fz_input, sizeof(fz_input), "%s/input", fz_dir);
  atexit(fz_cleanup);
  luaL_openlibs(L);
  lua_sethook(L, fz_line_hook, LUA_MASKLINE, 0);
  luaL_requiref(L, "peerlisten.core", luaopen_peerlisten_core, 0);
  lua_pop(L, 1);
  lua_getglobal(L, "package");
  lua_pushliteral(L, PL_ROOT "/lua/?.lua;" PL_ROOT "/lua/?/init.lua");
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
  if (luaL_loadstring(L, FUZZ_LUA) != LUA_OK) fz_die("load");
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) fz_die("chunk");
  lua_getfield(L, -1, "init");
  lua_pushstring(L, fz_dir);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) fz_die("init");
  lua_getfield(L, -1, "run");   /* stack: target table, run */
  return 0;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  lua_State *L = fz_L;
  FILE *f = fopen(fz_input, "wb");
  if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
    perror(fz_input);
    abort();
  }
  lua_pushvalue(L, -1);
  lua_pushlstring(L, (const char *)data, size);
  lua_pushstring(L, fz_input);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) fz_die("run");
  /* policies and contexts are freed by __gc: keep the heap flat */
  if (++fz_runs % 64 == 0) lua_gc(L, LUA_GCCOLLECT);
  return 0;
}

