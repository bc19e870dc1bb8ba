local peerlisten = require "peerlisten"
local cli = require "peerlisten.cli"
local helper = require "helper"
local cjson = require "cjson"

local free_port = helper.free_port

-- What `peerlisten check --json <args>` prints, decoded.
local function cli_report(args)
  local out = { parts = {} }
  function out.write(_, ...) for _, p in ipairs { ... } do out.parts[#out.parts + 1] = p end end
  cli.main({ "check", "--json", table.unpack(args) }, { stdout = out, stderr = { write = function() end }, env = {} })
  return cjson.decode(table.concat(out.parts))
end

describe("peerlisten.check", function()
  local dir
  before_each(function() dir = helper.tmpdir() end)
  after_each(function() helper.rmdir(dir) end)

  it("returns the report check --json prints, leaving nothing bound", function()
    local port = free_port()
    local url = "http://127.0.0.1:" .. port
    local cfg = assert(peerlisten.config.load { args = { "--listen-peer-urls", url, "--data-dir", dir }, env = {} })
    local report = peerlisten.check(cfg, { explain = true })
    assert.is_true(report.ok)
    assert.same({ { url = url, address = "127.0.0.1:" .. port, tls = false } }, report.listeners)
    assert.same({}, report.warnings)
    assert.same({}, report.certificates)
    assert.equal("listen-peer-urls", report.explain[3].key)
    assert.equal("flag", report.explain[3].source)
    -- the command adds how it chose the etcd version (no PATH here: the newest)
    report.etcd_version_source = "newest modelled"
    assert.same(cjson.decode(peerlisten.log.encode(report)),
      cli_report { "--explain", "--listen-peer-urls", url, "--data-dir", dir })
    local l = assert(peerlisten.listen { url = url })
    l:close()
  end)

  it("fails with etcd's reason and code, as a report, for a configuration that does not validate", function()
    local report = peerlisten.check { listen_peer_urls = "http://example.com:2380" }
    assert.same({ ok = false, error = "expected IP in URL for binding (http://example.com:2380)", code = "ECONFIG",
      warnings = {}, listeners = {}, certificates = {}, notes = {}, differences = {} }, report)
    report = peerlisten.check { listen_peer_urls = "https://127.0.0.1:" .. free_port() }
    assert.is_false(report.ok)
    assert.matches("KeyFile and CertFile are not presented", report.error, 1, true)
    assert.equal("ETLSCONFIG", report.code)
  end)

  it("passes an auto-TLS configuration, checks the generated certificate and closes the policy", function()
    local built, report = helper.with_policy_spy(function()
      return peerlisten.check { listen_peer_urls = "https://127.0.0.1:" .. free_port(), data_dir = dir,
        peer_transport_security = { auto_tls = true } }
    end)
    assert.is_true(report.ok, report.error)
    assert.is_true(report.listeners[1].tls)
    assert.equal(1, #report.certificates)
    assert.equal(dir .. "/fixtures/peer/cert.pem", report.certificates[1].file)
    assert.is_true(#built > 0)
    for _, p in ipairs(built) do assert.equal("peerlisten.TlsPolicy (closed)", tostring(p)) end
  end)

  it("warns when the certificate does not cover a URL host, after etcd's own warnings", function()
    local cert, key = helper.selfsigned(dir)
    local report = peerlisten.check {
      listen_peer_urls = { "https://127.0.0.2:" .. free_port(), "http://127.0.0.1:" .. free_port() },
      peer_transport_security = { cert_file = cert, key_file = key }, data_dir = dir }
    assert.is_true(report.ok, report.error)
    -- helper.selfsigned's certificate is valid for one day
    assert.same({ "scheme is HTTP while key and cert files are present; ignoring key and cert files",
      "peer certificate expires within 30 days", "peer certificate does not cover the URL host" }, helper.msgs(report.warnings))
    assert.same({ ["cert-file"] = cert, host = "127.0.0.2" }, report.warnings[3].fields)
    assert.equal("CN=localhost", report.certificates[1].subject)
  end)
end)
