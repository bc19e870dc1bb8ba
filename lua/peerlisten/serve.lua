--- A small HTTP/1.1 peer-probe responder for `peerlisten serve`.
--
-- `GET /health` → 200 `{"health":"true"}`, `GET /version` → 200
-- `{"peerlisten":"<version>"}`, any other path → 404, methods other than GET
-- and HEAD → 405. Keep-alive as HTTP/1.1 (HTTP/1.0: close unless asked);
-- pipelined requests are answered together with one write. A connection
-- idle longer than the listener's read timeout is closed. Requests are parsed
-- with `string.find` on the buffered bytes; responses are prebuilt strings.
-- @module peerlisten.serve

local M = {}

local find, sub, lower = string.find, string.sub, string.lower

local VERSION = "scm-1"
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

--- Handles one request line + headers; returns the response and whether to close.
local function answer(R, head, hend)
  local sp1 = find(head, " ", 1, true)
  if not sp1 then return R.bad, true end
  local sp2 = find(head, " ", sp1 + 1, true)
  local eol = find(head, "\r\n", 1, true)
  if not sp2 or not eol or sp2 > eol then return R.bad, true end
  local method = sub(head, 1, sp1 - 1)
  local path = sub(head, sp1 + 1, sp2 - 1)
  local proto = sub(head, sp2 + 1, eol - 1)
  local close
  if proto == "HTTP/1.1" then
    close = false
    if find(head, "\r\n[Cc]onnection:[ \t]*[Cc]lose", eol) then close = true end
  elseif proto == "HTTP/1.0" then
    close = not find(lower(sub(head, eol, hend)), "\r\nconnection:[ \t]*keep%-alive")
  else
    return R.bad, true
  end
  local q = find(path, "?", 1, true)
  if q then path = sub(path, 1, q - 1) end
  local set = close and R.close or R.keep
  if method == "GET" then
    if path == "/health" then return set.health, close end
    if path == "/version" then return set.version, close end
    return set.notfound, close
  elseif method == "HEAD" then
    if path == "/health" then return set.health_head, close end
    if path == "/version" then return set.version_head, close end
    return set.notfound_head, close
  end
  return set.method, close
end

--- Returns a connection handler for `listener:serve` / `peers:serve`.
-- @tparam[opt] table opts `version` (reported by /version), `read_timeout`
-- (seconds; default: the listener's), `logger` (unused for now)
-- @treturn function handler(conn)
function M.handler(opts)
  opts = opts or {}
  local R = build(opts.version or VERSION)
  local timeout = opts.read_timeout
  return function(conn)
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
        local head = sub(buf, pos, hend + 1)
        local resp
        resp, close = answer(R, head, #head)
        local cl = find(head, "\r\n[Cc]ontent%-[Ll]ength:")
        pos = hend + 4
        if cl then
          local len = tonumber(head:match("^[ \t]*(%d+)", head:find(":", cl, true) + 1))
          if not len then resp, close = R.bad, true else pos = pos + len end
        end
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
