--- The preflight: would etcd start its peer listeners with this configuration?
--
-- `check(cfg, opts)` does what etcd does on its way to serving peers, for
-- the etcd version the configuration was loaded for (`config.load`'s
-- `etcd_version`; newest otherwise): opens the log outputs, runs
-- `configure_peer_listeners` for real (binding every URL, building the TLS
-- policy, generating the auto-TLS pair if configured), loads the peer key
-- pair and CA as etcd's peer client does (also for http URLs) and the CRL
-- as the listener does on a handshake, closes everything again, then checks
-- the peer certificate beyond what etcd checks at startup. It returns one
-- report table, the object that `peerlisten check --json` prints:
--
--    {
--      ok = true | false,        -- etcd would start its peer listeners
--      error = "...", code = "...",   -- why not (only when ok is false)
--      warnings = { { level =, msg =, fields =, text = }, ... },
--      listeners = { { url =, address = "host:port" or socket path, tls = bool }, ... },
--      certificates = { { file =, subject =, not_after = RFC 3339, days_left =, sans = }, ... },
--      notes = { { level = "info", msg = }, ... },   -- facts worth one line (auto-TLS)
--      etcd_version = "3.4.23",     -- the etcd release predicted for
--      differences = { { id =, text =, key = }, ... },   -- differences from etcd applied
--      explain = { { key = yaml key, value =, source = }, ... },   -- only with opts.explain
--      cluster = { name =, advertise =, members =, member_ok =,       -- with initial-cluster set
--                  dial_sources = { { name =, url =, source =, named = }, ... } },
--      peers = { <peerlisten.probe reports with name, reachable> },   -- only with opts.peers
--    }
--
-- `warnings` holds, in order, the configuration's own notes at warn level
-- and above (`text` is their one-line form), etcd's warnings while
-- configuring, then the certificate warnings. Each kind of check adds its
-- own entries to the report; `ok` and `error` are the verdict of the whole.
-- @module peerlisten.check

local cert = require "peerlisten.cert"
local check_cluster = require "peerlisten.check_cluster"
local config = require "peerlisten.config"
local etcd_versions = require "peerlisten.etcd_versions"
local log = require "peerlisten.log"
local peers = require "peerlisten.peers"
local startup = require "peerlisten.startup"

local M = {}

-- A certificate that expires sooner than this gets a warning.
local EXPIRY_WARNING = 30 * 86400

local function contains(list, v)
  for _, x in ipairs(list or {}) do if x == v then return true end end
  return false
end

local function is_warning(entry)
  return entry.level ~= "info" and entry.level ~= "debug"
end

--- A failed report: the shape `check` returns, with `ok = false`, for a
-- configuration that could not even be loaded.
-- @tparam string err
-- @tparam string code
-- @treturn table the report
-- @tparam[opt] table extra `etcd_version`, `differences`
function M.failure(err, code, extra)
  extra = extra or {}
  return { ok = false, error = err, code = code, warnings = {}, listeners = {}, certificates = {}, notes = {},
    etcd_version = extra.etcd_version, differences = extra.differences or {} }
end

local function add_difference(report, id, key)
  for _, d in ipairs(report.differences) do
    if d.id == id and d.key == key then return end
  end
  report.differences[#report.differences + 1] = { id = id, text = etcd_versions.DIFFERENCES[id], key = key }
end

-- The peer certificate: key match, validity, SANs covering the https URL
-- hosts, the key usages a peer needs, and the chain against the trusted CA.
-- Warnings only: etcd starts with all of these wrong. `auto`: etcd's auto-TLS
-- pair, whose peers verify nothing (only its validity is reported).
local function check_certificate(cfg, files, warn, certs, auto)
  if files.cert_file == "" or files.key_file == "" then return end
  local list = cert.inspect_chain(files.cert_file)
  if not list then return end
  local info = list[1]
  local file = files.cert_file
  certs[#certs + 1] = { file = file, subject = info.subject, not_after = info.not_after_rfc3339,
    days_left = info.days_left, sans = info.sans }
  if auto then return end
  local mok, merr = cert.matches_key(file, files.key_file)
  if not mok then warn("peer certificate and key do not match", { ["cert-file"] = file, error = merr }) end
  local now = os.time()
  if info.not_after < now then
    warn("peer certificate has expired", { ["cert-file"] = file, ["not-after"] = info.not_after_rfc3339 })
  elseif info.not_after - now < EXPIRY_WARNING then
    warn("peer certificate expires within 30 days", { ["cert-file"] = file, ["not-after"] = info.not_after_rfc3339 })
  elseif info.not_before > now then
    warn("peer certificate is not valid yet", { ["cert-file"] = file })
  end
  for _, u in ipairs(cfg._peer_urls) do
    local h = u.host
    if u.scheme == "https" and h ~= "0.0.0.0" and h ~= "::"
      and not contains(info.sans.ip, h) and not contains(info.sans.dns, h) then
      warn("peer certificate does not cover the URL host", { ["cert-file"] = file, host = h })
    end
  end
  local eku = info.ext_key_usage or {}
  if #eku > 0 then
    local function has(usage)
      for _, x in ipairs(eku) do if x:lower():find(usage, 1, true) then return true end end
      return false
    end
    if not has("server") then
      warn("peer certificate lacks the serverAuth extended key usage", { ["cert-file"] = file })
    end
    if files.client_cert_file == "" and not has("client") then
      warn("peer certificate lacks the clientAuth extended key usage (peers dial with it)", { ["cert-file"] = file })
    end
  end
  if files.trusted_ca_file ~= "" then
    local vok, verr = cert.verify(files.client_cert_file ~= "" and files.client_cert_file or file,
      files.trusted_ca_file, "client")
    if not vok then
      warn("peer client certificate does not verify against the trusted CA",
        { ["trusted-ca-file"] = files.trusted_ca_file, error = verr })
    end
  end
end

-- The certificate files in effect without binding: the configured ones, or
-- the auto-TLS pair where a running member keeps it.
local function files_unbound(cfg)
  local pts = cfg.peer_transport_security
  local files = { cert_file = pts.cert_file, key_file = pts.key_file, client_cert_file = pts.client_cert_file,
    trusted_ca_file = pts.trusted_ca_file }
  if pts.auto_tls and pts.cert_file == "" and pts.key_file == "" then
    local dir = cfg.data_dir .. "/fixtures/peer"
    if cert.inspect(dir .. "/cert.pem") then
      files.cert_file, files.key_file, files.client_cert_file = dir .. "/cert.pem", dir .. "/key.pem", ""
    end
  end
  return files
end

-- Opens and closes the peer listeners; fills report.listeners and returns
-- the certificate files in effect (auto-TLS replaces the configured ones).
local function check_listeners(cfg, report, capture)
  local pts = cfg.peer_transport_security
  local set, err, code = peers.configure_peer_listeners(cfg, { logger = capture })
  if not set then
    report.error, report.code = err, code
    if tostring(err):find("leave no TLS 1.2 cipher suite", 1, true) then
      add_difference(report, "tls12_without_suite")
    end
    return nil
  end
  for i = 1, #set do
    report.listeners[i] = { url = set[i]:url(), address = peers.bound_address(set[i]), tls = set[i]:tls() ~= nil }
  end
  local files = { cert_file = pts.cert_file, key_file = pts.key_file, client_cert_file = pts.client_cert_file,
    trusted_ca_file = pts.trusted_ca_file }
  if set.policy then
    local info = set.policy:info()
    files.cert_file, files.key_file = info.cert_file or files.cert_file, info.key_file or files.key_file
  end
  set:close(1)
  -- a preflight keeps nothing open
  if set.policy then set.policy:close() end
  return files
end

-- What etcd does after binding its listeners and before it serves peers,
-- and the CRL the listener loads on each handshake.
local function after_listeners(cfg, report, warn)
  local ok, err, code = startup.peer_client(cfg)
  if not ok then return nil, err, code end
  local pts = cfg.peer_transport_security
  local crl, cerr, ccode = startup.crl(cfg)
  if crl == nil then
    if startup.mtls(cfg) then
      add_difference(report, "crl_checked", "peer-crl-file")
      return nil, ("peer CRL file %s cannot be used (%s): every peer presenting a client certificate would be "
        .. "refused"):format(pts.crl_file, cerr), ccode
    end
    warn("peer CRL file cannot be used; a peer presenting a client certificate would be refused",
      { ["crl-file"] = pts.crl_file, error = cerr })
  elseif crl and crl.next_update and crl.next_update < os.time() then
    warn("peer CRL is past its nextUpdate", { ["crl-file"] = crl.file })
  end
  return true
end

--- Runs the preflight.
-- @tparam table cfg a configuration (validated with `config.new` if needed)
-- @tparam[opt] table opts `explain` (boolean): add every effective setting
-- and where it came from; `strict`: every certificate or cluster warning
-- fails the check (code "ESTRICT"); `bind` (default true; false: do not bind,
-- for a member that is running); `peers`: probe every other member of
-- initial-cluster (`report.peers`); `env` (os.getenv or a table: the
-- ETCD_INITIAL_CLUSTER... variables when cfg came from flags)
-- @treturn table the report (see the module doc); a configuration that does
-- not validate gives a failed report, never an error
function M.check(cfg, opts)
  opts = opts or {}
  if type(cfg) ~= "table" then error("bad argument #1 to 'check' (table expected, got " .. type(cfg) .. ")", 2) end
  local c, err, code = config.new(cfg)
  if not c then return M.failure(err, code) end
  cfg = c
  local report = M.failure()
  for _, n in ipairs(cfg._notes) do
    if is_warning(n) then
      report.warnings[#report.warnings + 1] = { level = n.level, msg = n.msg, fields = n.fields, text = n.text }
    end
  end
  report.etcd_version = cfg._etcd_version or etcd_versions.NEWEST
  for _, d in ipairs(cfg._differences or {}) do
    report.differences[#report.differences + 1] = d
  end
  local prof = cfg._profile or etcd_versions.resolve(report.etcd_version)
  for _, u in ipairs(cfg._peer_urls) do
    if u.scheme == "unixs" and not prof.unixs_tls then add_difference(report, "unixs_plain", u.url) end
  end
  local capture = log.capture { level = "info" }
  local ncert = 0
  local function warn(m, f)
    ncert = ncert + 1
    capture:warn(m, f)
  end
  -- etcd opens its log outputs while validating, before any listener
  local lok, lerr, lcode = startup.log_outputs(cfg)
  local files
  if not lok then
    report.error, report.code = lerr, lcode
  elseif opts.bind == false then
    files = files_unbound(cfg)
  else
    files = check_listeners(cfg, report, capture)
  end
  if files then
    local ok, aerr, acode = after_listeners(cfg, report, warn)
    if ok then
      report.ok = true
      local pts = cfg.peer_transport_security
      local auto = pts.auto_tls and pts.cert_file == "" and pts.key_file == ""
      if auto then
        report.notes[#report.notes + 1] = { level = "info", msg = "peer auto-TLS: peers do not verify each "
          .. "other's certificates (etcd skips verification for auto-TLS peers)" }
      end
      check_certificate(cfg, files, warn, report.certificates, auto)
    else
      report.error, report.code = aerr, acode
    end
  end
  if report.ok then
    local cok, cerr, ccode = check_cluster.run(cfg, files, warn, report, opts)
    if not cok then report.ok, report.error, report.code = false, cerr, ccode end
  end
  if report.ok and opts.strict and ncert > 0 then
    report.ok, report.error, report.code = false,
      ("strict: %d certificate or cluster warning%s"):format(ncert, ncert == 1 and "" or "s"), "ESTRICT"
  end
  for _, e in ipairs(capture.entries) do
    if is_warning(e) then
      report.warnings[#report.warnings + 1] = { level = e.level, msg = e.msg, fields = e.fields }
    end
  end
  if opts.explain then
    report.explain = {}
    for i, row in ipairs(config.explain(cfg)) do
      report.explain[i] = { key = row.yaml, value = row.value, source = row.source }
    end
  end
  return report
end

return M
