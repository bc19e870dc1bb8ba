--- peerlisten: etcd's peer listeners for Lua 5.4.
--
-- The public API of DESIGN.md: configuration (`peerlisten.config`), logging
-- (`peerlisten.log`), TLS policies (`peerlisten.tls`), certificates
-- (`peerlisten.cert`), single listeners (`peerlisten.listen`), the event loop
-- (`run`, `step`, `spawn`, `stop`, `sleep`) and etcd's algorithm,
-- `configure_peer_listeners`.
-- @module peerlisten

local core = require "peerlisten.core"
local config = require "peerlisten.config"
local log = require "peerlisten.log"
local url = require "peerlisten.url"

local M = {
  _VERSION = "scm-1",
  config = config,
  log = log,
  url = url,
  core = core,
}

--- TLS policies (the C core's `core.tls_policy`).
-- @section tls
M.tls = {
  --- A TLS policy userdata; see DESIGN.md for the options.
  -- @treturn[1] userdata peerlisten.TlsPolicy
  -- @treturn[1] table warnings found while building it (`{ level =, msg =, fields = }`)
  -- @treturn[2] nil
  -- @treturn[2] string
  -- @treturn[2] string "ETLSCONFIG" or "ECERT"
  policy = function(opts) return core.tls_policy(opts) end,
  --- Every cipher-suite name etcd accepts, with IANA id and TLS versions.
  cipher_suites = function() return core.cipher_suites() end,
}

-- peerlisten.cert and peerlisten.cluster are loaded on first use.
local LAZY = { cert = "peerlisten.cert", cluster = "peerlisten.cluster" }
setmetatable(M, { __index = function(t, k)
  if LAZY[k] then
    local mod = require(LAZY[k])
    rawset(t, k, mod)
    return mod
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

--- The bound address of a listener as etcd logs it: "host:port" (IPv6
-- bracketed, the real port also for port 0) or the unix socket path.
-- @tparam userdata l a peerlisten.Listener
-- @treturn string
local function bound_address(l)
  local host, port = l:addr()
  if port == nil then return tostring(host) end
  if tostring(host):find(":", 1, true) then return ("[%s]:%d"):format(host, port) end
  return ("%s:%d"):format(host, port)
end
M.bound_address = bound_address

-- The peer set returned by configure_peer_listeners.
local Peers = {}
Peers.__index = Peers
Peers.__name = "peerlisten.Peers"

--- Closes every listener (index order), each within `timeout` seconds
-- (default 1, as etcd's shutdown). Idempotent.
-- @tparam[opt] number timeout
function Peers:close(timeout)
  timeout = timeout or 1
  local logger = self.logger
  for i = 1, #self do
    local l = self[i]
    local serving = self.serving and self.serving[i]
    local address = serving and serving.address
    if serving then logger:info("stopping serving peer traffic", { address = address }) end
    l:close(timeout)
    if serving then logger:info("stopped serving peer traffic", { address = address }) end
  end
  self.serving = nil
end
Peers.__close = Peers.close

--- Serves every listener with `handler(conn)`, one coroutine per connection
-- (etcd's `serving peer traffic` line per listener). Run the loop with
-- `peerlisten.run()`.
-- @tparam function handler
-- @treturn Peers self
function Peers:serve(handler)
  if type(handler) ~= "function" then error("bad argument #1 to 'serve' (function expected)", 2) end
  self.serving = self.serving or {}
  for i = 1, #self do
    if not self.serving[i] then
      local address = bound_address(self[i])
      self.logger:info("serving peer traffic", { address = address })
      self[i]:serve(handler)
      self.serving[i] = { address = address }
    end
  end
  return self
end

--- The listeners' URLs.
-- @treturn table array of strings
function Peers:urls()
  local out = {}
  for i = 1, #self do out[i] = self[i]:url() end
  return out
end

--- etcd's `tls-info` string (HEAD form) of a peer TLS policy's settings, as
-- logged with `starting with peer TLS`.
-- @tparam table p `cert_file`, `key_file`, `client_cert_file`, `client_key_file`,
-- `trusted_ca_file`, `client_cert_auth`, `crl_file`
-- @treturn string
local function tls_info(p)
  return ("cert = %s, key = %s, client-cert=%s, client-key=%s, trusted-ca = %s, client-cert-auth = %s, crl-file = %s")
    :format(p.cert_file, p.key_file, p.client_cert_file, p.client_key_file, p.trusted_ca_file,
      tostring(p.client_cert_auth), p.crl_file)
end
M.tls_info = tls_info

-- The set of accepted cipher-suite names (from core.cipher_suites()).
local function cipher_names()
  local ok, list = pcall(core.cipher_suites)
  if not ok or type(list) ~= "table" then return nil end
  local names = {}
  for k, v in pairs(list) do
    if type(v) == "table" and v.name then names[v.name] = true
    elseif type(k) == "string" then names[k] = true
    elseif type(v) == "string" then names[v] = true end
  end
  return names
end

-- Hosts for the self-signed certificate's SANs: each URL's host, in order,
-- without repeats (etcd repeats them).
local function cert_hosts(urls)
  local hosts, seen = {}, {}
  for _, s in ipairs(urls) do
    local u = url.parse(s)
    local h = u and u.host or ""
    if u and (u.scheme == "unix" or u.scheme == "unixs") then h = h:match("^(.*):[^:]*$") or h end
    if h ~= "" and not seen[h] then
      seen[h] = true
      hosts[#hosts + 1] = h
    end
  end
  return hosts
end

-- Settings of the user's peer TLS policy, as auto-TLS treats them.
local AUTO_TLS_DROPPED = { "client_cert_file", "client_key_file" }

--- etcd's `configurePeerListeners`: one listener per listen-peer URL.
--
-- Steps, in etcd's order: `configuring socket options` (when set) and
-- `configuring peer listeners` (as etcd's StartEtcd logs them just before),
-- cipher-suite names, auto-TLS (a self-signed pair in
-- `<data_dir>/fixtures/peer`), TLS versions, `starting with peer TLS`, then
-- for each URL in list order the http warnings and the listener (socket
-- options, raft read/write timeouts as per-I/O deadlines, the TLS policy for
-- https and unixs, built once when the first TLS URL is reached).
--
-- Differences from etcd: on failure every listener already opened is closed
-- again, in index order, within 1 s each, with etcd's `closing peer listener`
-- warning (etcd's rollback never runs); a self-cert failure is logged at
-- fatal level and returned, never exits; auto-TLS keeps the user's trusted CA,
-- client-cert auth, CRL, allowed CNs/hostnames and skip-SAN setting (etcd
-- drops them silently) and warns about each setting it replaces.
-- @tparam table cfg a configuration (validated with `config.new` if needed)
-- @tparam[opt] table opts `logger` (a peerlisten.log logger, a function, or
-- nil), `key_type` (auto-TLS key, default etcd's ECDSA P-521), `backlog`,
-- `tls` (extra TLS policy options: `handshake_timeout`, `alpn`, ...)
-- @treturn[1] Peers an array of listeners with `close(timeout)`, `serve(handler)`,
-- `urls()` and `__close`; `peers.policy` is the TLS policy (or nil)
-- @treturn[2] nil
-- @treturn[2] string
-- @treturn[2] string "ECONFIG", "ETLSCONFIG", "ECERT", "EADDRINUSE", ...
function M.configure_peer_listeners(cfg, opts)
  opts = opts or {}
  if type(cfg) ~= "table" then
    error("bad argument #1 to 'configure_peer_listeners' (table expected, got " .. type(cfg) .. ")", 2)
  end
  local logger = log.wrap(opts.logger)
  local c, err, code = config.new(cfg)
  if not c then return nil, err, code end
  cfg = c
  local pts = cfg.peer_transport_security
  local so = cfg.socket_options

  if so.reuse_address or so.reuse_port then
    logger:info("configuring socket options", { ["reuse-address"] = so.reuse_address, ["reuse-port"] = so.reuse_port })
  end
  logger:info("configuring peer listeners", { ["listen-peer-urls"] = cfg.listen_peer_urls })

  -- 1. cipher suites: every name must be known, even when no URL uses TLS
  local known = cipher_names()
  if known then
    for _, name in ipairs(cfg.cipher_suites) do
      if not known[name] then
        return nil, ('unexpected TLS cipher suite "%s"'):format(name), "ETLSCONFIG"
      end
    end
  end

  -- 2. the policy's settings, then auto-TLS
  local p = {
    cert_file = pts.cert_file, key_file = pts.key_file,
    client_cert_file = pts.client_cert_file, client_key_file = pts.client_key_file,
    trusted_ca_file = pts.trusted_ca_file, client_cert_auth = pts.client_cert_auth, crl_file = pts.crl_file,
    allowed_cns = pts.allowed_cn, allowed_hostnames = pts.allowed_hostname,
    skip_client_san_verify = pts.skip_client_san_verification,
  }
  if pts.auto_tls then
    if p.cert_file ~= "" or p.key_file ~= "" then
      logger:warn("ignoring peer auto TLS since certs given")
    else
      local dir = cfg.data_dir .. "/fixtures/peer"
      local certp, keyp, cerr, ccode
      local ok, cert = pcall(require, "peerlisten.cert")
      if not ok then
        cerr, ccode = "peerlisten.cert is not available: " .. tostring(cert), "ECERT"
      else
        certp, keyp, ccode = cert.self_signed {
          dir = dir, hosts = cert_hosts(cfg.listen_peer_urls),
          validity_years = cfg.self_signed_cert_validity, key_type = opts.key_type, logger = logger,
        }
        if not certp then cerr = keyp end
      end
      if cerr then
        logger:fatal("failed to get peer self-signed certs", { error = cerr })
        return nil, cerr, ccode or "ECERT"
      end
      for _, k in ipairs(AUTO_TLS_DROPPED) do
        if p[k] ~= "" then
          logger:warn("ignoring peer TLS setting replaced by auto TLS",
            { setting = "peer-transport-security." .. k:gsub("_", "-"), ["value"] = p[k] })
        end
      end
      p.cert_file, p.key_file = certp, keyp
      p.client_cert_file, p.client_key_file = certp, keyp
    end
  end

  -- 3. TLS versions and cipher suites
  p.min_version, p.max_version = cfg.tls_min_version, cfg.tls_max_version
  if #cfg.cipher_suites > 0 then p.cipher_suites = cfg.cipher_suites end
  for k, v in pairs(opts.tls or {}) do p[k] = v end

  -- 4. the TLS summary
  local has_tls = p.cert_file ~= "" or p.key_file ~= ""
  if has_tls then
    logger:info("starting with peer TLS", { ["tls-info"] = tls_info(p), ["cipher-suites"] = cfg.cipher_suites })
  end

  -- 5./6. one listener per URL, rolled back on failure
  local peers = setmetatable({ logger = logger }, Peers)
  local policy
  local function rollback(e, ecode)
    logger:error("creating peer listener failed", { error = e })
    for i = 1, #peers do
      logger:warn("closing peer listener", { address = peers[i]:url(), error = e })
      peers[i]:close(1)
      peers[i] = nil
    end
    -- the policy was built for these listeners only: free its SSL_CTX now, not at the next GC
    if policy then
      policy:close()
      peers.policy = nil
    end
    return nil, e, ecode
  end
  local hook = logger:hook()
  for _, s in ipairs(cfg.listen_peer_urls) do
    local u = assert(url.parse(s))
    if u.scheme == "http" then
      if has_tls then
        logger:warn("scheme is HTTP while key and cert files are present; ignoring key and cert files",
          { ["peer-url"] = u.url })
      end
      if pts.client_cert_auth then
        logger:warn("scheme is HTTP while --peer-client-cert-auth is enabled; ignoring client cert auth for this URL",
          { ["peer-url"] = u.url })
      end
    end
    local tls
    if (u.scheme == "https" or u.scheme == "unixs") and has_tls then
      if not policy then
        local perr, pcode
        policy, perr, pcode = core.tls_policy(p)
        if not policy then return rollback(perr, pcode or "ETLSCONFIG") end
        for _, w in ipairs(type(perr) == "table" and perr or {}) do
          logger:log(w.level or "warn", w.msg, w.fields)
        end
        peers.policy = policy
      end
      tls = policy
    end
    local l, lerr, lcode = core.listen {
      url = u.url, scheme = u.scheme, host = u.host, port = u.port, path = u.path, tls = tls,
      reuse_address = so.reuse_address, reuse_port = so.reuse_port, backlog = opts.backlog,
      read_timeout = cfg.raft_read_timeout, write_timeout = cfg.raft_write_timeout, logger = hook,
    }
    if not l then return rollback(lerr, lcode) end
    peers[#peers + 1] = l
  end
  return peers
end

return M
