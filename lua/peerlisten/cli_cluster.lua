--- `peerlisten cluster plan|init|status|check`: the cluster bootstrap from the command line.
--
-- `main(args, out, err)` returns the exit status: 0 ok, 1 failure (including a failed check),
-- 2 usage error. Progress and messages go to `err`, results to `out`.
-- @module peerlisten.cli_cluster

local cluster = require "peerlisten.cluster"
local log = require "peerlisten.log"

local M = {}

M.USAGE = [[
Usage: peerlisten cluster <command> [options]

Commands:
  plan FILE [--out DIR] [--renew-within DURATION] [--member NAME]
      Show what init would create, reuse or renew, and every check `check` runs.
  init FILE --out DIR [--renew-within DURATION] [--member NAME]
      Create or update the cluster directory: CA, member and client certificates,
      DIR/<member>/etcd.yaml, DIR/etcdctl.env, DIR/manifest.json. Valid material is
      reused; --renew-within 30d reissues what expires sooner (the CA is kept);
      --member limits the renewal to that member (repeatable).
  status DIR [--json]
      Expiry of every certificate.
  check DIR [--json] [--preflight] [--member NAME]
      Static checks of every certificate and etcd.yaml (SANs, usages, issuer,
      initial-cluster), then the member-to-member probe matrix.

FILE is a YAML cluster description; DURATION is e.g. 30d, 12h, 90m, 45s.
Exit status: 0 ok, 1 failure or failed check, 2 usage error.
]]

local HELP = {
  plan = "Usage: peerlisten cluster plan FILE [--out DIR] [--renew-within DURATION] [--member NAME]\n\n"
    .. "Validates the description and prints each file init would create (or reuse/renew, when DIR\n"
    .. "exists) and each check `cluster check` runs. Changes nothing.\n",
  init = "Usage: peerlisten cluster init FILE --out DIR [--renew-within DURATION] [--member NAME]\n\n"
    .. "Creates or updates DIR. Re-running reuses every certificate that is still good; what changed in\n"
    .. "the description is reissued; --renew-within reissues certificates expiring sooner (the CA is\n"
    .. "kept); --member NAME limits that to NAME's certificates. One progress line per step on stderr.\n",
  status = "Usage: peerlisten cluster status DIR [--json]\n\nShows subject, expiry and days left of every "
    .. "certificate in DIR.\n",
  check = [[
Usage: peerlisten cluster check DIR [--json] [--preflight] [--member NAME]

Per member: peer and server certificate (key, signed by the cluster CA, usages,
SANs incl. the dial source, validity), etcd.yaml (name, initial-cluster, files);
the client certificate. Then the probe matrix (peerlisten probe between members).
Every failed cell is printed with member, check and reason; exit 1 if any.
  --preflight    also each member's `peerlisten check` on its etcd.yaml (binds
                 its peer URLs; any warning fails)
  --member NAME  the members on this host, for --preflight and the matrix
]],
}

-- Parses options: spec name -> "flag" | "value" | "list". Returns opts, positional or nil, err.
local function getopt(args, spec)
  local opts, pos = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local name, value = a:match("^%-%-([%w-]+)=(.*)$")
    if not name then name = a:match("^%-%-([%w-]+)$") end
    if name then
      local kind = spec[name]
      if not kind then return nil, "unknown option " .. a end
      if kind == "flag" then
        opts[name] = true
      else
        if value == nil then
          i = i + 1
          value = args[i]
          if value == nil then return nil, ("option --%s needs a value"):format(name) end
        end
        if kind == "list" then
          opts[name] = opts[name] or {}
          table.insert(opts[name], value)
        else
          opts[name] = value
        end
      end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return opts, pos
end

local function fail(err, cmd, msg, code)
  err("peerlisten cluster ", cmd, ": ", tostring(msg), code and (" (" .. code .. ")") or "", "\n")
  return 1
end

local function usage(err, cmd, msg)
  err("peerlisten cluster ", cmd, ": ", msg, "\n", "Run 'peerlisten cluster ", cmd, " --help' for usage.\n")
  return 2
end

local function init_opts(o)
  local t = { out = o.out, members = o.member }
  if o["renew-within"] then
    local s, e = cluster.parse_duration(o["renew-within"])
    if not s then return nil, e end
    t.renew_within = s
  end
  return t
end

local function cmd_plan(args, out, err)
  local o, pos = getopt(args, { out = "value", ["renew-within"] = "value", member = "list" })
  if not o then return usage(err, "plan", pos) end
  if #pos ~= 1 then return usage(err, "plan", "exactly one FILE expected") end
  local t, e = init_opts(o)
  if not t then return usage(err, "plan", e) end
  local p, perr, code = cluster.plan(pos[1], t)
  if not p then return fail(err, "plan", perr, code) end
  local d = p.description
  out(("cluster %s: etcd %s syntax, %d members, token %s, directory %s\n"):format(d.name, d.etcd_version,
    #d.members, d.token, p.layout.dir))
  out("certificates:\n")
  for _, s in ipairs(p.steps) do
    local what = s.kind == "ca" and "cluster CA (unique subject, key 0600)" or
      (s.kind == "client" and "client certificate (clientAuth only, no SANs)" or
      ("%s certificate, SANs %s"):format(s.kind, table.concat(s.hosts, ", ")))
    out(("  %-8s %-22s %s  %s%s\n"):format(s.action, s.id, s.cert, what, s.reason and s.reason ~= "new"
      and (" [" .. s.reason .. "]") or ""))
  end
  out("files written:\n")
  for _, f in ipairs(p.files) do out("  ", f, "\n") end
  out("checks (peerlisten cluster check):\n")
  for _, c in ipairs(p.checks) do out("  ", c, "\n") end
  return 0
end

local function cmd_init(args, out, err)
  local o, pos = getopt(args, { out = "value", ["renew-within"] = "value", member = "list" })
  if not o then return usage(err, "init", pos) end
  if #pos ~= 1 then return usage(err, "init", "exactly one FILE expected") end
  if not o.out then return usage(err, "init", "--out DIR is required") end
  local t, e = init_opts(o)
  if not t then return usage(err, "init", e) end
  t.progress = function(line) err("cluster init: ", line, "\n") end
  local r, ierr, code = cluster.init(pos[1], t)
  if not r then return fail(err, "init", ierr, code) end
  local counts = {}
  for _, s in ipairs(r.steps) do counts[s.action] = (counts[s.action] or 0) + 1 end
  out(("%s: ready in %s (%s)\n"):format(r.description.name, r.layout.dir,
    ("created %d, issued %d, reissued %d, reused %d"):format(counts.create or 0, counts.issue or 0,
      counts.reissue or 0, counts.reuse or 0)))
  out("etcd: etcd --config-file ", r.layout.dir, "/<member>/etcd.yaml; etcdctl: . ", r.layout.env, "\n")
  return 0
end

local function cmd_status(args, out, err)
  local o, pos = getopt(args, { json = "flag" })
  if not o then return usage(err, "status", pos) end
  if #pos ~= 1 then return usage(err, "status", "exactly one DIR expected") end
  local rows, serr, code = cluster.status(pos[1])
  if not rows then return fail(err, "status", serr, code) end
  if o.json then out(log.encode(rows), "\n") return 0 end
  local bad = false
  for _, r in ipairs(rows) do
    if r.error then
      bad = true
      out(("%-22s %s  ERROR %s\n"):format(r.id, r.file, r.error))
    else
      out(("%-22s %s  until %s (%d days)%s\n"):format(r.id, r.file, r.not_after_rfc3339, r.days_left,
        r.days_left < 0 and " EXPIRED" or ""))
      bad = bad or r.days_left < 0
    end
  end
  return bad and 1 or 0
end

local function cmd_check(args, out, err)
  local o, pos = getopt(args, { json = "flag", preflight = "flag", member = "list" })
  if not o then return usage(err, "check", pos) end
  if #pos ~= 1 then return usage(err, "check", "exactly one DIR expected") end
  local r, cerr, code = cluster.check(pos[1], { preflight = o.preflight, members = o.member })
  if not r then return fail(err, "check", cerr, code) end
  if o.json then
    out(log.encode { ok = r.ok, cells = r.cells, matrix = r.matrix, matrix_error = r.matrix_error }, "\n")
  else
    for _, c in ipairs(r.cells) do
      out(("%-4s %-10s %-10s %s\n"):format(c.ok and "ok" or "FAIL", c.member or "-", c.check, c.reason or ""))
    end
    if r.matrix then
      for _, c in ipairs(r.matrix.cells) do
        out(("%-4s %s -> %s %s %s\n"):format(c.ok and "ok" or (c.reachable and "FAIL" or "skip"), c.from, c.to,
          c.url, c.reachable and (c.reason or "") or "not reachable (not started?)"))
      end
    else
      out("skip probe matrix: ", tostring(r.matrix_error), "\n")
    end
    out(r.ok and "PASS\n" or "FAIL\n")
  end
  return r.ok and 0 or 1
end

local COMMANDS = { plan = cmd_plan, init = cmd_init, status = cmd_status, check = cmd_check }

--- Runs `peerlisten cluster ...` (args without "cluster").
-- @tparam table args
-- @tparam function out writes to stdout
-- @tparam function err writes to stderr
-- @treturn integer exit status
function M.main(args, out, err)
  local cmd = args[1]
  if cmd == nil then err(M.USAGE) return 2 end
  if cmd == "help" or cmd == "--help" or cmd == "-h" then out(M.USAGE) return 0 end
  local fn = COMMANDS[cmd]
  if not fn then
    err("peerlisten cluster: unknown command '", tostring(cmd), "'\n", M.USAGE)
    return 2
  end
  local rest = { table.unpack(args, 2) }
  for _, a in ipairs(rest) do
    if a == "--help" or a == "-h" then out(HELP[cmd]) return 0 end
  end
  return fn(rest, out, err)
end

return M
