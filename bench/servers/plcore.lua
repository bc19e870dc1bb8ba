-- Stand-in peerlisten server for the benchmark, straight on the C core
-- (require "peerlisten.core"): the same peer-probe answers as `peerlisten
-- serve` plus GET /bulk (1 MiB). Usage: plcore.lua PORT MODE CERTDIR
-- MODE: plain | tls | mtls | tickets (tickets = session_tickets = true).
local core = require "peerlisten.core"
local port, mode, dir = tonumber(arg[1]), arg[2], arg[3]

local policy
if mode ~= "plain" then
  local opts = { cert_file = dir .. "/server.crt", key_file = dir .. "/server.key",
    session_tickets = mode == "tickets" }
  if mode == "mtls" then
    opts.trusted_ca_file = dir .. "/ca.crt"
    opts.client_cert_auth = true
  end
  local err, code
  policy, err, code = core.tls_policy(opts)
  assert(policy, tostring(err) .. " " .. tostring(code))
end

local function response (body)
  return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    .. #body .. "\r\n\r\n" .. body
end
local r_health = response('{"health":"true"}')
local r_bulk = response(string.rep("x", 1 << 20))

local l = assert(core.listen{ scheme = mode == "plain" and "http" or "https",
  host = "127.0.0.1", port = port, tls = policy,
  url = (mode == "plain" and "http" or "https") .. "://127.0.0.1:" .. port,
  read_timeout = 30, write_timeout = 30 })

l:serve(function (conn)
  local buf = ""
  while true do
    local e = buf:find("\r\n\r\n", 1, true)
    if e then
      local head = buf:sub(1, e + 3)
      buf = buf:sub(e + 4)
      local path = head:match("^%u+ (%S+)")
      if not conn:write(path == "/bulk" and r_bulk or r_health) then break end
      if head:lower():find("\nconnection:%s*close") then break end
    else
      local data = conn:read(65536)
      if not data then break end
      buf = buf .. data
    end
  end
  conn:close()
end)
io.stdout:write("listening\n")
io.stdout:flush()
core.run()
