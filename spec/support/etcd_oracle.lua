-- Runs the real etcd binary (Debian's 3.4.23) on one case
-- and reports whether it would start its peer listeners, so that peerlisten's
-- predictions can be compared with etcd itself.
--
--   local oracle = require "support.etcd_oracle"
--   local O = oracle.new()          -- makes a throw-away PKI (support.pki) once
--   local r = O:run { args = {...}, env = {...}, yaml = "..." }
--   -- r.outcome: "started" | "usage" (exit 2) | "failed" (other exit) | "timeout"
--   -- r.exit, r.message (the key error line, placeholders put back), r.seconds
--   O:cleanup()
--
-- Placeholders in args, env values, yaml and files: {P1} {P2} {P3} free peer
-- ports, {C} the client port, {DIR} the case's temp dir (also the data dir's
-- parent; the data dir is {DIR}/data), {PKI} the PKI dir (support.pki names:
-- {PKI}/server.crt, {PKI}/ca.crt, ...). files = { ["name"] = "content" } are
-- written under {DIR} first (content may use placeholders).
--
-- "started" means etcd logged that it serves peer traffic ("listening for
-- peers on" with capnslog, "serving peer traffic" with zap) or answered
-- GET /version on its client URL. Both come after the peer listeners are
-- bound AND after the etcd server (with its rafthttp transport, which loads
-- the peer client key pair and CA even for http URLs) was created, so a
-- configuration that binds its listeners and then dies is "failed".
--
-- Unless the case gives them, the harness adds --name, --data-dir, client
-- URLs and initial-cluster flags (or, with `yaml`, the matching keys on top of
-- the file; `raw_yaml = true` writes the text unchanged). `peer_url` names the
-- advertised peer URL (default http://127.0.0.1:{P1}).
local socket = require "socket"
local helper = require "helper"

local M = {}
M.__index = M

M.ETCD = os.getenv("PEERLISTEN_ETCD") or "/usr/bin/etcd"
M.TIMEOUT = 10

local q, writefile, pid_alive = helper.q, helper.writefile, helper.alive

local function readfile(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end


function M.available()
  local f = io.open(M.ETCD, "r")
  if not f then return false end
  f:close()
  return true
end

-- Ports: bound on 0 by a throw-away server socket, then released. Each run takes
-- fresh ones; a port another process grabs in between makes one case flaky, not wrong.
local function free_ports(n)
  local socks, ports = {}, {}
  for i = 1, n do
    local s = assert(socket.bind("127.0.0.1", 0))
    socks[i] = s
    local _, port = s:getsockname()
    ports[i] = tonumber(port)
  end
  for _, s in ipairs(socks) do s:close() end
  return ports
end

function M.new(o)
  o = o or {}
  local self = setmetatable({}, M)
  local pki = require "support.pki"
  self.pki = o.pki or pki.new()
  self.own_pki = o.pki == nil
  return self
end

function M:cleanup()
  if self.own_pki and self.pki then self.pki:cleanup() end
  self.pki = nil
end

local function subst(s, vars)
  return (s:gsub("{(%u+%d*)}", function(k) return vars[k] end))
end

-- Put placeholders back into a message: temp paths and the case's ports.
local function unsubst(s, vars)
  if not s then return nil end
  s = s:gsub(vars.DIR:gsub("%p", "%%%0"), "{DIR}")
  s = s:gsub(vars.PKI:gsub("%p", "%%%0"), "{PKI}")
  for _, k in ipairs { "P1", "P2", "P3", "C" } do
    s = s:gsub("(%D)" .. vars[k] .. "(%f[%D])", "%1{" .. k .. "}%2")
  end
  return s
end

local function has_flag(args, env, name)
  for _, a in ipairs(args) do
    if a == "--" .. name or a:find("^%-%-?" .. name:gsub("%-", "%%-") .. "=") or a == "-" .. name then
      return true
    end
  end
  local var = "ETCD_" .. name:upper():gsub("%-", "_")
  return env[var] ~= nil
end

-- The flags a single-member etcd needs besides the case's own.
local function base_flags(case)
  local peer = case.peer_url or "http://127.0.0.1:{P1}"
  local client = "http://127.0.0.1:{C}"
  return {
    { "name", "n1" },
    { "data-dir", "{DIR}/data" },
    { "listen-client-urls", client },
    { "advertise-client-urls", client },
    { "initial-advertise-peer-urls", peer },
    { "initial-cluster", "n1=" .. peer },
  }
end

local function build(case, vars)
  local args, env = {}, {}
  for k, v in pairs(case.env or {}) do env[k] = subst(v, vars) end
  local cargs = {}
  for i, a in ipairs(case.args or {}) do cargs[i] = subst(a, vars) end
  if case.yaml then
    local text = subst(case.yaml, vars)
    if not case.raw_yaml then
      local head = {}
      for _, kv in ipairs(base_flags(case)) do
        if not text:find("\n" .. kv[1] .. ":") and not text:find("^" .. kv[1] .. ":") then
          head[#head + 1] = kv[1] .. ": " .. subst(kv[2], vars)
        end
      end
      text = table.concat(head, "\n") .. "\n" .. text
    end
    writefile(vars.DIR .. "/etcd.conf.yml", text)
    if not case.config_via_env then
      args[#args + 1] = "--config-file"
      args[#args + 1] = vars.DIR .. "/etcd.conf.yml"
    end
  elseif not case.no_base then
    for _, kv in ipairs(base_flags(case)) do
      if not has_flag(cargs, env, kv[1]) then
        args[#args + 1] = "--" .. kv[1]
        args[#args + 1] = subst(kv[2], vars)
      end
    end
  end
  for _, a in ipairs(cargs) do args[#args + 1] = a end
  return args, env
end

-- The key line of etcd's stderr: what made it stop (or nil).
local KEY_PATTERNS = {
  "^(flag provided but not defined: .*)$",
  "^(invalid value .*)$",
  "^(invalid argument .*)$",
  "^(panic: .*)$",
  "^(unexpected error setting up .*)$",
  "^%S+ %S+ C | (.*)$",                 -- capnslog critical (Fatal)
  "^%S+ %S+ E | (.*)$",                 -- capnslog error (etcdmain prints flag errors so)
  '"level":"fatal"',
  '"level":"error"',
  '"msg":"failed to start etcd"',
  "^(.*[Ee]rror.*)$",                   -- anything else that reads like an error
}

local function zap_message(line)
  local ok, cjson = pcall(require, "cjson")
  if not ok then return line end
  local okd, t = pcall(cjson.decode, line)
  if not okd or type(t) ~= "table" then return line end
  if t.error then return t.msg .. ": " .. t.error end
  return t.msg
end

local function key_line(stderr)
  local lines = {}
  for l in stderr:gmatch("[^\n]+") do lines[#lines + 1] = l end
  for _, pat in ipairs(KEY_PATTERNS) do
    for _, l in ipairs(lines) do
      local m = l:match(pat)
      if m then
        if l:sub(1, 1) == "{" then return zap_message(l) end
        if m == true or pat:sub(1, 1) == '"' then return l end
        return m
      end
    end
  end
  return lines[#lines]
end

local function started_line(stderr)
  return stderr:match("listening for peers on [^\n]*") or stderr:match('"msg":"serving peer traffic"[^\n]*')
end

-- GET /version on the client port: true when etcd answers (it serves clients
-- only after serving peers).
local function client_answers(port)
  local c = socket.tcp()
  c:settimeout(0.2)
  if not c:connect("127.0.0.1", port) then c:close() return false end
  c:send("GET /version HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
  local line = c:receive("*l")
  c:close()
  return line ~= nil and line:match("^HTTP/1%.%d 200") ~= nil
end

local function kill(pid)
  if pid and pid_alive(pid) then
    os.execute("kill -KILL " .. pid .. " 2>/dev/null")
  end
end

--- Sets a case up without running anything: a fresh temp dir, free ports, the
-- case's files written, placeholders substituted. Returns `{ dir =, vars =,
-- args =, env = }` (args and env are what etcd gets: the case's own plus the
-- base flags); `O:finish(ctx)` removes the dir. Also used to run other
-- programs (peerlisten check) on exactly the inputs etcd gets.
function M:prepare(case)
  local p = io.popen("mktemp -d /tmp/peerlisten-spec.oracle.XXXXXX")
  local dir = p:read("l")
  p:close()
  assert(dir and dir:match("^/tmp/peerlisten%-spec%.oracle"), "mktemp failed")
  local ports = free_ports(4)
  local vars = { P1 = ports[1], P2 = ports[2], P3 = ports[3], C = ports[4], DIR = dir, PKI = self.pki.dir }
  for name, content in pairs(case.files or {}) do
    writefile(dir .. "/" .. name, subst(content, vars))
  end
  if case.setup then case.setup(vars) end
  local args, env = build(case, vars)
  return { dir = dir, vars = vars, args = args, env = env }
end

function M.finish(_, ctx)
  if ctx.dir:match("^/tmp/peerlisten%-spec%.oracle") then os.execute("rm -rf " .. q(ctx.dir)) end
end

--- `s` with the case's temp paths and ports put back as placeholders.
function M.unsubst(_, ctx, s)
  return unsubst(s, ctx.vars)
end

--- `s` with placeholders replaced by the case's values.
function M.subst(_, ctx, s)
  return subst(s, ctx.vars)
end

--- Runs `argv` (a list) with exactly env (a table) in the case dir; returns
-- exit status, stdout, stderr.
function M.exec(_, ctx, argv, env)
  local qe, qa = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" .. ctx.dir }, {}
  local names = {}
  for k in pairs(env or {}) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do qe[#qe + 1] = k .. "=" .. env[k] end
  for i, e in ipairs(qe) do qe[i] = q(e) end
  for i, a in ipairs(argv) do qa[i] = q(a) end
  local outf, errf = ctx.dir .. "/exec.out", ctx.dir .. "/exec.err"
  local ok, _, code = os.execute(("cd %s && env -i %s %s >%s 2>%s </dev/null")
    :format(q(ctx.dir), table.concat(qe, " "), table.concat(qa, " "), q(outf), q(errf)))
  local out, err = readfile(outf) or "", readfile(errf) or ""
  os.remove(outf)
  os.remove(errf)
  return ok and 0 or code, out, err
end

--- Runs one case; returns the result table (see the header).
function M:run(case)
  local t0 = socket.gettime()
  local ctx = self:prepare(case)
  local dir, vars, args, env = ctx.dir, ctx.vars, ctx.args, ctx.env
  local envs = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" .. dir }
  local names = {}
  for k in pairs(env) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do envs[#envs + 1] = k .. "=" .. env[k] end
  local qa = {}
  for i, a in ipairs(args) do qa[i] = q(a) end
  local errf, pidf, rcf = dir .. "/stderr", dir .. "/pid", dir .. "/rc"
  -- etcd runs as a direct child of a small sh that records its pid and exit status;
  -- the cwd is the case dir (unix socket URLs are relative to it).
  local qe = {}
  for i, e in ipairs(envs) do qe[i] = q(e) end
  local inner = ("cd %s || exit 1; env -i %s %s %s >%s 2>&1 </dev/null & echo $! >%s.tmp && mv %s.tmp %s; "
    .. "wait $!; echo $? >%s.tmp && mv %s.tmp %s")
    :format(q(dir), table.concat(qe, " "), q(M.ETCD), table.concat(qa, " "), q(errf),
            q(pidf), q(pidf), q(pidf), q(rcf), q(rcf), q(rcf))
  os.execute("sh -c " .. q(inner) .. " >/dev/null 2>&1 &")
  local pid
  local deadline = t0 + (case.timeout or M.TIMEOUT)
  local res = { outcome = "timeout" }
  local last_probe = 0
  while true do
    if not pid then
      local s = readfile(pidf)
      pid = s and tonumber(s:match("%d+"))
    end
    local rc = readfile(rcf)
    if rc and rc:match("%d") then
      local code = tonumber(rc:match("%d+"))
      res.exit = code
      res.outcome = code == 2 and "usage" or "failed"
      local stderr = readfile(errf) or ""
      res.message = key_line(stderr)
      if code == 0 then res.outcome = "exited" end
      break
    end
    local stderr = readfile(errf) or ""
    local line = started_line(stderr)
    local now = socket.gettime()
    if not line and pid and now - last_probe > 0.1 then
      last_probe = now
      if client_answers(vars.C) then line = "answered GET /version on the client URL" end
    end
    if line then
      res.outcome = "started"
      res.message = line
      break
    end
    if now > deadline then
      res.message = "no verdict after " .. (case.timeout or M.TIMEOUT) .. " s"
      break
    end
    socket.sleep(0.01)
  end
  kill(pid)
  -- wait for the sh to record the status, so nothing writes into the dir we remove
  for _ = 1, 200 do
    if readfile(rcf) or not pid then break end
    socket.sleep(0.01)
  end
  res.stderr = unsubst(readfile(errf) or "", vars)
  res.message = unsubst(res.message, vars)
  if res.message then
    -- capnslog prefixes: keep the text, drop the package tag
    res.message = res.message:gsub("^etcdmain: ", ""):gsub("^pkg/flags: ", ""):gsub("^embed: ", "")
  end
  res.panic = res.stderr:find("\npanic: ") ~= nil or res.stderr:find("^panic: ") ~= nil
  res.args = args
  res.pid = pid
  res.dir = dir
  self:finish(ctx)
  res.seconds = socket.gettime() - t0
  return res
end

return M
