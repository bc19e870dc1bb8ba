/*
** errors.c: fail-triple pushers (libuv, OpenSSL) and pl_pcall.
** No userdata here: every C file reports failures through these.
*/
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

#include "peerlisten.h"

/* Pushes nil, the formatted message and code; returns 3. */
int pl_fail (lua_State *L, const char *code, const char *fmt, ...) {
  va_list ap;
  luaL_pushfail(L);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_pushstring(L, code);
  return 3;
}

/* Pushes nil, "<what>: <libuv message>", libuv's error name; returns 3. */
int pl_uverror (lua_State *L, const char *what, int uverr) {
  luaL_pushfail(L);
  if (what != NULL && what[0] != '\0')
    lua_pushfstring(L, "%s: %s", what, uv_strerror(uverr));
  else
    lua_pushstring(L, uv_strerror(uverr));
  lua_pushstring(L, uv_err_name(uverr));
  return 3;
}

static int uverror_v (lua_State *L, int uverr, const char *fmt, va_list ap) {
  luaL_pushfail(L);
  lua_pushvfstring(L, fmt, ap);
  lua_pushfstring(L, ": %s", uv_strerror(uverr));
  lua_concat(L, 2);
  lua_pushstring(L, uv_err_name(uverr));
  return 3;
}

int pl_uverrorf (lua_State *L, int uverr, const char *fmt, ...) {
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = uverror_v(L, uverr, fmt, ap);
  va_end(ap);
  return n;
}

int pl_syserrorf (lua_State *L, int err, const char *fmt, ...) {
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = uverror_v(L, uv_translate_sys_error(err), fmt, ap);
  va_end(ap);
  return n;
}

void pl_ssl_errstr (char *buf, size_t len) {
  unsigned long e = ERR_peek_error();
  if (len == 0) return;
  buf[0] = '\0';
  if (e != 0) {
    const char *reason = ERR_reason_error_string(e);
    if (reason != NULL)
      snprintf(buf, len, "%s", reason);
    else
      ERR_error_string_n(e, buf, len);
  }
  ERR_clear_error();
}

/* ---- options tables (at index 1): a wrong type is misuse and raises ---- */

double pl_opt_number (lua_State *L, const char *key, double dflt) {
  double v;
  int t = lua_getfield(L, 1, key);
  if (t == LUA_TNIL) { lua_pop(L, 1); return dflt; }
  if (t != LUA_TNUMBER) luaL_error(L, "bad option '%s' (number expected, got %s)", key, luaL_typename(L, -1));
  v = lua_tonumber(L, -1);
  lua_pop(L, 1);
  return v;   /* range checked by the caller (a bad value is a fail triple) */
}

int pl_opt_bool (lua_State *L, const char *key) {
  int v, t = lua_getfield(L, 1, key);
  if (t != LUA_TNIL && t != LUA_TBOOLEAN)
    luaL_error(L, "bad option '%s' (boolean expected, got %s)", key, luaL_typename(L, -1));
  v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

const char *pl_opt_string (lua_State *L, const char *key, const char *dflt,
                           int *embedded_nul) {
  const char *s;
  size_t len;
  int t = lua_getfield(L, 1, key);
  if (t == LUA_TNIL) { lua_pop(L, 1); return dflt; }
  if (t != LUA_TSTRING) luaL_error(L, "bad option '%s' (string expected, got %s)", key, luaL_typename(L, -1));
  s = lua_tolstring(L, -1, &len);
  if (embedded_nul != NULL && strlen(s) != len) *embedded_nul = 1;
  lua_pop(L, 1);   /* still referenced by the options table */
  return s;
}

int pl_traceback (lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Calls the function below nargs arguments with a traceback handler. */
int pl_pcall (lua_State *L, int nargs, int nresults) {
  int status;
  int base = lua_gettop(L) - nargs;   /* function index */
  lua_pushcfunction(L, pl_traceback);
  lua_insert(L, base);
  status = lua_pcall(L, nargs, nresults, base);
  lua_remove(L, base);
  return status;
}
