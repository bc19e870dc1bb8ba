--- Cluster bootstrap: one description to a CA, member certificates, etcd configuration files
-- and the checks that catch what would stop the members from trusting each other.
--
-- A description (a YAML file or a Lua table, keys as in the YAML) names the cluster, the etcd
-- version whose configuration syntax to write and the members with their addresses and URLs.
-- `init` turns it into a directory whose layout scripts rely on:
--
--     DIR/ca.pem, DIR/ca-key.pem              the cluster CA (kept; never overwritten)
--     DIR/<member>/peer.pem, peer-key.pem     serverAuth + clientAuth, SANs: addresses + dial sources
--     DIR/<member>/server.pem, server-key.pem for the client URLs
--     DIR/<member>/etcd.yaml                  an etcd --config-file, certificates by absolute path
--     DIR/client/etcdctl.pem, etcdctl-key.pem clientAuth only, for etcdctl and applications
--     DIR/etcdctl.env                         export lines for etcdctl
--     DIR/cluster.yaml                        the normalized description (read by status/check)
--     DIR/manifest.json                       every file made, SHA-256 fingerprints, expiry
--
-- Failures return `nil, message, code`: "ECLUSTER" for a bad description or directory,
-- "ECERT" for certificate material, libuv error names for files.
-- @module peerlisten.cluster

local cert = require "peerlisten.cert"
local core = require "peerlisten.core"
local log = require "peerlisten.log"
local url = require "peerlisten.url"

local M = {}

local DAY = 86400
local OCTAL_600, OCTAL_644, OCTAL_700 = tonumber("600", 8), tonumber("644", 8), tonumber("700", 8)

--- The etcd versions whose configuration syntax `init` writes.
M.VERSIONS = { "3.4", "3.5", "3.6" }
local VERSION = { ["3.4"] = true, ["3.5"] = true, ["3.6"] = true }

-- The C primitives used here, in one place (the core's names may move).
local prim = {
  write = core.write_file_atomic,
  mkdir = core.cert_mkdir_all,
  stat = core.cert_stat,
  ip = core.cert_ip,
  keygen = core.cert_keygen,
  create = core.cert_create,
  read = core.cert_read_file,
  cwd = core.cert_cwd,
}

-- The fields of a certificate this module reads, through one function (inspect's shape may grow).
local function cert_facts(path)
  local info, err, code = cert.inspect(path)
  if not info then return nil, err, code end
  if info.subject == nil then info = info[1] end
  local sans = info.sans or {}
  return {
    subject = info.subject, issuer = info.issuer, not_before = info.not_before, not_after = info.not_after,
    dns = sans.dns or {}, ips = sans.ip or {}, eku = info.ext_key_usage or {}, is_ca = info.is_ca,
    fingerprint = info.fingerprint_sha256, key = info.key,
  }
end

local function rfc3339(t) return os.date("!%Y-%m-%dT%H:%M:%SZ", t) end

local function random_hex(n)
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(n)
  if f then f:close() end
  if not bytes or #bytes ~= n then
    bytes = ""
    for _ = 1, n do bytes = bytes .. string.char(math.random(0, 255)) end
  end
  return (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

-- description ------------------------------------------------------------------

local TOP_KEYS = { name = true, ["etcd-version"] = true, token = true, members = true, tls = true }
local MEMBER_KEYS = { name = true, addresses = true, ["peer-urls"] = true, ["client-urls"] = true,
  ["source-addresses"] = true }
local TLS_KEYS = { ["key-type"] = true, ["cert-validity-days"] = true, ["ca-validity-days"] = true,
  ["peer-client-cert-auth"] = true, ["client-cert-auth"] = true, ["client-cn"] = true }

local NAME_PATTERN = "^[%w][%w._-]*$"

-- Canonical form of an address: ("ip", text) or ("dns", lower-case name), or nil.
local function address(a)
  if type(a) ~= "string" or a == "" then return nil end
  local ip = prim.ip(a)
  if ip then return "ip", ip end
  local h = a:lower():gsub("%.$", "")
  if h:find("[^%w.%-_*]") or h:match("^[%d.]+$") or h:find("%.%.") or h:sub(1, 1) == "." then return nil end
  return "dns", h
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  return keys
end

local function list_of_strings(v)
  if type(v) == "string" then return { v } end
  if type(v) ~= "table" then return nil end
  local out = {}
  for i = 1, #v do
    if type(v[i]) ~= "string" then return nil end
    out[i] = v[i]
  end
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > #v then return nil end
  end
  return out
end

local function positive(v)
  return type(v) == "number" and v > 0 and v < math.huge and v == v
end

-- Validates the TLS options into d.tls (defaults filled in).
local function check_tls(t, d, errs)
  d.tls = { key_type = "ecdsa-p256", cert_validity_days = 365, ca_validity_days = 3650,
    peer_client_cert_auth = true, client_cert_auth = true, client_cn = "etcdctl" }
  if t == nil then return end
  if type(t) ~= "table" then errs[#errs + 1] = "tls: a mapping expected"; return end
  for _, k in ipairs(sorted_keys(t)) do
    if not TLS_KEYS[k] then errs[#errs + 1] = ("tls: unknown key %q"):format(k) end
  end
  local kt = t["key-type"]
  if kt ~= nil then
    local known = false
    for _, x in ipairs(cert.KEY_TYPES) do known = known or x == kt end
    if not known then
      errs[#errs + 1] = ("tls: key-type: unknown key type %q (one of: %s)"):format(tostring(kt),
        table.concat(cert.KEY_TYPES, ", "))
    else
      d.tls.key_type = kt
    end
  end
  for _, k in ipairs { "cert-validity-days", "ca-validity-days" } do
    local v = t[k]
    if v ~= nil then
      if not positive(v) then errs[#errs + 1] = ("tls: %s: a number of days greater than 0 expected"):format(k)
      else d.tls[k:gsub("-", "_")] = v end
    end
  end
  for _, k in ipairs { "peer-client-cert-auth", "client-cert-auth" } do
    local v = t[k]
    if v ~= nil then
      if type(v) ~= "boolean" then errs[#errs + 1] = ("tls: %s: true or false expected"):format(k)
      else d.tls[k:gsub("-", "_")] = v end
    end
  end
  local cn = t["client-cn"]
  if cn ~= nil then
    if type(cn) ~= "string" or not cn:match(NAME_PATTERN) then
      errs[#errs + 1] = "tls: client-cn: letters, digits, '.', '_' and '-' expected"
    else
      d.tls.client_cn = cn
    end
  end
end

-- Validates one member's URL list; records each URL in seen (duplicates across the cluster).
local function check_urls(m, key, where, addrs, seen, errs)
  local list = list_of_strings(m[key])
  if not list or #list == 0 then
    errs[#errs + 1] = ("%s: %s: a non-empty list of URLs expected"):format(where, key)
    return {}
  end
  local out = {}
  for _, s in ipairs(list) do
    local u, uerr = url.parse(s)
    if not u then
      errs[#errs + 1] = ("%s: %s: %s"):format(where, key, uerr)
    elseif u.scheme ~= "https" then
      errs[#errs + 1] = ("%s: %s: %s: scheme %s is not supported (the cluster is TLS-only: use https)")
        :format(where, key, s, u.scheme)
    elseif not u.port then
      errs[#errs + 1] = ("%s: %s: %s: a port is required"):format(where, key, s)
    else
      local kind, canon = address(u.host)
      if not kind or not addrs[kind .. " " .. canon] then
        errs[#errs + 1] = ("%s: %s: host %s of %s is not among the member's addresses")
          :format(where, key, tostring(u.host), s)
      end
      local hostport = (kind and canon or tostring(u.host)) .. ":" .. u.port
      if seen[hostport] then
        errs[#errs + 1] = ("%s: %s: %s is already used by %s"):format(where, key, s, seen[hostport])
      else
        seen[hostport] = where .. " " .. key
      end
      out[#out + 1] = u.url
    end
  end
  return out
end

local function check_member(m, i, d, names, seen, errs)
  local where = ("members[%d]"):format(i)
  if type(m) ~= "table" then errs[#errs + 1] = where .. ": a mapping expected"; return end
  local name = m.name
  if type(name) ~= "string" or not name:match(NAME_PATTERN) or #name > 64 then
    errs[#errs + 1] = where .. ": name: letters, digits, '.', '_' and '-' expected (at most 64)"
  else
    where = ("members[%d] (%s)"):format(i, name)
    if names[name] then errs[#errs + 1] = ("%s: name: duplicate of %s"):format(where, names[name])
    else names[name] = where end
  end
  for _, k in ipairs(sorted_keys(m)) do
    if not MEMBER_KEYS[k] then errs[#errs + 1] = ("%s: unknown key %q"):format(where, k) end
  end
  local mem = { name = name, addresses = {}, source_addresses = {} }
  local addrs = {}
  local list = list_of_strings(m.addresses)
  if not list or #list == 0 then
    errs[#errs + 1] = where .. ": addresses: a non-empty list of IP addresses and DNS names expected"
  else
    for _, a in ipairs(list) do
      local kind, canon = address(a)
      if not kind then
        errs[#errs + 1] = ("%s: addresses: %q is neither an IP address nor a DNS name"):format(where, a)
      elseif not addrs[kind .. " " .. canon] then
        addrs[kind .. " " .. canon] = true
        mem.addresses[#mem.addresses + 1] = canon
      end
    end
  end
  if m["source-addresses"] ~= nil then
    local src = list_of_strings(m["source-addresses"])
    if not src then errs[#errs + 1] = where .. ": source-addresses: a list of IP addresses expected"
    else
      for _, a in ipairs(src) do
        local kind, canon = address(a)
        if kind ~= "ip" then
          errs[#errs + 1] = ("%s: source-addresses: %q is not an IP address"):format(where, a)
        else
          mem.source_addresses[#mem.source_addresses + 1] = canon
        end
      end
    end
  end
  if m["source-addresses"] == nil then
    -- on one machine, Linux dials 127.0.0.0/8 addresses from lo's primary address 127.0.0.1:
    -- that is what the other members see, and check against the peer certificate's SANs
    for _, a in ipairs(mem.addresses) do
      if a:match("^127%.") and not addrs["ip 127.0.0.1"] then
        mem.source_addresses = { "127.0.0.1" }
        break
      end
    end
  end
  mem.peer_urls = check_urls(m, "peer-urls", where, addrs, seen, errs)
  mem.client_urls = check_urls(m, "client-urls", where, addrs, seen, errs)
  d.members[#d.members + 1] = mem
end

--- Validates a description (a Lua table with the YAML keys) into its normalized form.
-- @tparam table t the description
-- @treturn[1] table `{ name, etcd_version, token, tls = {...}, members = { {name, addresses,
--   source_addresses, peer_urls, client_urls}, ... } }`
-- @treturn[2] nil
-- @treturn[2] string every problem, "; "-separated, each naming the member and the key
-- @treturn[2] string "ECLUSTER"
function M.validate(t)
  if type(t) ~= "table" then return nil, "cluster description: a mapping expected", "ECLUSTER" end
  local errs = {}
  local d = { members = {} }
  for _, k in ipairs(sorted_keys(t)) do
    if not TOP_KEYS[k] then errs[#errs + 1] = ("unknown key %q"):format(k) end
  end
  if type(t.name) ~= "string" or not t.name:match(NAME_PATTERN) or #t.name > 40 then
    errs[#errs + 1] = "name: letters, digits, '.', '_' and '-' expected (at most 40)"
  else
    d.name = t.name
  end
  local v = t["etcd-version"]
  if math.type(v) == "float" then v = ("%.1f"):format(v) end
  if v == nil then errs[#errs + 1] = "etcd-version: required (one of 3.4, 3.5, 3.6)"
  elseif not VERSION[v] then
    errs[#errs + 1] = ("etcd-version: %s is not supported (one of 3.4, 3.5, 3.6)"):format(tostring(v))
  else d.etcd_version = v end
  if t.token ~= nil then
    if type(t.token) ~= "string" or t.token == "" or t.token:find("%s") then
      errs[#errs + 1] = "token: a non-empty string without spaces expected"
    else d.token = t.token end
  elseif d.name then
    d.token = "etcd-cluster-" .. d.name
  end
  check_tls(t.tls, d, errs)
  if type(t.members) ~= "table" or #t.members == 0 then
    errs[#errs + 1] = "members: a non-empty list expected"
  else
    local names, seen = {}, {}
    for i = 1, #t.members do check_member(t.members[i], i, d, names, seen, errs) end
  end
  if #errs > 0 then return nil, "cluster description: " .. table.concat(errs, "; "), "ECLUSTER" end
  return d
end

--- Reads a description: a YAML file path or a Lua table; validated.
-- @param src path or table
-- @treturn[1] table the normalized description (see `validate`)
-- @treturn[2] nil
-- @treturn[2] string message
-- @treturn[2] string "ECLUSTER" or a libuv error name
function M.load(src)
  if type(src) == "table" then return M.validate(src) end
  if type(src) ~= "string" then error("bad argument #1 to 'load' (path or table expected)", 2) end
  local text, err, code = prim.read(src)
  if not text then return nil, err, code end
  local lyaml = require "lyaml"
  local ok, doc = pcall(lyaml.load, text)
  if not ok then return nil, ("%s: not YAML: %s"):format(src, tostring(doc)), "ECLUSTER" end
  local d
  d, err, code = M.validate(doc)
  if not d then return nil, src .. ": " .. err, code end
  return d
end

-- layout -----------------------------------------------------------------------

local function abs_dir(dir)
  if type(dir) ~= "string" or dir == "" then return nil, "cluster: out directory required", "ECLUSTER" end
  if dir:sub(1, 1) ~= "/" then
    local cwd, err, code = prim.cwd()
    if not cwd then return nil, err, code end
    dir = cwd .. "/" .. dir
  end
  local parts = {}
  for seg in dir:gmatch("[^/]+") do
    if seg == ".." then parts[#parts] = nil elseif seg ~= "." then parts[#parts + 1] = seg end
  end
  return "/" .. table.concat(parts, "/")
end

--- The file layout of a cluster directory (absolute paths).
-- @tparam string dir
-- @tparam table d a normalized description
-- @treturn table `{ dir, ca, ca_key, client, client_key, env, description, manifest,
--   members = { [name] = { dir, peer, peer_key, server, server_key, config, data } } }`
function M.layout(dir, d)
  local L = { dir = dir, ca = dir .. "/ca.pem", ca_key = dir .. "/ca-key.pem",
    client = dir .. "/client/" .. d.tls.client_cn .. ".pem", client_key = dir .. "/client/" .. d.tls.client_cn .. "-key.pem",
    env = dir .. "/etcdctl.env", description = dir .. "/cluster.yaml", manifest = dir .. "/manifest.json",
    members = {} }
  for _, m in ipairs(d.members) do
    local md = dir .. "/" .. m.name
    L.members[m.name] = { dir = md, peer = md .. "/peer.pem", peer_key = md .. "/peer-key.pem",
      server = md .. "/server.pem", server_key = md .. "/server-key.pem", config = md .. "/etcd.yaml",
      data = md .. "/data" }
  end
  return L
end

-- What each certificate must be: CN, SANs, extended key usages.
local function wanted(d, L)
  local list = {}
  for _, m in ipairs(d.members) do
    local peer_names = {}
    for _, a in ipairs(m.addresses) do peer_names[#peer_names + 1] = a end
    for _, a in ipairs(m.source_addresses) do peer_names[#peer_names + 1] = a end
    local f = L.members[m.name]
    list[#list + 1] = { id = m.name .. " peer", member = m.name, kind = "peer", cn = m.name, hosts = peer_names,
      eku = { "serverAuth", "clientAuth" }, cert = f.peer, key = f.peer_key }
    list[#list + 1] = { id = m.name .. " server", member = m.name, kind = "server", cn = m.name,
      hosts = m.addresses, eku = { "serverAuth", "clientAuth" }, cert = f.server, key = f.server_key }
  end
  list[#list + 1] = { id = "client " .. d.tls.client_cn, kind = "client", cn = d.tls.client_cn, hosts = {},
    eku = { "clientAuth" }, cert = L.client, key = L.client_key }
  return list
end

local function has_eku(facts, want)
  for _, e in ipairs(facts.eku) do if e == want then return true end end
  return false
end

-- Which of `hosts` the certificate does not cover (a list, empty when all are).
local function missing_sans(facts, hosts)
  local have = {}
  for _, x in ipairs(facts.dns) do have["dns " .. x:lower()] = true end
  for _, x in ipairs(facts.ips) do have["ip " .. (prim.ip(x) or x)] = true end
  local miss = {}
  for _, h in ipairs(hosts) do
    local kind, canon = address(h)
    if not have[(kind or "?") .. " " .. (canon or h)] then miss[#miss + 1] = h end
  end
  return miss
end

local function key_type_of(key)
  if not key then return nil end
  if key.type == "ecdsa" and key.curve then return "ecdsa-" .. key.curve:lower():gsub("%-", "") end
  if key.type == "rsa" then return "rsa-" .. tostring(key.bits) end
  return key.type
end

-- Why an existing certificate must be (re)issued, or nil when it can be reused.
local function why_reissue(w, ca_path, key_type, renew_within, now)
  if not prim.stat(w.cert) and not prim.stat(w.key) then return "new" end
  if not prim.stat(w.cert) or not prim.stat(w.key) then return "incomplete pair" end
  local facts, err = cert_facts(w.cert)
  if not facts then return "unreadable: " .. err end
  local ok, merr = cert.matches_key(w.cert, w.key)
  if not ok then return "key does not match: " .. tostring(merr) end
  ok, merr = cert.verify(w.cert, ca_path, "any")
  if not ok then return "not signed by the cluster CA: " .. tostring(merr) end
  for _, e in ipairs(w.eku) do
    if not has_eku(facts, e) then return "lacks extended key usage " .. e end
  end
  local miss = missing_sans(facts, w.hosts)
  if #miss > 0 then return "does not cover " .. table.concat(miss, ", ") end
  if key_type_of(facts.key) ~= key_type then return "key type is not " .. key_type end
  if facts.not_after <= now then return "expired at " .. rfc3339(facts.not_after) end
  if facts.not_after - now < (renew_within or 0) then
    return ("expires %s, within the renewal window"):format(rfc3339(facts.not_after))
  end
  return nil, facts
end

-- file writing ------------------------------------------------------------------

local function yq(s)   -- a single-quoted YAML scalar
  return "'" .. tostring(s):gsub("'", "''") .. "'"
end

local function sq(s)   -- a single-quoted shell word
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- The etcd configuration file of member `m` (YAML text) in the syntax of `d.etcd_version`.
-- @tparam table d normalized description
-- @tparam table L layout
-- @tparam table m the member (an entry of `d.members`)
-- @treturn string
function M.etcd_config(d, L, m)
  local f = L.members[m.name]
  local ic = {}
  for _, o in ipairs(d.members) do
    for _, u in ipairs(o.peer_urls) do ic[#ic + 1] = o.name .. "=" .. u end
  end
  local lines = {
    ("# etcd %s configuration for member %s of cluster %s, written by peerlisten cluster init."):format(
      d.etcd_version, m.name, d.name),
    "# Start with: etcd --config-file " .. f.config,
    "name: " .. yq(m.name),
    "data-dir: " .. yq(f.data),
    "listen-peer-urls: " .. yq(table.concat(m.peer_urls, ",")),
    "initial-advertise-peer-urls: " .. yq(table.concat(m.peer_urls, ",")),
    "listen-client-urls: " .. yq(table.concat(m.client_urls, ",")),
    "advertise-client-urls: " .. yq(table.concat(m.client_urls, ",")),
    "initial-cluster: " .. yq(table.concat(ic, ",")),
    "initial-cluster-state: 'new'",
    "initial-cluster-token: " .. yq(d.token),
    -- 3.4 still defaults to the deprecated capnslog logger
    "logger: 'zap'",
  }
  if d.etcd_version ~= "3.4" then
    -- 3.4 has no such key; its TLS listeners already refuse anything below TLS 1.2
    lines[#lines + 1] = "tls-min-version: 'TLS1.2'"
  end
  local function security(key, certp, keyp, auth)
    lines[#lines + 1] = key .. ":"
    lines[#lines + 1] = "  cert-file: " .. yq(certp)
    lines[#lines + 1] = "  key-file: " .. yq(keyp)
    lines[#lines + 1] = "  trusted-ca-file: " .. yq(L.ca)
    lines[#lines + 1] = "  client-cert-auth: " .. tostring(auth)
  end
  security("client-transport-security", f.server, f.server_key, d.tls.client_cert_auth)
  security("peer-transport-security", f.peer, f.peer_key, d.tls.peer_client_cert_auth)
  return table.concat(lines, "\n") .. "\n"
end

--- The etcdctl environment file (shell export lines).
function M.etcdctl_env(d, L)
  local eps = {}
  for _, m in ipairs(d.members) do
    for _, u in ipairs(m.client_urls) do eps[#eps + 1] = u end
  end
  return table.concat({
    "# etcdctl settings for cluster " .. d.name .. " (source this file)",
    "export ETCDCTL_API=3",
    "export ETCDCTL_ENDPOINTS=" .. sq(table.concat(eps, ",")),
    "export ETCDCTL_CACERT=" .. sq(L.ca),
    "export ETCDCTL_CERT=" .. sq(L.client),
    "export ETCDCTL_KEY=" .. sq(L.client_key),
  }, "\n") .. "\n"
end

-- The normalized description as YAML (what status and check read back).
local function description_yaml(d)
  local function list(t)
    local q = {}
    for i, x in ipairs(t) do q[i] = yq(x) end
    return "[" .. table.concat(q, ", ") .. "]"
  end
  local lines = {
    "# normalized cluster description, written by peerlisten cluster init",
    "name: " .. yq(d.name), "etcd-version: " .. yq(d.etcd_version), "token: " .. yq(d.token),
    "tls:",
    "  key-type: " .. yq(d.tls.key_type),
    "  cert-validity-days: " .. tostring(d.tls.cert_validity_days),
    "  ca-validity-days: " .. tostring(d.tls.ca_validity_days),
    "  peer-client-cert-auth: " .. tostring(d.tls.peer_client_cert_auth),
    "  client-cert-auth: " .. tostring(d.tls.client_cert_auth),
    "  client-cn: " .. yq(d.tls.client_cn),
    "members:",
  }
  for _, m in ipairs(d.members) do
    lines[#lines + 1] = "  - name: " .. yq(m.name)
    lines[#lines + 1] = "    addresses: " .. list(m.addresses)
    if #m.source_addresses > 0 then lines[#lines + 1] = "    source-addresses: " .. list(m.source_addresses) end
    lines[#lines + 1] = "    peer-urls: " .. list(m.peer_urls)
    lines[#lines + 1] = "    client-urls: " .. list(m.client_urls)
  end
  return table.concat(lines, "\n") .. "\n"
end

-- Removes what a failed run created in its staging directory.
local function remove_tree(files, dirs)
  for i = #files, 1, -1 do os.remove(files[i]) end
  for i = #dirs, 1, -1 do os.remove(dirs[i]) end
end

-- init ---------------------------------------------------------------------------

-- Renewal window for one certificate: opts.renew_within, limited to opts.members when given.
local function window_for(w, opts)
  if not opts.renew_within then return 0 end
  if opts.members then
    for _, n in ipairs(opts.members) do if n == w.member then return opts.renew_within end end
    return 0
  end
  return opts.renew_within
end

-- Decides, for the CA and every certificate, reuse or (re)issue; no file is touched.
local function decide(d, L, opts, now)
  local steps = {}
  local ca_cert, ca_key = prim.stat(L.ca), prim.stat(L.ca_key)
  local ca = { id = "ca", kind = "ca", cert = L.ca, key = L.ca_key }
  if ca_cert and ca_key then
    local facts, err = cert_facts(L.ca)
    if not facts then return nil, "cluster: " .. L.ca .. ": " .. err, "ECERT" end
    local ok, merr = cert.matches_key(L.ca, L.ca_key)
    if not ok then return nil, ("cluster: %s does not match %s: %s"):format(L.ca_key, L.ca, merr), "ECERT" end
    if not facts.is_ca then return nil, "cluster: " .. L.ca .. " is not a CA certificate", "ECERT" end
    if facts.not_after <= now then
      return nil, ("cluster: the CA %s expired at %s; a new CA means a new cluster identity: move the "
        .. "directory away to start over"):format(L.ca, rfc3339(facts.not_after)), "ECERT"
    end
    ca.action, ca.facts = "reuse", facts
  elseif ca_cert or ca_key then
    return nil, ("cluster: refusing to overwrite an incomplete CA pair (%s is missing)")
      :format(ca_cert and L.ca_key or L.ca), "EEXIST"
  else
    ca.action, ca.reason = "create", "new"
  end
  steps[1] = ca
  for _, w in ipairs(wanted(d, L)) do
    if ca.action == "create" then
      w.action, w.reason = "issue", "new"
    else
      local why, facts = why_reissue(w, L.ca, d.tls.key_type, window_for(w, opts), now)
      if why then w.action, w.reason = why == "new" and "issue" or "reissue", why
      else w.action, w.facts = "reuse", facts end
    end
    steps[#steps + 1] = w
  end
  return steps
end

-- The check list that `check` runs, in words (for `plan`).
local function check_list(d)
  local out = {}
  for _, m in ipairs(d.members) do
    local hosts = {}
    for _, a in ipairs(m.addresses) do hosts[#hosts + 1] = a end
    for _, a in ipairs(m.source_addresses) do hosts[#hosts + 1] = a end
    out[#out + 1] = ("%s peer: key matches, signed by the cluster CA, serverAuth+clientAuth, valid now, SANs cover %s")
      :format(m.name, table.concat(hosts, ", "))
    out[#out + 1] = ("%s server: key matches, signed by the cluster CA, serverAuth, valid now, SANs cover %s")
      :format(m.name, table.concat(m.addresses, ", "))
    out[#out + 1] = ("%s etcd.yaml: name %s, initial-cluster lists every member's peer URLs, the certificate "
      .. "files exist, trusted-ca-file is the cluster CA"):format(m.name, m.name)
  end
  out[#out + 1] = ("client %s: key matches, signed by the cluster CA, clientAuth"):format(d.tls.client_cn)
  out[#out + 1] = ("probe matrix: %d×%d, every member dials every other member's peer URLs with its own "
    .. "credentials from its own address"):format(#d.members, #d.members)
  return out
end

local function parse_opts(opts, fname)
  opts = opts or {}
  if type(opts) ~= "table" then error(("bad argument #2 to '%s' (table expected)"):format(fname), 3) end
  if opts.renew_within ~= nil and not (type(opts.renew_within) == "number" and opts.renew_within >= 0) then
    return nil, fname .. ": renew_within: a number of seconds >= 0 expected", "ECLUSTER"
  end
  return opts
end

local function loaded(src)
  if type(src) == "table" and src.members and src.tls and src.etcd_version then return src end
  return M.load(src)
end

--- What `init` would do, without touching anything.
-- @param src description (path, table or normalized table)
-- @tparam table opts `out` (directory; when it exists, reuse/renew decisions are shown), `renew_within`,
--   `members`
-- @treturn[1] table `{ description, layout, steps = { {id, kind, action, reason, cert, key, hosts} },
--   files = {...}, checks = {...} }`
-- @treturn[2] nil
-- @treturn[2] string message
-- @treturn[2] string code
function M.plan(src, opts)
  local o, oerr, ocode = parse_opts(opts, "plan")
  if not o then return nil, oerr, ocode end
  local d, err, code = loaded(src)
  if not d then return nil, err, code end
  local dir
  dir, err, code = abs_dir(o.out or "./" .. d.name)
  if not dir then return nil, err, code end
  local L = M.layout(dir, d)
  local steps
  steps, err, code = decide(d, L, o, os.time())
  if not steps then return nil, err, code end
  local files = { L.description, L.env, L.manifest }
  for _, m in ipairs(d.members) do files[#files + 1] = L.members[m.name].config end
  return { description = d, layout = L, steps = steps, files = files, checks = check_list(d) }
end

local function manifest_json(d, L, steps)
  local certs = {}
  for _, s in ipairs(steps) do
    local f = s.facts
    certs[#certs + 1] = { id = s.id, kind = s.kind, member = s.member, cert = s.cert, key = s.key,
      subject = f.subject, sha256 = f.fingerprint, not_after = rfc3339(f.not_after), sans = { dns = f.dns, ip = f.ips } }
  end
  local members = {}
  for _, m in ipairs(d.members) do
    local f = L.members[m.name]
    members[#members + 1] = { name = m.name, config = f.config, data_dir = f.data, peer_urls = m.peer_urls,
      client_urls = m.client_urls }
  end
  return log.encode { cluster = d.name, etcd_version = d.etcd_version, token = d.token, dir = L.dir,
    ca = L.ca, etcdctl_env = L.env, description = L.description, certificates = certs, members = members } .. "\n"
end

-- Issues one certificate into the staging directory; returns cert and key path there.
local function issue_one(w, d, ca, stage, made)
  local sub = stage .. "/" .. w.id:gsub("[^%w._-]", "_")
  made.dirs[#made.dirs + 1] = sub
  local days = d.tls.cert_validity_days
  if w.kind == "client" then
    -- clientAuth only and no SANs: cert.issue makes peer pairs, so this one is built directly
    local ok, err, code = prim.mkdir(sub, OCTAL_700)
    if not ok then return nil, err, code end
    local key
    key, err, code = prim.keygen(d.tls.key_type)
    if not key then return nil, err, code end
    local now = os.time()
    local pem
    pem, err, code = prim.create { key = key, issuer_cert = ca.cert_pem, issuer_key = ca.key_pem,
      subject = { { "CN", w.cn } }, not_before = now - 300, not_after = now + math.floor(days * DAY),
      is_ca = false, key_usage = { "digitalSignature" }, ext_key_usage = { "clientAuth" } }
    if not pem then return nil, err, code end
    local c, k = sub .. "/" .. w.cn .. ".pem", sub .. "/" .. w.cn .. "-key.pem"
    ok, err, code = prim.write(c, pem, OCTAL_644)
    if not ok then return nil, err, code end
    made.files[#made.files + 1] = c
    ok, err, code = prim.write(k, key, OCTAL_600)
    if not ok then return nil, err, code end
    made.files[#made.files + 1] = k
    return c, k
  end
  local c, k, code = cert.issue { ca_cert = ca.cert_pem, ca_key = ca.key_pem, dir = sub, name = w.cn,
    hosts = w.hosts, validity_years = days / 365, key_type = d.tls.key_type }
  if not c then return nil, k, code end
  made.files[#made.files + 1] = c
  made.files[#made.files + 1] = k
  return c, k
end

-- Makes the CA in the staging directory with a subject no other cluster shares.
local function make_ca(d, stage, made)
  local name = d.name .. "-etcd-ca-" .. random_hex(6)
  local c, k, code = cert.ca { dir = stage .. "/ca", name = name, validity_years = d.tls.ca_validity_days / 365,
    key_type = d.tls.key_type }
  made.dirs[#made.dirs + 1] = stage .. "/ca"
  if not c then return nil, k, code end
  made.files[#made.files + 1] = c
  made.files[#made.files + 1] = k
  return c, k
end

-- Refuses a directory that holds another cluster.
local function same_cluster(d, L)
  if not prim.stat(L.description) then return true end
  local other = M.load(L.description)
  if other and other.name ~= d.name then
    return nil, ("cluster: %s holds cluster %q, not %q"):format(L.dir, other.name, d.name), "ECLUSTER"
  end
  return true
end

--- Creates (or brings up to date) a cluster directory from a description.
-- Reuses every certificate that is still good (key matches, signed by the cluster CA, the right
-- usages and SANs, the key type, not expiring within `renew_within`); (re)issues the rest. New
-- material is made in a staging directory first and moved into place only when all of it was
-- made; the configuration files, the environment file and the manifest are then rewritten
-- (atomically, deterministic content).
-- @param src description (path or table)
-- @tparam table opts `out` (directory, required), `renew_within` (seconds), `members` (list of member
--   names: renew only theirs), `progress` (function(line) called once per step)
-- @treturn[1] table `{ layout, steps, description }` (steps as in `plan`, with `facts`)
-- @treturn[2] nil
-- @treturn[2] string message
-- @treturn[2] string code
function M.init(src, opts)
  local o, oerr, ocode = parse_opts(opts, "init")
  if not o then return nil, oerr, ocode end
  if o.out == nil then error("bad argument #2 to 'init' (field 'out' is required)", 2) end
  local progress = o.progress or function() end
  local p, err, code = M.plan(src, o)
  if not p then return nil, err, code end
  local d, L = p.description, p.layout
  local ok
  ok, err, code = same_cluster(d, L)
  if not ok then return nil, err, code end
  local made = { files = {}, dirs = {}, new_dirs = {} }
  -- directories made by this run are removed again on failure (only when still empty)
  local function mkdir(path)
    if prim.stat(path) then return prim.mkdir(path, OCTAL_700) end
    local mok, merr, mcode = prim.mkdir(path, OCTAL_700)
    if mok then made.new_dirs[#made.new_dirs + 1] = path end
    return mok, merr, mcode
  end
  ok, err, code = mkdir(L.dir)
  if not ok then return nil, err, code end

  local stage = L.dir .. "/.staging-" .. random_hex(4)
  made.dirs[#made.dirs + 1] = stage
  ok, err, code = prim.mkdir(stage, OCTAL_700)
  if not ok then return nil, err, code end
  local function fail(e, c)
    remove_tree(made.files, made.dirs)
    remove_tree({}, made.new_dirs)
    return nil, e, c
  end

  local ca = {}
  local moves = {}
  local ca_step = p.steps[1]
  if ca_step.action == "create" then
    local c, k, ccode = make_ca(d, stage, made)
    if not c then return fail(k, ccode) end
    moves[#moves + 1] = { c, L.ca }
    moves[#moves + 1] = { k, L.ca_key }
    ca.cert_pem, ca.key_pem = prim.read(c), prim.read(k)
    progress(("ca: created %s"):format(L.ca))
  else
    ca.cert_pem, ca.key_pem = prim.read(L.ca), prim.read(L.ca_key)
    progress(("ca: reused %s (until %s)"):format(L.ca, rfc3339(ca_step.facts.not_after)))
  end
  for i = 2, #p.steps do
    local w = p.steps[i]
    if w.action ~= "reuse" then
      local c, k, icode = issue_one(w, d, ca, stage, made)
      if not c then return fail(("%s: %s"):format(w.id, k), icode) end
      moves[#moves + 1] = { c, w.cert }
      moves[#moves + 1] = { k, w.key }
    end
  end
  -- everything was made: move it into place (each rename is atomic)
  for _, m in ipairs(d.members) do
    ok, err, code = mkdir(L.members[m.name].dir)
    if not ok then return fail(err, code) end
  end
  ok, err, code = mkdir(L.dir .. "/client")
  if not ok then return fail(err, code) end
  for _, mv in ipairs(moves) do
    local rok, rerr = os.rename(mv[1], mv[2])
    if not rok then return fail(("cluster: cannot move %s into place: %s"):format(mv[2], rerr), "EIO") end
  end
  remove_tree({}, made.dirs)
  for _, s in ipairs(p.steps) do
    s.facts = s.facts or assert(cert_facts(s.cert))
    if s.kind ~= "ca" then
      if s.action == "reuse" then
        progress(("%s: reused %s (until %s)"):format(s.id, s.cert, rfc3339(s.facts.not_after)))
      else
        progress(("%s: %s %s (%s; until %s)"):format(s.id, s.action == "issue" and "issued" or "reissued",
          s.cert, s.reason, rfc3339(s.facts.not_after)))
      end
    end
  end
  local writes = {}
  for _, m in ipairs(d.members) do writes[#writes + 1] = { L.members[m.name].config, M.etcd_config(d, L, m) } end
  writes[#writes + 1] = { L.env, M.etcdctl_env(d, L) }
  writes[#writes + 1] = { L.description, description_yaml(d) }
  writes[#writes + 1] = { L.manifest, manifest_json(d, L, p.steps) }
  for _, wr in ipairs(writes) do
    ok, err, code = prim.write(wr[1], wr[2], OCTAL_644)
    if not ok then return nil, err, code end
    progress("wrote " .. wr[1])
  end
  return { layout = L, steps = p.steps, description = d }
end

-- status and check -------------------------------------------------------------------

-- The normalized description and layout of an initialized directory.
local function open_dir(dir)
  local adir, err, code = abs_dir(dir)
  if not adir then return nil, err, code end
  local d
  d, err, code = M.load(adir .. "/cluster.yaml")
  if not d then
    return nil, ("cluster: %s is not a cluster directory (%s)"):format(adir, err), code == "ENOENT" and "ECLUSTER" or code
  end
  return d, M.layout(adir, d)
end

--- Expiry of every certificate of a cluster directory.
-- @tparam string dir
-- @treturn[1] table list of `{ id, kind, member, file, subject, not_after (epoch), not_after_rfc3339,
--   days_left, sha256 }` or `{ id, file, error }` for a file that cannot be read
-- @treturn[2] nil
-- @treturn[2] string message
-- @treturn[2] string code
function M.status(dir)
  local d, L, code = open_dir(dir)
  if not d then return nil, L, code end
  local rows = {}
  local now = os.time()
  local list = { { id = "ca", kind = "ca", cert = L.ca } }
  for _, w in ipairs(wanted(d, L)) do list[#list + 1] = w end
  for _, w in ipairs(list) do
    local f, err = cert_facts(w.cert)
    if f then
      rows[#rows + 1] = { id = w.id, kind = w.kind, member = w.member, file = w.cert, subject = f.subject,
        not_after = f.not_after, not_after_rfc3339 = rfc3339(f.not_after),
        days_left = math.floor((f.not_after - now) / DAY), sha256 = f.fingerprint }
    else
      rows[#rows + 1] = { id = w.id, kind = w.kind, member = w.member, file = w.cert, error = err }
    end
  end
  return rows
end

-- Static checks of one certificate; adds cells to `cells`.
local function check_cert(w, L, now, cell)
  local facts, err = cert_facts(w.cert)
  if not facts then return cell(false, "cannot read certificate: " .. tostring(err)) end
  local ok, why = cert.matches_key(w.cert, w.key)
  if not ok then cell(false, "key " .. w.key .. " does not match: " .. tostring(why)) end
  ok, why = cert.verify(w.cert, L.ca, "any")
  if not ok then cell(false, "not signed by the cluster CA " .. L.ca .. ": " .. tostring(why)) end
  for _, e in ipairs(w.eku) do
    if not has_eku(facts, e) then
      cell(false, ("lacks the %s extended key usage (%s)"):format(e,
        e == "clientAuth" and "peers present this certificate when they dial" or "members serve with it"))
    end
  end
  local miss = missing_sans(facts, w.hosts)
  if #miss > 0 then
    cell(false, ("SANs do not cover %s (%s)"):format(table.concat(miss, ", "), w.kind == "peer"
      and "peers reach it there or see it dial from there" or "clients reach it there"))
  end
  if facts.not_after <= now then cell(false, "expired at " .. rfc3339(facts.not_after)) end
  if facts.not_before > now then cell(false, "not valid before " .. rfc3339(facts.not_before)) end
end

-- Static checks of a member's etcd.yaml.
local function check_config(d, L, m, cell)
  local f = L.members[m.name]
  local text, err = prim.read(f.config)
  if not text then return cell(false, "cannot read " .. f.config .. ": " .. tostring(err)) end
  local lyaml = require "lyaml"
  local ok, y = pcall(lyaml.load, text)
  if not ok or type(y) ~= "table" then return cell(false, f.config .. " is not YAML") end
  if y.name ~= m.name then cell(false, ("name is %s, not %s"):format(tostring(y.name), m.name)) end
  local ic = {}
  for item in tostring(y["initial-cluster"] or ""):gmatch("[^,]+") do
    local n, u = item:match("^%s*([^=]+)=(.-)%s*$")
    if n then ic[n] = ic[n] or {}; ic[n][u] = true end
  end
  for _, o in ipairs(d.members) do
    if not ic[o.name] then
      cell(false, ("initial-cluster does not name %s%s"):format(o.name,
        o.name == m.name and " (etcd refuses to start: its own name must be listed)" or ""))
    else
      for _, u in ipairs(o.peer_urls) do
        if not ic[o.name][u] then cell(false, ("initial-cluster lacks %s=%s"):format(o.name, u)) end
      end
    end
  end
  for _, side in ipairs { "peer-transport-security", "client-transport-security" } do
    local s = type(y[side]) == "table" and y[side] or {}
    if s["trusted-ca-file"] ~= L.ca then cell(false, side .. ".trusted-ca-file is not the cluster CA " .. L.ca) end
    for _, k in ipairs { "cert-file", "key-file" } do
      if type(s[k]) ~= "string" or s[k]:sub(1, 1) ~= "/" then
        cell(false, ("%s.%s: an absolute path expected"):format(side, k))
      elseif not prim.stat(s[k]) then
        cell(false, ("%s.%s: %s does not exist"):format(side, k, s[k]))
      end
    end
  end
end

--- The checks that need no network: every certificate and every etcd.yaml of the directory.
-- @tparam string dir
-- @treturn[1] table `{ ok, cells = { {member, check, ok, reason} } }` (one cell per check and
--   problem; a passing check has one cell with ok = true)
-- @treturn[2] nil
-- @treturn[2] string message
-- @treturn[2] string code
function M.check_static(dir)
  local d, L, code = open_dir(dir)
  if not d then return nil, L, code end
  local report = { ok = true, cells = {}, description = d, layout = L }
  local now = os.time()
  local function run(member, check, fn)
    local failed = false
    fn(function(ok, reason)
      if not ok then
        failed = true
        report.ok = false
        report.cells[#report.cells + 1] = { member = member, check = check, ok = false, reason = reason }
      end
    end)
    if not failed then report.cells[#report.cells + 1] = { member = member, check = check, ok = true } end
  end
  local ca = cert_facts(L.ca)
  run(nil, "ca", function(cell)
    if not ca then return cell(false, "cannot read " .. L.ca) end
    if not ca.is_ca then cell(false, L.ca .. " is not a CA certificate") end
    local ok, why = cert.matches_key(L.ca, L.ca_key)
    if not ok then cell(false, "CA key does not match: " .. tostring(why)) end
    if ca.not_after <= now then cell(false, "CA expired at " .. rfc3339(ca.not_after)) end
  end)
  for _, w in ipairs(wanted(d, L)) do
    if w.kind == "server" then w.eku = { "serverAuth" } end
    run(w.member, w.kind, function(cell) check_cert(w, L, now, cell) end)
  end
  for _, m in ipairs(d.members) do
    run(m.name, "etcd.yaml", function(cell) check_config(d, L, m, cell) end)
  end
  return report
end

-- The address a member dials from: its first source address, else its first IP address.
local function source_of(m)
  if m.source_addresses[1] then return m.source_addresses[1] end
  for _, a in ipairs(m.addresses) do
    if prim.ip(a) then return a end
  end
  return nil
end

--- The N×N probe matrix: every member dials every other member's peer URLs with its own peer
-- credentials and speaks to it as an etcd peer (`peerlisten.probe`: TLS both ways, GET /version,
-- GET /raft/probing), from the member's own address.
-- @tparam string dir
-- @tparam[opt] table opts `members` (run only from these members, for one member per host),
--   `timeout`, `dial` (function(url, tls_opts) -> conn | nil, reason: another client, for
--   comparisons)
-- @treturn[1] table `{ ok, cells = { {from, to, url, ok, reason, code, side, reachable} } }`; a
--   cell whose member does not listen (connection refused, timeout) has `reachable = false` and
--   does not fail the matrix
-- @treturn[2] nil
-- @treturn[2] string message
-- @treturn[2] string code
function M.probe_matrix(dir, opts)
  opts = opts or {}
  local d, L, code = open_dir(dir)
  if not d then return nil, L, code end
  local probe = require "peerlisten.probe"
  local only
  if opts.members then
    only = {}
    for _, n in ipairs(opts.members) do only[n] = true end
  end
  local report = { ok = true, cells = {} }
  for _, from in ipairs(d.members) do
    if not only or only[from.name] then
      local f = L.members[from.name]
      for _, to in ipairs(d.members) do
        if to ~= from then
          for _, u in ipairs(to.peer_urls) do
            local o = { cert_file = f.peer, key_file = f.peer_key, trusted_ca_file = L.ca,
              timeout = opts.timeout or 5, source = source_of(from) }
            local cell = { from = from.name, to = to.name, url = u }
            if opts.dial then
              local conn, err = opts.dial(u, o)
              if conn then conn:close() end
              cell.ok, cell.reason = conn ~= nil, not conn and tostring(err) or nil
            else
              local r = probe.probe(u, o)
              cell.ok, cell.code, cell.side = r.ok, r.code, r.side
              cell.reason = not r.ok and ("%s (%s, refused by the %s side)"):format(tostring(r.error),
                tostring(r.code), tostring(r.side)) or nil
            end
            -- a member not started yet is not a broken link: reported, not failed
            cell.reachable = cell.ok or (cell.code ~= "ECONNREFUSED" and cell.code ~= "ETIMEDOUT")
            if not cell.ok and cell.reachable then report.ok = false end
            report.cells[#report.cells + 1] = cell
          end
        end
      end
    end
  end
  return report
end

-- Each (local) member's own preflight, strict: peerlisten.check on its etcd.yaml (binds its peer
-- URLs, builds its TLS policy, checks its certificate); any warning fails the cell.
local function preflight(report, members)
  local config = require "peerlisten.config"
  local pcheck = require "peerlisten.check"
  local only
  if members then
    only = {}
    for _, n in ipairs(members) do only[n] = true end
  end
  for _, m in ipairs(report.description.members) do
    if not only or only[m.name] then
      local f = report.layout.members[m.name]
      local cfg, err = config.load { file = f.config }
      local r = cfg and pcheck.check(cfg) or pcheck.failure(err, "ECONFIG")
      local why = {}
      if not r.ok then why[1] = tostring(r.error) end
      for _, w in ipairs(r.warnings) do why[#why + 1] = w.text or w.msg end
      local ok = #why == 0
      report.ok = report.ok and ok
      report.cells[#report.cells + 1] = { member = m.name, check = "preflight", ok = ok,
        reason = not ok and table.concat(why, "; ") or nil }
    end
  end
end

--- `cluster check`: the static checks, then (unless `opts.matrix == false`) the probe matrix.
-- @tparam string dir
-- @tparam[opt] table opts `matrix` (false to skip), `preflight` (true: also each member's
--   `peerlisten.check` on its etcd.yaml, which binds its peer URLs: only for members whose addresses
--   are on this host, named in `members`), and `probe_matrix`'s options
-- @treturn[1] table `{ ok, cells, matrix = <probe_matrix report or nil>, matrix_error = why it did not run }`
-- @treturn[2] nil
-- @treturn[2] string message
-- @treturn[2] string code
function M.check(dir, opts)
  opts = opts or {}
  local report, err, code = M.check_static(dir)
  if not report then return nil, err, code end
  if opts.preflight then preflight(report, opts.members) end
  if opts.matrix ~= false then
    local mx, merr, mcode = M.probe_matrix(dir, opts)
    if mx then
      report.matrix = mx
      report.ok = report.ok and mx.ok
    else
      report.matrix_error, report.matrix_code = merr, mcode
    end
  end
  return report
end

--- Parses a duration such as "30d", "12h", "90m", "45s", "2w" or a number of seconds.
-- @tparam string s
-- @treturn[1] number seconds
-- @treturn[2] nil
-- @treturn[2] string message
-- @treturn[2] string "ECLUSTER"
function M.parse_duration(s)
  local n, unit = tostring(s):match("^(%d+%.?%d*)([smhdw]?)$")
  if not n then return nil, ("invalid duration %q (e.g. 30d, 12h, 90m, 45s)"):format(tostring(s)), "ECLUSTER" end
  local mult = { [""] = 1, s = 1, m = 60, h = 3600, d = DAY, w = 7 * DAY }
  return math.floor(tonumber(n) * mult[unit])
end

return M
