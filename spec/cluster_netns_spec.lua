-- spec/cluster_netns_spec.lua: a three-member etcd 3.4 cluster made by `cluster init`, each member
-- in its own network namespace (own address, own source address), joined by a bridge that lives in
-- a fourth namespace so nothing is added to the host's network. Needs root (CAP_NET_ADMIN), iproute2
-- and Debian's etcd-server; otherwise every test reports why it was skipped.
local cluster = require "peerlisten.cluster"
local helper = require "helper"
local broken = require "support.cluster_broken"
local socket = require "socket"
local cjson = require "cjson"

-- child processes must not inherit the sanitizer preload of `make sanitize`
local NOPRELOAD = "unset LD_PRELOAD ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS; "

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Runs cmd; returns stdout+stderr and whether it exited 0.
local function run(cmd)
  local p = io.popen(NOPRELOAD .. "(" .. cmd .. ") 2>&1")
  local out = p:read("a")
  local ok = p:close()
  return out, ok == true
end

local function must(cmd)
  local out, ok = run(cmd)
  if not ok then error(("command failed: %s\n%s"):format(cmd, out), 2) end
  return out
end

local PID = helper.pid()
local PREFIX = ("plc-%d-"):format(PID)
local HUB = PREFIX .. "br"
local NS = { PREFIX .. "1", PREFIX .. "2", PREFIX .. "3" }
-- 10.77.<x>.0/24: inside the namespaces only, x varies per run for readability of parallel logs
local SUBNET = ("10.77.%d"):format(20 + PID % 200)
local function addr(i) return ("%s.%d"):format(SUBNET, i) end

-- Why namespaces cannot be used here, or nil.
local function skip_reason()
  if must("id -u"):match("^%s*(%d+)") ~= "0" then return "not root (needs CAP_NET_ADMIN for ip netns)" end
  for _, tool in ipairs { "ip", "etcd", "etcdctl" } do
    if not helper.have(tool) then return tool .. " not installed" end
  end
  local probe = PREFIX .. "probe"
  local out, ok = run("ip netns add " .. probe)
  if not ok then return "cannot create a network namespace: " .. out:gsub("%s+$", "") end
  run("ip netns del " .. probe)
  return nil
end

local SKIP = skip_reason()

local times = {}
local function stage(name, fn)
  local t0 = socket.gettime()
  local res = table.pack(fn())
  times[#times + 1] = ("%-44s %6.2f s"):format(name, socket.gettime() - t0)
  return table.unpack(res, 1, res.n)
end

local function teardown_net()
  for _, ns in ipairs(NS) do run("ip netns del " .. ns) end
  run("ip netns del " .. HUB)
end

local function setup_net()
  teardown_net()
  must("ip netns add " .. HUB)
  must(("ip -n %s link set lo up && ip -n %s link add br0 type bridge && ip -n %s link set br0 up")
    :format(HUB, HUB, HUB))
  for i, ns in ipairs(NS) do
    must("ip netns add " .. ns)
    -- the veth is created in the hub with its peer moved straight into the member's namespace
    must(("ip -n %s link add v%d type veth peer name eth0 netns %s"):format(HUB, i, ns))
    must(("ip -n %s link set v%d master br0 && ip -n %s link set v%d up"):format(HUB, i, HUB, i))
    must(("ip -n %s link set lo up && ip -n %s addr add %s/24 dev eth0 && ip -n %s link set eth0 up")
      :format(ns, ns, addr(i), ns))
  end
end

local function alive(pid)
  local _, ok = run(("kill -0 -%d 2>/dev/null"):format(pid))
  return ok
end

-- Stops the given process groups: SIGTERM to all at once, SIGKILL to any still there after 15 s.
local function stop(...)
  local list = { ... }
  for _, pid in pairs(list) do helper.kill(pid) end
  local deadline = socket.gettime() + 15
  for _, pid in pairs(list) do
    while alive(pid) and socket.gettime() < deadline do socket.sleep(0.1) end
    if alive(pid) then run(("kill -KILL -%d 2>/dev/null"):format(pid)) end
  end
end

-- etcdctl inside namespace i with the generated environment file.
-- endpoints: overrides ETCDCTL_ENDPOINTS (etcdctl refuses the flag and the variable together).
local function etcdctl(dir, i, args, endpoints)
  return run(("ip netns exec %s sh -c %s"):format(NS[i], q(". " .. q(dir .. "/etcdctl.env")
    .. (endpoints and (" && ETCDCTL_ENDPOINTS=" .. q(endpoints)) or "")
    .. " && etcdctl --dial-timeout=2s --command-timeout=5s " .. args)))
end

local function wait_for(what, timeout, fn)
  local deadline = socket.gettime() + timeout
  local last
  repeat
    local ok, detail = fn()
    if ok then return detail end
    last = detail
    socket.sleep(0.5)
  until socket.gettime() > deadline
  error(("%s: not reached within %d s; last: %s"):format(what, timeout, tostring(last)), 2)
end

local function healthy(dir, i)
  local out = etcdctl(dir, i, "endpoint health --cluster")
  local n = 0
  for _ in out:gmatch("is healthy") do n = n + 1 end
  return n == 3 and not out:find("unhealthy"), out
end

-- A dial function for cluster.probe_matrix built from openssl s_client, run in the namespace that
-- owns the source address: a TLS handshake with the dialling member's peer credentials (server
-- name checked against the URL's IP), then GET /health through it.
local function openssl_dial(u, o)
  local host, port = u:match("^https://([%d.]+):(%d+)$")
  local ns
  for i = 1, 3 do if addr(i) == o.source then ns = NS[i] end end
  assert(ns, "no namespace owns " .. tostring(o.source))
  local out = run(("printf 'GET /health HTTP/1.1\\r\\nHost: %s\\r\\nConnection: close\\r\\n\\r\\n' | "
    .. "ip netns exec %s timeout %d openssl s_client -quiet -connect %s:%s -cert %s -key %s -CAfile %s "
    .. "-verify_return_error -verify_ip %s"):format(host, ns, o.timeout or 5, host, port, q(o.cert_file),
    q(o.key_file), q(o.trusted_ca_file), host))
  if out:find('"health":"true"', 1, true) then return { close = function() end } end
  local why = out:match("verify error:[^\n]*") or out:match("alert [^\n:]*")
  if not why and (out:find("unexpected eof", 1, true) or not out:find("HTTP/1", 1, true)) then
    why = "the server closed the connection after the handshake (it rejected this member's certificate)"
  end
  return nil, why or ("no health answer: " .. out:gsub("%s+", " "):sub(1, 200))
end

local function description()
  local members = {}
  for i = 1, 3 do
    members[i] = { name = "m" .. i, addresses = { addr(i), ("m%d.%s.test"):format(i, PREFIX:sub(1, -2)) },
      ["peer-urls"] = { ("https://%s:2380"):format(addr(i)) },
      ["client-urls"] = { ("https://%s:2379"):format(addr(i)) } }
  end
  return { name = "plc" .. PID, ["etcd-version"] = "3.4", members = members,
    tls = { ["cert-validity-days"] = 90 } }
end

describe("peerlisten.cluster on three network namespaces with etcd 3.4 #slow #netns", function()
  if SKIP then
    it("is skipped", function()
      print("\ncluster_netns_spec skipped: " .. SKIP)
      pending("network namespaces unavailable: " .. SKIP)
    end)
    return
  end

  local tmp, dir
  local pids = {}

  setup(function()
    tmp = helper.tmpdir()
    dir = tmp .. "/cluster"
    local ok, err = pcall(stage, "namespaces + bridge", setup_net)
    if not ok then teardown_net(); error(err, 0) end
  end)

  teardown(function()
    stage("stop members, remove namespaces", function()
      stop(pids[1], pids[2], pids[3])
      teardown_net()
    end)
    local left = run("ip netns list")
    helper.rmdir(tmp)
    print("\ncluster_netns_spec stage times:\n  " .. table.concat(times, "\n  "))
    assert(not left:find(PREFIX, 1, true), "namespaces left behind: " .. left)
  end)

  local function start(i, from)
    local f = ("%s/m%d"):format(from or dir, i)
    pids[i] = helper.bg(NOPRELOAD .. ("exec ip netns exec %s /usr/bin/etcd --config-file %s")
      :format(NS[i], q(f .. "/etcd.yaml")), f .. "/etcd.log")
  end

  it("generates the cluster with cluster init and passes the static checks", function()
    local r = stage("cluster init (3 members, 3.4)", function()
      return assert(cluster.init(description(), { out = dir }))
    end)
    assert.equal(8, #r.steps)   -- CA, peer + server per member, client
    local report = stage("cluster check (static)", function()
      return assert(cluster.check(dir, { matrix = false }))
    end)
    for _, c in ipairs(report.cells) do
      assert.is_true(c.ok, ("%s %s: %s"):format(tostring(c.member), c.check, tostring(c.reason)))
    end
    assert.is_true(report.ok)
    -- each member's own preflight in its namespace: binds its peer URL, builds its TLS policy
    stage("cluster check --preflight, per namespace", function()
      for i = 1, 3 do
        local out, ok = run(("ip netns exec %s lua5.4 bin/peerlisten cluster check %s --preflight --member m%d")
          :format(NS[i], q(dir), i))
        assert.is_true(ok, out)
        assert.matches(("ok%%s+m%d%%s+preflight"):format(i), out)
      end
    end)
    local rows = assert(cluster.status(dir))
    assert.equal(8, #rows)
  end)

  -- peerlisten serve in each member's namespace from its etcd.yaml, the matrix, then stop them
  local function matrix_of(from)
    local serving = {}
    for i = 1, 3 do
      local f = ("%s/m%d"):format(from, i)
      serving[i] = helper.bg(NOPRELOAD .. ("exec ip netns exec %s lua5.4 bin/peerlisten serve --config-file %s")
        :format(NS[i], q(f .. "/etcd.yaml")), f .. "/serve.log")
    end
    local ok, report = pcall(function()
      -- wait until every member listens (a plain TCP connect from its own namespace)
      wait_for("peerlisten serve listening x3", 20, function()
        for i = 1, 3 do
          local _, up = run(("ip netns exec %s bash -c %s"):format(NS[i],
            q(("exec 3<>/dev/tcp/%s/2380"):format(addr(i)))))
          if not up then return false, "m" .. i .. " not listening yet" end
        end
        return true
      end)
      -- our probe, run from each member's namespace (its own source address), and for comparison
      -- openssl s_client as the dialling peer
      local mine = { ok = true, cells = {} }
      for i = 1, 3 do
        local out = run(("ip netns exec %s lua5.4 bin/peerlisten cluster check %s --member m%d --json 2>/dev/null")
          :format(NS[i], q(from), i))
        local r = cjson.decode((assert(out:match("{.*}"), out)))
        for _, c in ipairs(r.matrix.cells) do
          mine.cells[#mine.cells + 1] = c
          mine.ok = mine.ok and c.ok
        end
      end
      return { mine = mine, openssl = assert(cluster.probe_matrix(from, { dial = openssl_dial })) }
    end)
    stop(serving[1], serving[2], serving[3])
    if not ok then error(report, 0) end
    return report
  end

  -- the same verdict from our probe and from openssl s_client, cell by cell
  local function same_verdicts(both)
    assert.equal(#both.openssl.cells, #both.mine.cells)
    local theirs = {}
    for _, c in ipairs(both.openssl.cells) do theirs[c.from .. ">" .. c.to] = c end
    for _, c in ipairs(both.mine.cells) do
      local t = theirs[c.from .. ">" .. c.to]
      assert.equal(t.ok, c.ok, ("%s -> %s: probe %s, s_client %s"):format(c.from, c.to, tostring(c.reason),
        tostring(t.reason)))
    end
  end

  it("runs the probe matrix: each member's listeners in its namespace, every member probing every other", function()
    local both = stage("probe matrix 3x3 (serve; probe and s_client)", function() return matrix_of(dir) end)
    local report = both.mine
    assert.equal(6, #report.cells)
    for _, c in ipairs(report.cells) do
      assert.is_true(c.ok, ("%s -> %s: %s"):format(c.from, c.to, tostring(c.reason)))
    end
    same_verdicts(both)
  end)

  it("catches each broken-on-purpose directory with member, check and reason", function()
    stage("broken on purpose (4 cases)", function()
      for n, case in ipairs(broken.cases) do
        local report, want = broken.run(case, description(), ("%s/broken%d"):format(tmp, n))
        assert.is_false(report.ok, case.name)
        local found
        for _, c in ipairs(report.cells) do
          if not c.ok then
            assert.equal(want.member, c.member, case.name .. ": " .. tostring(c.reason))
            assert.equal(want.check, c.check, case.name .. ": " .. tostring(c.reason))
            found = found or tostring(c.reason):find(want.reason) ~= nil
          end
        end
        assert.is_true(found, case.name .. ": no failed cell matching " .. want.reason)
      end
    end)
  end)

  it("the probe matrix of the broken 'certificate without its address' directory fails the cells of m2", function()
    local both = stage("probe matrix 3x3 on broken1", function() return matrix_of(tmp .. "/broken1") end)
    same_verdicts(both)
    local report = both.mine
    assert.is_false(report.ok)
    local shown = {}
    for _, c in ipairs(report.cells) do
      shown[#shown + 1] = ("  %s -> %s %s %s"):format(c.from, c.to, c.ok and "ok" or "FAIL", c.reason or "")
    end
    print("\nprobe matrix of broken1 (m2's certificate lacks its address):\n" .. table.concat(shown, "\n"))
    for _, c in ipairs(report.cells) do
      local involves_m2 = c.from == "m2" or c.to == "m2"
      assert.equal(not involves_m2, c.ok, ("%s -> %s: %s"):format(c.from, c.to, tostring(c.reason)))
      if not c.ok then
        -- m2's certificate lacks its address: we refuse it as a server, it refuses m2 as a client
        assert.matches(c.to == "m2" and "ESERVERCERT, refused by the local side" or "EPEERREJECTED, refused by the remote",
          c.reason)
      end
    end
  end)

  it("starts three real etcd members from the generated files: healthy, 3 started, put/get", function()
    stage("etcd x3 start -> endpoint health x3", function()
      for i = 1, 3 do start(i) end
      wait_for("endpoint health --cluster (3 healthy)", 60, function() return healthy(dir, 1) end)
    end)
    stage("member list, put/get across namespaces", function()
      local out, ok = etcdctl(dir, 2, "member list")
      assert.is_true(ok, out)
      local started = 0
      for _ in out:gmatch(", started, ") do started = started + 1 end
      assert.equal(3, started, out)
      out, ok = etcdctl(dir, 1, "put plc-key hello-" .. PID)
      assert.is_true(ok, out)
      assert.matches("OK", out)
      out, ok = etcdctl(dir, 3, "get plc-key --print-value-only")
      assert.is_true(ok, out)
      assert.equal("hello-" .. PID, out:match("^%s*(.-)%s*$"))
    end)
  end)

  it("renews one member's certificates with init --renew-within, restarts it, stays healthy", function()
    local before = assert(cluster.status(dir))
    stage("renew m2 (init --renew-within 120d)", function()
      assert(cluster.init(description(), { out = dir, renew_within = 120 * 86400, members = { "m2" } }))
    end)
    local after = assert(cluster.status(dir))
    for i, row in ipairs(after) do
      if row.member == "m2" then
        assert.are_not.equal(before[i].sha256, row.sha256, row.id .. " was not renewed")
      else
        assert.equal(before[i].sha256, row.sha256, row.id .. " changed")
      end
    end
    assert(cluster.check(dir, { matrix = false }).ok)
    stage("restart m2 -> endpoint health x3", function()
      stop(pids[2])
      assert.is_false(alive(pids[2]))
      start(2)
      wait_for("endpoint health --cluster after renewal", 60, function() return healthy(dir, 3) end)
    end)
    -- m2 serves its new certificate: etcdctl pinned to m2's endpoint reads the value back
    local out, ok = etcdctl(dir, 2, "get plc-key --print-value-only", ("https://%s:2379"):format(addr(2)))
    assert.is_true(ok, out)
    assert.equal("hello-" .. PID, out:match("^%s*(.-)%s*$"))
    local served = must(("ip netns exec %s openssl s_client -connect %s:2380 -CAfile %s -cert %s -key %s "
      .. "</dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"):format(NS[1], addr(2),
      q(dir .. "/ca.pem"), q(dir .. "/m1/peer.pem"), q(dir .. "/m1/peer-key.pem")))
    local want
    for _, row in ipairs(after) do if row.id == "m2 peer" then want = row.sha256 end end
    assert.equal(want, served:match("=([%x:]+)"):gsub(":", ""):lower())
  end)

  it("shows that what the static check flags is what etcd rejects: a peer certificate without its address",
    function()
    stage("stop the healthy cluster", function()
      stop(pids[1], pids[2], pids[3])
    end)
    -- broken1 is "a member certificate without its address" (m2), made by the test above
    local bdir = tmp .. "/broken1"
    assert.is_false(cluster.check(bdir, { matrix = false }).ok)
    local seen = stage("etcd x3 from the broken directory -> rejection", function()
      for i = 1, 3 do start(i, bdir) end
      return wait_for("a member rejecting m2's certificate", 30, function()
        for _, i in ipairs { 1, 3 } do
          local text = helper.readfile(("%s/m%d/etcd.log"):format(bdir, i))
          for line in text:gmatch("[^\n]+") do
            -- etcd checks the dialling peer's certificate against the connection's source address
            if line:find('"msg":"rejected connection"', 1, true) and line:find(addr(2) .. ":", 1, true)
              and line:find("m2.example.invalid", 1, true) then
              return true, line
            end
          end
        end
        return false, "no rejection naming m2's certificate yet; m1's and m2's logs end:\n"
          .. helper.sh(("tail -c 1500 %s/m1/etcd.log; tail -c 1500 %s/m2/etcd.log"):format(q(bdir), q(bdir)))
      end)
    end)
    assert.matches("does not match", seen)
  end)
end)
