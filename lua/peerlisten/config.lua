--- etcd configuration for peer listeners: Lua tables, YAML files, flags, ETCD_* env.
--
-- Every source produces the same validated plain table, keyed by etcd's YAML
-- keys with '-' written '_':
--
--    { name, data_dir, listen_peer_urls = { "http://localhost:2380" },
--      peer_transport_security = { cert_file, key_file, client_cert_file,
--        client_key_file, trusted_ca_file, client_cert_auth, crl_file, auto_tls,
--        allowed_cn = {}, allowed_hostname = {}, skip_client_san_verification },
--      cipher_suites = {}, tls_min_version, tls_max_version,
--      self_signed_cert_validity, socket_options = { reuse_port, reuse_address },
--      log_level, log_format, log_outputs, logger,
--      raft_read_timeout, raft_write_timeout }   -- timeouts in seconds
--
-- plus bookkeeping under keys starting with '_' (ignored when the table is fed
-- back to `config.new`): `_notes`, the log entries etcd would write while
-- loading (`{ level =, msg =, fields = }`, e.g. `recognized and used environment
-- variable`, unknown-key warnings), `_sources`, where each value came from
-- (see `explain`), `_other`, keys etcd knows that do not concern peer
-- listeners (kept, unused), `_peer_urls`, the listen-peer URLs parsed
-- (`url.parse` tables, in the order of `listen_peer_urls`), `_file`, the
-- config file path, `_etcd_version` and `_profile`, the etcd release whose
-- rules were applied (peerlisten.etcd_versions), and `_differences`, the
-- differences from that etcd applied on purpose (`{ id =, text =, key = }`).
-- Failures are `nil, message, "ECONFIG"`; what etcd's flag package refuses
-- (unknown flag, malformed value) is `nil, message, "EUSAGE"` (the CLI exits
-- 2 for it, as etcd does).
-- @module peerlisten.config

local core = require "peerlisten.core"
local optional = require "peerlisten.optional"
local url = require "peerlisten.url"
local etcd_versions = require "peerlisten.etcd_versions"
local etcd_yaml = require "peerlisten.etcd_yaml"

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

-- Levenshtein distance, for "did you mean".
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    local ca = a:byte(i)
    for j = 1, #b do
      local cost = ca == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

--- The known key closest to `key` (both in '-' form), or nil.
local function suggest(key, dash)
  local leaf = key:match("([^.]+)$")
  -- a flag name used as a YAML key: its YAML key is meant
  local byflag = BY_FLAG[leaf]
  if byflag then return dash and byflag.yaml or byflag.key end
  local best, bestd
  local function try(candidate)
    local d = distance(key, candidate)
    local dl = distance(leaf, candidate:match("([^.]+)$"))
    if dl < d then d = dl end
    if not bestd or d < bestd then best, bestd = candidate, d end
  end
  for _, o in ipairs(OPTIONS) do try(o.opt.yaml) end
  for k in pairs(OTHER_YAML) do try(k) end
  if bestd and bestd <= math.max(2, #leaf // 4) then
    return dash and best or best:gsub("-", "_")
  end
end

local function unknown_note(notes, shown, dash)
  local s = suggest(shown:gsub("_", "-"), true)
  if s and not dash then s = s:gsub("-", "_") end
  local fields = { key = shown }
  local text = ("unknown configuration key %q"):format(shown)
  if s then
    fields["did-you-mean"] = s
    text = text .. " (did you mean " .. s .. "?)"
  end
  notes[#notes + 1] = { level = "warn", msg = "unknown configuration key", fields = fields, text = text }
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

-- Checks and converts one raw value for option `opt`; `from` is "table",
-- "file", "flag" or "env". Returns value or nil, message.
local function coerce(opt, v, from)
  local t = opt.type
  local textual = from == "flag" or from == "env"
  if t == "string" then
    if type(v) ~= "string" then return nil, "expected a string, got " .. typename(v) end
    return v
  elseif t == "bool" then
    if textual then
      if v == "true" or v == "1" or v == "t" or v == "T" or v == "TRUE" or v == "True" then return true end
      if v == "false" or v == "0" or v == "f" or v == "F" or v == "FALSE" or v == "False" then return false end
      return nil, ("parse error: strconv.ParseBool: parsing %q: invalid syntax"):format(v)
    end
    if type(v) ~= "boolean" then return nil, "expected a boolean, got " .. typename(v) end
    return v
  elseif t == "uint" then
    if textual then
      local n = tonumber(v)
      if not n or math.type(n) ~= "integer" or n < 0 then
        return nil, ("parse error: strconv.ParseUint: parsing %q: invalid syntax"):format(v)
      end
      return n
    end
    if math.type(v) ~= "integer" or v < 0 then return nil, "expected a non-negative integer, got " .. typename(v) end
    return v
  elseif t == "duration" then
    local d = duration(v)
    if not d then
      if textual then return nil, ("time: invalid duration %q"):format(tostring(v)) end
      return nil, "expected a duration (seconds, or a string such as \"5s\"), got " .. typename(v)
    end
    return d
  elseif t == "list" then
    if textual then
      local out = {}
      for item in (v .. ","):gmatch("([^,]*),") do out[#out + 1] = item end
      return out
    end
    if type(v) == "string" then
      if v == "" then return {} end
      local out = {}
      for item in (v .. ","):gmatch("([^,]*),") do out[#out + 1] = item end
      return out
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
  elseif t == "urls" then
    if type(v) == "string" or type(v) == "table" then
      if type(v) == "table" then
        for i, item in ipairs(v) do
          if type(item) ~= "string" then
            return nil, ("expected a list of URL strings, item %d is a %s"):format(i, typename(item))
          end
        end
      end
      return v
    end
    return nil, "expected a URL string or a list of URL strings, got " .. typename(v)
  end
  error("unknown option type " .. tostring(t))
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

local LOG_LEVELS = { debug = true, info = true, warn = true, error = true, dpanic = true, panic = true, fatal = true }

-- The URL-list options for url.parse_list under a profile.
local function url_opts(prof, from)
  return { sort = from ~= "table", unique = (from == "flag" or from == "env") and prof.unique_flag_urls,
    unix_hostport = not prof.unix_any_path }
end

-- Checks a flag value the way Go's flag package does while parsing (a bad
-- one is a usage error, exit status 2). Returns true or nil, message.
local function flag_value_ok(opt, name, value, prof)
  if opt.type == "bool" then
    if coerce(opt, value, "flag") == nil then
      return nil, ("invalid boolean value %q for -%s: parse error"):format(value, name)
    end
  elseif opt.type == "urls" then
    if value ~= "" then
      local ok, err = url.parse_list(value, url_opts(prof, "flag"))
      if not ok then return nil, ("invalid value %q for flag -%s: %s"):format(value, name, err) end
    end
  elseif opt.type == "uint" or opt.type == "duration" then
    if coerce(opt, value, "flag") == nil then
      return nil, ("invalid value %q for flag -%s: parse error"):format(value, name)
    end
  end
  return true
end

local function add_difference(diffs, id, fields)
  for _, d in ipairs(diffs) do
    if d.id == id and (d.key == (fields and fields.key)) then return end
  end
  local d = { id = id, text = etcd_versions.DIFFERENCES[id] }
  for k, v in pairs(fields or {}) do d[k] = v end
  diffs[#diffs + 1] = d
end

local function set_path(cfg, key, value)
  local a, b = key:match("^([^.]+)%.(.+)$")
  if a then
    cfg[a] = cfg[a] or {}
    cfg[a][b] = value
  else
    cfg[key] = value
  end
end

local validated = setmetatable({}, { __mode = "k" })

-- etcd's Validate checks the TLS versions, and refuses cipher suites with a
-- TLS1.3 minimum, before anything looks at the cipher names (those are
-- configure_peer_listeners' step). The C policy owns these rules: a
-- throw-away policy with just these settings is asked, with the cipher list
-- only when the minimum is TLS1.3 (where the policy refuses any list before
-- reading names). Returns its message, or nil when the settings pass.
local function tls_error(cfg)
  local policy, err = core.tls_policy { min_version = cfg.tls_min_version, max_version = cfg.tls_max_version,
    cipher_suites = cfg.tls_min_version == "TLS1.3" and cfg.cipher_suites or nil }
  if not policy then return err end
  policy:close()
end

-- etcd's post-processing and Validate() checks on a built configuration,
-- under profile `prof`. Collects messages in `errors`; returns true when one
-- of them is a usage error (exit status 2 for etcd).
local function validate(cfg, mode, prof, notes, errors, peer_urls)
  local usage = false
  if cfg.self_signed_cert_validity == 0 and cfg._sources.self_signed_cert_validity == "file" then
    cfg.self_signed_cert_validity = 1
  end
  if mode == "load" then
    for _, k in ipairs { "raft_read_timeout", "raft_write_timeout" } do
      local s = cfg._sources[k]
      if (s == "flag" or s == "env") and cfg[k] < 5 then
        cfg[k] = 5
        notes[#notes + 1] = { level = "info", msg = k:gsub("_", "-") .. " increased to minimum value: 5s" }
      end
    end
  end
  if cfg.data_dir == "" then
    cfg.data_dir = cfg.name .. ".etcd"
    if mode ~= "table" then
      notes[#notes + 1] = { level = "warn", msg = "'data-dir' was empty; using default",
        fields = { ["data-dir"] = cfg.data_dir } }
    end
  end
  if #errors == 0 then
    cfg._peer_urls = peer_urls or assert(url.parse_list(cfg.listen_peer_urls))
    for _, u in ipairs(cfg._peer_urls) do
      local ok, err = url.check_bind(u)
      if not ok then errors[#errors + 1] = err end
    end
  end
  local terr = tls_error(cfg)
  if terr then errors[#errors + 1] = terr end
  if not LOG_LEVELS[cfg.log_level] then
    errors[#errors + 1] = ('unknown log level "%s"'):format(cfg.log_level)
    if mode ~= "table" then
      -- etcd panics (exit status 2) here; a clean message instead
      usage = true
      add_difference(cfg._differences, "log_level_panic")
    end
  end
  if cfg.log_format ~= "json" and cfg.log_format ~= "console" then
    errors[#errors + 1] = ('unknown log format: %s, supported values json, console'):format(cfg.log_format)
  end
  if cfg._sources.logger == "default" and prof.capnslog then cfg.logger = "capnslog" end
  if cfg.logger == "capnslog" then
    if not prof.capnslog then
      errors[#errors + 1] = "--logger=capnslog is removed in v3.5"
    else
      for _, o in ipairs(cfg.log_outputs) do
        if o ~= "default" and o ~= "stderr" and o ~= "stdout" then
          errors[#errors + 1] = ('unknown log-output "%s" (only supports "default", "stderr", "stdout")'):format(o)
          break
        end
      end
      add_difference(cfg._differences, "capnslog_format")
    end
  elseif cfg.logger ~= "zap" then
    errors[#errors + 1] = ('unknown logger option "%s"'):format(cfg.logger)
  end
  local pts = cfg.peer_transport_security
  if mode ~= "table" and pts.cert_file ~= "" and pts.key_file ~= ""
    and #pts.allowed_cn > 0 and #pts.allowed_hostname > 0 then
    -- etcd checks this for its listeners and for its own peer client, so also
    -- with http URLs only
    if prof.allowed_list_flags then
      local function golist(l)
        local q = {}
        for i, x in ipairs(l) do q[i] = ("%q"):format(x) end
        return "[" .. table.concat(q, " ") .. "]"
      end
      errors[#errors + 1] = ("AllowedCNs and AllowedHostnames are mutually exclusive (cns=%s, hostnames=%s)")
        :format(golist(pts.allowed_cn), golist(pts.allowed_hostname))
    else
      errors[#errors + 1] = ("AllowedCN and AllowedHostname are mutually exclusive (cn=%q, hostname=%q)")
        :format(pts.allowed_cn[1], pts.allowed_hostname[1])
    end
  end
  return usage
end

-- Builds the validated table. `raw` maps option keys to raw values, `sources`
-- maps option keys to "table"/"file"/"flag"/"env". `notes` collects log
-- entries. `errors` collects messages.
local function build(raw, sources, notes, errors, mode, prof, diffs)
  prof = prof or etcd_versions.resolve(etcd_versions.NEWEST)
  local cfg = { _notes = notes, _sources = {}, _other = {}, _etcd_version = prof.version, _profile = prof,
    _differences = diffs or {} }
  local peer_urls
  for _, o in ipairs(OPTIONS) do
    local opt = o.opt
    local v, from = raw[opt.key], sources[opt.key]
    local value
    if v ~= nil then
      local shown = (from == "file") and opt.yaml or (from == "flag" and "--" .. opt.flag)
        or (from == "env" and opt.env) or opt.key
      if opt.type == "urls" then
        if type(v) == "string" and v == "" or type(v) == "table" and #v == 0 then
          v, from = nil, nil
        else
          local ok, err = coerce(opt, v, from)
          if not ok then
            errors[#errors + 1] = shown .. ": " .. err
          else
            local list, perr = url.parse_list(v, url_opts(prof, from))
            if not list then
              if from == "file" then
                errors[#errors + 1] = "unexpected error setting up listen-peer-urls: " .. perr
              elseif from == "flag" then
                errors[#errors + 1] = ("invalid value %q for flag -listen-peer-urls: %s"):format(v, perr)
              elseif from == "env" then
                errors[#errors + 1] = ("invalid value %q for %s: %s"):format(v, opt.env, perr)
              else
                errors[#errors + 1] = "listen_peer_urls: " .. perr
              end
            else
              peer_urls = list
              value = url.strings(list)
            end
          end
        end
      else
        local c, err = coerce(opt, v, from)
        if (from == "flag" or from == "env") and not prof.allowed_list_flags
          and (opt.flag == "peer-cert-allowed-cn" or opt.flag == "peer-cert-allowed-hostname") then
          c = v == "" and {} or { v }   -- one string before etcd 3.5.15: "a,b" is one name
        end
        if c == nil then
          if from == "flag" then
            errors[#errors + 1] = ("invalid value %q for flag -%s: %s"):format(tostring(v), opt.flag, err)
          elseif from == "env" then
            errors[#errors + 1] = ("invalid value %q for %s: %s"):format(tostring(v), opt.env, err)
          else
            errors[#errors + 1] = shown .. ": " .. err
          end
        else
          value = c
        end
      end
    end
    if value == nil and v == nil then from = nil end
    if value == nil then
      value = copy(opt.default)
      if opt.type == "urls" then value = { opt.default } end
    end
    set_path(cfg, opt.key, value)
    cfg._sources[opt.key] = from or "default"
  end

  local usage = validate(cfg, mode, prof, notes, errors, peer_urls)
  if #errors > 0 then
    return nil, table.concat(errors, "; "), usage and "EUSAGE" or "ECONFIG"
  end
  validated[cfg] = true
  return cfg
end

--- Validates a configuration given as a Lua table.
-- Keys are etcd's YAML keys with '-' written '_' ('-' is accepted too);
-- `peer_transport_security` and `socket_options` are sub-tables. URLs are a
-- list or a comma-separated string and keep their order (as etcd's embed
-- API). Unknown keys are warned about in `cfg._notes` (with "did you mean");
-- keys etcd knows that do not concern peers are kept in `cfg._other`. Keys
-- starting with '_' are ignored, so a validated table can be passed again.
-- @tparam table tbl
-- @treturn[1] table the validated configuration
-- @treturn[2] nil
-- @treturn[2] string every bad key, named
-- @treturn[2] string "ECONFIG"
function M.new(tbl)
  if type(tbl) ~= "table" then error("bad argument #1 to 'new' (table expected, got " .. type(tbl) .. ")", 2) end
  if validated[tbl] then return tbl end
  local raw, sources, notes, errors = {}, {}, {}, {}
  local other = {}
  local keys = {}
  for k in pairs(tbl) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    local v = tbl[k]
    if type(k) ~= "string" then
      errors[#errors + 1] = ("configuration keys must be strings, got %s"):format(type(k))
    elseif k:sub(1, 1) ~= "_" then
      local key = k:gsub("-", "_")
      if SUBTABLES[key] then
        if type(v) ~= "table" then
          errors[#errors + 1] = ("%s: expected a table, got %s"):format(key, typename(v))
        else
          local subkeys = {}
          for sk in pairs(v) do subkeys[#subkeys + 1] = sk end
          table.sort(subkeys, function(a, b) return tostring(a) < tostring(b) end)
          for _, sk in ipairs(subkeys) do
            local sv = v[sk]
            local full = key .. "." .. tostring(sk):gsub("-", "_")
            if BY_KEY[full] then
              raw[full], sources[full] = sv, "table"
            else
              unknown_note(notes, full, false)
            end
          end
        end
      elseif BY_KEY[key] then
        raw[key], sources[key] = v, "table"
      elseif OTHER_YAML[key:gsub("_", "-")] or key:match("^experimental_") then
        other[key] = v
      else
        unknown_note(notes, key, false)
      end
    end
  end
  local cfg, err, code = build(raw, sources, notes, errors, "table")
  if not cfg then return nil, err, code end
  cfg._other = other
  return cfg
end

local function is_null(v)
  if v == nil then return true end
  local ok, lyaml = pcall(require, "lyaml")
  return ok and v == lyaml.null
end

-- Reads an etcd YAML file into raw option values.
local function read_file(path, raw, sources, notes, errors, other, prof, diffs)
  -- Go's os.ReadFile wording, as etcd reports it: "open <path>: no such file or directory".
  -- The C reader never blocks on open (a FIFO), reads regular files only
  -- (not /dev/zero) and caps the size (16 MiB).
  local text, rerr = core.cert_read_file(path)
  if not text then return nil, rerr end
  local lyaml, lerr = optional.require "lyaml"
  if not lyaml then return nil, lerr end
  local ok, doc = pcall(lyaml.load, text)
  if not ok then
    local msg = tostring(doc)
    local line, rest = msg:match("^(%d+):%d+: (.*)$")
    if line then msg = ("yaml: line %d: %s"):format(tonumber(line), rest) end
    return nil, ("error converting YAML to JSON: %s"):format(msg)
  end
  local shape = etcd_yaml.shape(text)
  if shape then
    local terr, ignored = etcd_yaml.check(shape, prof)
    if ignored then add_difference(diffs, "ignored_security_key", { key = ignored }) end
    if terr then return nil, terr end
  end
  if doc == nil or is_null(doc) then doc = {} end
  if type(doc) ~= "table" then
    return nil, ("error unmarshaling JSON: while decoding JSON: json: cannot unmarshal %s into Go value of type "
      .. "embed.configYAML"):format(type(doc) == "boolean" and "bool" or type(doc))
  end
  local top, sec = etcd_yaml.schema(prof)
  local keys = {}
  for k in pairs(doc) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for _, key in ipairs(keys) do
    local v = doc[key]
    local under = key:gsub("-", "_")
    if under == "peer_transport_security" or under == "socket_options" or under == "client_transport_security" then
      if is_null(v) then
        v = nil
        if under == "peer_transport_security" and prof.null_security_invalid then
          errors[#errors + 1] = "invalid peer-transport-security"
        end
      elseif type(v) ~= "table" then
        errors[#errors + 1] = under == "peer_transport_security" and "invalid peer-transport-security"
          or ("invalid %s"):format(key)
      end
      if under == "client_transport_security" then
        other[key] = v
        for sk in pairs(type(v) == "table" and v or {}) do
          if not CLIENT_SECURITY_KEYS[tostring(sk)] then unknown_note(notes, key .. "." .. tostring(sk), true) end
        end
      elseif under == "socket_options" and not top["socket-options"] then
        notes[#notes + 1] = { level = "warn", msg = "configuration key not honoured by this etcd version",
          fields = { key = key, ["etcd-version"] = prof.version } }
      elseif type(v) == "table" then
        local subkeys = {}
        for sk in pairs(v) do subkeys[#subkeys + 1] = tostring(sk) end
        table.sort(subkeys)
        for _, sk in ipairs(subkeys) do
          local sv = v[sk]
          local full = under .. "." .. tostring(sk):gsub("-", "_")
          local known = under == "socket_options" or sec[sk]
          if BY_KEY[full] and tostring(sk):find("_", 1, true) == nil and known then
            if not is_null(sv) then
              sv = etcd_yaml.value(sv, sec[sk])
              if (sk == "allowed-cn" or sk == "allowed-hostname") and type(sv) == "string" then
                sv = sv == "" and {} or { sv }
              end
              raw[full], sources[full] = sv, "file"
            end
          else
            unknown_note(notes, key .. "." .. tostring(sk), true)
          end
        end
      end
    elseif BY_KEY[under] and not key:find("_", 1, true) and (top[key] or not YAML_VERSIONED[key]) then
      if not is_null(v) then raw[under], sources[under] = etcd_yaml.value(v, top[key]), "file" end
    elseif OTHER_YAML[key] or key:match("^experimental%-") then
      other[key] = v
    elseif YAML_VERSIONED[key] then
      notes[#notes + 1] = { level = "warn", msg = "configuration key not honoured by this etcd version",
        fields = { key = key, ["etcd-version"] = prof.version } }
    else
      unknown_note(notes, key, true)
    end
  end
  return true
end

-- Go flag-package parsing of etcd's command line into raw values.
-- Returns given (flag name -> value), or nil, message, code.
local function parse_args(args, raw, sources, prof)
  local given = {}
  local i = 1
  local n = #args
  while i <= n do
    local a = args[i]
    if type(a) ~= "string" then return nil, ("argument %d is not a string"):format(i), "EUSAGE" end
    if a == "--" then
      i = i + 1
      break
    end
    if a:sub(1, 1) ~= "-" or a == "-" then break end
    local body = a:gsub("^%-%-?", "")
    local name, value = body:match("^([^=]+)=(.*)$")
    name = name or body
    if name == "" or name:sub(1, 1) == "-" or name:sub(1, 1) == "=" then
      return nil, ("bad flag syntax: %s"):format(a), "EUSAGE"
    end
    if not flag_defined(prof, name) then
      return nil, ("flag provided but not defined: -%s"):format(name), "EUSAGE"
    end
    local opt = BY_FLAG[name]
    local isbool
    if opt then
      isbool = opt.type == "bool"
    elseif OTHER_FLAGS[name] ~= nil then
      isbool = OTHER_FLAGS[name]
    elseif EXPERIMENTAL_34[name] ~= nil then
      isbool = EXPERIMENTAL_34[name]
    else
      isbool = value == nil and (args[i + 1] == nil or args[i + 1]:sub(1, 1) == "-")
    end
    if value == nil then
      if isbool then
        value = "true"
      else
        i = i + 1
        if i > n then return nil, ("flag needs an argument: -%s"):format(name), "EUSAGE" end
        value = args[i]
      end
    end
    if opt then
      local ok, verr = flag_value_ok(opt, name, value, prof)
      if not ok then return nil, verr, "EUSAGE" end
      -- an empty URL list keeps the default, as etcd's "exception" value
      if not (opt.type == "urls" and value == "") then
        raw[opt.key], sources[opt.key] = value, "flag"
      end
      given[opt.key] = name
    else
      given["flag:" .. name] = value
    end
    i = i + 1
  end
  if i <= n then
    local shown = prof.quoted_stray_arg and ("%q"):format(args[i]) or ("'%s'"):format(args[i])
    return nil, shown .. " is not a valid flag", "ECONFIG"
  end
  return given
end

local function env_lookup(env)
  if type(env) == "function" then return env end
  if type(env) == "table" then return function(name) return env[name] end end
  return function() return nil end
end

-- Every ETCD_* variable name in env (a table, or the process environment
-- when env is os.getenv).
local function env_names(env)
  local names = {}
  if type(env) == "table" then
    for k in pairs(env) do
      if type(k) == "string" and k:match("^ETCD_") then names[#names + 1] = k end
    end
  elseif env == os.getenv then
    local fh = io.open("/proc/self/environ", "rb")
    if fh then
      local data = fh:read("a")
      fh:close()
      for kv in data:gmatch("([^%z]+)") do
        local k = kv:match("^(ETCD_[^=]*)=")
        if k then names[#names + 1] = k end
      end
    end
  end
  table.sort(names)
  return names
end

local ENV_OPT = {}
for _, o in ipairs(OPTIONS) do ENV_OPT[o.opt.env] = o.opt end
ENV_OPT["ETCD_EXPERIMENTAL_PEER_SKIP_CLIENT_SAN_VERIFICATION"] =
  BY_KEY["peer_transport_security.skip_client_san_verification"]
local ENV_OTHER = {}
for f in pairs(OTHER_FLAGS) do ENV_OTHER["ETCD_" .. f:upper():gsub("-", "_")] = true end

--- The profile of `v` (a version string, a profile, or nil for the newest).
local function profile_of(v)
  if type(v) == "table" and v.version then return v end
  return etcd_versions.resolve(v or etcd_versions.NEWEST)
end

-- etcd's error for a variable set next to its flag (the wording changed with zap in 3.5).
local function env_conflict(prof, envname)
  if prof.zap_env_conflict then
    return ("conflicting environment variable is shadowed by corresponding command-line flag (either unset "
      .. "environment variable or disable flag)) (environment-variable=%s)"):format(envname)
  end
  return ('conflicting environment variable %q is shadowed by corresponding command-line flag '
    .. '(either unset environment variable or disable flag)'):format(envname)
end

-- Applies the ETCD_* variables for flags not given (the etcd version's flags
-- only); returns etcd's conflict error for a variable set next to its flag.
local function apply_env(env, getenv, given, prof, raw, sources, notes)
  -- every flag given on the command line: a variable for it that is set
  -- at all (even empty) is a conflict, in flag-name order as etcd walks them
  local names = {}
  for k, v in pairs(given) do
    if k ~= "flag:config-file" then names[#names + 1] = k:match("^flag:(.*)$") or v end
  end
  table.sort(names)
  for _, name in ipairs(names) do
    local envname = "ETCD_" .. name:upper():gsub("-", "_")
    if getenv(envname) ~= nil then return env_conflict(prof, envname) end
  end
  for _, o in ipairs(OPTIONS) do
    local opt = o.opt
    local alias = opt.key == "peer_transport_security.skip_client_san_verification"
      and "ETCD_EXPERIMENTAL_PEER_SKIP_CLIENT_SAN_VERIFICATION" or nil
    for _, envname in ipairs { opt.env, alias } do
      local v = getenv(envname)
      local fname = envname:sub(6):lower():gsub("_", "-")
      if v and v ~= "" and flag_defined(prof, fname) then
        notes[#notes + 1] = { level = "info", msg = "recognized and used environment variable",
          fields = { ["variable-name"] = envname, ["variable-value"] = v } }
        raw[opt.key], sources[opt.key] = v, "env"
      end
    end
  end
  for _, name in ipairs(env_names(env)) do
    local fname = name:sub(6):lower():gsub("_", "-")
    local known = (ENV_OPT[name] or ENV_OTHER[name]) and flag_defined(prof, fname)
    if not known and name ~= "ETCD_CONFIG_FILE" then
      notes[#notes + 1] = { level = "warn", msg = "unrecognized environment variable",
        fields = { ["environment-variable"] = name .. "=" .. tostring(getenv(name)) } }
    end
  end
end

--- Loads a configuration as the etcd binary does.
-- With a config file (`file`, `--config-file` in `args`, or `ETCD_CONFIG_FILE`)
-- the file is used and other flags and environment variables are ignored
-- (etcd's info line says so), except `--raft-read-timeout` and
-- `--raft-write-timeout` on the command line, as etcd; the command line is
-- still parsed first, so a malformed flag value is a usage error. Otherwise
-- flags win, an `ETCD_*` variable applies when its flag was not given, and a
-- variable that is set (even empty) next to its flag is etcd's conflict
-- error. Unknown `ETCD_*` variables are warned about.
-- The YAML file is typed as etcd types it (a comma-separated string for
-- `listen-peer-urls`, lists for `cipher-suites` and `log-outputs`, booleans,
-- a mapping at the top level) and fails with etcd's decoder message.
-- `etcd_version` ("3.4", "3.5", "3.6" or a full version such as "3.5.9";
-- default the newest modelled, see peerlisten.etcd_versions) selects the
-- flags, keys and rules of that etcd release. The result carries
-- `_etcd_version` and `_differences` (each difference from etcd applied).
-- @tparam table opts `file` (path), `args` (array of command-line
-- arguments, etcd's flags), `env` (`os.getenv`, or a table name → value),
-- `etcd_version`
-- @treturn[1] table the validated configuration (see the module doc)
-- @treturn[2] nil
-- @treturn[2] string
-- @treturn[2] string "ECONFIG", "EUSAGE" for what etcd's flag package
-- refuses (etcd exits 2), or "EVERSION" for an unknown `etcd_version`
-- @treturn[2] table `{ differences = }`: differences from etcd applied so far
function M.load(opts)
  if type(opts) ~= "table" then error("bad argument #1 to 'load' (table expected, got " .. type(opts) .. ")", 2) end
  local prof, perr = profile_of(opts.etcd_version)
  if not prof then return nil, perr, "EVERSION" end
  local raw, sources, notes, errors, other, diffs = {}, {}, {}, {}, {}, {}
  local flagraw, flagsources = {}, {}
  local given = {}
  if opts.args then
    local g, err, code = parse_args(opts.args, flagraw, flagsources, prof)
    if not g then return nil, err, code end
    given = g
  end
  local getenv = env_lookup(opts.env)
  local file = opts.file or given["flag:config-file"]
  if not file and opts.env then
    local f = getenv("ETCD_CONFIG_FILE")
    if f and f ~= "" then file = f end
  end
  local cfg
  if file then
    local filenotes = {}
    local ok, err = read_file(file, raw, sources, filenotes, errors, other, prof, diffs)
    if not ok then return nil, err, "ECONFIG", { differences = diffs } end
    notes[#notes + 1] = { level = "info",
      msg = "loaded server configuration, other configuration command line flags and environment variables "
        .. "will be ignored if provided", fields = { path = file } }
    table.move(filenotes, 1, #filenotes, #notes + 1, notes)
    local cli_raft = false
    for _, k in ipairs { "raft_read_timeout", "raft_write_timeout" } do
      if flagsources[k] then
        raw[k], sources[k] = flagraw[k], "flag"
        cli_raft = true
      end
    end
    local err2, code
    cfg, err2, code = build(raw, sources, notes, errors, "file", prof, diffs)
    if not cfg then return nil, err2, code, { differences = diffs } end
    cfg._file = file
    if cli_raft then cfg._raft_cli = true end
  else
    for k, v in pairs(flagraw) do raw[k], sources[k] = v, "flag" end
    if opts.env then
      local eerr = apply_env(opts.env, getenv, given, prof, raw, sources, notes)
      if eerr then return nil, eerr, "ECONFIG", { differences = diffs } end
    end
    local err2, code
    cfg, err2, code = build(raw, sources, notes, errors, "load", prof, diffs)
    if not cfg then return nil, err2, code, { differences = diffs } end
  end
  for k, v in pairs(given) do
    if type(k) == "string" and k:match("^flag:") and k ~= "flag:config-file" then other[k:sub(6)] = v end
  end
  cfg._other = other
  return cfg
end

--- Logs the notes collected while loading (`cfg._notes`) to `logger`.
-- @tparam table cfg
-- @param logger a peerlisten.log logger
function M.log_notes(cfg, logger)
  for _, n in ipairs(cfg._notes or {}) do
    logger:log(n.level, n.msg, n.fields, 1)
  end
end

local function show(v)
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = tostring(x) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  return tostring(v)
end

--- Every effective value and where it came from.
-- @tparam table cfg a validated configuration
-- @treturn table array of `{ key =, yaml =, flag =, env =, value =, source = }`,
-- `source` one of "default", "file", "flag", "env", "table"; `text`, a
-- human-readable line per entry
function M.explain(cfg)
  local rows = {}
  for _, o in ipairs(OPTIONS) do
    local opt = o.opt
    local a, b = opt.key:match("^([^.]+)%.(.+)$")
    local value
    if a then value = cfg[a] and cfg[a][b] else value = cfg[opt.key] end
    local source = cfg._sources and cfg._sources[opt.key] or "table"
    local where = source
    if source == "file" then where = "file " .. (cfg._file or "?") .. " (" .. opt.yaml .. ")"
    elseif source == "flag" then where = "flag --" .. opt.flag
    elseif source == "env" then where = "env " .. opt.env
    end
    rows[#rows + 1] = { key = opt.key, yaml = opt.yaml, flag = "--" .. opt.flag, env = opt.env,
      value = value, source = source,
      text = ("%-55s %-30s %s"):format(opt.yaml, show(value), where) }
  end
  return rows
end

--- The option descriptors (key, yaml, flag, env, type, default), for help texts.
-- @treturn table
function M.options()
  local out = {}
  for i, o in ipairs(OPTIONS) do out[i] = copy(o.opt) end
  return out
end

--- The flags the command line accepts besides the options: etcd's flags
-- outside the peer listeners (kept and ignored; etcd 3.4's experimental ones
-- included, 3.5 and 3.6 take any `experimental-*` flag), sorted; the old
-- names of options (old name -> flag); and the flags only some etcd
-- versions define (flag -> true).
-- @treturn table names
-- @treturn table aliases
-- @treturn table versioned
function M.other_flags()
  local seen, out, aliases, versioned = {}, {}, {}, {}
  for _, o in ipairs(OPTIONS) do seen[o.opt.flag] = true end
  for name, opt in pairs(BY_FLAG) do
    if not seen[name] then aliases[name] = opt.flag end
  end
  for _, set in ipairs { OTHER_FLAGS, EXPERIMENTAL_34 } do
    for name in pairs(set) do
      if not seen[name] and not aliases[name] then seen[name] = true; out[#out + 1] = name end
    end
  end
  for name in pairs(FLAG_ROW) do versioned[name] = true end
  table.sort(out)
  return out, aliases, versioned
end

return M
