-- spec/cluster_spec.lua: peerlisten.cluster without a network: description validation, the
-- directory layout, idempotent re-runs, renewal, the static checks and `peerlisten cluster`.
local cluster = require "peerlisten.cluster"
local cli = require "peerlisten.cli"
local helper = require "helper"
local broken = require "support.cluster_broken"
local KEYS = require "support.etcd_config_keys"
local lyaml = require "lyaml"

local function desc(version)
  local members = {}
  for i = 1, 3 do
    members[i] = { name = "m" .. i, addresses = { "127.0.0." .. i, "m" .. i .. ".local.test" },
      ["peer-urls"] = { ("https://127.0.0.%d:2380"):format(i) },
      ["client-urls"] = { ("https://127.0.0.%d:2379"):format(i) } }
  end
  return { name = "demo", ["etcd-version"] = version or "3.4", members = members }
end

local function read(path) return helper.readfile(path) end

local function mode(path)
  return helper.sh(("stat -c %%a '%s'"):format(path)):match("%d+")
end

local function run_cli(args)
  local out, err = {}, {}
  local code = cli.main(args, { stdout = { write = function(_, ...) for _, s in ipairs { ... } do out[#out + 1] = s end end },
    stderr = { write = function(_, ...) for _, s in ipairs { ... } do err[#err + 1] = s end end } })
  return code, table.concat(out), table.concat(err)
end

describe("peerlisten.cluster", function()
  local tmp
  before_each(function() tmp = helper.tmpdir() end)
  after_each(function() helper.rmdir(tmp) end)

  describe("validate()", function()
    local function bad(mutate, pattern)
      local d = desc()
      mutate(d)
      local ok, err, code = cluster.validate(d)
      assert.is_nil(ok)
      assert.equal("ECLUSTER", code)
      assert.matches(pattern, err)
      return err
    end

    it("accepts a description, fills defaults and derives a stable token from the name", function()
      local d = assert(cluster.validate(desc()))
      assert.equal("etcd-cluster-demo", d.token)
      assert.equal("3.4", d.etcd_version)
      assert.equal("ecdsa-p256", d.tls.key_type)
      assert.is_true(d.tls.peer_client_cert_auth)
      assert.same({ "127.0.0.1", "m1.local.test" }, d.members[1].addresses)
      assert.equal("etcd-cluster-demo", cluster.validate(desc()).token)
      -- loopback members other than 127.0.0.1 dial from 127.0.0.1; explicit source-addresses win
      assert.same({}, d.members[1].source_addresses)
      assert.same({ "127.0.0.1" }, d.members[2].source_addresses)
      local t = desc()
      t.members[2]["source-addresses"] = { "10.1.1.1" }
      assert.same({ "10.1.1.1" }, cluster.validate(t).members[2].source_addresses)
    end)

    it("names the member and the key of each problem, all of them at once", function()
      local err = bad(function(d)
        d.members[2].name = "m1"
        d.members[3]["peer-urls"] = { "https://10.0.0.9:2380" }
      end, "members%[2%] %(m1%): name: duplicate of members%[1%] %(m1%)")
      assert.matches("members%[3%] %(m3%): peer%-urls: host 10%.0%.0%.9 of https://10%.0%.0%.9:2380 is not among "
        .. "the member's addresses", err)
    end)

    it("refuses duplicate URLs across members", function()
      bad(function(d)
        d.members[2].addresses[#d.members[2].addresses + 1] = "127.0.0.1"
        d.members[2]["peer-urls"] = { "https://127.0.0.1:2380" }
      end, "members%[2%] %(m2%): peer%-urls: https://127%.0%.0%.1:2380 is already used by members%[1%] %(m1%) peer%-urls")
    end)

    it("refuses plain http and mixed schemes", function()
      bad(function(d) d.members[1]["client-urls"] = { "https://127.0.0.1:2379", "http://127.0.0.1:2377" } end,
        "members%[1%] %(m1%): client%-urls: http://127%.0%.0%.1:2377: scheme http is not supported")
    end)

    it("refuses a bad etcd version, unknown keys, missing members, bad addresses", function()
      bad(function(d) d["etcd-version"] = "3.3" end, "etcd%-version: 3%.3 is not supported")
      bad(function(d) d["etcd-version"] = nil end, "etcd%-version: required")
      bad(function(d) d.memebrs = {} end, 'unknown key "memebrs"')
      bad(function(d) d.members[1].adresses = {} end, 'members%[1%] %(m1%): unknown key "adresses"')
      bad(function(d) d.members = {} end, "members: a non%-empty list expected")
      bad(function(d) d.members[2].addresses = { "not an address" } end,
        'members%[2%] %(m2%): addresses: "not an address" is neither')
      bad(function(d) d.members[1]["peer-urls"] = { "https://127.0.0.1" } end, 'does not have the form "host:port"')
      bad(function(d) d.tls = { ["key-type"] = "dsa" } end, "tls: key%-type: unknown key type")
      bad(function(d) d.tls = { ["cert-validity-days"] = 0 } end, "tls: cert%-validity%-days")
      bad(function(d) d.members[1]["source-addresses"] = { "host.test" } end,
        "members%[1%] %(m1%): source%-addresses: \"host%.test\" is not an IP address")
    end)

    it("reads a YAML file (an unquoted version number too)", function()
      local f = tmp .. "/c.yaml"
      local fh = assert(io.open(f, "w"))
      fh:write("name: y\netcd-version: 3.5\nmembers:\n  - name: a\n    addresses: [10.1.0.1]\n"
        .. "    peer-urls: [https://10.1.0.1:2380]\n    client-urls: [https://10.1.0.1:2379]\n")
      fh:close()
      local d = assert(cluster.load(f))
      assert.equal("3.5", d.etcd_version)
      local ok, err, code = cluster.load(tmp .. "/missing.yaml")
      assert.is_nil(ok)
      assert.is_string(err)
      assert.equal("ENOENT", code)
    end)
  end)

  describe("init()", function()
    it("creates the documented layout: CA 0600 with a unique subject, certificates, etcd.yaml, env, manifest", function()
      local dir = tmp .. "/c"
      local lines = {}
      local r = assert(cluster.init(desc(), { out = dir, progress = function(l) lines[#lines + 1] = l end }))
      assert.equal(8, #r.steps)
      assert.is_true(#lines >= 8)
      for _, f in ipairs { "ca.pem", "ca-key.pem", "etcdctl.env", "manifest.json", "cluster.yaml",
        "client/etcdctl.pem", "client/etcdctl-key.pem", "m1/etcd.yaml", "m1/peer.pem", "m1/peer-key.pem",
        "m3/server.pem", "m3/server-key.pem" } do
        assert.is_true(helper.sh(("test -f '%s/%s' && echo y"):format(dir, f)) ~= "", f)
      end
      for _, f in ipairs { "ca-key.pem", "m1/peer-key.pem", "m2/server-key.pem", "client/etcdctl-key.pem" } do
        assert.equal("600", mode(dir .. "/" .. f), f)
      end
      assert.equal("700", mode(dir))
      assert.equal("", helper.sh(("ls -a '%s' | grep staging"):format(dir)))
      local cert = require "peerlisten.cert"
      local ca1 = cert.inspect(dir .. "/ca.pem")
      assert.matches("^CN=demo%-etcd%-ca%-%x+$", ca1.subject)
      local other = assert(cluster.init(desc(), { out = tmp .. "/c2" }))
      assert.are_not.equal(ca1.subject, cert.inspect(other.layout.ca).subject)
      -- peer: every address of the member; client: clientAuth only, no SANs
      local peer = cert.inspect(dir .. "/m2/peer.pem")
      -- on one machine m2 dials from 127.0.0.1 (lo's primary address), so its peer cert covers that too
      assert.same({ "127.0.0.2", "127.0.0.1" }, peer.sans.ip)
      assert.same({ "127.0.0.2" }, cert.inspect(dir .. "/m2/server.pem").sans.ip)
      assert.same({ "m2.local.test" }, peer.sans.dns)
      assert.same({ "serverAuth", "clientAuth" }, peer.ext_key_usage)
      local client = cert.inspect(dir .. "/client/etcdctl.pem")
      assert.same({ "clientAuth" }, client.ext_key_usage)
      assert.same({}, client.sans.ip)
      assert.is_true(cert.verify(dir .. "/client/etcdctl.pem", dir .. "/ca.pem", "client"))
      local env = read(dir .. "/etcdctl.env")
      assert.matches("export ETCDCTL_API=3\n", env, 1, true)
      assert.matches("export ETCDCTL_ENDPOINTS='https://127.0.0.1:2379,https://127.0.0.2:2379,https://127.0.0.3:2379'",
        env, 1, true)
      assert.matches("export ETCDCTL_CACERT='" .. dir .. "/ca.pem'", env, 1, true)
      assert.matches("export ETCDCTL_KEY='" .. dir .. "/client/etcdctl-key.pem'", env, 1, true)
      local m = require("cjson").decode(read(dir .. "/manifest.json"))
      assert.equal(8, #m.certificates)
      assert.equal(cert.inspect(dir .. "/m1/peer.pem").fingerprint_sha256, m.certificates[2].sha256)
      assert.matches("^%d+%-%d+%-%d+T", m.certificates[1].not_after)
    end)

    it("writes etcd.yaml with the documented keys, only keys the targeted etcd version defines", function()
      for _, v in ipairs { "3.4", "3.5", "3.6" } do
        local dir = ("%s/v%s"):format(tmp, v)
        assert(cluster.init(desc(v), { out = dir }))
        local y = lyaml.load(read(dir .. "/m2/etcd.yaml"))
        local top, sec = {}, {}
        for _, k in ipairs(KEYS[v].top) do top[k] = true end
        for _, k in ipairs(KEYS[v].security) do sec[k] = true end
        for k, val in pairs(y) do
          assert.is_true(top[k], ("%s is not a key of etcd %s"):format(k, KEYS[v].tag))
          if type(val) == "table" then
            for sk in pairs(val) do
              assert.is_true(sec[sk], ("%s.%s is not a key of etcd %s"):format(k, sk, KEYS[v].tag))
            end
          end
        end
        assert.equal("m2", y.name)
        assert.equal(dir .. "/m2/data", y["data-dir"])
        assert.equal("new", y["initial-cluster-state"])
        assert.equal("etcd-cluster-demo", y["initial-cluster-token"])
        assert.equal("m1=https://127.0.0.1:2380,m2=https://127.0.0.2:2380,m3=https://127.0.0.3:2380",
          y["initial-cluster"])
        assert.equal("https://127.0.0.2:2380", y["listen-peer-urls"])
        assert.equal("https://127.0.0.2:2379", y["advertise-client-urls"])
        assert.equal(dir .. "/m2/peer.pem", y["peer-transport-security"]["cert-file"])
        assert.equal(dir .. "/ca.pem", y["client-transport-security"]["trusted-ca-file"])
        assert.is_true(y["peer-transport-security"]["client-cert-auth"])
        -- 3.4 has no tls-min-version (and needs none: it refuses below TLS 1.2)
        assert.equal(v ~= "3.4", y["tls-min-version"] == "TLS1.2")
      end
    end)

    it("is idempotent: a re-run reuses everything and rewrites identical files", function()
      local dir = tmp .. "/c"
      assert(cluster.init(desc(), { out = dir }))
      local files = { "ca.pem", "ca-key.pem", "m1/peer.pem", "m1/peer-key.pem", "m2/etcd.yaml", "manifest.json",
        "etcdctl.env", "client/etcdctl.pem" }
      local before = {}
      for _, f in ipairs(files) do before[f] = read(dir .. "/" .. f) end
      local r = assert(cluster.init(desc(), { out = dir }))
      for _, s in ipairs(r.steps) do assert.equal("reuse", s.action, s.id) end
      for _, f in ipairs(files) do assert.equal(before[f], read(dir .. "/" .. f), f) end
    end)

    it("renews what expires within --renew-within, keeps the CA; --member limits it", function()
      local dir = tmp .. "/c"
      assert(cluster.init(desc(), { out = dir }))
      local s0 = assert(cluster.status(dir))
      local r = assert(cluster.init(desc(), { out = dir, renew_within = 30 * 86400 }))
      for _, s in ipairs(r.steps) do assert.equal("reuse", s.action, s.id) end   -- 365 days left > 30
      r = assert(cluster.init(desc(), { out = dir, renew_within = 400 * 86400, members = { "m3" } }))
      local s1 = assert(cluster.status(dir))
      for i, row in ipairs(s1) do
        if row.member == "m3" then
          assert.are_not.equal(s0[i].sha256, row.sha256, row.id)
          assert.matches("within the renewal window", r.steps[i].reason)
        else
          assert.equal(s0[i].sha256, row.sha256, row.id)
        end
      end
      r = assert(cluster.init(desc(), { out = dir, renew_within = 400 * 86400 }))
      assert.equal("reuse", r.steps[1].action)
      local s2 = assert(cluster.status(dir))
      assert.equal(s0[1].sha256, s2[1].sha256)   -- the CA is kept
      for i = 2, #s2 do assert.are_not.equal(s1[i].sha256, s2[i].sha256, s2[i].id) end
      assert(cluster.check(dir, { matrix = false }).ok)
    end)

    it("reissues only what a changed description affects", function()
      local dir = tmp .. "/c"
      assert(cluster.init(desc(), { out = dir }))
      local d = desc()
      d.members[1]["source-addresses"] = { "192.0.2.7" }
      local r = assert(cluster.init(d, { out = dir }))
      local actions = {}
      for _, s in ipairs(r.steps) do actions[s.id] = s.action end
      assert.equal("reissue", actions["m1 peer"])
      assert.equal("reuse", actions["m1 server"])
      assert.equal("reuse", actions["m2 peer"])
      local cert = require "peerlisten.cert"
      assert.same({ "127.0.0.1", "192.0.2.7" }, cert.inspect(dir .. "/m1/peer.pem").sans.ip)
    end)

    it("leaves nothing behind when it fails half-way", function()
      local dir = tmp .. "/c"
      assert(os.execute(("mkdir -p '%s' && touch '%s/m2'"):format(dir, dir)))   -- m2 cannot be a directory
      local ok, err, code = cluster.init(desc(), { out = dir })
      assert.is_nil(ok)
      assert.is_string(err)
      assert.is_string(code)
      assert.equal("m2\n", helper.sh(("ls -A '%s'"):format(dir)))
    end)

    it("refuses an incomplete CA pair and a directory of another cluster", function()
      local dir = tmp .. "/c"
      assert(cluster.init(desc(), { out = dir }))
      local d = desc()
      d.name = "other"
      local ok, err, code = cluster.init(d, { out = dir })
      assert.is_nil(ok)
      assert.equal("ECLUSTER", code)
      assert.matches('holds cluster "demo"', err)
      os.remove(dir .. "/ca-key.pem")
      ok, err, code = cluster.init(desc(), { out = dir })
      assert.is_nil(ok)
      assert.equal("EEXIST", code)
      assert.matches("incomplete CA pair", err)
      assert.is_true(helper.sh(("test -f '%s/ca.pem' && echo y"):format(dir)) ~= "")
    end)
  end)

  describe("check()", function()
    it("passes a fresh directory; the probe matrix runs and reports members not started as unreachable", function()
      local dir = tmp .. "/c"
      assert(cluster.init(desc(), { out = dir }))
      local r = assert(cluster.check(dir, { timeout = 2 }))
      assert.is_true(r.ok)
      assert.equal(1 + 3 * 3 + 1, #r.cells)   -- CA, per member peer/server/etcd.yaml, client
      assert.equal(6, #r.matrix.cells)
      for _, c in ipairs(r.matrix.cells) do
        assert.is_false(c.ok)
        assert.is_false(c.reachable, c.reason)
        assert.matches("ECONNREFUSED", c.reason)
      end
    end)

    for n, case in ipairs(broken.cases) do
      it("catches " .. case.name .. " with member, check and reason", function()
        local report, want = broken.run(case, desc(), ("%s/b%d"):format(tmp, n))
        assert.is_false(report.ok)
        local failed = {}
        for _, c in ipairs(report.cells) do if not c.ok then failed[#failed + 1] = c end end
        assert.is_true(#failed >= 1)
        for _, c in ipairs(failed) do
          assert.equal(want.member, c.member, c.reason)
          assert.equal(want.check, c.check, c.reason)
        end
        assert.matches(want.reason, failed[1].reason)
      end)
    end

    it("--preflight runs each member's peerlisten check on its etcd.yaml, strict", function()
      local d = { name = "pf", ["etcd-version"] = "3.4", members = {} }
      for i = 1, 2 do
        d.members[i] = { name = "p" .. i, addresses = { "127.0.0.1" },
          ["peer-urls"] = { "https://127.0.0.1:" .. helper.free_port() },
          ["client-urls"] = { "https://127.0.0.1:" .. helper.free_port() } }
      end
      local dir = tmp .. "/pf"
      assert(cluster.init(d, { out = dir }))
      local r = assert(cluster.check(dir, { matrix = false, preflight = true, members = { "p2" } }))
      assert.is_true(r.ok)
      local cell = r.cells[#r.cells]
      assert.same({ member = "p2", check = "preflight", ok = true }, cell)
      -- a peer certificate without clientAuth: the member's own check warns, the cell fails
      local report = broken.run(broken.cases[3], d, tmp .. "/pf-broken")
      assert.is_false(report.ok)
      r = assert(cluster.check(tmp .. "/pf-broken", { matrix = false, preflight = true }))
      local found
      for _, c in ipairs(r.cells) do
        if c.check == "preflight" then
          assert.equal(c.member == "p1", c.ok, tostring(c.reason))
          if not c.ok then found = c.reason end
        end
      end
      assert.matches("clientAuth", found)
    end)

    it("refuses a directory that was not made by init", function()
      local ok, err, code = cluster.check(tmp)
      assert.is_nil(ok)
      assert.matches("is not a cluster directory", err)
      assert.equal("ECLUSTER", code)
    end)
  end)

  describe("parse_duration()", function()
    it("reads s, m, h, d, w and plain seconds", function()
      assert.equal(30 * 86400, cluster.parse_duration("30d"))
      assert.equal(90 * 60, cluster.parse_duration("90m"))
      assert.equal(45, cluster.parse_duration("45"))
      assert.equal(2 * 7 * 86400, cluster.parse_duration("2w"))
      local ok, err, code = cluster.parse_duration("soon")
      assert.is_nil(ok)
      assert.matches("invalid duration", err)
      assert.equal("ECLUSTER", code)
    end)
  end)

  describe("peerlisten cluster (CLI)", function()
    local function write_desc()
      local f = tmp .. "/demo.yaml"
      local fh = assert(io.open(f, "w"))
      fh:write([[
name: demo
etcd-version: "3.6"
members:
  - name: m1
    addresses: [127.0.0.1]
    peer-urls: [https://127.0.0.1:2380]
    client-urls: [https://127.0.0.1:2379]
]])
      fh:close()
      return f
    end

    it("plan, init, status and check with exit 0; progress on stderr", function()
      local f = write_desc()
      local code, out = run_cli { "cluster", "plan", f, "--out", tmp .. "/c" }
      assert.equal(0, code)
      assert.matches("create%s+ca", out)
      assert.matches("issue%s+m1 peer", out)
      assert.matches("probe matrix: 1×1", out)
      assert.is_nil(io.open(tmp .. "/c/ca.pem"))
      local err
      code, out, err = run_cli { "cluster", "init", f, "--out", tmp .. "/c" }
      assert.equal(0, code, err)
      assert.matches("created 1, issued 3", out)
      assert.matches("cluster init: ca: created", err)
      assert.matches("cluster init: m1 peer: issued", err)
      code, out = run_cli { "cluster", "status", tmp .. "/c" }
      assert.equal(0, code)
      assert.matches("m1 peer%s+.-/m1/peer%.pem  until %d+%-", out)
      code, out = run_cli { "cluster", "check", tmp .. "/c" }
      assert.equal(0, code)
      assert.matches("PASS", out)
      code, out = run_cli { "cluster", "plan", f, "--out", tmp .. "/c", "--renew-within", "400d" }
      assert.equal(0, code)
      assert.matches("reissue%s+m1 peer", out)
    end)

    it("exit 1 on a bad description or failed check, 2 on usage errors; --help per command", function()
      local f = write_desc()
      local bad = tmp .. "/bad.yaml"
      local fh = assert(io.open(bad, "w"))
      fh:write("name: x\netcd-version: '9.9'\nmembers: []\n")
      fh:close()
      local code, _, err = run_cli { "cluster", "init", bad, "--out", tmp .. "/x" }
      assert.equal(1, code)
      assert.matches("etcd%-version: 9%.9 is not supported", err)
      assert.matches("%(ECLUSTER%)", err)
      assert.is_nil(io.open(tmp .. "/x/ca.pem"))
      assert.equal(2, (run_cli { "cluster", "init", f }))
      assert.equal(2, (run_cli { "cluster", "init", f, "--out", tmp .. "/c", "--renew-within", "soon" }))
      assert.equal(2, (run_cli { "cluster", "frobnicate" }))
      assert.equal(2, (run_cli { "cluster", "status", "--bogus", tmp }))
      assert.equal(2, (run_cli { "cluster" }))
      local out
      code, out = run_cli { "cluster", "init", "--help" }
      assert.equal(0, code)
      assert.matches("Usage: peerlisten cluster init", out)
      code, out = run_cli { "cluster", "--help" }
      assert.equal(0, code)
      assert.matches("plan FILE", out)
      assert.equal(1, (run_cli { "cluster", "status", tmp }))
      assert.equal(0, (run_cli { "cluster", "init", f, "--out", tmp .. "/c" }))
      os.remove(tmp .. "/c/m1/peer.pem")
      code, out = run_cli { "cluster", "check", tmp .. "/c" }
      assert.equal(1, code)
      assert.matches("FAIL m1%s+peer%s+cannot read certificate", out)
    end)
  end)
end)
