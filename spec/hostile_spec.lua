-- spec/hostile_spec.lua #slow: one https listener (mTLS, 2 s handshake timeout) in a child process
-- under 1,000 connections that never send a byte and 1,000 that stop half-way through a
-- ClientHello (another child, with its own fd limit), while a legitimate mTLS peer (luasec, in
-- this process) handshakes every 100 ms. The legitimate peer never fails, every hostile connection
-- is dropped at the handshake deadline, and the server's fds and stats() return to their baseline.
local helper = require "helper"
local q, writefile = helper.q, helper.writefile
local cert = require "peerlisten.cert"
local log = require "peerlisten.log"
local socket = require "socket"
local has_ssl, ssl = pcall(require, "ssl")

local IDLE, HALF = 1000, 1000
local TIMEOUT = 2


-- The server: reports "accepted active handshaking handshake_failures fds" to <dir>/stats
-- every 100 ms (written whole, then renamed), answers each accepted peer with "ok".
local SERVER = [[
local dir = arg[1]
package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path
package.cpath = "./?.so;" .. package.cpath
local peerlisten = require "peerlisten"
local core = require "peerlisten.core"
local pol = assert(peerlisten.tls.policy { cert_file = dir .. "/server.pem", key_file = dir .. "/server-key.pem",
  trusted_ca_file = dir .. "/ca.pem", client_cert_auth = true, handshake_timeout = %d })
local l = assert(peerlisten.listen { url = "https://127.0.0.1:0", tls = pol, logger = require("peerlisten.log").null() })
local function fds()
  local n = 0
  for _ in io.popen("ls /proc/self/fd"):lines() do n = n + 1 end
  return n
end
local _, port = l:addr()
local f = io.open(dir .. "/port.tmp", "w"); f:write(port); f:close()
os.rename(dir .. "/port.tmp", dir .. "/port")
core.spawn(function()
  while true do
    local s = l:stats()
    local g = io.open(dir .. "/stats.tmp", "w")
    g:write(("%%d %%d %%d %%d %%d\n"):format(s.accepted, s.active, s.handshaking or -1, s.handshake_failures, fds()))
    g:close()
    os.rename(dir .. "/stats.tmp", dir .. "/stats")
    core.sleep(0.1)
  end
end)
l:serve(function(c) c:write("ok\n"); c:close() end)
peerlisten.run()
]]

-- The attacker: IDLE connections that send nothing, HALF that send the first half of a
-- ClientHello; then waits for the server to drop each one (any byte, EOF or reset ends it). Prints
-- "connected dropped never min median max" (drop times in seconds from connect).
local ATTACKER = [[
local socket = require "socket"
local port, hello, idle, half = tonumber(arg[1]), arg[2], tonumber(arg[3]), tonumber(arg[4])
local f = io.open(hello, "rb"); local ch = f:read("a"); f:close()
ch = ch:sub(1, #ch // 2)
local conns, t0 = {}, {}
for i = 1, idle + half do
  local c = socket.tcp()
  c:settimeout(5)
  assert(c:connect("127.0.0.1", port))
  if i > idle then assert(c:send(ch)) end
  c:settimeout(0)
  conns[#conns + 1] = c
  t0[c] = socket.gettime()
end
local open, drops = {}, {}
for _, c in ipairs(conns) do open[c] = true end
local left, deadline = #conns, socket.gettime() + 20
-- (select() is limited to fd 1023: poll each socket with a non-blocking receive instead)
while left > 0 and socket.gettime() < deadline do
  for c in pairs(open) do
    local _, err = c:receive(1)
    if err ~= "timeout" then
      drops[#drops + 1] = socket.gettime() - t0[c]
      open[c] = nil
      c:close()
      left = left - 1
    end
  end
  socket.sleep(0.02)
end
table.sort(drops)
print(#conns, #drops, left, drops[1] or -1, drops[#drops // 2 + 1] or -1, drops[#drops] or -1)
]]

describe("#slow hostile peers", function()
  local dir, server, attacker

  before_each(function() dir = helper.tmpdir() end)
  after_each(function()
    helper.kill(attacker)
    helper.kill(server)
    helper.rmdir(dir)
  end)

  local function stats()
    local f = io.open(dir .. "/stats")
    if not f then return nil end
    local line = f:read("l")
    f:close()
    local a, b, c, d, e = (line or ""):match("^(%d+) (%d+) (%-?%d+) (%d+) (%d+)$")
    if not a then return nil end
    return { accepted = tonumber(a), active = tonumber(b), handshaking = tonumber(c),
      handshake_failures = tonumber(d), fds = tonumber(e) }
  end

  local function sleep(s) socket.sleep(s) end

  local function wait_for(fn, seconds)
    local deadline = socket.gettime() + seconds
    repeat
      local v = fn()
      if v then return v end
      sleep(0.05)
    until socket.gettime() > deadline
  end

  it("drops 1,000 silent and 1,000 half ClientHellos at the deadline; a real peer never fails", function()
    if not has_ssl then pending("luasec (lua-sec) is not installed") return end
    local ca, ca_key = assert(cert.ca { dir = dir, name = "ca", logger = log.null() })
    assert(cert.issue { ca_cert = ca, ca_key = ca_key, dir = dir, name = "server", hosts = { "127.0.0.1" },
      logger = log.null() })
    local ccert, ckey = assert(cert.issue { ca_cert = ca, ca_key = ca_key, dir = dir, name = "client",
      hosts = { "127.0.0.1" }, logger = log.null() })
    writefile(dir .. "/server.lua", SERVER:format(TIMEOUT))
    writefile(dir .. "/attacker.lua", ATTACKER)
    -- children run the plain interpreter (no sanitizer preload) with room for their fds
    local env = "env -u LD_PRELOAD "
    server = helper.bg(("ulimit -n 8192 2>/dev/null; exec %slua5.4 %s %s"):format(env, q(dir .. "/server.lua"), q(dir)),
      dir .. "/server.out")
    local port = wait_for(function() return tonumber(helper.readfile(dir .. "/port")) end, 10)
    assert(port, "server did not start: " .. helper.readfile(dir .. "/server.out"))
    local params = { mode = "client", protocol = "any", key = ckey, certificate = ccert, cafile = ca,
      verify = "peer", options = { "all" } }
    local times, failures = {}, {}
    local function legit()
      local t = socket.gettime()
      local c = socket.tcp()
      c:settimeout(10)
      local ok, err = c:connect("127.0.0.1", port)
      if ok then
        c = assert(ssl.wrap(c, params))
        c:settimeout(10)
        ok, err = c:dohandshake()
        if ok then
          local line
          line, err = c:receive("*l")
          ok = line == "ok"
        end
      end
      c:close()
      if ok then times[#times + 1] = socket.gettime() - t else failures[#failures + 1] = tostring(err) end
    end
    for _ = 1, 5 do legit() end   -- warm-up; the baseline is taken once those are closed
    local base = wait_for(function()
      local s = stats()
      return s and s.active == 0 and s.accepted == 5 and s
    end, 10)
    assert(base, "no baseline: " .. helper.readfile(dir .. "/server.out"))
    times = {}

    local hello = dir .. "/hello"
    writefile(hello, helper.readfile("fuzz/corpus/handshake/tls13"))
    assert(#helper.readfile(hello) > 100, "recorded ClientHello missing")
    local t_attack = socket.gettime()
    attacker = helper.bg(("ulimit -n 8192 2>/dev/null; exec %slua5.4 %s %d %s %d %d"):format(env,
      q(dir .. "/attacker.lua"), port, q(hello), IDLE, HALF), dir .. "/attacker.out")
    local result
    local peak = base
    repeat   -- the real peer handshakes every 100 ms until the attacker reports
      local t = socket.gettime()
      legit()
      local s = stats()
      if s and s.active > peak.active then peak = s end
      result = helper.readfile(dir .. "/attacker.out"):match("^%d+%s+%d+%s+%d+%s+%S+%s+%S+%s+%S+\n")
      local spent = socket.gettime() - t
      if spent < 0.1 then sleep(0.1 - spent) end
    until result or socket.gettime() - t_attack > 60
    assert(result, "attacker did not finish: " .. helper.readfile(dir .. "/attacker.out"))
    local connected, dropped, never, dmin, dmed, dmax = result:match("(%S+)%s+(%S+)%s+(%S+)%s+(%S+)%s+(%S+)%s+(%S+)")
    connected, dropped, never = tonumber(connected), tonumber(dropped), tonumber(never)
    dmin, dmed, dmax = tonumber(dmin), tonumber(dmed), tonumber(dmax)
    attacker = nil

    table.sort(times)
    local p50, p99 = times[#times // 2 + 1], times[math.max(1, math.ceil(#times * 0.99))]
    print(("\nhostile: %d connections (%d silent, %d half ClientHello), %d dropped, %d never; "
      .. "drop after %.2f s min, %.2f s median, %.2f s max (handshake_timeout %d s); peak active %d")
      :format(connected, IDLE, HALF, dropped, never, dmin, dmed, dmax, TIMEOUT, peak.active))
    print(("legit mTLS peer: %d handshakes, %d failed, p50 %.1f ms, p99 %.1f ms, max %.1f ms")
      :format(#times, #failures, p50 * 1000, p99 * 1000, times[#times] * 1000))

    assert.same({}, failures)
    assert.is_true(#times >= 15, #times .. " legit handshakes")
    assert.equal(IDLE + HALF, connected)
    assert.equal(IDLE + HALF, dropped)
    assert.is_true(dmin >= TIMEOUT - 0.5, "dropped before the deadline: " .. dmin)
    assert.is_true(dmax <= TIMEOUT + 10, "dropped long after the deadline: " .. dmax)
    assert.is_true(p99 < 2, "legit p99 " .. p99)   -- generous: well below the attackers' deadline
    -- back to baseline: no connection, fds as before, every hostile one counted as a failure
    -- (stats are a snapshot every 100 ms: wait for one taken after the last real handshake)
    local want_accepted = base.accepted + #times + #failures
    local final = wait_for(function()
      local s = stats()
      return s and s.active == 0 and s.fds == base.fds and s.accepted == want_accepted and s
    end, 15)
    assert(final, "server did not return to baseline: " .. helper.readfile(dir .. "/stats")
      .. " (accepted active handshaking failures fds) vs accepted " .. want_accepted .. ", fds " .. base.fds)
    assert.equal(0, final.handshaking)
    assert.is_true(final.handshake_failures >= IDLE + HALF, "failures " .. final.handshake_failures)
  end)
end)
