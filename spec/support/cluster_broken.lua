-- Broken-on-purpose cluster directories for the cluster specs: each case damages one member of a
-- freshly initialized directory the way operators get it wrong, and names the cell (member, check)
-- and the reason `cluster.check` must report.
local cluster = require "peerlisten.cluster"
local cert = require "peerlisten.cert"
local core = require "peerlisten.core"

local M = {}

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, s)
  local f = assert(io.open(path, "w"))
  f:write(s)
  f:close()
end

-- Replaces `<member>/peer.pem` + key of dir with the pair at (c, k).
local function put_peer(dir, member, c, k)
  assert(os.rename(c, dir .. "/" .. member .. "/peer.pem"))
  assert(os.rename(k, dir .. "/" .. member .. "/peer-key.pem"))
end

-- Each case: name, damage(dir, d) where d is the normalized description, and the expected
-- failed cell { member, check, reason pattern }.
M.cases = {
  {
    name = "a member certificate without its address",
    damage = function(dir, d)
      local m = d.members[2]
      local c, k = assert(cert.issue { ca_cert = dir .. "/ca.pem", ca_key = dir .. "/ca-key.pem",
        dir = dir .. "/tmp-nosan", name = m.name, hosts = { m.name .. ".example.invalid" } })
      put_peer(dir, m.name, c, k)
      return { member = m.name, check = "peer", reason = "SANs do not cover " .. m.addresses[1]:gsub("%.", "%%.") }
    end,
  },
  {
    name = "a member signed by another CA",
    damage = function(dir, d)
      local m = d.members[2]
      local oc, ok = assert(cert.ca { dir = dir .. "/tmp-other-ca", name = "other-ca" })
      local c, k = assert(cert.issue { ca_cert = oc, ca_key = ok, dir = dir .. "/tmp-other", name = m.name,
        hosts = m.addresses })
      put_peer(dir, m.name, c, k)
      return { member = m.name, check = "peer", reason = "not signed by the cluster CA" }
    end,
  },
  {
    name = "a member certificate without the clientAuth usage",
    damage = function(dir, d)
      local m = d.members[2]
      local key = assert(core.cert_keygen("ecdsa-p256"))
      local ips, dns = {}, {}
      for _, a in ipairs(m.addresses) do
        if core.cert_ip(a) then ips[#ips + 1] = a else dns[#dns + 1] = a end
      end
      local now = os.time()
      local pem = assert(core.cert_create { key = key, issuer_cert = read(dir .. "/ca.pem"),
        issuer_key = read(dir .. "/ca-key.pem"), subject = { { "CN", m.name } }, not_before = now - 60,
        not_after = now + 86400, is_ca = false, key_usage = { "digitalSignature", "keyEncipherment" },
        ext_key_usage = { "serverAuth" }, ips = ips, dns = dns })
      write(dir .. "/" .. m.name .. "/peer.pem", pem)
      write(dir .. "/" .. m.name .. "/peer-key.pem", key)
      return { member = m.name, check = "peer", reason = "lacks the clientAuth extended key usage" }
    end,
  },
  {
    name = "a name missing from initial-cluster",
    damage = function(dir, d)
      local m = d.members[3]
      local path = dir .. "/" .. m.name .. "/etcd.yaml"
      local text = read(path)
      local entry = m.name .. "=" .. m.peer_urls[1]
      local s, e = text:find(entry, 1, true)
      assert(s, "initial-cluster entry not found")
      local before, after = text:sub(1, s - 1), text:sub(e + 1)
      if after:sub(1, 1) == "," then after = after:sub(2) else before = before:gsub(",$", "") end
      write(path, before .. after)
      return { member = m.name, check = "etcd.yaml", reason = "initial%-cluster does not name " .. m.name }
    end,
  },
}

-- Runs one case on a fresh directory made from desc; returns the check report and the expected cell.
function M.run(case, desc, dir)
  local r = assert(cluster.init(desc, { out = dir }))
  local want = case.damage(dir, r.description)
  local report = assert(cluster.check(dir, { matrix = false }))
  return report, want
end

return M
