--- A small HTTP/1.1 peer-probe responder for `peerlisten serve`.
--
-- `GET /health` → 200 `{"health":"true"}`, `GET /version` → 200
-- `{"peerlisten":"<version>"}`, `/raft/probing` (any method, as etcd's
-- prober handler) → 200 `{"OK":true,"Now":"<RFC 3339 time>"}`, any other
-- path → 404, methods other than GET and HEAD → 405. Keep-alive as HTTP/1.1 (HTTP/1.0: close unless asked);
-- pipelined requests are answered together with one write. A connection
-- idle longer than the listener's read timeout is closed. Requests are parsed
-- with plain `string.find`s on the buffered bytes (patterns only for unusual
-- request lines); responses are prebuilt strings.
-- @module peerlisten.responder

local M = {}

local core = require "peerlisten.core"

local find, sub, lower, byte = string.find, string.sub, string.lower, string.byte

local VERSION = "0.1.0"
local MAX_HEADER = 16 * 1024

local function response(status, body, ctype, close)
  return ("HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n%s")
    :format(status, ctype, #body, close and "Connection: close\r\n" or "", body)
end

local function build(version)
  local r = {}
  local bodies = {
    health = '{"health":"true"}',
    version = ('{"peerlisten":"%s","etcdserver":"","etcdcluster":""}'):format(version),
    notfound = "404 page not found\n",
    method = "405 method not allowed\n",
    bad = "400 Bad Request\n",
  }
  for _, close in ipairs { false, true } do
    local k = close and "close" or "keep"
    r[k] = {
      health = response("200 OK", bodies.health, "application/json", close),
      version = response("200 OK", bodies.version, "application/json", close),
      notfound = response("404 Not Found", bodies.notfound, "text/plain; charset=utf-8", close),
      method = response("405 Method Not Allowed", bodies.method, "text/plain; charset=utf-8", close),
    }
    r[k].health_head = r[k].health:sub(1, #r[k].health - #bodies.health)
    r[k].version_head = r[k].version:sub(1, #r[k].version - #bodies.version)
    r[k].notfound_head = r[k].notfound:sub(1, #r[k].notfound - #bodies.notfound)
  end
  r.bad = response("400 Bad Request", bodies.bad, "text/plain; charset=utf-8", true)
  return r
end

-- etcd's prober handler: its JSON health with the current time, any method.
local function probing(close, head)
  local t = core.walltime()
  local s = math.floor(t)
  local body = ('{"OK":true,"Now":"%s.%09dZ"}\n'):format(os.date("!%Y-%m-%dT%H:%M:%S", s),
    math.floor((t - s) * 1e9))
  local hdr = response("200 OK", body, "text/plain; charset=utf-8", close)
  return head and hdr:sub(1, #hdr - #body) or hdr
end

-- Request lines answered without a pattern match: line -> { method, path, proto }.
local KNOWN = {}
for _, m in ipairs { "GET", "HEAD" } do
  for _, path in ipairs { "/health", "/version" } do
    for _, v in ipairs { "0", "1" } do
      KNOWN[("%s %s HTTP/1.%s"):format(m, path, v)] = { m, path, v }
    end
  end
end

-- Answers the request whose headers span buf[pos .. hend+3]; returns the
-- response, whether to close, and the body length to skip (nil: bad request).
-- Header lines are walked with plain finds; only lines starting with C/c
-- (Connection, Content-Length) are looked at further.
local function answer(R, buf, pos, hend)
  local _, eol, method, path, proto
  local le = find(buf, "\r\n", pos, true)
  local known = KNOWN[sub(buf, pos, le - 1)]
  if known then
    method, path, proto = known[1], known[2], known[3]
    eol = le + 1
  else
    _, eol, method, path, proto = find(buf, "^(%u+) ([^ \r\n]+) HTTP/1%.([01])\r\n", pos)
    if not eol or eol > hend + 1 then return R.bad, true end
  end
  local close = proto == "0"
  local skip = 0
  local seen_conn, seen_len = false, false
  local p = eol + 1
  while p <= hend do
    local e = find(buf, "\r\n", p, true)
    local b = byte(buf, p)
    if b == 67 or b == 99 then   -- C c
      local name = lower(sub(buf, p, p + 10))
      if name == "connection:" then
        if not seen_conn then
          seen_conn = true
          local v = sub(buf, p + 11, e - 1)
          if v == " close" then close = true
          elseif v == " keep-alive" then close = false
          else
            v = lower(v)
            if find(v, "close", 1, true) then close = true
            elseif find(v, "keep-alive", 1, true) then close = false end
          end
        end
      elseif name == "content-len" and not seen_len
        and lower(sub(buf, p + 11, p + 14)) == "gth:" then
        seen_len = true
        local _, _, len = find(buf, "^[ \t]*(%d+)", p + 15)
        if not len then return R.bad, true end
        skip = tonumber(len)
      end
    end
    p = e + 2
  end
  if not known then
    local q = find(path, "?", 1, true)
    if q then path = sub(path, 1, q - 1) end
  end
  local set = close and R.close or R.keep
  if path == "/raft/probing" then return probing(close, method == "HEAD"), close, skip end
  if method == "GET" then
    if path == "/health" then return set.health, close, skip end
    if path == "/version" then return set.version, close, skip end
    return set.notfound, close, skip
  elseif method == "HEAD" then
    if path == "/health" then return set.health_head, close, skip end
    if path == "/version" then return set.version_head, close, skip end
    return set.notfound_head, close, skip
  end
  return set.method, close, skip
end

--- Returns a connection handler for `listener:serve` / `peers:serve`.
-- @tparam[opt] table opts `version` (reported by /version), `read_timeout`
-- (seconds; default: the listener's), `logger` (accepted TLS peers are
-- logged at debug level: subject, SANs, TLS version)
-- @treturn function handler(conn)
function M.handler(opts)
  opts = opts or {}
  local R = build(opts.version or VERSION)
  local timeout = opts.read_timeout
  local logger = opts.logger
  -- asked once, not per connection (a method call on every accept): a
  -- logger's level is fixed, and a closed one drops entries itself
  local log_peers = logger ~= nil and logger:enabled("debug")
  return function(conn)
    if log_peers then
      local info = conn:tls_info()
      local pc = info and info.peer_cert
      logger:debug("accepted peer connection", { remote = (conn:peer()), ["tls-version"] = info and info.version,
        subject = pc and pc.subject, ["dns-sans"] = pc and pc.sans and pc.sans.dns,
        ["ip-sans"] = pc and pc.sans and pc.sans.ip })
    end
    local buf, skip = "", 0
    while true do
      local data = conn:read(65536, timeout)
      if not data or data == "" then break end
      if skip > 0 then
        local drop = skip < #data and skip or #data
        skip = skip - drop
        data = sub(data, drop + 1)
      end
      if buf == "" then buf = data else buf = buf .. data end
      local pos, outs, n, close = 1, nil, 0, false
      while true do
        local hend = find(buf, "\r\n\r\n", pos, true)
        if not hend then break end
        local resp, len
        resp, close, len = answer(R, buf, pos, hend)
        pos = hend + 4 + (len or 0)
        n = n + 1
        if n == 1 then outs = resp elseif n == 2 then outs = { outs, resp } else outs[n] = resp end
        if close then break end
      end
      if n > 0 then
        local ok = conn:write(n == 1 and outs or table.concat(outs))
        if not ok or close then break end
        if pos > #buf then
          skip = pos - #buf - 1
          buf = ""
        else
          buf = sub(buf, pos)
        end
      elseif #buf > MAX_HEADER then
        conn:write(R.bad)
        break
      end
    end
    conn:close()
  end
end

M.VERSION = VERSION

return M
