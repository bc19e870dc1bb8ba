--- The cluster half of the preflight (used by `peerlisten.check`).
--
-- With `name`, `initial-cluster` and `initial-advertise-peer-urls` set, a
-- member's configuration says who its peers are. This checks what etcd
-- would refuse at startup (the name missing from `initial-cluster`, the
-- advertise URLs not being exactly the member's `initial-cluster` entries),
-- and what makes the peer links fail later although etcd starts: a
-- certificate that does not name the advertise URL hosts, or (peer client
-- certificate auth on) not the source address this host dials each other
-- member from, a certificate without clientAuth, a CA used as a member
-- certificate. `peers` probes the other members.
-- @module peerlisten.check_cluster

local cert = require "peerlisten.cert"
local core = require "peerlisten.core"
local probe = require "peerlisten.probe"
local optional = require "peerlisten.optional"
local url = require "peerlisten.url"

local M = {}

local function contains(list, v)
  for _, x in ipairs(list or {}) do if x == v then return true end end
  return false
end

local function split(s)
  local out = {}
  for item in tostring(s or ""):gmatch("[^,]+") do
    item = item:match("^%s*(.-)%s*$")
    if item ~= "" then out[#out + 1] = item end
  end
  return out
end

local function list_of(v)
  if type(v) == "table" then return v end
  return split(v)
end

--- The cluster settings of a loaded configuration: `name`, `initial_cluster`
-- (the string), `advertise` (list), or nil when either of the last two is
-- not set. Flags and YAML keep them in `cfg._other`; the environment is read
-- through `env` (only without a config file, as etcd).
function M.settings(cfg, env)
  local o = cfg._other or {}
  local function get(dash)
    local v = o[dash]
    if v == nil then v = o[(dash:gsub("-", "_"))] end
    if v == nil and env and not cfg._file then
      local getenv = type(env) == "function" and env or function(k) return env[k] end
      v = getenv("ETCD_" .. dash:upper():gsub("-", "_"))
    end
    if v == "" then v = nil end
    return v
  end
  local ic, adv = get("initial-cluster"), get("initial-advertise-peer-urls")
  if ic == nil or adv == nil then return nil end
  if type(ic) == "table" then ic = table.concat(ic, ",") end
  return { name = cfg.name, initial_cluster = ic, advertise = list_of(adv) }
end

--- Parses "n1=url1,n1=url2,n2=url3" into an ordered list of members.
-- @treturn[1] table `{ { name =, urls = { parsed url tables } }, ... }`
-- @treturn[2] nil
-- @treturn[2] string
function M.parse_initial_cluster(s)
  local members, byname = {}, {}
  for _, item in ipairs(split(s)) do
    local name, u = item:match("^([^=]*)=(.*)$")
    if not name then return nil, ("invalid --initial-cluster entry %q (name=URL expected)"):format(item) end
    local p, err = url.parse(u)
    if not p then return nil, ("--initial-cluster: %s"):format(err) end
    local m = byname[name]
    if not m then
      m = { name = name, urls = {} }
      byname[name] = m
      members[#members + 1] = m
    end
    m.urls[#m.urls + 1] = p
  end
  return members, byname
end

-- etcd's startup rule: the advertise URLs are exactly the member's entries.
local function membership(s, byname, report)
  local me = byname[s.name]
  if not me then
    return ("couldn't find local name %q in the initial cluster configuration"):format(s.name)
  end
  local adv, init = {}, {}
  for _, a in ipairs(s.advertise) do
    local p, err = url.parse(a)
    if not p then return err end
    adv[p.url] = true
  end
  for _, p in ipairs(me.urls) do init[p.url] = true end
  local missing = {}
  for _, p in ipairs(me.urls) do
    if not adv[p.url] then missing[#missing + 1] = s.name .. "=" .. p.url end
  end
  if #missing > 0 then
    return ("--initial-cluster has %s but missing from --initial-advertise-peer-urls=%s"):format(
      table.concat(missing, ","), table.concat(s.advertise, ","))
  end
  for _, a in ipairs(s.advertise) do
    local p = url.parse(a)
    if not init[p.url] then missing[#missing + 1] = p.url end
  end
  if #missing > 0 then
    local mine = {}
    for _, a in ipairs(s.advertise) do mine[#mine + 1] = s.name .. "=" .. a end
    return ("--initial-advertise-peer-urls has %s but missing from --initial-cluster=%s"):format(
      table.concat(missing, ","), table.concat(mine, ","))
  end
  report.cluster.member_ok = true
  return nil
end

-- Whether the certificate names host (an IP SAN for an IP, else a DNS SAN).
local function names(info, host)
  return contains(info.sans.ip, host) or contains(info.sans.dns, host)
end

-- Whether one of the certificate's DNS names resolves to ip (etcd's
-- server-side check accepts that too); false when no resolver is at hand.
local function dns_resolves_to(info, ip)
  local socket = optional.require "socket"
  if not socket then return false end
  for _, d in ipairs(info.sans.dns or {}) do
    local _, res = socket.dns.toip(d)
    for _, a in ipairs(res and res.ip or {}) do if a == ip then return true end end
  end
  return false
end

-- The certificate that peers see when this member dials them.
local function client_cert_file(files)
  if (files.client_cert_file or "") ~= "" then return files.client_cert_file end
  return files.cert_file
end

local function certificate_checks(cfg, s, members, files, warn, report)
  local pts = cfg.peer_transport_security
  local server = files.cert_file ~= "" and cert.inspect(files.cert_file)
  if server and server[1] then server = server[1] end
  if server then
    for _, a in ipairs(s.advertise) do
      local p = url.parse(a)
      if p and p.scheme == "https" and not names(server, p.host) then
        warn("peer certificate does not name the advertise URL host; peers dialling it reject the certificate",
          { ["cert-file"] = files.cert_file, url = a, host = p.host })
      end
    end
    if server.is_ca then
      warn("peer certificate is a CA certificate (CA:TRUE), not a member certificate",
        { ["cert-file"] = files.cert_file })
    end
  end
  local cfile = client_cert_file(files)
  local client = cfile ~= "" and cert.inspect(cfile)
  if client and client[1] then client = client[1] end
  if not client or not pts.client_cert_auth then return end
  local eku = client.ext_key_usage or {}
  -- (the peer certificate itself is checked for clientAuth by check's certificate pass)
  if (files.client_cert_file or "") ~= "" and #eku > 0 and not contains(eku, "clientAuth") then
    warn("peer certificate lacks the clientAuth extended key usage while members require client certificates",
      { ["cert-file"] = cfile })
  end
  if pts.skip_client_san_verification then return end
  report.cluster.dial_sources = {}
  for _, m in ipairs(members) do
    if m.name ~= s.name then
      for _, p in ipairs(m.urls) do
        if p.scheme == "https" then
          local src, err = core.route_source(p.host, p.port)
          local row = { name = m.name, url = p.url, source = src, error = not src and err or nil }
          if src then
            row.named = (#client.sans.ip == 0 and #client.sans.dns == 0) or contains(client.sans.ip, src)
              or dns_resolves_to(client, src)
            if not row.named then
              local have = #client.sans.ip > 0 and table.concat(client.sans.ip, ", ") or table.concat(client.sans.dns, ", ")
              warn("peer certificate does not name the address this member dials a peer from; the peer rejects it",
                { ["cert-file"] = cfile, peer = m.name, url = p.url, source = src,
                  error = ("x509: certificate is valid for %s, not %s"):format(have, src) })
            end
          end
          report.cluster.dial_sources[#report.cluster.dial_sources + 1] = row
        end
      end
    end
  end
end

-- Probes every other member: the row of the N x N matrix this member owns.
local function probe_peers(cfg, s, members, warn, report, opts)
  local dopts, err, code = probe.member_options(cfg)
  report.peers = {}
  for _, m in ipairs(members) do
    if m.name ~= s.name then
      for _, p in ipairs(m.urls) do
        local r
        if dopts then
          local o = {}
          for k, v in pairs(dopts) do o[k] = v end
          o.timeout = opts.timeout or 3
          r = probe.probe(p.url, o)
        else
          r = { ok = false, url = p.url, error = err, code = code, side = "local",
            verdict = "FAIL: " .. tostring(err) }
        end
        r.name = m.name
        r.reachable = r.code ~= "ECONNREFUSED" and r.code ~= "ETIMEDOUT" and r.code ~= "ENOTFOUND"
        report.peers[#report.peers + 1] = r
        if not r.ok and r.reachable then
          warn("peer probe failed", { peer = m.name, url = p.url, code = r.code, error = r.error })
        end
      end
    end
  end
end

--- Runs the cluster checks, adding `report.cluster` (and `report.peers`).
-- @tparam table cfg the loaded configuration
-- @tparam table files the certificate files in effect
-- @tparam function warn `warn(msg, fields)` for a certificate or cluster warning
-- @tparam table report the report being built
-- @tparam table opts check's options (`peers`, `env`, `timeout`)
-- @treturn[1] true
-- @treturn[2] nil
-- @treturn[2] string etcd's startup error
-- @treturn[2] string "ECLUSTER"
function M.run(cfg, files, warn, report, opts)
  local s = M.settings(cfg, opts.env)
  if not s then return true end
  local members, byname = M.parse_initial_cluster(s.initial_cluster)
  if not members then return nil, byname, "ECLUSTER" end
  report.cluster = { name = s.name, advertise = s.advertise, members = {} }
  for i, m in ipairs(members) do
    local us = {}
    for j, p in ipairs(m.urls) do us[j] = p.url end
    report.cluster.members[i] = { name = m.name, urls = us }
  end
  local merr = membership(s, byname, report)
  if merr then return nil, merr, "ECLUSTER" end
  if files then certificate_checks(cfg, s, members, files, warn, report) end
  if opts.peers then probe_peers(cfg, s, members, warn, report, opts) end
  return true
end

return M
