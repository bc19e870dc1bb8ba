-- peerlisten.TlsPolicy without sockets.  Handshakes
-- run in memory through core._tls_handshake (a client SSL over a BIO pair,
-- driving the same pl_tls_* calls conn.c makes).
local core = require "peerlisten.core"
local helper = require "helper"
local pki_mod = require "support.pki"

local P

local function pair(name) return { cert = P:cert(name), key = P:key(name) } end

local function policy(o)
  o.cert_file = o.cert_file or P:cert("server")
  o.key_file = o.key_file or P:key("server")
  local p, w, code = core.tls_policy(o)
  assert(p, tostring(w) .. " " .. tostring(code))
  return p, w
end

local function fails(o, msg, code)
  local p, m, c = core.tls_policy(o)
  assert.is_nil(p)
  assert.are.equal(msg, m)
  assert.are.equal(code, c)
end

local write = helper.writefile

local function handshake(p, client)
  return core._tls_handshake(p, client or {})
end

local function accepted(p, client)
  local ok, info_or_reason, msg = handshake(p, client)
  assert(ok == true, "rejected: " .. tostring(info_or_reason) .. ": " .. tostring(msg))
  return info_or_reason
end

local function rejected(p, client, reason, msg)
  local ok, r, m, side = handshake(p, client)
  assert.is_false(ok)
  assert.are.equal(reason, r)
  if msg then assert.are.equal(msg, m) end
  return m, side
end

-- bump a file's mtime/size so stat sees a change even within one second
local function replace(from, to)
  P:copy(from, to)
end

describe("peerlisten.TlsPolicy", function()
  setup(function()
    assert(pki_mod.available(), "openssl CLI missing")
    P = pki_mod.new()
  end)
  teardown(function()
    if P then P:cleanup() end
    collectgarbage()
  end)

  describe("core.tls_policy{...}", function()
    it("builds a policy without certificates (has_cert false)", function()
      local p, warnings = core.tls_policy {}
      assert.are.equal("peerlisten.TlsPolicy", getmetatable(p).__name)
      assert.are.same({}, warnings)
      assert.is_false(p:has_cert())
      p:close()
    end)

    it("builds a policy with a cert and key", function()
      local p = policy {}
      assert.is_true(p:has_cert())
      assert.is_true(p:info().has_cert)
      p:close()
    end)

    it("raises on a non-table argument", function()
      assert.has_error(function() core.tls_policy("x") end)
    end)

    it("reports unknown options", function()
      fails({ cert_fle = "x" }, 'unknown TLS policy option "cert_fle"', "ETLSCONFIG")
      fails({ [1] = "x" }, 'unknown TLS policy option "1"', "ETLSCONFIG")
    end)

    it("reports options of the wrong type", function()
      fails({ cert_file = 5 }, 'TLS policy option "cert_file": string expected, got number', "ETLSCONFIG")
      fails({ client_cert_auth = "yes" },
        'TLS policy option "client_cert_auth": boolean expected, got string', "ETLSCONFIG")
      fails({ allowed_cns = 5 },
        'TLS policy option "allowed_cns": list of strings expected, got number', "ETLSCONFIG")
      fails({ cipher_suites = { 1 } },
        'TLS policy option "cipher_suites": item 1: string expected, got number', "ETLSCONFIG")
      fails({ handshake_timeout = 0 },
        'TLS policy option "handshake_timeout": positive number of seconds expected', "ETLSCONFIG")
      fails({ handshake_timeout = "1" },
        'TLS policy option "handshake_timeout": positive number of seconds expected', "ETLSCONFIG")
      fails({ alpn = { "" } }, 'TLS policy option "alpn": protocol names must be 1 to 255 bytes', "ETLSCONFIG")
    end)

    describe("versions (etcd Validate rules)", function()
      it("rejects unknown version names", function()
        for _, v in ipairs { "TLS1.1", "TLS1.0", "tls1.2", "1.2" } do
          fails({ min_version = v }, ('unexpected TLS version "%s" (must be one of: TLS1.2, TLS1.3)'):format(v),
            "ETLSCONFIG")
          fails({ max_version = v }, ('unexpected TLS version "%s" (must be one of: TLS1.2, TLS1.3)'):format(v),
            "ETLSCONFIG")
        end
      end)
      it("rejects min > max", function()
        fails({ min_version = "TLS1.3", max_version = "TLS1.2" },
          "min version (TLS1.3) is greater than max version (TLS1.2)", "ETLSCONFIG")
      end)
      it("accepts the valid combinations and empty strings", function()
        for _, mm in ipairs { { "TLS1.3", "" }, { "", "TLS1.2" }, { "TLS1.3", "TLS1.3" }, { "TLS1.2", "TLS1.3" },
                              { "", "" } } do
          local p = policy { min_version = mm[1], max_version = mm[2] }
          p:close()
        end
        local info = policy({}):info()
        assert.are.equal("TLS1.2", info.min_version)
        assert.are.equal("TLS1.3", info.max_version)
      end)
      it("rejects cipher suites when only TLS1.3 is enabled", function()
        fails({ min_version = "TLS1.3", cipher_suites = { "TLS_AES_128_GCM_SHA256" } },
          "cipher suites cannot be configured when only TLS1.3 is enabled", "ETLSCONFIG")
      end)
    end)

    describe("cipher suites", function()
      it("rejects names etcd rejects, naming the first bad one", function()
        fails({ cipher_suites = { "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_BOGUS", "ALSO_BOGUS" } },
          'unexpected TLS cipher suite "TLS_BOGUS"', "ETLSCONFIG")
        fails({ cipher_suites = { "tls_ecdhe_rsa_with_aes_128_gcm_sha256" } },
          'unexpected TLS cipher suite "tls_ecdhe_rsa_with_aes_128_gcm_sha256"', "ETLSCONFIG")
        fails({ cipher_suites = { "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", " TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" } },
          'unexpected TLS cipher suite " TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"', "ETLSCONFIG")
        fails({ cipher_suites = { "" } }, 'unexpected TLS cipher suite ""', "ETLSCONFIG")
        fails({ cipher_suites = { "ECDHE-RSA-AES128-GCM-SHA256" } },
          'unexpected TLS cipher suite "ECDHE-RSA-AES128-GCM-SHA256"', "ETLSCONFIG")
        fails({ cipher_suites = { "TLS_RSA_WITH_AES_256_CBC_SHA256" } },
          'unexpected TLS cipher suite "TLS_RSA_WITH_AES_256_CBC_SHA256"', "ETLSCONFIG")
      end)

      it("accepts RC4/3DES names with a warning", function()
        local p, w = policy { cipher_suites = { "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", "TLS_AES_128_GCM_SHA256",
                                                "TLS_RSA_WITH_RC4_128_SHA" } }
        assert.are.equal(1, #w)
        assert.are.equal("warn", w[1].level)
        assert.are.equal("cipher suite cannot be negotiated by OpenSSL; ignoring it", w[1].msg)
        assert.are.equal("TLS_RSA_WITH_RC4_128_SHA", w[1].fields["cipher-suite"])
        assert.are.same(w, p:warnings())
        assert.are.same({ "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", "TLS_AES_128_GCM_SHA256", "TLS_RSA_WITH_RC4_128_SHA" },
          p:info().cipher_suites)
        p:close()
      end)

      it("rejects a list leaving no usable TLS 1.2 suite while TLS 1.2 is allowed", function()
        local p, m, c = core.tls_policy { cipher_suites = { "TLS_AES_128_GCM_SHA256" } }
        assert.is_nil(p)
        assert.are.equal("ETLSCONFIG", c)
        assert.matches("leave no TLS 1.2 cipher suite OpenSSL can use", m, 1, true)
        p, m, c = core.tls_policy { cipher_suites = { "TLS_RSA_WITH_RC4_128_SHA", "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA" } }
        assert.is_nil(p)
        assert.are.equal("ETLSCONFIG", c)
        assert.matches("[TLS_RSA_WITH_RC4_128_SHA TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA]", m, 1, true)
      end)

      it("core.cipher_suites() lists the 27 names with id, versions, availability", function()
        local list = core.cipher_suites()
        assert.are.equal(27, #list)
        local by = {}
        for _, s in ipairs(list) do by[s.name] = s end
        assert.are.equal(0xC02F, by.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256.id)
        assert.are.equal(0xC013, by.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA.id)
        assert.are.equal(0xCCA8, by.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305.id)
        assert.are.equal(0xCCA9, by.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305.id)
        assert.are.equal(0x1301, by.TLS_AES_128_GCM_SHA256.id)
        assert.are.same({ "TLS1.3" }, by.TLS_AES_128_GCM_SHA256.versions)
        assert.are.same({ "TLS1.2" }, by.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256.versions)
        assert.are.same({ "TLS1.0", "TLS1.1", "TLS1.2" }, by.TLS_RSA_WITH_AES_128_CBC_SHA.versions)
        for _, n in ipairs { "TLS_RSA_WITH_RC4_128_SHA", "TLS_RSA_WITH_3DES_EDE_CBC_SHA", "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
                             "TLS_ECDHE_RSA_WITH_RC4_128_SHA", "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA" } do
          assert.is_false(by[n].available, n)
        end
        local n_avail = 0
        for _, s in ipairs(list) do if s.available then n_avail = n_avail + 1 end end
        assert.are.equal(22, n_avail)
        -- every name is accepted by the constructor
        for _, s in ipairs(list) do
          local names = { s.name }
          if not s.available or s.tls13 then names[2] = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" end
          local p = policy { cipher_suites = names }
          p:close()
        end
      end)
    end)

    describe("certificates (etcd's order and wording)", function()
      it("requires both cert and key", function()
        fails({ cert_file = P:cert("server") },
          ("KeyFile and CertFile must both be present[key: , cert: %s]"):format(P:cert("server")), "ETLSCONFIG")
        fails({ key_file = P:key("server") },
          ("KeyFile and CertFile must both be present[key: %s, cert: ]"):format(P:key("server")), "ETLSCONFIG")
      end)
      it("reports unreadable files like Go", function()
        fails({ cert_file = "@badname", key_file = P:key("server") }, "open @badname: no such file or directory", "ECERT")
        fails({ cert_file = P:cert("server"), key_file = "/nonexistent/k" },
          "open /nonexistent/k: no such file or directory", "ECERT")
        fails({ cert_file = P.dir, key_file = P:key("server") }, ("read %s: is a directory"):format(P.dir), "ECERT")
      end)
      it("refuses files over the 16 MiB cap (trusted CA, cert, CRL alike)", function()
        local big = P:path("big.pem")
        assert(os.execute(("truncate -s 17M '%s'"):format(big)))
        local msg = ("read %s: file too large"):format(big)
        fails({ trusted_ca_file = big }, msg, "ECERT")
        fails({ cert_file = big, key_file = P:key("server") }, msg, "ECERT")
        local p = policy { trusted_ca_file = P:cert("ca"), crl_file = big }
        rejected(p, pair("client-good"), "crl", msg)
        p:close()
        os.remove(big)
      end)
      it("reports bad file contents", function()
        local junk = P:path("junk.pem")
        write(junk, "not pem at all\n")
        fails({ cert_file = junk, key_file = P:key("server") },
          "tls: failed to find any PEM data in certificate input", "ECERT")
        fails({ cert_file = P:cert("server"), key_file = junk }, "tls: failed to find any PEM data in key input", "ECERT")
        fails({ cert_file = P:cert("server"), key_file = P:cert("server") },
          "tls: found a certificate rather than a key in the PEM for the private key", "ECERT")
        fails({ cert_file = P:key("server"), key_file = P:key("server") },
          'tls: failed to find "CERTIFICATE" PEM block in certificate input after skipping PEM blocks of the ' ..
          'following types: [PRIVATE KEY]', "ECERT")
        fails({ cert_file = P:cert("server"), key_file = P:key("server2") },
          "tls: private key does not match public key", "ECERT")
        local badder = P:path("bad-cert.pem")
        write(badder, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        fails({ cert_file = badder, key_file = P:key("server") }, "x509: malformed certificate", "ECERT")
      end)
      it("checks the client cert/key pairing and contents", function()
        fails({ client_cert_file = P:cert("client-good") },
          ("ClientKeyFile and ClientCertFile must both be present or both absent: key: , cert: %s]")
            :format(P:cert("client-good")), "ETLSCONFIG")
        fails({ client_key_file = P:key("client-good") },
          ("ClientKeyFile and ClientCertFile must both be present or both absent: key: %s, cert: ]")
            :format(P:key("client-good")), "ETLSCONFIG")
        fails({ client_cert_file = P:cert("client-good"), client_key_file = P:key("server") },
          "tls: private key does not match public key", "ECERT")
        local p = policy { client_cert_file = P:cert("client-good"), client_key_file = P:key("client-good") }
        assert.are.equal(P:cert("client-good"), p:info().client_cert_file)
        p:close()
      end)
      it("checks server cert/key before the client pair (etcd's order)", function()
        fails({ cert_file = "/nope", key_file = "/nope2", client_cert_file = "x" },
          "open /nope: no such file or directory", "ECERT")
      end)
      it("rejects allowed_cns together with allowed_hostnames", function()
        fails({ allowed_cns = { "a", "b" }, allowed_hostnames = { "h" } },
          'AllowedCNs and AllowedHostnames are mutually exclusive (cns=["a" "b"], hostnames=["h"])', "ETLSCONFIG")
      end)
      it("loads the trusted CA file like etcd", function()
        fails({ trusted_ca_file = P:path("nope.crt") },
          ("open %s: no such file or directory"):format(P:path("nope.crt")), "ECERT")
        fails({ trusted_ca_file = P:key("ca") }, "x509: malformed tbs certificate", "ECERT")
        local empty = P:path("empty-ca.pem")
        write(empty, "")
        local p, w = policy { trusted_ca_file = empty }
        assert.are.equal(1, #w)
        assert.matches("trusted CA file contains no certificates", w[1].msg, 1, true)
        rejected(p, pair("client-good"), "bad_client_cert",
          "tls: failed to verify client certificate: x509: certificate signed by unknown authority")
        p:close()
      end)
      it("warns that allow lists and CRLs cannot be enforced without client auth", function()
        local p, w = policy { allowed_cns = { "nobody" }, crl_file = P:path("revoked.crl") }
        assert.are.equal(2, #w)
        assert.matches("allowed CNs cannot be enforced without client certificate authentication", w[1].msg, 1, true)
        assert.are.equal("nobody", w[1].fields["allowed-cn"])
        assert.matches("CRL cannot be checked", w[2].msg, 1, true)
        assert.is_false(p:info().allow_list_enforced)
        accepted(p, {})   -- etcd: certificate-less client accepted
        p:close()
        p, w = policy { allowed_hostnames = { "x" } }
        assert.matches("allowed hostnames cannot be enforced", w[1].msg, 1, true)
        p:close()
      end)
    end)
  end)

  describe(":info() / __tostring / :tls_info_string()", function()
    it("reports the effective settings", function()
      local p = policy { trusted_ca_file = P:cert("ca"), crl_file = P:path("empty.crl"),
        cipher_suites = { "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" }, allowed_cns = "peer1",
        handshake_timeout = 2.5, session_tickets = true, alpn = { "h2", "http/1.1" } }
      local i = p:info()
      assert.are.equal(P:cert("server"), i.cert_file)
      assert.are.equal(P:cert("ca"), i.trusted_ca_file)
      assert.is_false(i.client_cert_auth)
      assert.are.equal("require_and_verify", i.client_auth)
      assert.are.equal("file", i.client_ca)
      assert.are.same({ "peer1" }, i.allowed_cns)
      assert.is_true(i.allow_list_enforced)
      assert.are.same({ "h2", "http/1.1" }, i.alpn)
      assert.are.equal(2.5, i.handshake_timeout)
      assert.is_true(i.session_tickets)
      -- Go's TLS 1.3 order (AES-128-GCM first), not OpenSSL's default
      assert.are.same({ "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
                        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" }, i.effective_cipher_suites)
      p:close()
      local d = policy({}):info()
      assert.are.same({ "h2" }, d.alpn)
      assert.are.equal(10, d.handshake_timeout)
      assert.is_false(d.session_tickets)
      assert.are.equal("none", d.client_auth)
      assert.are.equal("system", policy({ client_cert_auth = true }):info().client_ca)
    end)
    it("formats etcd's tls-info string", function()
      local p = policy { trusted_ca_file = P:cert("ca"), client_cert_auth = true }
      local s = ("cert = %s, key = %s, client-cert=, client-key=, trusted-ca = %s, client-cert-auth = true, crl-file = ")
        :format(P:cert("server"), P:key("server"), P:cert("ca"))
      assert.are.equal(s, p:tls_info_string())
      assert.are.equal("peerlisten.TlsPolicy (" .. s .. ")", tostring(p))
      p:close()
      assert.are.equal("peerlisten.TlsPolicy (closed)", tostring(p))
      assert.are.equal("cert = , key = , client-cert=, client-key=, trusted-ca = , client-cert-auth = false, crl-file = ",
        core.tls_policy({}):tls_info_string())
    end)
  end)

  describe("lifecycle", function()
    it("close() is idempotent", function()
      local p = policy {}
      p:close()
      p:close()
    end)
    it("a method after close raises", function()
      local p = policy {}
      p:close()
      assert.has_error(function() p:info() end, "attempt to use a closed TLS policy")
      assert.has_error(function() core._tls_handshake(p, {}) end, "attempt to use a closed TLS policy")
    end)
    it("<close> closes it", function()
      local ref
      do
        local p <close> = policy {}
        ref = p
      end
      assert.are.equal("peerlisten.TlsPolicy (closed)", tostring(ref))
    end)
    it("garbage collection leaks no fd", function()
      handshake(policy { trusted_ca_file = P:cert("ca") }, pair("client-good"))   -- warm-up
      collectgarbage()
      local before = helper.fd_count()
      for _ = 1, 50 do
        local p = policy { trusted_ca_file = P:cert("ca"), crl_file = P:path("revoked.crl") }
        handshake(p, pair("client-good"))
      end
      for _ = 1, 20 do core.tls_policy { cert_file = "/nope", key_file = "/nope" } end
      collectgarbage()
      collectgarbage()
      assert.are.equal(before, helper.fd_count())
    end)
  end)

  describe("client side (pl_tls_new_client_ssl, in memory)", function()
    local server
    before_each(function() server = policy { trusted_ca_file = P:cert("ca") } end)
    after_each(function() server:close() end)
    local function client(o)
      return assert(core.tls_policy(o))
    end
    local function dial(c, host, is_ip)
      local ok, a, b = core._tls_dial(server, c, host, is_ip)
      c:close()
      return ok, a, b
    end

    it("verifies the server by IP address or by name (SNI) with the trusted CA", function()
      local ok, info = dial(client { trusted_ca_file = P:cert("ca"), client_cert_file = P:cert("client-good"),
        client_key_file = P:key("client-good") }, "127.0.0.1", true)
      assert(ok == true, tostring(info))
      assert.are.equal("CN=peer1", info.peer_cert.subject)
      ok, info = dial(client { trusted_ca_file = P:cert("ca"), cert_file = P:cert("client-good"),
        key_file = P:key("client-good") }, "localhost", false)
      assert(ok == true, tostring(info))
      assert.are.equal("localhost", info.server_name)
    end)
    it("refuses a server certificate without the name or IP, naming what it has (ESERVERCERT)", function()
      local c = { trusted_ca_file = P:cert("ca"), cert_file = P:cert("client-good"), key_file = P:key("client-good") }
      local ok, code, msg = dial(client(c), "example.com")
      assert.is_false(ok)
      assert.are.equal("ESERVERCERT", code)
      assert.are.equal("tls: failed to verify certificate: x509: certificate is valid for localhost, not example.com", msg)
      ok, code, msg = dial(client(c), "10.1.1.1", true)
      assert.is_false(ok)
      assert.are.equal("ESERVERCERT", code)
      assert.are.equal("tls: failed to verify certificate: x509: certificate is valid for 127.0.0.1, not 10.1.1.1", msg)
    end)
    it("refuses a server from an unknown authority unless told to skip verification", function()
      local ok, code, msg = dial(client { cert_file = P:cert("client-good"), key_file = P:key("client-good") }, "localhost")
      assert.is_false(ok)
      assert.are.equal("ESERVERCERT", code)
      assert.are.equal("tls: failed to verify certificate: x509: certificate signed by unknown authority", msg)
      assert.is_true((dial(client { cert_file = P:cert("client-good"), key_file = P:key("client-good"),
        insecure_skip_verify = true }, "example.com")))
      -- a self-signed (auto-TLS) policy without a trusted CA does not verify, as etcd's transport
      server:close()
      server = policy {}   -- no client certificates asked for: ours is self-signed
      assert.is_true((dial(client { cert_file = P:cert("ca"), key_file = P:key("ca") }, "example.com")))
      ok, code = dial(client { cert_file = P:cert("client-good"), key_file = P:key("client-good") }, "example.com")
      assert.is_false(ok)
      assert.are.equal("ESERVERCERT", code)
    end)
    it("says when the server refused us (EPEERREJECTED)", function()
      local ok, code, msg = dial(client { trusted_ca_file = P:cert("ca") }, "localhost")
      assert.is_false(ok)
      assert.are.equal("EPEERREJECTED", code)
      assert.are.equal("remote error: tls: certificate required", msg)
      ok, code, msg = dial(client { trusted_ca_file = P:cert("ca"), cert_file = P:cert("client-otherca"),
        key_file = P:key("client-otherca") }, "localhost")
      assert.is_false(ok)
      assert.are.equal("EPEERREJECTED", code)
      assert.matches("^remote error: tls: ", msg)
      server:close()
      server = policy { trusted_ca_file = P:cert("ca"), max_version = "TLS1.2" }
      ok, code, msg = dial(client { trusted_ca_file = P:cert("ca"), min_version = "TLS1.3",
        cert_file = P:cert("client-good"), key_file = P:key("client-good") }, "localhost")
      assert.is_false(ok)
      assert.are.equal("EPEERREJECTED", code)
      assert.are.equal("remote error: tls: protocol version not supported", msg)
    end)
  end)

  describe("handshakes (in memory)", function()
    local mtls
    before_each(function() mtls = policy { trusted_ca_file = P:cert("ca") } end)
    after_each(function() mtls:close() end)

    it("accepts a good client cert and reports tls_info", function()
      local info = accepted(mtls, { cert = P:cert("client-good"), key = P:key("client-good"), alpn = { "h2" } })
      assert.are.equal("TLS1.3", info.version)
      assert.are.equal("h2", info.alpn)
      assert.is_false(info.resumed)
      assert.are.equal("CN=peer1", info.peer_cert.subject)
      assert.are.equal(P:serial("client-good"), info.peer_cert.serial)
      assert.are.same({ dns = {}, ip = { "127.0.0.1" }, email = {}, uri = {} }, info.peer_cert.sans)
      assert.is_number(info.peer_cert.not_after)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", info.peer_cert.not_after_rfc3339)
    end)
    it("reports the peer certificate as cert.inspect() does, field by field", function()
      local cert = require "peerlisten.cert"
      local info = accepted(mtls, { cert = P:cert("client-good"), key = P:key("client-good") })
      local want = assert(cert.inspect(P:cert("client-good")))
      want.path = nil
      -- days_left / expired depend on "now"; both were read within the same second or two
      assert.is_true(math.abs(want.days_left - info.peer_cert.days_left) <= 1)
      want.days_left, info.peer_cert.days_left = nil, nil
      for k, v in pairs(want) do assert.are.same(v, info.peer_cert[k], k) end
      for k in pairs(info.peer_cert) do assert.is_not_nil(want[k], k) end
      assert.are.equal("peer1", info.peer_cert.subject_fields.CN)
    end)
    it("accepts TLS 1.2 and refuses TLS 1.1 / 1.0", function()
      local info = accepted(mtls, { cert = P:cert("client-good"), key = P:key("client-good"), max_version = "TLS1.2" })
      assert.are.equal("TLS1.2", info.version)
      assert.are.equal("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", info.cipher)
      rejected(mtls, { max_version = "TLS1.1" }, "protocol_version",
        "tls: client offered only unsupported versions: [302 301]")
      rejected(mtls, { max_version = "TLS1.0" }, "protocol_version",
        "tls: client offered only unsupported versions: [301]")
    end)
    it("honours max_version and min_version", function()
      local p = policy { max_version = "TLS1.2" }
      assert.are.equal("TLS1.2", accepted(p, {}).version)
      p:close()
      p = policy { min_version = "TLS1.3" }
      rejected(p, { max_version = "TLS1.2" }, "protocol_version")
      p:close()
    end)
    it("refuses a client without a certificate", function()
      rejected(mtls, {}, "no_client_cert", "tls: client didn't provide a certificate")
      rejected(mtls, { max_version = "TLS1.2" }, "no_client_cert", "tls: client didn't provide a certificate")
    end)
    it("refuses a certificate from another CA, an expired one, a server-only one", function()
      rejected(mtls, pair("client-otherca"), "bad_client_cert",
        "tls: failed to verify client certificate: x509: certificate signed by unknown authority")
      local m = rejected(mtls, pair("client-expired"), "bad_client_cert")
      assert.matches("x509: certificate has expired or is not yet valid: current time .* is after 2020%-02%-01T00:00:00Z", m)
      rejected(mtls, pair("client-serveronly"), "bad_client_cert",
        "tls: failed to verify client certificate: x509: certificate specifies an incompatible key usage")
    end)
    it("client_cert_auth without a CA file verifies against the system store", function()
      local p = policy { client_cert_auth = true }
      rejected(p, pair("client-good"), "bad_client_cert",
        "tls: failed to verify client certificate: x509: certificate signed by unknown authority")
      rejected(p, {}, "no_client_cert")
      p:close()
    end)
    it("accepts any client when no client auth is configured", function()
      local p = policy {}
      local info = accepted(p, {})
      assert.is_nil(info.peer_cert)
      p:close()
    end)
    it("classifies plaintext, garbage and EOF", function()
      rejected(mtls, { raw = "GET / HTTP/1.1\r\nHost: x\r\n\r\n" }, "not_tls",
        "tls: first record does not look like a TLS handshake")
      rejected(mtls, { raw = "\1\2\3\4\5\6\7\8\9\10" }, "not_tls")
      rejected(mtls, { raw = "" }, "eof", "EOF")
    end)
    describe("ALPN", function()
      it("selects h2, ignores http/1.1-only and none, refuses unknown-only", function()
        local good = { cert = P:cert("client-good"), key = P:key("client-good") }
        good.alpn = { "http/1.1", "h2" }
        assert.are.equal("h2", accepted(mtls, good).alpn)
        good.alpn = { "http/1.1" }
        assert.is_nil(accepted(mtls, good).alpn)
        good.alpn = nil
        assert.is_nil(accepted(mtls, good).alpn)
        rejected(mtls, { alpn = { "foo" } }, "alpn", "tls: client requested unsupported application protocols ([foo])")
      end)
      it("uses the alpn option; {} disables ALPN", function()
        local p = policy { alpn = { "http/1.1" } }
        assert.are.equal("http/1.1", accepted(p, { alpn = { "h2", "http/1.1" } }).alpn)
        rejected(p, { alpn = { "h2" } }, "alpn", "tls: client requested unsupported application protocols ([h2])")
        p:close()
        p = policy { alpn = {} }
        assert.is_nil(accepted(p, { alpn = { "foo" } }).alpn)
        p:close()
      end)
    end)
    describe("cipher suites", function()
      it("restrict TLS 1.2 and, beyond etcd, TLS 1.3", function()
        local p = policy { cipher_suites = { "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384" } }
        assert.are.equal("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
          accepted(p, { max_version = "TLS1.2", ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256" }).cipher)
        rejected(p, { max_version = "TLS1.2", ciphers = "ECDHE-ECDSA-AES256-GCM-SHA384" }, "no_shared_cipher",
          "tls: no cipher suite supported by both client and server")
        assert.are.equal("TLS_AES_256_GCM_SHA384", accepted(p, { ciphersuites = "TLS_AES_256_GCM_SHA384" }).cipher)
        rejected(p, { ciphersuites = "TLS_AES_128_GCM_SHA256" }, "no_shared_cipher")
        p:close()
      end)
      it("leave TLS 1.3 suites at the default when only TLS 1.2 names are given (etcd)", function()
        local p = policy { cipher_suites = { "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" } }
        assert.are.equal("TLS_AES_128_GCM_SHA256", accepted(p, { ciphersuites = "TLS_AES_128_GCM_SHA256" }).cipher)
        p:close()
      end)
      it("prefer the server's order", function()
        local p = policy { cipher_suites = { "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                                             "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" } }
        assert.are.equal("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", accepted(p, { max_version = "TLS1.2",
          ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384" }).cipher)
        p:close()
      end)
      it("RSA suites work with an RSA certificate", function()
        local p = policy { cert_file = P:cert("rsa-server"), key_file = P:key("rsa-server"),
                           cipher_suites = { "TLS_RSA_WITH_AES_128_GCM_SHA256" } }
        assert.are.equal("TLS_RSA_WITH_AES_128_GCM_SHA256", accepted(p, { max_version = "TLS1.2" }).cipher)
        p:close()
      end)
    end)
    describe("allowed CNs / hostnames", function()
      it("allowed_cns admits only matching leaf CNs (bad_certificate otherwise)", function()
        local p = policy { trusted_ca_file = P:cert("ca"), allowed_cns = { "peer1", "peer9" } }
        accepted(p, pair("client-good"))
        local ok, reason, msg, _, ips = handshake(p, pair("client-othercn"))
        assert.is_false(ok)
        assert.are.equal("cn_not_allowed", reason)
        assert.are.equal("client certificate authentication failed", msg)
        assert.are.same({}, ips)
        -- chain verification still comes first
        rejected(p, pair("client-otherca"), "bad_client_cert")
        p:close()
      end)
      it("allowed_hostnames uses hostname verification on the SANs (CN ignored)", function()
        local p = policy { trusted_ca_file = P:cert("ca"), allowed_hostnames = { "127.0.0.1" } }
        accepted(p, pair("client-good"))
        rejected(p, pair("client-badsan"), "cn_not_allowed", "client certificate authentication failed")
        rejected(p, pair("client-nosan"), "cn_not_allowed", "client certificate authentication failed")
        p:close()
        p = policy { client_cert_auth = true, trusted_ca_file = P:cert("ca"), allowed_hostnames = { "LOCALHOST" } }
        accepted(p, pair("client-localhostdns"))
        rejected(p, pair("client-good"), "cn_not_allowed")
        p:close()
      end)
    end)
    describe("client SAN check (post-handshake)", function()
      it("rejects an IP SAN that is not the remote address", function()
        local _, side = rejected(mtls, pair("client-badsan"), "san_mismatch",
          "x509: certificate is valid for 10.9.9.9, not 127.0.0.1")
        assert.are.equal("post", side)
      end)
      it("returns the peer names for the log fields", function()
        local _, _, _, _, ips, dns = handshake(mtls, pair("client-badsan"))
        assert.are.same({ "10.9.9.9" }, ips)
        assert.are.same({}, dns)
      end)
      it("rejects DNS SANs that resolve elsewhere, with the lookup error", function()
        rejected(mtls, pair("client-badsandns"), "san_mismatch",
          'tls: "127.0.0.1" does not match any of DNSNames ["nonexistent.invalid"] ' ..
          '(lookup nonexistent.invalid: no such host)')
      end)
      it("accepts a DNS SAN that resolves to the remote address and says the check may block", function()
        local ok, _, _, _, may_block = handshake(mtls, pair("client-localhostdns"))
        assert.is_true(ok)
        assert.is_true(may_block)
        local ok2, _, _, _, may_block2 = handshake(mtls, pair("client-good"))
        assert.is_true(ok2)
        assert.is_false(may_block2)
      end)
      it("accepts certs without SANs, matching SANs, v4-mapped remote addresses", function()
        accepted(mtls, pair("client-nosan"))
        accepted(mtls, pair("client-good"))
        accepted(mtls, { cert = P:cert("client-good"), key = P:key("client-good"), remote_ip = "::ffff:127.0.0.1" })
        rejected(mtls, { cert = P:cert("client-good"), key = P:key("client-good"), remote_ip = "127.0.0.2" },
          "san_mismatch", "x509: certificate is valid for 127.0.0.1, not 127.0.0.2")
      end)
      it("checks every IP SAN, not only the first few", function()
        local cert = require "peerlisten.cert"
        local hosts = {}
        for i = 1, 24 do hosts[i] = "10.1.0." .. i end
        hosts[#hosts + 1] = "127.0.0.1"            -- the remote address, 25th
        local c, k = assert(cert.issue { ca_cert = P:cert("ca"), ca_key = P:key("ca"), dir = P.dir,
          name = "client-manyips", hosts = hosts })
        accepted(mtls, { cert = c, key = k })
        rejected(mtls, { cert = c, key = k, remote_ip = "127.0.0.2" }, "san_mismatch")
      end)
      it("is skipped with skip_client_san_verify and for unix peers", function()
        local p = policy { trusted_ca_file = P:cert("ca"), skip_client_san_verify = true }
        accepted(p, pair("client-badsan"))
        p:close()
        accepted(mtls, { cert = P:cert("client-badsan"), key = P:key("client-badsan"), remote_ip = "unix" })
      end)
    end)
    describe("CRL", function()
      for _, f in ipairs { "revoked.crl", "revoked.crl.der" } do
        it("rejects a revoked serial (" .. f .. ") and accepts others", function()
          local p = policy { trusted_ca_file = P:cert("ca"), crl_file = P:path(f) }
          rejected(p, pair("client-good"), "revoked",
            ("transport: certificate serial %s revoked"):format(P:serial("client-good")))
          accepted(p, pair("client-othercn"))
          assert.is_nil(p:_pending_logs())
          p:close()
        end)
      end
      it("accepts everyone with an empty CRL", function()
        local p = policy { trusted_ca_file = P:cert("ca"), crl_file = P:path("empty.crl") }
        accepted(p, pair("client-good"))
        p:close()
      end)
      it("fails closed when the CRL is missing or garbage", function()
        local p = policy { trusted_ca_file = P:cert("ca"), crl_file = P:path("nope.crl") }
        rejected(p, pair("client-othercn"), "crl", ("open %s: no such file or directory"):format(P:path("nope.crl")))
        p:close()
        local junk = P:path("junk.crl")
        write(junk, "garbage")
        p = policy { trusted_ca_file = P:cert("ca"), crl_file = junk }
        rejected(p, pair("client-othercn"), "crl", "x509: malformed crl")
        p:close()
      end)
      it("reloads the CRL when the file changes", function()
        local live = P:path("live.crl")
        P:copy(P:path("empty.crl"), live)
        local p = policy { trusted_ca_file = P:cert("ca"), crl_file = live }
        accepted(p, pair("client-good"))
        P:copy(P:path("revoked.crl.der"), live)
        rejected(p, pair("client-good"), "revoked")
        os.remove(live)
        rejected(p, pair("client-good"), "crl")
        P:copy(P:path("empty.crl"), live)
        accepted(p, pair("client-good"))
        p:close()
      end)
      it("warns (beyond etcd) on a bad signature by the trusted CA, still enforcing it", function()
        local p = policy { trusted_ca_file = P:cert("ca"), crl_file = P:path("badsig.crl") }
        rejected(p, pair("client-good"), "revoked")
        local logs = p:_pending_logs()
        assert.are.equal(1, #logs)
        assert.are.same({ level = "warn", msg = "CRL signature verification failed",
                          ["crl-file"] = P:path("badsig.crl") }, logs[1])
        rejected(p, pair("client-good"), "revoked")
        assert.is_nil(p:_pending_logs())   -- once per load
        p:close()
      end)
      it("warns (beyond etcd) when the CRL is past its nextUpdate", function()
        while os.time() < P.stale_at do helper.sh("sleep 0.2") end
        local p = policy { trusted_ca_file = P:cert("ca"), crl_file = P:path("stale.crl") }
        rejected(p, pair("client-good"), "revoked")
        local logs = p:_pending_logs()
        assert.are.equal(1, #logs)
        assert.are.equal("CRL is past its nextUpdate", logs[1].msg)
        assert.matches("^%d+%-", logs[1]["next-update"])
        p:close()
      end)
      it("does not apply to certificate-less clients", function()
        local p = policy { crl_file = P:path("nope.crl") }
        accepted(p, {})
        p:close()
      end)
    end)
    describe("verified-chain cache", function()
      -- a chain verified once is not verified again while it is the very same
      -- bytes and every certificate is within its validity; these specs prove
      -- it never accepts what a fresh verification would reject
      local DAY = 86400
      local function stats(p) return p:_verify_cache() end
      after_each(function() core._tls_clock_shift(0) end)

      it("is on with trusted_ca_file only (a system store may change on disk)", function()
        assert.is_true(stats(mtls).on)
        assert.are.equal(1024, stats(mtls).max)
        local p = policy { client_cert_auth = true }
        assert.is_false(stats(p).on)
        p:close()
        p = policy {}
        assert.is_false(stats(p).on)
        p:close()
      end)
      it("skips the chain verification for a chain seen before", function()
        accepted(mtls, pair("client-good"))
        accepted(mtls, pair("client-good"))
        accepted(mtls, pair("client-good"))
        local s = stats(mtls)
        assert.are.same({ 1, 1, 2 }, { s.entries, s.misses, s.hits })
        assert.are.equal("TLS1.2", accepted(mtls, { cert = P:cert("client-good"), key = P:key("client-good"),
                                                    max_version = "TLS1.2" }).version)
        assert.are.equal(3, stats(mtls).hits)
      end)
      it("still rejects another CA (same leaf subject), expired, server-only after a cached accept", function()
        accepted(mtls, pair("client-good"))
        accepted(mtls, pair("client-good"))
        rejected(mtls, pair("client-otherca"), "bad_client_cert",
          "tls: failed to verify client certificate: x509: certificate signed by unknown authority")
        rejected(mtls, pair("client-otherca"), "bad_client_cert")
        rejected(mtls, pair("client-expired"), "bad_client_cert")
        rejected(mtls, pair("client-serveronly"), "bad_client_cert",
          "tls: failed to verify client certificate: x509: certificate specifies an incompatible key usage")
        local s = stats(mtls)
        assert.are.equal(1, s.entries)   -- failures are never cached
        assert.are.equal(1, s.hits)
        -- the same leaf followed by an extra (untrusted) certificate is another key
        local both = P:path("good+other.crt")
        local f = assert(io.open(both, "w"))
        f:write(assert(io.open(P:cert("client-good"))):read("a"), assert(io.open(P:cert("other-ca"))):read("a"))
        f:close()
        accepted(mtls, { cert = both, key = P:key("client-good") })
        assert.are.equal(2, stats(mtls).entries)
      end)
      it("never uses an entry after a certificate's notAfter or before its notBefore (clock hook)", function()
        accepted(mtls, pair("client-good"))
        accepted(mtls, pair("client-good"))
        assert.are.equal(1, stats(mtls).hits)
        core._tls_clock_shift(31 * DAY)    -- past the 30-day leaf and CA
        local m = rejected(mtls, pair("client-good"), "bad_client_cert")
        assert.matches("certificate has expired or is not yet valid: current time .* is after ", m)
        assert.are.equal(0, stats(mtls).entries)
        core._tls_clock_shift(-2 * DAY)    -- before the leaf's notBefore
        m = rejected(mtls, pair("client-good"), "bad_client_cert")
        assert.matches("is before ", m)
        core._tls_clock_shift(0)
        accepted(mtls, pair("client-good"))
        accepted(mtls, pair("client-good"))
        assert.are.equal(2, stats(mtls).hits)
      end)
      it("#slow rejects a cached certificate once it expires (real clock)", function()
        local now = os.time()
        local crt = P:issue("client-short", { not_before = now - 60, not_after = now + 2 })
        local client = { cert = crt, key = P:key("client-short") }
        if os.time() < now + 2 then   -- (a very slow run may already be past it)
          accepted(mtls, client)
          accepted(mtls, client)
          assert.are.equal(1, stats(mtls).hits)
        end
        while os.time() <= now + 2 do helper.sh("sleep 0.2") end
        local m = rejected(mtls, client, "bad_client_cert")
        assert.matches("certificate has expired or is not yet valid", m)
        rejected(mtls, client, "bad_client_cert")
      end)
      it("a revocation after a cached accept is enforced (CRL checked every time; reload flushes)", function()
        local live = P:path("cache-live.crl")
        P:copy(P:path("empty.crl"), live)
        local p = policy { trusted_ca_file = P:cert("ca"), crl_file = live }
        accepted(p, pair("client-good"))
        accepted(p, pair("client-good"))
        assert.are.equal(1, stats(p).hits)
        local flushes = stats(p).flushes
        P:copy(P:path("revoked.crl.der"), live)
        rejected(p, pair("client-good"), "revoked")
        rejected(p, pair("client-good"), "revoked")
        assert.is_true(stats(p).flushes > flushes)
        accepted(p, pair("client-othercn"))
        p:close()
      end)
      it("still applies allowed_cns to a cached chain; another leaf with another CN is rejected", function()
        local p = policy { trusted_ca_file = P:cert("ca"), allowed_cns = { "peer1" } }
        accepted(p, pair("client-good"))
        accepted(p, pair("client-good"))
        rejected(p, pair("client-othercn"), "cn_not_allowed")
        rejected(p, pair("client-othercn"), "cn_not_allowed")   -- its chain is cached, the CN is not allowed
        assert.are.equal(2, stats(p).hits)
        p:close()
      end)
      it("is per policy: a policy built on a replaced CA file rejects a chain cached by the old one", function()
        local cafile = P:path("cache-ca.crt")
        P:copy(P:cert("ca"), cafile)
        local old = policy { trusted_ca_file = cafile }
        local twin = policy { trusted_ca_file = cafile }
        twin:_verify_cache(0)             -- the same policy without cache: fresh verifications only
        accepted(old, pair("client-good"))
        P:copy(P:cert("other-ca"), cafile)
        local new = policy { trusted_ca_file = cafile }
        rejected(new, pair("client-good"), "bad_client_cert")
        accepted(new, pair("client-otherca"))
        -- a live policy keeps the CA it loaded (as etcd does): cached and fresh agree
        for _, name in ipairs { "client-good", "client-otherca" } do
          local a = handshake(old, pair(name))
          local b = handshake(twin, pair(name))
          assert.are.equal(b, a, name)
        end
        assert.are.equal(0, stats(twin).entries)
        old:close(); twin:close(); new:close()
      end)
      it("is bounded, least recently used out first", function()
        local p = policy { trusted_ca_file = P:cert("ca"), skip_client_san_verify = true }
        assert.are.equal(2, p:_verify_cache(2).max)
        accepted(p, pair("client-good"))
        accepted(p, pair("client-othercn"))
        accepted(p, pair("client-good"))          -- hit: good is now the most recent
        accepted(p, pair("client-localhostdns"))  -- evicts othercn
        local s = stats(p)
        assert.are.same({ 2, 1, 3 }, { s.entries, s.hits, s.misses })
        accepted(p, pair("client-good"))
        accepted(p, pair("client-othercn"))
        s = stats(p)
        assert.are.same({ 2, 2, 4 }, { s.entries, s.hits, s.misses })
        p:close()
      end)
    end)
  end)

  describe("certificate reload", function()
    local dir, cert, key, p
    before_each(function()
      dir = P:path("reload")
      os.execute("mkdir -p '" .. dir .. "'")
      cert, key = dir .. "/s.crt", dir .. "/s.key"
      P:copy(P:cert("server"), cert)
      P:copy(P:key("server"), key)
      p = policy { cert_file = cert, key_file = key }
    end)
    after_each(function()
      p:close()
      os.execute("rm -rf '" .. dir .. "'")
    end)

    it("serves the new pair after the files change", function()
      assert.are.equal("CN=peer1", p:_new_ssl())
      replace(P:cert("server2"), cert)
      replace(P:key("server2"), key)
      assert.are.equal("CN=peer2", p:_new_ssl())
      assert.is_nil(p:_pending_logs())
      assert.are.equal("CN=peer2", accepted(p, {}) and p:_new_ssl())
    end)
    it("keeps the old pair and warns when the new files are broken", function()
      write(cert, "garbage")
      assert.are.equal("CN=peer1", p:_new_ssl())
      local logs = p:_pending_logs()
      assert.are.equal(1, #logs)
      assert.are.same({ level = "warn", msg = "failed to create peer certificate",
        ["cert-file"] = cert, ["key-file"] = key,
        error = "tls: failed to find any PEM data in certificate input" }, logs[1])
      assert.are.equal("CN=peer1", p:_new_ssl())
      assert.is_nil(p:_pending_logs())   -- reported once per change
      accepted(p, {})
    end)
    it("keeps the old pair while only one half of a new pair is in place", function()
      replace(P:cert("server2"), cert)
      assert.are.equal("CN=peer1", p:_new_ssl())
      assert.are.equal("tls: private key does not match public key", p:_pending_logs()[1].error)
      replace(P:key("server2"), key)
      assert.are.equal("CN=peer2", p:_new_ssl())
    end)
    it("keeps the old pair and warns when the files disappear", function()
      os.remove(cert)
      assert.are.equal("CN=peer1", p:_new_ssl())
      local logs = p:_pending_logs()
      assert.are.equal("failed to find peer cert files", logs[1].msg)
      assert.are.equal(("open %s: no such file or directory"):format(cert), logs[1].error)
      P:copy(P:cert("server"), cert)
      assert.are.equal("CN=peer1", p:_new_ssl())
    end)
    it("a policy without cert cannot make connections", function()
      local e = core.tls_policy {}
      local s, m = e:_new_ssl()
      assert.is_nil(s)
      assert.are.equal("KeyFile and CertFile are not presented", m)
      e:close()
    end)
  end)

  describe("session tickets", function()
    it("are off by default and on with session_tickets = true", function()
      local p = policy {}
      local info = accepted(p, {})
      assert.is_false(info.resumed)
      assert.are.equal(0, info.client_tickets)
      p:close()
    end)
    it("send one TLS 1.3 ticket per full handshake (not OpenSSL's default two)", function()
      local p = policy { session_tickets = true }
      assert.are.equal(1, accepted(p, {}).client_tickets)
      p:close()
    end)
  end)
end)
