--- The files of a cluster directory for peerlisten.cluster: its layout, what each certificate
-- must be and whether an existing one can be reused, the certificate material (CA, member and
-- client pairs), the etcd configuration and etcdctl files and the manifest. Private; use
-- peerlisten.cluster.
-- @module peerlisten.cluster_files

local cert = require "peerlisten.cert"
local core = require "peerlisten.core"
local log = require "peerlisten.log"
local description = require "peerlisten.cluster_description"

local address = description.address

local M = {}

local DAY = 86400
local OCTAL_600, OCTAL_644, OCTAL_700 = tonumber("600", 8), tonumber("644", 8), tonumber("700", 8)

-- The C primitives the cluster modules use.
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

-- The fields the cluster modules read of a certificate file (its first certificate).
local function cert_facts(path)
  local list, err, code = cert.inspect_chain(path)
  if not list then return nil, err, code end
  local info = list[1]
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

-- Writes (atomically) every member's etcd.yaml, the etcdctl environment file, the normalized
-- description and the manifest; `progress(line)` after each.
local function write_all(d, L, steps, progress)
  local writes = {}
  for _, m in ipairs(d.members) do writes[#writes + 1] = { L.members[m.name].config, M.etcd_config(d, L, m) } end
  writes[#writes + 1] = { L.env, M.etcdctl_env(d, L) }
  writes[#writes + 1] = { L.description, description_yaml(d) }
  writes[#writes + 1] = { L.manifest, manifest_json(d, L, steps) }
  for _, wr in ipairs(writes) do
    local ok, err, code = prim.write(wr[1], wr[2], OCTAL_644)
    if not ok then return nil, err, code end
    progress("wrote " .. wr[1])
  end
  return true
end

M.DAY, M.OCTAL_644, M.OCTAL_700 = DAY, OCTAL_644, OCTAL_700
M.prim, M.cert_facts, M.rfc3339, M.random_hex = prim, cert_facts, rfc3339, random_hex
M.abs_dir, M.wanted, M.has_eku, M.missing_sans = abs_dir, wanted, has_eku, missing_sans
M.remove_tree, M.decide = remove_tree, decide
M.issue_one, M.make_ca, M.write_all = issue_one, make_ca, write_all

return M
