-- peerlisten.cert (csrc/cert.c + lua/peerlisten/cert.lua).
-- Certificates are read back with the openssl command line tool.
local cert = require "peerlisten.cert"
local core = require "peerlisten.core"
local log = require "peerlisten.log"
local helper = require "helper"

local sh, q, exists = helper.sh, helper.q, helper.exists
local readfile, writefile = helper.readfile, helper.writefile

local function mode_of(path) return sh("stat -c %a " .. q(path)):match("%d+") end

local function x509_text(path) return sh("openssl x509 -in " .. q(path) .. " -text -noout 2>&1") end

local function ls(dir) return sh("ls -A " .. q(dir) .. " 2>/dev/null") end

-- epoch seconds of an openssl date ("Nov 27 14:55:37 2026 GMT")
local function openssl_date(path, which)
  local s = sh("openssl x509 -in " .. q(path) .. " -noout -" .. which .. "date"):match("=(.-)\n")
  return tonumber(sh("date -u -d " .. q(s) .. " +%s"))
end

local function msgs(logger, level) return helper.msgs(logger.entries, level) end

local function find_entry(logger, msg)
  for _, e in ipairs(logger.entries) do
    if e.msg == msg then return e end
  end
end

-- Open fds other than pipes, after a full collection so that files dropped earlier do not
-- count. Pipes are left out: the popen pipe of the listing itself is seen once or twice,
-- depending on when `ls` runs, and cert code never opens a pipe.
local function fd_count()
  collectgarbage()
  collectgarbage()
  local n = 0
  local p = io.popen("ls -l /proc/" .. helper.pid() .. "/fd 2>/dev/null")
  for line in p:lines() do
    if line:find(" -> ", 1, true) and not line:find("-> pipe:", 1, true) then n = n + 1 end
  end
  p:close()
  return n
end

local UMASK = tonumber(sh("umask"):match("%d+"), 8)
local IS_ROOT = sh("id -u"):match("%d+") == "0"

describe("peerlisten.cert", function()
  local tmp
  before_each(function() tmp = helper.tmpdir() end)
  after_each(function() helper.rmdir(tmp) end)

  describe(".self_signed()", function()
    it("creates etcd's peer certificate: every field read back by openssl x509 -text", function()
      local logger = log.capture()
      local dir = tmp .. "/data/fixtures/peer"
      local t0 = os.time()
      local c, k, created = cert.self_signed { dir = dir, logger = logger,
        hosts = { "127.0.0.1:2380", "localhost:2380", "[::1]:2380", "10.0.0.7" } }
      local t1 = os.time()
      assert.equal(dir .. "/cert.pem", c)
      assert.equal(dir .. "/key.pem", k)
      assert.is_true(created)
      local text = x509_text(c)
      assert.matches("Version: 3 %(0x2%)", text)
      assert.matches("Signature Algorithm: ecdsa%-with%-SHA512", text)
      assert.matches("Issuer: O = etcd\n", text)
      assert.matches("Subject: O = etcd\n", text)
      assert.matches("Public%-Key: %(521 bit%)", text)
      assert.matches("ASN1 OID: secp521r1", text)
      assert.matches("X509v3 Key Usage: critical\n%s+Digital Signature, Key Encipherment, CRL Sign\n", text)
      assert.matches("X509v3 Extended Key Usage: ?\n%s+TLS Web Server Authentication\n", text)
      assert.matches("X509v3 Basic Constraints: critical\n%s+CA:TRUE\n", text)
      assert.matches("X509v3 Subject Key Identifier: ?\n", text)
      assert.not_matches("Authority Key Identifier", text)
      assert.matches("X509v3 Subject Alternative Name: ?\n%s+DNS:localhost, IP Address:127.0.0.1, "
        .. "IP Address:0:0:0:0:0:0:0:1, IP Address:10.0.0.7\n", text)
      -- serial: random, at most 128 bits, the same as inspect's
      local serial = sh("openssl x509 -in " .. q(c) .. " -noout -serial"):match("serial=(%x+)")
      assert.truthy(#serial <= 34)
      local info = cert.inspect(c)
      assert.equal(serial:lower():gsub("^0+", ""), info.serial)
      -- validity: from now, exactly 365 days
      local nb, na = openssl_date(c, "start"), openssl_date(c, "end")
      assert.truthy(nb >= t0 and nb <= t1)
      assert.equal(365 * 86400, na - nb)
      assert.equal(nb, info.not_before)
      assert.equal(na, info.not_after)
      -- key: SEC1 "EC PRIVATE KEY" on P-521 matching the certificate
      local key = readfile(k)
      assert.equal("-----BEGIN EC PRIVATE KEY-----\n", key:sub(1, 31))
      assert.matches("ASN1 OID: secp521r1", sh("openssl ec -in " .. q(k) .. " -noout -text 2>&1"))
      assert.equal(sh("openssl x509 -in " .. q(c) .. " -noout -pubkey"),
        sh("openssl pkey -in " .. q(k) .. " -pubout"))
      -- permissions: dirs 0700, key 0600, cert 0666 & ~umask
      assert.equal("700", mode_of(dir))
      assert.equal("700", mode_of(tmp .. "/data/fixtures"))
      assert.equal("700", mode_of(tmp .. "/data"))
      assert.equal("600", mode_of(k))
      assert.equal(("%o"):format(tonumber("644", 8) & ~UMASK), mode_of(c))
      assert.equal("cert.pem\nkey.pem\n", ls(dir))   -- no temporary files, no .touch
      -- etcd's log lines
      assert.same({ "automatically generate certificates", "created cert file", "created key file" }, msgs(logger))
      assert.equal(os.date("!%Y-%m-%dT%H:%M:%SZ", na),
        logger.entries[1].fields["certificate-validity-bound-not-after"])
      assert.equal("warn", logger.entries[1].level)
      assert.same({ path = c }, logger.entries[2].fields)
      assert.same({ path = k }, logger.entries[3].fields)
    end)

    it("draws a fresh random serial for every certificate", function()
      local a = cert.inspect((cert.self_signed { dir = tmp .. "/a" }))
      local b = cert.inspect((cert.self_signed { dir = tmp .. "/b" }))
      assert.not_equal(a.serial, b.serial)
      assert.truthy(#a.serial <= 32 and #b.serial <= 32)
    end)

    it("sets notAfter to now + validity_years × 365 days", function()
      local c = cert.self_signed { dir = tmp, validity_years = 3 }
      local info = cert.inspect(c)
      assert.equal(3 * 365 * 86400, info.not_after - info.not_before)
      assert.truthy(info.days_left == 3 * 365 or info.days_left == 3 * 365 - 1)
    end)

    local types = {
      { "ecdsa-p256", "ecdsa%-with%-SHA256", "ASN1 OID: prime256v1", "EC PRIVATE KEY" },
      { "ecdsa-p384", "ecdsa%-with%-SHA384", "ASN1 OID: secp384r1", "EC PRIVATE KEY" },
      { "ed25519", "Signature Algorithm: ED25519", "ED25519 Public%-Key", "PRIVATE KEY" },
      { "rsa-2048", "sha256WithRSAEncryption", "Public%-Key: %(2048 bit%)", "RSA PRIVATE KEY" },
    }
    for _, t in ipairs(types) do
      it("makes " .. t[1] .. " keys on request", function()
        local c, k = cert.self_signed { dir = tmp, key_type = t[1], hosts = { "127.0.0.1" } }
        local text = x509_text(c)
        assert.matches(t[2], text)
        assert.matches(t[3], text)
        assert.equal("-----BEGIN " .. t[4] .. "-----\n", readfile(k):match("^[^\n]*\n"))
        assert.is_true(cert.matches_key(c, k))
        assert.is_true(cert.verify(c, c, "server"))
      end)
    end

    it("returns absolute paths for a relative dir", function()
      local old = sh("pwd"):match("[^\n]+")
      local rel = tmp:sub(#old + 2)
      if tmp:sub(1, #old + 1) ~= old .. "/" then
        -- the temp dir is not below the working directory: go there with ../
        rel = ("../"):rep(select(2, old:gsub("/", ""))) .. tmp:sub(2)
      end
      local c, k = cert.self_signed { dir = rel .. "/./x/../peer" }
      assert.equal(tmp .. "/peer/cert.pem", c)
      assert.equal(tmp .. "/peer/key.pem", k)
    end)

    it("warns like etcd when the directory exists with another mode, and leaves the mode", function()
      os.execute("chmod 755 " .. q(tmp))
      local logger = log.capture()
      local c = cert.self_signed { dir = tmp, logger = logger }
      assert.truthy(c)
      local e = find_entry(logger, "check file permission")
      assert.equal("warn", e.level)
      assert.equal(('directory "%s" exist, but the permission is "drwxr-xr-x". The recommended permission is '
        .. '"-rwx------" to prevent possible unprivileged access to the data'):format(tmp), e.fields.error)
      assert.equal("755", mode_of(tmp))
      local quiet = log.capture()
      os.execute("chmod 700 " .. q(tmp))
      cert.self_signed { dir = tmp, logger = quiet }
      assert.is_nil(find_entry(quiet, "check file permission"))
    end)

    describe("reuse", function()
      local hosts = { "127.0.0.1:2380", "localhost:2380" }
      local function fresh(opts)
        opts = opts or {}
        opts.dir, opts.hosts = tmp, opts.hosts or hosts
        local c, k = cert.self_signed(opts)
        return c, k, cert.inspect(c).serial
      end

      it("keeps a valid pair untouched and logs nothing", function()
        local c, k, serial = fresh()
        local ino = sh("stat -c %i " .. q(c) .. " " .. q(k))
        local logger = log.capture()
        local c2, k2, created = cert.self_signed { dir = tmp, hosts = { "localhost:1", "127.0.0.1" }, logger = logger }
        assert.equal(c, c2)
        assert.equal(k, k2)
        assert.is_false(created)
        assert.equal(serial, cert.inspect(c).serial)
        assert.equal(ino, sh("stat -c %i " .. q(c) .. " " .. q(k)))
        assert.same({}, msgs(logger))
        -- a subset of the hosts is still covered; IPv6 spelled differently is the same address
        c2 = cert.self_signed { dir = tmp, hosts = { "LOCALHOST" } }
        assert.equal(serial, cert.inspect(c2).serial)
      end)

      local function regenerated(why_pattern, opts)
        local logger = log.capture()
        opts = opts or {}
        opts.dir, opts.hosts, opts.logger = tmp, opts.hosts or hosts, logger
        local c, k, created = cert.self_signed(opts)
        assert.is_true(created)
        local e = find_entry(logger, "regenerating self-signed certificate")
        assert.is_table(e, "no regeneration warning")
        assert.equal("warn", e.level)
        assert.matches(why_pattern, e.fields.reason)
        assert.equal(c, e.fields["cert-file"])
        assert.equal(k, e.fields["key-file"])
        assert.truthy(find_entry(logger, "created key file"))
        assert.is_true(cert.matches_key(c, k))
        assert.equal("600", mode_of(k))
        return c, k
      end

      it("regenerates an expired certificate", function()
        local c, k = fresh()
        local now = os.time()
        local key = readfile(k)
        writefile(c, assert(core.cert_create { key = key, subject = { { "O", "etcd" } },
          not_before = now - 7200, not_after = now - 3600, key_usage = { "digitalSignature" },
          ext_key_usage = { "serverAuth" }, is_ca = true, dns = { "localhost" }, ips = { "127.0.0.1" } }))
        assert.is_true(cert.inspect(c).expired)
        regenerated("^certificate expired at %d+%-%d+%-%d+T")
        assert.is_false(cert.inspect(c).expired)
      end)

      it("regenerates when the key does not match the certificate", function()
        local _, k = fresh()
        writefile(k, core.cert_keygen("ecdsa-p521"))
        regenerated("key does not match certificate: tls: private key does not match public key")
      end)

      it("regenerates when a requested host is not covered", function()
        local _, _, serial = fresh()
        local c = regenerated("does not cover IP address 10%.1%.2%.3", { hosts = { "127.0.0.1", "10.1.2.3:2380" } })
        assert.not_equal(serial, cert.inspect(c).serial)
        assert.same({ "127.0.0.1", "10.1.2.3" }, cert.inspect(c).sans.ip)
        fresh()
        regenerated("does not cover host node2%.example", { hosts = { "node2.example:2380" } })
      end)

      it("regenerates when one of the files is missing", function()
        local c, k = fresh()
        os.remove(k)
        regenerated("key%.pem is missing")
        os.remove(c)
        regenerated("cert%.pem is missing")
      end)

      it("regenerates a certificate file that does not parse", function()
        local c = fresh()
        writefile(c, "garbage\n")
        regenerated("cannot parse .*no PEM certificate found")
      end)

      it("regenerates when key_type is given and differs", function()
        fresh()
        local c = regenerated("key type is ecdsa%-p521, want ed25519", { key_type = "ed25519" })
        assert.equal("ed25519", cert.inspect(c).key.type)
        -- without key_type, any key type is reused
        local _, _, created = cert.self_signed { dir = tmp, hosts = hosts }
        assert.is_false(created)
      end)
    end)

    describe("bad input", function()
      local function rejects(opts, code, pattern, log_msg)
        local logger = log.capture()
        opts.logger = logger
        opts.dir = opts.dir or (tmp .. "/new/peer")
        local fds = fd_count()
        local a, msg, c = cert.self_signed(opts)
        assert.is_nil(a)
        assert.is_string(msg)
        assert.equal(code, c)
        if pattern then assert.matches(pattern, msg) end
        if log_msg then
          local e = find_entry(logger, log_msg)
          assert.is_table(e, "missing log line " .. log_msg)
          assert.equal(msg, e.fields.error)
        end
        assert.is_false(exists(tmp .. "/new"))   -- nothing created
        assert.equal(fds, fd_count())
        return msg
      end

      it("rejects validity 0 and negative with etcd's error", function()
        for _, v in ipairs { 0, -1, -0.5, 0 / 0 } do
          local msg = rejects({ validity_years = v }, "ECONFIG", nil, "cannot generate cert")
          assert.equal("selfSignedCertValidity is invalid,it should be greater than 0", msg)
        end
      end)

      it("rejects a host that is not a host", function()
        for _, h in ipairs { "foo bar", "", "a..b", "-x.example", "1.2.3", "host:99999", "host:http",
          "[zz]:1", "[::1", "fe80::1%eth0", "exa$mple.com", ("a"):rep(64) .. ".com" } do
          rejects({ hosts = { "127.0.0.1", h } }, "ECONFIG", "^invalid host ")
        end
      end)

      it("rejects an unknown key type", function()
        rejects({ key_type = "dsa" }, "ECONFIG", '^unknown key type "dsa" %(must be one of: ecdsa%-p256')
      end)

      it("fails like etcd when a parent of dir is a file", function()
        writefile(tmp .. "/fixtures", "x")
        local logger = log.capture()
        local a, msg, code = cert.self_signed { dir = tmp .. "/fixtures/peer", logger = logger }
        assert.is_nil(a)
        assert.equal("mkdir " .. tmp .. "/fixtures: not a directory", msg)
        assert.equal("ENOTDIR", code)
        assert.equal(msg, find_entry(logger, "cannot create cert directory").fields.error)
        assert.equal("x", readfile(tmp .. "/fixtures"))
      end)

      it("fails when dir itself is a file", function()
        writefile(tmp .. "/file", "x")
        local a, msg, code = cert.self_signed { dir = tmp .. "/file" }
        assert.is_nil(a)
        assert.equal("open " .. tmp .. "/file/.touch: not a directory", msg)
        assert.equal("ENOTDIR", code)
        assert.equal("file\n", ls(tmp))
      end)

      it("fails when dir is not writable, leaving nothing behind", function()
        local dir = tmp .. "/ro"
        if IS_ROOT then
          dir = "/sys/kernel"   -- root writes anywhere else; sysfs refuses new files
        else
          os.execute("mkdir -m 500 " .. q(dir))
        end
        local logger = log.capture()
        local a, msg, code = cert.self_signed { dir = dir, logger = logger }
        assert.is_nil(a)
        assert.equal("open " .. dir .. "/.touch: permission denied", msg)
        assert.equal("EACCES", code)
        assert.truthy(find_entry(logger, "cannot create cert directory"))
        assert.is_false(exists(dir .. "/cert.pem"))
        assert.is_false(exists(dir .. "/key.pem"))
      end)

      it("raises on wrong argument types", function()
        assert.has_error(function() cert.self_signed() end)
        assert.has_error(function() cert.self_signed { dir = 42 } end)
        assert.has_error(function() cert.self_signed { hosts = {} } end)
        assert.has_error(function() cert.self_signed { dir = tmp, validity_years = "1" } end)
        assert.has_error(function() cert.self_signed { dir = tmp, logger = 42 } end)
      end)

      it("does not follow a .touch symlink planted in dir (the victim file is not emptied)", function()
        local dir = tmp .. "/peer"
        os.execute("mkdir -m 700 " .. q(dir))
        writefile(tmp .. "/victim", "precious")
        assert(os.execute("ln -s " .. q(tmp .. "/victim") .. " " .. q(dir .. "/.touch")))
        local c, k = cert.self_signed { dir = dir, logger = log.capture() }
        assert.equal(dir .. "/cert.pem", c)
        assert.equal(dir .. "/key.pem", k)
        assert.equal("precious", readfile(tmp .. "/victim"))
        assert.equal("cert.pem\nkey.pem\n", ls(dir))   -- the planted link is gone, no probe left
      end)

      it("does not follow a dangling .touch symlink (no file created at its target)", function()
        local dir = tmp .. "/peer"
        os.execute("mkdir -m 700 " .. q(dir))
        assert(os.execute("ln -s " .. q(tmp .. "/created") .. " " .. q(dir .. "/.touch")))
        assert.truthy(cert.self_signed { dir = dir, logger = log.capture() })
        assert.is_false(exists(tmp .. "/created"))
      end)

      it("rejects an empty dir", function()
        local a, msg, code = cert.self_signed { dir = "" }
        assert.is_nil(a)
        assert.is_string(msg)
        assert.equal("ECONFIG", code)
      end)
    end)
  end)

  describe("CA and members", function()
    local ca, ca_key, m, m_key
    before_each(function()
      ca, ca_key = assert(cert.ca { dir = tmp .. "/ca" })
      m, m_key = assert(cert.issue { ca_cert = ca, ca_key = ca_key, dir = tmp .. "/members", name = "n1",
        hosts = { "https://127.0.0.1:2380", "n1.cluster.local:2380", "[::1]:2380" }, sans = { "n1.example" } })
    end)

    describe(".ca()", function()
      it("creates a CA certificate and a 0600 key", function()
        assert.equal(tmp .. "/ca/peerlisten-ca.pem", ca)
        assert.equal(tmp .. "/ca/peerlisten-ca-key.pem", ca_key)
        local text = x509_text(ca)
        assert.matches("Subject: CN = peerlisten%-ca\n", text)
        assert.matches("Issuer: CN = peerlisten%-ca\n", text)
        assert.matches("X509v3 Basic Constraints: critical\n%s+CA:TRUE\n", text)
        assert.matches("X509v3 Key Usage: critical\n%s+Digital Signature, Certificate Sign, CRL Sign\n", text)
        assert.matches("ASN1 OID: prime256v1", text)
        assert.matches("X509v3 Subject Key Identifier", text)
        assert.equal("600", mode_of(ca_key))
        assert.equal("700", mode_of(tmp .. "/ca"))
        local info = cert.inspect(ca)
        assert.is_true(info.is_ca)
        assert.truthy(info.not_after - info.not_before >= 10 * 365 * 86400)
      end)

      it("reuses a valid CA and never overwrites one", function()
        local serial = cert.inspect(ca).serial
        local c2, k2, created = cert.ca { dir = tmp .. "/ca" }
        assert.equal(ca, c2)
        assert.equal(ca_key, k2)
        assert.is_false(created)
        assert.equal(serial, cert.inspect(ca).serial)
        os.remove(ca_key)
        local a, msg, code = cert.ca { dir = tmp .. "/ca" }
        assert.is_nil(a)
        assert.matches("refusing to overwrite an existing CA", msg)
        assert.equal("EEXIST", code)
        assert.equal(serial, cert.inspect(ca).serial)
      end)

      it("takes name, key_type and validity_years", function()
        local c, k = cert.ca { dir = tmp .. "/ca2", name = "etcd-peer-ca", key_type = "ed25519", validity_years = 2 }
        assert.equal(tmp .. "/ca2/etcd-peer-ca.pem", c)
        assert.equal(tmp .. "/ca2/etcd-peer-ca-key.pem", k)
        local info = cert.inspect(c)
        assert.equal("CN=etcd-peer-ca", info.subject)
        assert.equal("ed25519", info.key.type)
        assert.equal(2 * 365 * 86400 + 300, info.not_after - info.not_before)
      end)

      it("rejects bad arguments with nothing created", function()
        for _, opts in ipairs {
          { name = "../evil" }, { name = "" }, { key_type = "x" }, { validity_years = 0 }, { validity_years = -3 },
        } do
          opts.dir = tmp .. "/bad"
          local a, msg, code = cert.ca(opts)
          assert.is_nil(a)
          assert.is_string(msg)
          assert.equal("ECONFIG", code)
        end
        assert.is_false(exists(tmp .. "/bad"))
      end)
    end)

    describe(".issue()", function()
      it("issues a member certificate for server and client auth", function()
        assert.equal(tmp .. "/members/n1.pem", m)
        assert.equal(tmp .. "/members/n1-key.pem", m_key)
        local text = x509_text(m)
        assert.matches("Subject: CN = n1\n", text)
        assert.matches("Issuer: CN = peerlisten%-ca\n", text)
        assert.matches("X509v3 Key Usage: critical\n%s+Digital Signature, Key Encipherment\n", text)
        assert.matches("X509v3 Extended Key Usage: ?\n%s+TLS Web Server Authentication, "
          .. "TLS Web Client Authentication\n",
          text)
        assert.matches("X509v3 Basic Constraints: critical\n%s+CA:FALSE\n", text)
        assert.matches("X509v3 Authority Key Identifier", text)
        assert.matches("X509v3 Subject Key Identifier", text)
        assert.matches("DNS:n1%.cluster%.local, DNS:n1%.example, IP Address:127%.0%.0%.1, IP Address:0:0:0:0:0:0:0:1",
          text)
        assert.equal("600", mode_of(m_key))
        assert.equal(cert.inspect(ca).subject_key_id, cert.inspect(m).authority_key_id)
      end)

      it("is accepted by openssl verify against its CA, for server and client use", function()
        local function ov(args)
          return sh("openssl verify " .. args .. " -CAfile " .. q(ca) .. " " .. q(m) .. " 2>&1")
        end
        assert.equal(m .. ": OK\n", ov(""))
        assert.equal(m .. ": OK\n", ov("-purpose sslserver"))
        assert.equal(m .. ": OK\n", ov("-purpose sslclient"))
      end)

      it("rejects bad arguments and bad CAs with nothing written", function()
        local other_ca, other_key = cert.ca { dir = tmp .. "/other" }
        local base = { ca_cert = ca, ca_key = ca_key, dir = tmp .. "/bad", name = "n2", hosts = { "127.0.0.1" } }
        local function try(changes, code, pattern)
          local opts = {}
          for k, v in pairs(base) do opts[k] = v end
          for k, v in pairs(changes) do opts[k] = v end
          local a, msg, c = cert.issue(opts)
          assert.is_nil(a)
          assert.is_string(msg)
          assert.equal(code, c)
          if pattern then assert.matches(pattern, msg) end
        end
        try({ hosts = {} }, "ECONFIG", "at least one host")
        try({ hosts = { "bad host" } }, "ECONFIG", "^invalid host")
        try({ sans = { "a..b" } }, "ECONFIG", "^invalid host")
        try({ name = "a/b" }, "ECONFIG", "invalid name")
        try({ key_type = "rsa-1024" }, "ECONFIG", "unknown key type")
        try({ validity_years = 0 }, "ECONFIG")
        try({ ca_cert = m, ca_key = m_key }, "ECERT", "not a CA")
        try({ ca_key = other_key }, "ECERT", "CA private key does not match CA certificate")
        try({ ca_cert = tmp .. "/nope.pem" }, "ENOENT", "^open .*nope%.pem: no such file or directory$")
        try({ ca_key = m }, "ECERT", "cannot parse CA private key")
        assert.is_false(exists(tmp .. "/bad"))
        assert.truthy(other_ca)
      end)

      it("takes PEM text instead of paths", function()
        local c = cert.issue { ca_cert = readfile(ca), ca_key = readfile(ca_key), dir = tmp .. "/m2", name = "n2",
          hosts = { "127.0.0.2" }, key_type = "ecdsa-p384" }
        assert.is_true(cert.verify(c, ca, "client"))
        assert.equal("P-384", cert.inspect(c).key.curve)
      end)
    end)

    describe(".inspect()", function()
      it("reports every field, matching openssl", function()
        local info = cert.inspect(m)
        assert.equal("CN=n1", info.subject)
        assert.equal("CN=peerlisten-ca", info.issuer)
        assert.same({ CN = "n1" }, info.subject_fields)
        assert.same({ CN = "peerlisten-ca" }, info.issuer_fields)
        assert.equal(3, info.version)
        local serial = sh("openssl x509 -in " .. q(m) .. " -noout -serial"):match("serial=(%x+)")
        assert.equal((serial:lower():gsub("^0+", "")), info.serial)
        local fp = sh("openssl x509 -in " .. q(m) .. " -noout -fingerprint -sha256"):match("=([%x:]+)")
        assert.equal(fp:gsub(":", ""):lower(), info.fingerprint_sha256)
        assert.equal(openssl_date(m, "start"), info.not_before)
        assert.equal(openssl_date(m, "end"), info.not_after)
        assert.equal(os.date("!%Y-%m-%dT%H:%M:%SZ", info.not_after), info.not_after_rfc3339)
        assert.equal(os.date("!%Y-%m-%dT%H:%M:%SZ", info.not_before), info.not_before_rfc3339)
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", info.not_after_rfc3339)
        assert.truthy(info.days_left == 364 or info.days_left == 365)
        assert.same({ dns = { "n1.cluster.local", "n1.example" }, ip = { "127.0.0.1", "::1" }, email = {}, uri = {} },
          info.sans)
        assert.same({ "digitalSignature", "keyEncipherment" }, info.key_usage)
        assert.same({ "serverAuth", "clientAuth" }, info.ext_key_usage)
        assert.is_false(info.is_ca)
        assert.is_false(info.self_signed)
        assert.is_false(info.expired)
        assert.same({ type = "ecdsa", bits = 256, curve = "P-256" }, info.key)
        assert.equal("ecdsa-with-SHA256", info.signature_algorithm)
        assert.equal(m, info.path)
        local ca_info = cert.inspect(ca)
        assert.is_true(ca_info.is_ca)
        assert.is_true(ca_info.self_signed)
        assert.same({ "digitalSignature", "keyCertSign", "cRLSign" }, ca_info.key_usage)
        assert.same({}, ca_info.ext_key_usage)
      end)

      it("takes PEM text", function()
        local info = cert.inspect(readfile(m))
        assert.equal("CN=n1", info.subject)
        assert.is_nil(info.path)
      end)

      it("returns a list for a chain file; inspect_chain always does", function()
        writefile(tmp .. "/chain.pem", readfile(m) .. readfile(ca))
        local list = cert.inspect(tmp .. "/chain.pem")
        assert.equal(2, #list)
        assert.equal("CN=n1", list[1].subject)
        assert.equal("CN=peerlisten-ca", list[2].subject)
        assert.equal(1, #cert.inspect_chain(m))
        assert.is_true(cert.verify(tmp .. "/chain.pem", ca))
      end)

      it("parses names with several attributes", function()
        local now = os.time()
        local pem = assert(core.cert_create { key = core.cert_keygen("ecdsa-p256"),
          not_before = now, not_after = now + 60,
          subject = { { "C", "DE" }, { "O", "acme" }, { "OU", "a" }, { "OU", "b" }, { "CN", "x,y" } },
          key_usage = { "digitalSignature" }, ext_key_usage = {} })
        local info = cert.inspect(pem)
        assert.equal("CN=x\\,y,OU=b,OU=a,O=acme,C=DE", info.subject)
        assert.same({ C = "DE", O = "acme", OU = { "a", "b" }, CN = "x,y" }, info.subject_fields)
        assert.same({ dns = {}, ip = {}, email = {}, uri = {} }, info.sans)
      end)

      it("fails on a missing file, a directory and non-PEM content", function()
        local fds = fd_count()
        local a, msg, code = cert.inspect(tmp .. "/missing.pem")
        assert.is_nil(a)
        assert.equal("open " .. tmp .. "/missing.pem: no such file or directory", msg)
        assert.equal("ENOENT", code)
        a, msg, code = cert.inspect(tmp)
        assert.is_nil(a)
        assert.equal("read " .. tmp .. ": is a directory", msg)
        assert.equal("EISDIR", code)
        writefile(tmp .. "/junk", "not a certificate\n")
        a, msg, code = cert.inspect(tmp .. "/junk")
        assert.is_nil(a)
        assert.equal(tmp .. "/junk: no PEM certificate found", msg)
        assert.equal("ECERT", code)
        a, msg, code = cert.inspect(m_key)   -- PEM, but no certificate
        assert.is_nil(a)
        assert.matches("no PEM certificate found", msg)
        assert.equal("ECERT", code)
        a, msg, code = cert.inspect("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        assert.is_nil(a)
        assert.is_string(msg)
        assert.equal("ECERT", code)
        assert.equal(fds, fd_count())
        assert.has_error(function() cert.inspect() end)
      end)
    end)

    describe(".format()", function()
      it("renders one certificate or a chain for people", function()
        local text = cert.format(cert.inspect(m))
        assert.matches("Subject: +CN=n1\n", text)
        assert.matches("Issuer: +CN=peerlisten%-ca\n", text)
        assert.matches("Not after: +%d+%-%d+%-%d+T[%d:]+Z %(36%d days left%)\n", text)
        assert.matches("Public key: +ecdsa P%-256, 256 bits\n", text)
        assert.matches("Ext key usage: +serverAuth, clientAuth\n", text)
        assert.matches("DNS names: +n1%.cluster%.local, n1%.example\n", text)
        assert.matches("IP addresses: +127%.0%.0%.1, ::1\n", text)
        assert.matches("SHA%-256: +%x%x:", text)
        assert.not_matches("\n$", text)
        writefile(tmp .. "/chain.pem", readfile(m) .. readfile(ca))
        local chain = cert.format(cert.inspect(tmp .. "/chain.pem"))
        assert.matches("^Certificate 1 of 2\n", chain)
        assert.matches("\n\nCertificate 2 of 2\n", chain)
        assert.matches("CA: +yes", chain)
        assert.has_error(function() cert.format("x") end)
      end)

      it("says EXPIRED for an expired certificate", function()
        local now = os.time()
        local pem = core.cert_create { key = core.cert_keygen("ed25519"), not_before = now - 10 * 86400,
          not_after = now - 3 * 86400 - 10, subject = { { "O", "old" } }, key_usage = {}, ext_key_usage = {} }
        assert.matches("%(EXPIRED 4 days ago%)", cert.format(cert.inspect(pem)))
      end)
    end)

    describe(".matches_key()", function()
      it("accepts the right key and rejects another", function()
        assert.is_true(cert.matches_key(m, m_key))
        assert.is_true(cert.matches_key(readfile(ca), readfile(ca_key)))
        local a, msg, code = cert.matches_key(m, ca_key)
        assert.is_nil(a)
        assert.equal("tls: private key does not match public key", msg)
        assert.equal("ECERT", code)
        a, msg, code = cert.matches_key(m, tmp .. "/none")
        assert.is_nil(a)
        assert.matches("no such file or directory", msg)
        assert.equal("ENOENT", code)
        a, msg, code = cert.matches_key(m, m)
        assert.is_nil(a)
        assert.matches("^cannot parse private key", msg)
        assert.equal("ECERT", code)
      end)
    end)

    describe(".verify()", function()
      it("accepts a member for its purposes and names OpenSSL's reason otherwise", function()
        assert.is_true(cert.verify(m, ca))
        assert.is_true(cert.verify(m, ca, "server"))
        assert.is_true(cert.verify(m, ca, "client"))
        local other = cert.ca { dir = tmp .. "/other" }
        local a, msg, code = cert.verify(m, other)
        assert.is_nil(a)
        assert.equal("unable to get local issuer certificate", msg)
        assert.equal("ECERT", code)
        -- an etcd-style serverAuth-only certificate is no client certificate
        local s = cert.self_signed { dir = tmp .. "/ss", hosts = { "127.0.0.1" } }
        assert.is_true(cert.verify(s, s, "server"))
        a, msg, code = cert.verify(s, s, "client")
        assert.is_nil(a)
        assert.equal("unsuitable certificate purpose", msg)
        assert.equal("ECERT", code)
        assert.has_error(function() cert.verify(m, ca, "bogus") end)
      end)

      it("reports an expired member", function()
        local now = os.time()
        local old = assert(core.cert_create { key = core.cert_keygen("ecdsa-p256"), issuer_cert = readfile(ca),
          issuer_key = readfile(ca_key), subject = { { "CN", "old" } }, not_before = now - 7200, not_after = now - 3600,
          key_usage = { "digitalSignature" }, ext_key_usage = { "serverAuth" }, ips = { "127.0.0.1" } })
        local a, msg, code = cert.verify(old, ca, "server")
        assert.is_nil(a)
        assert.equal("certificate has expired", msg)
        assert.equal("ECERT", code)
      end)
    end)
  end)

  describe("core.write_file_atomic", function()
    it("writes with the given mode, replaces atomically and leaves no temporary file", function()
      local p = tmp .. "/f"
      assert.is_true(core.write_file_atomic(p, "one", tonumber("600", 8)))
      assert.equal("600", mode_of(p))
      local ino = sh("stat -c %i " .. q(p))
      assert.is_true(core.write_file_atomic(p, "two", tonumber("600", 8)))
      assert.equal("two", readfile(p))
      assert.not_equal(ino, sh("stat -c %i " .. q(p)))
      assert.equal("f\n", ls(tmp))
    end)

    it("fails cleanly in a missing directory", function()
      local fds = fd_count()
      local a, msg, code = core.write_file_atomic(tmp .. "/no/f", "x")
      assert.is_nil(a)
      assert.equal("open " .. tmp .. "/no/f: no such file or directory", msg)
      assert.equal("ENOENT", code)
      assert.equal("", ls(tmp))
      assert.equal(fds, fd_count())
    end)

    it("does not leave a temporary file when the rename fails", function()
      os.execute("mkdir " .. q(tmp .. "/d") .. " && touch " .. q(tmp .. "/d/x"))
      local a, msg, code = core.write_file_atomic(tmp .. "/d", "x")
      assert.is_nil(a)
      assert.matches("^rename " .. tmp:gsub("%p", "%%%0") .. "/d: ", msg)
      assert.is_string(code)
      assert.equal("d\n", ls(tmp))
    end)
  end)
end)
