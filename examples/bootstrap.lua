#!/usr/bin/env lua5.4
-- From a cluster description to a healthy etcd cluster in one script:
--
--   lua5.4 examples/bootstrap.lua [DESCRIPTION.yaml] [--out DIR] [--keep]
--
-- 1. `cluster.init`: CA, certificates, DIR/<member>/etcd.yaml, DIR/etcdctl.env
-- 2. `cluster.check`: the static checks (and the probe matrix where the build has it)
-- 3. starts one etcd per member from its etcd.yaml, waits for `etcdctl endpoint health --cluster`
-- 4. `member list`, a put and a get through the generated etcdctl.env
-- 5. stops the members again, unless --keep (their pids are in DIR/<member>/etcd.pid)
--
-- Without a description it uses three members on one machine, on 127.0.0.11, .12 and .13 (Linux
-- routes all of 127.0.0.0/8 to lo, so each member has an address of its own, as on three hosts).
-- On real hosts, run init once, copy DIR to every host and start each member there.
-- ETCD and ETCDCTL name the binaries (default: etcd, etcdctl from PATH).
local root = (arg[0]:match("^(.*)/examples/[^/]*$")) or "."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/?.so;" .. package.cpath

local peerlisten = require "peerlisten"
local cluster = peerlisten.cluster

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local src, out, keep
local i = 1
while i <= #arg do
  if arg[i] == "--out" then i = i + 1; out = arg[i]
  elseif arg[i] == "--keep" then keep = true
  else src = arg[i] end
  i = i + 1
end

if not src then
  local members = {}
  for n = 1, 3 do
    local ip = "127.0.0." .. (10 + n)
    members[n] = { name = "m" .. n, addresses = { ip }, ["peer-urls"] = { "https://" .. ip .. ":2380" },
      ["client-urls"] = { "https://" .. ip .. ":2379" } }
  end
  src = { name = "example", ["etcd-version"] = "3.4", members = members }
end
out = out or "example-cluster"

local function step(msg) io.stderr:write(("[%s] %s\n"):format(os.date("!%H:%M:%S"), msg)) end
local function die(msg) io.stderr:write("bootstrap: ", msg, "\n"); os.exit(1) end

step("cluster init -> " .. out)
local r, err = cluster.init(src, { out = out, progress = function(l) step("  " .. l) end })
if not r then die(err) end
local L, d = r.layout, r.description

step("cluster check")
local report = assert(cluster.check(L.dir))
for _, c in ipairs(report.cells) do
  if not c.ok then step(("  FAIL %s %s: %s"):format(c.member or "-", c.check, c.reason)) end
end
if report.matrix_error then step("  probe matrix skipped: " .. report.matrix_error) end
if not report.ok then die("the checks failed; no etcd started") end

local etcd, etcdctl = os.getenv("ETCD") or "etcd", os.getenv("ETCDCTL") or "etcdctl"
local pids = {}
local function stop_all()
  for _, pid in ipairs(pids) do os.execute(("kill -TERM %d 2>/dev/null"):format(pid)) end
  for _, pid in ipairs(pids) do
    for _ = 1, 150 do
      if not os.execute(("kill -0 %d 2>/dev/null"):format(pid)) then break end
      os.execute("sleep 0.1")
    end
    os.execute(("kill -KILL %d 2>/dev/null"):format(pid))
  end
end

for _, m in ipairs(d.members) do
  local f = L.members[m.name]
  local p = io.popen(("%s --config-file %s > %s 2>&1 < /dev/null & echo $!"):format(q(etcd), q(f.config),
    q(f.dir .. "/etcd.log")))
  local pid = tonumber(p:read("l"))
  p:close()
  pids[#pids + 1] = pid
  local pf = io.open(f.dir .. "/etcd.pid", "w")
  pf:write(pid, "\n")
  pf:close()
  step(("started %s (pid %d, log %s/etcd.log)"):format(m.name, pid, f.dir))
end

local function ctl(args)
  local p = io.popen((". %s && %s --dial-timeout=2s %s 2>&1"):format(q(L.env), q(etcdctl), args))
  local text = p:read("a")
  local ok = p:close()
  return text, ok
end

local healthy = false
for _ = 1, 120 do
  local text = ctl("endpoint health --cluster")
  local n = select(2, text:gsub("is healthy", ""))
  if n == #d.members then healthy = true; break end
  os.execute("sleep 0.5")
end
if not healthy then
  stop_all()
  die("the cluster did not become healthy within 60 s; see " .. L.dir .. "/<member>/etcd.log")
end
step(("healthy: %d of %d members"):format(#d.members, #d.members))
io.write((ctl("member list -w table")))
local text, ok = ctl("put bootstrap-example ok")
if not ok then stop_all(); die("put failed: " .. text) end
text = ctl("get bootstrap-example --print-value-only")
step("get bootstrap-example -> " .. text:gsub("%s+$", ""))

if keep then
  step(("left running; stop with: kill $(cat %s/*/etcd.pid); etcdctl: . %s"):format(L.dir, L.env))
else
  stop_all()
  step("stopped the members (run with --keep to leave them running)")
end
print("OK")
