-- Certificates from peerlisten.cert used by real peers:
-- Go's crypto/x509 + crypto/tls (spec/support/gox509) and etcd 3.4.23 with curl.
local cert = require "peerlisten.cert"
local helper = require "helper"

local sh, q, have, run = helper.sh, helper.q, helper.have, helper.run

local function kv(text)
  local t = {}
  for k, v in text:gmatch("([%w_]+)=([^\n]*)") do t[k] = v end
  return t
end

-- Two distinct free loopback ports (bound and released at once).
local function free_ports(n)
  local ok, socket = pcall(require, "socket")
  local ports, held = {}, {}
  for i = 1, n do
    if ok then
      local s = assert(socket.bind("127.0.0.1", 0))
      held[i] = s
      ports[i] = select(2, s:getsockname())
    else
      ports[i] = 20000 + math.random(0, 20000) + i
    end
  end
  for _, s in ipairs(held) do s:close() end
  return ports
end

local function sleep(s) os.execute("sleep " .. s) end

local pid_alive = helper.alive

local stop = helper.stop

describe("peerlisten.cert #interop", function()
  local tmp, ca, ca_key, m, m_key, ss, ss_key
  lazy_setup(function()
    tmp = helper.tmpdir()
    ca, ca_key = assert(cert.ca { dir = tmp .. "/ca" })
    m, m_key = assert(cert.issue { ca_cert = ca, ca_key = ca_key, dir = tmp .. "/members", name = "n1",
      hosts = { "https://127.0.0.1:2380", "localhost:2380" } })
    ss, ss_key = assert(cert.self_signed { dir = tmp .. "/data/fixtures/peer",
      hosts = { "127.0.0.1:2380", "localhost:2380" } })
  end)
  lazy_teardown(function() helper.rmdir(tmp) end)

  describe("with Go crypto/x509 and crypto/tls", function()
    local gox509
    lazy_setup(function()
      if not have("go") then return end
      local dir = tmp .. "/go"
      local out, status = run(("mkdir -p %s && cd %s && env GO111MODULE=off GOFLAGS= GOPATH=%s GOCACHE=%s "
        .. "GOTOOLCHAIN=local go build -o %s %s 2>&1"):format(q(dir), q(dir), q(dir .. "/gopath"),
        q(dir .. "/cache"), q(dir .. "/gox509"), q(sh("pwd"):match("[^\n]+") .. "/spec/support/gox509/main.go")))
      assert(status == 0, "go build failed: " .. out)
      gox509 = dir .. "/gox509"
    end)

    local function go(args)
      if not gox509 then
        pending("Go toolchain (golang-go) not installed")
        return nil
      end
      local out = run(q(gox509) .. " " .. args .. " 2>&1")
      return out
    end

    it("parses etcd's self-signed certificate and its SEC1 key", function()
      local out = go("parse " .. q(ss) .. " " .. q(ss_key))
      if not out then return end
      local info, got = cert.inspect(ss), kv(out)
      assert.equal("EC PRIVATE KEY", got.key_block, out)
      assert.equal("3", got.version)
      assert.equal(info.serial, got.serial)
      assert.truthy(tonumber(got.serial_bits) <= 128)
      assert.equal("O=etcd", got.subject)
      assert.equal("O=etcd", got.issuer)
      assert.equal(tostring(365 * 86400), got.validity_seconds)
      assert.equal("ECDSA-SHA512", got.signature_algorithm)
      assert.equal("ECDSA P-521", got.public_key)
      assert.equal("digitalSignature,keyEncipherment,cRLSign", got.key_usage)
      assert.equal("serverAuth", got.ext_key_usage)
      assert.equal("true", got.basic_constraints_valid)
      assert.equal("true", got.is_ca)
      assert.equal(info.subject_key_id, got.subject_key_id)
      assert.equal("", got.authority_key_id)
      assert.equal("localhost", got.dns)
      assert.equal("127.0.0.1", got.ips)
      assert.equal("ok", got.self_signature)
    end)

    it("parses an ed25519 pair (PKCS#8 key)", function()
      local c, k = assert(cert.self_signed { dir = tmp .. "/ed", key_type = "ed25519", hosts = { "127.0.0.1" } })
      local out = go("parse " .. q(c) .. " " .. q(k))
      if not out then return end
      local got = kv(out)
      assert.equal("PRIVATE KEY", got.key_block, out)
      assert.equal("Ed25519", got.public_key)
      assert.equal("Ed25519", got.signature_algorithm)
      assert.equal("ok", got.self_signature)
    end)

    it("verifies a CA-issued member certificate for server and client auth and completes mutual TLS", function()
      local out = go(("verify %s %s %s 127.0.0.1"):format(q(ca), q(m), q(m_key)))
      if not out then return end
      assert.matches("verify serverAuth: ok\n", out)
      assert.matches("verify clientAuth: ok\n", out)
      assert.matches("mtls: ok hello\n", out)
      local got = kv(go("parse " .. q(m) .. " " .. q(m_key)))
      assert.equal("serverAuth,clientAuth", got.ext_key_usage)
      assert.equal("false", got.is_ca)
      assert.equal(cert.inspect(ca).subject_key_id, got.authority_key_id)
      assert.equal("localhost", got.dns)
      assert.equal("127.0.0.1", got.ips)
      assert.equal("CN=n1", got.subject)
    end)

    it("refuses etcd's serverAuth-only self-signed certificate as a client certificate", function()
      local out = go(("verify %s %s %s 127.0.0.1"):format(q(ss), q(ss), q(ss_key)))
      if not out then return end
      assert.matches("verify serverAuth: ok\n", out)
      assert.matches("verify clientAuth: x509: certificate specifies an incompatible key usage\n", out)
    end)
  end)

  describe("with etcd 3.4.23 serving peer TLS", function()
    -- Starts etcd with the given peer TLS flags; returns pid, peer port, log path.
    local function start_etcd(name, peer_flags)
      local p = free_ports(2)
      local peer_url = "https://127.0.0.1:" .. p[1]
      local client_url = "http://127.0.0.1:" .. p[2]
      local dir = tmp .. "/" .. name
      os.execute("mkdir -p " .. q(dir))
      local logf = dir .. "/etcd.log"
      local cmd = ("etcd --name %s --data-dir %s --listen-peer-urls %s --initial-advertise-peer-urls %s "
        .. "--initial-cluster %s=%s --listen-client-urls %s --advertise-client-urls %s %s")
        :format(name, q(dir .. "/data"), peer_url, peer_url, name, peer_url, client_url, client_url, peer_flags)
      return helper.bg(cmd, logf), p[1], logf
    end

    -- curl the peer /version; returns (http code or nil, body, curl exit status)
    local function curl(port, args)
      local out, status = run(("timeout 10 curl --http1.1 -sS --max-time 5 -w '\\n%%{http_code}' %s "
        .. "https://127.0.0.1:%d/version 2>&1"):format(args, port))
      local body, code = out:match("^(.*)\n(%d%d%d)$")
      code = tonumber(code)
      if code == 0 then code = nil end   -- curl prints 000 when there was no response
      return code, body or out, status
    end

    local function wait_ready(pid, port, args, logf)
      for _ = 1, 150 do
        local code = curl(port, args)
        if code == 200 then return true end
        if not pid_alive(pid) then
          error("etcd exited:\n" .. sh("tail -20 " .. q(logf)))
        end
        sleep(0.1)
      end
      error("etcd did not answer on its peer port:\n" .. sh("tail -20 " .. q(logf)))
    end

    local function need_tools()
      if not have("etcd") then
        pending("etcd (etcd-server package) not installed")
        return false
      end
      if not have("curl") then
        pending("curl not installed")
        return false
      end
      return true
    end

    it("uses a CA-issued member pair with client-cert auth; curl with the CA reaches the peer port", function()
      if not need_tools() then return end
      local pid, port, logf = start_etcd("m1", ("--peer-cert-file %s --peer-key-file %s --peer-trusted-ca-file %s "
        .. "--peer-client-cert-auth"):format(q(m), q(m_key), q(ca)))
      finally(function() stop(pid) end)
      local client = ("--cacert %s --cert %s --key %s"):format(q(ca), q(m), q(m_key))
      wait_ready(pid, port, client, logf)
      local code, body = curl(port, client)
      assert.equal(200, code)
      assert.matches('"etcdserver":"3%.4%.23"', body)
      -- no client certificate: etcd rejects the handshake and logs why
      code, body = curl(port, "--cacert " .. q(ca))
      assert.is_nil(code)
      assert.matches("alert", body)
      assert.matches("rejected connection", sh("cat " .. q(logf)))
      -- another CA does not trust this server
      local other = cert.ca { dir = tmp .. "/other-ca" }
      code, body = curl(port, "--cacert " .. q(other))
      assert.is_nil(code)
      assert.matches("certificate", body)
      stop(pid)
      assert.is_false(pid_alive(pid))
    end)

    it("uses etcd's own kind of self-signed pair (P-521, SEC1 key) as peer cert", function()
      if not need_tools() then return end
      local pid, port, logf = start_etcd("s1", ("--peer-cert-file %s --peer-key-file %s"):format(q(ss), q(ss_key)))
      finally(function() stop(pid) end)
      wait_ready(pid, port, "--cacert " .. q(ss), logf)
      local code, body = curl(port, "--cacert " .. q(ss))
      assert.equal(200, code)
      assert.matches('"etcdserver":"3%.4%.23"', body)
      stop(pid)
      assert.is_false(pid_alive(pid))
    end)
  end)
end)
