local core = require "peerlisten.core"
local helper = require "helper"
local socket = require "socket"

local function listen(opts)
  opts.scheme = opts.scheme or "http"
  if opts.scheme == "http" or opts.scheme == "https" then
    opts.host = opts.host or "127.0.0.1"
    opts.port = opts.port or 0
  end
  return core.listen(opts)
end

local function assert_fail(code, pattern, ok, msg, got_code)
  assert.is_nil(ok)
  assert.is_string(msg)
  assert.are.equal(code, got_code, msg)
  if pattern then assert.matches(pattern, msg) end
end

local function has_ipv6()
  local l = core.listen{ scheme = "http", host = "::1", port = 0 }
  if l then l:close(); return true end
  return false
end

describe("peerlisten.Listener", function()
  local fds, dir
  setup(function()
    helper.warm()
    fds = helper.fd_count()
    dir = helper.tmpdir()
  end)
  teardown(function()
    helper.rmdir(dir)
    helper.assert_fds(fds)
  end)

  describe("core.listen()", function()
    it("binds 127.0.0.1 on port 0 and reports the bound port", function()
      local l = assert(listen{ url = "http://127.0.0.1:0" })
      local host, port = l:addr()
      assert.are.equal("127.0.0.1", host)
      assert.is_true(port > 0)
      assert.are.equal("http", l:scheme())
      assert.are.equal("http://127.0.0.1:0", l:url())
      assert.is_nil(l:tls())
      assert.matches("peerlisten.Listener %(http://127.0.0.1:0%)", tostring(l))
      l:close()
    end)

    it("builds a URL from the bound address when none is given", function()
      local l = assert(listen{})
      local _, port = l:addr()
      assert.are.equal("http://127.0.0.1:" .. port, l:url())
      l:close()
    end)

    it("binds ::1", function()
      if not has_ipv6() then pending("no IPv6 on this host") return end
      local l = assert(listen{ host = "::1" })
      local host, port = l:addr()
      assert.are.equal("::1", host)
      local c = helper.client("::1", port)
      local conn = assert(l:accept(2))
      assert.are.equal("::1", (conn:peer()))
      c:close(); conn:close(); l:close()
    end)

    it("resolves a host name to its first address like Go", function()
      local l = assert(listen{ host = "localhost" })
      local host = l:addr()
      assert.is_truthy(host == "127.0.0.1" or host == "::1")
      l:close()
    end)

    it("binds 0.0.0.0 dual-stack on [::] like Go", function()
      local l = assert(listen{ host = "0.0.0.0" })
      local host, port = l:addr()
      if host == "::" then
        local c4 = helper.client("127.0.0.1", port)
        local conn = assert(l:accept(2))
        assert.are.equal("127.0.0.1", (conn:peer()))
        c4:close(); conn:close()
      else
        assert.are.equal("0.0.0.0", host)
      end
      l:close()
    end)

    describe("bad input", function()
      it("fails on an unknown host name", function()
        assert_fail("ENOTFOUND", "^listen tcp: lookup nonexistent%.invalid: no such host$",
          listen{ host = "nonexistent.invalid" })
      end)

      it("fails on a bad port", function()
        assert_fail("EINVAL", "invalid port", listen{ port = 70000 })
        assert_fail("EINVAL", "invalid port", listen{ port = -1 })
        assert_fail("EINVAL", "address abc: invalid port", listen{ port = "abc" })
      end)

      it("fails on a backlog out of 1..65535 or not an integer", function()
        for _, b in ipairs{ 0, -1, 65536, 1.5, 0 / 0, math.huge } do
          assert_fail("EINVAL", "^bad option 'backlog': .* is not an integer in 1%.%.65535$", listen{ backlog = b })
        end
        local l = assert(listen{ backlog = 1 })
        l:close()
      end)

      it("fails on a negative or NaN read or write timeout", function()
        for _, k in ipairs{ "read_timeout", "write_timeout" } do
          for _, v in ipairs{ -1, -0.001, 0 / 0, -math.huge } do
            assert_fail("EINVAL", "^bad option '" .. k .. "': .* is not a duration >= 0$", listen{ [k] = v })
          end
        end
        local l = assert(listen{ read_timeout = 0, write_timeout = math.huge })
        l:close()
      end)

      it("fails on a host with a NUL byte instead of cutting it", function()
        assert_fail("EINVAL", "host contains a NUL byte", listen{ host = "127.0.0.1\0junk" })
      end)

      it("fails on a port that is not an integer", function()
        assert_fail("EINVAL", "^listen tcp: address 1%.5: invalid port$", listen{ port = 1.5 })
        assert_fail("EINVAL", "^listen tcp: address 65536: invalid port$", listen{ port = "65536" })
        assert_fail("EINVAL", "^listen tcp: address : invalid port$", listen{ port = "" })
      end)

      it("fails like Go on a port in use", function()
        local l = assert(listen{})
        local _, port = l:addr()
        assert_fail("EADDRINUSE", "^listen tcp 127%.0%.0%.1:" .. port .. ": bind: address already in use$",
          listen{ port = port })
        l:close()
      end)

      it("names a wildcard address as written in a bind error, like Go", function()
        local l = assert(listen{ host = "0.0.0.0" })
        local _, port = l:addr()
        assert_fail("EADDRINUSE", "^listen tcp 0%.0%.0%.0:" .. port .. ": bind: address already in use$",
          listen{ host = "0.0.0.0", port = port })
        assert_fail("EADDRINUSE", "^listen tcp :" .. port .. ": bind: address already in use$",
          listen{ host = "", port = port })
        l:close()
      end)

      it("fails on https without a policy before binding anything", function()
        local port = helper.free_port()
        collectgarbage("stop")
        local ok, msg, code = listen{ scheme = "https", port = port }
        local l, err = listen{ port = port }
        collectgarbage("restart")
        assert_fail("ETLSCONFIG", "^cannot listen on TLS for 127%.0%.0%.1:" .. port ..
          ": KeyFile and CertFile are not presented$", ok, msg, code)
        assert(l, err)
        l:close()
      end)

      it("raises on options of the wrong type", function()
        assert.has_error(function() core.listen() end)
        assert.has_error(function() core.listen{ scheme = "ftp" } end)
        assert.has_error(function() listen{ backlog = "x" } end)
        assert.has_error(function() listen{ read_timeout = "5s" } end)
        assert.has_error(function() listen{ port = true } end, "bad option 'port' (number expected, got boolean)")
        assert.has_error(function() listen{ port = {} } end)
        assert.has_error(function() listen{ host = 127 } end)
        assert.has_error(function() listen{ reuse_port = "yes" } end)
        assert.has_error(function() listen{ logger = 42 } end)
        assert.has_error(function() listen{ scheme = "https", tls = {} } end)
      end)

      it("raises on a bad option before binding: the port and the path are free at once", function()
        local port = helper.free_port()
        local path = "/tmp/peerlisten-spec-conn-" .. helper.pid() .. ".sock"
        collectgarbage("stop")   -- the raise must not leave a bound listener for GC to find
        assert.has_error(function() listen{ port = port, url = 123 } end,
          "bad option 'url' (string expected, got number)")
        assert.has_error(function() listen{ scheme = "unix", path = path, url = {} } end)
        local l, err = listen{ port = port }
        collectgarbage("restart")
        assert(l, err)
        l:close()
        assert.are.equal("", helper.sh("test -e " .. path .. " && echo exists"))
      end)
    end)

    describe("reuse_port", function()
      it("lets two listeners share a port", function()
        local a = assert(listen{ reuse_port = true })
        local _, port = a:addr()
        local b = assert(listen{ port = port, reuse_port = true })
        a:close(); b:close()
      end)

      it("is required: reuse_address alone does not share a port", function()
        local a = assert(listen{ reuse_address = true })
        local _, port = a:addr()
        assert_fail("EADDRINUSE", "address already in use", listen{ port = port, reuse_address = true })
        a:close()
      end)
    end)
  end)

  describe("unix sockets", function()
    it("round-trips and removes the socket file on close", function()
      local path = dir .. "/a.sock"
      local l = assert(listen{ scheme = "unix", path = path, url = "unix://" .. path })
      assert.are.equal(path, l:addr())
      assert.are.equal("unix", l:scheme())
      local c = helper.unix_client(path)
      local conn = assert(l:accept(2))
      assert.are.equal("@", conn:peer())
      c:send("ping")
      assert.are.equal("ping", conn:read(4, 2))
      assert(conn:write("pong"))
      assert.are.equal("pong", helper.recv(c, 4))
      c:close(); conn:close()
      l:close()
      assert.is_nil(io.open(path))
    end)

    it("takes relative paths relative to the working directory", function()
      local name = "peerlisten-rel-" .. helper.pid() .. ".sock"
      local l = assert(listen{ scheme = "unix", path = name })
      local f = io.popen("test -S " .. name .. " && echo yes")
      local out = f:read("a"); f:close()
      assert.are.equal("yes\n", out)
      l:close()
      assert.is_nil(io.open(name))
    end)

    it("refuses to delete a regular file at the path", function()
      local path = dir .. "/file.sock"
      local f = assert(io.open(path, "w")); f:write("keep me"); f:close()
      assert_fail("EEXIST", "is not a socket", listen{ scheme = "unix", path = path })
      f = assert(io.open(path)); assert.are.equal("keep me", f:read("a")); f:close()
      os.remove(path)
    end)

    it("removes a stale socket file left by a dead listener", function()
      local path = dir .. "/stale.sock"
      local unix = require "socket.unix"
      local s = unix()
      assert(s:bind(path))
      s:close()   -- the file stays, nobody listens
      local l = assert(listen{ scheme = "unix", path = path })
      l:close()
    end)

    it("does not remove a file swapped in while it checks a stale socket", function()
      if not helper.have("cc") then pending("no C compiler for the LD_PRELOAD shim") return end
      local shim = dir .. "/swapconnect.so"
      assert(os.execute(("cc -shared -fPIC -o '%s' spec/support/swapconnect/swapconnect.c -ldl"):format(shim)))
      local path, victim = dir .. "/swapped.sock", dir .. "/victim"
      local unix = require "socket.unix"
      local s = unix()
      assert(s:bind(path))
      s:close()   -- a stale socket: nobody listens
      local f = assert(io.open(victim, "w")); f:write("precious"); f:close()
      -- the shim renames victim over path right before the liveness connect()
      local script = "package.cpath = './?.so;' .. package.cpath; " ..
        "local core = require 'peerlisten.core'; " ..
        ("local l, m, c = core.listen{ scheme = 'unix', path = '%s' }; "):format(path) ..
        "io.write(tostring(l and 'bound' or c), ' ', tostring(m)); if l then l:close() end"
      local out = helper.sh(("env SWAP_TARGET='%s' SWAP_VICTIM='%s' LD_PRELOAD='%s' timeout 20 lua5.4 -e \"%s\" 2>&1")
        :format(path, victim, shim, script))
      assert.matches("^EEXIST listen unix .*swapped%.sock: bind: file changed while checking it", out)
      f = assert(io.open(path), "the swapped-in file was removed")
      assert.are.equal("precious", f:read("a"))
      f:close()
      os.remove(path); os.remove(shim)
    end)

    it("fails on a socket with a live listener", function()
      local path = dir .. "/live.sock"
      local l = assert(listen{ scheme = "unix", path = path })
      assert_fail("EADDRINUSE", "address already in use", listen{ scheme = "unix", path = path })
      assert.is_truthy(io.open(path) == nil)   -- a socket, not openable, but present:
      assert.are.equal("yes\n", helper.sh("test -S " .. path .. " && echo yes"))
      l:close()
    end)

    it("fails on a path with a NUL byte instead of cutting it", function()
      local path = dir .. "/nul.sock"
      assert_fail("EINVAL", "contains a NUL byte", listen{ scheme = "unix", path = path .. "\0junk" })
      assert.are.equal("", helper.sh("test -e " .. path .. " && echo exists"))
    end)

    it("fails on an empty path, a missing directory and a directory at the path", function()
      assert_fail("EINVAL", "empty socket path", listen{ scheme = "unix", path = "" })
      assert_fail("ENOENT", "^listen unix .*/missing/p%.sock: bind: no such file or directory$",
        listen{ scheme = "unix", path = dir .. "/missing/p.sock" })
      os.execute("mkdir -p " .. dir .. "/adir")
      assert_fail("EEXIST", "is not a socket", listen{ scheme = "unix", path = dir .. "/adir" })
      assert.are.equal("yes\n", helper.sh("test -d " .. dir .. "/adir && echo yes"))
    end)

    it("binds a path of the longest length that fits, fails one byte longer", function()
      local base = dir .. "/"
      local fits = base .. string.rep("y", 107 - #base)
      local l = assert(listen{ scheme = "unix", path = fits })
      assert.are.equal(fits, l:addr())
      l:close()
      assert_fail("ENAMETOOLONG", "longer than 107 bytes", listen{ scheme = "unix", path = fits .. "y" })
    end)

    it("fails on an over-long path instead of truncating it", function()
      local path = dir .. "/" .. string.rep("x", 120) .. ".sock"
      assert_fail("ENAMETOOLONG", "longer than", listen{ scheme = "unix", path = path })
    end)

    it("fails on a directory it may not write", function()
      os.execute("mkdir -p " .. dir .. "/ro && chmod 0500 " .. dir .. "/ro")
      local path = dir .. "/ro/peer.sock"
      if helper.sh("id -u") ~= "0\n" then
        assert_fail("EACCES", "^listen unix .*/ro/peer%.sock: bind: permission denied$",
          listen{ scheme = "unix", path = path })
        return
      end
      -- root ignores modes: bind in a child running as nobody
      if not helper.have("setpriv") then pending("root, and no setpriv to drop privileges") return end
      os.execute("chmod 0755 " .. dir)
      local script = "package.cpath = './?.so;' .. package.cpath; " ..
        "print(require('peerlisten.core').listen{ scheme = 'unix', path = os.getenv('PL_PATH') })"
      local out = helper.sh(("env -u LD_PRELOAD PL_PATH='%s' setpriv --reuid=65534 --regid=65534 " ..
        "--clear-groups lua5.4 -e \"%s\" 2>&1"):format(path, script))
      os.execute("chmod 0700 " .. dir)
      assert.are.equal("nil\tlisten unix " .. path .. ": bind: permission denied\tEACCES\n", out)
    end)

    it("fails on unixs without a policy and removes the socket file", function()
      local path = dir .. "/tls.sock"
      assert_fail("ETLSCONFIG", "^cannot listen on TLS for " .. path:gsub("%p", "%%%0") ..
        ": KeyFile and CertFile are not presented$", listen{ scheme = "unixs", path = path })
      assert.are.equal("", helper.sh("test -e " .. path .. " && echo exists"))
    end)
  end)

  describe(":accept()", function()
    it("returns nil, 'timeout', 'ETIMEDOUT' near its timeout", function()
      local l = assert(listen{})
      local t0 = socket.gettime()
      local conn, msg, code = l:accept(0.2)
      local dt = socket.gettime() - t0
      assert.is_nil(conn)
      assert.are.equal("timeout", msg)
      assert.are.equal("ETIMEDOUT", code)
      assert.is_true(dt >= 0.15 and dt < 1.5, "took " .. dt)
      l:close()
    end)

    it("yields inside spawned coroutines", function()
      local l = assert(listen{})
      local _, port = l:addr()
      local got
      core.spawn(function() got = assert(l:accept(2)) end)
      assert.is_nil(got)
      local c = helper.client("127.0.0.1", port)
      assert.is_true(helper.wait_until(function() return got ~= nil end))
      assert.matches("^peerlisten.Conn", tostring(got))
      c:close(); got:close(); l:close()
    end)

    it("raises in a foreign coroutine during run() and leaves the loop able to end", function()
      local l = assert(listen{})
      local ok, err
      core.spawn(function()
        core.sleep(0.01)
        ok, err = coroutine.wrap(function() return pcall(l.accept, l, 1) end)()
      end)
      helper.wait_until(function() return ok ~= nil end, 5)
      assert.is_false(ok)
      assert.matches("blocking peerlisten call", err)
      -- the listener must not keep the loop alive (run() would never return)
      assert.is_false(core.step(0))
      l:close()
    end)

    it("ends a pending accept with ECLOSED when the listener closes", function()
      local l = assert(listen{})
      local res
      core.spawn(function() res = { l:accept(5) } end)
      l:close()
      assert.is_true(helper.wait_until(function() return res ~= nil end))
      assert.are.same({ nil, "use of closed network connection", "ECLOSED" }, res)
    end)
  end)

  describe(":serve()", function()
    it("echoes 200 concurrent clients, one coroutine each", function()
      local l = assert(listen{ backlog = 1024 })
      local _, port = l:addr()
      local handled, active_max = 0, 0
      l:serve(function(conn)
        active_max = math.max(active_max, l:stats().active)
        local data = assert(conn:read(100, 5))
        assert(conn:write("echo:" .. data))
        handled = handled + 1
      end)
      local clients = {}
      for i = 1, 200 do clients[i] = helper.client("127.0.0.1", port) end
      for i = 1, 200 do assert(clients[i]:send("client" .. i)) end
      for i = 1, 200 do
        local want = "echo:client" .. i
        assert.are.equal(want, helper.recv(clients[i], #want, 10))
      end
      assert.is_true(helper.wait_until(function() return handled == 200 end))
      assert.is_true(active_max > 1)
      assert.is_true(helper.wait_until(function() return l:stats().active == 0 end))
      assert.are.equal(200, l:stats().accepted)
      for i = 1, 200 do clients[i]:close() end
      l:close()
    end)

    it("logs handler errors with a traceback and keeps serving", function()
      local entries = {}
      local l = assert(listen{ logger = function(level, msg, fields)
        entries[#entries + 1] = { level = level, msg = msg, fields = fields }
      end })
      local _, port = l:addr()
      local n = 0
      l:serve(function(conn)
        n = n + 1
        if n == 1 then error("handler exploded") end
        conn:write("ok")
      end)
      local c1 = helper.client("127.0.0.1", port)
      assert.is_true(helper.wait_until(function() return #entries == 1 end))
      assert.are.equal("error", entries[1].level)
      assert.matches("handler exploded", entries[1].fields.error)
      assert.matches("stack traceback", entries[1].fields.error)
      local c2 = helper.client("127.0.0.1", port)
      assert.are.equal("ok", helper.recv(c2, 2))
      c1:close(); c2:close(); l:close()
    end)

    it("reuses a finished handler coroutine for the next connection, also after an error", function()
      local l = assert(listen{ logger = function() end })
      local _, port = l:addr()
      local threads, n = {}, 0
      l:serve(function(conn)
        n = n + 1
        threads[n] = coroutine.running()
        if n == 2 then error("boom") end
        local data = assert(conn:read(100, 5))
        assert(conn:write(data .. n))
      end)
      for i = 1, 3 do
        local c = helper.client("127.0.0.1", port)
        if i ~= 2 then
          assert(c:send("x"))
          assert.are.equal("x" .. i, helper.recv(c, 2))
        end
        assert.is_true(helper.wait_until(function() return l:stats().active == 0 end))
        c:close()
      end
      assert.are.equal(3, n)
      assert.are.equal(threads[1], threads[2])
      assert.are.equal(threads[2], threads[3])
      local weak = setmetatable({ threads[1] }, { __mode = "v" })
      for k in pairs(threads) do threads[k] = nil end   -- keep no strong reference
      l:close()
      collectgarbage(); collectgarbage()
      assert.is_nil(weak[1])   -- close dropped the parked coroutine
    end)

    it("arms TCP keep-alive (30 s) on every accepted connection, first and later ones", function()
      local f = io.open("/proc/net/tcp")
      if not f then return end   -- Linux only
      f:close()
      local l = assert(listen{})
      local _, port = l:addr()
      l:serve(function(conn) conn:read(10, 5) end)
      for _ = 1, 2 do
        local c = helper.client("127.0.0.1", port)
        core.step(0.05)
        local _, cport = c:getsockname()
        local want = (":%04X 0100007F:%04X "):format(port, cport)
        local timer
        for line in io.lines("/proc/net/tcp") do
          if line:find(want, 1, true) then timer = line:match(" %x+:%x+ %x+:%x+ %x+ %x+:%x+ (%x+:%x+)") end
        end
        assert.is_string(timer)
        local kind, when = timer:match("(%x+):(%x+)")
        assert.are.equal("02", kind)   -- the keep-alive timer
        assert.is_true(tonumber(when, 16) > 2000 and tonumber(when, 16) <= 3000)   -- ~30 s (USER_HZ)
        c:close()
      end
      l:close()
    end)

    it("serves connections that queued before serve() was called", function()
      local l = assert(listen{})
      local _, port = l:addr()
      local c = helper.client("127.0.0.1", port)
      core.step(0.01)
      l:serve(function(conn) conn:write("hi") end)
      assert.are.equal("hi", helper.recv(c, 2))
      c:close(); l:close()
    end)
  end)

  describe(":close()", function()
    it("raises on a negative or NaN timeout", function()
      local l = assert(listen{})
      assert.has_error(function() l:close(-1) end)
      assert.has_error(function() l:close(0 / 0) end)
      assert.are.equal("peerlisten.Listener (http://127.0.0.1:" .. select(2, l:addr()) .. ")", tostring(l))
      assert.is_true(l:close())
    end)

    it("is idempotent", function()
      local l = assert(listen{})
      assert.is_true(l:close())
      assert.is_true(l:close())
      assert.are.equal("peerlisten.Listener (closed)", tostring(l))
    end)

    it("makes other methods raise", function()
      local l = assert(listen{})
      l:close()
      assert.has_error(function() l:accept(0) end, "attempt to use a closed listener")
      assert.has_error(function() l:addr() end, "attempt to use a closed listener")
      assert.has_error(function() l:serve(function() end) end, "attempt to use a closed listener")
    end)

    it("is called by <close>", function()
      local port
      do
        local l <close> = assert(listen{})
        port = select(2, l:addr())
      end
      local again = assert(listen{ port = port })
      again:close()
    end)

    it("is done by garbage collection: the port and the socket file are free again", function()
      local path = dir .. "/gc.sock"
      local port
      do
        local l = assert(listen{})
        port = select(2, l:addr())
        assert(listen{ scheme = "unix", path = path })
      end
      collectgarbage(); collectgarbage()
      core.step(0)
      assert.are.equal("", helper.sh("test -e " .. path .. " && echo exists"))
      local again = assert(listen{ port = port })
      again:close()
    end)

    it("closes unaccepted connections when collected; a held connection outlives it", function()
      local c1, c2, conn
      do
        local l = assert(listen{})
        local _, port = l:addr()
        c1 = helper.client("127.0.0.1", port)
        conn = assert(l:accept(2))
        c2 = helper.client("127.0.0.1", port)
        core.step(0.01)   -- c2 waits in libuv, not accepted by Lua
      end
      collectgarbage(); collectgarbage()
      core.step(0)
      -- the queued one was closed with the listener
      assert.are.same({ nil, "closed" }, { helper.recv(c2, 1, 5) })
      -- the one Lua holds still works, then closes normally
      c1:send("ping")
      assert.are.equal("ping", conn:read(4, 2))
      assert.is_true(conn:write("pong"))
      assert.are.equal("pong", helper.recv(c1, 4))
      assert.is_true(conn:close())
      assert.are.equal("peerlisten.Conn (closed)", tostring(conn))
      c1:close(); c2:close()
    end)

    it("resumes a coroutine waiting in close(timeout) when another close() forces it", function()
      local l = assert(listen{})
      local _, port = l:addr()
      local c = helper.client("127.0.0.1", port)
      local conn = assert(l:accept(2))
      local res
      core.spawn(function() res = { l:close(30) } end)
      assert.is_nil(res)
      assert.is_true(l:close())
      assert.is_true(helper.wait_until(function() return res ~= nil end, 5))
      assert.are.same({ true }, res)
      assert.are.same({ nil, "use of closed network connection", "ECLOSED" }, { conn:read(1, 1) })
      c:close()
    end)

    it("lets open connections finish up to the timeout, then closes them", function()
      local l = assert(listen{})
      local _, port = l:addr()
      local c1 = helper.client("127.0.0.1", port)
      local c2 = helper.client("127.0.0.1", port)
      local conn1 = assert(l:accept(2))
      local conn2 = assert(l:accept(2))
      local finished = false
      core.spawn(function()
        core.sleep(0.1)
        conn1:write("bye")
        conn1:close()
        finished = true
      end)
      local t0 = socket.gettime()
      assert.is_true(l:close(0.5))
      local dt = socket.gettime() - t0
      assert.is_true(finished)
      assert.is_true(dt >= 0.4 and dt < 3, "took " .. dt)   -- waited for conn2 until the timeout
      assert.are.equal("bye", helper.recv(c1, 3))
      -- conn2 was closed by force
      assert.are.same({ nil, "use of closed network connection", "ECLOSED" }, { conn2:read(10, 1) })
      assert.is_true(conn2:close())
      c1:close(); c2:close()
    end)

    it("returns at once when every connection finished early", function()
      local l = assert(listen{})
      local _, port = l:addr()
      local c = helper.client("127.0.0.1", port)
      local conn = assert(l:accept(2))
      core.spawn(function() core.sleep(0.05); conn:close() end)
      local t0 = socket.gettime()
      l:close(5)
      assert.is_true(socket.gettime() - t0 < 2)
      c:close()
    end)
  end)

  describe(":stats()", function()
    it("counts accepted and active connections", function()
      local l = assert(listen{})
      local _, port = l:addr()
      local st = l:stats()
      assert.are.equal(0, st.accepted)
      assert.are.equal(0, st.active)
      assert.are.equal(0, st.handshake_failures)
      assert.are.same({}, st.rejected)
      local c = helper.client("127.0.0.1", port)
      local conn = assert(l:accept(2))
      st = l:stats()
      assert.are.equal(1, st.accepted)
      assert.are.equal(1, st.active)
      conn:close()
      assert.are.equal(0, l:stats().active)
      c:close(); l:close()
    end)
  end)
end)

describe("peerlisten.Listener TLS #interop", function()
  local fds, dir, cert, key, policy
  setup(function()
    helper.warm()
    fds = helper.fd_count()
    dir = helper.tmpdir()
    if helper.have("openssl") then cert, key = helper.selfsigned(dir) end
  end)
  teardown(function()
    policy = nil
    helper.rmdir(dir)
    helper.assert_fds(fds)
  end)
  before_each(function()
    if not cert then pending("openssl is not installed") return end
    policy = assert(core.tls_policy{ cert_file = cert, key_file = key, handshake_timeout = 2 })
  end)

  local function capture()
    local entries = {}
    return entries, function(level, msg, fields)
      entries[#entries + 1] = { level = level, msg = msg, fields = fields }
    end
  end

  local function echo_server(l, seen)
    l:serve(function(conn)
      seen.info = conn:tls_info()
      local d = conn:read(100, 5)
      if d then conn:write("echo:" .. d) end
    end)
  end

  local function s_client(args, out)
    return helper.bg("(printf hello; sleep 2) | timeout 10 openssl s_client -quiet " .. args, out)
  end

  it("serves https to openssl s_client and reports tls_info", function()
    if not cert then return end
    local l = assert(listen{ scheme = "https", tls = policy })
    assert.are.equal(policy, l:tls())
    local _, port = l:addr()
    local seen = {}
    echo_server(l, seen)
    local pid, out = s_client("-connect 127.0.0.1:" .. port, dir .. "/s1.out")
    local ok = helper.wait_until(function() return helper.readfile(out):find("echo:hello", 1, true) end, 10)
    helper.kill(pid)
    assert.is_truthy(ok, helper.readfile(out))
    assert.is_table(seen.info)
    assert.matches("^TLS1%.[23]$", seen.info.version)
    assert.is_string(seen.info.cipher)
    assert.are.equal(1, l:stats().accepted)
    l:close()
  end)

  it("serves unixs (real TLS over a unix socket)", function()
    if not cert then return end
    local path = dir .. "/tls.sock"
    local l = assert(listen{ scheme = "unixs", path = path, tls = policy })
    local seen = {}
    echo_server(l, seen)
    local pid, out = s_client("-unix " .. path, dir .. "/s2.out")
    local ok = helper.wait_until(function() return helper.readfile(out):find("echo:hello", 1, true) end, 10)
    helper.kill(pid)
    assert.is_truthy(ok, helper.readfile(out))
    assert.is_table(seen.info)
    l:close()
    assert.are.equal("", helper.sh("test -e " .. path .. " && echo exists"))
  end)

  it("closes plain HTTP to a TLS port without a byte, logs and counts it", function()
    if not cert then return end
    local entries, hook = capture()
    local l = assert(listen{ scheme = "https", tls = policy, logger = hook })
    local _, port = l:addr()
    l:serve(function() error("must not be called") end)
    local c = helper.client("127.0.0.1", port)
    c:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.same({ nil, "closed" }, { helper.recv(c, 1, 5) })
    assert.is_true(helper.wait_until(function() return #entries == 1 end))
    local e = entries[1]
    assert.are.equal("warn", e.level)
    assert.are.equal("rejected connection", e.msg)
    assert.are.equal("tls: first record does not look like a TLS handshake", e.fields.error)
    assert.are.equal("not_tls", e.fields.reason)
    assert.matches("^127%.0%.0%.1:%d+$", e.fields["remote-addr"])
    assert.are.equal("", e.fields["server-name"])
    assert.are.same({}, e.fields["ip-addresses"])
    assert.are.same({}, e.fields["dns-names"])
    local st = l:stats()
    assert.are.equal(1, st.handshake_failures)
    assert.are.equal(1, st.rejected.not_tls)
    assert.are.equal(0, st.accepted)
    c:close(); l:close()
  end)

  it("drops a client trickling bytes at the whole-handshake deadline", function()
    if not cert then return end
    local entries, hook = capture()
    local p = assert(core.tls_policy{ cert_file = cert, key_file = key, handshake_timeout = 0.5 })
    local l = assert(listen{ scheme = "https", tls = p, logger = hook, read_timeout = 5 })
    local _, port = l:addr()
    l:serve(function() error("must not be called") end)
    local c = helper.client("127.0.0.1", port)
    -- a TLS record header, then one byte every 0.1 s: never a full ClientHello
    local hello = "\22\3\1\1\0" .. string.rep("\1", 64)
    local t0, i, closed = socket.gettime(), 1, false
    helper.wait_until(function()
      if socket.gettime() - t0 > (i - 1) * 0.1 and i <= #hello then
        local _, err = c:send(hello:sub(i, i))
        if err == "closed" then closed = true end
        i = i + 1
      end
      local _, err = c:receive(1)
      if err == "closed" then closed = true end
      return closed
    end, 5)
    local dt = socket.gettime() - t0
    assert.is_true(closed)
    assert.is_true(dt >= 0.4 and dt < 2.5, "took " .. dt)
    assert.is_true(helper.wait_until(function() return #entries == 1 end))
    assert.are.equal("timeout", entries[1].fields.reason)
    assert.matches("^read tcp 127%.0%.0%.1:%d+%->127%.0%.0%.1:%d+: i/o timeout$", entries[1].fields.error)
    assert.are.equal(1, l:stats().rejected.timeout)
    c:close(); l:close()
  end)

  it("routes rejections to the log hook when the listener has no logger", function()
    if not cert then return end
    local entries, hook = capture()
    local old = core.set_log_hook(hook)
    local l = assert(listen{ scheme = "https", tls = policy })
    local _, port = l:addr()
    l:serve(function() end)
    local c = helper.client("127.0.0.1", port)
    c:send("hello there, not TLS\r\n")
    local ok = helper.wait_until(function() return #entries == 1 end)
    core.set_log_hook(old)
    assert.is_true(ok)
    assert.are.equal("rejected connection", entries[1].msg)
    c:close(); l:close()
  end)

  it("closes pending handshakes when the listener closes", function()
    if not cert then return end
    local l = assert(listen{ scheme = "https", tls = policy })
    local _, port = l:addr()
    l:serve(function() end)
    local c = helper.client("127.0.0.1", port)
    assert.is_true(helper.wait_until(function() return l:stats().handshaking == 1 end))
    l:close()
    assert.are.same({ nil, "closed" }, { helper.recv(c, 1, 5) })
    c:close()
  end)
end)
