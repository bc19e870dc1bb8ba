local peerlisten = require "peerlisten"
local helper = require "helper"

local log = peerlisten.log

local free_port = helper.free_port

local function can_bind(port)
  local l = peerlisten.listen { url = "http://127.0.0.1:" .. port }
  if not l then return false end
  l:close()
  return true
end

local function msgs(logger, level) return helper.msgs(logger.entries, level) end

local read = helper.readfile

local RESPONSE = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
local function handler(conn)
  conn:read(4096, 2)
  conn:write(RESPONSE)
  conn:close()
end

describe("peerlisten.configure_peer_listeners", function()
  local dir, baseline
  setup(function()
    -- lazily created loop resources (thread pool, resolver) exist before the baselines
    local l = assert(peerlisten.listen { url = "http://localhost:0" })
    l:close()
  end)
  before_each(function()
    collectgarbage()
    baseline = helper.fd_count()
    dir = helper.tmpdir()
  end)
  after_each(function()
    helper.rmdir(dir)
    collectgarbage()
    assert.equal(baseline, helper.fd_count(), table.concat(helper.fd_list(), "\n"))
  end)

  describe("a clean configuration", function()
    it("opens one listener per URL, logs etcd's info lines and no warning", function()
      local p1, p2 = free_port(), free_port()
      local logger = log.capture()
      local peers <close> = assert(peerlisten.configure_peer_listeners({
        listen_peer_urls = { "http://127.0.0.1:" .. p1, "http://127.0.0.1:" .. p2 },
        data_dir = dir,
      }, { logger = logger }))
      assert.equal(2, #peers)
      assert.equal("http://127.0.0.1:" .. p1, peers[1]:url())
      assert.same({ "configuring peer listeners" }, msgs(logger))
      assert.same({ "http://127.0.0.1:" .. p1, "http://127.0.0.1:" .. p2 },
        logger.entries[1].fields["listen-peer-urls"])
      assert.is_false(can_bind(p1))
      peers:close()
      peers:close()
      assert.is_true(can_bind(p1))
      assert.is_true(can_bind(p2))
    end)

    it("logs configuring socket options when set", function()
      local logger = log.capture()
      local _ <close> = assert(peerlisten.configure_peer_listeners({
        listen_peer_urls = "http://127.0.0.1:0", socket_options = { reuse_port = true },
      }, { logger = logger }))
      assert.same({ "configuring socket options", "configuring peer listeners" }, msgs(logger))
      assert.same({ ["reuse-address"] = false, ["reuse-port"] = true }, logger.entries[1].fields)
    end)
  end)

  describe("warnings", function()
    local certp, keyp
    before_each(function()
      certp, keyp = assert(peerlisten.cert.self_signed { dir = dir .. "/certs", hosts = { "127.0.0.1" },
        key_type = "ecdsa-p256" })
    end)

    it("warns about http URLs while cert files and client-cert auth are set", function()
      local logger = log.capture()
      local url = "http://127.0.0.1:" .. free_port()
      local _ <close> = assert(peerlisten.configure_peer_listeners({
        listen_peer_urls = { url },
        peer_transport_security = { cert_file = certp, key_file = keyp, client_cert_auth = true,
          trusted_ca_file = certp },
      }, { logger = logger }))
      assert.same({ "configuring peer listeners", "starting with peer TLS",
        "scheme is HTTP while key and cert files are present; ignoring key and cert files",
        "scheme is HTTP while --peer-client-cert-auth is enabled; ignoring client cert auth for this URL" },
        msgs(logger))
      local tls = logger.entries[2].fields
      assert.equal(("cert = %s, key = %s, client-cert=, client-key=, trusted-ca = %s, client-cert-auth = true, "
        .. "crl-file = "):format(certp, keyp, certp), tls["tls-info"])
      assert.same({}, tls["cipher-suites"])
      assert.equal(url, logger.entries[3].fields["peer-url"])
      assert.equal(url, logger.entries[4].fields["peer-url"])
    end)

    it("warns that auto TLS is ignored when certs are given", function()
      local logger = log.capture()
      local peers <close> = assert(peerlisten.configure_peer_listeners({
        listen_peer_urls = { "https://127.0.0.1:0" }, data_dir = dir .. "/data",
        peer_transport_security = { cert_file = certp, key_file = keyp, auto_tls = true },
        cipher_suites = { "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" },
      }, { logger = logger }))
      assert.equal(1, #logger:find("ignoring peer auto TLS since certs given", "warn"))
      assert.same({ "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" },
        logger:find("starting with peer TLS")[1].fields["cipher-suites"])
      assert.is_nil(io.open(dir .. "/data/fixtures/peer/cert.pem"))
      assert.equal("https", peers[1]:scheme())
    end)
  end)

  describe("errors", function()
    it("rejects an unknown cipher suite even for http only", function()
      local logger = log.capture()
      local peers, err, code = peerlisten.configure_peer_listeners({
        listen_peer_urls = "http://127.0.0.1:0",
        cipher_suites = { "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_BOGUS" },
      }, { logger = logger })
      assert.is_nil(peers)
      assert.equal('unexpected TLS cipher suite "TLS_BOGUS"', err)
      assert.equal("ETLSCONFIG", code)
    end)

    it("accepts, for http only, a known cipher suite OpenSSL cannot negotiate (as etcd starts)", function()
      local peers <close> = assert(peerlisten.configure_peer_listeners({
        listen_peer_urls = "http://127.0.0.1:0", cipher_suites = { "TLS_ECDHE_RSA_WITH_RC4_128_SHA" },
      }, { logger = log.capture() }))
      assert.equal(1, #peers)
    end)

    it("returns etcd's error for https without certs, leaving nothing bound", function()
      local port = free_port()
      local peers, err, code = peerlisten.configure_peer_listeners({
        listen_peer_urls = "https://127.0.0.1:" .. port }, { logger = log.capture() })
      assert.is_nil(peers)
      assert.equal(("cannot listen on TLS for 127.0.0.1:%d: KeyFile and CertFile are not presented"):format(port), err)
      assert.equal("ETLSCONFIG", code)
      assert.is_true(can_bind(port))
    end)

    it("returns config errors", function()
      local peers, err, code = peerlisten.configure_peer_listeners({ listen_peer_urls = "http://example.com:1" })
      assert.is_nil(peers)
      assert.equal("expected IP in URL for binding (http://example.com:1)", err)
      assert.equal("ECONFIG", code)
    end)

    it("logs a self-cert failure at fatal and returns it", function()
      local f = assert(io.open(dir .. "/fixtures", "w"))
      f:close()
      local logger = log.capture()
      local peers, err, code = peerlisten.configure_peer_listeners({
        listen_peer_urls = "https://127.0.0.1:0", data_dir = dir,
        peer_transport_security = { auto_tls = true } }, { logger = logger })
      assert.is_nil(peers)
      assert.equal(("mkdir %s/fixtures: not a directory"):format(dir), err)
      assert.equal("ENOTDIR", code)
      assert.same({ "configuring peer listeners", "cannot create cert directory", "failed to get peer self-signed certs" },
        msgs(logger))
      local fatal = logger:find("failed to get peer self-signed certs", "fatal")
      assert.equal(1, #fatal)
      assert.same({ error = err }, fatal[1].fields)
      assert.same({ error = err }, logger:find("cannot create cert directory", "warn")[1].fields)
    end)
  end)

  describe("rollback", function()
    it("closes every opened listener when the third URL cannot bind", function()
      local p1, p2 = free_port(), free_port()
      local holder = assert(peerlisten.listen { url = "http://127.0.0.1:0" })
      local _, p3 = holder:addr()
      local logger = log.capture()
      local urls = { "http://127.0.0.1:" .. p1, "http://127.0.0.1:" .. p2, "http://127.0.0.1:" .. p3 }
      local t0 = os.time()
      local peers, err, code = peerlisten.configure_peer_listeners({ listen_peer_urls = urls },
        { logger = logger })
      assert.is_true(os.time() - t0 <= 3)
      assert.is_nil(peers)
      assert.equal(("listen tcp 127.0.0.1:%d: bind: address already in use"):format(p3), err)
      assert.equal("EADDRINUSE", code)
      assert.same({ "configuring peer listeners", "creating peer listener failed", "closing peer listener",
        "closing peer listener" }, msgs(logger))
      local closing = logger:find("closing peer listener", "warn")
      assert.same({ address = urls[1], error = err }, closing[1].fields)
      assert.same({ address = urls[2], error = err }, closing[2].fields)
      holder:close()
      for _, p in ipairs { p1, p2, p3 } do assert.is_true(can_bind(p), "port " .. p) end
    end)

    it("closes every opened listener when the second URL's TLS policy cannot be built", function()
      local p1, p2, p3 = free_port(), free_port(), free_port()
      local logger = log.capture()
      local urls = { "http://127.0.0.1:" .. p1, "https://127.0.0.1:" .. p2, "http://127.0.0.1:" .. p3 }
      local peers, err, code = peerlisten.configure_peer_listeners({ listen_peer_urls = urls,
        peer_transport_security = { cert_file = dir .. "/missing.crt", key_file = dir .. "/missing.key" } },
        { logger = logger })
      assert.is_nil(peers)
      assert.equal(("open %s/missing.crt: no such file or directory"):format(dir), err)
      assert.is_string(code)
      local closing = logger:find("closing peer listener", "warn")
      assert.equal(1, #closing)
      assert.equal(urls[1], closing[1].fields.address)
      for _, p in ipairs { p1, p2, p3 } do assert.is_true(can_bind(p), "port " .. p) end
    end)

    it("closes the TLS policy it built when a later URL cannot bind", function()
      local certp, keyp = assert(peerlisten.cert.self_signed { dir = dir .. "/certs", hosts = { "127.0.0.1" },
        key_type = "ecdsa-p256" })
      local holder = assert(peerlisten.listen { url = "http://127.0.0.1:0" })
      local _, p2 = holder:addr()
      local built, ok, peers, err, code = helper.with_policy_spy(function()
        return pcall(peerlisten.configure_peer_listeners, {
          listen_peer_urls = { "https://127.0.0.1:0", "http://127.0.0.1:" .. p2 },
          peer_transport_security = { cert_file = certp, key_file = keyp } }, { logger = log.capture() })
      end)
      holder:close()
      assert.is_true(ok, peers)
      assert.is_nil(peers)
      assert.matches("address already in use", err, 1, true)
      assert.equal("EADDRINUSE", code)
      -- the listeners' policy, and the one that validated the TLS settings
      assert.equal(2, #built)
      for _, p in ipairs(built) do assert.equal("peerlisten.TlsPolicy (closed)", tostring(p)) end
    end)

    it("removes unix socket files it created", function()
      local holder = assert(peerlisten.listen { url = "http://127.0.0.1:0" })
      local _, p = holder:addr()
      local sock = dir .. "/peer.sock"
      local peers, err = peerlisten.configure_peer_listeners({
        listen_peer_urls = { "unix://" .. sock, "http://127.0.0.1:" .. p } }, { logger = log.capture() })
      holder:close()
      assert.is_nil(peers)
      assert.matches("address already in use", err)
      assert.is_nil(io.open(sock))
    end)
  end)

  describe("auto-TLS #interop", function()
    it("serves TLS with the generated cert and reuses it on the next run", function()
      if os.execute("command -v curl >/dev/null 2>&1") ~= true then
        pending("curl is not installed")
        return
      end
      local port = free_port()
      local cfg = { listen_peer_urls = { "https://127.0.0.1:" .. port }, data_dir = dir .. "/n1.etcd",
        peer_transport_security = { auto_tls = true, client_cert_auth = false } }
      local logger = log.capture()
      local peers <close> = assert(peerlisten.configure_peer_listeners(cfg,
        { logger = logger, key_type = "ecdsa-p256" }))
      local certp = dir .. "/n1.etcd/fixtures/peer/cert.pem"
      assert.truthy(io.open(certp)):close()
      assert.equal(1, #logger:find("starting with peer TLS"))
      peers:serve(handler)
      assert.equal(1, #logger:find("serving peer traffic"))
      local pid, out = helper.bg(("curl -sS --http1.1 --max-time 5 --cacert %s https://127.0.0.1:%d/health")
        :format(certp, port), dir .. "/curl.out")
      finally(function() helper.kill(pid) end)
      assert.truthy(helper.wait_until(function() return not helper.alive(pid) end, 8))
      assert.equal("ok", read(out))
      peers:close()
      local address = "127.0.0.1:" .. port
      assert.same({ address = address }, logger:find("serving peer traffic", "info")[1].fields)
      assert.same({ address = address }, logger:find("stopping serving peer traffic", "info")[1].fields)
      assert.same({ address = address }, logger:find("stopped serving peer traffic", "info")[1].fields)
      assert.same({ "automatically generate certificates", "created cert file", "created key file" },
        { logger.entries[2].msg, logger.entries[3].msg, logger.entries[4].msg })
      local serial = peerlisten.cert.inspect(certp).serial

      local logger2 = log.capture()
      local _ <close> = assert(peerlisten.configure_peer_listeners(cfg, { logger = logger2,
        key_type = "ecdsa-p256" }))
      assert.equal(0, #logger2:find("created cert file"))
      assert.equal(serial, peerlisten.cert.inspect(certp).serial)
    end)

    it("keeps the user's client-cert auth and trusted CA under auto-TLS", function()
      local ca = assert(peerlisten.cert.self_signed { dir = dir .. "/ca", hosts = { "127.0.0.1" },
        key_type = "ecdsa-p256" })
      local logger = log.capture()
      local _ <close> = assert(peerlisten.configure_peer_listeners({
        listen_peer_urls = { "https://127.0.0.1:0" }, data_dir = dir .. "/n2.etcd",
        peer_transport_security = { auto_tls = true, client_cert_auth = true, trusted_ca_file = ca,
          client_cert_file = ca, client_key_file = dir .. "/ca/key.pem" },
      }, { logger = logger, key_type = "ecdsa-p256" }))
      local info = logger:find("starting with peer TLS")[1].fields["tls-info"]
      assert.truthy(info:find("trusted-ca = " .. ca, 1, true))
      assert.matches("client-cert-auth = true", info, 1, true)
      local dropped = logger:find("ignoring peer TLS setting replaced by auto TLS", "warn")
      assert.equal(2, #dropped)
      assert.equal("peer-transport-security.client-cert-file", dropped[1].fields.setting)
    end)
  end)
end)
