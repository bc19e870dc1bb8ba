-- Shared test helpers: fd counting, temp dirs, files, shell commands and
-- background processes, small clients. Spec files use these instead of
-- their own copies.
local M = {}

local has_lfs, lfs = pcall(require, "lfs")

-- the fd numbers open now (without the one used to list them)
local function fd_set()
  local set, n = {}, 0
  if has_lfs then
    for name in lfs.dir("/proc/self/fd") do
      if name:match("^%d+$") then set[tonumber(name)] = true; n = n + 1 end
    end
    return set, n - 1   -- the directory being read
  end
  local p = io.popen("ls /proc/" .. M.pid() .. "/fd 2>/dev/null")
  for name in p:lines() do set[tonumber(name)] = true; n = n + 1 end
  p:close()
  return set, n - 1     -- the pipe of popen itself
end

--- Number of open file descriptors of this process.  Handles that libuv
--- closes on the next loop turn are given that turn first.
function M.fd_count()
  local loaded = package.loaded["peerlisten.core"]
  if loaded then loaded.step(0) end
  local _, n = fd_set()
  return n
end

local pid
--- This process's pid (read once from /proc/self/stat).
function M.pid()
  if not pid then
    local f = assert(io.open("/proc/self/stat"))
    pid = f:read("n")
    f:close()
  end
  return pid
end

--- Sorted list of the open fd targets of this process (for messages).
function M.fd_list()
  local out = {}
  local p = io.popen("ls -l /proc/" .. M.pid() .. "/fd 2>/dev/null")
  for line in p:lines() do out[#out + 1] = line:match("%d+ %-> .*") end
  p:close()
  return out
end

--- A fresh temporary directory; M.rmdir removes it.
function M.tmpdir()
  local p = io.popen("mktemp -d /tmp/peerlisten-spec.XXXXXX")
  local d = p:read("l")
  p:close()
  return d
end

function M.rmdir(d)
  if d and d:match("^/tmp/peerlisten%-spec") then os.execute("rm -rf '" .. d .. "'") end
end

-- Child processes (openssl, curl, go, etcd) must not inherit the sanitizer
-- settings of `make sanitize`: curl and etcd hang or die with them.
M.NOSAN = "unset LD_PRELOAD ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS; "

--- Runs a shell command (without the sanitizer settings); returns its
--- stdout and its exit status.
function M.run(cmd)
  local p = io.popen(M.NOSAN .. cmd)
  local out = p:read("a")
  local _, _, status = p:close()
  return out, status
end

--- Runs a shell command (without the sanitizer settings); returns its stdout.
function M.sh(cmd)
  return (M.run(cmd))
end

--- `s` quoted for the shell.
function M.q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Steps the peerlisten loop until cond() returns a true value (returned)
--- or timeout seconds passed (false).
function M.wait_until(cond, timeout)
  local core = require "peerlisten.core"
  local socket = require "socket"
  local deadline = socket.gettime() + (timeout or 5)
  while true do
    local v = cond()
    if v then return v end
    if socket.gettime() > deadline then return false end
    core.step(0.005)
  end
end

--- A connected luasocket TCP client (non-blocking afterwards).
function M.client(host, port)
  local socket = require "socket"
  local c = host:find(":") and socket.tcp6() or socket.tcp()
  c:settimeout(2)
  assert(c:connect(host, port))
  c:settimeout(0)
  return c
end

--- A connected luasocket unix client (non-blocking afterwards).
function M.unix_client(path)
  local unix = require "socket.unix"
  local c = unix()
  c:settimeout(2)
  assert(c:connect(path))
  c:settimeout(0)
  return c
end

--- Receives exactly n bytes from a non-blocking luasocket client while
--- stepping the loop; returns the data or nil, error.
function M.recv(c, n, timeout)
  local parts, got = {}, 0
  local err
  local ok = M.wait_until(function()
    local data, e, partial = c:receive(n - got)
    data = data or partial
    if data and #data > 0 then parts[#parts + 1] = data; got = got + #data end
    if e and e ~= "timeout" then err = e; return true end
    return got >= n
  end, timeout)
  if err and got < n then return nil, err end
  if not ok then return nil, "timeout" end
  return table.concat(parts)
end

--- Starts a shell command in the background, output to a file.
--- Returns the pid and the output path; stop it with M.kill(pid).
--- The command runs in its own process group (setsid), led by that pid.
function M.bg(cmd, outfile)
  local p = io.popen(("%ssetsid sh -c %s > %s 2>&1 < /dev/null & echo $!"):format(M.NOSAN, M.q(cmd), M.q(outfile)))
  local child = tonumber(p:read("l"))
  p:close()
  return child, outfile
end

--- Stops a background process started by M.bg, and its process group.
function M.kill(child)
  if child then os.execute(("kill -TERM -%d %d 2>/dev/null; true"):format(child, child)) end
end

--- Like M.bg, but the pid returned is the command's own (signals reach it,
--- not a wrapping shell) and its exit status is written to `rcfile` when it
--- ends; its stderr goes to `errfile`. Returns nil when it did not start
--- within 10 s.
function M.bg_status(cmd, errfile, rcfile)
  local pidfile = rcfile .. ".pid"
  os.execute(("%s(%s 2>%s & echo $! >%s; wait $!; echo $? >%s) >/dev/null 2>&1 &")
    :format(M.NOSAN, cmd, M.q(errfile), M.q(pidfile), M.q(rcfile)))
  return M.wait_until(function() return tonumber(M.readfile(pidfile)) end, 10) or nil
end

--- Sends SIGTERM to a process (and to its process group when it leads one,
--- as M.bg's do) and waits up to `timeout` seconds (default 5) for it to
--- end; SIGKILL after that.
function M.stop(child, timeout)
  if not child then return end
  os.execute(("kill -TERM -%d %d 2>/dev/null; true"):format(child, child))
  if not M.wait_until(function() return not M.alive(child) end, timeout or 5) then
    os.execute(("kill -KILL -%d %d 2>/dev/null; true"):format(child, child))
  end
end

--- Whether this process is running and not a zombie (an exited child may
--- wait a while for its reaper).
function M.alive(p)
  local f = io.open("/proc/" .. p .. "/stat")
  if not f then return false end
  local st = f:read("a")
  f:close()
  return st:match("^%d+ %b() (%a)") ~= "Z"
end

--- Uses up every free fd of this process (soft RLIMIT_NOFILE lowered first,
--- so that this takes a few dozen files, not thousands); returns a function
--- that gives them back and restores the limit.  With `spare`, that many
--- fds are left free.
function M.exhaust_fds(spare)
  local me = M.pid()
  local lim = M.sh(("prlimit --pid %d --nofile --output SOFT,HARD --noheadings"):format(me))
  local soft, hard = lim:match("(%d+)%s+(%d+)")
  assert(soft, "prlimit printed: " .. lim)
  local highest
  for _, line in ipairs(M.fd_list()) do
    local n = tonumber(line:match("^(%d+)"))
    if n and (not highest or n > highest) then highest = n end
  end
  assert(os.execute(("prlimit --pid %d --nofile=%d:%s"):format(me, (highest or 64) + 32, hard)))
  local held = {}
  while true do
    local f = io.open("/dev/null")
    if not f then break end
    held[#held + 1] = f
    assert(#held < 10000, "the fd limit did not take")
  end
  for _ = 1, spare or 0 do table.remove(held):close() end
  return function()
    for _, f in ipairs(held) do f:close() end
    assert(os.execute(("prlimit --pid %d --nofile=%s:%s"):format(me, soft, hard)))
  end
end

--- The contents of a file, "" when it does not exist (yet).
function M.readfile(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

--- Whether a file exists.
function M.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

--- A file-like sink for the CLI's out and err: b:write(...), b:text().
function M.buffer()
  local b = { parts = {} }
  function b:write(...)
    for i = 1, select("#", ...) do self.parts[#self.parts + 1] = tostring((select(i, ...))) end
    return self
  end
  function b:text() return table.concat(self.parts) end
  return b
end

--- Writes a file (raises on failure).
function M.writefile(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

--- A self-signed EC certificate for localhost/127.0.0.1 in dir (openssl CLI).
function M.selfsigned(dir, name)
  name = name or "server"
  local cert, key = dir .. "/" .. name .. ".crt", dir .. "/" .. name .. ".key"
  local ok = os.execute(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes " ..
    "-keyout '%s' -out '%s' -days 1 -subj /CN=localhost " ..
    "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 >/dev/null 2>&1"):format(key, cert))
  assert(ok, "openssl req failed")
  return cert, key
end

-- A TCP port on 127.0.0.1 that was free a moment ago (bound on port 0, then released).
function M.free_port()
  local l = assert(require("peerlisten.core").listen { scheme = "http", host = "127.0.0.1", port = 0 })
  local _, port = l:addr()
  l:close()
  return port
end

-- Runs fn() while recording every TLS policy core.tls_policy builds; returns
-- the list of policies, then fn's results. The real constructor is restored
-- even when fn raises (the error is re-raised).
function M.with_policy_spy(fn)
  local core = require "peerlisten.core"
  local real, built = core.tls_policy, {}
  core.tls_policy = function(...)
    local pol, w, c = real(...)
    built[#built + 1] = pol
    return pol, w, c
  end
  local res = table.pack(pcall(fn))
  core.tls_policy = real
  if not res[1] then error(res[2], 0) end
  return built, table.unpack(res, 2, res.n)
end

--- The `msg` of each log entry (a capture logger's `entries`, a check
--- report's `warnings`), only those at `level` when given.
function M.msgs(entries, level)
  local out = {}
  for _, e in ipairs(entries) do
    if level == nil or e.level == level then out[#out + 1] = e.msg end
  end
  return out
end

--- Whether a command is on PATH.
function M.have(tool)
  return M.sh("command -v " .. M.q(tool) .. " 2>/dev/null") ~= ""
end

--- Opens the process-wide fds that libuv and the resolver create lazily
--- (libuv's reserve fd, resolver files), so that fd counts compare.
function M.warm()
  local core = require "peerlisten.core"
  local l = core.listen{ scheme = "http", host = "localhost", port = 0 }
  if l then l:close() end
  core.step(0)
  collectgarbage()
end

--- Asserts that the fd count of this process is back to `before`.
function M.assert_fds(before)
  local core = require "peerlisten.core"
  local now
  for _ = 1, 20 do   -- handles closed by __gc finish closing on a later turn
    collectgarbage(); collectgarbage()
    core.step(0.02)
    now = M.fd_count()
    if now == before then return end
  end
  if now ~= before then
    error(("fd leak: %d open fds, %d before\n%s"):format(now, before, table.concat(M.fd_list(), "\n")), 2)
  end
end

return M
