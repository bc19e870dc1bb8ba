--- Cluster descriptions for peerlisten.cluster: the keys a description may hold, their
-- validation (every problem named with its member and key) and the normalized form the rest of
-- the cluster modules read. Private; use peerlisten.cluster.
-- @module peerlisten.cluster_description

local cert = require "peerlisten.cert"
local core = require "peerlisten.core"
local optional = require "peerlisten.optional"
local url = require "peerlisten.url"

local M = {}

--- The etcd versions whose configuration syntax `init` writes.
M.VERSIONS = { "3.4", "3.5", "3.6" }
local VERSION = { ["3.4"] = true, ["3.5"] = true, ["3.6"] = true }

local TOP_KEYS = { name = true, ["etcd-version"] = true, token = true, members = true, tls = true }
local MEMBER_KEYS = { name = true, addresses = true, ["peer-urls"] = true, ["client-urls"] = true,
  ["source-addresses"] = true }
local TLS_KEYS = { ["key-type"] = true, ["cert-validity-days"] = true, ["ca-validity-days"] = true,
  ["peer-client-cert-auth"] = true, ["client-cert-auth"] = true, ["client-cn"] = true }

local NAME_PATTERN = "^[%w][%w._-]*$"

-- Canonical form of an address: ("ip", text) or ("dns", lower-case name), or nil.
local function address(a)
  if type(a) ~= "string" or a == "" then return nil end
  local ip = core.cert_ip(a)
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
  local text, err, code = core.cert_read_file(src)
  if not text then return nil, err, code end
  local lyaml, lerr, lcode = optional.require "lyaml"
  if not lyaml then return nil, lerr, lcode end
  local ok, doc = pcall(lyaml.load, text)
  if not ok then return nil, ("%s: not YAML: %s"):format(src, tostring(doc)), "ECLUSTER" end
  local d
  d, err, code = M.validate(doc)
  if not d then return nil, src .. ": " .. err, code end
  return d
end

M.address = address

return M
