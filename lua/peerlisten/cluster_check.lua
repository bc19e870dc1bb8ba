--- The checks of a cluster directory for peerlisten.cluster: certificate expiry (`status`), the
-- static checks of every certificate and etcd.yaml, the N×N probe matrix and each member's
-- preflight. Private; use peerlisten.cluster.
-- @module peerlisten.cluster_check

local cert = require "peerlisten.cert"
local config = require "peerlisten.config"
local description = require "peerlisten.cluster_description"
local optional = require "peerlisten.optional"
local cfiles = require "peerlisten.cluster_files"
local pcheck = require "peerlisten.check"
local probe = require "peerlisten.probe"

local DAY, prim, cert_facts, rfc3339 = cfiles.DAY, cfiles.prim, cfiles.cert_facts, cfiles.rfc3339
local abs_dir, wanted, has_eku, missing_sans = cfiles.abs_dir, cfiles.wanted, cfiles.has_eku, cfiles.missing_sans

local M = {}

-- The normalized description and layout of an initialized directory.
local function open_dir(dir)
  local adir, err, code = abs_dir(dir)
  if not adir then return nil, err, code end
  local d
  d, err, code = description.load(adir .. "/cluster.yaml")
  if not d then
    return nil, ("cluster: %s is not a cluster directory (%s)"):format(adir, err), code == "ENOENT" and "ECLUSTER" or code
  end
  return d, cfiles.layout(adir, d)
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
  local lyaml, lerr = optional.require "lyaml"
  if not lyaml then return cell(false, lerr) end
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

return M
