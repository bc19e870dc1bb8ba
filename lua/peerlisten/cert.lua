--- Certificates: etcd's self-signed peer certificate, inspection, and a small cluster CA.
--
-- `self_signed` reproduces etcd's peer auto-TLS (`transport.SelfCert`): the same
-- directory rules, certificate fields and log lines, plus what etcd lacks: keys are written 0600
-- from the first byte, both files atomically, and an existing pair is reused only when it is
-- still good. `ca` and `issue` replace the usual cfssl/openssl scripts for mutual-TLS peers.
--
-- Arguments naming a certificate or key accept a file path or the PEM text itself.
-- Failures return `nil, message, code`: "ECONFIG" for bad arguments, "ECERT" for certificate
-- content, libuv error names ("ENOENT", "EACCES", "ENOTDIR", ...) for files.
-- @module peerlisten.cert

local core = require "peerlisten.core"
local log = require "peerlisten.log"

local M = {}

local floor = math.floor
local DAY = 86400
local YEAR = 365 * DAY
local BACKDATE = 300   -- ca/issue: tolerate peers whose clocks run a little late

--- Key types accepted by `key_type` options.
M.KEY_TYPES = { "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096" }
local KEY_TYPE = {}
for _, t in ipairs(M.KEY_TYPES) do KEY_TYPE[t] = true end

-- helpers -------------------------------------------------------------------

local function rfc3339(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", t)
end

local function check_opts(opts, fname)
  if type(opts) ~= "table" then
    error(("bad argument #1 to '%s' (table expected, got %s)"):format(fname, type(opts)), 3)
  end
end

local function opt_type(opts, key, want, fname)
  local v = opts[key]
  if v ~= nil and type(v) ~= want then
    error(("bad argument #1 to '%s' (field '%s': %s expected, got %s)"):format(fname, key, want, type(v)), 3)
  end
  return v
end

-- Go's %q for the strings we quote (paths): backslash escapes, \xNN for controls.
local function go_quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' or c == "\\" then return "\\" .. c end
    if c == "\n" then return "\\n" end
    if c == "\t" then return "\\t" end
    if c == "\r" then return "\\r" end
    return ("\\x%02x"):format(c:byte())
  end) .. '"'
end

-- Lexically cleaned absolute path (like Go's filepath.Abs).
local function abspath(p)
  if p:sub(1, 1) ~= "/" then
    local cwd, err, code = core.cert_cwd()
    if not cwd then return nil, err, code end
    p = cwd .. "/" .. p
  end
  local parts = {}
  for seg in p:gmatch("[^/]+") do
    if seg == ".." then
      parts[#parts] = nil
    elseif seg ~= "." then
      parts[#parts + 1] = seg
    end
  end
  return "/" .. table.concat(parts, "/")
end

local function is_pem(s)
  return s:find("-----BEGIN ", 1, true) ~= nil
end

-- The PEM text of a path-or-PEM argument.
local function load(arg)
  if is_pem(arg) then return arg end
  return core.cert_read_file(arg)
end

local function key_type_of(key)
  if key.type == "ecdsa" and key.curve then return "ecdsa-" .. key.curve:lower():gsub("%-", "") end
  if key.type == "rsa" then return "rsa-" .. key.bits end
  return key.type
end

local function check_validity(v, fname)
  if v == nil then return nil end
  if type(v) ~= "number" then
    error(("bad argument #1 to '%s' (field 'validity_years': number expected, got %s)"):format(fname, type(v)), 3)
  end
  if v ~= v or v <= 0 or v == math.huge then
    return "selfSignedCertValidity is invalid,it should be greater than 0"
  end
  return nil
end

local function check_key_type(kt)
  if not KEY_TYPE[kt] then
    return ('unknown key type %s (must be one of: %s)'):format(go_quote(tostring(kt)),
      table.concat(M.KEY_TYPES, ", "))
  end
end

-- Whether `name` is a DNS name we put into a certificate (wildcard first label allowed).
local function dns_problem(name)
  if name == "" then return "empty host" end
  if #name > 253 then return "name longer than 253 characters" end
  local i = 0
  for label in (name .. "."):gmatch("([^.]*)%.") do
    i = i + 1
    if label == "" then return "empty label" end
    if #label > 63 then return "label longer than 63 characters" end
    if not (label == "*" and i == 1) then
      if label:find("[^%w%-_]") then return "invalid character" end
      if label:sub(1, 1) == "-" or label:sub(-1) == "-" then return "label starts or ends with '-'" end
    end
  end
  if name:match("^[%d.]+$") then return "not an IP address and not a host name" end
  return nil
end

--- Splits a host spec into (kind, name): kind "ip" (canonical text) or "dns".
-- Accepts `host`, `host:port`, `[v6]`, `[v6]:port`, a bare IPv6 literal, or a URL
-- (`https://host:port/...`: its host). Returns nil, message on a bad host.
local function parse_host(spec)
  if type(spec) ~= "string" then
    return nil, ("invalid host %s: string expected"):format(tostring(spec))
  end
  local h = spec
  local scheme_rest = h:match("^%a[%w+.-]*://(.*)$")
  if scheme_rest then h = scheme_rest:match("^([^/?#]*)") end
  local host, port
  if h:sub(1, 1) == "[" then
    host, port = h:match("^%[([^%]]*)%]:?(.*)$")
    if not host or (port ~= "" and h:match("^%[[^%]]*%](.)") ~= ":") then
      return nil, ("invalid host %s: bad brackets"):format(go_quote(spec))
    end
    if not core.cert_ip(host) or not host:find(":", 1, true) then
      return nil, ("invalid host %s: not an IPv6 address in brackets"):format(go_quote(spec))
    end
  else
    local _, colons = h:gsub(":", "")
    if colons == 1 then
      host, port = h:match("^(.*):(.*)$")
    else
      host, port = h, ""
    end
  end
  if port ~= "" and not (port:match("^%d+$") and tonumber(port) <= 65535) then
    return nil, ("invalid host %s: bad port %s"):format(go_quote(spec), go_quote(port))
  end
  local ip = core.cert_ip(host)
  if ip then return "ip", ip end
  if host:find("%", 1, true) then
    return nil, ("invalid host %s: zoned IPv6 addresses cannot be certificate names"):format(go_quote(spec))
  end
  if host:sub(-1) == "." and #host > 1 then host = host:sub(1, -2) end
  local why = dns_problem(host)
  if why then return nil, ("invalid host %s: %s"):format(go_quote(spec), why) end
  return "dns", host
end

-- Parses a list of host specs into { dns = {...}, ips = {...} } (duplicates dropped).
local function parse_hosts(list, field)
  if list == nil then return { dns = {}, ips = {} } end
  if type(list) == "string" then list = { list } end
  if type(list) ~= "table" then
    return nil, ("%s: list of hosts expected, got %s"):format(field, type(list))
  end
  local out, seen = { dns = {}, ips = {} }, {}
  for _, spec in ipairs(list) do
    local kind, name = parse_host(spec)
    if not kind then return nil, name end
    local key = kind .. " " .. name:lower()
    if not seen[key] then
      seen[key] = true
      local t = kind == "ip" and out.ips or out.dns
      t[#t + 1] = name
    end
  end
  return out
end

-- Why the certificate described by `info` does not cover `names`, or nil.
local function uncovered(info, names)
  local have = {}
  for _, d in ipairs(info.sans.dns) do have["dns " .. d:lower()] = true end
  for _, ip in ipairs(info.sans.ip) do have["ip " .. (core.cert_ip(ip) or ip)] = true end
  for _, d in ipairs(names.dns) do
    if not have["dns " .. d:lower()] then return "certificate does not cover host " .. d end
  end
  for _, ip in ipairs(names.ips) do
    if not have["ip " .. ip] then return "certificate does not cover IP address " .. ip end
  end
  return nil
end

-- Loads and checks a certificate + key pair: returns info, or nil and why not.
local function check_pair(cert_path, key_path, now)
  local cpem, err = core.cert_read_file(cert_path)
  if not cpem then return nil, "cannot read certificate: " .. err end
  local list
  list, err = core.cert_inspect(cpem)
  if not list then return nil, "cannot parse " .. cert_path .. ": " .. err end
  local kpem
  kpem, err = core.cert_read_file(key_path)
  if not kpem then return nil, "cannot read key: " .. err end
  local ok
  ok, err = core.cert_matches_key(cpem, kpem)
  if not ok then return nil, "key does not match certificate: " .. err end
  local info = list[1]
  if info.not_after <= now then return nil, "certificate expired at " .. rfc3339(info.not_after) end
  return info, cpem, kpem
end

-- Writes cert then key atomically; on a key failure removes the fresh cert.
-- Returns true or nil, which file failed ("cert"|"key"), message, code.
local function write_pair(cert_path, cert_pem, key_path, key_pem, logger)
  local ok, err, code = core.write_file_atomic(cert_path, cert_pem, tonumber("644", 8))
  if not ok then
    logger:warn("cannot cert file", { path = cert_path, error = err })
    return nil, err, code
  end
  logger:info("created cert file", { path = cert_path })
  ok, err, code = core.write_file_atomic(key_path, key_pem, tonumber("600", 8))
  if not ok then
    logger:warn("cannot key file", { path = key_path, error = err })
    os.remove(cert_path)
    return nil, err, code
  end
  logger:info("created key file", { path = key_path })
  return true
end

-- etcd's fileutil.TouchDirAll: create with parents 0700, warn about another mode, probe writability.
local function touch_dir(dir, logger)
  local st = core.cert_stat(dir)
  if st then
    if st.mode & tonumber("777", 8) ~= tonumber("700", 8) then
      logger:warn("check file permission", { error = ("directory %s exist, but the permission is %s. "
        .. "The recommended permission is \"-rwx------\" to prevent possible unprivileged access to the data")
        :format(go_quote(dir), go_quote(st.mode_string)) })
    end
  else
    local ok, err, code = core.cert_mkdir_all(dir, tonumber("700", 8))
    if not ok then return nil, err, code end
  end
  return core.cert_probe_dir(dir)
end

-- public API ----------------------------------------------------------------

--- Creates (or reuses) etcd's self-signed peer certificate in `dir`.
-- Files `cert.pem` (0644 & ~umask) and `key.pem` (0600). Certificate as etcd 3.6+/HEAD:
-- random 128-bit serial, subject and issuer `O=etcd`, valid from now for
-- `validity_years` × 365 days, critical key usage digitalSignature, keyEncipherment,
-- cRLSign, extended key usage serverAuth, critical CA:TRUE, subject key identifier,
-- SANs from `hosts` (IP literal → IP SAN, else DNS SAN). ECDSA P-521 with
-- ecdsa-with-SHA512 unless `key_type` says otherwise; EC keys are PEM `EC PRIVATE KEY`.
-- An existing pair is reused when both files parse, the key matches, the certificate
-- has not expired, covers every requested host and (when `key_type` is given) has that
-- key type; otherwise it is regenerated with a warning naming why.
-- @tparam table opts
--   `dir` (string, created with parents, mode 0700),
--   `hosts` (list of `host`, `host:port`, `[v6]:port` or URL strings; default none),
--   `validity_years` (number > 0, default 1),
--   `key_type` ("ecdsa-p521" default, "ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-2048", ...),
--   `logger` (peerlisten.log logger, function(level, msg, fields) or nil)
-- @treturn[1] string absolute path of cert.pem
-- @treturn[1] string absolute path of key.pem
-- @treturn[1] boolean true when the pair was generated, false when reused
-- @treturn[2] nil
-- @treturn[2] string message (etcd's wording where it has one)
-- @treturn[2] string code: "ECONFIG", "ECERT" or a libuv error name
function M.self_signed(opts)
  check_opts(opts, "self_signed")
  local logger = log.wrap(opts.logger)
  local dir = opt_type(opts, "dir", "string", "self_signed")
  if dir == nil then error("bad argument #1 to 'self_signed' (field 'dir' is required)", 2) end
  if dir == "" then return nil, "self_signed: dir must not be empty", "ECONFIG" end
  local validity = opts.validity_years
  if validity == nil then validity = 1 end
  local bad = check_validity(validity, "self_signed")
  if bad then
    logger:warn("cannot generate cert", { error = bad })
    return nil, bad, "ECONFIG"
  end
  local key_type = opt_type(opts, "key_type", "string", "self_signed") or "ecdsa-p521"
  bad = check_key_type(key_type)
  if bad then return nil, bad, "ECONFIG" end
  local names, err = parse_hosts(opts.hosts, "hosts")
  if not names then return nil, err, "ECONFIG" end

  local code
  dir, err, code = abspath(dir)
  if not dir then return nil, err, code end
  local ok
  ok, err, code = touch_dir(dir, logger)
  if not ok then
    logger:warn("cannot create cert directory", { error = err })
    return nil, err, code
  end

  local cert_path, key_path = dir .. "/cert.pem", dir .. "/key.pem"
  local now = os.time()
  local has_cert, has_key = core.cert_stat(cert_path) ~= nil, core.cert_stat(key_path) ~= nil
  local why
  if has_cert and has_key then
    local info, e = check_pair(cert_path, key_path, now)
    if not info then
      why = e
    else
      why = uncovered(info, names)
      if not why and opts.key_type and key_type_of(info.key) ~= key_type then
        why = ("key type is %s, want %s"):format(key_type_of(info.key), key_type)
      end
      if not why then return cert_path, key_path, false end
    end
  elseif has_cert or has_key then
    why = (has_cert and key_path or cert_path) .. " is missing"
  end
  if why then
    logger:warn("regenerating self-signed certificate", { ["cert-file"] = cert_path, ["key-file"] = key_path,
      reason = why })
  end

  local not_after = now + floor(validity * YEAR)
  logger:warn("automatically generate certificates", { ["certificate-validity-bound-not-after"] = rfc3339(not_after) })
  local key_pem
  key_pem, err, code = core.cert_keygen(key_type)
  if not key_pem then
    logger:warn("cannot generate ECDSA key", { error = err })
    return nil, err, code
  end
  local cert_pem
  cert_pem, err, code = core.cert_create {
    key = key_pem, subject = { { "O", "etcd" } }, not_before = now, not_after = not_after,
    key_usage = { "digitalSignature", "keyEncipherment", "cRLSign" }, ext_key_usage = { "serverAuth" },
    is_ca = true, dns = names.dns, ips = names.ips,
  }
  if not cert_pem then
    logger:warn("cannot generate x509 certificate", { error = err })
    return nil, err, code
  end
  ok, err, code = write_pair(cert_path, cert_pem, key_path, key_pem, logger)
  if not ok then return nil, err, code end
  return cert_path, key_path, true
end

--- Reads every certificate of a PEM file (or PEM text) into tables.
-- The same table (built by the same C code) is `conn:tls_info().peer_cert` for the
-- certificate a TLS peer presented; only `path` is particular to `inspect`.
-- Each table has: `subject`, `issuer` (RFC 2253 strings such as "O=etcd" or "CN=n1,O=acme"),
-- `subject_fields`, `issuer_fields` (e.g. `{ O = "etcd" }`; a repeated attribute is a list),
-- `serial` (lower-case hex, no leading zeros), `version`, `not_before`, `not_after` (epoch seconds),
-- `not_before_rfc3339`, `not_after_rfc3339`, `days_left` (negative once expired), `expired`,
-- `not_yet_valid`, `sans = { dns = {...}, ip = {...}, email = {...}, uri = {...} }`,
-- `key_usage` (e.g. "digitalSignature", "keyEncipherment", "cRLSign", "keyCertSign"),
-- `ext_key_usage` (e.g. "serverAuth", "clientAuth"), `is_ca`, `path_len` (if set), `self_signed`,
-- `key = { type = "ecdsa"|"rsa"|"ed25519", bits =, curve = "P-521" }`, `signature_algorithm`
-- (e.g. "ecdsa-with-SHA512"), `fingerprint_sha256` (lower-case hex), `subject_key_id`,
-- `authority_key_id` (hex, when present) and `path` (when read from a file).
-- @tparam string path_or_pem
-- @treturn[1] table the certificate's table, or a list of them when there are several
-- @treturn[2] nil
-- @treturn[2] string message
-- @treturn[2] string code ("ENOENT", "EACCES", ..., "ECERT" when there is no PEM certificate)
function M.inspect(path_or_pem)
  local list, err, code = M.inspect_chain(path_or_pem)
  if not list then return nil, err, code end
  if #list == 1 then return list[1] end
  return list
end

--- Like `inspect`, but always returns a list (one table per certificate).
-- @tparam string path_or_pem
-- @treturn[1] table list of certificate tables
-- @treturn[2] nil
-- @treturn[2] string message
-- @treturn[2] string code
function M.inspect_chain(path_or_pem)
  if type(path_or_pem) ~= "string" then
    error(("bad argument #1 to 'inspect' (string expected, got %s)"):format(type(path_or_pem)), 2)
  end
  local path = not is_pem(path_or_pem) and path_or_pem or nil
  local pem, err, code = load(path_or_pem)
  if not pem then return nil, err, code end
  local list
  list, err, code = core.cert_inspect(pem)
  if not list then
    return nil, path and (path .. ": " .. err) or err, code
  end
  for _, info in ipairs(list) do info.path = path end
  return list
end

--- Whether `key` is the private key of `cert`'s (first) certificate.
-- @tparam string cert path or PEM
-- @tparam string key path or PEM
-- @treturn[1] true
-- @treturn[2] nil
-- @treturn[2] string "tls: private key does not match public key", or why a file cannot be read
-- @treturn[2] string code ("ECERT" or a libuv error name)
function M.matches_key(cert, key)
  if type(cert) ~= "string" or type(key) ~= "string" then
    error("bad argument to 'matches_key' (strings expected: cert, key)", 2)
  end
  local cpem, err, code = load(cert)
  if not cpem then return nil, err, code end
  local kpem
  kpem, err, code = load(key)
  if not kpem then return nil, err, code end
  return core.cert_matches_key(cpem, kpem)
end

local PURPOSES = { any = true, server = true, client = true }

--- Verifies `cert` against the CA certificates in `ca_file`, as OpenSSL does.
-- Extra certificates after the first in `cert` are used as intermediates.
-- @tparam string cert path or PEM
-- @tparam string ca_file path or PEM (one or more trusted certificates)
-- @tparam[opt="any"] string purpose "server", "client" or "any"
-- @treturn[1] true
-- @treturn[2] nil
-- @treturn[2] string OpenSSL's reason, e.g. "unable to get local issuer certificate",
--   "certificate has expired", "unsuitable certificate purpose"
-- @treturn[2] string "ECERT" (or a libuv error name when a file cannot be read)
function M.verify(cert, ca_file, purpose)
  if type(cert) ~= "string" or type(ca_file) ~= "string" then
    error("bad argument to 'verify' (strings expected: cert, ca_file)", 2)
  end
  if purpose ~= nil and not PURPOSES[purpose] then
    error(("bad argument #3 to 'verify' (invalid purpose '%s': server, client or any)"):format(tostring(purpose)), 2)
  end
  local cpem, err, code = load(cert)
  if not cpem then return nil, err, code end
  local capem
  capem, err, code = load(ca_file)
  if not capem then return nil, err, code end
  return core.cert_verify(cpem, capem, purpose or "any")
end

local function check_name(name, fname)
  if type(name) ~= "string" then
    error(("bad argument #1 to '%s' (field 'name': string expected, got %s)"):format(fname, type(name)), 3)
  end
  if not name:match("^[%w][%w._-]*$") or #name > 64 then
    return ("%s: invalid name %s (letters, digits, '.', '_', '-'; at most 64 characters)")
      :format(fname, go_quote(name))
  end
end

-- Common argument checks of ca/issue: returns dir, validity, key_type or nil, msg, code.
local function common_args(opts, fname, default_validity, default_key_type)
  local dir = opt_type(opts, "dir", "string", fname)
  if dir == nil then error(("bad argument #1 to '%s' (field 'dir' is required)"):format(fname), 3) end
  if dir == "" then return nil, fname .. ": dir must not be empty", "ECONFIG" end
  local validity = opts.validity_years
  if validity == nil then validity = default_validity end
  local bad = check_validity(validity, fname)
  if bad then return nil, bad, "ECONFIG" end
  local key_type = opt_type(opts, "key_type", "string", fname) or default_key_type
  bad = check_key_type(key_type)
  if bad then return nil, bad, "ECONFIG" end
  return dir, validity, key_type
end

--- Creates a cluster CA: a key and a self-signed CA certificate (`CN=<name>`, critical
-- CA:TRUE, critical key usage digitalSignature, keyCertSign, cRLSign, subject key identifier).
-- Files `<dir>/<name>.pem` and `<dir>/<name>-key.pem` (0600). When both files exist and
-- hold a valid, unexpired CA with its key, they are reused; a CA is never overwritten
-- (a partial or invalid pair is an "EEXIST" error).
-- @tparam table opts `dir`, `name` ("peerlisten-ca"), `validity_years` (10),
--   `key_type` ("ecdsa-p256"), `logger`
-- @treturn[1] string CA certificate path
-- @treturn[1] string CA key path
-- @treturn[1] boolean true when created, false when reused
-- @treturn[2] nil
-- @treturn[2] string message
-- @treturn[2] string code
function M.ca(opts)
  check_opts(opts, "ca")
  local logger = log.wrap(opts.logger)
  local name = opts.name or "peerlisten-ca"
  local bad = check_name(name, "ca")
  if bad then return nil, bad, "ECONFIG" end
  local dir, validity, key_type = common_args(opts, "ca", 10, "ecdsa-p256")
  if not dir then return nil, validity, key_type end
  local err, code
  dir, err, code = abspath(dir)
  if not dir then return nil, err, code end
  local ok
  ok, err, code = core.cert_mkdir_all(dir, tonumber("700", 8))
  if not ok then return nil, err, code end

  local cert_path, key_path = dir .. "/" .. name .. ".pem", dir .. "/" .. name .. "-key.pem"
  local now = os.time()
  local has_cert, has_key = core.cert_stat(cert_path) ~= nil, core.cert_stat(key_path) ~= nil
  if has_cert or has_key then
    local info, why = nil, (has_cert and key_path or cert_path) .. " is missing"
    if has_cert and has_key then info, why = check_pair(cert_path, key_path, now) end
    if info and not info.is_ca then info, why = nil, cert_path .. " is not a CA certificate" end
    if info then return cert_path, key_path, false end
    return nil, ("ca: refusing to overwrite an existing CA (%s)"):format(why), "EEXIST"
  end

  local key_pem
  key_pem, err, code = core.cert_keygen(key_type)
  if not key_pem then return nil, err, code end
  local cert_pem
  cert_pem, err, code = core.cert_create {
    key = key_pem, subject = { { "CN", name } }, not_before = now - BACKDATE,
    not_after = now + floor(validity * YEAR), is_ca = true,
    key_usage = { "digitalSignature", "keyCertSign", "cRLSign" }, ext_key_usage = {},
  }
  if not cert_pem then return nil, err, code end
  ok, err, code = write_pair(cert_path, cert_pem, key_path, key_pem, logger)
  if not ok then return nil, err, code end
  return cert_path, key_path, true
end

--- Issues a member certificate signed by a CA made with `ca` (or any CA pair).
-- `CN=<name>`, critical key usage digitalSignature, keyEncipherment, extended key usage
-- serverAuth and clientAuth (etcd peers are both), critical CA:FALSE, subject and
-- authority key identifiers, SANs from `hosts` and `sans`. Files `<dir>/<name>.pem`
-- and `<dir>/<name>-key.pem` (0600), replaced atomically if they exist.
-- @tparam table opts `ca_cert`, `ca_key` (paths or PEM), `dir`, `name`,
--   `hosts` (list: the member's peer URLs, `host:port` or bare hosts; at least one),
--   `sans` (optional extra hosts), `validity_years` (1), `key_type` ("ecdsa-p256"), `logger`
-- @treturn[1] string certificate path
-- @treturn[1] string key path
-- @treturn[2] nil
-- @treturn[2] string message
-- @treturn[2] string code
function M.issue(opts)
  check_opts(opts, "issue")
  local logger = log.wrap(opts.logger)
  local ca_cert = opt_type(opts, "ca_cert", "string", "issue")
  local ca_key = opt_type(opts, "ca_key", "string", "issue")
  if not ca_cert or not ca_key then
    error("bad argument #1 to 'issue' (fields 'ca_cert' and 'ca_key' are required)", 2)
  end
  local bad = check_name(opts.name, "issue")
  if bad then return nil, bad, "ECONFIG" end
  local dir, validity, key_type = common_args(opts, "issue", 1, "ecdsa-p256")
  if not dir then return nil, validity, key_type end
  local names, err = parse_hosts(opts.hosts, "hosts")
  if not names then return nil, err, "ECONFIG" end
  local extra
  extra, err = parse_hosts(opts.sans, "sans")
  if not extra then return nil, err, "ECONFIG" end
  for _, kind in ipairs { "dns", "ips" } do
    local seen = {}
    for _, n in ipairs(names[kind]) do seen[n:lower()] = true end
    for _, n in ipairs(extra[kind]) do
      if not seen[n:lower()] then names[kind][#names[kind] + 1] = n end
    end
  end
  if #names.dns + #names.ips == 0 then
    return nil, "issue: hosts must name at least one host (peers check the SANs)", "ECONFIG"
  end

  local code
  local ca_pem
  ca_pem, err, code = load(ca_cert)
  if not ca_pem then return nil, err, code end
  local ca_key_pem
  ca_key_pem, err, code = load(ca_key)
  if not ca_key_pem then return nil, err, code end
  local ca_key_info, kerr = core.cert_key_info(ca_key_pem)
  if not ca_key_info then return nil, "cannot parse CA private key: " .. kerr, "ECERT" end
  local list
  list, err, code = core.cert_inspect(ca_pem)
  if not list then return nil, "issue: CA certificate: " .. err, code end
  local now = os.time()
  if not list[1].is_ca then return nil, "issue: the CA certificate is not a CA (CA:FALSE)", "ECERT" end
  if not core.cert_matches_key(ca_pem, ca_key_pem) then
    return nil, "CA private key does not match CA certificate", "ECERT"
  end
  if list[1].not_after <= now then
    return nil, "issue: the CA certificate expired at " .. rfc3339(list[1].not_after), "ECERT"
  end

  dir, err, code = abspath(dir)
  if not dir then return nil, err, code end
  local ok
  ok, err, code = core.cert_mkdir_all(dir, tonumber("700", 8))
  if not ok then return nil, err, code end
  local key_pem
  key_pem, err, code = core.cert_keygen(key_type)
  if not key_pem then return nil, err, code end
  local cert_pem
  cert_pem, err, code = core.cert_create {
    key = key_pem, issuer_cert = ca_pem, issuer_key = ca_key_pem, subject = { { "CN", opts.name } },
    not_before = now - BACKDATE, not_after = now + floor(validity * YEAR), is_ca = false,
    key_usage = { "digitalSignature", "keyEncipherment" }, ext_key_usage = { "serverAuth", "clientAuth" },
    dns = names.dns, ips = names.ips,
  }
  if not cert_pem then return nil, err, code end
  local cert_path, key_path = dir .. "/" .. opts.name .. ".pem", dir .. "/" .. opts.name .. "-key.pem"
  ok, err, code = write_pair(cert_path, cert_pem, key_path, key_pem, logger)
  if not ok then return nil, err, code end
  return cert_path, key_path
end

local function colons(hex)
  return (hex:upper():gsub("(%x%x)", "%1:"):gsub(":$", ""))
end

local function format_one(info)
  local lines = {}
  local function add(label, value)
    if value ~= nil and value ~= "" then lines[#lines + 1] = ("%-17s %s"):format(label .. ":", value) end
  end
  local function join(t) return t and #t > 0 and table.concat(t, ", ") or nil end
  add("Path", info.path)
  add("Subject", info.subject ~= "" and info.subject or "(empty)")
  add("Issuer", (info.issuer ~= "" and info.issuer or "(empty)") .. (info.self_signed and " (self-signed)" or ""))
  add("Serial", info.serial)
  local state
  if info.expired then
    state = ("EXPIRED %d days ago"):format(-info.days_left)
  elseif info.not_yet_valid then
    state = "NOT YET VALID"
  else
    state = ("%d days left"):format(info.days_left)
  end
  add("Not before", info.not_before_rfc3339)
  add("Not after", ("%s (%s)"):format(info.not_after_rfc3339, state))
  if info.key then
    local k = info.key
    add("Public key", ("%s%s, %d bits"):format(k.type, k.curve and (" " .. k.curve) or "", k.bits))
  end
  add("Signature", info.signature_algorithm)
  add("CA", info.is_ca and ("yes" .. (info.path_len and (", path length " .. info.path_len) or "")) or "no")
  add("Key usage", join(info.key_usage))
  add("Ext key usage", join(info.ext_key_usage))
  if info.sans then
    add("DNS names", join(info.sans.dns))
    add("IP addresses", join(info.sans.ip))
    add("Emails", join(info.sans.email))
    add("URIs", join(info.sans.uri))
  end
  add("SHA-256", info.fingerprint_sha256 and colons(info.fingerprint_sha256))
  add("Subject key ID", info.subject_key_id and colons(info.subject_key_id))
  add("Authority key ID", info.authority_key_id and colons(info.authority_key_id))
  return table.concat(lines, "\n")
end

--- Formats an `inspect` result (one table or a list) for people.
-- @tparam table info what `inspect` or `inspect_chain` returned
-- @treturn string multi-line text without a trailing newline
function M.format(info)
  if type(info) ~= "table" then
    error(("bad argument #1 to 'format' (table expected, got %s)"):format(type(info)), 2)
  end
  if info.subject ~= nil then return format_one(info) end
  local parts = {}
  for i, one in ipairs(info) do
    parts[#parts + 1] = ("Certificate %d of %d\n%s"):format(i, #info, format_one(one))
  end
  return table.concat(parts, "\n\n")
end

return M
