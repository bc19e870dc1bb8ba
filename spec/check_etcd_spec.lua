-- `peerlisten check` as a predictor of etcd: each case here is something the
-- real etcd 3.4.23 binary does (recorded in spec/fixtures/etcd34_cases.lua,
-- compared case by case in etcd_compat_spec) that check used to get wrong.
local cli = require "peerlisten.cli"
local helper = require "helper"
local cjson = require "cjson"
local pki_mod = require "support.pki"

local function buffer()
  local b = { parts = {} }
  function b:write(...)
    for i = 1, select("#", ...) do self.parts[#self.parts + 1] = tostring((select(i, ...))) end
    return self
  end
  function b:text() return table.concat(self.parts) end
  return b
end

-- Runs `check` in-process; version nil keeps the default choice.
local function check(version, args, env)
  local argv = { "check", "--json" }
  if version then
    argv[#argv + 1] = "--etcd-version"
    argv[#argv + 1] = version
  end
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local out, err = buffer(), buffer()
  local rc = cli.main(argv, { stdout = out, stderr = err, env = env or {} })
  local ok, j = pcall(cjson.decode, out:text())
  return rc, ok and j or nil, err:text(), out:text()
end

local function write(path, s)
  local fh = assert(io.open(path, "wb"))
  fh:write(s)
  fh:close()
end

local function has_difference(j, id)
  for _, d in ipairs(j.differences or {}) do if d.id == id then return d end end
  return nil
end

describe("check predicts etcd", function()
  local P, dir
  setup(function()
    P = pki_mod.new()
    dir = helper.tmpdir()
  end)
  teardown(function()
    P:cleanup()
    helper.rmdir(dir)
  end)
  local function http() return "http://127.0.0.1:" .. helper.free_port() end
  local function https() return "https://127.0.0.1:" .. helper.free_port() end

  describe("YAML is typed as etcd's decoder types it", function()
    local function yaml(text, version)
      local path = dir .. "/c.yml"
      write(path, text)
      return check(version or "3.4", { "--config-file", path })
    end

    it("a list for listen-peer-urls, a string for cipher-suites, a list or scalar at the top fail", function()
      local rc, j = yaml("listen-peer-urls:\n  - " .. http() .. "\n")
      assert.equal(1, rc)
      assert.equal("error unmarshaling JSON: while decoding JSON: json: cannot unmarshal array into Go struct "
        .. "field configYAML.listen-peer-urls of type string", j.error)
      rc, j = yaml("cipher-suites: TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n")
      assert.equal(1, rc)
      assert.matches("cannot unmarshal string into Go struct field configYAML.cipher-suites of type []string",
        j.error, 1, true)
      rc, j = yaml("- listen-peer-urls: " .. http() .. "\n")
      assert.equal(1, rc)
      assert.matches("cannot unmarshal array into Go value of type embed.configYAML", j.error, 1, true)
      rc, j = yaml("client-cert-auth-as-string: 1\npeer-transport-security:\n  client-cert-auth: \"true\"\n")
      assert.equal(1, rc)
      assert.matches("cannot unmarshal string into Go struct field securityConfig.peer-transport-security."
        .. "client-cert-auth of type bool", j.error, 1, true)
    end)

    it("a mapping is never read as an empty list", function()
      local rc, j = yaml("listen-peer-urls: {a: 1}\n")
      assert.equal(1, rc)
      assert.matches("cannot unmarshal object into Go struct field configYAML.listen-peer-urls of type string",
        j.error, 1, true)
      rc, j = yaml("listen-peer-urls: " .. http() .. "\ncipher-suites: {a: 1}\n", "3.6")
      assert.equal(1, rc)
      assert.matches("cannot unmarshal object into Go struct field configYAML.cipher-suites of type []string",
        j.error, 1, true)
      -- etcd 3.6 decodes allowed-cn as a list: a mapping is its decoder error
      local sec = "peer-transport-security:\n  cert-file: " .. P:cert("server") .. "\n  key-file: "
        .. P:key("server") .. "\n  trusted-ca-file: " .. P:cert("ca") .. "\n  client-cert-auth: true\n"
      rc, j = yaml("listen-peer-urls: " .. https() .. "\n" .. sec .. "  allowed-cn: {peer1: true}\n", "3.6")
      assert.equal(1, rc)
      assert.matches("cannot unmarshal object into Go struct field securityConfig.peer-transport-security."
        .. "allowed-cn of type []string", j.error, 1, true)
      -- etcd 3.4 ignores the key (no CN restriction at all): refused, as a named difference
      rc, j = yaml("listen-peer-urls: " .. https() .. "\n" .. sec .. "  allowed-cn: {peer1: true}\n", "3.4")
      assert.equal(1, rc)
      assert.matches("peer-transport-security.allowed-cn: etcd 3.4.23 has no such key", j.error, 1, true)
      assert.truthy(has_difference(j, "ignored_security_key"))
    end)
  end)

  describe("the peer client etcd builds after its listeners", function()
    it("fails on a broken key pair or CA even when every peer URL is http", function()
      local rc, j = check("3.4", { "--listen-peer-urls", http(), "--peer-cert-file", P:cert("server"),
        "--peer-key-file", P:key("client-good") })
      assert.equal(1, rc)
      assert.equal("tls: private key does not match public key", j.error)
      rc, j = check("3.5", { "--listen-peer-urls", http(), "--peer-trusted-ca-file", dir .. "/nope-ca.crt" })
      assert.equal(1, rc)
      assert.equal("open " .. dir .. "/nope-ca.crt: no such file or directory", j.error)
      rc, j = check("3.6", { "--listen-peer-urls", http(), "--peer-cert-file", P:cert("server") })
      assert.equal(1, rc)
      assert.equal("KeyFile and CertFile must both be present[key: , cert: " .. P:cert("server") .. "]", j.error)
      rc = check("3.4", { "--listen-peer-urls", http(), "--peer-cert-file", P:cert("server"),
        "--peer-key-file", P:key("server"), "--peer-trusted-ca-file", P:cert("ca") })
      assert.equal(0, rc)
    end)
  end)

  it("an empty ETCD_X= next to the same flag is etcd's conflict", function()
    local rc, j = check("3.4", { "--listen-peer-urls", http() }, { ETCD_LISTEN_PEER_URLS = "" })
    assert.equal(1, rc)
    assert.matches('conflicting environment variable "ETCD_LISTEN_PEER_URLS" is shadowed', j.error, 1, true)
  end)

  describe("log outputs", function()
    it("are opened as etcd opens them, and nothing is left behind", function()
      write(dir .. "/afile", "x")
      local rc, j = check("3.4", { "--listen-peer-urls", http(), "--logger", "zap",
        "--log-outputs", dir .. "/afile/x.log" })
      assert.equal(1, rc)
      assert.equal('open sink "' .. dir .. '/afile/x.log": open ' .. dir .. "/afile/x.log: not a directory", j.error)
      rc = check("3.6", { "--listen-peer-urls", http(), "--log-outputs", dir .. "/new.log" })
      assert.equal(0, rc)
      assert.is_nil(io.open(dir .. "/new.log"))
    end)

    it("etcd 3.4's default logger (capnslog) takes no file at all", function()
      local rc, j = check("3.4", { "--listen-peer-urls", http(), "--log-outputs", dir .. "/etcd.log" })
      assert.equal(1, rc)
      assert.equal('unknown log-output "' .. dir .. '/etcd.log" (only supports "default", "stderr", "stdout")',
        j.error)
    end)
  end)

  it("a port above 65535 fails at the bind, in etcd's words", function()
    local rc, j = check("3.4", { "--listen-peer-urls", "http://127.0.0.1:70000" })
    assert.equal(1, rc)
    assert.equal("listen tcp: address 70000: invalid port", j.error)
  end)

  it("exits 2 where etcd's flag package does (malformed value, unknown flag)", function()
    for _, v in ipairs { "http://127.0.0.1", "http://127.0.0.1:1,", "http://::1:1", "127.0.0.1:1" } do
      local rc, _, err = check("3.4", { "--listen-peer-urls", v })
      assert.equal(2, rc, v)
      assert.matches('invalid value "' .. v .. '" for flag -listen-peer-urls: ', err, 1, true)
    end
    local rc, _, err = check("3.4", { "--listen-peer-urls", http(), "--socket-reuse-port" })
    assert.equal(2, rc)
    assert.matches("flag provided but not defined: -socket-reuse-port", err, 1, true)
    rc = check("3.4", { "--peer-client-cert-auth=maybe" })
    assert.equal(2, rc)
  end)

  it("auto-TLS: no warning nothing can clear, one note that peers skip verification", function()
    local rc, j = check("3.6", { "--listen-peer-urls", https(), "--peer-auto-tls", "--data-dir", dir .. "/auto" })
    assert.equal(0, rc)
    for _, w in ipairs(j.warnings) do
      assert.is_nil(tostring(w.msg):find("clientAuth", 1, true), w.msg)
    end
    assert.equal(1, #j.notes)
    assert.matches("skips verification", j.notes[1].msg, 1, true)
  end)

  it("--log-level=bogus: a clean error with etcd's exit status, named as a difference", function()
    local rc, j, err = check("3.4", { "--listen-peer-urls", http(), "--log-level", "bogus" })
    assert.equal(2, rc)
    assert.equal('unknown log level "bogus"', j.error)
    assert.equal("EUSAGE", j.code)
    assert.truthy(has_difference(j, "log_level_panic"))
    assert.is_nil(err:find("panic", 1, true))
  end)

  describe("the CRL file is loaded as the listener loads it", function()
    local base
    before_each(function()
      base = { "--listen-peer-urls", https(), "--peer-cert-file", P:cert("server"), "--peer-key-file",
        P:key("server"), "--peer-trusted-ca-file", P:cert("ca"), "--peer-client-cert-auth" }
    end)
    local function with_crl(path, version)
      local args = { table.unpack(base) }
      args[#args + 1] = "--peer-crl-file"
      args[#args + 1] = path
      return check(version or "3.4", args)
    end

    it("a good CRL (PEM or DER) passes, read as the listener reads it", function()
      assert.equal(0, (with_crl(P:path("revoked.crl"))))
      assert.equal(0, (with_crl(P:path("empty.crl.der"))))
      local startup = require "peerlisten.startup"
      local cfg = assert(require("peerlisten.config").new { peer_transport_security = {
        crl_file = P:path("revoked.crl.der") } })
      local info = assert(startup.crl(cfg))
      assert.equal(1, info.revoked)
      assert.matches("CN=", info.issuer, 1, true)
      assert.is_number(info.next_update)
    end)

    it("missing, empty, garbage, a directory, a DER certificate: FAIL, every mTLS peer would be refused", function()
      write(dir .. "/empty.crl", "")
      write(dir .. "/garbage.crl", "not a CRL\n")
      local der = dir .. "/cert.der"
      assert.is_true(os.execute(("openssl x509 -in '%s' -outform DER -out '%s'"):format(P:cert("server"), der)))
      local cases = {
        { dir .. "/nope.crl", "open " .. dir .. "/nope.crl: no such file or directory" },
        { dir .. "/empty.crl", "x509: malformed crl" },
        { dir .. "/garbage.crl", "x509: malformed crl" },
        { dir, "read " .. dir .. ": is a directory" },
        { der, "x509: malformed crl" },
      }
      for _, c in ipairs(cases) do
        local rc, j = with_crl(c[1])
        assert.equal(1, rc, c[1])
        assert.matches(c[2], j.error, 1, true)
        assert.matches("every peer presenting a client certificate would be refused", j.error, 1, true)
        assert.truthy(has_difference(j, "crl_checked"))
      end
    end)

    it("without client-cert-auth a broken CRL is a warning", function()
      local rc, j = check("3.4", { "--listen-peer-urls", https(), "--peer-cert-file", P:cert("server"),
        "--peer-key-file", P:key("server"), "--peer-crl-file", dir .. "/nope.crl" })
      assert.equal(0, rc)
      local found = false
      for _, w in ipairs(j.warnings) do
        if tostring(w.msg):find("CRL file cannot be used", 1, true) then found = true end
      end
      assert.is_true(found)
    end)
  end)

  describe("the version predicted for", function()
    it("is named in the verdict and the JSON", function()
      local out, err = buffer(), buffer()
      local rc = cli.main({ "check", "--etcd-version", "3.4", "--listen-peer-urls", http() },
        { stdout = out, stderr = err, env = {} })
      assert.equal(0, rc)
      assert.matches("PASS: etcd 3.4.23 would start its peer listeners with this configuration", out:text(), 1, true)
      local _, j = check("3.5.9", { "--listen-peer-urls", http() })
      assert.equal("3.5.9", j.etcd_version)
      assert.equal("--etcd-version", j.etcd_version_source)
      assert.is_table(j.differences)
    end)

    it("defaults to what `etcd --version` on PATH reports, else the newest", function()
      local bin = dir .. "/bin"
      os.execute("mkdir -p '" .. bin .. "'")
      write(bin .. "/etcd", "#!/bin/sh\necho 'etcd Version: 3.5.9'\necho 'Git SHA: x'\n")
      os.execute("chmod +x '" .. bin .. "/etcd'")
      local _, j = check(nil, { "--listen-peer-urls", http() }, { PATH = bin })
      assert.equal("3.5.9", j.etcd_version)
      assert.equal("etcd --version", j.etcd_version_source)
      _, j = check(nil, { "--etcd", bin .. "/etcd", "--listen-peer-urls", http() })
      assert.equal("3.5.9", j.etcd_version)
      _, j = check(nil, { "--listen-peer-urls", http() }, { PATH = dir .. "/empty" })
      assert.equal("3.6.14", j.etcd_version)
      assert.equal("newest modelled", j.etcd_version_source)
      local rc, _, err = check("2.3", { "--listen-peer-urls", http() })
      assert.equal(2, rc)
      assert.matches("not modelled", err, 1, true)
    end)
  end)
end)
