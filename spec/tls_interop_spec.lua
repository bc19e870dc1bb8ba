-- TLS listeners against real peers (#interop):
-- openssl s_client, curl and a Go crypto/tls client (spec/support/goclient,
-- built here into a temp dir).  Each client runs as a background process
-- (its own process group, stopped by pid); the spec drives the loop with
-- l:accept(short timeout) until the client has exited.
local core = require "peerlisten.core"
local helper = require "helper"
local pki_mod = require "support.pki"

local P, tmp, goclient
local have = {}

local shq, alive, kill, slurp = helper.q, helper.alive, helper.kill, helper.readfile

local seq = 0
--- Starts cmd in the background (own process group); returns pid, outfile.
local function start(cmd)
  seq = seq + 1
  local out = ("%s/out.%d"):format(tmp, seq)
  local script = ("%s/cmd.%d.sh"):format(tmp, seq)
  helper.writefile(script, cmd .. "\n")
  return assert(helper.bg("bash " .. shq(script), out)), out
end

-- What the server does with an accepted connection: read a request, answer
-- with a small HTTP/1.1 response naming the client certificate, close.
local served
local function respond(c)
  local info = c:tls_info()
  served[#served + 1] = info
  local data = c:read(4096, 3)
  if data then
    local body = "ok " .. (info and info.peer_cert and info.peer_cert.subject or "-") .. "\n"
    c:write(("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"):format(#body, body))
  end
  c:close()
end

--- Runs a client command against listener l while serving it; returns output.
local function run(l, cmd, timeout)
  local pid, out = start(cmd)
  local deadline = core.walltime() + (timeout or 15)
  while alive(pid) and core.walltime() < deadline do
    local c = l:accept(0.02)
    if c then respond(c) end
  end
  if os.getenv("PL_SPEC_TIMING") then
    io.stderr:write(("%.2fs %s\n"):format(core.walltime() - deadline + (timeout or 15), cmd))
  end
  if alive(pid) then kill(pid) end
  -- let the loop finish any rejection of this client
  for _ = 1, 5 do
    local c = l:accept(0.01)
    if c then respond(c) end
  end
  return slurp(out)
end

local json_decode
do
  local ok, cjson = pcall(require, "cjson")
  if ok then json_decode = cjson.decode end
end

local function go(l, args)
  local host, port = l:addr()
  local target = l:scheme() == "unixs" and ("-unix -addr " .. shq(host)) or ("-addr " .. host .. ":" .. port)
  local out = run(l, ("%s %s %s"):format(goclient, target, args))
  local line = out:match("(%b{})")
  assert(line, "goclient printed: " .. out)
  return json_decode(line)
end

local function pair_args(name)
  return ("-cert %s -key %s"):format(shq(P:cert(name)), shq(P:key(name)))
end

local function s_client(l, args, input, verbose)
  local host, port = l:addr()
  return run(l, ("printf %s | openssl s_client -connect %s:%d %s -ign_eof %s"):format(
    shq(input or "GET / HTTP/1.0\r\n\r\n"), host, port, verbose and "" or "-brief", args))
end

-- listener factory with a capturing logger
local logs
local function listen(opts, scheme)
  opts.cert_file = opts.cert_file or P:cert("server")
  opts.key_file = opts.key_file or P:key("server")
  local pol = assert(core.tls_policy(opts))
  local lopts = { scheme = scheme or "https", host = "127.0.0.1", port = 0, tls = pol,
    logger = function(level, msg, fields) logs[#logs + 1] = { level = level, msg = msg, fields = fields } end }
  if scheme == "unixs" then lopts.path = tmp .. "/peer.sock"; lopts.host = nil; lopts.port = nil end
  local l, err, code = core.listen(lopts)
  assert(l, tostring(err) .. " " .. tostring(code))
  pol:close()   -- the listener keeps its own reference
  return l
end

local function rejection(reason)
  for i = #logs, 1, -1 do
    local e = logs[i]
    if e.msg == "rejected connection" and e.fields.reason == reason then return e end
  end
  local seen = {}
  for _, e in ipairs(logs) do seen[#seen + 1] = e.msg .. ":" .. tostring(e.fields and e.fields.reason) end
  error("no rejected connection with reason " .. reason .. " in [" .. table.concat(seen, ", ") .. "]", 2)
end

local function is_go_ok(r, what)
  assert(r.ok, (what or "") .. " failed: " .. tostring(r.stage) .. ": " .. tostring(r.error))
  assert.matches("\r\n\r\nok ", r.reply)
end

describe("peerlisten TLS listeners #interop", function()
  local fd_before
  setup(function()
    assert(pki_mod.available(), "openssl CLI missing")
    assert(json_decode, "lua-cjson missing")
    -- libuv keeps one reserve fd per loop from the first listen on: warm up
    local warm = assert(core.listen { scheme = "http", host = "127.0.0.1", port = 0 })
    warm:close()
    collectgarbage()
    fd_before = helper.fd_count()
    tmp = helper.tmpdir()
    P = pki_mod.new()
    have.curl = os.execute("command -v curl >/dev/null 2>&1") == true
    have.go = os.execute("command -v go >/dev/null 2>&1") == true
    if have.go then
      local src = "spec/support/goclient"
      goclient = tmp .. "/goclient"
      local ok = os.execute(("cd %s && env -u GOFLAGS GO111MODULE=off GOPATH=%s/gopath GOCACHE=%s/gocache " ..
        "go build -o %s . >%s/gobuild.log 2>&1"):format(src, tmp, tmp, goclient, tmp))
      assert(ok, "go build failed: " .. slurp(tmp .. "/gobuild.log"))
    end
  end)
  teardown(function()
    if P then P:cleanup() end
    helper.rmdir(tmp)
    collectgarbage()
    collectgarbage()
    assert.are.equal(fd_before, helper.fd_count())
  end)
  before_each(function()
    logs, served = {}, {}
  end)

  describe("versions", function()
    it("accepts TLS 1.3 and TLS 1.2 (Go and openssl s_client), refuses TLS 1.1", function()
      assert(have.go, "go missing")
      local l = listen {}
      local r = go(l, "-ca " .. shq(P:cert("ca")) .. " -send ping")
      is_go_ok(r)
      assert.are.equal("TLS1.3", r.version)
      assert.are.equal("CN=peer1", r.peer_subject)
      r = go(l, "-ca " .. shq(P:cert("ca")) .. " -max TLS1.2 -send ping")
      is_go_ok(r)
      assert.are.equal("TLS1.2", r.version)
      assert.are.equal("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", r.cipher)
      local out = s_client(l, "-tls1_3")
      assert.matches("Protocol version: TLSv1.3", out, 1, true)
      assert.matches("HTTP/1.1 200 OK", out, 1, true)
      out = s_client(l, "-tls1_2")
      assert.matches("Protocol version: TLSv1.2", out, 1, true)
      assert.matches("HTTP/1.1 200 OK", out, 1, true)
      -- TLS 1.1: Go and OpenSSL clients get alert 70
      r = go(l, "-min TLS1.0 -max TLS1.1")
      assert.is_false(r.ok)
      assert.matches("protocol version not supported", r.error, 1, true)
      assert.are.equal("tls: client offered only unsupported versions: [302 301]",
        rejection("protocol_version").fields.error)
      out = s_client(l, "-tls1_1 -cipher DEFAULT:@SECLEVEL=0")
      assert.matches("alert protocol version", out, 1, true)
      assert.are.same({ protocol_version = 2 }, l:stats().rejected)
      l:close()
    end)
  end)

  describe("cipher suites", function()
    it("are honoured on TLS 1.2 and, beyond etcd, on TLS 1.3", function()
      assert(have.go, "go missing")
      local l = listen { cipher_suites = { "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384" } }
      local r = go(l, "-max TLS1.2 -ciphers TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 -send ping")
      is_go_ok(r)
      r = go(l, "-max TLS1.2 -ciphers TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384")
      assert.is_false(r.ok)
      assert.matches("handshake failure", r.error, 1, true)
      assert.are.equal("tls: no cipher suite supported by both client and server",
        rejection("no_shared_cipher").fields.error)
      r = go(l, "-send ping")
      is_go_ok(r)
      assert.are.equal("TLS_AES_256_GCM_SHA384", r.cipher)
      local out = s_client(l, "-tls1_3 -ciphersuites TLS_AES_128_GCM_SHA256")
      assert.matches("handshake failure", out, 1, true)
      out = s_client(l, "-tls1_3 -ciphersuites TLS_AES_256_GCM_SHA384")
      assert.matches("Ciphersuite: TLS_AES_256_GCM_SHA384", out, 1, true)
      assert.are.same({ no_shared_cipher = 2 }, l:stats().rejected)
      l:close()
    end)
  end)

  describe("client certificates", function()
    it("mTLS accepts a good cert (Go, curl, s_client) and refuses the rest", function()
      assert(have.go, "go missing")
      local l = listen { trusted_ca_file = P:cert("ca") }
      local ca = "-ca " .. shq(P:cert("ca")) .. " "
      local r = go(l, ca .. pair_args("client-good") .. " -send ping")
      is_go_ok(r)
      assert.are.equal("ok CN=peer1\n", r.reply:match("\r\n\r\n(.*)$"))
      assert.are.equal("CN=peer1", served[#served].peer_cert.subject)
      -- over a real socket, the peer certificate table is cert.inspect()'s for the same file
      local want = assert(require("peerlisten.cert").inspect(P:cert("client-good")))
      local got = served[#served].peer_cert
      assert.is_true(math.abs(want.days_left - got.days_left) <= 1)
      for k, v in pairs(want) do
        if k ~= "path" and k ~= "days_left" then assert.are.same(v, got[k], k) end
      end
      for k in pairs(got) do assert.is_not_nil(want[k], k) end
      if have.curl then
        local host, port = l:addr()
        local out = run(l, ("curl -sS --http1.1 --cacert %s --cert %s --key %s https://%s:%d/"):format(
          shq(P:cert("ca")), shq(P:cert("client-good")), shq(P:key("client-good")), host, port))
        assert.are.equal("ok CN=peer1\n", out)
      end
      local out = s_client(l, "-CAfile " .. shq(P:cert("ca")) .. " " .. pair_args("client-good"))
      assert.matches("ok CN=peer1", out, 1, true)

      -- no certificate
      r = go(l, ca .. "-send ping")
      assert.is_false(r.ok)
      assert.matches("certificate required", r.error, 1, true)
      local e = rejection("no_client_cert")
      assert.are.equal("tls: client didn't provide a certificate", e.fields.error)
      assert.are.equal("warn", e.level)
      assert.matches("^127%.0%.0%.1:%d+$", e.fields["remote-addr"])
      assert.are.equal("", e.fields["server-name"])
      -- another CA (Go clients only send a cert matching the server's CA list,
      -- so use s_client, which sends it anyway)
      out = s_client(l, "-servername peer.example " .. pair_args("client-otherca"))
      assert.not_matches("200 OK", out, 1, true)
      e = rejection("bad_client_cert")
      assert.are.equal("tls: failed to verify client certificate: x509: certificate signed by unknown authority",
        e.fields.error)
      assert.are.equal("peer.example", e.fields["server-name"])
      -- SAN not matching 127.0.0.1: handshake completes, then closed
      r = go(l, ca .. pair_args("client-badsan") .. " -send ping")
      assert.is_false(r.ok)
      assert.are.equal("read", r.stage)
      e = rejection("san_mismatch")
      assert.are.equal("x509: certificate is valid for 10.9.9.9, not 127.0.0.1", e.fields.error)
      assert.are.same({ "10.9.9.9" }, e.fields["ip-addresses"])
      assert.are.same({}, e.fields["dns-names"])
      r = go(l, ca .. pair_args("client-badsandns") .. " -send ping")
      assert.is_false(r.ok)
      assert.matches('^tls: "127.0.0.1" does not match any of DNSNames %["nonexistent.invalid"%]',
        rejection("san_mismatch").fields.error)
      -- no SAN: accepted
      is_go_ok(go(l, ca .. pair_args("client-nosan") .. " -send ping"))
      assert.are.same({ no_client_cert = 1, bad_client_cert = 1, san_mismatch = 2 }, l:stats().rejected)
      assert.are.equal(4, l:stats().accepted)
      l:close()
    end)

    it("reconnecting peers skip the chain verification (cache); another CA is still refused", function()
      assert(have.go, "go missing")
      local pol = assert(core.tls_policy { cert_file = P:cert("server"), key_file = P:key("server"),
                                           trusted_ca_file = P:cert("ca") })
      local l = assert(core.listen { scheme = "https", host = "127.0.0.1", port = 0, tls = pol,
        logger = function(level, msg, fields) logs[#logs + 1] = { level = level, msg = msg, fields = fields } end })
      local ca = "-ca " .. shq(P:cert("ca")) .. " "
      for _ = 1, 3 do is_go_ok(go(l, ca .. pair_args("client-good") .. " -send ping")) end
      local st = pol:_verify_cache()
      assert.are.same({ 1, 1, 2 }, { st.entries, st.misses, st.hits })
      local out = s_client(l, pair_args("client-otherca"))
      assert.not_matches("200 OK", out, 1, true)
      assert.are.equal("tls: failed to verify client certificate: x509: certificate signed by unknown authority",
        rejection("bad_client_cert").fields.error)
      is_go_ok(go(l, ca .. pair_args("client-good") .. " -send ping"))
      assert.are.equal(3, pol:_verify_cache().hits)
      l:close()
      pol:close()
    end)

    it("skip_client_san_verify accepts a SAN not matching 127.0.0.1", function()
      assert(have.go, "go missing")
      local l = listen { trusted_ca_file = P:cert("ca"), skip_client_san_verify = true }
      is_go_ok(go(l, pair_args("client-badsan") .. " -send ping"))
      l:close()
    end)

    it("refuses a revoked certificate (PEM and DER CRL)", function()
      assert(have.go, "go missing")
      for _, f in ipairs { "revoked.crl", "revoked.crl.der" } do
        local l = listen { trusted_ca_file = P:cert("ca"), crl_file = P:path(f) }
        local r = go(l, pair_args("client-good") .. " -send ping")
        assert.is_false(r.ok)
        assert.are.equal(("transport: certificate serial %s revoked"):format(P:serial("client-good")),
          rejection("revoked").fields.error)
        is_go_ok(go(l, pair_args("client-othercn") .. " -send ping"))
        l:close()
      end
    end)

    it("refuses a CN or hostname that is not allowed (alert bad_certificate)", function()
      assert(have.go, "go missing")
      local l = listen { trusted_ca_file = P:cert("ca"), allowed_cns = { "peer1" } }
      is_go_ok(go(l, pair_args("client-good") .. " -send ping"))
      local r = go(l, pair_args("client-othercn") .. " -max TLS1.2 -send ping")
      assert.is_false(r.ok)
      assert.matches("bad certificate", r.error, 1, true)
      assert.are.equal("client certificate authentication failed", rejection("cn_not_allowed").fields.error)
      l:close()
      l = listen { trusted_ca_file = P:cert("ca"), allowed_hostnames = { "127.0.0.1" } }
      is_go_ok(go(l, pair_args("client-good") .. " -send ping"))
      r = go(l, pair_args("client-nosan") .. " -send ping")
      assert.is_false(r.ok)
      assert.are.equal("client certificate authentication failed", rejection("cn_not_allowed").fields.error)
      assert.are.same({ cn_not_allowed = 1 }, l:stats().rejected)
      l:close()
    end)
  end)

  describe("ALPN", function()
    it("h2 offered -> h2; http/1.1 only -> none; only unknown -> no_application_protocol", function()
      local l = listen {}
      local out = s_client(l, "-alpn h2,http/1.1", nil, true)
      assert.matches("ALPN protocol: h2", out, 1, true)
      out = s_client(l, "-alpn http/1.1", nil, true)
      assert.matches("No ALPN negotiated", out, 1, true)
      assert.matches("HTTP/1.1 200 OK", out, 1, true)
      out = s_client(l, "-alpn foo")
      assert.matches("no application protocol", out, 1, true)
      assert.are.equal("tls: client requested unsupported application protocols ([foo])",
        rejection("alpn").fields.error)
      l:close()
    end)
  end)

  describe("handshake deadline", function()
    it("drops a client sending one byte every 0.3 s at the deadline", function()
      local l = listen { handshake_timeout = 1 }
      local host, port = l:addr()
      local t0 = core.walltime()
      run(l, ("exec 3<>/dev/tcp/%s/%d; for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do " ..
        "printf '\\026' >&3 || exit 0; sleep 0.3; done"):format(host, port))
      local e = rejection("timeout")
      local took = core.walltime() - t0
      assert.matches("^read tcp 127%.0%.0%.1:%d+%->127%.0%.0%.1:%d+: i/o timeout$", e.fields.error)
      assert.is_true(took < 5, "took " .. took)
      assert.are.same({ timeout = 1 }, l:stats().rejected)
      l:close()
    end)
  end)

  describe("plaintext and EOF", function()
    it("plaintext HTTP to a TLS port gets no bytes", function()
      local l = listen {}
      local host, port = l:addr()
      local out = run(l, ("exec 3<>/dev/tcp/%s/%d; printf 'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' >&3 2>/dev/null; " ..
        "cat <&3 | wc -c"):format(host, port))
      assert.are.equal("0", out:match("(%d+)%s*$"), "client printed: " .. out)
      assert.are.equal("tls: first record does not look like a TLS handshake", rejection("not_tls").fields.error)
      if have.curl then
        out = run(l, ("curl -sS http://%s:%d/; echo rc=$?"):format(host, port))
        assert.matches("rc=52", out, 1, true)
      end
      run(l, ("exec 3<>/dev/tcp/%s/%d; exec 3<&-"):format(host, port))
      assert.are.equal("EOF", rejection("eof").fields.error)
      local st = l:stats()
      assert.are.equal(have.curl and 2 or 1, st.rejected.not_tls)
      assert.are.equal(1, st.rejected.eof)
      l:close()
    end)
  end)

  describe("certificate reload", function()
    it("serves replaced files on the next handshake; keeps the old pair on garbage, with a warning", function()
      assert(have.go, "go missing")
      local dir = tmp .. "/reload"
      os.execute("mkdir -p " .. shq(dir))
      local cert, key = dir .. "/s.crt", dir .. "/s.key"
      P:copy(P:cert("server"), cert)
      P:copy(P:key("server"), key)
      local l = listen { cert_file = cert, key_file = key }
      assert.are.equal("CN=peer1", go(l, "-send ping").peer_subject)
      P:copy(P:cert("server2"), cert)
      P:copy(P:key("server2"), key)
      assert.are.equal("CN=peer2", go(l, "-send ping").peer_subject)
      local f = assert(io.open(cert, "w"))
      f:write("garbage\n")
      f:close()
      local r = go(l, "-send ping")
      is_go_ok(r)
      assert.are.equal("CN=peer2", r.peer_subject)
      local warned
      for _, e in ipairs(logs) do
        if e.msg == "failed to create peer certificate" then warned = e end
      end
      assert(warned, "no reload warning logged")
      assert.are.equal("warn", warned.level)
      assert.are.same({ ["cert-file"] = cert, ["key-file"] = key,
        error = "tls: failed to find any PEM data in certificate input" }, warned.fields)
      l:close()
    end)
  end)

  describe("session resumption", function()
    it("is off by default and works with session_tickets = true", function()
      local sess = tmp .. "/sess.pem"
      for _, tickets in ipairs { false, true } do
        for _, v in ipairs { "-tls1_2", "-tls1_3" } do
          os.remove(sess)
          local l = listen { session_tickets = tickets }
          s_client(l, v .. " -sess_out " .. shq(sess), nil, true)
          local f = io.open(sess)
          if f then f:close() end
          assert(f or not tickets, "no session to resume with tickets on")
          local out = f and s_client(l, v .. " -sess_in " .. shq(sess), nil, true) or "200 OK"
          assert.matches("200 OK", out, 1, true)
          if not f then  -- no ticket, no session id: nothing to resume at all
            assert.is_false(tickets)
          elseif tickets then
            assert.matches("Reused, TLSv1", out, 1, true)
            assert.is_true(served[#served].resumed)
          else
            assert.not_matches("Reused, TLSv1", out, 1, true)
            assert.is_false(served[#served].resumed)
          end
          l:close()
        end
      end
    end)
  end)

  describe("hardening", function()
    it("Go's groups and TLS 1.3 suite order with openssl s_client", function()
      local l = listen {}
      assert.matches("Ciphersuite: TLS_AES_128_GCM_SHA256", s_client(l, "-tls1_3"), 1, true)
      assert.matches("200 OK", s_client(l, "-groups P-521"), 1, true)
      -- TLS 1.2 + P-256 certificate + X25519 only: OpenSSL's RFC 8422 rule (see tls_hardening_spec)
      assert.not_matches("200 OK", s_client(l, "-tls1_2 -groups X25519"), 1, true)
      assert.matches("no cipher suite supported by both client and server", rejection("no_shared_cipher").fields.error)
      l:close()
      l = listen { cert_file = P:cert("rsa-server"), key_file = P:key("rsa-server") }
      assert.matches("200 OK", s_client(l, "-tls1_2 -groups X25519"), 1, true)
      assert.matches("200 OK", s_client(l, "-tls1_2 -groups P-521"), 1, true)
      l:close()
    end)

    it("a ticket of a client certificate that expired since is not resumed (s_client -sess_in, test clock)", function()
      local sess = tmp .. "/expired-sess.pem"
      os.remove(sess)
      local l = listen { trusted_ca_file = P:cert("ca"), session_tickets = true }
      local args = "-tls1_3 " .. pair_args("client-good")
      assert.matches("200 OK", s_client(l, args .. " -sess_out " .. shq(sess), nil, true), 1, true)
      assert.matches("Reused, TLSv1.3", s_client(l, args .. " -sess_in " .. shq(sess), nil, true), 1, true)
      core._tls_clock_shift(60 * 86400)
      local ok, out = pcall(s_client, l, args .. " -sess_in " .. shq(sess), nil, true)
      core._tls_clock_shift(0)
      assert(ok, out)
      assert.not_matches("200 OK", out, 1, true)
      assert.not_matches("Reused, TLSv1.3", out, 1, true)
      assert.matches("certificate has expired or is not yet valid", rejection("bad_client_cert").fields.error, 1, true)
      l:close()
    end)

    it("a CRL reload that fails with EMFILE is retried once fds are back (real handshakes)", function()
      local live = tmp .. "/emfile-live.crl"
      P:copy(P:path("empty.crl"), live)
      local l = listen { trusted_ca_file = P:cert("ca"), crl_file = live }
      assert.matches("200 OK", s_client(l, pair_args("client-good")), 1, true)
      P:copy(P:path("revoked.crl.der"), live)
      -- the client connects and sends its ClientHello into the backlog first (starting it needs fds)
      local pid = start(("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | openssl s_client -connect %s:%d -brief -ign_eof %s")
        :format(l:addr(), select(2, l:addr()), pair_args("client-good")))
      helper.sh("sleep 0.5")
      local nlogs = #logs
      -- one fd left: the accept takes it, the CRL read fails with EMFILE
      local release = helper.exhaust_fds(1)
      local deadline = core.walltime() + 10
      while #logs == nlogs and core.walltime() < deadline do
        local c = l:accept(0.05)
        if c then c:close() end
      end
      release()
      kill(pid)
      local e = rejection("crl")
      assert.are.equal(("open %s: too many open files"):format(live), e.fields.error)
      -- retried (at most once a second while the file is unchanged): the new CRL applies
      assert(helper.wait_until(function()
        local out = s_client(l, pair_args("client-good"))
        return not out:find("200 OK", 1, true) and logs[#logs].fields
          and logs[#logs].fields.reason == "revoked"
      end, 15), "the CRL read that failed with EMFILE was never retried")
      assert.matches("200 OK", s_client(l, pair_args("client-othercn")), 1, true)
      l:close()
    end)

    it("a CRL that becomes a FIFO fails only the handshakes that read it; the listener keeps serving", function()
      local live = tmp .. "/fifo-live.crl"
      P:copy(P:path("empty.crl"), live)
      local l = listen { trusted_ca_file = P:cert("ca"), crl_file = live }
      local plain = assert(core.listen { scheme = "http", host = "127.0.0.1", port = 0 })
      assert.matches("200 OK", s_client(l, pair_args("client-good")), 1, true)
      os.remove(live)
      assert(os.execute("mkfifo " .. shq(live)))
      assert.not_matches("200 OK", s_client(l, pair_args("client-good")), 1, true)
      assert.are.equal(("open %s: not a regular file"):format(live), rejection("crl").fields.error)
      -- the loop was never blocked: another listener accepts meanwhile
      local host, port = plain:addr()
      local sock = assert(helper.client(host, port))
      assert(plain:accept(5), "the plain listener did not accept"):close()
      sock:close()
      os.remove(live)
      P:copy(P:path("empty.crl"), live)
      assert.matches("200 OK", s_client(l, pair_args("client-good")), 1, true)
      plain:close()
      l:close()
    end)
  end)

  describe("unixs", function()
    it("is real TLS and skips the client SAN check", function()
      assert(have.go, "go missing")
      local l = listen({ trusted_ca_file = P:cert("ca") }, "unixs")
      local r = go(l, pair_args("client-badsan") .. " -send ping")
      is_go_ok(r)
      assert.are.equal("TLS1.3", r.version)
      r = go(l, "-send ping")
      assert.is_false(r.ok)
      assert.are.equal("@", rejection("no_client_cert").fields["remote-addr"])
      l:close()
    end)
  end)
end)
