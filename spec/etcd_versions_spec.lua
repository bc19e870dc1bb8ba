-- The etcd 3.5 and 3.6 profiles (and the patch releases where a behaviour
-- changed inside 3.5) against what etcd's source says at those tags
-- (docs/etcd-versions.md: v3.5.33, v3.6.14 and the named boundaries). 3.4
-- is compared with the real binary in etcd_compat_spec.
local versions = require "peerlisten.etcd_versions"
local config = require "peerlisten.config"
local cli = require "peerlisten.cli"

local function load(v, o)
  o.etcd_version = v
  return config.load(o)
end

local function fails(code, text, cfg, err, c)
  assert.is_nil(cfg, "expected a failure")
  assert.equal(code, c, err)
  if text then assert.matches(text, err, 1, true) end
  return err
end

local function yaml(text)
  local path = os.tmpname()
  local fh = assert(io.open(path, "w"))
  fh:write(text)
  fh:close()
  return path
end

describe("etcd version profiles", function()
  describe("resolve", function()
    it("maps release lines to the modelled releases and takes full versions", function()
      assert.equal("3.4.23", versions.resolve("3.4").version)
      assert.equal("3.5.33", versions.resolve("3.5").version)
      assert.equal("3.6.14", versions.resolve("3.6").version)
      assert.equal("3.5.9", versions.resolve("v3.5.9").version)
      assert.equal("3.5", versions.resolve("3.5.9").line)
      assert.is_nil(versions.resolve("3.3"))
      assert.is_nil(versions.resolve("3.7.0"))
      assert.is_nil(versions.resolve("latest"))
      assert.equal("3.4.23", versions.parse_version_output("etcd Version: 3.4.23\nGit SHA: Not provided\n"))
    end)

    it("places each boundary the table names at its release", function()
      local function has(v, id) return versions.has(versions.resolve(v), id) end
      for _, c in ipairs {
        { "tls_version_flags", "3.4.24", false }, { "tls_version_flags", "3.4.25", true },
        { "tls_version_flags", "3.5.7", false }, { "tls_version_flags", "3.5.8", true },
        { "unique_flag_urls", "3.5.9", false }, { "unique_flag_urls", "3.5.10", true },
        { "yaml_socket_options", "3.5.9", false }, { "yaml_socket_options", "3.5.10", true },
        { "unix_any_path", "3.5.12", false }, { "unix_any_path", "3.5.13", true },
        { "yaml_allowed_keys", "3.5.13", false }, { "yaml_allowed_keys", "3.5.14", true },
        { "yaml_allowed_lists", "3.5.14", false }, { "allowed_list_flags", "3.5.14", false },
        { "allowed_list_flags", "3.5.15", true }, { "yaml_allowed_lists", "3.5.15", true },
        { "capnslog", "3.4.23", true }, { "capnslog", "3.5.0", false },
        { "log_format_flag", "3.5.33", false }, { "log_format_flag", "3.6.0", true },
        { "skip_san_flag", "3.5.33", false }, { "skip_san_flag", "3.6.14", true },
        { "null_security_invalid", "3.5.33", false }, { "null_security_invalid", "3.6.0", true },
        { "socket_flags", "3.4.23", false }, { "socket_flags", "3.5.0", true },
      } do
        assert.equal(c[3], has(c[2], c[1]), c[1] .. " at " .. c[2])
      end
      assert.has_error(function() versions.has(versions.resolve("3.5"), "nope") end)
    end)
  end)

  describe("flags", function()
    it("--tls-min-version: absent in 3.4.23, present from 3.4.25 and 3.5.8", function()
      fails("EUSAGE", "flag provided but not defined: -tls-min-version",
        load("3.5.7", { args = { "--tls-min-version", "TLS1.2" } }))
      assert.truthy(load("3.5.8", { args = { "--tls-min-version", "TLS1.3" } }))
      assert.truthy(load("3.4.25", { args = { "--tls-min-version", "TLS1.3" } }))
      fails("ECONFIG", "cipher suites cannot be configured when only TLS1.3 is enabled", load("3.5", { args = {
        "--tls-min-version", "TLS1.3", "--cipher-suites", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" } }))
    end)

    it("--log-format exists in 3.6 only, with its error for a bad value", function()
      fails("EUSAGE", "flag provided but not defined: -log-format", load("3.5", { args = { "--log-format", "json" } }))
      fails("ECONFIG", "unknown log format: xml, supported values json, console",
        load("3.6", { args = { "--log-format", "xml" } }))
    end)

    it("--peer-skip-client-san-verification is 3.6 only; the experimental name is everywhere", function()
      fails("EUSAGE", "flag provided but not defined: -peer-skip-client-san-verification",
        load("3.5", { args = { "--peer-skip-client-san-verification" } }))
      assert.is_true(load("3.6", { args = { "--peer-skip-client-san-verification" } })
        .peer_transport_security.skip_client_san_verification)
      assert.truthy(load("3.5", { args = { "--experimental-peer-skip-client-san-verification" } }))
    end)

    it("3.5 has the socket, peer client cert, validity and raft timeout flags; --debug is gone", function()
      local cfg = assert(load("3.5", { args = { "--socket-reuse-port", "--peer-client-cert-file", "/c",
        "--peer-client-key-file", "/k", "--self-signed-cert-validity", "2", "--raft-read-timeout", "6s" } }))
      assert.is_true(cfg.socket_options.reuse_port)
      assert.equal("/c", cfg.peer_transport_security.client_cert_file)
      assert.equal(2, cfg.self_signed_cert_validity)
      fails("EUSAGE", "flag provided but not defined: -debug", load("3.5", { args = { "--debug" } }))
      assert.truthy(load("3.4", { args = { "--debug" } }))
    end)

    it("--logger=capnslog is removed in 3.5", function()
      fails("ECONFIG", "--logger=capnslog is removed in v3.5", load("3.5", { args = { "--logger", "capnslog" } }))
      assert.equal("zap", assert(load("3.5", { args = {} })).logger)
      assert.equal("capnslog", assert(load("3.4", { args = {} })).logger)
    end)

    it("a stray argument: 'x' before 3.6, \"x\" in 3.6 (exit 1 in both)", function()
      fails("ECONFIG", "'x' is not a valid flag", load("3.5", { args = { "x" } }))
      fails("ECONFIG", '"x" is not a valid flag', load("3.6", { args = { "x" } }))
    end)

    it("a variable next to its flag: zap's wording from 3.5", function()
      fails("ECONFIG", "conflicting environment variable is shadowed by corresponding command-line flag (either "
        .. "unset environment variable or disable flag)) (environment-variable=ETCD_NAME)",
        load("3.5", { args = { "--name", "a" }, env = { ETCD_NAME = "b" } }))
    end)
  end)

  describe("URLs", function()
    local dup = "http://127.0.0.1:1,http://127.0.0.1:1"
    it("a repeated URL in the flag is kept before 3.5.10 and bound once from 3.5.10", function()
      assert.equal(2, #assert(load("3.5.9", { args = { "--listen-peer-urls", dup } })).listen_peer_urls)
      assert.equal(1, #assert(load("3.5.10", { args = { "--listen-peer-urls", dup } })).listen_peer_urls)
      assert.equal(1, #assert(load("3.6", { env = { ETCD_LISTEN_PEER_URLS = dup } })).listen_peer_urls)
      -- the YAML path never de-duplicates
      local path = yaml("listen-peer-urls: " .. dup .. "\n")
      assert.equal(2, #assert(load("3.6", { file = path })).listen_peer_urls)
      os.remove(path)
    end)

    it("unix:///abs/path is accepted from 3.5.13", function()
      fails("EUSAGE", 'URL address does not have the form "host:port": unix:///x.sock',
        load("3.5.12", { args = { "--listen-peer-urls", "unix:///x.sock" } }))
      assert.truthy(load("3.5.13", { args = { "--listen-peer-urls", "unix:///x.sock" } }))
    end)
  end)

  describe("allowed CN and hostname", function()
    local pair = { "--peer-cert-file", "/c", "--peer-key-file", "/k" }
    local function args(extra)
      local a = { table.unpack(pair) }
      for _, x in ipairs(extra) do a[#a + 1] = x end
      return a
    end

    it("the flag is one string before 3.5.15 ('a,b' is one CN) and a list from 3.5.15", function()
      assert.same({ "a,b" }, load("3.5.14", { args = { "--peer-cert-allowed-cn", "a,b" } })
        .peer_transport_security.allowed_cn)
      assert.same({ "a", "b" }, load("3.5.15", { args = { "--peer-cert-allowed-cn", "a,b" } })
        .peer_transport_security.allowed_cn)
    end)

    it("both set with a key pair: each version's wording", function()
      fails("ECONFIG", 'AllowedCN and AllowedHostname are mutually exclusive (cn="a,b", hostname="h")',
        load("3.5.14", { args = args { "--peer-cert-allowed-cn", "a,b", "--peer-cert-allowed-hostname", "h" } }))
      fails("ECONFIG", 'AllowedCNs and AllowedHostnames are mutually exclusive (cns=["a" "b"], hostnames=["h"])',
        load("3.6", { args = args { "--peer-cert-allowed-cn", "a,b", "--peer-cert-allowed-hostname", "h" } }))
    end)

    it("YAML allowed-cn: refused where etcd ignores it, a string in 3.5.14, a list from 3.5.15", function()
      local sec = "peer-transport-security:\n  cert-file: /c\n  key-file: /k\n"
      local p1 = yaml(sec .. "  allowed-cn: peer1\n")
      local p2 = yaml(sec .. "  allowed-cn: [peer1, peer2]\n")
      local p3 = yaml(sec .. "  allowed-cn: {peer1: true}\n")
      local _, err, code, extra = load("3.5.13", { file = p1 })
      fails("ECONFIG", "etcd 3.5.13 has no such key", nil, err, code)
      assert.equal("ignored_security_key", extra.differences[1].id)
      assert.same({ "peer1" }, assert(load("3.5.14", { file = p1 })).peer_transport_security.allowed_cn)
      fails("ECONFIG", "cannot unmarshal array into Go struct field securityConfig.peer-transport-security."
        .. "allowed-cn of type string", load("3.5.14", { file = p2 }))
      assert.same({ "peer1", "peer2" }, assert(load("3.5.15", { file = p2 })).peer_transport_security.allowed_cn)
      fails("ECONFIG", "cannot unmarshal string into Go struct field securityConfig.peer-transport-security."
        .. "allowed-cn of type []string", load("3.6", { file = p1 }))
      fails("ECONFIG", "cannot unmarshal object into Go struct field securityConfig.peer-transport-security."
        .. "allowed-cn of type []string", load("3.5", { file = p3 }))
      for _, p in ipairs { p1, p2, p3 } do os.remove(p) end
    end)
  end)

  describe("YAML keys by version", function()
    it("peer-transport-security: ~ is ignored before 3.6 and invalid in 3.6", function()
      local p = yaml("peer-transport-security: ~\n")
      assert.truthy(load("3.5", { file = p }))
      fails("ECONFIG", "invalid peer-transport-security", load("3.6", { file = p }))
      os.remove(p)
    end)

    it("socket-options is read from 3.5.10; before, a warning says it is not honoured", function()
      local p = yaml("socket-options:\n  reuse-port: true\n")
      local cfg = assert(load("3.5.9", { file = p }))
      assert.is_false(cfg.socket_options.reuse_port)
      local warned = false
      for _, n in ipairs(cfg._notes) do
        if n.msg == "configuration key not honoured by this etcd version" then warned = true end
      end
      assert.is_true(warned)
      assert.is_true(assert(load("3.5.10", { file = p })).socket_options.reuse_port)
      os.remove(p)
    end)

    it("client-cert-file in peer-transport-security: refused by 3.4 (ignored there), read by 3.5", function()
      local p = yaml("peer-transport-security:\n  client-cert-file: /c\n  client-key-file: /k\n")
      fails("ECONFIG", "peer-transport-security.client-cert-file: etcd 3.4.23 has no such key", load("3.4", { file = p }))
      assert.equal("/c", assert(load("3.5", { file = p })).peer_transport_security.client_cert_file)
      os.remove(p)
    end)
  end)

  describe("serve and check follow the profile", function()
    local function run(args)
      local out, err = { parts = {} }, { parts = {} }
      local function w(b) return { write = function(_, ...) for _, x in ipairs { ... } do b.parts[#b.parts + 1] = x end end } end
      local rc = cli.main(args, { stdout = w(out), stderr = w(err), env = {} })
      return rc, table.concat(out.parts), table.concat(err.parts)
    end

    it("serve --etcd-version 3.4 refuses --socket-reuse-port as etcd 3.4 does", function()
      local rc, _, err = run { "serve", "--etcd-version", "3.4", "--socket-reuse-port" }
      assert.equal(2, rc)
      assert.matches("flag provided but not defined: -socket-reuse-port", err, 1, true)
    end)

    it("unixs:// is TLS in peerlisten; from 3.5 etcd serves it plain, a listed difference", function()
      local cjson = require "cjson"
      local _, out = run { "check", "--json", "--etcd-version", "3.5", "--listen-peer-urls", "unixs://x.sock:1" }
      local j = cjson.decode(out)
      assert.equal("unixs_plain", j.differences[1].id)
      _, out = run { "check", "--json", "--etcd-version", "3.4", "--listen-peer-urls", "unixs://x.sock:1" }
      for _, d in ipairs(cjson.decode(out).differences) do assert.not_equal("unixs_plain", d.id) end
    end)

    it("check --etcd-version 3.5 takes --socket-reuse-port", function()
      local port = require("helper").free_port()
      local rc, out = run { "check", "--etcd-version", "3.5", "--socket-reuse-port", "--listen-peer-urls",
        "http://127.0.0.1:" .. port }
      assert.equal(0, rc, out)
      assert.matches("PASS: etcd 3.5.33 would start", out, 1, true)
    end)
  end)
end)
