-- spec/helper.lua: shared test helpers (fd counting, temp dirs, small clients).
local M = {}

--- Number of open file descriptors of this process.
function M.fd_count()
  local n = 0
  local p = io.popen("ls /proc/" .. M.pid() .. "/fd 2>/dev/null")
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n - 1   -- the pipe of popen itself is counted once
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

--- Runs a shell command, returns its stdout.
function M.sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  return out
end

return M
