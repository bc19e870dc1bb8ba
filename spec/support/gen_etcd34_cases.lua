-- Runs every case below through the real etcd
-- (support.etcd_oracle) and writes the inputs with etcd's verdicts to
-- spec/fixtures/etcd34_cases.lua.  Run from the repository root:
--   lua5.4 spec/support/gen_etcd34_cases.lua
-- Placeholders ({P1}, {PKI}, {DIR}, ...) are described in etcd_oracle.lua.
package.path = "./spec/?.lua;./lua/?.lua;" .. package.path
local oracle = require "support.etcd_oracle"

local P1 = "http://127.0.0.1:{P1}"
local S1 = "https://127.0.0.1:{P1}"
local function lpu(v) return { "--listen-peer-urls", v } end
local function join(...)
  local out = {}
  for _, t in ipairs { ... } do for _, v in ipairs(t) do out[#out + 1] = v end end
  return out
end
local TLS = { "--peer-cert-file", "{PKI}/server.crt", "--peer-key-file", "{PKI}/server.key" }
local TLS_CA = join(TLS, { "--peer-trusted-ca-file", "{PKI}/ca.crt", "--peer-client-cert-auth" })
local SEC = "peer-transport-security:\n  cert-file: {PKI}/server.crt\n  key-file: {PKI}/server.key\n"

local cases = {
  -- URLs --------------------------------------------------------------------
  { "url", "one http URL", args = lpu(P1) },
  { "url", "two http URLs", args = lpu(P1 .. ",http://127.0.0.1:{P2}") },
  { "url", "localhost host", args = lpu("http://localhost:{P1}") },
  { "url", "IPv6 loopback in brackets", args = lpu("http://[::1]:{P1}") },
  { "url", "ftp scheme", args = lpu("ftp://127.0.0.1:{P1}") },
  { "url", "missing port", args = lpu("http://127.0.0.1") },
  { "url", "port 70000", args = lpu("http://127.0.0.1:70000") },
  { "url", "trailing comma", args = lpu(P1 .. ",") },
  { "url", "::1 without brackets", args = lpu("http://::1:{P1}") },
  { "url", "duplicate URL", args = lpu(P1 .. "," .. P1) },
  { "url", "unix URL host:port", args = lpu("unix://localhost:{P1}") },
  { "url", "unix URL with a path", args = lpu("unix:///x.sock") },
  { "url", "DNS name host", args = lpu("http://example.com:{P1}") },
  { "url", "path slash", args = lpu(P1 .. "/") },
  { "url", "no scheme", args = lpu("127.0.0.1:{P1}") },
  { "url", "https without any cert", args = lpu(S1) },
  { "url", "env URL without port", env = { ETCD_LISTEN_PEER_URLS = "http://127.0.0.1" } },
  -- TLS files -----------------------------------------------------------------
  { "tls", "https with server pair", args = join(lpu(S1), TLS), peer_url = S1 },
  { "tls", "https with pair, CA, client-cert-auth", args = join(lpu(S1), TLS_CA), peer_url = S1 },
  { "tls", "missing cert file", args = join(lpu(S1),
      { "--peer-cert-file", "{DIR}/nope.crt", "--peer-key-file", "{PKI}/server.key" }), peer_url = S1 },
  { "tls", "mismatched cert/key", args = join(lpu(S1),
      { "--peer-cert-file", "{PKI}/server.crt", "--peer-key-file", "{PKI}/client-good.key" }), peer_url = S1 },
  { "tls", "cert without key", args = join(lpu(S1), { "--peer-cert-file", "{PKI}/server.crt" }), peer_url = S1 },
  { "tls", "client-cert-auth with missing CA", args = join(lpu(S1), TLS,
      { "--peer-client-cert-auth", "--peer-trusted-ca-file", "{DIR}/nope-ca.crt" }), peer_url = S1 },
  { "tls", "key file as CA", args = join(lpu(S1), TLS, { "--peer-trusted-ca-file", "{PKI}/ca.key" }), peer_url = S1 },
  { "tls", "http URL + mismatched cert/key (after listeners)", args = join(lpu(P1),
      { "--peer-cert-file", "{PKI}/server.crt", "--peer-key-file", "{PKI}/client-good.key" }) },
  { "tls", "http URL + missing CA (after listeners)", args = join(lpu(P1), TLS,
      { "--peer-trusted-ca-file", "{DIR}/nope-ca.crt" }) },
  { "tls", "http URL + missing CA, no cert/key (after listeners)", args = join(lpu(P1),
      { "--peer-trusted-ca-file", "{DIR}/nope-ca.crt" }) },
  { "tls", "http URL + allowed CN and hostname, no cert/key", args = join(lpu(P1),
      { "--peer-cert-allowed-cn", "peer1", "--peer-cert-allowed-hostname", "127.0.0.1" }) },
  { "tls", "http URL + good pair and CA", args = join(lpu(P1), TLS_CA) },
  { "tls", "http URL + cert without key", args = join(lpu(P1), { "--peer-cert-file", "{PKI}/server.crt" }) },
  { "tls", "CRL file missing", args = join(lpu(S1), TLS_CA, { "--peer-crl-file", "{DIR}/nope.crl" }), peer_url = S1 },
  { "tls", "CRL file garbage", args = join(lpu(S1), TLS_CA, { "--peer-crl-file", "{DIR}/garbage.crl" }),
    files = { ["garbage.crl"] = "not a CRL\n" }, peer_url = S1 },
  { "tls", "CRL path is a directory", args = join(lpu(S1), TLS_CA, { "--peer-crl-file", "{PKI}" }), peer_url = S1 },
  { "tls", "auto-TLS https", args = join(lpu(S1), { "--peer-auto-tls" }), peer_url = S1 },
  { "tls", "allowed CN and hostname both (https)", args = join(lpu(S1), TLS_CA,
      { "--peer-cert-allowed-cn", "peer1", "--peer-cert-allowed-hostname", "127.0.0.1" }), peer_url = S1 },
  { "tls", "allowed CN and hostname both (http only)", args = join(lpu(P1), TLS_CA,
      { "--peer-cert-allowed-cn", "peer1", "--peer-cert-allowed-hostname", "127.0.0.1" }) },
  { "tls", "allowed CN a,b", args = join(lpu(S1), TLS_CA, { "--peer-cert-allowed-cn", "a,b" }), peer_url = S1 },
  { "tls", "unixs URL without certs", args = lpu("unixs://localhost:{P1}") },
  -- cipher suites ---------------------------------------------------------------
  { "cipher", "valid suite", peer_url = S1,
    args = join(lpu(S1), TLS, { "--cipher-suites", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" }) },
  { "cipher", "unknown suite on an http-only config", args = join(lpu(P1), { "--cipher-suites", "TLS_BOGUS" }) },
  { "cipher", "lower-case name", args = join(lpu(P1), { "--cipher-suites", "tls_ecdhe_rsa_with_aes_128_gcm_sha256" }) },
  { "cipher", "trailing comma", args = join(lpu(P1), { "--cipher-suites", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256," }) },
  { "cipher", "space after comma", args = join(lpu(P1),
      { "--cipher-suites", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" }) },
  { "cipher", "TLS1.3-only names",
    args = join(lpu(S1), TLS, { "--cipher-suites", "TLS_AES_128_GCM_SHA256,TLS_AES_256_GCM_SHA384" }),
    peer_url = S1 },
  { "cipher", "insecure RC4 name accepted", args = join(lpu(P1), { "--cipher-suites", "TLS_ECDHE_RSA_WITH_RC4_128_SHA" }) },
  { "cipher", "env ETCD_CIPHER_SUITES unknown", args = lpu(P1), env = { ETCD_CIPHER_SUITES = "NOPE" } },
  -- env / flag / file precedence ------------------------------------------------
  { "precedence", "env and flag both set", args = lpu(P1), env = { ETCD_LISTEN_PEER_URLS = P1 } },
  { "precedence", "empty env ETCD_LISTEN_PEER_URLS= with the flag", args = lpu(P1), env = { ETCD_LISTEN_PEER_URLS = "" } },
  { "precedence", "empty env ETCD_PEER_CERT_FILE= with the flag", args = join(lpu(P1), TLS), env = { ETCD_PEER_CERT_FILE = "" } },
  { "precedence", "env only", env = { ETCD_LISTEN_PEER_URLS = P1 } },
  { "precedence", "unknown ETCD_ variable", args = lpu(P1), env = { ETCD_NO_SUCH_THING = "1" } },
  { "precedence", "config file wins over a bad-port flag value", yaml = "listen-peer-urls: " .. P1 .. "\n",
    args = lpu("http://127.0.0.1:70000") },
  { "precedence", "config file and a malformed flag value", yaml = "listen-peer-urls: " .. P1 .. "\n",
    args = lpu("http://127.0.0.1") },
  { "precedence", "config file via ETCD_CONFIG_FILE", yaml = "listen-peer-urls: " .. P1 .. "\n",
    config_via_env = true, env = { ETCD_CONFIG_FILE = "{DIR}/etcd.conf.yml" } },
  { "precedence", "config file missing", no_base = true, args = { "--config-file", "{DIR}/nope.yml" } },
  { "precedence", "config file and env var for the same key", yaml = "listen-peer-urls: " .. P1 .. "\n",
    env = { ETCD_LISTEN_PEER_URLS = "http://127.0.0.1:70000" } },
  -- YAML types ----------------------------------------------------------------
  { "yaml", "listen-peer-urls string", yaml = "listen-peer-urls: " .. P1 .. "\n" },
  { "yaml", "listen-peer-urls as a list", yaml = "listen-peer-urls:\n  - " .. P1 .. "\n" },
  { "yaml", "listen-peer-urls as a mapping", yaml = "listen-peer-urls: {a: 1}\n" },
  { "yaml", "listen-peer-urls without port", yaml = "listen-peer-urls: http://127.0.0.1\n" },
  { "yaml", "listen-peer-urls duplicate", yaml = "listen-peer-urls: " .. P1 .. "," .. P1 .. "\n" },
  { "yaml", "cipher-suites list",
    yaml = "listen-peer-urls: " .. P1 .. "\ncipher-suites:\n  - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n" },
  { "yaml", "cipher-suites as a string",
    yaml = "listen-peer-urls: " .. P1 .. "\ncipher-suites: TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n" },
  { "yaml", "cipher-suites as a mapping", yaml = "listen-peer-urls: " .. P1 .. "\ncipher-suites: {a: 1}\n" },
  { "yaml", "top-level list", raw_yaml = true, yaml = "- listen-peer-urls: " .. P1 .. "\n" },
  { "yaml", "top-level scalar", raw_yaml = true, yaml = "just a string\n" },
  { "yaml", "syntax error", raw_yaml = true, yaml = "listen-peer-urls: [\n" },
  { "yaml", "allowed-cn mapping (3.4: unknown key)", yaml = "listen-peer-urls: " .. S1 .. "\n" .. SEC ..
      "  trusted-ca-file: {PKI}/ca.crt\n  allowed-cn: {peer1: true}\n", peer_url = S1 },
  { "yaml", "allowed-cn list (3.4: unknown key)", yaml = "listen-peer-urls: " .. S1 .. "\n" .. SEC ..
      "  allowed-cn: [peer1]\n", peer_url = S1 },
  { "yaml", "client-cert-auth quoted string", yaml = "listen-peer-urls: " .. S1 .. "\n" .. SEC ..
      "  client-cert-auth: \"true\"\n", peer_url = S1 },
  { "yaml", "client-cert-auth yes (YAML 1.1 bool)", yaml = "listen-peer-urls: " .. S1 .. "\n" .. SEC ..
      "  client-cert-auth: yes\n", peer_url = S1 },
  { "yaml", "peer-transport-security number", yaml = "listen-peer-urls: " .. P1 .. "\npeer-transport-security: 5\n" },
  { "yaml", "peer-transport-security null", yaml = "listen-peer-urls: " .. P1 .. "\npeer-transport-security: ~\n" },
  { "yaml", "allowed-cn scalar (3.5.14 form)", yaml = "listen-peer-urls: " .. S1 .. "\n" .. SEC ..
      "  allowed-cn: peer1\n", peer_url = S1 },
  { "yaml", "unknown top-level key", yaml = "listen-peer-urls: " .. P1 .. "\nno-such-key: 1\n" },
  { "yaml", "https with peer-transport-security", yaml = "listen-peer-urls: " .. S1 .. "\n" .. SEC, peer_url = S1 },
  -- logging -------------------------------------------------------------------
  { "logging", "zap to a path under a regular file", args = join(lpu(P1),
      { "--logger", "zap", "--log-outputs", "{DIR}/afile/x.log" }), files = { afile = "x" } },
  { "logging", "capnslog to a path under a regular file", args = join(lpu(P1),
      { "--log-outputs", "{DIR}/afile/x.log" }), files = { afile = "x" } },
  { "logging", "capnslog to a writable file", args = join(lpu(P1), { "--log-outputs", "{DIR}/etcd.log" }) },
  { "logging", "zap to a writable file", args = join(lpu(P1), { "--logger", "zap", "--log-outputs", "{DIR}/etcd.log" }) },
  { "logging", "log-level bogus", args = join(lpu(P1), { "--log-level", "bogus" }) },
  { "logging", "logger capnslog", args = join(lpu(P1), { "--logger", "capnslog" }) },
  { "logging", "logger bogus", args = join(lpu(P1), { "--logger", "bogus" }) },
  { "logging", "zap to stderr", args = join(lpu(P1), { "--logger", "zap", "--log-outputs", "stderr" }) },
  -- socket options and flags of later versions -----------------------------------
  { "flags", "--socket-reuse-port", args = join(lpu(P1), { "--socket-reuse-port" }) },
  { "flags", "--socket-reuse-address", args = join(lpu(P1), { "--socket-reuse-address" }) },
  { "flags", "--tls-min-version", args = join(lpu(P1), { "--tls-min-version", "TLS1.2" }) },
  { "flags", "--tls-max-version", args = join(lpu(P1), { "--tls-max-version", "TLS1.3" }) },
  { "flags", "--peer-client-cert-file", args = join(lpu(P1), { "--peer-client-cert-file", "{PKI}/client-good.crt" }) },
  { "flags", "--log-format", args = join(lpu(P1), { "--log-format", "json" }) },
  { "flags", "--peer-skip-client-san-verification", args = join(lpu(P1), { "--peer-skip-client-san-verification" }) },
  { "flags", "--experimental-peer-skip-client-san-verification",
    args = join(lpu(S1), TLS_CA, { "--experimental-peer-skip-client-san-verification" }), peer_url = S1 },
  { "flags", "--self-signed-cert-validity", args = join(lpu(P1), { "--self-signed-cert-validity", "2" }) },
  { "flags", "stray positional argument", args = join(lpu(P1), { "extra" }) },
  { "flags", "3.4 experimental flag", args = join(lpu(P1), { "--experimental-initial-corrupt-check" }) },
  { "flags", "bool flag given a value", args = join(lpu(P1), { "--peer-client-cert-auth=maybe" }) },
  { "flags", "ETCD_SOCKET_REUSE_PORT env (3.4: unknown variable)", args = lpu(P1), env = { ETCD_SOCKET_REUSE_PORT = "true" } },
}

local function ser(v, ind)
  if type(v) == "string" then return ("%q"):format(v) end
  if type(v) ~= "table" then return tostring(v) end
  local keys, out = {}, {}
  for k in pairs(v) do keys[#keys + 1] = k end
  local arr = #v > 0
  if arr then
    for _, x in ipairs(v) do out[#out + 1] = ser(x, ind) end
    return "{ " .. table.concat(out, ", ") .. " }"
  end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local key = k:match("^[%a_][%w_]*$") and k or ("[%q]"):format(k)
    out[#out + 1] = ind .. "  " .. key .. " = " .. ser(v[k], ind .. "  ")
  end
  return "{\n" .. table.concat(out, ",\n") .. ",\n" .. ind .. "}"
end

if not oracle.available() then
  io.stderr:write("etcd not found at " .. oracle.ETCD .. "\n")
  os.exit(1)
end
local O = oracle.new()
local out, counts, total = {}, {}, 0
local version = io.popen(oracle.ETCD .. " --version"):read("l")
for i, c in ipairs(cases) do
  local case = { category = c[1], name = c[2], args = c.args, env = c.env, yaml = c.yaml, files = c.files,
                 peer_url = c.peer_url, raw_yaml = c.raw_yaml, config_via_env = c.config_via_env,
                 no_base = c.no_base }
  local r = O:run(case)
  total = total + r.seconds
  case.etcd = { outcome = r.outcome, exit = r.exit, message = r.message, panic = r.panic or nil }
  out[#out + 1] = "  " .. ser(case, "  ")
  counts[c[1]] = (counts[c[1]] or 0) + 1
  io.stderr:write(("%3d %-11s %-8s %-4s %.2fs %s | %s\n"):format(i, c[1], r.outcome, tostring(r.exit), r.seconds, c[2],
    tostring(r.message)))
end
O:cleanup()
local f = assert(io.open("spec/fixtures/etcd34_cases.lua", "w"))
f:write("-- luacheck: no max line length\n",
  "-- Generated by `lua5.4 spec/support/gen_etcd34_cases.lua` from the real etcd binary (", version, ").\n",
  "-- Each case: the input (placeholders as in spec/support/etcd_oracle.lua) and what etcd did\n",
  "-- (etcd.outcome: started | usage (exit 2) | failed (other exit); etcd.message: its key line).\n",
  "return {\n", table.concat(out, ",\n"), ",\n}\n")
f:close()
local cats = {}
for k, n in pairs(counts) do cats[#cats + 1] = k .. "=" .. n end
table.sort(cats)
io.stderr:write(("%d cases (%s), %.2f s in etcd runs, %.3f s per case\n"):format(#cases, table.concat(cats, " "),
  total, total / #cases))
