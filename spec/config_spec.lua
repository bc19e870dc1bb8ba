local config = require "peerlisten.config"

local FIX = "spec/fixtures/"

local function notes_with(cfg, msg)
  local out = {}
  for _, n in ipairs(cfg._notes) do
    if n.msg == msg then out[#out + 1] = n end
  end
  return out
end

local function fails(code, pattern, ...)
  local cfg, err, c = ...
  assert.is_nil(cfg)
  assert.is_string(err)
  assert.equal(code, c)
  if pattern then assert.equal(pattern, err) end
  return err
end

describe("peerlisten.config", function()
  describe(".new()", function()
    it("fills etcd's defaults", function()
      local cfg = assert(config.new {})
      assert.same({ "http://localhost:2380" }, cfg.listen_peer_urls)
      assert.equal("default", cfg.name)
      assert.equal("default.etcd", cfg.data_dir)
      assert.same({ cert_file = "", key_file = "", client_cert_file = "", client_key_file = "",
        trusted_ca_file = "", client_cert_auth = false, crl_file = "", auto_tls = false,
        allowed_cn = {}, allowed_hostname = {}, skip_client_san_verification = false },
        cfg.peer_transport_security)
      assert.same({ reuse_port = false, reuse_address = false }, cfg.socket_options)
      assert.same({}, cfg.cipher_suites)
      assert.equal("TLS1.2", cfg.tls_min_version)
      assert.equal("", cfg.tls_max_version)
      assert.equal(1, cfg.self_signed_cert_validity)
      assert.equal(5, cfg.raft_read_timeout)
      assert.equal(5, cfg.raft_write_timeout)
      assert.equal("info", cfg.log_level)
      assert.same({}, cfg._notes)
    end)

    it("keeps the given URL order (as etcd's embed API) and accepts '-' keys", function()
      local cfg = assert(config.new {
        listen_peer_urls = { "https://127.0.0.1:2", "https://127.0.0.1:1" },
        ["peer-transport-security"] = { ["auto-tls"] = true },
        data_dir = "n1.etcd",
      })
      assert.same({ "https://127.0.0.1:2", "https://127.0.0.1:1" }, cfg.listen_peer_urls)
      assert.is_true(cfg.peer_transport_security.auto_tls)
      assert.equal(cfg, config.new(cfg))
    end)

    it("warns about unknown keys with a suggestion and keeps etcd's other keys", function()
      local cfg = assert(config.new {
        listen_peer_url = "http://127.0.0.1:1",
        peer_transport_security = { cert_fil = "x" },
        initial_cluster = "a=http://127.0.0.1:1",
      })
      local w = notes_with(cfg, "unknown configuration key")
      assert.equal(2, #w)
      assert.equal("listen_peer_url", w[1].fields.key)
      assert.equal("listen_peer_urls", w[1].fields["did-you-mean"])
      assert.equal("peer_transport_security.cert_fil", w[2].fields.key)
      assert.equal("peer_transport_security.cert_file", w[2].fields["did-you-mean"])
      assert.equal("a=http://127.0.0.1:1", cfg._other.initial_cluster)
    end)

    it("names every key with a wrong type", function()
      local err = fails("ECONFIG", nil, config.new {
        peer_transport_security = { client_cert_auth = "yes", cert_file = 5 },
        socket_options = { reuse_port = 1 },
        raft_read_timeout = "soon",
      })
      assert.matches("peer_transport_security.client_cert_auth: expected a boolean, got string", err, 1, true)
      assert.matches("peer_transport_security.cert_file: expected a string, got number", err, 1, true)
      assert.matches("socket_options.reuse_port: expected a boolean, got number", err, 1, true)
      assert.matches("raft_read_timeout: expected a duration", err, 1, true)
      fails("ECONFIG", "peer_transport_security: expected a table, got string",
        config.new { peer_transport_security = "tls" })
    end)

    it("checks URLs and the bind rule with etcd's errors", function()
      fails("ECONFIG", 'listen_peer_urls: URL address does not have the form "host:port": http://127.0.0.1',
        config.new { listen_peer_urls = "http://127.0.0.1" })
      fails("ECONFIG", "expected IP in URL for binding (http://example.com:19080)",
        config.new { listen_peer_urls = { "http://example.com:19080" } })
    end)

    it("checks TLS versions as etcd's Validate", function()
      fails("ECONFIG", 'unexpected TLS version "TLS1.1" (must be one of: TLS1.2, TLS1.3)',
        config.new { tls_min_version = "TLS1.1" })
      fails("ECONFIG", 'unexpected TLS version "tls1.3" (must be one of: TLS1.2, TLS1.3)',
        config.new { tls_max_version = "tls1.3" })
      fails("ECONFIG", "min version (TLS1.3) is greater than max version (TLS1.2)",
        config.new { tls_min_version = "TLS1.3", tls_max_version = "TLS1.2" })
      fails("ECONFIG", "cipher suites cannot be configured when only TLS1.3 is enabled",
        config.new { tls_min_version = "TLS1.3", cipher_suites = { "TLS_AES_128_GCM_SHA256" } })
      assert.truthy(config.new { tls_min_version = "TLS1.2", tls_max_version = "TLS1.3",
        cipher_suites = { "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" } })
      assert.truthy(config.new { tls_min_version = "TLS1.3", tls_max_version = "TLS1.3" })
    end)

    it("raises on a non-table", function()
      assert.has_error(function() config.new("x") end)
    end)
  end)

  describe(".load{file=}", function()
    it("loads etcd's sample config file as is", function()
      local cfg = assert(config.load { file = FIX .. "etcd.conf.yml" })
      assert.same({ "http://localhost:2380" }, cfg.listen_peer_urls)
      assert.equal("default.etcd", cfg.data_dir)
      assert.same({ "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" },
        cfg.cipher_suites)
      assert.equal("TLS1.3", cfg.tls_max_version)
      assert.equal("debug", cfg.log_level)
      assert.same({ "stderr" }, cfg.log_outputs)
      assert.equal("", cfg.peer_transport_security.cert_file)
      assert.same({}, cfg.peer_transport_security.allowed_cn)
      assert.equal(0, #notes_with(cfg, "unknown configuration key"))
      local info = notes_with(cfg, "loaded server configuration, other configuration command line flags "
        .. "and environment variables will be ignored if provided")
      assert.equal(1, #info)
      assert.equal(FIX .. "etcd.conf.yml", info[1].fields.path)
      assert.equal(1, #notes_with(cfg, "'data-dir' was empty; using default"))
      assert.equal(10000, cfg._other["snapshot-count"])
    end)

    it("loads peer TLS, socket options and raft timeouts from the file", function()
      local cfg = assert(config.load { file = FIX .. "peer-tls.yml" })
      assert.same({ "http://127.0.0.1:12381", "https://127.0.0.1:12380" }, cfg.listen_peer_urls)
      local pts = cfg.peer_transport_security
      assert.equal("/etc/etcd/peer.crt", pts.cert_file)
      assert.is_true(pts.client_cert_auth)
      assert.equal("", pts.crl_file)
      assert.same({ "n2", "n3" }, pts.allowed_cn)
      assert.is_true(cfg.socket_options.reuse_port)
      assert.equal(7, cfg.raft_read_timeout)
      assert.equal(8, cfg.raft_write_timeout)
      assert.equal(1, cfg.self_signed_cert_validity) -- YAML 0 is rewritten to 1, as etcd
      assert.equal(0, #notes_with(cfg, "unknown configuration key"))
      assert.equal(0, #notes_with(cfg, "'data-dir' was empty; using default"))
    end)

    it("refuses listen-peer-urls as a YAML list, as etcd's decoder (a comma-separated string)", function()
      fails("ECONFIG", "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal array into Go struct "
        .. "field configYAML.listen-peer-urls of type string", config.load { file = FIX .. "list-urls.yml" })
    end)

    it("sorts but does not de-duplicate the URLs of the file, as etcd", function()
      local path = os.tmpname()
      local fh = assert(io.open(path, "w"))
      fh:write("listen-peer-urls: https://127.0.0.1:12382,http://127.0.0.1:12381,http://127.0.0.1:12381\n")
      fh:close()
      local cfg = assert(config.load { file = path })
      os.remove(path)
      assert.same({ "http://127.0.0.1:12381", "http://127.0.0.1:12381", "https://127.0.0.1:12382" },
        cfg.listen_peer_urls)
    end)

    it("warns about unknown and misplaced keys, naming the key meant", function()
      local cfg = assert(config.load { file = FIX .. "typos.yml" })
      local texts = {}
      for _, n in ipairs(notes_with(cfg, "unknown configuration key")) do texts[#texts + 1] = n.text end
      assert.same({
        'unknown configuration key "listen-peer-url" (did you mean listen-peer-urls?)',
        'unknown configuration key "peer-cert-file" (did you mean peer-transport-security.cert-file?)',
        'unknown configuration key "peer-transport-security.cert-fil" '
          .. "(did you mean peer-transport-security.cert-file?)",
        'unknown configuration key "peer-transport-security.key_file" (did you mean peer-transport-security.key-file?)',
        'unknown configuration key "totally-unrelated-thing"',
      }, texts)
    end)

    it("reports the first key with a wrong type as etcd's decoder (keys in sorted order)", function()
      -- listen-peer-urls: 2380 is the string "2380" to etcd's decoder, so the first error is the bool
      fails("ECONFIG", "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal string into Go struct "
        .. "field securityConfig.peer-transport-security.client-cert-auth of type bool",
        config.load { file = FIX .. "bad-types.yml" })
    end)

    it("reports URL, YAML and file errors with etcd's words", function()
      fails("ECONFIG", 'unexpected error setting up listen-peer-urls: URL address does not have the form '
        .. '"host:port": http://127.0.0.1', config.load { file = FIX .. "bad-url.yml" })
      local err = fails("ECONFIG", nil, config.load { file = FIX .. "not-yaml.yml" })
      -- etcd 3.4.23 on this file: "yaml: line 1: did not find expected ',' or ']'"
      assert.equal("error converting YAML to JSON: yaml: line 1: did not find expected ',' or ']'", err)
      fails("ECONFIG", "open " .. FIX .. "nonexistent.yml: no such file or directory",
        config.load { file = FIX .. "nonexistent.yml" })
      fails("ECONFIG", "read " .. FIX .. ": is a directory", config.load { file = FIX })
    end)

    it("wins over flags and env, except the raft timeouts given as flags", function()
      local cfg = assert(config.load { file = FIX .. "peer-tls.yml",
        args = { "--listen-peer-urls", "http://127.0.0.1:9", "--raft-read-timeout", "2s" },
        env = { ETCD_PEER_CERT_FILE = "/from/env" } })
      assert.same({ "http://127.0.0.1:12381", "https://127.0.0.1:12380" }, cfg.listen_peer_urls)
      assert.equal("/etc/etcd/peer.crt", cfg.peer_transport_security.cert_file)
      assert.equal(2, cfg.raft_read_timeout) -- not raised to 5 s on this path, as etcd
      cfg = assert(config.load { args = { "--config-file=" .. FIX .. "peer-tls.yml" } })
      assert.equal("n1", cfg.name)
      cfg = assert(config.load { env = { ETCD_CONFIG_FILE = FIX .. "peer-tls.yml" } })
      assert.equal("n1", cfg.name)
    end)
  end)

  describe(".load{args=, env=}", function()
    it("parses etcd's flags, sorting and de-duplicating URLs", function()
      local cfg = assert(config.load { args = { "--listen-peer-urls",
        "https://localhost:19032,https://127.0.0.1:19031,https://127.0.0.1:19031",
        "-peer-auto-tls", "--peer-client-cert-auth=false", "--data-dir=/tmp/d", "--cipher-suites",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "--socket-reuse-port", "--initial-cluster", "n=http://x:1" } })
      assert.same({ "https://127.0.0.1:19031", "https://localhost:19032" }, cfg.listen_peer_urls)
      assert.is_true(cfg.peer_transport_security.auto_tls)
      assert.is_false(cfg.peer_transport_security.client_cert_auth)
      assert.equal("/tmp/d", cfg.data_dir)
      assert.same({ "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" }, cfg.cipher_suites)
      assert.is_true(cfg.socket_options.reuse_port)
      assert.equal("n=http://x:1", cfg._other["initial-cluster"])
    end)

    it("keeps the default for an empty --listen-peer-urls, and the last repeated flag wins", function()
      local cfg = assert(config.load { args = { "--listen-peer-urls=" } })
      assert.same({ "http://localhost:2380" }, cfg.listen_peer_urls)
      cfg = assert(config.load { args = { "--name=a", "--name=b" } })
      assert.equal("b", cfg.name)
      assert.equal("b.etcd", cfg.data_dir)
    end)

    it("reports flag errors as etcd's flag package (EUSAGE)", function()
      fails("EUSAGE", "flag provided but not defined: -bogus", config.load { args = { "--bogus" } })
      fails("EUSAGE", "flag needs an argument: -peer-cert-file", config.load { args = { "--peer-cert-file" } })
      -- a stray argument is etcd's own error (exit 1), quoted as each version quotes it
      fails("ECONFIG", '"extra" is not a valid flag', config.load { args = { "--name", "x", "extra" } })
      fails("ECONFIG", "'extra' is not a valid flag",
        config.load { args = { "--name", "x", "extra" }, etcd_version = "3.5" })
      -- a malformed value is refused by the flag package while parsing: exit status 2
      fails("EUSAGE", 'invalid value "http://127.0.0.1" for flag -listen-peer-urls: URL address does not '
        .. 'have the form "host:port": http://127.0.0.1',
        config.load { args = { "--listen-peer-urls", "http://127.0.0.1" } })
      fails("EUSAGE", 'invalid boolean value "maybe" for -peer-auto-tls: parse error',
        config.load { args = { "--peer-auto-tls=maybe" } })
      fails("EUSAGE", 'invalid value "fast" for flag -raft-read-timeout: parse error',
        config.load { args = { "--raft-read-timeout", "fast" } })
    end)

    it("uses ETCD_* variables for flags not given and says so", function()
      local cfg = assert(config.load { args = { "--name", "n1" }, env = {
        ETCD_LISTEN_PEER_URLS = "http://127.0.0.1:2,http://127.0.0.1:1,http://127.0.0.1:2",
        ETCD_PEER_AUTO_TLS = "true", ETCD_DATA_DIR = "", ETCD_BOGUS_THING = "1",
        ETCD_INITIAL_CLUSTER = "x", PATH = "/bin" } })
      assert.same({ "http://127.0.0.1:1", "http://127.0.0.1:2" }, cfg.listen_peer_urls)
      assert.is_true(cfg.peer_transport_security.auto_tls)
      assert.equal("n1.etcd", cfg.data_dir)
      local used = notes_with(cfg, "recognized and used environment variable")
      assert.equal(2, #used)
      local names = { used[1].fields["variable-name"], used[2].fields["variable-name"] }
      table.sort(names)
      assert.same({ "ETCD_LISTEN_PEER_URLS", "ETCD_PEER_AUTO_TLS" }, names)
      local unknown = notes_with(cfg, "unrecognized environment variable")
      assert.equal(1, #unknown)
      assert.equal("ETCD_BOGUS_THING=1", unknown[1].fields["environment-variable"])
      assert.equal("warn", unknown[1].level)
    end)

    it("accepts a getenv function", function()
      local cfg = assert(config.load { env = function(n)
        if n == "ETCD_LISTEN_PEER_URLS" then return "http://127.0.0.1:7" end
      end })
      assert.same({ "http://127.0.0.1:7" }, cfg.listen_peer_urls)
    end)

    it("refuses a variable shadowed by its flag, in each version's words", function()
      fails("ECONFIG", 'conflicting environment variable "ETCD_LISTEN_PEER_URLS" is shadowed by corresponding '
        .. 'command-line flag (either unset environment variable or disable flag)',
        config.load { args = { "--listen-peer-urls", "http://127.0.0.1:1" },
          env = { ETCD_LISTEN_PEER_URLS = "http://127.0.0.1:2" }, etcd_version = "3.4" })
      fails("ECONFIG", "conflicting environment variable is shadowed by corresponding command-line flag (either "
        .. "unset environment variable or disable flag)) (environment-variable=ETCD_LISTEN_PEER_URLS)",
        config.load { args = { "--listen-peer-urls", "http://127.0.0.1:1" },
          env = { ETCD_LISTEN_PEER_URLS = "http://127.0.0.1:2" } })
    end)

    it("refuses an empty variable next to its flag, as etcd (systemd Environment=ETCD_X=)", function()
      for _, v in ipairs { "3.4", "3.5", "3.6" } do
        local _, err, code = config.load { args = { "--peer-cert-file", "/x.crt" },
          env = { ETCD_PEER_CERT_FILE = "" }, etcd_version = v }
        assert.equal("ECONFIG", code, v)
        assert.matches("conflicting environment variable", err, 1, true)
        assert.matches("ETCD_PEER_CERT_FILE", err, 1, true)
      end
      -- through a getenv function too (the process environment)
      local _, err = config.load { args = { "--name", "n1" },
        env = function(n) if n == "ETCD_NAME" then return "" end end, etcd_version = "3.4" }
      assert.matches('conflicting environment variable "ETCD_NAME"', err, 1, true)
      -- an empty variable alone is not applied
      local cfg = assert(config.load { env = { ETCD_PEER_CERT_FILE = "" } })
      assert.equal("", cfg.peer_transport_security.cert_file)
    end)

    it("reports env errors with the variable name", function()
      fails("ECONFIG", 'invalid value "http://127.0.0.1" for ETCD_LISTEN_PEER_URLS: URL address does not have '
        .. 'the form "host:port": http://127.0.0.1',
        config.load { env = { ETCD_LISTEN_PEER_URLS = "http://127.0.0.1" } })
    end)

    it("raises raft timeouts below 5 s to 5 s, as etcd", function()
      local cfg = assert(config.load { args = { "--raft-read-timeout", "1s", "--raft-write-timeout=7s" } })
      assert.equal(5, cfg.raft_read_timeout)
      assert.equal(7, cfg.raft_write_timeout)
      assert.equal(1, #notes_with(cfg, "raft-read-timeout increased to minimum value: 5s"))
      fails("EUSAGE", nil, config.load { args = { "--raft-read-timeout", "fast" } })
    end)
  end)

  describe(".explain()", function()
    it("names the source of every value", function()
      local cfg = assert(config.load { args = { "--name", "n1" }, env = { ETCD_PEER_AUTO_TLS = "true" } })
      local by = {}
      for _, row in ipairs(config.explain(cfg)) do by[row.key] = row end
      assert.equal("flag", by.name.source)
      assert.equal("env", by["peer_transport_security.auto_tls"].source)
      assert.equal("default", by.listen_peer_urls.source)
      assert.matches("flag %-%-name", by.name.text)
      cfg = assert(config.load { file = FIX .. "peer-tls.yml" })
      by = {}
      for _, row in ipairs(config.explain(cfg)) do by[row.key] = row end
      assert.equal("file", by["peer_transport_security.cert_file"].source)
      assert.matches("peer%-tls.yml", by["peer_transport_security.cert_file"].text)
    end)
  end)
end)
