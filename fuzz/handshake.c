/* fuzz/handshake.c: the server side of the TLS handshake (an mTLS
** policy, TLS 1.2 and 1.3) fed arbitrary client bytes over memory BIOs by
** the core._tls_handshake test hook, then its failure classification. */
#define FUZZ_LUA FZ_PRELUDE \
  "local pol\n" \
  "local T = {}\n" \
  "function T.init(dir)\n" \
  "  local p = pki(dir)\n" \
  "  pol = assert(core.tls_policy{ cert_file = p.cert, key_file = p.key, trusted_ca_file = p.ca,\n" \
  "    client_cert_auth = true, allowed_cns = { 'client' }, alpn = { 'h2', 'http/1.1' } })\n" \
  "end\n" \
  "function T.run(data)\n" \
  "  local ok, reason, msg = core._tls_handshake(pol, { raw = data })\n" \
  "  if ok ~= false or type(reason) ~= 'string' or type(msg) ~= 'string' then\n" \
  "    error('raw bytes: unexpected result ' .. tostring(ok) .. ' ' .. tostring(reason))\n" \
  "  end\n" \
  "end\n" \
  "return T\n"
#include "fuzz.h"
