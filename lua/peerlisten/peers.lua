--- etcd's `configurePeerListeners` and the peer set it returns.
-- @module peerlisten.peers

local core = require "peerlisten.core"
local cert = require "peerlisten.cert"
local config = require "peerlisten.config"
local log = require "peerlisten.log"

local M = {}

--- The bound address of a listener as etcd logs it: "host:port" (IPv6
-- bracketed, the real port also for port 0) or the unix socket path.
-- @tparam userdata l a peerlisten.Listener
-- @treturn string
function M.bound_address(l)
  local host, port = l:addr()
  if port == nil then return tostring(host) end
  if tostring(host):find(":", 1, true) then return ("[%s]:%d"):format(host, port) end
  return ("%s:%d"):format(host, port)
end

--- etcd's `tls-info` string (HEAD form) of a peer TLS policy's settings, as
-- logged with `starting with peer TLS`.
-- @tparam table p `cert_file`, `key_file`, `client_cert_file`, `client_key_file`,
-- `trusted_ca_file`, `client_cert_auth`, `crl_file`
-- @treturn string
function M.tls_info(p)
  return ("cert = %s, key = %s, client-cert=%s, client-key=%s, trusted-ca = %s, client-cert-auth = %s, crl-file = %s")
    :format(p.cert_file, p.key_file, p.client_cert_file, p.client_key_file, p.trusted_ca_file,
      tostring(p.client_cert_auth), p.crl_file)
end

--- The set of listeners `configure_peer_listeners` returns: an array of
-- peerlisten.Listener, `policy` (the TLS policy, or nil) and the logger.
-- @type Peers
local Peers = {}
Peers.__index = Peers
Peers.__name = "peerlisten.Peers"
M.Peers = Peers

--- Closes every listener (index order), each within `timeout` seconds
-- (default 1, as etcd's shutdown). Idempotent.
-- @tparam[opt] number timeout
function Peers:close(timeout)
  timeout = timeout or 1
  local logger = self.logger
  for i = 1, #self do
    local serving = self.serving and self.serving[i]
    local address = serving and serving.address
    if serving then logger:info("stopping serving peer traffic", { address = address }) end
    self[i]:close(timeout)
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
      local address = M.bound_address(self[i])
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

--- @section end

-- etcd's first step: every cipher-suite name must be one it knows, even when
-- no URL uses TLS. The names are the C policy's catalogue; whether OpenSSL
-- can negotiate them is the policy's question, asked only when one is built.
local function check_cipher_names(names)
  local known = {}
  for _, c in ipairs(core.cipher_suites()) do known[c.name] = true end
  for _, name in ipairs(names) do
    if not known[name] then return nil, ('unexpected TLS cipher suite "%s"'):format(name), "ETLSCONFIG" end
  end
  return true
end

-- Hosts for the self-signed certificate's SANs: each URL's host, in order,
-- without repeats (etcd repeats them).
local function cert_hosts(urls)
  local hosts, seen = {}, {}
  for _, u in ipairs(urls) do
    local h = u.host or ""
    if u.scheme == "unix" or u.scheme == "unixs" then h = h:match("^(.*):[^:]*$") or h end
    if h ~= "" and not seen[h] then
      seen[h] = true
      hosts[#hosts + 1] = h
    end
  end
  return hosts
end

-- Settings of the user's peer TLS policy that auto-TLS replaces.
local AUTO_TLS_DROPPED = { "client_cert_file", "client_key_file" }

-- Auto-TLS: a self-signed pair in <data_dir>/fixtures/peer replaces the
-- user's cert and client-cert settings in p. Returns true or nil, err, code.
local function auto_tls(cfg, p, opts, logger)
  if p.cert_file ~= "" or p.key_file ~= "" then
    logger:warn("ignoring peer auto TLS since certs given")
    return true
  end
  local certp, keyp, code = cert.self_signed {
    dir = cfg.data_dir .. "/fixtures/peer", hosts = cert_hosts(cfg._peer_urls),
    validity_years = cfg.self_signed_cert_validity, key_type = opts.key_type, logger = logger,
  }
  if not certp then
    logger:fatal("failed to get peer self-signed certs", { error = keyp })
    return nil, keyp, code or "ECERT"
  end
  for _, k in ipairs(AUTO_TLS_DROPPED) do
    if p[k] ~= "" then
      logger:warn("ignoring peer TLS setting replaced by auto TLS",
        { setting = "peer-transport-security." .. k:gsub("_", "-"), ["value"] = p[k] })
    end
  end
  p.cert_file, p.key_file = certp, keyp
  p.client_cert_file, p.client_key_file = certp, keyp
  return true
end

-- The TLS policy options of a configuration.
local function policy_options(cfg, opts)
  local pts = cfg.peer_transport_security
  local p = {
    cert_file = pts.cert_file, key_file = pts.key_file,
    client_cert_file = pts.client_cert_file, client_key_file = pts.client_key_file,
    trusted_ca_file = pts.trusted_ca_file, client_cert_auth = pts.client_cert_auth, crl_file = pts.crl_file,
    allowed_cns = pts.allowed_cn, allowed_hostnames = pts.allowed_hostname,
    skip_client_san_verify = pts.skip_client_san_verification,
    min_version = cfg.tls_min_version, max_version = cfg.tls_max_version,
  }
  if #cfg.cipher_suites > 0 then p.cipher_suites = cfg.cipher_suites end
  for k, v in pairs(opts.tls or {}) do p[k] = v end
  return p
end

-- etcd's two warnings for an http URL while TLS settings are present.
local function warn_http(u, has_tls, client_cert_auth, logger)
  if has_tls then
    logger:warn("scheme is HTTP while key and cert files are present; ignoring key and cert files",
      { ["peer-url"] = u.url })
  end
  if client_cert_auth then
    logger:warn("scheme is HTTP while --peer-client-cert-auth is enabled; ignoring client cert auth for this URL",
      { ["peer-url"] = u.url })
  end
end

--- etcd's `configurePeerListeners`: one listener per listen-peer URL.
--
-- Steps, in etcd's order: `configuring socket options` (when set) and
-- `configuring peer listeners` (as etcd's StartEtcd logs them just before),
-- cipher-suite names (also when no URL uses TLS), auto-TLS (a self-signed
-- pair in `<data_dir>/fixtures/peer`), `starting with peer TLS`, then for
-- each URL in list order the http warnings and the listener (socket options,
-- raft read/write timeouts as per-I/O deadlines, the TLS policy for https
-- and unixs, built once when the first TLS URL is reached). The TLS versions
-- were checked when the configuration was validated.
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
-- @treturn[1] Peers
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

  local ok, serr, scode = check_cipher_names(cfg.cipher_suites)
  if not ok then return nil, serr, scode end
  local p = policy_options(cfg, opts)
  if pts.auto_tls then
    ok, serr, scode = auto_tls(cfg, p, opts, logger)
    if not ok then return nil, serr, scode end
  end
  local has_tls = p.cert_file ~= "" or p.key_file ~= ""
  if has_tls then
    logger:info("starting with peer TLS", { ["tls-info"] = M.tls_info(p), ["cipher-suites"] = cfg.cipher_suites })
  end

  local peers = setmetatable({ logger = logger }, Peers)
  local function rollback(e, ecode)
    logger:error("creating peer listener failed", { error = e })
    for i = 1, #peers do
      logger:warn("closing peer listener", { address = peers[i]:url(), error = e })
      peers[i]:close(1)
      peers[i] = nil
    end
    -- the policy was built for these listeners only: free its SSL_CTX now, not at the next GC
    if peers.policy then
      peers.policy:close()
      peers.policy = nil
    end
    return nil, e, ecode
  end
  for _, u in ipairs(cfg._peer_urls) do
    if u.scheme == "http" then warn_http(u, has_tls, pts.client_cert_auth, logger) end
    local tls
    if (u.scheme == "https" or u.scheme == "unixs") and has_tls then
      if not peers.policy then
        local policy, warnings, pcode = core.tls_policy(p)
        if not policy then return rollback(warnings, pcode or "ETLSCONFIG") end
        for _, w in ipairs(warnings) do logger:log(w.level or "warn", w.msg, w.fields) end
        peers.policy = policy
      end
      tls = peers.policy
    end
    local l, lerr, lcode = core.listen {
      url = u.url, scheme = u.scheme, host = u.host, port = u.port, path = u.path, tls = tls,
      reuse_address = so.reuse_address, reuse_port = so.reuse_port, backlog = opts.backlog,
      read_timeout = cfg.raft_read_timeout, write_timeout = cfg.raft_write_timeout, logger = logger:hook(u.url),
    }
    if not l then return rollback(lerr, lcode) end
    peers[#peers + 1] = l
  end
  return peers
end

return M
