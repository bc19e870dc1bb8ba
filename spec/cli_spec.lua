local peerlisten = require "peerlisten"
local cli = require "peerlisten.cli"
local serve = require "peerlisten.serve"
local helper = require "helper"
local cjson = require "cjson"

local function buffer()
  local b = { parts = {} }
  function b:write(...)
    for i = 1, select("#", ...) do self.parts[#self.parts + 1] = tostring((select(i, ...))) end
    return self
  end
  function b:text() return table.concat(self.parts) end
  return b
end

local function run(args, env)
  local out, err = buffer(), buffer()
  local rc = cli.main(args, { stdout = out, stderr = err, env = env or {} })
  return rc, out:text(), err:text()
end

local free_port = helper.free_port

local function read(path)
  local fh = io.open(path)
  if not fh then return nil end
  local s = fh:read("a")
  fh:close()
  return s
end

-- curl without the sanitizer preload of `make sanitize` (curl hangs under it)
local CURL = "env -u LD_PRELOAD curl -sS --max-time 5 "

local function sleep(s) peerlisten.sleep(s) end

-- Polls fn every 20 ms until it returns a value or `seconds` passed.
local function poll(seconds, fn)
  local deadline = os.time() + seconds
  repeat
    local v = fn()
    if v then return v end
    sleep(0.02)
  until os.time() > deadline
  return nil
end

describe("peerlisten.cli", function()
  local dir
  before_each(function() dir = helper.tmpdir() end)
  after_each(function() helper.rmdir(dir) end)

  describe("usage", function()
    it("prints help on stdout with exit 0, everywhere", function()
      for _, args in ipairs { { "--help" }, { "help" }, { "serve", "--help" }, { "check", "-h" },
        { "cert", "--help" }, { "inspect", "--help" }, { "help", "check" } } do
        local rc, out, err = run(args)
        assert.equal(0, rc, table.concat(args, " "))
        assert.matches("Usage: peerlisten", out)
        assert.equal("", err)
      end
    end)

    it("exits 2 with a message on stderr for usage errors", function()
      for _, args in ipairs { {}, { "frobnicate" }, { "serve", "--bogus" }, { "check", "--name" },
        { "inspect" }, { "cert", "--nope" } } do
        local rc, out, err = run(args)
        assert.equal(2, rc, table.concat(args, " "))
        assert.equal("", out)
        assert.not_equal("", err)
      end
    end)

    it("prints the version", function()
      local rc, out = run { "--version" }
      assert.equal(0, rc)
      assert.equal("peerlisten scm-1\n", out)
    end)
  end)

  describe("check", function()
    it("passes a good configuration, in text and JSON", function()
      local url = "http://127.0.0.1:" .. free_port()
      local rc, out, err = run { "check", "--listen-peer-urls", url, "--data-dir", dir }
      assert.equal(0, rc, err)
      assert.matches("ok: " .. url:gsub("%p", "%%%0") .. " can be bound", out)
      assert.matches("PASS: etcd 3.6.14 would start its peer listeners with this configuration", out, 1, true)
      assert.equal("", err)
      rc, out = run { "check", "--json", "--listen-peer-urls", url, "--data-dir", dir }
      assert.equal(0, rc)
      local j = cjson.decode(out)
      assert.is_true(j.ok)
      assert.equal(url, j.listeners[1].url)
      assert.same({}, j.warnings)
    end)

    it("fails a bad configuration with the reason, in text and JSON", function()
      local rc, out, err = run { "check", "--listen-peer-urls", "http://example.com:2380" }
      assert.equal(1, rc)
      assert.matches("FAIL: etcd 3.6.14 would not start: expected IP in URL for binding (http://example.com:2380)", out, 1, true)
      assert.matches("expected IP in URL for binding", err, 1, true)
      rc, out = run { "check", "--json", "--listen-peer-urls", "https://127.0.0.1:" .. free_port() }
      assert.equal(1, rc)
      local j = cjson.decode(out)
      assert.is_false(j.ok)
      assert.matches("KeyFile and CertFile are not presented", j.error, 1, true)
      assert.equal("ETLSCONFIG", j.code)
    end)

    it("fails when a port is taken", function()
      local holder = assert(peerlisten.listen { url = "http://127.0.0.1:0" })
      local _, port = holder:addr()
      local rc, out = run { "check", "--listen-peer-urls", "http://127.0.0.1:" .. port }
      holder:close()
      assert.equal(1, rc)
      assert.matches("address already in use", out, 1, true)
    end)

    it("lists warnings and explains every value with --explain", function()
      local path = dir .. "/etcd.yml"
      local fh = assert(io.open(path, "w"))
      fh:write("listen-peer-urls: http://127.0.0.1:", free_port(), "\ndata-dir: ", dir,
        "\npeer-transport-security:\n  cert-fil: x\n")
      fh:close()
      local rc, out = run { "check", "--explain", "--config-file", path }
      assert.equal(0, rc)
      assert.matches('warn: unknown configuration key "peer-transport-security.cert-fil" '
        .. "(did you mean peer-transport-security.cert-file?)", out, 1, true)
      assert.matches("listen%-peer%-urls%s+%[http://127.0.0.1:%d+%]%s+file " .. path:gsub("%p", "%%%0"), out)
      assert.matches("tls%-min%-version%s+TLS1.2%s+default", out)
    end)

    it("passes an auto-TLS configuration and checks the generated certificate", function()
      local built, ok, rc, out = helper.with_policy_spy(function()
        return pcall(run, { "check", "--json", "--listen-peer-urls", "https://127.0.0.1:" .. free_port(),
          "--peer-auto-tls", "--data-dir", dir })
      end)
      assert.is_true(ok, rc)
      assert.equal(0, rc, out)
      assert.equal(1, #built)
      assert.equal("peerlisten.TlsPolicy (closed)", tostring(built[1]))
      local j = cjson.decode(out)
      assert.is_true(j.ok)
      assert.is_true(j.listeners[1].tls)
      assert.equal(1, #j.certificates)
    end)
  end)

  describe("cert and inspect", function()
    it("creates etcd's auto-TLS pair and inspects it", function()
      local rc, out, err = run { "cert", "--dir", dir .. "/p", "--hosts", "127.0.0.1,localhost",
        "--key-type", "ecdsa-p256" }
      assert.equal(0, rc, err)
      local certp = out:match("cert: (%S+)")
      assert.truthy(read(certp))
      rc, out = run { "inspect", certp }
      assert.equal(0, rc)
      assert.matches("O=etcd", out, 1, true)
      rc, out = run { "inspect", "--json", certp }
      assert.equal(0, rc)
      assert.is_table(cjson.decode(out))
      rc, out, err = run { "inspect", dir .. "/missing.pem" }
      assert.equal(1, rc)
      assert.equal("", out)
      assert.matches("missing.pem", err, 1, true)
    end)
  end)

  describe("cert ca and cert issue", function()
    it("create a CA and a member pair that verifies against it", function()
      local rc, out, err = run { "cert", "ca", "--dir", dir .. "/ca", "--name", "cluster-ca", "--validity", "2" }
      assert.equal(0, rc, err)
      local cacert, cakey = out:match("ca%-cert: (%S+)\nca%-key: (%S+)")
      assert.equal(dir .. "/ca/cluster-ca.pem", cacert)
      rc, out, err = run { "cert", "issue", "--ca-cert", cacert, "--ca-key", cakey, "--dir", dir .. "/m",
        "--name", "n1", "--hosts", "127.0.0.1,localhost" }
      assert.equal(0, rc, err)
      local certp = out:match("cert: (%S+)")
      assert.is_true(peerlisten.cert.verify(certp, cacert, "client"))
      assert.is_true(peerlisten.cert.verify(certp, cacert, "server"))
    end)

    it("exit 2 for a --validity that is not a number, writing nothing", function()
      for _, args in ipairs {
        { "cert", "--dir", dir .. "/p", "--validity", "one" },
        { "cert", "ca", "--dir", dir .. "/p", "--validity", "ten" },
        { "cert", "issue", "--ca-cert", "x", "--ca-key", "y", "--dir", dir .. "/p", "--name", "n1",
          "--hosts", "127.0.0.1", "--validity", "1y" },
      } do
        local rc, out, err = run(args)
        assert.equal(2, rc, table.concat(args, " "))
        assert.equal("", out)
        assert.matches("--validity must be a number", err, 1, true)
        assert.is_nil(read(dir .. "/p/cert.pem"))
        assert.equal("", helper.sh("ls -A " .. dir))
      end
    end)
  end)

  describe("serve (in process)", function()
    it("restores the previous C log hook when a listener cannot be created", function()
      local holder = assert(peerlisten.listen { url = "http://127.0.0.1:0" })
      local _, port = holder:addr()
      local core = peerlisten.core
      local sentinel = function() end
      local before = core.set_log_hook(sentinel)
      local rc, out, err = run { "serve", "--listen-peer-urls", "http://127.0.0.1:" .. port, "--data-dir", dir }
      holder:close()
      local after = core.set_log_hook(before)
      assert.equal(1, rc)
      assert.equal("", out)
      assert.matches("address already in use", err, 1, true)
      assert.equal(sentinel, after)
    end)
  end)

  describe("probe responder", function()
    -- a fake connection fed with chunks
    local function fake(chunks)
      local c = { written = {}, closed = false }
      function c.read() return table.remove(chunks, 1) end
      function c:write(s) self.written[#self.written + 1] = s; return true end
      function c:close() self.closed = true end
      return c
    end

    it("answers /health, /version and 404 with keep-alive and pipelining in one write", function()
      local c = fake { "GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /version HTTP/1.1\r\n\r\n"
        .. "GET /nope HTTP/1.1\r\n\r\n" }
      serve.handler()(c)
      assert.equal(1, #c.written)
      local w = c.written[1]
      assert.matches('^HTTP/1.1 200 OK\r\nContent%-Type: application/json\r\nContent%-Length: 17\r\n\r\n'
        .. '{"health":"true"}', w)
      assert.matches('"peerlisten":"scm-1"', w, 1, true)
      assert.matches("HTTP/1.1 404 Not Found", w, 1, true)
      assert.is_true(c.closed)
    end)

    it("handles split requests, bodies, Connection: close, HTTP/1.0 and garbage", function()
      local c = fake { "GET /hea", "lth HTTP/1.1\r\n", "\r\n", "POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nab",
        "cGET /health HTTP/1.1\r\nConnection: close\r\n\r\nGET /health HTTP/1.1\r\n\r\n" }
      serve.handler()(c)
      assert.equal(3, #c.written)
      assert.matches("^HTTP/1.1 200 OK", c.written[1])
      assert.matches("^HTTP/1.1 405", c.written[2])
      assert.matches("Connection: close", c.written[3], 1, true)
      c = fake { "GET /health HTTP/1.0\r\n\r\n", "GET /health HTTP/1.0\r\n\r\n" }
      serve.handler()(c)
      assert.equal(1, #c.written)
      c = fake { "hello\r\n\r\n" }
      serve.handler()(c)
      assert.matches("^HTTP/1.1 400", c.written[1])
    end)

    it("reads header names in any case and ignores look-alike headers", function()
      local c = fake { "GET /health HTTP/1.0\r\nCookie: a\r\nCONNECTION: Keep-Alive\r\nC\r\n\r\n"
        .. "POST /health?x=1 HTTP/1.1\r\ncontent-LENGTH: 2\r\nContent-Type: x\r\n\r\nzz"
        .. "HEAD /version?y HTTP/1.1\r\nconnection: close\r\n\r\nGET /health HTTP/1.1\r\n\r\n" }
      serve.handler()(c)
      assert.equal(1, #c.written)
      local w = c.written[1]
      local _, n = w:gsub("HTTP/1%.1 ", "")
      assert.equal(3, n)
      assert.matches("^HTTP/1.1 200 OK\r\n.-\r\n\r\n{\"health\":\"true\"}HTTP/1.1 405", w)
      assert.matches("HTTP/1.1 200 OK\r\nContent%-Type: application/json\r\nContent%-Length: %d+\r\n"
        .. "Connection: close\r\n\r\n$", w)
      assert.is_true(c.closed)
    end)
  end)

  describe("serve #interop", function()
    local function have(tool) return os.execute("command -v " .. tool .. " >/dev/null 2>&1") == true end

    -- Starts bin/peerlisten serve in the background; returns its pid and files.
    local function start(args)
      local pidf, rcf, logf = dir .. "/pid", dir .. "/rc", dir .. "/log"
      -- the child runs without the sanitizer preload of `make sanitize` (it uses the plain build)
      local cmd = ("cd %s && (env -u LD_PRELOAD lua5.4 bin/peerlisten serve %s 2>%s & echo $! >%s; wait $!; "
        .. "echo $? >%s) "
        .. ">/dev/null 2>&1 &"):format(helper.sh("pwd"):gsub("%s+$", ""), args, logf, pidf, rcf)
      os.execute(cmd)
      local pid = poll(10, function() return tonumber(read(pidf) or "") end)
      return pid, rcf, logf
    end

    local function wait_log(logf, pattern)
      return poll(20, function()
        local s = read(logf) or ""
        if s:find(pattern, 1, true) then return s end
      end) or read(logf)
    end

    local function stop(pid, rcf)
      os.execute("kill -TERM " .. pid .. " 2>/dev/null")
      local rc = poll(20, function()
        local s = read(rcf)
        return s and tonumber(s:match("%d+"))
      end)
      if not rc then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
      return rc
    end

    it("answers /health over http and https and exits 0 on SIGTERM", function()
      if not have("curl") then
        pending("curl is not installed")
        return
      end
      local p1, p2 = free_port(), free_port()
      local pid, rcf, logf = start(("--listen-peer-urls http://127.0.0.1:%d,https://127.0.0.1:%d "
        .. "--peer-auto-tls --data-dir %s/n1.etcd"):format(p1, p2, dir))
      assert.truthy(pid)
      finally(function() os.execute("kill -KILL " .. pid .. " 2>/dev/null") end)
      local logs = wait_log(logf, "serving peer traffic\",\"address\":\"127.0.0.1:" .. p2)
      assert.matches('"msg":"configuring peer listeners"', logs, 1, true)
      local body = helper.sh(CURL .. ("http://127.0.0.1:%d/health"):format(p1))
      assert.equal('{"health":"true"}', body)
      body = helper.sh(CURL .. ("--cacert %s/n1.etcd/fixtures/peer/cert.pem https://127.0.0.1:%d/health")
        :format(dir, p2))
      assert.equal('{"health":"true"}', body)
      local code = helper.sh(CURL .. ("-o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/x"):format(p1))
      assert.equal("404", code)
      local rc = stop(pid, rcf)
      assert.equal(0, rc, read(logf))
      logs = read(logf)
      assert.matches('"msg":"stopped serving peer traffic"', logs, 1, true)
    end)

    it("exits 1 with the reason when a listener cannot be created", function()
      local holder = assert(peerlisten.listen { url = "http://127.0.0.1:0" })
      local _, port = holder:addr()
      local pid, rcf, logf = start("--listen-peer-urls http://127.0.0.1:" .. port)
      finally(function() if pid then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end end)
      local rc = poll(20, function()
        local s = read(rcf)
        return s and s:match("%d+")
      end)
      holder:close()
      assert.equal("1", rc)
      assert.matches("address already in use", read(logf), 1, true)
    end)
  end)
end)
