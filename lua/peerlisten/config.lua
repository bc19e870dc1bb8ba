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
local options = require "peerlisten.config_options"
local flags = require "peerlisten.config_flags"

local OPTIONS, BY_KEY, BY_FLAG, OTHER_YAML = options.OPTIONS, options.BY_KEY, options.BY_FLAG, options.OTHER_YAML
local CLIENT_SECURITY_KEYS, YAML_VERSIONED, SUBTABLES =
  options.CLIENT_SECURITY_KEYS, options.YAML_VERSIONED, options.SUBTABLES
local copy, typename, coerce, url_opts = options.copy, options.typename, options.coerce, options.url_opts
local OTHER_FLAGS, EXPERIMENTAL_34, FLAG_ROW = options.OTHER_FLAGS, options.EXPERIMENTAL_34, options.FLAG_ROW

local M = {}

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

local LOG_LEVELS = { debug = true, info = true, warn = true, error = true, dpanic = true, panic = true, fatal = true }



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
  local lyaml = optional.require "lyaml"
  return lyaml ~= nil and v == lyaml.null
end

-- The keys of a peer-transport-security or socket-options mapping `v` (YAML
-- key `key`) into raw option values; `sec` types the security keys.
local function read_section(key, v, sec, raw, sources, notes)
  local under = key:gsub("-", "_")
  local subkeys = {}
  for sk in pairs(v) do subkeys[#subkeys + 1] = tostring(sk) end
  table.sort(subkeys)
  for _, sk in ipairs(subkeys) do
    local sv = v[sk]
    local full = under .. "." .. sk:gsub("-", "_")
    local known = under == "socket_options" or sec[sk]
    if BY_KEY[full] and sk:find("_", 1, true) == nil and known then
      if not is_null(sv) then
        sv = etcd_yaml.value(sv, sec[sk])
        if (sk == "allowed-cn" or sk == "allowed-hostname") and type(sv) == "string" then
          sv = sv == "" and {} or { sv }
        end
        raw[full], sources[full] = sv, "file"
      end
    else
      unknown_note(notes, key .. "." .. sk, true)
    end
  end
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
    return nil, etcd_yaml.not_a_mapping(type(doc) == "boolean" and "bool" or type(doc))
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
        read_section(key, v, sec, raw, sources, notes)
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


--- The profile of `v` (a version string, a profile, or nil for the newest).
local function profile_of(v)
  if type(v) == "table" and v.version then return v end
  return etcd_versions.resolve(v or etcd_versions.NEWEST)
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
    local g, err, code = flags.parse_args(opts.args, flagraw, flagsources, prof)
    if not g then return nil, err, code end
    given = g
  end
  local getenv = flags.env_lookup(opts.env)
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
      local eerr = flags.apply_env(opts.env, getenv, given, prof, raw, sources, notes)
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
