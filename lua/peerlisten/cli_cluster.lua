--- `peerlisten cluster plan|init|status|check`: the cluster bootstrap from the command line.
--
-- `main(args, out, err)` returns the exit status: 0 ok, 1 failure (including a failed check),
-- 2 usage error. Progress and messages go to `err`, results to `out`.
-- @module peerlisten.cli_cluster

local cli_args = require "peerlisten.cli_args"
local cluster = require "peerlisten.cluster"
local commands = require "peerlisten.cli_commands"
local log = require "peerlisten.log"

local M = {}

M.USAGE = commands.group_usage("cluster")

-- The options of `cluster <cmd>`, by its declaration; nil, message for a usage error.
local function parse(cmd, args)
  return cli_args.parse(commands["cluster " .. cmd], args)
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
  local o, pos = parse("plan", args)
  if not o then return usage(err, "plan", pos) end
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
  local o, pos = parse("init", args)
  if not o then return usage(err, "init", pos) end
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
  local o, pos = parse("status", args)
  if not o then return usage(err, "status", pos) end
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
  local o, pos = parse("check", args)
  if not o then return usage(err, "check", pos) end
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
  if cmd == "help" or cli_args.is_help(cmd) then out(M.USAGE) return 0 end
  local fn = COMMANDS[cmd]
  if not fn then
    err("peerlisten cluster: unknown command '", tostring(cmd), "'\n", M.USAGE)
    return 2
  end
  local rest = { table.unpack(args, 2) }
  for _, a in ipairs(rest) do
    if cli_args.is_help(a) then out(cli_args.help(commands["cluster " .. cmd])) return 0 end
  end
  return fn(rest, out, err)
end

return M
