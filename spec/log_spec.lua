local log = require "peerlisten.log"
local cjson = require "cjson"

describe("peerlisten.log", function()
  local real_clock = log.clock
  after_each(function() log.clock = real_clock end)

  describe(".new()", function()
    it("writes zap-style JSON lines: level, ts, caller, msg, then fields", function()
      local lines = {}
      log.clock = function() return 1700000000.123456 end
      local l = assert(log.new { sink = function(line) lines[#lines + 1] = line end })
      l:info("starting with peer TLS", { ["tls-info"] = "cert = a, key = b", ["cipher-suites"] = {} })
      assert.equal(1, #lines)
      local line = lines[1]
      assert.matches('^{"level":"info","ts":"2023%-11%-14T22:13:20%.123456Z","caller":"spec/log_spec%.lua:%d+",'
        .. '"msg":"starting with peer TLS","tls%-info":"cert = a, key = b","cipher%-suites":%[%]}$', line)
      local t = cjson.decode(line)
      assert.equal("starting with peer TLS", t.msg)
    end)

    it("writes fields in etcd's order, then the rest sorted", function()
      local lines = {}
      local l = assert(log.new { sink = function(line) lines[#lines + 1] = line end, caller = false })
      l:warn("closing peer listener", { zeta = 1, error = "boom", address = "https://127.0.0.1:1", alpha = true })
      assert.matches('"msg":"closing peer listener","address":"https://127.0.0.1:1","error":"boom",'
        .. '"alpha":true,"zeta":1}$', lines[1])
    end)

    it("encodes arrays, nested tables, paths and control characters", function()
      local lines = {}
      local l = assert(log.new { sink = function(line) lines[#lines + 1] = line end, caller = false })
      l:info("x", { ["listen-peer-urls"] = { "http://127.0.0.1:1", "http://127.0.0.1:2" },
        path = "/tmp/a b/\"q\"\n", n = 2.5, m = { b = 1, a = 2 } })
      assert.matches('"path":"/tmp/a b/\\"q\\"\\n"', lines[1], 1, true)
      assert.matches('"listen-peer-urls":["http://127.0.0.1:1","http://127.0.0.1:2"]', lines[1], 1, true)
      assert.matches('"m":{"a":2,"b":1},"n":2.5', lines[1], 1, true)
      local t = cjson.decode(lines[1])
      assert.equal('/tmp/a b/"q"\n', t.path)
    end)

    it("filters by level", function()
      local lines = {}
      local l = assert(log.new { level = "warn", sink = function(line) lines[#lines + 1] = line end })
      l:debug("d"); l:info("i"); l:warn("w"); l:error("e"); l:fatal("f")
      assert.equal(3, #lines)
      assert.is_true(l:enabled("warn"))
      assert.is_false(l:enabled("info"))
    end)

    it("writes console lines", function()
      local lines = {}
      log.clock = function() return 0 end
      local l = assert(log.new { format = "console", caller = false,
        sink = function(line) lines[#lines + 1] = line end })
      l:warn("closing peer listener", { address = "a" })
      assert.equal('1970-01-01T00:00:00.000000Z\tWARN\t-\tclosing peer listener\t{"address":"a"}', lines[1])
    end)

    it("appends to a file path", function()
      local path = os.tmpname()
      local l = assert(log.new { sink = path })
      l:info("one"); l:info("two")
      l:close(); l:close()
      local fh = assert(io.open(path))
      local text = fh:read("a")
      fh:close()
      os.remove(path)
      local _, n = text:gsub("\n", "")
      assert.equal(2, n)
    end)

    it("fails on bad options with (nil, message, ECONFIG)", function()
      local l, err, code = log.new { level = "loud" }
      assert.is_nil(l); assert.matches("unknown log level", err); assert.equal("ECONFIG", code)
      l, err, code = log.new { format = "xml" }
      assert.is_nil(l); assert.matches("unknown log format", err); assert.equal("ECONFIG", code)
      l, err, code = log.new { sink = "/nonexistent-dir/x/y.log" }
      assert.is_nil(l); assert.matches("cannot open log output", err); assert.equal("ECONFIG", code)
      l, err, code = log.new { sink = 42 }
      assert.is_nil(l); assert.is_string(err); assert.equal("ECONFIG", code)
    end)

    it("samples as zap: first 100 per second per level+msg, then every 100th", function()
      local n = 0
      local now = 1000
      log.clock = function() return now end
      local l = assert(log.new { sink = function() n = n + 1 end })
      for _ = 1, 1000 do l:warn("rejected connection", { error = "EOF" }) end
      assert.equal(100 + 9, n)
      l:warn("other message")
      assert.equal(110, n)
      now = 1001
      for _ = 1, 50 do l:warn("rejected connection") end
      assert.equal(160, n)
      local all = 0
      local u = assert(log.new { sampling = false, sink = function() all = all + 1 end })
      for _ = 1, 300 do u:warn("rejected connection") end
      assert.equal(300, all)
    end)
  end)

  describe("invalid UTF-8 (client-controlled bytes such as a TLS server name)", function()
    it("keeps every JSON line valid UTF-8: each invalid byte becomes \\ufffd, as zap writes it", function()
      local lines = {}
      local l = assert(log.new { sink = function(line) lines[#lines + 1] = line end, caller = false })
      local sni = "h\xffst\xc3.\xe2\x82x\xed\xa0\x80\xc0\xaf\xf4\x90\x80\x80"
      l:warn("rejected connection", { ["server-name"] = sni, [sni] = "k", nested = { sni } })
      assert.is_truthy(utf8.len(lines[1]), lines[1])
      local t = cjson.decode(lines[1])
      local want = "h\u{fffd}st\u{fffd}.\u{fffd}\u{fffd}x" .. ("\u{fffd}"):rep(3) .. ("\u{fffd}"):rep(2)
        .. ("\u{fffd}"):rep(4)
      assert.equal(want, t["server-name"])
      assert.equal("k", t[want])
      assert.equal(want, t.nested[1])
      assert.matches('"server-name":"h\\ufffdst', lines[1], 1, true)
    end)

    it("#interop keeps a listener's rejection line valid when a client sends SNI bytes >= 0x80", function()
      local helper = require "helper"
      local peerlisten = require "peerlisten"
      if not helper.have("openssl") then pending("openssl not installed") return end
      local dir = helper.tmpdir()
      local cert, key = helper.selfsigned(dir)
      local lines = {}
      local l = assert(log.new { sink = function(line) lines[#lines + 1] = line end, caller = false })
      local pol = assert(peerlisten.tls.policy { cert_file = cert, key_file = key, trusted_ca_file = cert,
        client_cert_auth = true })
      local lis = assert(peerlisten.listen { url = "https://127.0.0.1:0", tls = pol, logger = l })
      lis:serve(function(c) c:close() end)
      local _, port = lis:addr()
      local pid = helper.bg(("printf '' | openssl s_client -connect 127.0.0.1:%d -servername \"$(printf 'h\\377\\376st')\""
        .. " >/dev/null 2>&1"):format(port), dir .. "/out")
      local ok = helper.wait_until(function() return #lines > 0 end, 20)
      helper.kill(pid)
      local client_out = helper.readfile(dir .. "/out")
      lis:close()
      pol:close()
      helper.rmdir(dir)
      assert.is_true(ok, "no rejection logged; openssl s_client said: " .. client_out)
      assert.is_truthy(utf8.len(lines[1]), lines[1])
      assert.equal("h\u{fffd}\u{fffd}st", cjson.decode(lines[1])["server-name"])
    end)

    it("leaves valid multi-byte UTF-8 as it is", function()
      local s = "gr\u{fc}\u{df}e \u{65e5}\u{672c} \u{1f512}"
      assert.equal('"' .. s .. '"', log.encode(s))
    end)
  end)

  describe(".capture()", function()
    it("records entries as tables", function()
      local l = log.capture()
      l:warn("closing peer listener", { address = "x", error = "y" })
      l:debug("dbg")
      assert.equal(2, #l.entries)
      assert.same({ address = "x", error = "y" }, l.entries[1].fields)
      assert.equal("warn", l.entries[1].level)
      assert.equal(1, #l:find("dbg", "debug"))
      assert.equal(0, #l:find("dbg", "warn"))
    end)

    it("hook() forwards C-side events", function()
      local l = log.capture()
      local hook = l:hook()
      assert.equal(hook, l:hook())
      hook("warn", "rejected connection", { ["remote-addr"] = "127.0.0.1:5", reason = "not_tls" })
      hook("bogus", "x", nil)
      assert.equal("rejected connection", l.entries[1].msg)
      assert.equal("not_tls", l.entries[1].fields.reason)
      assert.equal("warn", l.entries[2].level)
    end)
  end)

  describe(":hook()", function()
    it("names the listener URL as the caller of C-side events, never [C]:-1", function()
      local lines = {}
      local l = assert(log.new { sink = function(line) lines[#lines + 1] = line end })
      l:hook("https://127.0.0.1:2380")("warn", "rejected connection", { reason = "not_tls" })
      l:hook()("error", "uncaught error in a peerlisten coroutine", { error = "boom" })
      assert.equal("listener https://127.0.0.1:2380", cjson.decode(lines[1]).caller)
      assert.equal("peerlisten.core", cjson.decode(lines[2]).caller)
      assert.equal(l:hook("x"), l:hook("x"))
      assert.are_not.equal(l:hook("x"), l:hook("y"))
      assert.is_nil(table.concat(lines):find("[C]", 1, true))
    end)

    it("is what a real listener's event carries", function()
      local peerlisten = require "peerlisten"
      local helper = require "helper"
      local lines = {}
      local logger = assert(log.new { sink = function(line) lines[#lines + 1] = line end, sampling = false })
      local l = assert(peerlisten.listen { url = "http://127.0.0.1:0", logger = logger })
      local _, port = l:addr()
      l:serve(function() error("handler boom") end)
      local c = helper.client("127.0.0.1", port)
      assert.is_true(helper.wait_until(function() return #lines > 0 end, 10))
      c:close()
      l:close()
      local e = cjson.decode(lines[1])
      assert.equal("connection handler failed", e.msg)
      assert.equal("listener http://127.0.0.1:0", e.caller)
      assert.matches("handler boom", e.error)
    end)

    it("writes console lines with the same caller", function()
      local lines = {}
      log.clock = function() return 0 end
      local l = assert(log.new { format = "console", sink = function(line) lines[#lines + 1] = line end })
      l:hook("unix://p.sock")("warn", "rejected connection", { reason = "eof" })
      assert.equal('1970-01-01T00:00:00.000000Z\tWARN\tlistener unix://p.sock\trejected connection\t{"reason":"eof"}',
        lines[1])
    end)
  end)

  describe(".wrap()", function()
    it("accepts loggers, nil and functions", function()
      local c = log.capture()
      assert.equal(c, log.wrap(c))
      log.wrap(nil):warn("nothing")
      local got
      log.wrap(function(level, msg, fields) got = { level, msg, fields } end):warn("m", { a = 1 })
      assert.same({ "warn", "m", { a = 1 } }, got)
      assert.has_error(function() log.wrap(5) end)
    end)
  end)

  describe(".timestamp()", function()
    it("formats microseconds in UTC", function()
      assert.equal("2009-02-13T23:31:30.000001Z", log.timestamp(1234567890.000001))
      assert.equal("1970-01-01T00:00:01.000000Z", log.timestamp(0.9999999))
    end)
  end)
end)
