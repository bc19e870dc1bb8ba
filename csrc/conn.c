/*
** conn.c: the peerlisten.Conn userdata (plain or TLS over memory BIOs).
** Owned by the core helper.
*/
#include "peerlisten.h"

int pl_open_conn (lua_State *L) {
  (void)L;
  return 0;
}
