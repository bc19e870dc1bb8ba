-- spec/probe_spec.lua: peerlisten.dial / probe against real peers (peerlisten serve, openssl
-- s_server, a Go crypto/tls server from spec/support/goserver, etcd 3.4 with peer mTLS), each
-- failure class provoked on purpose; the cluster-aware check on own-IP-only certificates.
local helper = require "helper"
local pki = require "support.pki"
local socket = require "socket"
local peerlisten = require "peerlisten"
local probe = require "peerlisten.probe"

local q = helper.q
local NOW = os.time()
local SKIP = not pki.available() and "openssl not installed" or nil

local function up(host, port)
  return helper.wait_until(function()
    local t = socket.tcp()
    local ok = t:connect(host, port)
    t:close()
    return ok ~= nil
  end, 15)
end

local function fail_with(code, pattern, ok, msg, c)
  assert.is_nil(ok, "expected a failure")
  assert.are.equal(code, c, msg)
  assert.matches(pattern, msg)
end

describe("peerlisten.dial and probe against real peers #interop", function()
  if SKIP then
    it("is skipped", function() pending(SKIP) end)
    return
  end
  local P, tmp, fds, goserver
  local children = {}

  local function bg(cmd, name)
    local pid = helper.bg(cmd, tmp .. "/" .. name .. ".log")
    children[#children + 1] = pid
    return pid, tmp .. "/" .. name .. ".log"
  end

  local function stop(pid)
    helper.stop(pid)
    for i, p in ipairs(children) do if p == pid then table.remove(children, i) break end end
  end

  -- peerlisten serve on host:port with a member's certificate and peer client-cert auth
  local function serve(host, member, extra)
    local port = helper.free_port()
    local pid, log = bg(("exec lua5.4 bin/peerlisten serve --listen-peer-urls https://%s:%d --peer-cert-file %s "
      .. "--peer-key-file %s --peer-trusted-ca-file %s --peer-client-cert-auth --log-level debug --data-dir %s %s")
      :format(host, port, q(P:cert(member)), q(P:key(member)), q(P:cert("ca")), q(tmp .. "/d-" .. member),
        extra or ""), "serve-" .. member .. "-" .. port)
    assert(up(host, port), "serve did not start: " .. helper.readfile(log))
    return pid, port, log
  end

  local function go(args, name)
    local pid, log = bg(goserver .. " " .. args, name)
    assert(helper.wait_until(function() return helper.readfile(log):match("listening %S+:(%d+)") end, 20),
      "goserver did not start: " .. helper.readfile(log))
    return pid, tonumber(helper.readfile(log):match("listening %S+:(%d+)"))
  end

  local function member(name)
    return { cert_file = P:cert(name), key_file = P:key(name), trusted_ca_file = P:cert("ca") }
  end

  setup(function()
    helper.warm()
    fds = helper.fd_count()
    tmp = helper.tmpdir()
    P = pki.new()
    local life = { not_before = NOW - 3600, not_after = NOW + 90 * 86400 }
    for name, san in pairs { m11 = "IP:127.0.0.11", m12 = "IP:127.0.0.12", m13 = "IP:127.0.0.13",
      ["m11-src"] = "IP:127.0.0.11,IP:127.0.0.1", ["m12-src"] = "IP:127.0.0.12,IP:127.0.0.1",
      ["m13-src"] = "IP:127.0.0.13,IP:127.0.0.1" } do
      P:issue(name, { cn = name, san = san, not_before = life.not_before, not_after = life.not_after })
    end
    if helper.have("go") then
      goserver = tmp .. "/goserver"
      local _, st = helper.run(("cd spec/support/goserver && env -u GOFLAGS GO111MODULE=off GOPATH=%s/gopath "
        .. "GOCACHE=%s/gocache go build -o %s . >%s/gobuild.log 2>&1"):format(tmp, tmp, goserver, tmp))
      assert(st == 0, "go build failed: " .. helper.readfile(tmp .. "/gobuild.log"))
    end
  end)

  teardown(function()
    for _, pid in ipairs(children) do helper.stop(pid) end
    if P then P:cleanup() end
    helper.rmdir(tmp)
    collectgarbage(); collectgarbage()
    helper.assert_fds(fds)
  end)

  describe("peerlisten serve", function()
    it("mutual TLS from the address the certificate names: data, tls_info, probe OK, serve logs the peer", function()
      local pid, port, log = serve("127.0.0.12", "m12")
      local u = ("https://127.0.0.12:%d"):format(port)
      local o = member("m11")
      o.source = "127.0.0.11"
      local c = assert(peerlisten.dial(u, o))
      assert.are.equal("127.0.0.11", (c:local_addr()))
      assert.is_true(c:write("GET /raft/probing HTTP/1.1\r\nHost: x\r\n\r\n"))
      local buf = ""
      while not buf:find('"OK":true', 1, true) do buf = buf .. assert(c:read(4096, 5)) end
      assert.matches('^HTTP/1%.1 200 OK\r\n.*{"OK":true,"Now":"%d+%-%d+%-%d+T[%d:.]+Z"}\n$', buf)
      local info = c:tls_info()
      assert.are.equal("CN=m12", info.peer_cert.subject)
      c:close()
      local r = probe.probe(u, o)
      assert.is_true(r.ok, r.verdict)
      assert.matches("^OK: ", r.verdict)
      assert.matches("^127%.0%.0%.11:%d+$", r.local_address)
      assert.are.same({ "127.0.0.12" }, r.server_cert.sans.ip)
      assert.are.equal(200, r.probing.status)
      assert.is_true(r.rtt >= 0 and r.rtt < 5)
      assert.is_true(helper.wait_until(function()
        return helper.readfile(log):find('"msg":"accepted peer connection"', 1, true) ~= nil end, 5))
      assert.matches('"subject":"CN=m11"', helper.readfile(log))
      assert.matches('"ip%-sans":%["127.0.0.11"%]', helper.readfile(log))
      stop(pid)
    end)

    it("probe between two serve processes shows etcd's verdict: the certificate does not name the dial source",
      function()
      local pid, port, log = serve("127.0.0.12", "m12")
      local u = ("https://127.0.0.12:%d"):format(port)
      local base = ("exec lua5.4 bin/peerlisten probe %s --peer-cert-file %s --peer-key-file %s "
        .. "--peer-trusted-ca-file %s --data-dir %s"):format(u, q(P:cert("m11")), q(P:key("m11")),
        q(P:cert("ca")), q(tmp .. "/d-probe"))
      local out, st = helper.run(base .. " 2>&1")
      assert.are.equal(1, st, out)
      local etcd_words = "x509: certificate is valid for 127.0.0.11, not 127.0.0.1"
      assert.matches("^FAIL: .*the server rejected this member's certificate", out)
      assert.truthy(out:find(etcd_words, 1, true), out)
      assert.matches("code: EPEERREJECTED %(refused by the remote side%)", out)
      assert.matches("dialled from: 127%.0%.0%.1:%d+", out)
      -- the server's own log gives the same reason
      assert.truthy(helper.wait_until(function() return helper.readfile(log):find(etcd_words, 1, true) end, 5))
      out, st = helper.run(base .. " --source 127.0.0.11 --json 2>&1")
      assert.are.equal(0, st, out)
      local r = require("cjson").decode(out:match("{.*}"))
      assert.is_true(r.ok)
      assert.are.equal("TLS1.3", r.tls.version)
      stop(pid)
    end)

    it("each failure class, with the side that refused", function()
      local pid, port = serve("127.0.0.12", "m12")
      local u = ("https://127.0.0.12:%d"):format(port)
      -- nothing listens
      local free = helper.free_port()
      fail_with("ECONNREFUSED", "connection refused", peerlisten.dial(("https://127.0.0.12:%d"):format(free), member("m11")))
      -- our verification of the server: unknown authority, name mismatch listing the cert's names
      local o = member("m11"); o.trusted_ca_file = P:cert("other-ca"); o.source = "127.0.0.11"
      fail_with("ESERVERCERT", "x509: certificate signed by unknown authority", peerlisten.dial(u, o))
      o = member("m11"); o.source = "127.0.0.11"; o.server_name = "127.0.0.13"
      fail_with("ESERVERCERT", "x509: certificate is valid for 127%.0%.0%.12, not 127%.0%.0%.13", peerlisten.dial(u, o))
      -- the server refuses us: no certificate (TLS 1.3: on the first read), a certificate of another CA
      local c = assert(peerlisten.dial(u, { trusted_ca_file = P:cert("ca"), source = "127.0.0.11" }))
      fail_with("EPEERREJECTED", "^read: remote error: tls: certificate required$", c:read(10, 5))
      c:close()
      -- TLS 1.2: the refusal ends the handshake (OpenSSL's server sends handshake_failure)
      fail_with("EPEERREJECTED", "^remote error: tls: handshake failure$",
        peerlisten.dial(u, { trusted_ca_file = P:cert("ca"), max_version = "TLS1.2", source = "127.0.0.11" }))
      o = { cert_file = P:cert("client-otherca"), key_file = P:key("client-otherca"),
        trusted_ca_file = P:cert("ca"), max_version = "TLS1.2" }
      fail_with("EPEERREJECTED", "remote error: tls: unknown certificate authority", peerlisten.dial(u, o))
      local r = probe.probe(u, { trusted_ca_file = P:cert("ca"), source = "127.0.0.11" })
      assert.are.same({ false, "EPEERREJECTED", "remote" }, { r.ok, r.code, r.side })
      -- a plain listener answers https with silence: the handshake deadline
      stop(pid)
      local pport = helper.free_port()
      local ppid = bg(("exec lua5.4 bin/peerlisten serve --listen-peer-urls http://127.0.0.1:%d --data-dir %s")
        :format(pport, q(tmp .. "/d-plain")), "serve-plain")
      assert(up("127.0.0.1", pport))
      fail_with("ETIMEDOUT", "TLS handshake timeout",
        peerlisten.dial(("https://127.0.0.1:%d"):format(pport), { trusted_ca_file = P:cert("ca"), timeout = 0.5 }))
      r = probe.probe(("http://127.0.0.1:%d"):format(pport), {})
      assert.is_true(r.ok, r.verdict)
      assert.matches("plain TCP", r.verdict)
      stop(ppid)
    end)

    it("dials unix and unixs peer URLs", function()
      local sock = tmp .. "/m12.sock"
      -- etcd's form is unix://host:port, relative to the working directory; dial takes the absolute form
      local pid = bg(("cd %s && exec lua5.4 %s/bin/peerlisten serve --listen-peer-urls unix://m12.sock:0,"
        .. "unixs://m12.sock:1 --peer-cert-file %s --peer-key-file %s --data-dir %s"):format(q(tmp),
        q(helper.sh("pwd"):gsub("%s+$", "")), q(P:cert("server")), q(P:key("server")), q(tmp .. "/d-unix")),
        "serve-unix")
      assert(helper.wait_until(function() return select(2, helper.run("test -S " .. q(sock .. ":1"))) == 0 end, 15),
        helper.readfile(tmp .. "/serve-unix.log"))
      local r = probe.probe(("unix://%s:0"):format(sock), {})
      assert.is_true(r.ok, r.verdict)
      r = probe.probe(("unixs://%s:1"):format(sock), { trusted_ca_file = P:cert("ca"), server_name = "localhost" })
      assert.is_true(r.ok, r.verdict)
      assert.are.equal("CN=peer1", r.server_cert.subject)
      stop(pid)
    end)

    it("auto-TLS peers skip verifying the server, as etcd, and say so", function()
      local port = helper.free_port()
      local pid, log = bg(("exec lua5.4 bin/peerlisten serve --listen-peer-urls https://127.0.0.1:%d --peer-auto-tls "
        .. "--data-dir %s"):format(port, q(tmp .. "/d-auto-server")), "serve-auto")
      assert(up("127.0.0.1", port), helper.readfile(log))
      local c, k = assert(peerlisten.cert.self_signed { dir = tmp .. "/d-auto-client", hosts = { "127.0.0.1" } })
      local capture = peerlisten.log.capture { level = "info" }
      local r = probe.probe(("https://127.0.0.1:%d"):format(port), { cert_file = c, key_file = k, logger = capture })
      assert.is_true(r.ok, r.verdict)
      assert.is_truthy(capture:find("peer dial skips server certificate verification: this member's certificate "
        .. "is self-signed (auto-TLS) and no trusted CA is set, as in etcd", "warn"))
      -- with a trusted CA the same server is verified, and refused
      r = probe.probe(("https://127.0.0.1:%d"):format(port), { cert_file = c, key_file = k,
        trusted_ca_file = P:cert("ca") })
      assert.are.same({ false, "ESERVERCERT", "local" }, { r.ok, r.code, r.side })
      stop(pid)
    end)

    it("bad input is a fail triple and leaves nothing open", function()
      fail_with("EURL", "^parse \"127%.0%.0%.1:2380\"", peerlisten.dial("127.0.0.1:2380"))
      fail_with("EURL", "URL scheme must be", peerlisten.dial("ftp://127.0.0.1:2380"))
      fail_with("ECERT", "", peerlisten.dial("https://127.0.0.1:1", { cert_file = tmp .. "/none.pem",
        key_file = tmp .. "/none-key.pem" }))
      -- the CLI: usage errors exit 2, a link that does not work exits 1
      local out, st = helper.run("lua5.4 bin/peerlisten probe 2>&1")
      assert.are.equal(2, st, out)
      assert.matches("a peer URL is required", out)
      out, st = helper.run("lua5.4 bin/peerlisten probe http://127.0.0.1:1 --timeout soon 2>&1")
      assert.are.equal(2, st, out)
      out, st = helper.run("lua5.4 bin/peerlisten probe http://127.0.0.1:1 --no-such-flag 2>&1")
      assert.are.equal(2, st, out)
      out, st = helper.run(("lua5.4 bin/peerlisten probe http://127.0.0.1:%d --data-dir %s 2>&1")
        :format(helper.free_port(), q(tmp .. "/d-refused")))
      assert.are.equal(1, st, out)
      assert.matches("^FAIL: http://127%.0%.0%.1:%d+: nothing listens there %(dial tcp 127%.0%.0%.1:%d+: connect: "
        .. "connection refused%)\n  code: ECONNREFUSED %(refused by the remote side%)", out)
      assert.has_error(function() peerlisten.dial(1) end)
      assert.has_error(function() peerlisten.dial("http://127.0.0.1:1", 5) end)
    end)
  end)

  describe("a Go crypto/tls server", function()
    it("probe OK with mutual TLS; its refusal of a missing certificate; its expired certificate; plain; ALPN", function()
      if not goserver then pending("go not installed") return end
      local pid, port = go(("-addr 127.0.0.12:0 -cert %s -key %s -ca %s"):format(q(P:cert("m12")), q(P:key("m12")),
        q(P:cert("ca"))), "go-mtls")
      local u = ("https://127.0.0.12:%d"):format(port)
      local r = probe.probe(u, member("m11"))
      assert.is_true(r.ok, r.verdict)
      assert.matches('"etcdserver":"goserver"', r.version.body)
      -- Go's server refuses a missing certificate in TLS 1.3 with bad_certificate (its version's choice)
      local c = assert(peerlisten.dial(u, { trusted_ca_file = P:cert("ca") }))
      fail_with("EPEERREJECTED", "^read: remote error: tls: [%a ]+$", c:read(10, 5))
      c:close()
      fail_with("EPEERREJECTED", "remote error: tls: bad certificate",
        peerlisten.dial(u, { cert_file = P:cert("client-otherca"), key_file = P:key("client-otherca"),
          trusted_ca_file = P:cert("ca"), max_version = "TLS1.2" }))
      stop(pid)
      pid, port = go(("-addr 127.0.0.1:0 -cert %s -key %s"):format(q(P:cert("client-expired")),
        q(P:key("client-expired"))), "go-expired")
      fail_with("ESERVERCERT", "x509: certificate has expired or is not yet valid",
        peerlisten.dial(("https://127.0.0.1:%d"):format(port), { trusted_ca_file = P:cert("ca") }))
      stop(pid)
      pid, port = go("-addr 127.0.0.1:0", "go-plain")
      fail_with("ENOTTLS", "^tls: first record does not look like a TLS handshake$",
        peerlisten.dial(("https://127.0.0.1:%d"):format(port), { trusted_ca_file = P:cert("ca") }))
      stop(pid)
      pid, port = go(("-addr 127.0.0.1:0 -cert %s -key %s -alpn h2"):format(q(P:cert("server")), q(P:key("server"))),
        "go-alpn")
      -- (Go lets a client offering only http/1.1 through without ALPN; any other protocol is refused)
      fail_with("EALPN", "remote error: tls: no application protocol",
        peerlisten.dial(("https://127.0.0.1:%d"):format(port), { trusted_ca_file = P:cert("ca"), alpn = { "x-other" } }))
      stop(pid)
    end)
  end)

  describe("openssl s_server", function()
    it("mutual TLS and its refusal of a missing client certificate", function()
      local port = helper.free_port()
      local pid = bg(("exec openssl s_server -www -accept 127.0.0.1:%d -cert %s -key %s -CAfile %s -Verify 1")
        :format(port, q(P:cert("server")), q(P:key("server")), q(P:cert("ca"))), "s_server")
      assert(up("127.0.0.1", port))
      local u = ("https://127.0.0.1:%d"):format(port)
      local c = assert(peerlisten.dial(u, { cert_file = P:cert("client-good"), key_file = P:key("client-good"),
        trusted_ca_file = P:cert("ca") }))
      assert.is_true(c:write("GET / HTTP/1.0\r\n\r\n"))
      local buf = ""
      while not buf:find("\r\n\r\n", 1, true) do
        local d = c:read(4096, 5)
        if not d then break end
        buf = buf .. d
      end
      assert.matches("^HTTP/1%.0 200 ok", buf)
      c:close()
      fail_with("EPEERREJECTED", "remote error: tls: ",
        peerlisten.dial(u, { trusted_ca_file = P:cert("ca"), max_version = "TLS1.2" }))
      stop(pid)
    end)
  end)

  describe("etcd 3.4 with peer mTLS", function()
    it("probe answers as etcd's own peers would, and the rejection matches etcd's log", function()
      if not helper.have("etcd") then pending("etcd not installed") return end
      local pport, cport = helper.free_port(), helper.free_port()
      local purl = ("https://127.0.0.12:%d"):format(pport)
      local pid, log = bg(("exec etcd --name m12 --data-dir %s --listen-peer-urls %s --initial-advertise-peer-urls %s "
        .. "--initial-cluster m12=%s --listen-client-urls http://127.0.0.12:%d --advertise-client-urls "
        .. "http://127.0.0.12:%d --peer-cert-file %s --peer-key-file %s --peer-trusted-ca-file %s "
        .. "--peer-client-cert-auth"):format(q(tmp .. "/etcd-m12"), purl, purl, purl, cport, cport,
        q(P:cert("m12")), q(P:key("m12")), q(P:cert("ca"))), "etcd-m12")
      assert(up("127.0.0.12", pport), "etcd did not start: " .. helper.readfile(log))
      local o = member("m11")
      o.source = "127.0.0.11"
      local r = probe.probe(purl, o)
      assert.is_true(r.ok, r.verdict)
      assert.matches('"etcdserver":"3%.4%.', r.version.body)
      assert.matches('^{"OK":true,"Now":"', r.probing.body)
      -- from 127.0.0.1, which m11's certificate does not name
      r = probe.probe(purl, member("m11"))
      local words = "x509: certificate is valid for 127.0.0.11, not 127.0.0.1"
      assert.are.same({ false, "EPEERREJECTED", "remote" }, { r.ok, r.code, r.side })
      assert.truthy(r.error:find(words, 1, true), r.error)
      assert.truthy(helper.wait_until(function() return helper.readfile(log):find(words, 1, true) end, 10))
      -- no client certificate; etcd's certificate checked against another CA; a plain dial
      local c = assert(peerlisten.dial(purl, { trusted_ca_file = P:cert("ca") }))
      fail_with("EPEERREJECTED", "^read: remote error: tls: [%a ]+$", c:read(10, 5))
      c:close()
      fail_with("ESERVERCERT", "unknown authority", peerlisten.dial(purl, { trusted_ca_file = P:cert("other-ca") }))
      r = probe.probe(("http://127.0.0.12:%d"):format(pport), {})
      assert.are.same({ false, "EHTTP" }, { r.ok, r.code })
      stop(pid)
    end)
  end)

  describe("check knows the cluster", function()
    local IC
    local function cfg_for(n, certname, extra)
      local t = { "--name", "m" .. n, "--initial-cluster", IC, "--initial-advertise-peer-urls",
        ("https://127.0.0.%d:2380"):format(n), "--listen-peer-urls", ("https://127.0.0.%d:0"):format(n),
        "--peer-cert-file", P:cert(certname), "--peer-key-file", P:key(certname),
        "--peer-trusted-ca-file", P:cert("ca"), "--peer-client-cert-auth", "--data-dir", tmp .. "/c" .. n }
      for _, a in ipairs(extra or {}) do t[#t + 1] = a end
      return assert(peerlisten.config.load { args = t })
    end
    setup(function()
      IC = "m11=https://127.0.0.11:2380,m12=https://127.0.0.12:2380,m13=https://127.0.0.13:2380"
    end)

    local function dial_warnings(report)
      local n = 0
      for _, w in ipairs(report.warnings) do
        if w.msg:find("address this member dials a peer from", 1, true) then n = n + 1 end
      end
      return n
    end

    it("warns for own-IP-only certificates (peers dial from 127.0.0.1), fails with strict, passes once named", function()
      for n = 11, 13 do
        local r = peerlisten.check(cfg_for(n, "m" .. n))
        assert.is_true(r.ok, r.error)
        assert.are.equal(2, dial_warnings(r))
        for _, d in ipairs(r.cluster.dial_sources) do
          assert.are.same({ "127.0.0.1", false }, { d.source, d.named })
        end
        assert.truthy(r.warnings[#r.warnings].fields.error:find(("x509: certificate is valid for 127.0.0.%d, not 127.0.0.1")
          :format(n), 1, true))
        r = peerlisten.check(cfg_for(n, "m" .. n), { strict = true })
        assert.are.same({ false, "ESTRICT" }, { r.ok, r.code })
        r = peerlisten.check(cfg_for(n, "m" .. n .. "-src"), { strict = true })
        assert.is_true(r.ok, r.error)
        assert.are.equal(0, dial_warnings(r))
        assert.are.equal(1, #r.listeners)
      end
      -- the CLI: exit 1 with --strict, 0 without; --no-bind binds nothing
      local args = ("--name m11 --initial-cluster %s --initial-advertise-peer-urls https://127.0.0.11:2380 "
        .. "--listen-peer-urls https://127.0.0.11:0 --peer-cert-file %s --peer-key-file %s --peer-trusted-ca-file %s "
        .. "--peer-client-cert-auth --data-dir %s"):format(IC, q(P:cert("m11")), q(P:key("m11")), q(P:cert("ca")),
        q(tmp .. "/cli"))
      local out, st = helper.run("lua5.4 bin/peerlisten check " .. args .. " 2>&1")
      assert.are.equal(0, st, out)
      assert.matches("x509: certificate is valid for 127%.0%.0%.11, not 127%.0%.0%.1", out)
      out, st = helper.run("lua5.4 bin/peerlisten check --strict --no-bind " .. args .. " 2>&1")
      assert.are.equal(1, st, out)
      assert.matches("FAIL: .*strict: 2 certificate or cluster warnings", out)
      assert.not_matches("can be bound", out)
    end)

    it("reads the cluster settings from YAML and from ETCD_* variables too", function()
      local yaml = tmp .. "/m11.yaml"
      helper.writefile(yaml, ("name: m11\ndata-dir: %s\nlisten-peer-urls: https://127.0.0.11:0\n"
        .. "initial-advertise-peer-urls: https://127.0.0.11:2380\ninitial-cluster: %s\n"
        .. "peer-transport-security:\n  cert-file: %s\n  key-file: %s\n  trusted-ca-file: %s\n"
        .. "  client-cert-auth: true\n"):format(tmp .. "/y11", IC, P:cert("m11"), P:key("m11"), P:cert("ca")))
      local r = peerlisten.check(assert(peerlisten.config.load { file = yaml }), { bind = false })
      assert.are.equal(2, dial_warnings(r))
      local env = { ETCD_NAME = "m11", ETCD_INITIAL_CLUSTER = IC,
        ETCD_INITIAL_ADVERTISE_PEER_URLS = "https://127.0.0.11:2380", ETCD_PEER_CERT_FILE = P:cert("m11-src"),
        ETCD_PEER_KEY_FILE = P:key("m11-src"), ETCD_PEER_CLIENT_CERT_AUTH = "true", ETCD_DATA_DIR = tmp .. "/e11" }
      local cfg = assert(peerlisten.config.load { args = {}, env = env })
      r = peerlisten.check(cfg, { bind = false, env = env, strict = true })
      assert.is_true(r.ok, r.error)
      assert.are.equal(2, #r.cluster.dial_sources)
      assert.is_true(r.cluster.dial_sources[1].named)
      -- without the variables there is no cluster to check
      r = peerlisten.check(cfg, { bind = false })
      assert.is_nil(r.cluster)
    end)

    it("etcd's membership rule and messages; a CA as member certificate", function()
      local cfg = assert(peerlisten.config.load { args = { "--name", "m4", "--initial-cluster", IC,
        "--initial-advertise-peer-urls", "https://127.0.0.11:2380", "--data-dir", tmp .. "/x" } })
      local r = peerlisten.check(cfg, { bind = false })
      assert.are.same({ false, "ECLUSTER", 'couldn\'t find local name "m4" in the initial cluster configuration' },
        { r.ok, r.code, r.error })
      cfg = assert(peerlisten.config.load { args = { "--name", "m11", "--initial-cluster", IC,
        "--initial-advertise-peer-urls", "https://127.0.0.11:2381", "--data-dir", tmp .. "/x" } })
      r = peerlisten.check(cfg, { bind = false })
      assert.are.equal("--initial-cluster has m11=https://127.0.0.11:2380 but missing from "
        .. "--initial-advertise-peer-urls=https://127.0.0.11:2381", r.error)
      cfg = assert(peerlisten.config.load { args = { "--name", "m11", "--initial-cluster",
        "m11=https://127.0.0.11:2380", "--initial-advertise-peer-urls", "https://127.0.0.11:2380,https://127.0.0.11:2390",
        "--data-dir", tmp .. "/x" } })
      r = peerlisten.check(cfg, { bind = false })
      assert.are.equal("--initial-advertise-peer-urls has https://127.0.0.11:2390 but missing from "
        .. "--initial-cluster=m11=https://127.0.0.11:2380,m11=https://127.0.0.11:2390", r.error)
      r = peerlisten.check(cfg_for(11, "ca"), { bind = false, strict = true })
      assert.is_false(r.ok)
      local msgs = {}
      for _, w in ipairs(r.warnings) do msgs[#msgs + 1] = w.msg end
      msgs = table.concat(msgs, "\n")
      assert.matches("is a CA certificate", msgs)
      assert.matches("does not name the advertise URL host", msgs)
      r = peerlisten.check(cfg_for(11, "client-serveronly"), { bind = false, strict = true })
      assert.are.same({ false, "ESTRICT" }, { r.ok, r.code })
      msgs = {}
      for _, w in ipairs(r.warnings) do msgs[#msgs + 1] = w.msg end
      assert.matches("lacks the clientAuth extended key usage", table.concat(msgs, "\n"))
    end)

    it("--peers probes the other members with this member's certificate", function()
      local pid, port = serve("127.0.0.12", "m12-src")
      local ic = ("m11=https://127.0.0.11:2380,m12=https://127.0.0.12:%d"):format(port)
      local function row(certname)
        local cfg = assert(peerlisten.config.load { args = { "--name", "m11", "--initial-cluster", ic,
          "--initial-advertise-peer-urls", "https://127.0.0.11:2380", "--peer-cert-file", P:cert(certname),
          "--peer-key-file", P:key(certname), "--peer-trusted-ca-file", P:cert("ca"), "--peer-client-cert-auth",
          "--data-dir", tmp .. "/p" } })
        return peerlisten.check(cfg, { bind = false, peers = true })
      end
      local r = row("m11")
      assert.are.equal(1, #r.peers)
      assert.are.same({ "m12", false, "EPEERREJECTED", true }, { r.peers[1].name, r.peers[1].ok, r.peers[1].code,
        r.peers[1].reachable })
      r = row("m11-src")
      assert.is_true(r.peers[1].ok, r.peers[1].verdict)
      stop(pid)
    end)
  end)
end)
