-- spec/bad_input_spec.lua: a matrix of bad inputs over the public entry points (tls.policy,
-- cert.*, config.new/load, listen, the `check` and `serve` commands). Every case must end in a
-- clear error naming the problem (a fail triple, or a raise for a wrong argument type, or an exit
-- status with a one-line message), without a traceback, and leave nothing behind: the same fds,
-- the same files in the scratch directory, the case's port still free.
local peerlisten = require "peerlisten"
local core = require "peerlisten.core"
local cli = require "peerlisten.cli"
local log = require "peerlisten.log"
local helper = require "helper"
local q, sh, writefile = helper.q, helper.sh, helper.writefile


-- Everything under dir: type, path, size and a checksum of regular files (so that a file
-- truncated, rewritten, moved or deleted shows).
local function listing(dir)
  return sh("cd " .. q(dir) .. " && find . -printf '%y %p %s %l\\n' | sort && "
    .. "find . -type f -readable -size -4M -exec md5sum {} + 2>/dev/null | sort")
end

local IS_ROOT = sh("id -u"):match("^0") ~= nil

describe("bad input", function()
  local dir, port, f, pki
  local cases = {}

  -- the scratch files every case may point at
  lazy_setup(function()
    dir = helper.tmpdir()
    port = helper.free_port()
    f = {
      empty = dir .. "/empty", garbage = dir .. "/garbage.pem", huge = dir .. "/huge.pem",
      dir = dir .. "/adir", dangling = dir .. "/dangling", missing = dir .. "/missing",
      dirlink = dir .. "/dirlink", fifo = dir .. "/fifo", binary = dir .. "/binary",
      bigpem = dir .. "/bigpem.pem", notdir = dir .. "/empty/sub",
    }
    writefile(f.empty, "")
    writefile(f.garbage, "-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n")
    writefile(f.huge, ("A"):rep(9 * 1024 * 1024))
    writefile(f.binary, "\0\1\2\255\254" .. ("\0"):rep(1000))
    writefile(f.bigpem, "-----BEGIN CERTIFICATE-----\n" .. ("QUFB\n"):rep(600000) .. "-----END CERTIFICATE-----\n")
    os.execute("mkdir " .. q(f.dir))
    os.execute("ln -s " .. q(dir .. "/nowhere") .. " " .. q(f.dangling))
    os.execute("ln -s " .. q(f.dir) .. " " .. q(f.dirlink))
    os.execute("mkfifo " .. q(f.fifo))
    local cert = require "peerlisten.cert"
    local pdir = dir .. "/pki"
    pki = {}
    pki.ca, pki.ca_key = assert(cert.ca { dir = pdir, logger = log.null() })
    pki.cert, pki.key = assert(cert.issue { ca_cert = pki.ca, ca_key = pki.ca_key, dir = pdir,
      name = "server", hosts = { "127.0.0.1" }, logger = log.null() })
    helper.warm()
  end)

  lazy_teardown(function() helper.rmdir(dir) end)

  -- Runs one case: fn() returns what the API returned; expect is
  --   { fail = code, msg = pattern }  a fail triple with that code and a message matching
  --   { raises = pattern }            a raise (argument type errors) matching
  --   { rc = n, err = pattern }       a CLI exit status and a stderr line matching
  -- Patterns are plain text when `plain` is set.
  local function check(fn, expect)
    local fds = helper.fd_count()
    local before = listing(dir)
    local res = table.pack(pcall(fn))
    if expect.raises then
      assert.is_false(res[1], "expected a raise, got " .. tostring(res[2]))
      local msg = tostring(res[2])
      assert.matches(expect.raises, msg, 1, expect.plain)
      assert.not_matches("stack traceback", msg, 1, true)
    else
      assert(res[1], "raised: " .. tostring(res[2]))
      if expect.rc then
        local rc, err = res[2], res[3]
        assert.equal(expect.rc, rc, err)
        assert.matches(expect.err, err, 1, expect.plain)
        assert.not_matches("stack traceback", err, 1, true)
        assert.not_matches("%.lua:%d+:", err)
      else
        assert.is_nil(res[2], "expected a failure, got " .. tostring(res[2]))
        assert.is_string(res[3])
        assert.equal(expect.fail, res[4], res[3])
        assert.matches(expect.msg, res[3], 1, expect.plain)
        assert.not_matches("stack traceback", res[3], 1, true)
        assert.not_matches("%.lua:%d+:", res[3])
      end
    end
    for i = 2, res.n do   -- nothing half-built survives in a result
      if type(res[i]) == "userdata" and res[i].close then res[i]:close() end
    end
    res = nil   -- luacheck: ignore 311
    -- fewer is fine (a resolver socket of an earlier case closing), more is a leak
    for _ = 1, 20 do
      collectgarbage(); collectgarbage()
      core.step(0.01)
      if helper.fd_count() <= fds then break end
    end
    assert(helper.fd_count() <= fds, "fd leak:\n" .. table.concat(helper.fd_list(), "\n"))
    assert.equal(before, listing(dir))
    local l = assert(core.listen { scheme = "http", host = "127.0.0.1", port = port }, "port left bound")
    l:close()
  end

  local function case(name, fn, expect)
    cases[#cases + 1] = name
    it(name, function() check(fn, expect) end)
  end

  -- cli.main with in-memory streams: returns rc, stderr
  local function cli_run(args, env)
    local out, err = helper.buffer(), helper.buffer()
    local rc = cli.main(args, { stdout = out, stderr = err, env = env or {} })
    return rc, err:text()
  end

  local function url(scheme) return ("%s://127.0.0.1:%d"):format(scheme or "https", port) end

  describe("tls.policy files", function()
    local file_msgs = {
      empty = "failed to find any PEM data", garbage = "failed to find any PEM data",
      huge = "failed to find any PEM data", binary = "failed to find any PEM data",
      dir = "is a directory", dirlink = "is a directory",
      dangling = "no such file or directory", missing = "no such file or directory",
    }
    for _, role in ipairs { "cert_file", "key_file", "client_cert_file", "client_key_file" } do
      for what, msg in pairs(file_msgs) do
        case(("%s is %s"):format(role, what), function()
          local o = { cert_file = pki.cert, key_file = pki.key,
            client_cert_file = role:match("^client") and pki.cert or nil,
            client_key_file = role:match("^client") and pki.key or nil }
          o[role] = f[what]
          return peerlisten.tls.policy(o)
        end, { fail = "ECERT", msg = msg, plain = true })
      end
      case(role .. " is the other half of the pair", function()
        local o = { cert_file = pki.cert, key_file = pki.key }
        if role:match("^client") then o.client_cert_file, o.client_key_file = pki.cert, pki.key end
        o[role] = role:match("cert") and pki.key or pki.cert
        return peerlisten.tls.policy(o)
      end, { fail = "ECERT", msg = "PEM", plain = true })
    end
    for _, what in ipairs { "dir", "dangling", "missing", "dirlink" } do
      case("trusted_ca_file is " .. what, function()
        return peerlisten.tls.policy { cert_file = pki.cert, key_file = pki.key, trusted_ca_file = f[what] }
      end, { fail = "ECERT", msg = file_msgs[what], plain = true })
    end
    case("cert_file is a path with a NUL byte", function()
      return peerlisten.tls.policy { cert_file = pki.cert .. "\0x", key_file = pki.key }
    end, { fail = "ETLSCONFIG", msg = 'option "cert_file": path contains a NUL byte', plain = true })
  end)

  describe("tls.policy options", function()
    local base = function(o)
      o.cert_file, o.key_file = o.cert_file or pki.cert, o.key_file or pki.key
      return peerlisten.tls.policy(o)
    end
    for _, v in ipairs { -1, 0, 1 / 0, 0 / 0, 1e308 } do
      case("handshake_timeout = " .. tostring(v), function() return base { handshake_timeout = v } end,
        { fail = "ETLSCONFIG", msg = "handshake_timeout", plain = true })
    end
    for _, v in ipairs { "TLS9", "TLS1.0", "tls1.2 ", "SSLv3" } do
      case("min_version = " .. v, function() return base { min_version = v } end,
        { fail = "ETLSCONFIG", msg = "unexpected TLS version", plain = true })
    end
    case("max_version below min_version", function()
      return base { min_version = "TLS1.3", max_version = "TLS1.2" }
    end, { fail = "ETLSCONFIG", msg = "TLS", plain = true })
    case("cipher_suites names an unknown suite", function() return base { cipher_suites = { "NOPE" } } end,
      { fail = "ETLSCONFIG", msg = 'unexpected TLS cipher suite "NOPE"', plain = true })
    case("cipher_suites holds a number", function() return base { cipher_suites = { 5 } } end,
      { fail = "ETLSCONFIG", msg = "cipher", plain = true })
    case("cipher_suites is empty text", function() return base { cipher_suites = { "" } } end,
      { fail = "ETLSCONFIG", msg = "cipher suite", plain = true })
    case("an unknown option", function() return base { cert_fil = "x" } end,
      { fail = "ETLSCONFIG", msg = "cert_fil", plain = true })
    case("alpn with an empty name", function() return base { alpn = { "" } } end,
      { fail = "ETLSCONFIG", msg = "alpn", plain = true })
    case("alpn with a 300-byte name", function() return base { alpn = { ("a"):rep(300) } } end,
      { fail = "ETLSCONFIG", msg = "alpn", plain = true })
    case("allowed_cns is a number", function() return base { allowed_cns = 5 } end,
      { fail = "ETLSCONFIG", msg = "allowed_cns", plain = true })
    case("client_cert_auth is a string", function() return base { client_cert_auth = "yes" } end,
      { fail = "ETLSCONFIG", msg = "client_cert_auth", plain = true })
    case("handshake_timeout is a string", function() return base { handshake_timeout = "10" } end,
      { fail = "ETLSCONFIG", msg = "handshake_timeout", plain = true })
    case("no options table", function() return peerlisten.tls.policy(5) end,
      { raises = "table expected", plain = true })
  end)

  describe("cert.*", function()
    local cert = require "peerlisten.cert"
    local inspect_msgs = {
      empty = { "ECERT", "empty: no PEM certificate found" },
      garbage = { "ECERT", "garbage.pem: no PEM certificate found" },
      huge = { "ECERT", "huge.pem: no PEM certificate found" },
      binary = { "ECERT", "binary: no PEM certificate found" },
      bigpem = { "ECERT", "bigpem.pem: no PEM certificate found" },
      dir = { "EISDIR", "read " .. "%s: is a directory" }, dirlink = { "EISDIR", "read %s: is a directory" },
      dangling = { "ENOENT", "open %s: no such file or directory" },
      missing = { "ENOENT", "open %s: no such file or directory" },
    }
    for what, want in pairs(inspect_msgs) do
      case("inspect of " .. what, function() return cert.inspect(f[what]) end,
        setmetatable({ fail = want[1], plain = true }, { __index = function(_, k)
          if k == "msg" then return want[2]:find("%s", 1, true) and want[2]:format(f[what]) or want[2] end
        end }))
    end
    case("inspect of a private key", function() return cert.inspect(pki.key) end,
      { fail = "ECERT", msg = "no PEM certificate found", plain = true })
    case("inspect of a number", function() return cert.inspect(5) end, { raises = "string", plain = true })
    case("self_signed into a file", function()
      return cert.self_signed { dir = f.empty, logger = log.null() }
    end, { fail = "ENOTDIR", msg = "/empty/.touch: not a directory", plain = true })
    case("self_signed below a file", function()
      return cert.self_signed { dir = f.notdir, logger = log.null() }
    end, { fail = "ENOTDIR", msg = "not a directory", plain = true })
    case("self_signed with an empty dir", function() return cert.self_signed { dir = "" } end,
      { fail = "ECONFIG", msg = "." })
    for _, v in ipairs { -1, 0 } do
      case("self_signed validity_years = " .. v, function()
        return cert.self_signed { dir = dir .. "/ss", validity_years = v, logger = log.null() }
      end, { fail = "ECONFIG", msg = "alidity" })
    end
    case("self_signed hosts holds a table", function()
      return cert.self_signed { dir = dir .. "/ss", hosts = { {} }, logger = log.null() }
    end, { fail = "ECONFIG", msg = "invalid host" })
    case("self_signed validity_years = 1e6 (past what X.509 can hold)", function()
      return cert.self_signed { dir = dir .. "/ss", validity_years = 1e6, logger = log.null() }
    end, { fail = "ECONFIG", msg = "validity_years 1e+06 is too large", plain = true })
    case("ca validity_years = 8000", function()
      return cert.ca { dir = dir .. "/ca", validity_years = 8000, logger = log.null() }
    end, { fail = "ECONFIG", msg = "the latest time X.509 can hold", plain = true })
    case("ca with key_type dsa", function() return cert.ca { dir = dir .. "/ca", key_type = "dsa" } end,
      { fail = "ECONFIG", msg = 'unknown key type "dsa"', plain = true })
    case("ca with validity -1", function() return cert.ca { dir = dir .. "/ca", validity_years = -1 } end,
      { fail = "ECONFIG", msg = "greater than 0", plain = true })
    case("issue from a garbage CA", function()
      return cert.issue { ca_cert = f.garbage, ca_key = f.garbage, dir = dir .. "/m", name = "a", hosts = { "h" } }
    end, { fail = "ECERT", msg = "CA", plain = true })
    case("issue from a missing CA", function()
      return cert.issue { ca_cert = f.missing, ca_key = pki.ca_key, dir = dir .. "/m", name = "a", hosts = { "h" } }
    end, { fail = "ENOENT", msg = "/missing: no such file or directory", plain = true })
    case("issue with the CA key swapped for its cert", function()
      return cert.issue { ca_cert = pki.ca, ca_key = pki.ca, dir = dir .. "/m", name = "a", hosts = { "h" } }
    end, { fail = "ECERT", msg = "key", plain = true })
    case("issue into a directory symlink loop", function()
      os.execute("ln -s loop " .. q(dir .. "/loop"))
      local a, b, c = cert.issue { ca_cert = pki.ca, ca_key = pki.ca_key, dir = dir .. "/loop/x",
        name = "a", hosts = { "h" }, logger = log.null() }
      os.remove(dir .. "/loop")
      return a, b, c
    end, { fail = "ELOOP", msg = "too many levels of symbolic links", plain = true })
  end)

  describe("config.new", function()
    local bad = {
      { "listen_peer_urls is a number", { listen_peer_urls = 5 }, "listen_peer_urls" },
      { "listen_peer_urls holds a number", { listen_peer_urls = { 5 } }, "listen_peer_urls" },
      { "an ftp URL", { listen_peer_urls = { "ftp://127.0.0.1:1" } }, "URL scheme must be" },
      { "a URL without a port", { listen_peer_urls = { "http://127.0.0.1" } }, "127.0.0.1" },
      { "port -1", { listen_peer_urls = { "http://127.0.0.1:-1" } }, "-1" },
      { "an empty URL", { listen_peer_urls = { "" } }, "listen_peer_urls" },
      { "a URL with a path", { listen_peer_urls = { "http://127.0.0.1:1/x" } }, "path" },
      { "peer_transport_security a string", { peer_transport_security = "tls" }, "peer_transport_security" },
      { "cert_file a number", { peer_transport_security = { cert_file = 5 } }, "cert_file" },
      { "auto_tls a string", { peer_transport_security = { auto_tls = "yes" } }, "auto_tls" },
      { "data_dir a table", { data_dir = {} }, "data_dir" },
      { "name a table", { name = {} }, "name" },
      { "log_level loud", { log_level = "loud" }, "loud" },
      { "tls_min_version TLS9", { tls_min_version = "TLS9" }, "TLS9" },
      { "self_signed_cert_validity -1", { self_signed_cert_validity = -1 }, "" },
    }
    for _, b in ipairs(bad) do
      case("config.new: " .. b[1], function() return peerlisten.config.new(b[2]) end,
        { fail = "ECONFIG", msg = b[3], plain = true })
    end
    case("config.new of a string", function() return peerlisten.config.new("x") end,
      { raises = "table expected", plain = true })
  end)

  describe("config.load", function()
    local yaml = {
      { "a scalar document", "just text\n", "cannot unmarshal string into Go value of type embed.configYAML" },
      { "an ftp URL", "listen-peer-urls: ftp://127.0.0.1:1\n", "URL scheme must be" },
      { "a tab-indented document", "peer-transport-security:\n\tcert-file: x\n", "yaml" },
      { "an unterminated quote", "name: 'abc\n", "yaml" },
      { "invalid UTF-8", "name: \255\254\n", "invalid leading UTF-8 octet" },
      { "auto-tls a string", "peer-transport-security:\n  auto-tls: maybe\n", "auto" },
      { "a 200-deep nesting", "name: " .. ("["):rep(200) .. ("]"):rep(200) .. "\n",
        "cannot unmarshal array into Go struct field configYAML.name of type string" },
      { "a YAML list document", "- a\n- b\n", "cannot unmarshal array into Go value of type embed.configYAML" },
      { "listen-peer-urls as a mapping", "listen-peer-urls: {a: 1}\n",
        "cannot unmarshal object into Go struct field configYAML.listen-peer-urls of type string" },
    }
    for i, y in ipairs(yaml) do
      case("config.load: " .. y[1], function()
        local path = dir .. "/cfg" .. i .. ".yaml"
        writefile(path, y[2])
        local a, b, c = peerlisten.config.load { file = path }
        os.remove(path)
        return a, b, c
      end, { fail = "ECONFIG", msg = y[3], plain = true })
    end
    local not_mapping = "Go value of type embed.configYAML"
    for what, msg in pairs { garbage = not_mapping, huge = not_mapping, binary = "control characters", dir = "is a directory",
      dirlink = "is a directory", dangling = "no such file", missing = "no such file" } do
      case("config.load of " .. what, function() return peerlisten.config.load { file = f[what] } end,
        { fail = "ECONFIG", msg = msg, plain = true })
    end
    case("config.load with an unknown flag", function()
      return peerlisten.config.load { args = { "--listen-peer-urlz=http://x:1" } }
    end, { fail = "EUSAGE", msg = "listen-peer-urlz", plain = true })
    case("config.load with a bad ETCD_ variable", function()
      return peerlisten.config.load { args = {}, env = function(k)
        if k == "ETCD_PEER_AUTO_TLS" then return "maybe" end
      end }
    end, { fail = "ECONFIG", msg = "ETCD_PEER_AUTO_TLS", plain = true })
  end)

  describe("listen", function()
    local function L(o) return peerlisten.listen(o) end
    local bad = {
      { "port 70000", { url = "http://127.0.0.1:70000" }, "EINVAL", "address 70000: invalid port" },
      { "an ftp URL", { url = "ftp://127.0.0.1:1" }, "EURL", "ftp" },
      { "a host that does not resolve", { url = "http://no-such-host.invalid:1" }, "ENOTFOUND", "lookup no-such-host.invalid" },
      { "a non-local address", { url = "http://192.0.2.1:1" }, "EADDRNOTAVAIL", "192.0.2.1" },
      { "https without a policy", { url = "https://127.0.0.1:0" }, "ETLSCONFIG", "KeyFile and CertFile are not presented" },
      { "read_timeout -1", { url = "http://127.0.0.1:0", read_timeout = -1 }, "EINVAL", "read_timeout" },
      { "read_timeout nan", { url = "http://127.0.0.1:0", read_timeout = 0 / 0 }, "EINVAL", "read_timeout" },
      { "write_timeout -5", { url = "http://127.0.0.1:0", write_timeout = -5 }, "EINVAL", "write_timeout" },
      { "backlog -1", { url = "http://127.0.0.1:0", backlog = -1 }, "EINVAL", "backlog" },
      { "backlog 1e12", { url = "http://127.0.0.1:0", backlog = 1e12 }, "EINVAL", "backlog" },
      { "a unix path in a missing directory", { url = "unix:///nonexistent-dir/x.sock" }, "ENOENT", "x.sock" },
      { "a 200-byte unix path", { url = "unix:///tmp/" .. ("x"):rep(200) }, "ENAMETOOLONG", "longer than 107 bytes" },
    }
    for _, b in ipairs(bad) do
      case("listen: " .. b[1], function() return L(b[2]) end, { fail = b[3], msg = b[4], plain = true })
    end
    case("listen: the port of this matrix taken", function()
      local l = assert(core.listen { scheme = "http", host = "127.0.0.1", port = port })
      local a, m, c = L { url = url("http") }
      l:close()
      return a, m, c
    end, { fail = "EADDRINUSE", msg = "address already in use", plain = true })
    case("listen: url a number", function() return L { url = 5 } end, { raises = "url" })
    case("listen: tls a string", function() return L { url = url(), tls = "x" } end,
      { raises = "bad argument #1 to 'listen' (field 'tls': peerlisten.TlsPolicy expected, got string)", plain = true })
    case("listen: tls a table, through the core", function()
      return core.listen { scheme = "https", host = "127.0.0.1", port = port, tls = {} }
    end, { raises = "bad option 'tls' (peerlisten.TlsPolicy expected, got table)", plain = true })
    case("listen: backlog a string", function() return L { url = url("http"), backlog = "x" } end,
      { raises = "backlog" })
  end)

  describe("the check command", function()
    local function check_cmd(...)
      local args = { "check", ... }
      return function() return cli_run(args) end
    end
    case("check: an ftp URL", check_cmd("--listen-peer-urls=ftp://127.0.0.1:1"),
      { rc = 2, err = "URL scheme must be", plain = true })
    case("check: an unknown flag", check_cmd("--no-such-flag"), { rc = 2, err = "no-such-flag", plain = true })
    case("check: a garbage config file", function() return cli_run { "check", "--config-file=" .. f.garbage } end,
      { rc = 1, err = "Go value of type embed.configYAML", plain = true })
    case("check: a directory as config file", function()
      return cli_run { "check", "--config-file=" .. f.dir }
    end, { rc = 1, err = "is a directory", plain = true })
    case("check: a missing peer certificate", function()
      return cli_run { "check", "--listen-peer-urls=" .. url(), "--peer-cert-file=" .. f.missing,
        "--peer-key-file=" .. pki.key }
    end, { rc = 1, err = "no such file or directory", plain = true })
    case("check: a broken peer certificate", function()
      return cli_run { "check", "--listen-peer-urls=" .. url(), "--peer-cert-file=" .. f.garbage,
        "--peer-key-file=" .. pki.key }
    end, { rc = 1, err = "PEM", plain = true })
    case("check: a bad ETCD_ variable", function()
      return cli_run({ "check" }, { ETCD_PEER_AUTO_TLS = "maybe" })
    end, { rc = 1, err = "ETCD_PEER_AUTO_TLS", plain = true })
    case("check: a port out of range", check_cmd("--listen-peer-urls=http://127.0.0.1:65536"),
      { rc = 1, err = "65536", plain = true })
  end)

  -- `serve` runs as a child (the real command line: exit status, stderr, no traceback); a case
  -- that does not exit within 10 s fails instead of wedging the suite.
  local function serve_child(args)
    local err_path = dir .. "/../" .. dir:match("[^/]+$") .. ".serve-err"
    local cmd = ("cd %s && env -u LD_PRELOAD timeout -s KILL 10 lua5.4 bin/peerlisten serve %s 2>%s >/dev/null; echo $?")
      :format(q(helper.sh("pwd"):match("[^\n]+")), args, q(err_path))
    local rc = tonumber(helper.sh(cmd):match("%d+"))
    local f_ = io.open(err_path)
    local err = f_ and f_:read("a") or ""
    if f_ then f_:close() end
    os.remove(err_path)
    return rc, err
  end

  describe("the serve command", function()
    local serve_cases = {
      { "an ftp URL", "--listen-peer-urls=ftp://127.0.0.1:1", 2, "URL scheme must be" },
      { "an unknown flag", "--bogus", 2, "bogus" },
      { "a missing certificate", function() return ("--listen-peer-urls=%s --peer-cert-file=%s --peer-key-file=%s")
        :format(url(), f.missing, pki.key) end, 1, "no such file or directory" },
      { "a directory as key", function() return ("--listen-peer-urls=%s --peer-cert-file=%s --peer-key-file=%s")
        :format(url(), pki.cert, f.dir) end, 1, "is a directory" },
      { "a garbage config file", function() return "--config-file=" .. f.garbage end, 1, "Go value of type embed.configYAML" },
      { "a port already taken", function() return "--listen-peer-urls=" .. url("http") end, 1,
        "address already in use" },
    }
    for _, s in ipairs(serve_cases) do
      case("serve: " .. s[1], function()
        local args = type(s[2]) == "function" and s[2]() or s[2]
        if s[4] == "address already in use" then
          local l = assert(core.listen { scheme = "http", host = "127.0.0.1", port = port })
          local rc, err = serve_child(args)
          l:close()
          return rc, err
        end
        return serve_child(args)
      end, { rc = s[3], err = s[4], plain = true })
    end
  end)

  -- An unreadable file: as root (who reads anything) the child drops to nobody with setpriv.
  describe("unreadable files", function()
    local function as_other(code)
      local cwd = helper.sh("pwd"):match("[^\n]+")
      local pre = IS_ROOT and "setpriv --reuid=65534 --regid=65534 --clear-groups " or ""
      local lua = ("package.path='%s/lua/?.lua;%s/lua/?/init.lua;'..package.path "
        .. "package.cpath='%s/?.so;'..package.cpath local peerlisten=require'peerlisten' "
        .. "local ok, a, b, c = pcall(function() %s end) io.write(tostring(ok),'|',tostring(a),'|',tostring(b),'|',tostring(c))")
        :format(cwd, cwd, cwd, code)
      return sh(("cd / && %stimeout -s KILL 10 lua5.4 -e %s 2>&1"):format(pre, q(lua)))
    end
    local unreadable = {
      { "tls.policy cert_file", "return peerlisten.tls.policy{cert_file=%q, key_file=%q}", "|ECERT" },
      { "config.load", "return peerlisten.config.load{file=%q}", "|ECONFIG" },
      { "cert.inspect", "return peerlisten.cert.inspect(%q)", "|EACCES" },
    }
    for _, u in ipairs(unreadable) do
      cases[#cases + 1] = u[1]
      it("an unreadable file given to " .. u[1], function()
        local path = dir .. "/unreadable"
        writefile(path, "x")
        os.execute("chmod 000 " .. q(path))
        local before = listing(dir)
        local out = as_other(u[2]:format(path, pki.key))
        assert.equal(before, listing(dir))
        os.remove(path)
        assert.matches("true|nil|open " .. path .. ": permission denied" .. u[3], out, 1, true)
      end)
    end
  end)

  -- Files that could block the event-loop thread (a FIFO) or exhaust memory (/dev/zero): refused at
  -- once as "not a regular file". Each runs in a child with a time and memory limit so that a
  -- regression (a hang, an endless read) fails its case instead of wedging the suite.
  describe("blocking and endless files", function()
    local function child(lua_code)
      local script = dir .. "/../" .. dir:match("[^/]+$") .. ".child.lua"
      writefile(script, "package.path = './lua/?.lua;./lua/?/init.lua;' .. package.path\n"
        .. "package.cpath = './?.so;' .. package.cpath\nlocal peerlisten = require 'peerlisten'\n"
        .. "local core = require 'peerlisten.core'\n"
        .. "local a, b, c = (function() " .. lua_code .. " end)()\n"
        .. "io.write(tostring(a), '|', tostring(b), '|', tostring(c))\n")
      local out = sh(("ulimit -v 1000000; timeout -s KILL 5 lua5.4 %s 2>&1; echo \"|rc=$?\""):format(q(script)))
      os.remove(script)
      return out
    end
    local function notreg(path) return ("open %s: not a regular file"):format(path) end
    -- name, the Lua code run in the child (given the scratch paths), what its output must start with
    local blocking = {
      { "a FIFO as cert_file fails at once, naming the file",
        function() return ("return peerlisten.tls.policy{cert_file=%q, key_file=%q}"):format(f.fifo, pki.key) end,
        function() return "nil|" .. notreg(f.fifo) .. "|ECERT|rc=0" end },
      { "a FIFO as key_file fails at once, naming the file",
        function() return ("return peerlisten.tls.policy{cert_file=%q, key_file=%q}"):format(pki.cert, f.fifo) end,
        function() return "nil|" .. notreg(f.fifo) .. "|ECERT|rc=0" end },
      { "a FIFO as trusted_ca_file fails at once, naming the file",
        function() return ("return peerlisten.tls.policy{cert_file=%q, key_file=%q, trusted_ca_file=%q}")
          :format(pki.cert, pki.key, f.fifo) end,
        function() return "nil|" .. notreg(f.fifo) .. "|ECERT|rc=0" end },
      { "a FIFO as config file: config.load returns nil, message, ECONFIG",
        function() return ("return peerlisten.config.load{file=%q}"):format(f.fifo) end,
        function() return "nil|" .. notreg(f.fifo) .. "|ECONFIG|rc=0" end },
      { "a FIFO given to cert.inspect fails at once",
        function() return ("return peerlisten.cert.inspect(%q)"):format(f.fifo) end,
        function() return "nil|" .. notreg(f.fifo) .. "|" end },
      { "/dev/zero as cert_file fails at once in bounded memory",
        function() return ("return peerlisten.tls.policy{cert_file='/dev/zero', key_file=%q}"):format(pki.key) end,
        function() return "nil|" .. notreg("/dev/zero") .. "|ECERT|rc=0" end },
      { "/dev/zero as config file returns nil, a message, ECONFIG (not 'not enough memory')",
        function() return "return peerlisten.config.load{file='/dev/zero'}" end,
        function() return "nil|" .. notreg("/dev/zero") .. "|ECONFIG|rc=0" end },
      { "a FIFO as crl_file fails only the handshake that reads it; a policy without it keeps serving",
        function() return ([[
          local p = assert(peerlisten.tls.policy{cert_file=%q, key_file=%q, trusted_ca_file=%q, crl_file=%q})
          local q = assert(peerlisten.tls.policy{cert_file=%q, key_file=%q, trusted_ca_file=%q})
          local client = { cert = %q, key = %q }
          local _, reason, msg = core._tls_handshake(p, client)
          return core._tls_handshake(q, client) and "served" or "refused", reason, msg]])
          :format(pki.cert, pki.key, pki.ca, f.fifo, pki.cert, pki.key, pki.ca, pki.cert, pki.key) end,
        function() return "served|crl|" .. notreg(f.fifo) .. "|rc=0" end },
    }
    for _, b in ipairs(blocking) do
      cases[#cases + 1] = b[1]
      it(b[1], function()
        local out = child(b[2]())
        assert.are.equal(1, out:find(b[3](), 1, true), out)
      end)
    end
  end)

  it("has at least 100 cases", function()
    assert.is_true(#cases >= 100, #cases .. " cases")
  end)
end)
