--- peerlisten: etcd's peer listeners for Lua 5.4.
--
-- The public API: configuration (`peerlisten.config`), logging
-- (`peerlisten.log`), TLS policies (`peerlisten.tls`), certificates
-- (`peerlisten.cert`), single listeners (`peerlisten.listen`), the event loop
-- (`run`, `step`, `spawn`, `stop`, `sleep`) and etcd's algorithm,
-- `configure_peer_listeners` (`peerlisten.peers`) and the preflight,
-- `check` (`peerlisten.check`).
-- @module peerlisten

local core = require "peerlisten.core"
local cert = require "peerlisten.cert"
local check = require "peerlisten.check"
local config = require "peerlisten.config"
local log = require "peerlisten.log"
local peers = require "peerlisten.peers"
local url = require "peerlisten.url"

local M = {
  _VERSION = "scm-1",
  cert = cert,
  config = config,
  log = log,
  url = url,
}

--- TLS policies (the C core's `core.tls_policy`).
-- @section tls
M.tls = {
  --- A TLS policy userdata.
  -- @tparam table opts `cert_file`, `key_file`, `client_cert_file`,
  -- `client_key_file`, `trusted_ca_file`, `client_cert_auth`, `crl_file`,
  -- `cipher_suites`, `min_version`, `max_version` ("TLS1.2", "TLS1.3"),
  -- `allowed_cns`, `allowed_hostnames`, `skip_client_san_verify`, `alpn`
  -- (default `{ "h2" }`), `handshake_timeout` (seconds, default 10),
  -- `session_tickets`
  -- @treturn[1] userdata peerlisten.TlsPolicy
  -- @treturn[1] table warnings found while building it (`{ level =, msg =, fields = }`)
  -- @treturn[2] nil
  -- @treturn[2] string
  -- @treturn[2] string "ETLSCONFIG" or "ECERT"
  policy = function(opts) return core.tls_policy(opts) end,
  --- Every cipher-suite name etcd accepts, with IANA id and TLS versions.
  cipher_suites = function() return core.cipher_suites() end,
}

-- peerlisten.cluster (the bootstrap workflows) is loaded on first use.
setmetatable(M, { __index = function(t, k)
  if k == "cluster" then
    local cluster = require "peerlisten.cluster"
    rawset(t, "cluster", cluster)
    return cluster
  end
end })

--- Runs the loop until `stop()` or no work is left.
M.run = core.run
--- Runs one loop turn (at most `timeout` seconds).
M.step = core.step
--- Runs `fn(...)` in a coroutine; blocking calls inside it yield.
M.spawn = core.spawn
--- Makes `run()` return.
M.stop = core.stop
--- Waits `seconds` (yields inside `spawn`).
M.sleep = core.sleep
--- Calls `fn(name)` on each delivery of a signal ("SIGINT", "SIGTERM", ...)
-- while the loop runs; returns a handle with `close()`.
M.on_signal = core.on_signal
--- Sets the function the C core logs through (`function(level, msg, fields)`,
-- or nil); returns the previous one.
M.set_log_hook = core.set_log_hook

local function hook_of(logger)
  if logger == nil then return nil end
  if type(logger) == "function" then return logger end
  if type(logger) == "table" and type(logger.hook) == "function" then return logger:hook() end
  error("logger expected (peerlisten.log logger or function), got " .. type(logger), 3)
end

--- Opens one listener for a URL.
-- @tparam table opts `url` (string, required), `tls` (a TLS policy for
-- https/unixs), `reuse_address`, `reuse_port`, `backlog`, `read_timeout`,
-- `write_timeout` (seconds), `logger` (a peerlisten.log logger or a
-- `function(level, msg, fields)`)
-- @treturn[1] userdata peerlisten.Listener
-- @treturn[2] nil
-- @treturn[2] string
-- @treturn[2] string "EURL", "EADDRINUSE", "ETLSCONFIG", ...
function M.listen(opts)
  if type(opts) ~= "table" then error("bad argument #1 to 'listen' (table expected, got " .. type(opts) .. ")", 2) end
  if type(opts.url) ~= "string" then error("bad argument #1 to 'listen' (field 'url' must be a string)", 2) end
  local u, err, code = url.parse(opts.url)
  if not u then return nil, err, code end
  return core.listen {
    url = u.url, scheme = u.scheme, host = u.host, port = u.port, path = u.path,
    tls = opts.tls, reuse_address = opts.reuse_address, reuse_port = opts.reuse_port,
    backlog = opts.backlog, read_timeout = opts.read_timeout, write_timeout = opts.write_timeout,
    logger = hook_of(opts.logger),
  }
end

M.configure_peer_listeners = peers.configure_peer_listeners
M.bound_address = peers.bound_address
M.tls_info = peers.tls_info
M.check = check.check
--- Dials a peer URL as etcd's peer transport does (see `peerlisten.dial`).
M.dial = require("peerlisten.dial").dial

return M
