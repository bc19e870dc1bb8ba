--- The option catalogue of peerlisten.config: the etcd options that concern
-- peer listeners (key path, type, default, flag name, YAML key, ETCD_*
-- variable), the other flags and YAML keys etcd knows, which flags only some
-- etcd versions define, and how one raw value is checked and converted.
-- Private to peerlisten.config and peerlisten.config_flags.
-- @module peerlisten.config_options

local M = {}

-- Options that concern peer listeners: key path, type, default, flag name.
local OPTIONS = {
  { "name", "string", "default", "name" },
  { "data_dir", "string", "", "data-dir" },
  { "listen_peer_urls", "urls", "http://localhost:2380", "listen-peer-urls" },
  { "peer_transport_security.cert_file", "string", "", "peer-cert-file" },
  { "peer_transport_security.key_file", "string", "", "peer-key-file" },
  { "peer_transport_security.client_cert_file", "string", "", "peer-client-cert-file" },
  { "peer_transport_security.client_key_file", "string", "", "peer-client-key-file" },
  { "peer_transport_security.trusted_ca_file", "string", "", "peer-trusted-ca-file" },
  { "peer_transport_security.client_cert_auth", "bool", false, "peer-client-cert-auth" },
  { "peer_transport_security.crl_file", "string", "", "peer-crl-file" },
  { "peer_transport_security.auto_tls", "bool", false, "peer-auto-tls" },
  { "peer_transport_security.allowed_cn", "list", {}, "peer-cert-allowed-cn" },
  { "peer_transport_security.allowed_hostname", "list", {}, "peer-cert-allowed-hostname" },
  { "peer_transport_security.skip_client_san_verification", "bool", false,
    "peer-skip-client-san-verification" },
  { "cipher_suites", "list", {}, "cipher-suites" },
  { "tls_min_version", "string", "TLS1.2", "tls-min-version" },
  { "tls_max_version", "string", "", "tls-max-version" },
  { "self_signed_cert_validity", "uint", 1, "self-signed-cert-validity" },
  { "socket_options.reuse_port", "bool", false, "socket-reuse-port" },
  { "socket_options.reuse_address", "bool", false, "socket-reuse-address" },
  { "log_level", "string", "info", "log-level" },
  { "log_format", "string", "json", "log-format" },
  { "log_outputs", "list", { "default" }, "log-outputs" },
  { "logger", "string", "zap", "logger" },
  { "raft_read_timeout", "duration", 5, "raft-read-timeout" },
  { "raft_write_timeout", "duration", 5, "raft-write-timeout" },
}

local BY_KEY, BY_FLAG = {}, {}
for _, o in ipairs(OPTIONS) do
  local opt = { key = o[1], type = o[2], default = o[3], flag = o[4] }
  opt.yaml = o[1]:gsub("_", "-")
  opt.env = "ETCD_" .. o[4]:upper():gsub("-", "_")
  BY_KEY[opt.key] = opt
  BY_FLAG[opt.flag] = opt
  o.opt = opt
end
BY_FLAG["experimental-peer-skip-client-san-verification"] =
  BY_KEY["peer_transport_security.skip_client_san_verification"]

--- Other flags etcd knows (kept and ignored). `true` marks boolean flags.
local OTHER_FLAGS = {
  ["wal-dir"] = false, ["snapshot-count"] = false, ["heartbeat-interval"] = false,
  ["election-timeout"] = false, ["initial-election-tick-advance"] = true, ["listen-client-urls"] = false,
  ["listen-client-http-urls"] = false, ["max-snapshots"] = false, ["max-wals"] = false,
  ["quota-backend-bytes"] = false, ["backend-batch-interval"] = false, ["backend-batch-limit"] = false,
  ["backend-bbolt-freelist-type"] = false, ["max-txn-ops"] = false, ["max-request-bytes"] = false,
  ["max-concurrent-streams"] = false, ["grpc-keepalive-min-time"] = false, ["grpc-keepalive-interval"] = false,
  ["grpc-keepalive-timeout"] = false, ["initial-advertise-peer-urls"] = false, ["initial-cluster"] = false,
  ["initial-cluster-state"] = false, ["initial-cluster-token"] = false, ["advertise-client-urls"] = false,
  ["discovery"] = false, ["discovery-fallback"] = false, ["discovery-proxy"] = false, ["discovery-srv"] = false,
  ["discovery-srv-name"] = false, ["strict-reconfig-check"] = true, ["pre-vote"] = true,
  ["auto-compaction-retention"] = false, ["auto-compaction-mode"] = false, ["enable-v2"] = true,
  ["cert-file"] = false, ["key-file"] = false, ["client-cert-file"] = false, ["client-key-file"] = false,
  ["client-cert-auth"] = true, ["client-crl-file"] = false, ["client-cert-allowed-hostname"] = false,
  ["trusted-ca-file"] = false, ["auto-tls"] = true, ["cors"] = false, ["host-whitelist"] = false,
  ["auth-token"] = false, ["bcrypt-cost"] = false, ["auth-token-ttl"] = false, ["enable-pprof"] = true,
  ["metrics"] = false, ["listen-metrics-urls"] = false, ["log-outputs"] = false, ["log-rotation-config-json"] = false,
  ["enable-log-rotation"] = true, ["proxy"] = false, ["proxy-failure-wait"] = false,
  ["proxy-refresh-interval"] = false, ["proxy-dial-timeout"] = false, ["proxy-write-timeout"] = false,
  ["proxy-read-timeout"] = false, ["force-new-cluster"] = true, ["debug"] = true, ["log-package-levels"] = false,
  ["unsafe-no-fsync"] = true, ["socket-reuse-port"] = true, ["socket-reuse-address"] = true,
  ["v2-deprecation"] = false, ["enable-grpc-gateway"] = true, ["client-cert-allowed-cn"] = false,
  ["config-file"] = false, ["version"] = true, ["downgrade-check-time"] = false,
  ["feature-gates"] = false, ["corrupt-check-time"] = false, ["compact-hash-check-time"] = false,
  ["watch-progress-notify-interval"] = false, ["warning-apply-duration"] = false,
  ["snapshot-catchup-entries"] = false, ["peer-auto-tls"] = true,
}

-- YAML keys etcd knows besides OPTIONS (kept in _other, unused here).
local OTHER_YAML = {}
for f in pairs(OTHER_FLAGS) do OTHER_YAML[f] = true end
for _, k in ipairs { "client-transport-security", "log-rotation-config-json", "auto-compaction-retention" } do
  OTHER_YAML[k] = true
end
for _, k in ipairs { "cert-file", "key-file", "client-cert-auth", "trusted-ca-file", "auto-tls",
  "client-crl-file", "client-cert-allowed-hostname", "config-file", "version", "debug",
  "peer-auto-tls", "socket-reuse-port", "socket-reuse-address" } do
  OTHER_YAML[k] = nil  -- flag-only names: not YAML keys
end
local CLIENT_SECURITY_KEYS = { ["cert-file"] = true, ["key-file"] = true, ["client-cert-file"] = true,
  ["client-key-file"] = true, ["client-cert-auth"] = true, ["trusted-ca-file"] = true, ["auto-tls"] = true,
  ["allowed-cn"] = true, ["allowed-hostname"] = true, ["crl-file"] = true,
  ["skip-client-san-verification"] = true }

-- Top-level YAML keys that only some etcd versions read.
local YAML_VERSIONED = { ["tls-min-version"] = true, ["tls-max-version"] = true,
  ["self-signed-cert-validity"] = true, ["log-format"] = true, ["socket-options"] = true }

local SUBTABLES = { peer_transport_security = true, socket_options = true }

local function copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = copy(x) end
  return t
end

-- Parses a Go duration ("5s", "1m30s", "500ms") or a number of seconds.
local UNITS = { ns = 1e-9, us = 1e-6, ["µs"] = 1e-6, ms = 1e-3, s = 1, m = 60, h = 3600 }
local function duration(v)
  if type(v) == "number" then return v >= 0 and v or nil end
  if type(v) ~= "string" or v == "" then return nil end
  if v == "0" then return 0 end
  local total, rest = 0, v
  while rest ~= "" do
    local num, unit, tail = rest:match("^(%d+%.?%d*)(%a+)(.*)$")
    if not num or not UNITS[unit] then return nil end
    total = total + tonumber(num) * UNITS[unit]
    rest = tail
  end
  return total
end

local function typename(v)
  if v == nil then return "nothing" end
  if math.type(v) == "float" then return "number" end
  return type(v)
end

local function split_commas(v)
  local out = {}
  for item in (v .. ","):gmatch("([^,]*),") do out[#out + 1] = item end
  return out
end

-- One converter per option type: (value, textual) -> value or nil, message.
-- `textual` is true for flag and ETCD_* values, which are strings to parse.
local CONVERT = {}

function CONVERT.string(v)
  if type(v) ~= "string" then return nil, "expected a string, got " .. typename(v) end
  return v
end

function CONVERT.bool(v, textual)
  if textual then
    if v == "true" or v == "1" or v == "t" or v == "T" or v == "TRUE" or v == "True" then return true end
    if v == "false" or v == "0" or v == "f" or v == "F" or v == "FALSE" or v == "False" then return false end
    return nil, ("parse error: strconv.ParseBool: parsing %q: invalid syntax"):format(v)
  end
  if type(v) ~= "boolean" then return nil, "expected a boolean, got " .. typename(v) end
  return v
end

function CONVERT.uint(v, textual)
  if textual then
    local n = tonumber(v)
    if not n or math.type(n) ~= "integer" or n < 0 then
      return nil, ("parse error: strconv.ParseUint: parsing %q: invalid syntax"):format(v)
    end
    return n
  end
  if math.type(v) ~= "integer" or v < 0 then return nil, "expected a non-negative integer, got " .. typename(v) end
  return v
end

function CONVERT.duration(v, textual)
  local d = duration(v)
  if not d then
    if textual then return nil, ("time: invalid duration %q"):format(tostring(v)) end
    return nil, "expected a duration (seconds, or a string such as \"5s\"), got " .. typename(v)
  end
  return d
end

function CONVERT.list(v, textual)
  if textual then return split_commas(v) end
  if type(v) == "string" then
    if v == "" then return {} end
    return split_commas(v)
  end
  if type(v) ~= "table" then return nil, "expected a list of strings, got " .. typename(v) end
  local out = {}
  for i, item in ipairs(v) do
    if type(item) ~= "string" then
      return nil, ("expected a list of strings, item %d is a %s"):format(i, typename(item))
    end
    out[i] = item
  end
  return out
end

function CONVERT.urls(v)
  if type(v) == "table" then
    for i, item in ipairs(v) do
      if type(item) ~= "string" then
        return nil, ("expected a list of URL strings, item %d is a %s"):format(i, typename(item))
      end
    end
  elseif type(v) ~= "string" then
    return nil, "expected a URL string or a list of URL strings, got " .. typename(v)
  end
  return v
end

-- Checks and converts one raw value for option `opt`; `from` is "table",
-- "file", "flag" or "env". Returns value or nil, message.
local function coerce(opt, v, from)
  local convert = CONVERT[opt.type] or error("unknown option type " .. tostring(opt.type))
  return convert(v, from == "flag" or from == "env")
end

-- Flags that only some etcd versions define: the profile row that has them.
local FLAG_ROW = { ["tls-min-version"] = "tls_version_flags", ["tls-max-version"] = "tls_version_flags",
  ["socket-reuse-port"] = "socket_flags", ["socket-reuse-address"] = "socket_flags",
  ["peer-client-cert-file"] = "peer_client_cert_flags", ["peer-client-key-file"] = "peer_client_cert_flags",
  ["self-signed-cert-validity"] = "self_signed_validity_flag", ["raft-read-timeout"] = "raft_timeout_flags",
  ["raft-write-timeout"] = "raft_timeout_flags", ["log-format"] = "log_format_flag",
  ["peer-skip-client-san-verification"] = "skip_san_flag", debug = "debug_flags",
  ["log-package-levels"] = "debug_flags" }

-- etcd 3.4.23's experimental flags (true: boolean); later versions have many
-- more, and any experimental-* flag is accepted for them.
local EXPERIMENTAL_34 = { ["experimental-initial-corrupt-check"] = true, ["experimental-corrupt-check-time"] = false,
  ["experimental-enable-v2v3"] = false, ["experimental-backend-bbolt-freelist-type"] = false,
  ["experimental-enable-lease-checkpoint"] = true, ["experimental-compaction-batch-limit"] = false,
  ["experimental-watch-progress-notify-interval"] = false, ["experimental-warning-apply-duration"] = false }

local function flag_defined(prof, name)
  local row = FLAG_ROW[name]
  if row then return prof[row] end
  return BY_FLAG[name] ~= nil or OTHER_FLAGS[name] ~= nil or EXPERIMENTAL_34[name] ~= nil
    or (prof.line ~= "3.4" and name:match("^experimental%-") ~= nil)
end

-- The URL-list options for url.parse_list under a profile.
local function url_opts(prof, from)
  return { sort = from ~= "table", unique = (from == "flag" or from == "env") and prof.unique_flag_urls,
    unix_hostport = not prof.unix_any_path }
end

local ENV_OPT = {}
for _, o in ipairs(OPTIONS) do ENV_OPT[o.opt.env] = o.opt end
ENV_OPT["ETCD_EXPERIMENTAL_PEER_SKIP_CLIENT_SAN_VERIFICATION"] =
  BY_KEY["peer_transport_security.skip_client_san_verification"]
local ENV_OTHER = {}
for f in pairs(OTHER_FLAGS) do ENV_OTHER["ETCD_" .. f:upper():gsub("-", "_")] = true end

M.OPTIONS, M.BY_KEY, M.BY_FLAG = OPTIONS, BY_KEY, BY_FLAG
M.OTHER_FLAGS, M.OTHER_YAML, M.EXPERIMENTAL_34 = OTHER_FLAGS, OTHER_YAML, EXPERIMENTAL_34
M.CLIENT_SECURITY_KEYS, M.YAML_VERSIONED, M.SUBTABLES = CLIENT_SECURITY_KEYS, YAML_VERSIONED, SUBTABLES
M.FLAG_ROW, M.ENV_OPT, M.ENV_OTHER = FLAG_ROW, ENV_OPT, ENV_OTHER
M.copy, M.typename, M.coerce, M.flag_defined, M.url_opts = copy, typename, coerce, flag_defined, url_opts

return M
