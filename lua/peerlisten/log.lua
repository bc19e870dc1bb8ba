--- zap-compatible structured logging.
--
-- Loggers write one JSON object per line with the keys `level`, `ts`, `caller`,
-- `msg`, then the entry's fields, as etcd's zap logger does, or
-- a tab-separated console line (`format = "console"`). Every output of the
-- library goes through a logger; `capture()` records entries as tables.
--
-- Field order: fields are a plain table keyed by etcd's field names. They are
-- written in a fixed order: first the names etcd uses on the peer-listener
-- path, in the order etcd logs them (`FIELD_ORDER`), then any other name in
-- byte order. Empty tables are written as `[]` (etcd logs empty lists, never
-- empty objects, on this path).
--
-- Sampling (as zap's default production sampler, which etcd uses): per level
-- and message, the first 100 entries of each second are written, then every
-- 100th. `sampling = false` turns it off; capture loggers do not sample unless
-- asked.
-- @module peerlisten.log

local core = require "peerlisten.core"

local M = {}

local floor = math.floor

--- Level names and their order.
M.LEVELS = { debug = 1, info = 2, warn = 3, error = 4, dpanic = 5, panic = 6, fatal = 7 }

--- Field names written first, in this order.
M.FIELD_ORDER = {
  "name", "data-dir", "path", "filename", "address", "peer-url", "listen-peer-urls",
  "reuse-address", "reuse-port", "tls-info", "cipher-suites", "remote-addr", "server-name",
  "ip-addresses", "dns-names", "cert-file", "key-file", "variable-name", "variable-value",
  "environment-variable", "certificate-validity-bound-not-after", "error", "reason",
}
local ORDER_INDEX = {}
for i, k in ipairs(M.FIELD_ORDER) do ORDER_INDEX[k] = i end

local function field_less(a, b)
  local ia, ib = ORDER_INDEX[a], ORDER_INDEX[b]
  if ia and ib then return ia < ib end
  if ia or ib then return ia ~= nil end
  return tostring(a) < tostring(b)
end

--- The wall clock in seconds, with a fraction. Replaceable (specs freeze
-- time with it).
M.clock = core.walltime

--- Formats a wall-clock time as etcd's zap `ts`: `2006-01-02T15:04:05.000000Z` (UTC).
-- @tparam number t seconds since the epoch
-- @treturn string
function M.timestamp(t)
  local sec = floor(t)
  local usec = floor((t - sec) * 1e6 + 0.5)
  if usec >= 1000000 then sec, usec = sec + 1, usec - 1000000 end
  return os.date("!%Y-%m-%dT%H:%M:%S", sec) .. (".%06dZ"):format(usec)
end

local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
  ["\b"] = "\\b", ["\f"] = "\\f" }
for i = 0, 31 do
  local c = string.char(i)
  if not ESC[c] then ESC[c] = ("\\u%04x"):format(i) end
end

-- Strings may carry peer-controlled bytes (a TLS server name): a line must stay
-- valid UTF-8, so each byte that does not start a valid sequence is written as
-- \ufffd, as zap does.
local function quote(s)
  local esc = s:gsub('[%c"\\]', ESC)
  if utf8.len(esc) then return '"' .. esc .. '"' end
  local parts, i, n = {}, 1, #esc
  while i <= n do
    local ok, bad = utf8.len(esc, i)
    if ok then parts[#parts + 1] = esc:sub(i); break end
    parts[#parts + 1] = esc:sub(i, bad - 1)
    parts[#parts + 1] = "\\ufffd"
    i = bad + 1
  end
  return '"' .. table.concat(parts) .. '"'
end

local encode

local function is_array(t)
  local n = #t
  if n == 0 then return next(t) == nil end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

function encode(v, depth)
  local tv = type(v)
  if tv == "string" then return quote(v)
  elseif tv == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    if v ~= v or v == math.huge or v == -math.huge then return quote(tostring(v)) end
    if v == floor(v) and v > -1e15 and v < 1e15 then return ("%d"):format(v) end
    return ("%.14g"):format(v)
  elseif tv == "boolean" then return tostring(v)
  elseif tv == "nil" then return "null"
  elseif tv == "table" and getmetatable(v) == nil and (depth or 0) < 8 then
    local parts = {}
    if is_array(v) then
      for i = 1, #v do parts[i] = encode(v[i], (depth or 0) + 1) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, field_less)
    for i, k in ipairs(keys) do
      parts[i] = quote(tostring(k)) .. ":" .. encode(v[k], (depth or 0) + 1)
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return quote(tostring(v))
end

--- Encodes a value as JSON the way log lines encode fields (strings are not
-- `\/`-escaped; empty tables are `[]`).
-- @param v
-- @treturn string
M.encode = encode

local function sorted_keys(fields)
  local keys = {}
  for k in pairs(fields) do keys[#keys + 1] = k end
  table.sort(keys, field_less)
  return keys
end

--- Formats one entry as a JSON line (without the newline).
-- @tparam table e `{ level =, ts =, caller =, msg =, fields = }`
-- @treturn string
function M.format_json(e)
  local parts = { '{"level":', quote(e.level), ',"ts":', quote(M.timestamp(e.ts)) }
  if e.caller then parts[#parts + 1] = ',"caller":' .. quote(e.caller) end
  parts[#parts + 1] = ',"msg":' .. quote(e.msg)
  local fields = e.fields
  if fields and next(fields) ~= nil then
    for _, k in ipairs(sorted_keys(fields)) do
      parts[#parts + 1] = "," .. quote(tostring(k)) .. ":" .. encode(fields[k], 1)
    end
  end
  parts[#parts + 1] = "}"
  return table.concat(parts)
end

--- Formats one entry as zap's console encoder does:
-- `ts<TAB>LEVEL<TAB>caller<TAB>msg<TAB>{fields}`.
-- @tparam table e
-- @treturn string
function M.format_console(e)
  local line = M.timestamp(e.ts) .. "\t" .. e.level:upper() .. "\t" .. (e.caller or "-") .. "\t" .. e.msg
  local fields = e.fields
  if fields and next(fields) ~= nil then
    local parts = {}
    for i, k in ipairs(sorted_keys(fields)) do
      parts[i] = quote(tostring(k)) .. ":" .. encode(fields[k], 1)
    end
    line = line .. "\t{" .. table.concat(parts, ",") .. "}"
  end
  return line
end

local function caller_of(level)
  local info = debug.getinfo(level, "Sl")
  if not info then return nil end
  local src = info.short_src or "?"
  src = src:match("([^/]+/[^/]+)$") or src
  return src .. ":" .. (info.currentline or 0)
end

local Logger = {}
Logger.__index = Logger
Logger.__name = "peerlisten.Logger"

-- Opens one output description as a writer function(line).
local function open_output(out, files)
  if type(out) == "function" then return out end
  if out == nil or out == "default" or out == "stderr" or out == io.stderr then
    return function(line) io.stderr:write(line, "\n") end
  end
  if out == "stdout" or out == io.stdout then
    return function(line) io.stdout:write(line, "\n") end
  end
  if io.type(out) == "file" then
    return function(line) out:write(line, "\n"); out:flush() end
  end
  if type(out) == "string" then
    local fh, err = io.open(out, "a")
    if not fh then return nil, "cannot open log output: " .. tostring(err), "ECONFIG" end
    files[#files + 1] = fh
    fh:setvbuf("line")
    return function(line) fh:write(line, "\n") end
  end
  return nil, "log output must be stderr, stdout, a file path, a file or a function, got " .. type(out),
    "ECONFIG"
end

--- Creates a logger.
-- @tparam[opt] table opts
-- `level` ("info"): lowest level written;
-- `format` ("json" or "console");
-- `sink`: one output, `outputs`: a list of outputs. An output is `"stderr"`
-- (also `"default"`), `"stdout"`, a file path (appended to), a Lua file, or a
-- `function(line)` receiving each line without its newline. Default: stderr.
-- `sampling` (true): zap's sampler; `false` to write every entry, or
-- `{ first = 100, thereafter = 100 }`.
-- `caller` (true): add the `caller` key.
-- @treturn[1] Logger
-- @treturn[2] nil
-- @treturn[2] string
-- @treturn[2] string "ECONFIG"
function M.new(opts)
  opts = opts or {}
  local level = opts.level or "info"
  if not M.LEVELS[level] then
    return nil, ('unknown log level "%s" (must be one of: debug, info, warn, error, panic, fatal)')
      :format(tostring(level)), "ECONFIG"
  end
  local format = opts.format or "json"
  if format ~= "json" and format ~= "console" then
    return nil, ('unknown log format "%s" (must be one of: json, console)'):format(tostring(format)), "ECONFIG"
  end
  local self = setmetatable({
    level = level, min = M.LEVELS[level], format = format, writers = {}, files = {},
    caller = opts.caller ~= false,
  }, Logger)
  local outputs = opts.outputs or { opts.sink }
  if #outputs == 0 then outputs = { "stderr" } end
  for _, out in ipairs(outputs) do
    local w, err, code = open_output(out, self.files)
    if not w then self:close(); return nil, err, code end
    self.writers[#self.writers + 1] = w
  end
  local s = opts.sampling
  if s == nil or s == true then s = { first = 100, thereafter = 100 } end
  if s then
    self.sample = { first = s.first or 100, thereafter = s.thereafter or 100, counts = {}, second = nil }
  end
  return self
end

--- Creates a logger that records entries in `logger.entries` instead of writing them.
-- Each entry is `{ level =, msg =, fields =, ts =, caller = }`.
-- @tparam[opt] table opts `level` ("debug"), `sampling` (false), `sink`/`outputs` (none)
-- @treturn Logger
function M.capture(opts)
  opts = opts or {}
  local self = assert(M.new {
    level = opts.level or "debug", format = opts.format, sampling = opts.sampling or false,
    outputs = opts.outputs or { opts.sink or function() end },
  })
  if not (opts.outputs or opts.sink) then self.writers = {} end
  self.entries = {}
  return self
end

--- A logger that discards everything.
-- @treturn Logger
function M.null()
  local self = assert(M.new { outputs = { function() end }, sampling = false })
  self.min = math.huge
  return self
end

-- zap's sampler: true if the entry is to be written.
local function sampled(self, level, msg)
  local s = self.sample
  if not s then return true end
  local now = floor(M.clock())
  if s.second ~= now then s.second, s.counts = now, {} end
  local key = level .. "\0" .. msg
  local n = (s.counts[key] or 0) + 1
  s.counts[key] = n
  if n <= s.first then return true end
  return (n - s.first) % s.thereafter == 0
end

--- Whether entries at `level` are written.
-- @tparam string level
-- @treturn boolean
function Logger:enabled(level)
  return (M.LEVELS[level] or 0) >= self.min
end

-- Writes one entry with `caller` already decided (nil: none).
local function emit(self, level, msg, fields, caller)
  if not sampled(self, level, msg) then return end
  local e = { level = level, msg = tostring(msg), fields = fields or {}, ts = M.clock(), caller = caller }
  if self.entries then self.entries[#self.entries + 1] = e end
  if self.forward then self.forward(level, e.msg, e.fields) end
  local writers = self.writers
  if writers[1] then
    local line = self.format == "json" and M.format_json(e) or M.format_console(e)
    for i = 1, #writers do writers[i](line) end
  end
end

--- Logs one entry.
-- @tparam string level "debug", "info", "warn", "error", "dpanic", "panic" or "fatal"
-- @tparam string msg etcd's message text
-- @tparam[opt] table fields keyed by etcd's field names
-- @tparam[opt] number depth extra stack levels to skip for `caller`
function Logger:log(level, msg, fields, depth)
  local rank = M.LEVELS[level]
  if not rank then error("unknown log level '" .. tostring(level) .. "'", 2) end
  if rank < self.min then return end
  emit(self, level, msg, fields, self.caller and caller_of(3 + (depth or 0)) or nil)
end

--- Logs at debug level. @tparam string msg @tparam[opt] table fields
function Logger:debug(msg, fields) self:log("debug", msg, fields, 1) end
--- Logs at info level. @tparam string msg @tparam[opt] table fields
function Logger:info(msg, fields) self:log("info", msg, fields, 1) end
--- Logs at warn level. @tparam string msg @tparam[opt] table fields
function Logger:warn(msg, fields) self:log("warn", msg, fields, 1) end
--- Logs at error level. @tparam string msg @tparam[opt] table fields
function Logger:error(msg, fields) self:log("error", msg, fields, 1) end
--- Logs at fatal level. Only logs: a library never exits.
-- @tparam string msg
-- @tparam[opt] table fields
function Logger:fatal(msg, fields) self:log("fatal", msg, fields, 1) end

--- The caller of C-side events that no listener owns (coroutine errors).
M.CORE_CALLER = "peerlisten.core"

--- A `function(level, msg, fields)` for `core.listen{ logger = }` and
-- `core.set_log_hook`, forwarding C-side events to this logger.
-- The C core has no Lua stack to point at, so the entry's `caller` names
-- where the event comes from: `listener <origin>` when `origin` (the
-- listener's URL) is given, else `peerlisten.core`.
-- @tparam[opt] string origin the listener URL the events belong to
-- @treturn function
function Logger:hook(origin)
  self._hooks = self._hooks or {}
  local key = origin or ""
  local fn = self._hooks[key]
  if not fn then
    local caller = origin and ("listener " .. origin) or M.CORE_CALLER
    fn = function(level, msg, fields)
      if not M.LEVELS[level] then level = "warn" end
      if M.LEVELS[level] < self.min then return end
      emit(self, level, msg, fields, self.caller and caller or nil)
    end
    self._hooks[key] = fn
  end
  return fn
end

--- Entries recorded by a capture logger that match `msg` (and `level`).
-- @tparam string msg
-- @tparam[opt] string level
-- @treturn table array of entries
function Logger:find(msg, level)
  local out = {}
  for _, e in ipairs(self.entries or {}) do
    if e.msg == msg and (level == nil or e.level == level) then out[#out + 1] = e end
  end
  return out
end

--- Closes the files this logger opened. Idempotent.
function Logger:close()
  for i = #self.files, 1, -1 do
    pcall(self.files[i].close, self.files[i])
    self.files[i] = nil
  end
end
Logger.__close = Logger.close

--- Turns a logger-ish value into a logger: a Logger is returned as is, nil
-- becomes a discarding logger, a function(level, msg, fields) is wrapped.
-- @param l
-- @treturn Logger
function M.wrap(l)
  if l == nil then return M.null() end
  if getmetatable(l) == Logger then return l end
  if type(l) == "function" then
    local self = assert(M.new { outputs = { function() end }, sampling = false, level = "debug" })
    self.writers, self.forward = {}, l
    return self
  end
  if type(l) == "table" and type(l.warn) == "function" and type(l.info) == "function" then
    return M.wrap(function(level, msg, fields) (l[level] or l.warn)(l, msg, fields) end)
  end
  error("logger expected (peerlisten.log logger, function or nil), got " .. type(l), 3)
end

--- Whether `l` is a logger made by this module.
function M.is_logger(l)
  return getmetatable(l) == Logger
end

return M
