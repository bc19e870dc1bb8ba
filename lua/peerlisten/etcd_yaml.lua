--- etcd's YAML decoding: YAML -> JSON -> Go struct (sigs.k8s.io/yaml).
--
-- etcd reads its config file into typed Go fields, so a list where a string
-- is wanted, a mapping where a list is wanted or a quoted "true" where a
-- bool is wanted stop it with Go's encoding/json message. This module gives
-- the shape of a document (mapping, sequence, scalar with its JSON kind),
-- the Go types of the keys per etcd version, and the first error etcd's
-- decoder would report.
-- @module peerlisten.etcd_yaml

-- lyaml is optional (peerlisten.optional): config.lua loads it before it
-- reads a YAML file, so peerlisten itself loads without it.
local optional = require "peerlisten.optional"

local M = {}

--- The shape of a YAML document, from libyaml's events (lyaml.load cannot
-- tell `{}` from `[]`), or nil when libyaml refuses the text. Nodes: { kind = "map", keys = {name = node} } | { kind = "seq",
-- items = {...} } | { kind = "scalar", json = "null"|"bool"|"number"|"string" }.
local NULLS = { [""] = true, ["~"] = true, null = true, Null = true, NULL = true }
local BOOLS = {}
for w in ("y Y yes Yes YES on On ON true True TRUE n N no No NO off Off OFF false False FALSE"):gmatch("%S+") do
  BOOLS[w] = true
end
local function scalar_json(ev)
  local v = ev.value
  if ev.tag and ev.tag ~= "" then
    local t = ev.tag:match("([^:]+)$")
    if t == "str" then return "string" elseif t == "int" or t == "float" then return "number"
    elseif t == "bool" then return "bool" elseif t == "null" then return "null" end
    return "string"
  end
  if ev.style ~= "PLAIN" then return "string" end
  if NULLS[v] then return "null" end
  if BOOLS[v] then return "bool" end
  local num = v:gsub("_", "")
  if num:match("^[-+]?%d+$") or num:match("^[-+]?0x%x+$") or num:match("^[-+]?0b[01]+$")
    or num:match("^[-+]?%d*%.?%d+[eE]?[-+]?%d*$") or num:match("^[-+]?%d+%.%d*$") then
    return "number", v
  end
  return "string"
end

function M.shape(text)
  local yaml = optional.require "yaml"   -- lyaml's libyaml binding
  if not yaml then return nil end
  local evs = {}
  local pok = pcall(function() for ev in yaml.parser(text) do evs[#evs + 1] = ev end end)
  if not pok then return nil end
  local i = 0
  local function node()
    i = i + 1
    local ev = evs[i]
    if not ev then return { kind = "null" } end
    if ev.type == "MAPPING_START" then
      local m = { kind = "map", keys = {} }
      while evs[i + 1] and evs[i + 1].type ~= "MAPPING_END" do
        local k = node()
        local v = node()
        if k.kind == "scalar" then m.keys[k.value] = v end
      end
      i = i + 1
      return m
    elseif ev.type == "SEQUENCE_START" then
      local sq = { kind = "seq", items = {} }
      while evs[i + 1] and evs[i + 1].type ~= "SEQUENCE_END" do sq.items[#sq.items + 1] = node() end
      i = i + 1
      return sq
    elseif ev.type == "SCALAR" then
      local json, numtext = scalar_json(ev)
      return { kind = "scalar", json = json, value = ev.value, num = numtext }
    end
    return { kind = "other" }
  end
  while evs[i + 1] and evs[i + 1].type ~= "MAPPING_START" and evs[i + 1].type ~= "SEQUENCE_START"
    and evs[i + 1].type ~= "SCALAR" do
    i = i + 1
  end
  if not evs[i + 1] then return { kind = "scalar", json = "null" } end
  return node()
end

-- Go's encoding/json type error, as etcd prints it.
local UNMARSHAL = "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal %s into Go "

--- etcd's error for a YAML document that is not a mapping; `what` is what
-- JSON calls the value ("array", "string", "number", "bool").
-- @treturn string
function M.not_a_mapping(what)
  return (UNMARSHAL .. "value of type embed.configYAML"):format(what)
end

-- What JSON calls a node's value, as Go's "cannot unmarshal <what>".
local function json_kind(n)
  if n.kind == "map" then return "object" elseif n.kind == "seq" then return "array" end
  return n.json
end

--- The Go types etcd's config struct gives the YAML keys peerlisten reads,
-- for a profile: the top-level table and the peer-transport-security one.
-- A type is "string", "[]string", "bool", "uint" or, for a struct,
-- `{ go type name, struct name, field table }`.
function M.schema(prof)
  local sec = { ["cert-file"] = "string", ["key-file"] = "string", ["client-cert-auth"] = "bool",
    ["trusted-ca-file"] = "string", ["auto-tls"] = "bool" }
  if prof.peer_client_cert_flags then
    sec["client-cert-file"], sec["client-key-file"] = "string", "string"
  end
  if prof.yaml_allowed_keys then
    local t = prof.yaml_allowed_lists and "[]string" or "string"
    sec["allowed-cn"], sec["allowed-hostname"] = t, t
  end
  if prof.skip_san_flag then sec["skip-client-san-verification"] = "bool" end
  local top = { name = "string", ["data-dir"] = "string", ["wal-dir"] = "string",
    ["listen-peer-urls"] = "string", ["listen-client-urls"] = "string", ["initial-advertise-peer-urls"] = "string",
    ["advertise-client-urls"] = "string", ["initial-cluster"] = "string", ["initial-cluster-state"] = "string",
    ["initial-cluster-token"] = "string", ["cipher-suites"] = "[]string", ["log-outputs"] = "[]string",
    ["log-level"] = "string", logger = "string",
    ["peer-transport-security"] = { "embed.securityConfig", "securityConfig", sec },
    ["client-transport-security"] = { "embed.securityConfig", "securityConfig", sec } }
  if prof.tls_version_flags then top["tls-min-version"], top["tls-max-version"] = "string", "string" end
  if prof.self_signed_validity_flag then top["self-signed-cert-validity"] = "uint" end
  if prof.log_format_flag then top["log-format"] = "string" end
  if prof.yaml_socket_options then
    top["socket-options"] = { "transport.SocketOpts", "SocketOpts",
      { ["reuse-port"] = "bool", ["reuse-address"] = "bool" } }
  end
  return top, sec
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- Go's encoding/json on one value: the first type error, as etcd prints it.
local function go_type_error(n, gotype, struct, field)
  local function fail(what, t)
    return (UNMARSHAL .. "struct field %s.%s of type %s"):format(what, struct, field, t)
  end
  if n.kind == "other" or json_kind(n) == "null" then return nil end
  if type(gotype) == "table" then
    if n.kind ~= "map" then return fail(json_kind(n), gotype[1]) end
    for _, k in ipairs(sorted_keys(n.keys)) do
      local t = gotype[3][k]
      if t then
        local e = go_type_error(n.keys[k], t, gotype[2], field .. "." .. k)
        if e then return e end
      end
    end
  elseif gotype == "string" then
    -- sigs.k8s.io/yaml turns numbers and bools into strings for string fields
    if n.kind ~= "scalar" then return fail(json_kind(n), "string") end
  elseif gotype == "[]string" then
    if n.kind ~= "seq" then return fail(json_kind(n), "[]string") end
    for _, item in ipairs(n.items) do
      if item.kind ~= "scalar" and item.kind ~= "other" then return fail(json_kind(item), "string") end
    end
  elseif gotype == "bool" then
    if json_kind(n) ~= "bool" then return fail(json_kind(n), "bool") end
  elseif gotype == "uint" then
    local v = n.kind == "scalar" and n.json == "number" and tonumber((n.value:gsub("_", "")))
    if json_kind(n) ~= "number" then return fail(json_kind(n), "uint") end
    if not v or math.type(v) ~= "integer" or v < 0 then return fail("number " .. n.value, "uint") end
  end
  return nil
end

-- Keys of peer-transport-security that carry a security setting: a profile
-- whose etcd ignores one of them would run without it.
local SECURITY_KEYS = { ["allowed-cn"] = true, ["allowed-hostname"] = true, ["crl-file"] = true,
  ["client-cert-file"] = true, ["client-key-file"] = true,
  ["client-cert-auth"] = true, ["trusted-ca-file"] = true, ["cert-file"] = true, ["key-file"] = true }

--- Checks a document's types as etcd's decoder does.
-- @tparam table shape from `shape`
-- @tparam table prof an etcd profile (peerlisten.etcd_versions)
-- @treturn nil|string etcd's error, or ours for a security key the version ignores
-- @treturn nil|string that key ("peer-transport-security.<key>"), when that was the error
function M.check(shape, prof)
  if shape.kind == "seq" or (shape.kind == "scalar" and shape.json ~= "null") then
    return M.not_a_mapping(json_kind(shape))
  end
  if shape.kind ~= "map" then return nil end
  local top, sec = M.schema(prof)
  for _, k in ipairs(sorted_keys(shape.keys)) do
    local t = top[k]
    if t then
      local e = go_type_error(shape.keys[k], t, "configYAML", k)
      if e then return e end
    end
  end
  local pts = shape.keys["peer-transport-security"]
  if pts and pts.kind == "map" then
    for _, k in ipairs(sorted_keys(pts.keys)) do
      local v = pts.keys[k]
      if SECURITY_KEYS[k] and not sec[k] and not (v.kind == "scalar" and v.json == "null") then
        return ("peer-transport-security.%s: etcd %s has no such key and would start without this setting "
          .. "(peerlisten refuses to drop a security setting silently; difference from etcd)"):format(k, prof.version),
          "peer-transport-security." .. k
      end
    end
  end
  return nil
end

--- Converts a value lyaml read for a key of Go type `gotype` (from `schema`)
-- as etcd's decoder would: numbers and booleans become strings for string
-- fields; YAML null is nil.
function M.value(v, gotype)
  local lyaml = package.loaded.lyaml
  if v == nil or (lyaml and v == lyaml.null) then return nil end
  if gotype == "string" and type(v) ~= "table" then return tostring(v) end
  if gotype == "[]string" and type(v) == "table" then
    local out = {}
    for i, x in ipairs(v) do out[i] = tostring(x) end
    return out
  end
  return v
end

return M
