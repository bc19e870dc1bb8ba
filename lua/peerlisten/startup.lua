--- What etcd loads at startup besides the peer listeners, for a preflight.
--
-- etcd opens its log outputs while it checks its configuration (before any
-- listener), and after binding the peer listeners it builds the TLS client
-- its peer transport dials with, from the same peer TLS settings, also when
-- every peer URL is http. A broken key pair or CA there stops etcd (exit 1)
-- although the listeners came up. The CRL file is read by the running
-- listener on every handshake that presents a client certificate; loading it
-- up front tells what every such handshake would meet.
-- Each function returns true, or nil, etcd's message, code.
-- @module peerlisten.startup

local core = require "peerlisten.core"

local M = {}

-- Go's wording of a C library error: "<op> <path>: <reason in lower case>".
local function go_os_error(op, path, msg)
  local reason = tostring(msg)
  if reason:sub(1, #path + 2) == path .. ": " then reason = reason:sub(#path + 3) end
  return ("%s %s: %s"):format(op, path, reason:sub(1, 1):lower() .. reason:sub(2))
end

--- Opens every file log output as zap does (append, created when missing);
-- a file this call created is removed again, so a preflight leaves nothing.
-- Outputs "default", "stderr" and "stdout" are streams. capnslog's rules are
-- checked by `config.load`.
-- @tparam table cfg a validated configuration
-- @treturn[1] true
-- @treturn[2] nil
-- @treturn[2] string `open sink "<path>": open <path>: <reason>`
-- @treturn[2] string "ECONFIG"
function M.log_outputs(cfg)
  if cfg.logger ~= "zap" then return true end
  for _, o in ipairs(cfg.log_outputs or {}) do
    if o ~= "default" and o ~= "stderr" and o ~= "stdout" then
      local existed = io.open(o, "r")
      if existed then existed:close() end
      local fh, err = io.open(o, "a")
      if not fh then
        return nil, ('open sink "%s": %s'):format(o, go_os_error("open", o, err)), "ECONFIG"
      end
      fh:close()
      if not existed then os.remove(o) end
    end
  end
  return true
end

--- Builds the TLS client etcd's peer transport uses: the peer key pair (or,
-- where the etcd version has them, the separate peer client pair) and the
-- trusted CA, loaded as etcd loads them. Nothing to do with auto-TLS (etcd
-- generates that pair) or without any peer TLS file.
-- @tparam table cfg a validated configuration
-- @treturn[1] true
-- @treturn[2] nil
-- @treturn[2] string etcd's error (`tls: private key does not match public
-- key`, `open <ca>: no such file or directory`, `KeyFile and CertFile must
-- both be present[key: , cert: <c>]`, ...)
-- @treturn[2] string code
function M.peer_client(cfg)
  local pts = cfg.peer_transport_security
  if pts.auto_tls and pts.cert_file == "" and pts.key_file == "" then return true end
  if pts.cert_file == "" and pts.key_file == "" and pts.trusted_ca_file == ""
    and pts.client_cert_file == "" and pts.client_key_file == "" then
    return true
  end
  local p = { cert_file = pts.cert_file, key_file = pts.key_file, trusted_ca_file = pts.trusted_ca_file }
  local policy, err, code = core.tls_policy(p)
  if not policy then return nil, err, code end
  policy:close()
  if (pts.client_cert_file == "") ~= (pts.client_key_file == "") then
    return nil, ("ClientKeyFile and ClientCertFile must both be present or both absent: key: %s, cert: %s]")
      :format(pts.client_key_file, pts.client_cert_file), "ETLSCONFIG"
  end
  if pts.client_cert_file ~= "" then
    policy, err, code = core.tls_policy { cert_file = pts.client_cert_file, key_file = pts.client_key_file }
    if not policy then return nil, err, code end
    policy:close()
  end
  return true
end

--- Loads the peer CRL file as the listener does on a handshake.
-- @tparam table cfg a validated configuration
-- @treturn[1] table `{ file =, issuer =, revoked =, next_update = }`, or
-- false when no CRL file is configured
-- @treturn[2] nil
-- @treturn[2] string why it cannot be used (`open <f>: ...`,
-- `read <f>: is a directory`, `x509: malformed crl`)
-- @treturn[2] string code
function M.crl(cfg)
  local pts = cfg.peer_transport_security
  -- (auto-TLS keeps the CRL in peerlisten, unlike etcd: it is loaded then too)
  if pts.crl_file == "" then return false end
  local data, err, code = core.cert_read_file(pts.crl_file)
  if not data then return nil, err, code end
  local info
  info, err, code = core.cert_crl_info(data)
  if not info then return nil, err, code end
  info.file = pts.crl_file
  return info
end

--- Whether some listener would verify client certificates (and so consult
-- the CRL): client-cert-auth on and an https or unixs URL.
-- @tparam table cfg a validated configuration
-- @treturn boolean
function M.mtls(cfg)
  if not cfg.peer_transport_security.client_cert_auth then return false end
  for _, u in ipairs(cfg.listen_peer_urls) do
    if u:match("^https://") or u:match("^unixs://") then return true end
  end
  return false
end

return M
