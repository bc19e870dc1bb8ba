--- The client side: `dial(url, opts)` connects to a peer URL as etcd's peer
-- transport does.
--
-- TLS comes from `opts.tls` (a policy) or from the policy option names
-- (`cert_file`, `key_file`, `client_cert_file`, `client_key_file` (these
-- two win over the first two, as in etcd), `trusted_ca_file`,
-- `min_version`, `max_version`, `cipher_suites`, `alpn`,
-- `insecure_skip_verify`). The server's chain is verified against the
-- trusted CA and its name against the URL host (an IP SAN for an IP). A
-- member with a self-signed certificate and no trusted CA (auto-TLS) skips
-- that verification as etcd does; `dial` then logs a warning saying so.
--
-- Failure codes (stable):
--
--  * `EURL` the URL does not parse; `EINVAL` a bad option value;
--  * `ECONNREFUSED`, `ETIMEDOUT` (connect, or the TLS handshake deadline),
--    `ENOTFOUND`, `EADDRNOTAVAIL` (source), `ENOENT` (unix socket);
--  * `ENOTTLS` the server answered in plain text;
--  * `ESERVERCERT` we refused the server's certificate (unknown authority,
--    name mismatch listing the names it has, expired);
--  * `EPEERREJECTED` the server refused us with an alert (certificate
--    required, bad certificate, unknown ca, protocol version, ...). With
--    TLS 1.3 the server checks our certificate after our side of the
--    handshake is done: that refusal is the first `read`'s error, with the
--    same code;
--  * `EALPN` no common application protocol; `ETLS` other TLS failures;
--    `ETLSCONFIG`/`ECERT` our own TLS settings are unusable.
-- @module peerlisten.dial

local core = require "peerlisten.core"
local url = require "peerlisten.url"

local M = {}

local TLS_KEYS = { "cert_file", "key_file", "client_cert_file", "client_key_file", "trusted_ca_file",
  "min_version", "max_version", "cipher_suites", "alpn", "insecure_skip_verify" }

--- A client TLS policy from the policy option names (empty strings are
-- unset, as in etcd's YAML).
-- @treturn[1] userdata peerlisten.TlsPolicy
-- @treturn[2] nil
-- @treturn[2] string
-- @treturn[2] string
function M.policy(opts)
  local p = { alpn = {} }   -- etcd's peer transport offers no ALPN
  for _, k in ipairs(TLS_KEYS) do
    local v = opts[k]
    if v ~= nil and v ~= "" then p[k] = v end
  end
  if p.client_cert_file == nil then p.client_key_file = nil end
  local pol, err, code = core.tls_policy(p)
  if not pol then return nil, err, code end
  return pol
end

local function emit(logger, level, msg, fields)
  if logger == nil then return end
  if type(logger) == "function" then logger(level, msg, fields) return end
  logger[level](logger, msg, fields)
end

--- Dials a peer URL.
-- @tparam string u `http://`, `https://`, `unix://`, `unixs://`
-- @tparam[opt] table opts `tls` (a TLS policy) or its option names (see
-- the module doc), `source` (IP to dial from), `timeout` (connect and
-- handshake, seconds, default 5), `read_timeout`, `write_timeout`,
-- `server_name` (instead of the URL host), `logger` (a peerlisten.log
-- logger or `function(level, msg, fields)`)
-- @treturn[1] userdata peerlisten.Conn
-- @treturn[2] nil
-- @treturn[2] string message
-- @treturn[2] string code (see the module doc)
function M.dial(u, opts)
  if type(u) ~= "string" then error("bad argument #1 to 'dial' (string expected, got " .. type(u) .. ")", 2) end
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument #2 to 'dial' (table expected, got " .. type(opts) .. ")", 2) end
  local p, err, code = url.parse(u)
  if not p then return nil, err, code end
  local secure = p.scheme == "https" or p.scheme == "unixs"
  local pol = opts.tls
  if secure and pol == nil then
    local perr, pcode
    pol, perr, pcode = M.policy(opts)
    if not pol then return nil, perr, pcode end
  end
  if secure then
    local info = pol:info()
    if info.insecure_skip_verify then
      emit(opts.logger, "warn", "peer dial does not verify the server certificate (insecure_skip_verify)",
        { url = u })
    elseif info.trusted_ca_file == "" and (info.cert_file ~= "" or info.client_cert_file ~= "") then
      local mine = info.client_cert_file ~= "" and info.client_cert_file or info.cert_file
      local ci = require("peerlisten.cert").inspect(mine)
      if ci and ci.self_signed then
        emit(opts.logger, "warn", "peer dial skips server certificate verification: this member's certificate "
          .. "is self-signed (auto-TLS) and no trusted CA is set, as in etcd", { url = u, ["cert-file"] = mine })
      end
    end
  end
  return core.dial { scheme = p.scheme, host = p.host, port = p.port, path = p.path,
    tls = secure and pol or nil, source = opts.source, timeout = opts.timeout,
    read_timeout = opts.read_timeout, write_timeout = opts.write_timeout, server_name = opts.server_name }
end

return M
