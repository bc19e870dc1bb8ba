/*
** cert.c: certificate helpers for peerlisten.cert (owned by the cert helper).
** Key generation, self-signed and CA-issued X.509 certificates, inspection,
** key matching, verification and atomic file writes; no userdata here.
*/
#include "peerlisten.h"

static const luaL_Reg cert_funcs[] = {
  {NULL, NULL}
};

/* Adds the cert functions to the module table on top of the stack. */
int pl_open_cert (lua_State *L) {
  luaL_setfuncs(L, cert_funcs, 0);
  return 0;
}
