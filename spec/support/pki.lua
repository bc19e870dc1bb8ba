-- A throw-away PKI for the TLS specs, made with the
-- openssl CLI in a temp dir at test time (no private key is committed).
--
--   local pki = require "support.pki"
--   local P = pki.new()   -- P.dir, P.path("ca.crt"), P.cert("client-good") ...
--   P:cleanup()
--
-- Files (all PEM unless noted), after etcd's own test PKI:
--   ca.crt/.key             test CA (EC P-256)
--   other-ca.crt/.key       an unrelated CA
--   server.crt/.key         CN peer1, SAN IP 127.0.0.1 + DNS localhost, server+client auth
--   server2.crt/.key        CN peer2, same SANs (for reload specs)
--   client-good             CN peer1, SAN IP 127.0.0.1
--   client-badsan           CN peer1, SAN IP 10.9.9.9
--   client-badsandns        CN peer1, SAN DNS nonexistent.invalid
--   client-localhostdns     CN peer1, SAN DNS localhost
--   client-othercn          CN other, SAN IP 127.0.0.1
--   client-nosan            CN nosan, no SAN
--   client-otherca          CN peer1, SAN IP 127.0.0.1, issued by other-ca
--   client-expired          CN peer1, SAN IP 127.0.0.1, expired
--   client-serveronly       CN peer1, SAN IP 127.0.0.1, EKU serverAuth only
--   empty.crl / empty.crl.der           CRL of ca revoking nothing
--   revoked.crl / revoked.crl.der       CRL of ca revoking client-good
--   badsig.crl              revoked.crl.der with a broken signature (DER)
--   stale.crl               CRL of ca revoking client-good, nextUpdate 1 s after creation
--                           (P.stale_at: os.time() after which it is stale)
--   rsa-server.crt/.key     RSA 2048 server cert (for RSA-only cipher suites)
local helper = require "helper"

local M = {}
M.__index = M

-- Runs an openssl command, raising when it fails.
local function sh(cmd)
  local out, status = helper.run(cmd .. " 2>&1")
  if status ~= 0 then error("pki: command failed: " .. cmd .. "\n" .. out, 2) end
end

local write = helper.writefile

function M.available()
  return helper.have("openssl")
end

local function ca_cnf(dir, name, days_back)
  local d = dir .. "/" .. name .. "-db"
  os.execute("mkdir -p '" .. d .. "'")
  write(d .. "/index.txt", "")
  write(d .. "/crlnumber", "01\n")
  write(d .. "/ca.cnf", table.concat({
    "[ ca ]", "default_ca = CA_default",
    "[ CA_default ]",
    "database = " .. d .. "/index.txt",
    "crlnumber = " .. d .. "/crlnumber",
    "default_md = sha256",
    "default_crl_days = " .. (days_back or 30),
    "", }, "\n"))
  return d .. "/ca.cnf"
end

function M.new()
  local p = io.popen("mktemp -d /tmp/peerlisten-spec.pki.XXXXXX")
  local dir = p:read("l")
  p:close()
  local self = setmetatable({ dir = dir }, M)
  local q = function(name) return "'" .. dir .. "/" .. name .. "'" end
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
  -- CAs
  for _, ca in ipairs { "ca", "other-ca" } do
    sh(("openssl req -x509 %s -keyout %s -out %s -days 30 -subj '/O=peerlisten test/CN=%s' " ..
        "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign")
       :format(ec, q(ca .. ".key"), q(ca .. ".crt"), ca))
  end
  -- leaf certificates
  local leaves = {
    { "server", "peer1", "IP:127.0.0.1,DNS:localhost", "serverAuth,clientAuth" },
    { "server2", "peer2", "IP:127.0.0.1,DNS:localhost", "serverAuth,clientAuth" },
    { "client-good", "peer1", "IP:127.0.0.1", "serverAuth,clientAuth" },
    { "client-badsan", "peer1", "IP:10.9.9.9", "serverAuth,clientAuth" },
    { "client-badsandns", "peer1", "DNS:nonexistent.invalid", "serverAuth,clientAuth" },
    { "client-localhostdns", "peer1", "DNS:localhost", "serverAuth,clientAuth" },
    { "client-othercn", "other", "IP:127.0.0.1", "serverAuth,clientAuth" },
    { "client-nosan", "nosan", nil, "serverAuth,clientAuth" },
    { "client-otherca", "peer1", "IP:127.0.0.1", "serverAuth,clientAuth", "other-ca" },
    { "client-expired", "peer1", "IP:127.0.0.1", "serverAuth,clientAuth", "ca", true },
    { "client-serveronly", "peer1", "IP:127.0.0.1", "serverAuth" },
  }
  for _, l in ipairs(leaves) do
    local name, cn, san, eku, ca, expired = l[1], l[2], l[3], l[4], l[5] or "ca", l[6]
    local ext = dir .. "/" .. name .. ".ext"
    write(ext, "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n" ..
      "extendedKeyUsage=" .. eku .. "\n" .. (san and ("subjectAltName=" .. san .. "\n") or ""))
    sh(("openssl req %s -keyout %s -out %s -subj '/CN=%s'")
       :format(ec, q(name .. ".key"), q(name .. ".csr"), cn))
    if expired then
      -- backdated validity needs `openssl ca` (-startdate/-enddate)
      local cnf = ca_cnf(dir, "exp")
      write(cnf, table.concat({
        "[ ca ]", "default_ca = CA_default", "[ CA_default ]",
        "database = " .. dir .. "/exp-db/index.txt", "new_certs_dir = " .. dir .. "/exp-db",
        "serial = " .. dir .. "/exp-db/serial", "default_md = sha256", "policy = pol",
        "unique_subject = no",
        "[ pol ]", "commonName = supplied", "" }, "\n"))
      write(dir .. "/exp-db/serial", "1000\n")
      sh(("openssl ca -batch -config '%s' -cert %s -keyfile %s -in %s -out %s -startdate 20200101000000Z " ..
          "-enddate 20200201000000Z -extfile %s -notext")
         :format(cnf, q(ca .. ".crt"), q(ca .. ".key"), q(name .. ".csr"),
                 q(name .. ".crt"), q(name .. ".ext")))
    else
      sh(("openssl x509 -req -in %s -CA %s -CAkey %s -CAcreateserial -days 30 -extfile %s -out %s")
         :format(q(name .. ".csr"), q(ca .. ".crt"), q(ca .. ".key"), q(name .. ".ext"), q(name .. ".crt")))
    end
  end
  -- RSA server certificate (for TLS_RSA_*/ECDHE_RSA-only cipher lists)
  write(dir .. "/rsa-server.ext", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
  sh(("openssl req -newkey rsa:2048 -nodes -keyout %s -out %s -subj '/CN=peer1'")
     :format(q("rsa-server.key"), q("rsa-server.csr")))
  sh(("openssl x509 -req -in %s -CA %s -CAkey %s -CAcreateserial -days 30 -extfile %s -out %s")
     :format(q("rsa-server.csr"), q("ca.crt"), q("ca.key"), q("rsa-server.ext"), q("rsa-server.crt")))
  -- CRLs
  local cnf = "'" .. ca_cnf(dir, "ca") .. "'"
  sh(("openssl ca -gencrl -batch -config %s -cert %s -keyfile %s -out %s")
     :format(cnf, q("ca.crt"), q("ca.key"), q("empty.crl")))
  sh(("openssl ca -revoke %s -batch -config %s -cert %s -keyfile %s")
     :format(q("client-good.crt"), cnf, q("ca.crt"), q("ca.key")))
  sh(("openssl ca -gencrl -batch -config %s -cert %s -keyfile %s -out %s")
     :format(cnf, q("ca.crt"), q("ca.key"), q("revoked.crl")))
  sh(("openssl ca -gencrl -batch -config %s -cert %s -keyfile %s -crlsec 1 -out %s")
     :format(cnf, q("ca.crt"), q("ca.key"), q("stale.crl")))
  self.stale_at = os.time() + 2
  for _, n in ipairs { "empty", "revoked" } do
    sh(("openssl crl -in %s -outform DER -out %s"):format(q(n .. ".crl"), q(n .. ".crl.der")))
  end
  -- revoked.crl with a broken signature (last byte of the DER flipped)
  do
    local f = assert(io.open(dir .. "/revoked.crl.der", "rb"))
    local der = f:read("a")
    f:close()
    local last = der:byte(#der)
    write(dir .. "/badsig.crl", der:sub(1, -2) .. string.char(last ~ 0xff))
  end
  return self
end

function M:path(name) return self.dir .. "/" .. name end
function M:cert(name) return self.dir .. "/" .. name .. ".crt" end
function M:key(name) return self.dir .. "/" .. name .. ".key" end

--- Lower-case hex serial of a certificate, as etcd prints it.
function M:serial(name)
  local p = io.popen("openssl x509 -noout -serial -in '" .. self:cert(name) .. "'")
  local s = p:read("l")
  p:close()
  s = s:match("serial=(%x+)"):lower():gsub("^0+(%x)", "%1")
  return s
end

--- Issues one more client certificate at test time with an exact validity
-- period (unix times; `openssl ca -startdate/-enddate`), e.g. one that expires
-- a few seconds from now.  o: cn (default "peer1"), san (default
-- "IP:127.0.0.1"), ca (default "ca"), not_before, not_after.
-- Returns the certificate's path; the key is P:key(name).
function M:issue(name, o)
  local dir = self.dir
  local q = function(n) return "'" .. dir .. "/" .. n .. "'" end
  local ca = o.ca or "ca"
  local db = dir .. "/issue-db"
  os.execute("mkdir -p '" .. db .. "'")
  local f = io.open(db .. "/serial", "r")
  if f then f:close() else write(db .. "/serial", "2000\n") write(db .. "/index.txt", "") end
  write(db .. "/ca.cnf", table.concat({
    "[ ca ]", "default_ca = CA_default", "[ CA_default ]",
    "database = " .. db .. "/index.txt", "new_certs_dir = " .. db,
    "serial = " .. db .. "/serial", "default_md = sha256", "policy = pol",
    "unique_subject = no",
    "[ pol ]", "commonName = supplied", "" }, "\n"))
  write(dir .. "/" .. name .. ".ext", "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n" ..
    "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=" .. (o.san or "IP:127.0.0.1") .. "\n")
  sh(("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s -out %s -subj '/CN=%s'")
     :format(q(name .. ".key"), q(name .. ".csr"), o.cn or "peer1"))
  sh(("openssl ca -batch -config '%s' -cert %s -keyfile %s -in %s -out %s -startdate %s -enddate %s -extfile %s -notext")
     :format(db .. "/ca.cnf", q(ca .. ".crt"), q(ca .. ".key"), q(name .. ".csr"), q(name .. ".crt"),
             os.date("!%Y%m%d%H%M%SZ", o.not_before), os.date("!%Y%m%d%H%M%SZ", o.not_after), q(name .. ".ext")))
  return self:cert(name)
end

--- Copies a file (used to replace cert files while serving).
function M.copy(_, from, to)
  sh(("cp '%s' '%s'"):format(from, to))
end

function M:cleanup()
  if self.dir and self.dir:match("^/tmp/peerlisten%-spec") then
    os.execute("rm -rf '" .. self.dir .. "'")
  end
  self.dir = nil
end

return M
