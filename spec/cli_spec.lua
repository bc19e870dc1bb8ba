local peerlisten = require "peerlisten"
local cli = require "peerlisten.cli"
local helper = require "helper"
local cjson = require "cjson"

local function run(args, env)
  local out, err = helper.buffer(), helper.buffer()
  local rc = cli.main(args, { stdout = out, stderr = err, env = env or {} })
  return rc, out:text(), err:text()
end

local free_port = helper.free_port

local read, exists = helper.readfile, helper.exists

local CURL = "curl -sS --max-time 5 "

-- Steps the loop until fn returns a value (returned) or `seconds` passed.
local function poll(seconds, fn) return helper.wait_until(fn, seconds) or nil end

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
      assert.equal("peerlisten " .. peerlisten._VERSION .. "\n", out)
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
  end)

  describe("cert and inspect", function()
    it("creates etcd's auto-TLS pair and inspects it", function()
      local rc, out, err = run { "cert", "--dir", dir .. "/p", "--hosts", "127.0.0.1,localhost",
        "--key-type", "ecdsa-p256" }
      assert.equal(0, rc, err)
      local certp = out:match("cert: (%S+)")
      assert.is_true(exists(certp))
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
        assert.is_false(exists(dir .. "/p/cert.pem"))
        assert.equal("", helper.sh("ls -A " .. dir))
      end
    end)
  end)

  describe("serve (in process)", function()
    it("restores the previous C log hook when a listener cannot be created", function()
      local holder = assert(peerlisten.listen { url = "http://127.0.0.1:0" })
      local _, port = holder:addr()
      local sentinel = function() end
      local before = peerlisten.set_log_hook(sentinel)
      local rc, out, err = run { "serve", "--listen-peer-urls", "http://127.0.0.1:" .. port, "--data-dir", dir }
      holder:close()
      local after = peerlisten.set_log_hook(before)
      assert.equal(1, rc)
      assert.equal("", out)
      assert.matches("address already in use", err, 1, true)
      assert.equal(sentinel, after)
    end)
  end)

  describe("log format", function()
    local function serve_busy(extra, tty)
      local holder = assert(peerlisten.listen { url = "http://127.0.0.1:0" })
      local _, port = holder:addr()
      local args = { "serve", "--listen-peer-urls", "http://127.0.0.1:" .. port, "--data-dir", dir }
      for _, a in ipairs(extra) do args[#args + 1] = a end
      local out, err = helper.buffer(), helper.buffer()
      local rc = cli.main(args, { stdout = out, stderr = err, env = {}, tty = tty })
      holder:close()
      return rc, err:text()
    end

    it("is console at a terminal, JSON otherwise, and --log-format always wins", function()
      local rc, err = serve_busy({}, true)
      assert.equal(1, rc)
      assert.matches("\tINFO\tpeerlisten/peers%.lua:%d+\tconfiguring peer listeners\t", err)
      rc, err = serve_busy({}, false)
      assert.equal(1, rc)
      assert.matches('{"level":"info","ts":"[^"]+","caller":"peerlisten/peers%.lua:%d+","msg":"configuring peer listeners"', err)
      rc, err = serve_busy({ "--log-format", "json" }, true)
      assert.equal(1, rc)
      assert.matches('{"level":"info",', err, 1, true)
      assert.is_nil(err:find("\tINFO\t"))
      rc, err = serve_busy({ "--log-format=console" }, false)
      assert.equal(1, rc)
      assert.matches("\tINFO\t", err)
    end)

    it("asks the real terminal: console under a pty, JSON into a pipe", function()
      if not helper.have("script") then pending("script (util-linux) is not installed") return end
      local cmd = ("lua5.4 bin/peerlisten cert --dir %s/pki --hosts 127.0.0.1"):format(dir)
      local tty = helper.sh(("script -qec %s /dev/null 2>&1"):format(helper.q(cmd)))
      assert.matches("\tWARN\tpeerlisten/cert%.lua:%d+\tautomatically generate certificates", tty)
      helper.rmdir(dir .. "/pki")
      local pipe = helper.sh(cmd .. " 2>&1 | cat")
      assert.matches('{"level":"info",', pipe, 1, true)
    end)
  end)

  describe("serve #interop", function()
    -- Starts bin/peerlisten serve in the background; returns its pid and files.
    local function start(args)
      local rcf, logf = dir .. "/rc", dir .. "/log"
      return helper.bg_status("lua5.4 bin/peerlisten serve " .. args, logf, rcf), rcf, logf
    end

    local function wait_log(logf, pattern)
      return poll(20, function()
        local s = read(logf)
        if s:find(pattern, 1, true) then return s end
      end) or read(logf)
    end

    local function stop(pid, rcf)
      os.execute("kill -TERM " .. pid .. " 2>/dev/null")
      local rc = poll(20, function() return tonumber(read(rcf):match("%d+") or "") end)
      if not rc then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
      return rc
    end

    it("answers /health over http and https and exits 0 on SIGTERM", function()
      if not helper.have("curl") then
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
      local rc = poll(20, function() return read(rcf):match("%d+") end)
      holder:close()
      assert.equal("1", rc)
      assert.matches("address already in use", read(logf), 1, true)
    end)
  end)
end)
