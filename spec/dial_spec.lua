local core = require "peerlisten.core"
local helper = require "helper"
local socket = require "socket"

local function assert_fail(code, pattern, ok, msg, c)
  assert.is_nil(ok)
  assert.are.equal(code, c, msg)
  assert.matches(pattern, msg)
end

-- a TCP server that never accepts, its queue full: further SYNs are dropped,
-- so a connect to it times out (no route to a blackhole is needed)
local function full_backlog()
  local srv = assert(socket.bind("127.0.0.1", 0, 1))
  local _, port = srv:getsockname()
  local fillers = {}
  for i = 1, 6 do
    local s = socket.tcp()
    s:settimeout(0)
    s:connect("127.0.0.1", port)
    fillers[i] = s
  end
  socket.sleep(0.1)
  return tonumber(port), function()
    for _, s in ipairs(fillers) do s:close() end
    srv:close()
  end
end

describe("core.dial", function()
  local fds
  setup(function()
    helper.warm()
    fds = helper.fd_count()
  end)
  teardown(function() helper.assert_fds(fds) end)

  describe("plain TCP", function()
    it("connects to a listener and carries data both ways", function()
      local l = assert(core.listen{ scheme = "http", host = "127.0.0.1", port = 0 })
      local _, port = l:addr()
      local c = assert(core.dial{ scheme = "http", host = "127.0.0.1", port = port })
      local s = assert(l:accept(5))
      assert.is_true(c:write("ping"))
      assert.are.equal("ping", s:read(100, 5))
      assert.is_true(s:write("pong"))
      assert.are.equal("pong", c:read(100, 5))
      local ip, cport = c:peer()
      assert.are.same({ "127.0.0.1", port }, { ip, cport })
      assert.is_nil(c:tls_info())
      assert.matches("^peerlisten.Conn %(tcp 127.0.0.1:%d+%)$", tostring(c))
      s:close()
      assert.are.same({ nil, "EOF", "EOF" }, { c:read(100, 5) })
      c:close(); l:close()
    end)

    it("resolves a host name", function()
      local l = assert(core.listen{ scheme = "http", host = "127.0.0.1", port = 0 })
      local _, port = l:addr()
      local c = assert(core.dial{ scheme = "http", host = "localhost", port = port, source = "127.0.0.1" })
      local s = assert(l:accept(5))
      assert.is_true(c:write("x"))
      assert.are.equal("x", s:read(10, 5))
      s:close(); c:close(); l:close()
    end)

    it("binds the source address first (the server sees it)", function()
      local l = assert(core.listen{ scheme = "http", host = "127.0.0.1", port = 0 })
      local _, port = l:addr()
      local c = assert(core.dial{ scheme = "http", host = "127.0.0.1", port = port, source = "127.0.0.2" })
      local s = assert(l:accept(5))
      assert.are.equal("127.0.0.2", (s:peer()))
      s:close(); c:close(); l:close()
    end)

    it("yields inside a spawned coroutine while others run", function()
      local l = assert(core.listen{ scheme = "http", host = "127.0.0.1", port = 0 })
      local _, port = l:addr()
      local got, ticks = nil, 0
      core.spawn(function()
        local c = assert(core.dial{ scheme = "http", host = "127.0.0.1", port = port })
        assert(c:write("from a coroutine"))
        got = c
      end)
      core.spawn(function() ticks = ticks + 1 end)
      assert.are.equal(1, ticks)
      local s = assert(l:accept(5))
      assert.are.equal("from a coroutine", s:read(100, 5))
      assert.is_true(helper.wait_until(function() return got ~= nil end))
      got:close(); s:close(); l:close()
    end)
  end)

  describe("unix sockets", function()
    local dir
    setup(function() dir = helper.tmpdir() end)
    teardown(function() helper.rmdir(dir) end)

    it("round-trips through a unix listener", function()
      local path = dir .. "/dial.sock"
      local l = assert(core.listen{ scheme = "unix", path = path })
      local c = assert(core.dial{ scheme = "unix", path = path })
      local s = assert(l:accept(5))
      assert.is_true(c:write("over unix"))
      assert.are.equal("over unix", s:read(100, 5))
      assert.is_true(s:write("back"))
      assert.are.equal("back", c:read(100, 5))
      assert.are.equal("@", c:peer())
      s:close(); c:close(); l:close()
    end)

    it("fails with ENOENT for a missing socket", function()
      assert_fail("ENOENT", "^dial unix " .. dir:gsub("%p", "%%%0") .. "/none%.sock: connect: no such file or directory$",
        core.dial{ scheme = "unix", path = dir .. "/none.sock" })
    end)
  end)

  describe("failures", function()
    it("connection refused, in Go's words", function()
      local port = helper.free_port()
      assert_fail("ECONNREFUSED", ("^dial tcp 127%%.0%%.0%%.1:%d: connect: connection refused$"):format(port),
        core.dial{ scheme = "http", host = "127.0.0.1", port = port })
    end)

    it("times out against a server whose queue is full", function()
      local port, cleanup = full_backlog()
      local t0 = socket.gettime()
      local ok, msg, code = core.dial{ scheme = "http", host = "127.0.0.1", port = port, timeout = 0.5 }
      local dt = socket.gettime() - t0
      cleanup()
      assert_fail("ETIMEDOUT", ("^dial tcp 127%%.0%%.0%%.1:%d: i/o timeout$"):format(port), ok, msg, code)
      assert.is_true(dt >= 0.4 and dt < 5, "took " .. dt)
    end)

    it("times out inside a coroutine too, and the pending connect leaves no fd", function()
      local port, cleanup = full_backlog()
      local res
      core.spawn(function() res = { core.dial{ scheme = "http", host = "127.0.0.1", port = port, timeout = 0.3 } } end)
      assert.is_true(helper.wait_until(function() return res ~= nil end, 10))
      cleanup()
      assert.are.equal("ETIMEDOUT", res[3])
    end)

    it("an unknown host is ENOTFOUND", function()
      assert_fail("ENOTFOUND", "^dial tcp: lookup nonexistent%.invalid: no such host$",
        core.dial{ scheme = "http", host = "nonexistent.invalid", port = 2380 })
    end)

    it("a source address that is not ours fails at bind", function()
      local port = helper.free_port()
      assert_fail("EADDRNOTAVAIL", "^dial tcp 192%.0%.2%.77:0%->127%.0%.0%.1:%d+: bind: ",
        core.dial{ scheme = "http", host = "127.0.0.1", port = port, source = "192.0.2.77" })
    end)

    it("bad values are fail triples, wrong types raise, before anything is opened", function()
      assert_fail("EINVAL", "invalid port", core.dial{ scheme = "http", host = "127.0.0.1", port = 0 })
      assert_fail("EINVAL", "invalid port", core.dial{ scheme = "http", host = "127.0.0.1", port = 70000 })
      assert_fail("EINVAL", "missing host", core.dial{ scheme = "http", port = 2380 })
      assert_fail("EINVAL", "not an IP address", core.dial{ scheme = "http", host = "127.0.0.1", port = 1, source = "nope" })
      assert_fail("EINVAL", "bad timeout", core.dial{ scheme = "http", host = "127.0.0.1", port = 1, timeout = -1 })
      assert_fail("ENAMETOOLONG", "too long", core.dial{ scheme = "unix", path = "/tmp/" .. ("x"):rep(200) })
      assert_fail("ETLSCONFIG", "TLS policy is required", core.dial{ scheme = "https", host = "127.0.0.1", port = 1 })
      assert.has_error(function() core.dial{ scheme = "ftp", host = "x", port = 1 } end)
      assert.has_error(function() core.dial{ scheme = "http", host = 1, port = 1 } end)
      assert.has_error(function() core.dial{ scheme = "https", host = "x", port = 1, tls = {} } end)
      assert.has_error(function() core.dial("http://x") end)
    end)

    it("raises inside a loop callback before connecting", function()
      local port = helper.free_port()
      local l = assert(core.listen{ scheme = "http", host = "127.0.0.1", port = port })
      local err
      local sig = core.on_signal("SIGUSR2", function()
        local ok, e = pcall(core.dial, { scheme = "http", host = "127.0.0.1", port = port })
        err = not ok and e
      end)
      os.execute("kill -USR2 " .. helper.pid())
      helper.wait_until(function() return err ~= nil end, 5)
      sig:close()
      assert.matches("blocking peerlisten call inside a loop callback", err)
      assert.are.same({ nil, "timeout", "ETIMEDOUT" }, { l:accept(0.2) })   -- nothing connected
      l:close()
    end)
  end)

  describe("TLS", function()
    local dir, cert, key, other
    setup(function()
      dir = helper.tmpdir()
      cert, key = helper.selfsigned(dir)
      other = helper.selfsigned(dir, "other")
    end)
    teardown(function() helper.rmdir(dir) end)

    local dial = core.dial

    -- an https listener whose connections a coroutine accepts into got[]
    local function server(policy_opts)
      local pol = assert(core.tls_policy(policy_opts))
      local l = assert(core.listen{ scheme = "https", host = "127.0.0.1", port = 0, tls = pol })
      local got = {}
      core.spawn(function()
        while true do
          local s = l:accept()
          if not s then return end
          got[#got + 1] = s
        end
      end)
      return l, got
    end

    it("dials a peerlisten https listener: data both ways, tls_info as accepted", function()
      local l, got = server{ cert_file = cert, key_file = key }
      local _, port = l:addr()
      local c = assert(dial{ scheme = "https", host = "127.0.0.1", port = port,
        tls = assert(core.tls_policy{ trusted_ca_file = cert }) })
      assert.is_true(helper.wait_until(function() return got[1] ~= nil end))
      assert.is_true(c:write("over tls"))
      assert.are.equal("over tls", got[1]:read(100, 5))
      assert.is_true(got[1]:write("back"))
      assert.are.equal("back", c:read(100, 5))
      local info = c:tls_info()
      assert.are.equal("TLS1.3", info.version)
      assert.matches("CN=localhost", info.peer_cert.subject)
      assert.matches("^peerlisten.Conn %(tls 127.0.0.1:%d+%)$", tostring(c))
      c:close(); got[1]:close(); l:close()
    end)

    it("names our side's verification failure: unknown authority, wrong name", function()
      local l = server{ cert_file = cert, key_file = key }
      local _, port = l:addr()
      local ok, msg, code = dial{ scheme = "https", host = "127.0.0.1", port = port,
        tls = assert(core.tls_policy{ trusted_ca_file = other }) }
      assert_fail("ESERVERCERT", "certificate signed by unknown authority", ok, msg, code)
      assert_fail("ESERVERCERT", "certificate is valid for localhost, not example%.com",
        dial{ scheme = "https", host = "127.0.0.1", port = port, server_name = "example.com",
          tls = assert(core.tls_policy{ trusted_ca_file = cert }) })
      l:close()
    end)

    it("a server that wants a client certificate refuses us with its alert", function()
      local l, got = server{ cert_file = cert, key_file = key, trusted_ca_file = cert, client_cert_auth = true }
      local _, port = l:addr()
      -- TLS 1.3: the handshake ends before the server checks; its alert is what we read
      local c = dial{ scheme = "https", host = "127.0.0.1", port = port,
        tls = assert(core.tls_policy{ trusted_ca_file = cert }) }
      if c then
        local ok, msg, code = c:read(100, 5)
        assert_fail("EPEERREJECTED", "^read: remote error: tls: certificate required$", ok, msg, code)
        c:close()
      end
      local m = assert(dial{ scheme = "https", host = "127.0.0.1", port = port,
        tls = assert(core.tls_policy{ trusted_ca_file = cert, cert_file = cert, key_file = key }) })
      assert.is_true(helper.wait_until(function() return got[1] ~= nil end))
      assert.is_true(m:write("mutual"))
      assert.are.equal("mutual", got[1]:read(100, 5))
      m:close(); got[1]:close(); l:close()
    end)

    it("a plain peer never answers the handshake: ETIMEDOUT within the dial's deadline", function()
      local l = assert(core.listen{ scheme = "http", host = "127.0.0.1", port = 0 })
      local _, port = l:addr()
      assert_fail("ETIMEDOUT", "^net/http: TLS handshake timeout$", core.dial{ scheme = "https",
        host = "127.0.0.1", port = port, timeout = 0.3, tls = assert(core.tls_policy{ trusted_ca_file = cert }) })
      l:close()
    end)

    it("#interop talks to openssl s_server", function()
      if not helper.have("openssl") then pending("openssl not installed") return end
      local port = helper.free_port()
      local pid = helper.bg(("sleep 30 | openssl s_server -rev -accept 127.0.0.1:%d -cert %s -key %s")
        :format(port, cert, key), dir .. "/s_server.out")
      assert.is_true(helper.wait_until(function()
        local t = socket.tcp()
        local up = t:connect("127.0.0.1", port)
        t:close()
        return up ~= nil
      end, 10), "s_server did not start")
      local c = assert(dial{ scheme = "https", host = "127.0.0.1", port = port,
        tls = assert(core.tls_policy{ trusted_ca_file = cert }) })
      assert.is_true(c:write("hello\n"))
      local buf = ""
      while not buf:find("\n") do buf = buf .. assert(c:read(100, 5)) end
      assert.are.equal("olleh\n", buf)
      c:close()
      helper.stop(pid)
    end)
  end)

  describe("lifecycle", function()
    it("close twice, methods raise after close, <close> closes, GC releases", function()
      local l = assert(core.listen{ scheme = "http", host = "127.0.0.1", port = 0 })
      local _, port = l:addr()
      local c = assert(core.dial{ scheme = "http", host = "127.0.0.1", port = port })
      assert.is_true(c:close())
      assert.is_true(c:close())
      assert.has_error(function() c:write("x") end, "attempt to use a closed connection")
      do
        local c2 <close> = assert(core.dial{ scheme = "http", host = "127.0.0.1", port = port })
        assert.truthy(c2)
      end
      do local c3 = assert(core.dial{ scheme = "http", host = "127.0.0.1", port = port }); assert.truthy(c3) end
      collectgarbage(); collectgarbage()
      for _ = 1, 3 do
        local s = l:accept(2)
        if s then assert.are.same({ nil, "EOF", "EOF" }, { s:read(10, 5) }); s:close() end
      end
      l:close()
    end)

    it("a coroutine abandoned in a pending dial is cleaned up when its state closes", function()
      local port, cleanup = full_backlog()
      local script = "package.cpath = './?.so;' .. package.cpath; " ..
        "local core = require 'peerlisten.core'; " ..
        ("core.spawn(function() core.dial{ scheme = 'http', host = '127.0.0.1', port = %d, timeout = 0 } end); "):format(port) ..
        "core.step(0.05); io.write('closing')"
      local out = helper.sh("env -u LD_PRELOAD timeout 20 lua5.4 -e \"" .. script .. "\" 2>&1; echo \" rc=$?\"")
      cleanup()
      assert.are.equal("closing rc=0\n", out)
    end)
  end)
end)
