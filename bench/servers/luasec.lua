-- luasec benchmark server: luasocket + luasec (Debian lua-sec) with a
-- socket.select loop and one coroutine per connection; TCP_NODELAY set.
-- Usage: luasec.lua PORT MODE CERTDIR   (MODE: plain | tls | mtls | tickets)
-- socket.select is limited to FD_SETSIZE (1024) descriptors.
local socket = require "socket"
local ssl = require "ssl"
local port, mode, dir = tonumber(arg[1]), arg[2], arg[3]

local ctx
if mode ~= "plain" then
  local params = {
    mode = "server", protocol = "any",
    key = dir .. "/server.key", certificate = dir .. "/server.crt",
    options = { "all", "no_sslv2", "no_sslv3", "no_tlsv1", "no_tlsv1_1" },
    curveslist = "X25519:P-256",
    verify = "none",
  }
  if mode == "mtls" then
    params.cafile = dir .. "/ca.crt"
    params.verify = { "peer", "fail_if_no_peer_cert" }
  end
  ctx = assert(ssl.newcontext(params))
end

local bulk = string.rep("x", 1 << 20)
local health = '{"health":"true"}'
local function response (body)
  return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    .. #body .. "\r\n\r\n" .. body
end
local r_health, r_bulk = response(health), response(bulk)

local srv = assert(socket.bind("127.0.0.1", port, 1024))
srv:settimeout(0)

local want_r, want_w = {}, {}    -- socket -> coroutine

local function wait (sock, what)
  if what == "r" then want_r[sock] = coroutine.running() else want_w[sock] = coroutine.running() end
  coroutine.yield()
end

local function blocked (err)
  if err == "timeout" or err == "wantread" then return "r" end
  if err == "wantwrite" then return "w" end
end

local function handle (c)
  c:setoption("tcp-nodelay", true)
  c:settimeout(0)
  if ctx then
    local s = assert(ssl.wrap(c, ctx))
    s:settimeout(0)
    c = s
    while true do
      local ok, err = c:dohandshake()
      if ok then break end
      local w = blocked(err)
      if not w then c:close(); return end
      wait(c, w)
    end
  end
  while true do
    -- request line and headers
    local close, acc, first = false, nil, true
    local path
    while true do
      local line, err, partial = c:receive("*l", acc)
      if line then
        acc = nil
        if first then path = line:match("^%u+ (%S+)"); first = false
        elseif line == "" then break
        elseif line:lower():match("^connection:%s*close") then close = true end
      else
        local w = blocked(err)
        if not w then c:close(); return end
        acc = partial
        wait(c, w)
      end
    end
    local out = path == "/bulk" and r_bulk or r_health
    local i = 1
    while i <= #out do
      local n, err, last = c:send(out, i)
      if n then i = n + 1
      else
        local w = blocked(err)
        if not w then c:close(); return end
        i = last + 1
        wait(c, w)
      end
    end
    if close then c:close(); return end
  end
end

io.stdout:write("listening\n")
io.stdout:flush()
while true do
  local rlist, wlist = { srv }, {}
  for s in pairs(want_r) do rlist[#rlist + 1] = s end
  for s in pairs(want_w) do wlist[#wlist + 1] = s end
  local rr, ww = socket.select(rlist, wlist)
  for _, s in ipairs(rr) do
    if s == srv then
      while true do
        local c = srv:accept()
        if not c then break end
        local co = coroutine.create(handle)
        assert(coroutine.resume(co, c))
      end
    else
      local co = want_r[s]
      if co then want_r[s] = nil; assert(coroutine.resume(co)) end
    end
  end
  for _, s in ipairs(ww) do
    local co = want_w[s]
    if co then want_w[s] = nil; assert(coroutine.resume(co)) end
  end
end
