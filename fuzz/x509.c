/* fuzz/x509.c: certificate, key and CRL loading (PEM or DER) as a user's
** files reach it: cert.inspect and core.cert_key_info, then one of (picked by
** a checksum of the input: a policy costs an SSL_CTX) the policy constructor
** with the input as cert_file, key_file or trusted_ca_file, or as crl_file,
** which is read on the first mTLS handshake. */
#define FUZZ_LUA FZ_PRELUDE \
  "local cert = require 'peerlisten.cert'\n" \
  "local p\n" \
  "local T = {}\n" \
  "function T.init(dir) p = pki(dir) end\n" \
  "local function policy(where, o)\n" \
  "  local pol = expect(where, core.tls_policy(o))\n" \
  "  if pol then pol:close() end\n" \
  "end\n" \
  "local roles = {\n" \
  "  function(path) policy('cert_file', { cert_file = path, key_file = p.key }) end,\n" \
  "  function(path) policy('key_file', { cert_file = p.cert, key_file = path }) end,\n" \
  "  function(path)\n" \
  "    policy('trusted_ca_file', { cert_file = p.cert, key_file = p.key, trusted_ca_file = path })\n" \
  "  end,\n" \
  "  function(path)\n" \
  "    local pol = assert(core.tls_policy{ cert_file = p.cert, key_file = p.key,\n" \
  "      trusted_ca_file = p.ca, client_cert_auth = true, crl_file = path })\n" \
  "    local ok, reason = core._tls_handshake(pol, { cert = p.ccert, key = p.ckey })\n" \
  "    if not ok and reason ~= 'crl' and reason ~= 'revoked' then\n" \
  "      error('crl_file: unexpected handshake result ' .. tostring(reason))\n" \
  "    end\n" \
  "    pol:close()\n" \
  "  end,\n" \
  "}\n" \
  "function T.run(data, path)\n" \
  "  expect('inspect', cert.inspect(path))\n" \
  "  expect('key_info', core.cert_key_info(data))\n" \
  "  local sum = 0\n" \
  "  for i = 1, #data, 7 do sum = sum + data:byte(i) end\n" \
  "  roles[sum % #roles + 1](path)\n" \
  "end\n" \
  "return T\n"
#include "fuzz.h"
