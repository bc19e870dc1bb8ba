-- bench/bench.lua: the benchmark driver (started by bench/run, which builds the
-- Go programs and makes the certificates first).
-- Starts each server as one process pinned to core 1, drives it with
-- bench/goload pinned to core 0, and measures server CPU (utime+stime of the
-- server process and its children, /proc/<pid>/stat) per completed operation.
-- Every server started here is stopped by its pid.
local cjson = require "cjson"
local socket = require "socket"
local lfs = require "lfs"

local ROOT = assert(os.getenv("BENCH_ROOT"), "BENCH_ROOT unset (run bench/run)")
local BUILD = assert(os.getenv("BENCH_BUILD"))
local CERTS = assert(os.getenv("BENCH_CERTS"))
local TMP = assert(os.getenv("BENCH_TMP"))
local CLK_TCK = 100
local SERVER_CORE, CLIENT_CORE = os.getenv("BENCH_SERVER_CORE") or "1", os.getenv("BENCH_CLIENT_CORE") or "0"
local MiB = 1 << 20

--------------------------------------------------------------------------- options
local opt = { rounds = 5, seconds = 2, scenarios = nil, servers = nil, out = ROOT .. "/bench/results",
  write = true, idle_conns = 2000, ir = true, ir_seconds = 2 }
do
  local i = 1
  while i <= #arg do
    local a, v = arg[i], arg[i + 1]
    if a == "--scenario" or a == "--scenarios" then opt.scenarios = v; i = i + 1
    elseif a == "--rounds" then opt.rounds = assert(tonumber(v), "--rounds N"); i = i + 1
    elseif a == "--seconds" then opt.seconds = assert(tonumber(v), "--seconds S"); i = i + 1
    elseif a == "--servers" then opt.servers = v; i = i + 1
    elseif a == "--out" then opt.out = v; i = i + 1
    elseif a == "--idle-conns" then opt.idle_conns = assert(tonumber(v)); i = i + 1
    elseif a == "--no-write" then opt.write = false
    elseif a == "--no-ir" then opt.ir = false
    elseif a == "--ir-seconds" then opt.ir_seconds = assert(tonumber(v)); i = i + 1
    elseif a == "--json" then opt.json = v; i = i + 1
    elseif a == "-h" or a == "--help" then
      io.write("usage: bench/run [--scenario N[,M]] [--rounds R] [--seconds S] [--servers a,b]\n",
        "                 [--idle-conns N] [--no-write] [--out DIR] [--json FILE]\n",
        "                 [--no-ir] [--ir-seconds S]\n")
      os.exit(0)
    else error("unknown option " .. a) end
    i = i + 1
  end
end
local function set (csv)
  if not csv then return nil end
  local t = {}
  for w in csv:gmatch("[^,%s]+") do t[w] = true end
  return t
end

local function log (...)
  io.stderr:write(string.format(...), "\n")
  io.stderr:flush()
end

--------------------------------------------------------------------------- processes
local function sh (cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  return out
end

local function exists (p)
  local f = io.open(p, "r")
  if f then f:close() return true end
  return false
end

local function readfile (p)
  local f = io.open(p, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function writefile (p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
end

-- pid -> { ppid, state, ticks }
local function stat (pid)
  local s = readfile("/proc/" .. pid .. "/stat")
  if not s then return nil end
  local rest = s:match("%) (.*)$")
  local f = {}
  for w in rest:gmatch("%S+") do f[#f + 1] = w end
  -- rest starts at field 3 (state); utime is field 14, stime 15
  return { state = f[1], ppid = tonumber(f[2]), ticks = tonumber(f[12]) + tonumber(f[13]) }
end

-- the pid and all its descendants
local function tree (pid)
  local kids = {}
  for d in lfs.dir("/proc") do
    local p = tonumber(d)
    if p then
      local st = stat(p)
      if st then
        kids[st.ppid] = kids[st.ppid] or {}
        table.insert(kids[st.ppid], p)
      end
    end
  end
  local out, stack = {}, { pid }
  while #stack > 0 do
    local p = table.remove(stack)
    out[#out + 1] = p
    for _, c in ipairs(kids[p] or {}) do stack[#stack + 1] = c end
  end
  return out
end

local function cpu_ticks (pids)
  local t = 0
  for _, p in ipairs(pids) do
    local st = stat(p)
    if st then t = t + st.ticks end
  end
  return t
end

local function rss_kib (pids)
  local t = 0
  for _, p in ipairs(pids) do
    local s = readfile("/proc/" .. p .. "/status")
    local v = s and s:match("VmRSS:%s*(%d+)")
    if v then t = t + tonumber(v) end
  end
  return t
end

local function alive (pid)
  local st = stat(pid)
  return st ~= nil and st.state ~= "Z"
end

-- Starts cmd in the background (its output to logf); returns its pid.
local function spawn (cmd, logf)
  local out = sh("exec </dev/null; " .. cmd .. " >" .. logf .. " 2>&1 & echo $!")
  return assert(tonumber(out:match("%d+")), "spawn failed: " .. cmd)
end

local started = {}   -- pid -> true, every server process started and not yet stopped
local all_pids = {}  -- every server process started (and its children), for the smoke spec

local function stop (pid, grace)
  if not pid or not started[pid] then return end
  local pids = tree(pid)
  for _, p in ipairs(pids) do all_pids[#all_pids + 1] = p end
  os.execute("kill -TERM " .. pid .. " 2>/dev/null")
  for _ = 1, math.floor((grace or 3) / 0.05) do
    if not alive(pid) then break end
    socket.sleep(0.05)
  end
  for _, p in ipairs(pids) do
    if alive(p) then os.execute("kill -KILL " .. p .. " 2>/dev/null") end
  end
  started[pid] = nil
end

local function stop_all ()
  for pid in pairs(started) do stop(pid) end
end

local function free_port ()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

local function wait_port (port, pid, seconds)
  local deadline = socket.gettime() + seconds
  while socket.gettime() < deadline do
    if pid and not alive(pid) then return false, "exited" end
    local c = socket.connect("127.0.0.1", port)
    if c then c:close() return true end
    socket.sleep(0.03)
  end
  return false, "timeout"
end

--------------------------------------------------------------------------- servers
local LUA_PATH_LUAHTTP = "/usr/share/lua/5.4/?.lua;/usr/share/lua/5.4/?/init.lua;" ..
  "/usr/share/lua/5.3/?.lua;/usr/share/lua/5.3/?/init.lua;/usr/share/lua/5.2/?.lua;/usr/share/lua/5.2/?/init.lua;;"
local LUA_PATH_PL = ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;"
local LUA_CPATH_PL = ROOT .. "/?.so;;"
local PIN = "taskset -c " .. SERVER_CORE .. " "
-- what runs the server program: nothing, or valgrind (instruction counts)
local function VG (inst) return inst.wrap or "" end

local function nginx_conf (dir, port, variant, tickets_off, vg)
  local tls = variant ~= "plain"
  local lines = {
    "daemon off;", vg and "master_process off;" or "master_process on;", "worker_processes 1;", "user root;",
    "pid " .. dir .. "/nginx.pid;", "error_log " .. dir .. "/error.log warn;",
    "worker_rlimit_nofile 16384;", "events { worker_connections 8192; }",
    "http {",
    "  client_body_temp_path " .. dir .. "/t1; proxy_temp_path " .. dir .. "/t2;",
    "  fastcgi_temp_path " .. dir .. "/t3; uwsgi_temp_path " .. dir .. "/t4; scgi_temp_path " .. dir .. "/t5;",
    "  keepalive_requests 100000000; keepalive_timeout 300s;",
    "  log_format reuse '$ssl_session_reused';",
    -- the access log is what counts resumed sessions: kept for the handshake scenarios only
    (variant == "tls" or variant == "mtls" or variant == "tickets")
      and ("  access_log " .. dir .. "/access.log reuse;") or "  access_log off;",
    "  server {",
    "    listen 127.0.0.1:" .. port .. (tls and " ssl;" or ";"),
  }
  if tls then
    for _, l in ipairs{
      "    ssl_certificate " .. CERTS .. "/server.crt;",
      "    ssl_certificate_key " .. CERTS .. "/server.key;",
      "    ssl_protocols TLSv1.2 TLSv1.3;",
    } do lines[#lines + 1] = l end
    if tickets_off then lines[#lines + 1] = "    ssl_session_tickets off;" end
    if variant == "mtls" then
      lines[#lines + 1] = "    ssl_client_certificate " .. CERTS .. "/ca.crt;"
      lines[#lines + 1] = "    ssl_verify_client on;"
    end
  end
  for _, l in ipairs{
    "    location /health { default_type application/json; return 200 '{\"health\":\"true\"}'; }",
    "    location /bulk { default_type application/octet-stream; alias " .. dir .. "/bulk.bin; }",
    "  }", "}" } do lines[#lines + 1] = l end
  return table.concat(lines, "\n") .. "\n"
end

local function nginx_server (tickets_off)
  return {
    variants = { tls = true, mtls = true, tickets = true, plain = true },
    available = function () return exists("/usr/sbin/nginx") or "nginx not installed (apt-get install nginx-light)" end,
    start = function (inst)
      local d = inst.dir
      os.execute("chmod 755 " .. d)
      writefile(d .. "/bulk.bin", string.rep("x", MiB))
      writefile(d .. "/nginx.conf", nginx_conf(d, inst.port, inst.variant, tickets_off, inst.wrap ~= nil))
      return PIN .. VG(inst) .. "/usr/sbin/nginx -p " .. d .. " -c " .. d .. "/nginx.conf -e " .. d .. "/error.log"
    end,
    -- server-side resumption count: lines of the access log, "r" = reused
    resumed = function (inst)
      local s = readfile(inst.dir .. "/access.log")
      if not s then return nil end
      local total, reused = 0, 0
      for l in s:gmatch("[^\n]+") do
        total = total + 1
        if l == "r" then reused = reused + 1 end
      end
      return reused, total
    end,
  }
end

local SERVERS = {
  nginx = nginx_server(false),
  ["nginx-nt"] = nginx_server(true),
  go = {
    no_valgrind = true,   -- Go binaries do not run reliably under valgrind
    variants = { tls = true, mtls = true, tickets = true, plain = true },
    available = function () return exists(BUILD .. "/goserver") or "goserver not built" end,
    start = function (inst)
      inst.stats_port = free_port()
      local a = " -plain 127.0.0.1:" .. inst.stats_port
      if inst.variant == "plain" then
        inst.port = inst.stats_port
      else
        a = a .. " -addr 127.0.0.1:" .. inst.port .. " -cert " .. CERTS .. "/server.crt -key " .. CERTS .. "/server.key"
        if inst.variant == "mtls" then a = a .. " -ca " .. CERTS .. "/ca.crt" end
      end
      return PIN .. "env GOMAXPROCS=1 " .. BUILD .. "/goserver" .. a
    end,
    resumed = function (inst)
      local s = sh("curl -s --max-time 5 http://127.0.0.1:" .. inst.stats_port .. "/stats")
      local ok, t = pcall(cjson.decode, s)
      if not ok or type(t) ~= "table" then return nil end
      return t.resumed, t.handshakes
    end,
  },
  ["lua-http"] = {
    variants = { tls = true, mtls = true, tickets = true, plain = true },
    available = function ()
      return exists("/usr/share/lua/5.3/http/server.lua") or "lua-http not installed (apt-get install lua-http)"
    end,
    start = function (inst)
      return PIN .. "env LUA_PATH='" .. LUA_PATH_LUAHTTP .. "' " .. VG(inst) .. "lua5.4 " .. ROOT .. "/bench/servers/luahttp.lua "
        .. inst.port .. " " .. inst.variant .. " " .. CERTS
    end,
  },
  luasec = {
    variants = { tls = true, mtls = true, tickets = true, plain = true },
    max_conns = 900,   -- socket.select is limited to FD_SETSIZE
    available = function ()
      return exists("/usr/lib/x86_64-linux-gnu/lua/5.4/ssl.so") or "lua-sec not installed (apt-get install lua-sec)"
    end,
    start = function (inst)
      return PIN .. VG(inst) .. "lua5.4 " .. ROOT .. "/bench/servers/luasec.lua " .. inst.port .. " "
        .. inst.variant .. " " .. CERTS
    end,
  },
}

-- peerlisten: `bin/peerlisten serve` where it can play the scenario, else the
-- stand-in bench/servers/plcore.lua on the C core (marked † in the tables).
local function pl_cli_ok ()
  return exists(ROOT .. "/bin/peerlisten") and exists(ROOT .. "/lua/peerlisten/init.lua")
    and exists(ROOT .. "/peerlisten/core.so")
end
local PL_ENV = "env LUA_PATH='" .. LUA_PATH_PL .. "' LUA_CPATH='" .. LUA_CPATH_PL .. "' "
SERVERS.peerlisten = {
  variants = { tls = true, mtls = true, tickets = true, plain = true },
  available = function ()
    return exists(ROOT .. "/peerlisten/core.so") or "peerlisten/core.so not built (make)"
  end,
  -- the CLI answers /health only and has no session-ticket flag: bulk and
  -- resumption go through the core stand-in
  uses_cli = function (scen) return pl_cli_ok() and scen.variant ~= "tickets" and scen.path ~= "/bulk" end,
  start = function (inst, scen)
    if SERVERS.peerlisten.uses_cli(scen) then
      inst.cli = true
      local scheme = inst.variant == "plain" and "http" or "https"
      local a = " serve --name bench --data-dir " .. inst.dir .. "/data --listen-peer-urls "
        .. scheme .. "://127.0.0.1:" .. inst.port
      if inst.variant ~= "plain" then
        a = a .. " --peer-cert-file " .. CERTS .. "/server.crt --peer-key-file " .. CERTS .. "/server.key"
      end
      if inst.variant == "mtls" then
        a = a .. " --peer-trusted-ca-file " .. CERTS .. "/ca.crt --peer-client-cert-auth"
      end
      return PIN .. PL_ENV .. VG(inst) .. "lua5.4 " .. ROOT .. "/bin/peerlisten" .. a
    end
    return PIN .. PL_ENV .. VG(inst) .. "lua5.4 " .. ROOT .. "/bench/servers/plcore.lua " .. inst.port .. " "
      .. inst.variant .. " " .. CERTS
  end,
}

local ORDER = { "nginx", "nginx-nt", "go", "lua-http", "luasec", "peerlisten" }
local LABEL = { nginx = "nginx", ["nginx-nt"] = "nginx (tickets off)", go = "Go crypto/tls",
  ["lua-http"] = "lua-http", luasec = "luasec", peerlisten = "peerlisten" }

--------------------------------------------------------------------------- scenarios
local SCENARIOS = {
  { id = 1, name = "TLS 1.3 full handshake", variant = "tls", mode = "handshake", tls = "1.3", c = 8, unit = "µs/op" },
  { id = 2, name = "TLS 1.3 mutual TLS handshake", variant = "mtls", mode = "handshake", tls = "1.3", c = 8,
    client_cert = true, unit = "µs/op" },
  { id = 3, name = "TLS 1.2 full handshake", variant = "tls", mode = "handshake", tls = "1.2", c = 8, unit = "µs/op" },
  { id = 4, name = "TLS 1.3 resumed handshake (tickets)", variant = "tickets", mode = "handshake", tls = "1.3", c = 8,
    resume = true, unit = "µs/op" },
  { id = 5, name = "keep-alive request (TLS 1.3)", variant = "tls", mode = "keepalive", tls = "1.3", c = 8, unit = "µs/op" },
  { id = 6, name = "bulk 1 MiB responses (keep-alive TLS 1.3)", variant = "tls", mode = "bulk", tls = "1.3", c = 4,
    path = "/bulk", unit = "µs/MiB" },
  { id = 7, name = "plain TCP accept + response + close", variant = "plain", mode = "plain", c = 8, unit = "µs/op" },
  { id = 8, name = "memory per idle TLS connection", variant = "tls", mode = "idle", tls = "1.3", unit = "KiB/conn",
    idle = true },
}

local function client_cmd (scen, port, seconds, extra)
  local a = { "taskset -c " .. CLIENT_CORE, "env GOMAXPROCS=1", BUILD .. "/goload",
    "-addr 127.0.0.1:" .. port, "-mode " .. scen.mode, "-d " .. string.format("%.3fs", seconds) }
  if scen.tls then a[#a + 1] = "-tls " .. scen.tls .. " -ca " .. CERTS .. "/ca.crt" end
  if scen.c then a[#a + 1] = "-c " .. scen.c end
  if scen.resume then a[#a + 1] = "-resume" end
  if scen.path then a[#a + 1] = "-path " .. scen.path end
  if scen.client_cert then a[#a + 1] = "-cert " .. CERTS .. "/client.crt -key " .. CERTS .. "/client.key" end
  if extra then a[#a + 1] = extra end
  return table.concat(a, " ")
end

local function run_client (cmd)
  local out = sh(cmd .. " 2>&1")
  local line = out:match("(%b{})%s*$")
  local ok, res = pcall(cjson.decode, line or "")
  if not ok or type(res) ~= "table" then
    return { ops = 0, errors = 1, resumed = 0, bytes = 0, first_error = "client: " .. out:sub(1, 200) }
  end
  return res
end

local function start_server (name, scen, valgrind)
  local srv = SERVERS[name]
  local inst = { name = name, variant = scen.variant, port = free_port() }
  inst.dir = TMP .. "/" .. name .. "-" .. scen.id .. "-" .. tostring(inst.port)
  os.execute("mkdir -p " .. inst.dir)
  if valgrind then
    inst.cg = inst.dir .. "/callgrind.out"
    inst.wrap = "valgrind --tool=callgrind --callgrind-out-file=" .. inst.cg .. " "
  end
  local cmd = srv.start(inst, scen)
  inst.log = inst.dir .. "/server.log"
  inst.pid = spawn(cmd, inst.log)
  started[inst.pid] = true
  local ok, why = wait_port(inst.port, inst.pid, valgrind and 60 or 15)
  if not ok then
    local l = (readfile(inst.log) or ""):sub(1, 300)
    stop(inst.pid)
    return nil, why .. ": " .. l:gsub("%s+", " ")
  end
  return inst
end

-- one measured round against a running server
local function measure (inst, scen, seconds)
  local srv = SERVERS[inst.name]
  local pids = tree(inst.pid)
  local r0 = srv.resumed and { srv.resumed(inst) }
  local t0 = cpu_ticks(pids)
  local res = run_client(client_cmd(scen, inst.port, seconds))
  pids = tree(inst.pid)
  local t1 = cpu_ticks(pids)
  local r1 = srv.resumed and { srv.resumed(inst) }
  local cpu_us = (t1 - t0) * 1e6 / CLK_TCK
  local m = { ops = res.ops, errors = res.errors, cpu_s = cpu_us / 1e6, client_resumed = res.resumed,
    rate = res.ops / (res.seconds or seconds), first_error = res.first_error, bytes = res.bytes }
  if r0 and r0[1] and r1 and r1[1] then
    m.server_resumed = r1[1] - r0[1]
    m.server_handshakes = r1[2] - r0[2]
  end
  if scen.unit == "µs/MiB" then
    m.value = res.bytes > 0 and cpu_us / (res.bytes / MiB) or nil
    m.rate = res.bytes / MiB / (res.seconds or seconds)
  else
    m.value = res.ops > 0 and cpu_us / res.ops or nil
  end
  if not alive(inst.pid) then m.died = true end
  return m
end

-- scenario 8: a fresh server per round; RSS growth over N idle handshaken connections
local function measure_idle (name, scen)
  local srv = SERVERS[name]
  local n = math.min(opt.idle_conns, srv.max_conns or math.huge)
  local inst, err = start_server(name, scen)
  if not inst then return nil, err end
  -- warm up: a few handshakes and requests so start-up allocations are done
  run_client(client_cmd({ mode = "handshake", tls = "1.3", c = 2 }, inst.port, 0.3))
  socket.sleep(0.2)
  local rss0 = rss_kib(tree(inst.pid))
  local hold = 1.0
  local p = io.popen(client_cmd(scen, inst.port, hold, "-c " .. n) .. " 2>&1")
  local line = p:read("l")
  local ready = tonumber(line and line:match("^ready (%d+)") or "")
  local rss1
  if ready then
    socket.sleep(0.3)
    rss1 = rss_kib(tree(inst.pid))
  end
  local rest = p:read("a")
  p:close()
  stop(inst.pid)
  if not ready or ready == 0 then return nil, "idle client: " .. tostring(line) .. " " .. rest:sub(1, 200) end
  return { value = (rss1 - rss0) / ready, ops = ready, errors = n - ready, rate = 0, rss0 = rss0, rss1 = rss1 }
end

-- instructions per operation: the server under callgrind, counters zeroed
-- after a warm-up, 2 client workers for opt.ir_seconds, totals read at exit
local function measure_ir (name, scen)
  local inst, err = start_server(name, scen, true)
  if not inst then return nil, err end
  run_client(client_cmd(scen, inst.port, 0.5, "-c 2"))
  os.execute("callgrind_control -z " .. inst.pid .. " >/dev/null 2>&1")
  local res = run_client(client_cmd(scen, inst.port, opt.ir_seconds, "-c 2"))
  stop(inst.pid, 30)
  local cg = readfile(inst.cg) or ""
  local total = tonumber(cg:match("\nsummary:%s*(%d+)") or cg:match("\ntotals:%s*(%d+)") or "")
  if not total or res.ops == 0 then return nil, "callgrind: no totals or no ops " .. tostring(res.first_error) end
  if scen.unit == "µs/MiB" then return total / (res.bytes / MiB), res end
  return total / res.ops, res
end

--------------------------------------------------------------------------- statistics and tables
local function median (v)
  local t = {}
  for i, x in ipairs(v) do t[i] = x end
  table.sort(t)
  local n = #t
  if n == 0 then return nil end
  if n % 2 == 1 then return t[(n + 1) // 2] end
  return (t[n // 2] + t[n // 2 + 1]) / 2
end

local function fmt (x)
  if x == nil then return "–" end
  if x >= 100 then return string.format("%.0f", x) end
  if x >= 10 then return string.format("%.1f", x) end
  return string.format("%.2f", x)
end

--------------------------------------------------------------------------- main
local want_scen, want_srv = set(opt.scenarios), set(opt.servers)
local servers = {}
local notes = {}
for _, name in ipairs(ORDER) do
  if not want_srv or want_srv[name] then
    local a = SERVERS[name].available()
    if a == true then servers[#servers + 1] = name
    else notes[#notes + 1] = "skipped " .. name .. ": " .. a; log("skip %s: %s", name, a) end
  end
end
if want_srv then
  for s in pairs(want_srv) do
    if not SERVERS[s] then error("unknown server " .. s .. " (known: " .. table.concat(ORDER, ",") .. ")") end
  end
end

local results = {}    -- results[scen.id][server] = { rounds = {m...}, err = , ir = }
local HAVE_VALGRIND = os.execute("command -v valgrind >/dev/null 2>&1 && command -v callgrind_control >/dev/null 2>&1") == true
local scen9
local t_start = socket.gettime()

local function run_scenario (scen)
  log("== scenario %d: %s", scen.id, scen.name)
  local res = {}
  results[scen.id] = res
  local insts = {}
  if not scen.idle then
    for _, name in ipairs(servers) do
      res[name] = { rounds = {} }
      if SERVERS[name].variants[scen.variant] then
        local inst, err = start_server(name, scen)
        if inst then
          insts[name] = inst
          if SERVERS[name].uses_cli then res[name].cli = inst.cli or false end
          -- warm-up, not measured
          run_client(client_cmd(scen, inst.port, 0.3))
        else
          res[name].err = err
          log("  %s: cannot start: %s", name, err)
        end
      else
        res[name].err = "not supported"
      end
    end
  else
    for _, name in ipairs(servers) do res[name] = { rounds = {} } end
  end
  local ok, err = pcall(function ()
    for r = 1, opt.rounds do
      local order = {}
      for i, name in ipairs(servers) do order[i] = name end
      if r % 2 == 0 then   -- alternate the order from round to round
        for i = 1, #order // 2 do order[i], order[#order + 1 - i] = order[#order + 1 - i], order[i] end
      end
      for _, name in ipairs(order) do
        local m, e
        if scen.idle then
          if not res[name].err then
            m, e = measure_idle(name, scen)
            if not m then res[name].err = e end
          end
        elseif insts[name] then
          m = measure(insts[name], scen, opt.seconds)
          if m.died then res[name].err = "server died: " .. (readfile(insts[name].log) or ""):sub(1, 200) end
        end
        if m then
          table.insert(res[name].rounds, m)
          log("  round %d %-10s %8s %s  ops=%d err=%d cpu=%.2fs%s", r, name, fmt(m.value), scen.unit, m.ops,
            m.errors or 0, m.cpu_s or 0, m.first_error and ("  first error: " .. m.first_error) or "")
        end
      end
    end
  end)
  for _, inst in pairs(insts) do stop(inst.pid) end
  if not ok then error(err, 0) end
  if opt.ir and not scen.idle and HAVE_VALGRIND then
    for _, name in ipairs(servers) do
      local r = res[name]
      if not SERVERS[name].no_valgrind and SERVERS[name].variants[scen.variant] and #r.rounds > 0 then
        local ok2, ir, cres = pcall(measure_ir, name, scen)
        if ok2 and ir then
          r.ir = ir
          log("  callgrind %-10s %12.0f Ir per %s (%d ops)", name, ir, scen.unit == "µs/MiB" and "MiB" or "op", cres.ops)
        else
          r.ir_err = tostring(cres or ir)
          log("  callgrind %-10s failed: %s", name, r.ir_err)
        end
      end
    end
  end
end

local ok, err = pcall(function ()
  for _, scen in ipairs(SCENARIOS) do
    if not want_scen or want_scen[tostring(scen.id)] then run_scenario(scen) end
  end
  if not want_scen or want_scen["9"] then
    log("== scenario 9: configure_peer_listeners")
    local out = sh("cd " .. ROOT .. " && " .. PL_ENV .. "lua5.4 bench/scen9.lua " .. CERTS .. " "
      .. math.max(opt.rounds, 1) .. " 2>&1")
    scen9 = { lines = {}, raw = out }
    for l in out:gmatch("[^\n]+") do
      local ok2, t = pcall(cjson.decode, l)
      if ok2 and type(t) == "table" then scen9.lines[#scen9.lines + 1] = t end
    end
  end
end)
stop_all()
if not ok then log("bench failed: %s", tostring(err)); os.exit(1) end

--------------------------------------------------------------------------- report
local out = {}
local function emit (s) out[#out + 1] = s end
local date = os.date("!%Y-%m-%d")
local cpu = sh("grep -m1 'model name' /proc/cpuinfo"):match(":%s*(.-)%s*$") or "?"
local osslv = sh("openssl version"):gsub("%s+$", "")
emit("# peerlisten benchmark — " .. os.date("!%Y-%m-%d %H:%M UTC"))
emit("")
emit(string.format("Machine: %s, %s cores, %s; %s. Servers pinned to core %s, the Go load client to core %s.",
  cpu, sh("nproc"):gsub("%s+", ""), (sh("uname -sr"):gsub("%s+$", "")), osslv, SERVER_CORE, CLIENT_CORE))
emit(string.format("Rounds: %d alternating rounds of %.1f s per scenario and server. Figures: server CPU "
  .. "(utime+stime of the server process and its children) per operation, median (min–max), and the "
  .. "ratio of medians to nginx with its defaults in the same run. Lower is better.", opt.rounds, opt.seconds))
emit("")
local hdr, sep = { "scenario", "unit" }, { "---", "---" }
for _, name in ipairs(servers) do hdr[#hdr + 1] = LABEL[name]; sep[#sep + 1] = "---:" end
emit("| " .. table.concat(hdr, " | ") .. " |")
emit("| " .. table.concat(sep, " | ") .. " |")
local rate_rows, resume_rows = {}, {}
local fn_marks = {}
for _, scen in ipairs(SCENARIOS) do
  local res = results[scen.id]
  if res then
    local med = {}
    for _, name in ipairs(servers) do
      local vals = {}
      for _, m in ipairs(res[name].rounds) do if m.value then vals[#vals + 1] = m.value end end
      med[name] = median(vals)
      res[name].vals = vals
    end
    local row = { scen.id .. ". " .. scen.name, scen.unit }
    local rrow = { scen.id .. ". " .. scen.name, scen.unit == "µs/MiB" and "MiB/s" or (scen.idle and "conns" or "ops/s") }
    local srow = { scen.id .. ". " .. scen.name, "resumed/handshakes" }
    for _, name in ipairs(servers) do
      local r = res[name]
      local cell
      if med[name] then
        local lo, hi = math.min(table.unpack(r.vals)), math.max(table.unpack(r.vals))
        cell = fmt(med[name]) .. " (" .. fmt(lo) .. "–" .. fmt(hi) .. ")"
        if med.nginx and med.nginx > 0 then cell = cell .. string.format(" **%.2f×**", med[name] / med.nginx) end
        local errs, ops = 0, 0
        for _, m in ipairs(r.rounds) do errs = errs + (m.errors or 0); ops = ops + (m.ops or 0) end
        if errs > 0 and errs > ops * 0.01 then
          cell = cell .. " ⚠" .. errs .. " errors"
          local fe
          for _, m in ipairs(r.rounds) do fe = fe or m.first_error end
          if fe then notes[#notes + 1] = string.format("scenario %d, %s: %d errors, first: %s", scen.id, name, errs, fe) end
        end
      else
        cell = "n/a"
        local why = r.err
        for _, m in ipairs(r.rounds) do why = why or m.first_error end
        if why then notes[#notes + 1] = string.format("scenario %d, %s: %s", scen.id, name, why) end
      end
      if name == "peerlisten" and med[name] and r.cli == false then
        cell = cell .. " †"
        fn_marks[scen.id] = true
      end
      row[#row + 1] = cell
      local rates = {}
      for _, m in ipairs(r.rounds) do rates[#rates + 1] = m.rate end
      rrow[#rrow + 1] = scen.idle and fmt(median((function ()
        local t = {} for _, m in ipairs(r.rounds) do t[#t + 1] = m.ops end return t end)())) or fmt(median(rates))
      -- resumption: server-side count where the server exposes one, else the client's
      local sr, sh_, cr, ops = 0, 0, 0, 0
      local has_server = false
      for _, m in ipairs(r.rounds) do
        if m.server_resumed then has_server = true; sr = sr + m.server_resumed; sh_ = sh_ + m.server_handshakes end
        cr = cr + (m.client_resumed or 0); ops = ops + (m.ops or 0)
      end
      if has_server then srow[#srow + 1] = string.format("%d/%d (server); client %d/%d", sr, sh_, cr, ops)
      elseif #r.rounds > 0 then srow[#srow + 1] = string.format("client %d/%d", cr, ops)
      else srow[#srow + 1] = "–" end
    end
    emit("| " .. table.concat(row, " | ") .. " |")
    rate_rows[#rate_rows + 1] = "| " .. table.concat(rrow, " | ") .. " |"
    if scen.mode == "handshake" then resume_rows[#resume_rows + 1] = "| " .. table.concat(srow, " | ") .. " |" end
  end
end
emit("")
local ir_rows = {}
for _, scen in ipairs(SCENARIOS) do
  local res = results[scen.id]
  if res then
    local row, any = { scen.id .. ". " .. scen.name, scen.unit == "µs/MiB" and "Ir/MiB" or "Ir/op" }, false
    local base = res.nginx and res.nginx.ir
    for _, name in ipairs(servers) do
      local ir = res[name].ir
      if ir then
        any = true
        local cell = ir >= 1e6 and string.format("%.2fM", ir / 1e6) or string.format("%.1fk", ir / 1e3)
        if base then cell = cell .. string.format(" **%.2f×**", ir / base) end
        if name == "peerlisten" and res[name].cli == false then cell = cell .. " †" end
        row[#row + 1] = cell
      else
        row[#row + 1] = "–"
      end
    end
    if any then ir_rows[#ir_rows + 1] = "| " .. table.concat(row, " | ") .. " |" end
  end
end
if #ir_rows > 0 then
  emit("Instructions per operation (callgrind, user space of the server process, one run of "
    .. opt.ir_seconds .. " s with 2 client workers after a warm-up; stable where the CPU times above are noisy; "
    .. "Go is not run under valgrind):")
  emit("")
  local h3 = { "scenario", "unit" }
  for _, name in ipairs(servers) do h3[#h3 + 1] = LABEL[name] end
  emit("| " .. table.concat(h3, " | ") .. " |")
  emit("| " .. table.concat(sep, " | ") .. " |")
  for _, l in ipairs(ir_rows) do emit(l) end
  emit("")
end
if next(fn_marks) then
  emit("† peerlisten figures marked † come from bench/servers/plcore.lua, the same responder written straight on "
    .. "`peerlisten.core` (listen + tls_policy + serve): `peerlisten serve` answers /health only and has no "
    .. "session-ticket switch. Unmarked peerlisten figures are `bin/peerlisten serve`.")
  emit("")
end
emit("Absolute rates (printed, not judged; the load client is bound by its own core):")
emit("")
local h2 = { "scenario", "rate" }
for _, name in ipairs(servers) do h2[#h2 + 1] = LABEL[name] end
emit("| " .. table.concat(h2, " | ") .. " |")
emit("| " .. table.concat(sep, " | ") .. " |")
for _, l in ipairs(rate_rows) do emit(l) end
emit("")
if #resume_rows > 0 then
  emit("Resumed handshakes (all rounds; counted by the server where it can tell: nginx `$ssl_session_reused`, "
    .. "Go `ConnectionState.DidResume`; otherwise by the client):")
  emit("")
  emit("| " .. table.concat(h2, " | ") .. " |")
  emit("| " .. table.concat(sep, " | ") .. " |")
  for _, l in ipairs(resume_rows) do emit(l) end
  emit("")
end
if scen9 then
  emit("Scenario 9: `peerlisten.configure_peer_listeners` with port-0 URLs on 127.0.x.y (wall time, median "
    .. "(min–max) of " .. math.max(opt.rounds, 1) .. " runs; fds of the process before / while open / after close or rollback; "
    .. "in the rollback case the socket holding the busy port is one of the fds):")
  emit("")
  if #scen9.lines == 1 and scen9.lines[1].skip then
    emit("skipped: " .. scen9.lines[1].skip)
  elseif #scen9.lines == 0 then
    emit("failed: " .. scen9.raw:sub(1, 400):gsub("\n", " "))
  else
    emit("| case | configure ms | close ms | listeners | fds before / open / after | result |")
    emit("| --- | ---: | ---: | ---: | --- | --- |")
    local by, order = {}, {}
    for _, l in ipairs(scen9.lines) do
      if l.case then
        if not by[l.case] then by[l.case] = {}; order[#order + 1] = l.case end
        table.insert(by[l.case], l)
      end
    end
    for _, c in ipairs(order) do
      local ms, cms = {}, {}
      for _, l in ipairs(by[c]) do ms[#ms + 1] = l.ms; cms[#cms + 1] = l.close_ms end
      local last = by[c][#by[c]]
      local msv = {}
      for _, x in ipairs(ms) do if type(x) == "number" then msv[#msv + 1] = x end end
      local cell = #msv > 0 and (fmt(median(msv)) .. " (" .. fmt(math.min(table.unpack(msv))) .. "–"
        .. fmt(math.max(table.unpack(msv))) .. ")") or "–"
      local cv = {}
      for _, x in ipairs(cms) do if type(x) == "number" then cv[#cv + 1] = x end end
      local errs = type(last.err) == "string" and last.err:gsub("|", "/") or "ok"
      local function int (x) return type(x) == "number" and string.format("%d", x) or "–" end
      emit(string.format("| %s | %s | %s | %s | %s / %s / %s | %s |", c, cell, fmt(median(cv)),
        int(last.listeners), int(last.fds_before), int(last.fds_open), int(last.fds_after), errs))
    end
  end
  emit("")
end
if #notes > 0 then
  emit("Notes:")
  emit("")
  for _, n in ipairs(notes) do emit("- " .. n:gsub("\n", " ")) end
  emit("")
end
emit(string.format("Total bench time: %.0f s. Command: `bench/run%s`.", socket.gettime() - t_start,
  (function ()
    local a = {}
    for _, x in ipairs(arg) do a[#a + 1] = " " .. x end
    return table.concat(a)
  end)()))
local text = table.concat(out, "\n") .. "\n"
io.write(text)
if opt.write then
  os.execute("mkdir -p " .. opt.out)
  writefile(opt.out .. "/" .. date .. ".md", text)
  writefile(opt.out .. "/latest.md", text)
  log("written %s/%s.md and %s/latest.md", opt.out, date, opt.out)
end
if opt.json then
  local byname = {}
  for id, r in pairs(results) do byname[tostring(id)] = r end
  local ok2, j = pcall(cjson.encode, { results = byname, scen9 = scen9 and scen9.lines, notes = notes,
    pids = all_pids })
  if ok2 then writefile(opt.json, j) else log("json: %s", j) end
end
