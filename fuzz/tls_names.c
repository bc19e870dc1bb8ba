/* fuzz/tls_names.c: cipher suite and TLS version names through the
** policy constructor.  Input lines: min_version, max_version, then one
** cipher suite name per line. */
#define FUZZ_LUA FZ_PRELUDE \
  "local p\n" \
  "local T = {}\n" \
  "function T.init(dir) p = pki(dir) end\n" \
  "function T.run(data)\n" \
  "  local lines = {}\n" \
  "  for s in (data .. '\\n'):gmatch('([^\\n]*)\\n') do lines[#lines + 1] = s end\n" \
  "  local suites = table.move(lines, 3, #lines, 1, {})\n" \
  "  local pol = expect('policy', core.tls_policy{ cert_file = p.cert, key_file = p.key,\n" \
  "    min_version = lines[1], max_version = lines[2], cipher_suites = suites })\n" \
  "  if pol then\n" \
  "    local ok, reason = core._tls_handshake(pol, {})\n" \
  "    if type(reason) ~= 'table' and type(reason) ~= 'string' then error('handshake: ' .. tostring(ok)) end\n" \
  "    pol:close()\n" \
  "  end\n" \
  "end\n" \
  "return T\n"
#include "fuzz.h"
