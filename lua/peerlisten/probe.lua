--- `probe(url, opts)`: would a peer link to `url` work for etcd?
--
-- Dials the URL with a member's peer TLS settings (see `peerlisten.dial`),
-- then speaks to it as an etcd peer does: `GET /version` and
-- `GET /raft/probing` on one keep-alive connection. Returns one report:
--
--    {
--      ok = true | false, url =, verdict = "one line",
--      code =, error =, side = "local" | "remote" | "network",   -- when not ok
--      local_address = "ip:port", remote_address = "ip:port",
--      tls = { version =, cipher =, alpn = } or nil,
--      server_cert = { subject =, issuer =, sans = { dns =, ip = }, not_after =, days_left = } or nil,
--      version = { status =, body = }, probing = { status =, body = },
--      dial_time = seconds (connect and handshake), rtt = seconds (the /raft/probing round trip),
--    }
-- @module peerlisten.probe

local cert = require "peerlisten.cert"
local core = require "peerlisten.core"
local dial = require "peerlisten.dial"

local M = {}

-- Which side refused, by failure code.
local SIDE = {
  ESERVERCERT = "local", ETLSCONFIG = "local", ECERT = "local", EURL = "local", EINVAL = "local",
  EADDRNOTAVAIL = "local", ENOTFOUND = "network", ETIMEDOUT = "network", ECONNREFUSED = "remote",
  ENOTTLS = "remote", EPEERREJECTED = "remote", EALPN = "remote", ETLS = "remote", EHTTP = "remote",
  EOF = "remote", ECONNRESET = "remote", EPROTO = "remote",
}

local WHY = {
  ESERVERCERT = "this member does not accept the server's certificate",
  EPEERREJECTED = "the server rejected this member's certificate",
  ENOTTLS = "the server does not speak TLS",
  ECONNREFUSED = "nothing listens there",
  ETIMEDOUT = "no answer in time",
  EALPN = "no common application protocol",
  EHTTP = "the server does not answer as an etcd peer",
}

local function rfc3339(t)
  return t and os.date("!%Y-%m-%dT%H:%M:%SZ", t) or nil
end

-- Reads one HTTP/1.1 response (status line, headers, Content-Length body).
local function read_response(conn, timeout)
  local buf = ""
  local deadline = core.walltime() + timeout
  local hend
  while true do
    hend = buf:find("\r\n\r\n", 1, true)
    if hend then break end
    if #buf >= 2 and buf:byte(1) == 21 and buf:byte(2) == 3 then break end
    if #buf > 65536 then return nil, "response headers too long", "EHTTP" end
    local left = deadline - core.walltime()
    if left <= 0 then return nil, "i/o timeout", "ETIMEDOUT" end
    local data, err, code = conn:read(65536, left)
    if not data then return nil, err, code end
    buf = buf .. data
  end
  local status = tonumber(buf:match("^HTTP/1%.%d (%d%d%d)"))
  if not status and buf:byte(1) == 21 and buf:byte(2) == 3 then
    return nil, "the server answered with a TLS alert: it expects TLS (https://)", "EHTTP"
  end
  if not status then return nil, "malformed HTTP response", "EHTTP" end
  local len = tonumber(buf:sub(1, hend):lower():match("\r\ncontent%-length:%s*(%d+)")) or 0
  local body = buf:sub(hend + 4)
  while #body < len do
    local left = deadline - core.walltime()
    if left <= 0 then return nil, "i/o timeout", "ETIMEDOUT" end
    local data, err, code = conn:read(len - #body, left)
    if not data then return nil, err, code end
    body = body .. data
  end
  return { status = status, body = body:sub(1, len) }
end

local function request(conn, host, path, timeout)
  local ok, err, code = conn:write(("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: peerlisten-probe\r\n\r\n")
    :format(path, host))
  if not ok then return nil, err, code end
  return read_response(conn, timeout)
end

local function fail(r, err, code)
  r.ok, r.error, r.code = false, err, code
  r.side = SIDE[code] or "remote"
  r.verdict = ("FAIL: %s: %s (%s)"):format(r.url, WHY[code] or "the link failed", err)
  return r
end

-- A server that closes the connection right after a TLS 1.3 handshake has
-- refused our certificate: etcd closes it without an alert when the client
-- certificate does not name the address the connection comes from. Says so
-- in etcd's words when our certificate shows that is the reason.
local function closed_after_handshake(opts, lip)
  local msg = "the server closed the connection after the TLS handshake"
  local own = opts.tls and opts.tls:info() or opts
  local file = (own.client_cert_file or "") ~= "" and own.client_cert_file or own.cert_file
  local ci = file and file ~= "" and cert.inspect(file)
  if ci and ci[1] then ci = ci[1] end
  if not ci or not lip then return msg end
  local ips = ci.sans and ci.sans.ip or {}
  for _, ip in ipairs(ips) do if ip == lip then return msg end end
  local dns = ci.sans and ci.sans.dns or {}
  if #ips == 0 and #dns == 0 then
    return msg .. ": this member's certificate has no SANs for the address it dials from, " .. lip
  end
  local names = #ips > 0 and table.concat(ips, ", ") or table.concat(dns, ", ")
  return ("%s: this member's certificate does not name %s, the address it dials from "
    .. "(etcd: x509: certificate is valid for %s, not %s)"):format(msg, lip, names, lip)
end

--- Probes a peer URL.
-- @tparam string u the peer URL
-- @tparam[opt] table opts `peerlisten.dial`'s options (TLS, `source`, `timeout`, `logger`)
-- @treturn table the report (see the module doc)
function M.probe(u, opts)
  opts = opts or {}
  local timeout = opts.timeout or 5
  local r = { ok = false, url = u }
  local t0 = core.walltime()
  local conn, err, code = dial.dial(u, opts)
  if not conn then return fail(r, err, code) end
  r.dial_time = core.walltime() - t0
  local lip, lport = conn:local_addr()
  r.local_address = lport and ((lip:find(":", 1, true) and "[" .. lip .. "]" or lip) .. ":" .. lport) or lip
  local rip, rport = conn:peer()
  r.remote_address = rport and ((rip:find(":", 1, true) and "[" .. rip .. "]" or rip) .. ":" .. rport) or rip
  local info = conn:tls_info()
  if info then
    r.tls = { version = info.version, cipher = info.cipher, alpn = info.alpn }
    local pc = info.peer_cert
    if pc then
      r.server_cert = { subject = pc.subject, issuer = pc.issuer, sans = pc.sans,
        not_after = rfc3339(pc.not_after), days_left = pc.not_after and math.floor((pc.not_after - os.time()) / 86400) }
    end
  end
  local host = u:match("^%a+://([^/]+)") or "localhost"
  local resp
  resp, err, code = request(conn, host, "/version", timeout)
  if not resp then
    conn:close()
    if info and (code == "EOF" or code == "ECONNRESET") then
      err, code = closed_after_handshake(opts, lip), "EPEERREJECTED"
    elseif not info and (code == "EOF" or code == "ECONNRESET") then
      err, code = "the server closed the connection without an answer (a TLS listener? the URL says "
        .. u:match("^%a+") .. "://)", "EHTTP"
    end
    return fail(r, err, code)
  end
  r.version = resp
  local t1 = core.walltime()
  resp, err, code = request(conn, host, "/raft/probing", timeout)
  conn:close()
  if not resp then return fail(r, err, code) end
  r.rtt = core.walltime() - t1
  r.probing = resp
  if resp.status ~= 200 or not resp.body:find('"OK":true', 1, true) then
    return fail(r, ("GET /raft/probing: HTTP %d"):format(resp.status), "EHTTP")
  end
  r.ok = true
  r.verdict = ("OK: %s answers as an etcd peer (%s, from %s, rtt %.1f ms)"):format(u,
    r.tls and (r.tls.version .. " " .. tostring(r.tls.cipher)) or "plain TCP", r.local_address, r.rtt * 1000)
  return r
end

--- The dial options a member configured by `cfg` uses for its peers:
-- its peer TLS files (auto-TLS: its self-signed pair, created as etcd would),
-- cipher suites and TLS versions.
-- @tparam table cfg a loaded configuration
-- @treturn[1] table options for `dial`/`probe`
-- @treturn[2] nil
-- @treturn[2] string
-- @treturn[2] string
function M.member_options(cfg)
  local pts = cfg.peer_transport_security
  local o = { cert_file = pts.cert_file, key_file = pts.key_file, client_cert_file = pts.client_cert_file,
    client_key_file = pts.client_key_file, trusted_ca_file = pts.trusted_ca_file,
    min_version = cfg.tls_min_version ~= "" and cfg.tls_min_version or nil,
    max_version = cfg.tls_max_version ~= "" and cfg.tls_max_version or nil,
    cipher_suites = #cfg.cipher_suites > 0 and cfg.cipher_suites or nil }
  if pts.auto_tls and pts.cert_file == "" and pts.key_file == "" then
    local hosts = {}
    for _, pu in ipairs(cfg._peer_urls or {}) do
      if pu.host and pu.host ~= "" then hosts[#hosts + 1] = pu.host end
    end
    local c, k, kcode = cert.self_signed { dir = cfg.data_dir .. "/fixtures/peer", hosts = hosts,
      validity_years = cfg.self_signed_cert_validity }
    if not c then return nil, k, kcode end
    o.cert_file, o.key_file, o.client_cert_file, o.client_key_file = c, k, nil, nil
  end
  return o
end

return M
