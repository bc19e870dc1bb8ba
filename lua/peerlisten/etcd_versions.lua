--- What each etcd release does on the peer-listener configuration path.
--
-- One row per behaviour that differs between etcd 3.4, 3.5 and 3.6, with
-- the first release that has the newer behaviour (read from etcd's source at
-- its release tags; docs/etcd-versions.md has the table with its sources).
-- `resolve` turns "3.4", "3.5", "3.6" or a full version such as "3.5.9" into
-- a profile: `{ version = "3.5.9", line = "3.5", <row id> = true|false }`.
-- A release line alone means its modelled release: 3.4 is 3.4.23 (Debian
-- 12's etcd), 3.5 is 3.5.33, 3.6 is 3.6.14.
-- @module peerlisten.etcd_versions

local M = {}

--- Modelled release of each supported line, and the newest overall.
M.LINES = { ["3.4"] = "3.4.23", ["3.5"] = "3.5.33", ["3.6"] = "3.6.14" }
M.NEWEST = "3.6.14"

--- The rows. A row holds from `since` on (every later line too); `also` names
-- an older line's patch release that got it as well (a backport); `before`
-- instead marks something that exists only in releases older than it.
M.ROWS = {
  { id = "tls_version_flags", since = "3.5.8", also = "3.4.25",
    what = "--tls-min-version and --tls-max-version exist" },
  { id = "socket_flags", since = "3.5.0", what = "--socket-reuse-port and --socket-reuse-address exist" },
  { id = "peer_client_cert_flags", since = "3.5.0",
    what = "--peer-client-cert-file/--peer-client-key-file exist (YAML client-cert-file, client-key-file)" },
  { id = "self_signed_validity_flag", since = "3.5.0",
    what = "--self-signed-cert-validity exists (3.4: auto-TLS certificates are valid 1 year)" },
  { id = "raft_timeout_flags", since = "3.5.0", what = "--raft-read-timeout and --raft-write-timeout exist" },
  { id = "log_format_flag", since = "3.6.0", what = "--log-format exists" },
  { id = "skip_san_flag", since = "3.6.0",
    what = "--peer-skip-client-san-verification exists (YAML skip-client-san-verification)" },
  { id = "capnslog", before = "3.5.0",
    what = "--logger=capnslog is accepted and the default (3.5 on: \"--logger=capnslog is removed in v3.5\")" },
  { id = "debug_flags", before = "3.5.0", what = "--debug and --log-package-levels exist" },
  { id = "unique_flag_urls", since = "3.5.10",
    what = "a URL repeated in --listen-peer-urls (or its variable) is bound once; before, the second bind fails" },
  { id = "unix_any_path", since = "3.5.13",
    what = "unix:// and unixs:// URLs need not be host:port (unix:///abs/path)" },
  { id = "unixs_tls", before = "3.5.0", what = "unixs:// listeners speak TLS (3.5 on: a plain unix socket)" },
  { id = "allowed_list_flags", since = "3.5.15",
    what = "--peer-cert-allowed-cn/-hostname are comma-separated lists (before: one string, 'a,b' is one CN)" },
  { id = "yaml_allowed_keys", since = "3.5.14",
    what = "peer-transport-security has allowed-cn and allowed-hostname keys (before: ignored)" },
  { id = "yaml_allowed_lists", since = "3.5.15",
    what = "YAML allowed-cn and allowed-hostname are lists (3.5.14: strings)" },
  { id = "yaml_socket_options", since = "3.5.10", what = "the YAML socket-options key is honoured" },
  { id = "null_security_invalid", since = "3.6.0",
    what = "peer-transport-security: null is an error (\"invalid peer-transport-security\")" },
  { id = "quoted_stray_arg", since = "3.6.0", what = "a stray argument is quoted as \"extra\" (before: 'extra')" },
  { id = "zap_env_conflict", since = "3.5.0",
    what = "a variable shadowed by its flag is zap's \"conflicting environment variable is shadowed by "
      .. "corresponding command-line flag (...))\" with the name in a field" },
}

local BY_ID = {}
for _, r in ipairs(M.ROWS) do BY_ID[r.id] = r end

--- Parses "3.5.9" / "v3.5.9" / "3.5" into { major, minor, patch } (patch nil for a line).
local function parse(v)
  if type(v) ~= "string" then return nil end
  local a, b, c = v:match("^v?(%d+)%.(%d+)%.(%d+)$")
  if not a then a, b = v:match("^v?(%d+)%.(%d+)$") end
  if not a then return nil end
  return { tonumber(a), tonumber(b), c and tonumber(c) or nil }
end

local function cmp(x, y)
  for i = 1, 3 do
    local a, b = x[i] or 0, y[i] or 0
    if a ~= b then return a < b and -1 or 1 end
  end
  return 0
end

local function holds(row, v)
  if row.before then return cmp(v, parse(row.before)) < 0 end
  if cmp(v, parse(row.since)) >= 0 then return true end
  if row.also then
    local a = parse(row.also)
    return a[1] == v[1] and a[2] == v[2] and v[3] >= a[3]
  end
  return false
end

--- The profile for a version.
-- @tparam string v "3.4", "3.5", "3.6" or a full version ("3.5.9", "v3.4.23")
-- @treturn[1] table profile: `version`, `line`, and one boolean per row id
-- @treturn[2] nil
-- @treturn[2] string why
function M.resolve(v)
  local p = parse(v)
  local supported = "supported: 3.4, 3.5, 3.6 or a full version such as 3.5.9"
  if not p then return nil, ("invalid etcd version %q (%s)"):format(tostring(v), supported) end
  local line = p[1] .. "." .. p[2]
  if not M.LINES[line] then return nil, ("etcd %s is not modelled (%s)"):format(v, supported) end
  if not p[3] then p = parse(M.LINES[line]) end
  local prof = { version = ("%d.%d.%d"):format(p[1], p[2], p[3]), line = line }
  for _, r in ipairs(M.ROWS) do prof[r.id] = holds(r, p) end
  return prof
end

--- Whether profile `prof` has row `id` (raises on an unknown id).
function M.has(prof, id)
  if not BY_ID[id] then error("unknown etcd behaviour " .. tostring(id), 2) end
  return prof[id]
end

--- The version in `etcd --version` output ("etcd Version: 3.4.23"), or nil.
function M.parse_version_output(text)
  return type(text) == "string" and text:match("etcd Version:%s*v?(%d+%.%d+%.%d+)") or nil
end

-- Finds `name` on a PATH string.
local function on_path(name, path)
  if name:find("/", 1, true) then return name end
  for dir in (path or ""):gmatch("[^:]+") do
    local candidate = dir .. "/" .. name
    local f = io.open(candidate, "r")
    if f then
      f:close()
      return candidate
    end
  end
end

--- Runs `<bin> --version` and returns the version it reports.
-- @tparam string bin a path, or a name looked up on `path`
-- @tparam[opt] string path a PATH value
-- @treturn[1] string the version ("3.4.23")
-- @treturn[2] nil
-- @treturn[2] string why
function M.detect(bin, path)
  local exe = on_path(bin, path)
  if not exe then return nil, ("%s not found on PATH"):format(bin) end
  local p = io.popen("'" .. exe:gsub("'", "'\\''") .. "' --version 2>/dev/null")
  if not p then return nil, "cannot run " .. exe end
  local out = p:read("a")
  p:close()
  local v = M.parse_version_output(out)
  if not v then return nil, ("%s --version printed no etcd version"):format(exe) end
  return v
end

--- Chooses the version to predict for: `version` when given, else what
-- `bin` (or, when nil, `etcd` found on `path`) reports with `--version`,
-- else the newest modelled.
-- @tparam table opts `version`, `bin`, `path` (a PATH value)
-- @treturn[1] table the profile
-- @treturn[1] string how it was chosen ("--etcd-version", "/usr/bin/etcd --version", "newest modelled")
-- @treturn[1] string|nil a warning (an installed etcd that is not modelled)
-- @treturn[2] nil
-- @treturn[2] string why (a bad `version`, or `bin` that cannot be run)
function M.choose(opts)
  if opts.version then
    local prof, err = M.resolve(opts.version)
    if not prof then return nil, err end
    return prof, "--etcd-version"
  end
  local v, err = M.detect(opts.bin or "etcd", opts.path)
  if not v then
    if opts.bin then return nil, err end
    return M.resolve(M.NEWEST), "newest modelled"
  end
  local prof = M.resolve(v)
  local how = (opts.bin or "etcd") .. " --version"
  if not prof then
    return M.resolve(M.NEWEST), "newest modelled",
      ("%s reports etcd %s, which is not modelled; predicting for %s"):format(how, v, M.NEWEST)
  end
  return prof, how
end

--- Differences from etcd that peerlisten applies on purpose, by id. Each
-- applied one is listed in `check --json` (`differences`).
M.DIFFERENCES = {
  ignored_security_key = "etcd ignores this peer-transport-security key in this version, which would drop a "
    .. "security setting silently; peerlisten refuses the file instead",
  log_level_panic = "etcd panics on an unknown --log-level; peerlisten reports a clean error",
  capnslog_format = "etcd 3.4's capnslog writes text log lines; peerlisten logs in zap's JSON format",
  crl_checked = "etcd reads the CRL file only on each handshake (a broken one refuses every mTLS peer at run "
    .. "time); peerlisten loads it up front and fails the check",
  tls12_without_suite = "etcd starts when the configured cipher suites leave TLS 1.2 no suite (TLS 1.2 peers "
    .. "then fail to connect); peerlisten refuses the configuration",
  unixs_plain = "etcd 3.5 and later serve unixs:// URLs as plain unix sockets; peerlisten speaks TLS on them",
}

return M
