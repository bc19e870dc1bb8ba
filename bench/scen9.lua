-- Scenario 9: peerlisten.configure_peer_listeners for 1, 16 and 256 URLs (port 0)
-- and its rollback (the last URL's port is held by another socket): wall time
-- and the process's open fds before, while open, and after close/rollback.
-- Usage: lua5.4 bench/scen9.lua CERTDIR ROUNDS   -> one JSON object per line
local ok, peerlisten = pcall(require, "peerlisten")
if not ok or type(peerlisten.configure_peer_listeners) ~= "function" then
  io.write('{"skip":"require \\"peerlisten\\" (configure_peer_listeners) is not available yet"}\n')
  os.exit(0)
end
local socket = require "socket"
local lfs = require "lfs"
local cjson = require "cjson"
local dir, rounds = arg[1], tonumber(arg[2] or "5")

local function nfds ()
  local n = 0
  for f in lfs.dir("/proc/self/fd") do
    if f ~= "." and f ~= ".." then n = n + 1 end
  end
  return n - 1   -- the directory handle of lfs.dir itself
end

local function urls (n, scheme, last)
  local t = {}
  for i = 1, n do
    t[i] = string.format("%s://127.0.%d.%d:0", scheme, (i - 1) // 250, (i - 1) % 250 + 1)
  end
  if last then t[n] = last end
  return t
end

local function config (list, tls)
  local c = { listen_peer_urls = list, data_dir = os.tmpname() .. ".d" }
  if tls then
    c.peer_transport_security = { cert_file = dir .. "/server.crt", key_file = dir .. "/server.key" }
  end
  local cfg, err = peerlisten.config.new(c)
  assert(cfg, err)
  return cfg
end

local function once (n, scheme, holder)
  local last
  if holder then
    local _, port = holder:getsockname()
    last = string.format("%s://127.0.0.1:%d", scheme, port)
  end
  local cfg = config(urls(n, scheme, last), scheme == "https")
  collectgarbage()
  local fd0 = nfds()
  local t0 = socket.gettime()
  local peers, err = peerlisten.configure_peer_listeners(cfg, {})
  local t1 = socket.gettime()
  local fd_open = nfds()
  local got = peers and #peers or 0
  if peers then peers:close() end
  local t2 = socket.gettime()
  collectgarbage()
  return { ms = (t1 - t0) * 1e3, close_ms = (t2 - t1) * 1e3, fds_before = fd0,
    fds_open = fd_open, fds_after = nfds(), listeners = got, err = err }
end

local cases = {
  { name = "1 URL (http)", n = 1, scheme = "http" },
  { name = "16 URLs (http)", n = 16, scheme = "http" },
  { name = "256 URLs (http)", n = 256, scheme = "http" },
  { name = "256 URLs (https)", n = 256, scheme = "https" },
  { name = "rollback: 256th URL busy", n = 256, scheme = "http", busy = true },
}
for _, c in ipairs(cases) do
  for r = 1, rounds do
    local holder
    if c.busy then holder = assert(socket.bind("127.0.0.1", 0)) end
    local ok2, res = pcall(once, c.n, c.scheme, holder)
    if holder then holder:close() end
    if not ok2 then res = { err = tostring(res) } end
    res.case, res.round = c.name, r
    io.write(cjson.encode(res), "\n")
    io.flush()
  end
end
