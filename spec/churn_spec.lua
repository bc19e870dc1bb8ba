-- spec/churn_spec.lua #slow: thousands of connections of mixed kinds against a plain and a TLS
-- listener in this process (so `make sanitize` checks the server side): resets right after
-- connect, mid-request, mid-ClientHello, mid-response and after the handshake, plus clean ones.
-- A client child process (luasocket, luasec) drives them. Nothing may raise or log an error, and
-- fds, stats() and RSS must come back to their baseline.
local peerlisten = require "peerlisten"
local core = require "peerlisten.core"
local log = require "peerlisten.log"
local helper = require "helper"
local q, writefile = helper.q, helper.writefile

local has_ssl = pcall(require, "ssl")


local function rss_kb()
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^VmRSS:%s+(%d+)")
    if kb then return tonumber(kb) end
  end
end

-- The client: arg = plain port, TLS port, ClientHello file, rounds. Each round makes one
-- connection of each kind; prints "done <kind>=<count> ... errors=<n>" and the first errors.
local CLIENT = [[
local socket = require "socket"
local ssl = require "ssl"
local pport, tport, hello, rounds = tonumber(arg[1]), tonumber(arg[2]), arg[3], tonumber(arg[4])
local f = io.open(hello, "rb"); local ch = f:read("a"); f:close()
local count, errors = {}, {}
local function connect(port, reset)
  local c = socket.tcp()
  c:settimeout(10)
  assert(c:connect("127.0.0.1", port))
  if reset then c:setoption("linger", { on = true, timeout = 0 }) end   -- close() sends RST
  return c
end
local function tls(c)
  local s = assert(ssl.wrap(c, { mode = "client", protocol = "any", verify = "none", options = { "all" } }))
  s:settimeout(10)
  local ok, err = s:dohandshake()
  if not ok then errors[#errors + 1] = "handshake: " .. tostring(err) end
  return s
end
local kinds = {
  reset_at_once = function() connect(pport, true):close() end,
  reset_mid_request = function() local c = connect(pport, true); c:send("GET /hea"); c:close() end,
  plain_full = function()
    local c = connect(pport)
    c:send("hello\n")
    local l, err = c:receive("*l")
    if l ~= "ok" then errors[#errors + 1] = "plain reply: " .. tostring(l or err) end
    c:close()
  end,
  plain_reset_mid_response = function()
    local c = connect(pport, true)
    c:send("BIG\n"); c:receive(1000); c:close()
  end,
  tls_reset_mid_hello = function()
    local c = connect(tport, true); c:send(ch:sub(1, #ch // 2)); c:close()
  end,
  tls_reset_after_handshake = function() tls(connect(tport, true)):close() end,
  tls_reset_mid_response = function()
    local s = tls(connect(tport, true))
    s:send("BIG\n"); s:receive(1000); s:close()
  end,
  tls_full = function()
    local s = tls(connect(tport))
    s:send("hello\n")
    local l, err = s:receive("*l")
    if l ~= "ok" then errors[#errors + 1] = "tls reply: " .. tostring(l or err) end
    s:close()
  end,
}
local names = {}
for k in pairs(kinds) do names[#names + 1] = k end
table.sort(names)
for _ = 1, rounds do
  for _, k in ipairs(names) do
    local ok, err = pcall(kinds[k])
    if ok then count[k] = (count[k] or 0) + 1 else errors[#errors + 1] = k .. ": " .. tostring(err) end
  end
end
local out = { "done" }
for _, k in ipairs(names) do out[#out + 1] = k .. "=" .. (count[k] or 0) end
out[#out + 1] = "errors=" .. #errors
print(table.concat(out, " "))
for i = 1, math.min(5, #errors) do print(errors[i]) end
]]

describe("#slow churn", function()
  local dir, child
  before_each(function() dir = helper.tmpdir() end)
  after_each(function()
    helper.kill(child)
    helper.rmdir(dir)
  end)

  it("mixed resets and clean connections, plain and TLS: no error, fds/stats/RSS back", function()
    if not has_ssl then pending("luasec (lua-sec) is not installed") return end
    local cert, key = helper.selfsigned(dir)
    local pol = assert(peerlisten.tls.policy { cert_file = cert, key_file = key, handshake_timeout = 5 })
    local logger = log.capture { level = "debug" }
    local plain = assert(peerlisten.listen { url = "http://127.0.0.1:0", logger = logger })
    local tls = assert(peerlisten.listen { url = "https://127.0.0.1:0", tls = pol, logger = logger })
    local big = ("x"):rep(256 * 1024)
    local handler_errors = {}
    local function handler(c)
      local ok, err = pcall(function()
        local data = c:read(4096, 10)
        if data and data:match("^BIG") then c:write(big)
        elseif data then c:write("ok\n") end
        c:close()
      end)
      if not ok then handler_errors[#handler_errors + 1] = tostring(err) end
    end
    plain:serve(handler)
    tls:serve(handler)
    local _, pport = plain:addr()
    local _, tport = tls:addr()
    writefile(dir .. "/client.lua", CLIENT)
    writefile(dir .. "/hello", helper.readfile("fuzz/corpus/handshake/tls13"))

    local function churn(rounds)
      local out = dir .. "/client.out"
      os.remove(out)
      child = helper.bg(("exec env -u LD_PRELOAD lua5.4 %s %d %d %s %d"):format(q(dir .. "/client.lua"),
        pport, tport, q(dir .. "/hello"), rounds), out)
      local done = helper.wait_until(function() return helper.readfile(out):match("^done") ~= nil end, 600)
      child = nil
      local text = helper.readfile(out)
      assert(done, "client did not finish: " .. text)
      return text
    end
    local function settled()
      return helper.wait_until(function()
        local a, b = plain:stats(), tls:stats()
        return a.active == 0 and b.active == 0 and (b.handshaking or 0) == 0
      end, 20)
    end

    churn(40)   -- warm-up: allocator pools, OpenSSL's lazily built tables
    assert.is_true(settled())
    collectgarbage(); collectgarbage()
    local fds, rss0 = helper.fd_count(), rss_kb()
    local s0p, s0t = plain:stats(), tls:stats()
    local t0 = os.time()
    local rounds = 250   -- 8 kinds: 2,000 connections
    local text = churn(rounds)
    local secs = os.time() - t0
    assert.is_true(settled(), "connections left active")
    collectgarbage(); collectgarbage()
    core.step(0.05)
    local rss1 = rss_kb()
    local s1p, s1t = plain:stats(), tls:stats()
    print(("\nchurn: %d connections in %d s; RSS %d -> %d kB; plain accepted +%d, TLS accepted +%d, "
      .. "TLS handshake failures +%d\n%s"):format(rounds * 8, secs, rss0, rss1, s1p.accepted - s0p.accepted,
      s1t.accepted - s0t.accepted, s1t.handshake_failures - s0t.handshake_failures, text))
    assert.matches("errors=0\n", text, 1, true)
    assert.same({}, handler_errors)
    for _, e in ipairs(logger.entries) do
      assert.is_true(log.LEVELS[e.level] < log.LEVELS.error, e.level .. ": " .. e.msg)
    end
    -- every connection that reached the server is accounted for
    local plain_accepted = s1p.accepted - s0p.accepted   -- a reset may beat accept()
    assert.is_true(plain_accepted >= rounds * 2 and plain_accepted <= rounds * 4, "plain accepted")
    assert.is_true(s1t.accepted - s0t.accepted >= rounds * 3, "TLS accepted")
    assert.is_true(s1t.handshake_failures - s0t.handshake_failures >= rounds, "TLS failures")
    helper.assert_fds(fds)
    -- generous: a leak of one SSL or buffer per connection is several MB; ASan's quarantine
    -- keeps freed memory for a while, so its bound is looser
    local slack = os.getenv("ASAN_OPTIONS") and 300 * 1024 or 24 * 1024
    assert.is_true(rss1 - rss0 < slack, ("RSS grew %d kB"):format(rss1 - rss0))
    plain:close()
    tls:close()
    pol:close()
  end)
end)
