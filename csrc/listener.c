/*
** listener.c: the peerlisten.Listener userdata (TCP and unix sockets).
** Owned by the core helper.
*/
#include "peerlisten.h"

int pl_open_listener (lua_State *L) {
  (void)L;
  return 0;
}
