--- etcd's listen-URL rules: parsing, validation, ordering.
--
-- Parses URLs the way etcd's `types.NewURLs` and `Config.Validate` see them
-- and returns tables that `core.listen`
-- takes as its arguments: `{ url =, scheme =, host =, port =, path = }`.
-- Errors are `nil, message, "EURL"` with etcd's wording.
-- @module peerlisten.url

local M = {}

local SCHEMES = { http = true, https = true, unix = true, unixs = true }

local function fail(msg)
  return nil, msg, "EURL"
end

--- Whether `s` is an IPv4 literal as Go's net.ParseIP accepts it (no leading zeros).
local function is_ipv4(s)
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return false end
  for _, p in ipairs { a, b, c, d } do
    if #p > 3 or tonumber(p) > 255 or (#p > 1 and p:sub(1, 1) == "0") then return false end
  end
  return true
end

--- Whether `s` is an IPv6 literal (without brackets or zone).
local function is_ipv6(s)
  if not s:find(":", 1, true) then return false end
  local head, tail = s, nil
  local dbl = s:find("::", 1, true)
  if dbl then
    if s:find("::", dbl + 1, true) then return false end
    head, tail = s:sub(1, dbl - 1), s:sub(dbl + 2)
  end
  local groups = 0
  local function count(part, last)
    if part == "" then return true end
    local fields = {}
    for f in (part .. ":"):gmatch("([^:]*):") do fields[#fields + 1] = f end
    for i, f in ipairs(fields) do
      if i == #fields and last and f:find(".", 1, true) then
        if not is_ipv4(f) then return false end
        groups = groups + 2
      elseif not f:match("^%x%x?%x?%x?$") then
        return false
      else
        groups = groups + 1
      end
    end
    return true
  end
  if dbl then
    if not count(head, false) or not count(tail, true) then return false end
    return groups < 8
  end
  return count(head, true) and groups == 8
end

--- Whether `host` is an IP literal (IPv4 or IPv6, no brackets).
-- @tparam string host
-- @treturn boolean
function M.is_ip(host)
  return is_ipv4(host) or is_ipv6(host)
end

-- Go's net.SplitHostPort, returning host, port or nil.
local function split_host_port(hostport)
  if hostport:sub(1, 1) == "[" then
    local h, p = hostport:match("^%[([^%]]*)%]:(.*)$")
    if not h or p:find(":", 1, true) then return nil end
    return h, p
  end
  local h, p = hostport:match("^([^:]*):([^:]*)$")
  if not h then return nil end
  return h, p
end

--- Parses one URL.
-- Applies etcd's rules: scheme http, https, unix or unixs; for http(s) a
-- `host:port` and no path. For unix schemes the socket path is the URL host
-- (etcd's rule: `unix://name.sock:1` binds the file `name.sock:1`); when the
-- host is empty, the URL path is the socket path (`unix:///abs/dir/peer.sock`).
-- @tparam string s the URL; surrounding whitespace is trimmed
-- @tparam[opt] table opts `unix_hostport`: see `parse_list`
-- @treturn[1] table `{ url =, scheme =, host =, port =, path = }`
-- @treturn[2] nil
-- @treturn[2] string etcd's error message
-- @treturn[2] string "EURL"
function M.parse(s, opts)
  if type(s) ~= "string" then error("bad argument #1 to 'parse' (string expected, got " .. type(s) .. ")", 2) end
  local input = s:match("^%s*(.-)%s*$")
  local rest = input:gsub("#.*$", "")
  local scheme
  local c = rest:match("^([%a][%w+%-.]*):")
  if c then
    scheme = c:lower()
    rest = rest:sub(#c + 2)
  elseif rest:sub(1, 1) == ":" then
    return fail(("parse %q: missing protocol scheme"):format(input))
  elseif rest:match("^[^/?]*:") then
    return fail(("parse %q: first path segment in URL cannot contain colon"):format(input))
  end
  local query
  rest, query = rest:match("^([^?]*)(.*)$")
  local authority, path = nil, rest
  if rest:sub(1, 2) == "//" then
    authority, path = rest:sub(3):match("^([^/]*)(.*)$")
  end
  local host = authority and authority:gsub("^.*@", "") or ""
  if host:sub(1, 1) == "[" then
    local close = host:find("]", 1, true)
    if not close then
      return fail(("parse %q: missing ']' in host"):format(input))
    end
    local after = host:sub(close + 1)
    if after ~= "" and not after:match("^:%d*$") then
      return fail(("parse %q: invalid port %q after host"):format(input, after))
    end
  elseif host:find(":", 1, true) then
    local port = host:match(":([^:]*)$")
    if not port:match("^%d*$") then
      return fail(("parse %q: invalid port %q after host"):format(input, ":" .. port))
    end
  end
  if not scheme or not SCHEMES[scheme] then
    return fail("URL scheme must be http, https, unix, or unixs: " .. input)
  end
  local canonical = scheme .. "://" .. host .. path .. query
  if (scheme == "unix" or scheme == "unixs") and opts and opts.unix_hostport
    and not split_host_port(host) then
    return fail(('URL address does not have the form "host:port": %s'):format(input))
  end
  if scheme == "unix" or scheme == "unixs" then
    local sock = host ~= "" and host or path
    if sock == "" then
      return fail("unix socket URL has no socket path: " .. input)
    end
    return { url = canonical, scheme = scheme, host = host, path = sock }
  end
  local h, p = split_host_port(host)
  if not h then
    return fail(('URL address does not have the form "host:port": %s'):format(input))
  end
  if path ~= "" then
    return fail("URL must not contain a path: " .. input)
  end
  -- Go's URL parser takes any digits; the bind then says "invalid port"
  -- (the listener refuses ports above 65535 with etcd's words)
  local port = math.tointeger(tonumber(p)) or 0
  if #p > 9 then port = 999999999 end
  return { url = canonical, scheme = scheme, host = h, port = port }
end

--- Parses a URL list: a comma-separated string or an array of strings.
-- Each element is trimmed and parsed with `parse`.
-- @tparam string|table list
-- @tparam[opt] table opts `sort` (default false): sort by URL string, as etcd
-- does for flags, env and YAML; `unique` (default false): drop repeated URLs,
-- as etcd does for flags and env; `unix_hostport` (default false): unix URLs
-- must be `host:port` too, as etcd before 3.5.13
-- @treturn[1] table array of parsed URLs
-- @treturn[2] nil
-- @treturn[2] string
-- @treturn[2] string "EURL"
function M.parse_list(list, opts)
  opts = opts or {}
  local items = {}
  if type(list) == "string" then
    for item in (list .. ","):gmatch("([^,]*),") do items[#items + 1] = item end
  elseif type(list) == "table" then
    for i = 1, #list do
      if type(list[i]) ~= "string" then
        return nil, ("URL #%d is a %s, not a string"):format(i, type(list[i])), "EURL"
      end
      items[i] = list[i]
    end
  else
    error("bad argument #1 to 'parse_list' (string or table expected, got " .. type(list) .. ")", 2)
  end
  if #items == 0 then return fail("no valid URLs given") end
  local out, seen = {}, {}
  for _, item in ipairs(items) do
    local u, err, code = M.parse(item, opts)
    if not u then return nil, err, code end
    if not (opts.unique and seen[u.url]) then
      seen[u.url] = true
      out[#out + 1] = u
    end
  end
  if opts.sort then
    table.sort(out, function(a, b) return a.url < b.url end)
  end
  return out
end

--- etcd's bind check (`Config.Validate`): the host of an http(s) URL must be
-- an IP literal or `localhost`. Unix URLs always pass.
-- @tparam table u a parsed URL
-- @treturn[1] true
-- @treturn[2] nil
-- @treturn[2] string `expected IP in URL for binding (<url>)`
-- @treturn[2] string "EURL"
function M.check_bind(u)
  if u.scheme == "unix" or u.scheme == "unixs" then return true end
  if u.host == "localhost" or M.is_ip(u.host) then return true end
  return fail(("expected IP in URL for binding (%s)"):format(u.url))
end

--- The URL strings of a parsed list.
-- @tparam table list array of parsed URLs
-- @treturn table array of strings
function M.strings(list)
  local out = {}
  for i, u in ipairs(list) do out[i] = u.url end
  return out
end

return M
