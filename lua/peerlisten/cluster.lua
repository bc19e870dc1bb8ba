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

local description = require "peerlisten.cluster_description"
local cfiles = require "peerlisten.cluster_files"
local check = require "peerlisten.cluster_check"

local DAY, OCTAL_700 = cfiles.DAY, cfiles.OCTAL_700
local prim, cert_facts, rfc3339, random_hex = cfiles.prim, cfiles.cert_facts, cfiles.rfc3339, cfiles.random_hex
local abs_dir, remove_tree = cfiles.abs_dir, cfiles.remove_tree
local decide, issue_one, make_ca = cfiles.decide, cfiles.issue_one, cfiles.make_ca

local M = {
  VERSIONS = description.VERSIONS,
  validate = description.validate,
  load = description.load,
  layout = cfiles.layout,
  etcd_config = cfiles.etcd_config,
  etcdctl_env = cfiles.etcdctl_env,
  status = check.status,
  check_static = check.check_static,
  probe_matrix = check.probe_matrix,
  check = check.check,
}

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

-- Refuses a directory that holds another cluster.
local function same_cluster(d, L)
  if not prim.stat(L.description) then return true end
  local other = M.load(L.description)
  if other and other.name ~= d.name then
    return nil, ("cluster: %s holds cluster %q, not %q"):format(L.dir, other.name, d.name), "ECLUSTER"
  end
  return true
end

-- Reads back what every step left in place (`facts`) and reports the certificates, one line each.
local function report_steps(steps, progress)
  for _, s in ipairs(steps) do
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
  report_steps(p.steps, progress)
  ok, err, code = cfiles.write_all(d, L, p.steps, progress)
  if not ok then return nil, err, code end
  return { layout = L, steps = p.steps, description = d }
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
