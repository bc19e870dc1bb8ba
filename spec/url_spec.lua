local url = require "peerlisten.url"

describe("peerlisten.url", function()
  describe(".parse()", function()
    it("parses http and https host:port", function()
      local u = assert(url.parse("https://127.0.0.1:2380"))
      assert.same({ url = "https://127.0.0.1:2380", scheme = "https", host = "127.0.0.1", port = 2380 }, u)
      u = assert(url.parse("  http://[::1]:0 "))
      assert.same({ url = "http://[::1]:0", scheme = "http", host = "::1", port = 0 }, u)
      u = assert(url.parse("HTTP://localhost:2380"))
      assert.equal("http://localhost:2380", u.url)
      assert.equal("localhost", u.host)
    end)

    it("takes the unix socket path from the URL host, as etcd does", function()
      local u = assert(url.parse("unix://name.sock:1"))
      assert.equal("name.sock:1", u.path)
      assert.equal("unix", u.scheme)
      u = assert(url.parse("unixs://localhost:19070"))
      assert.equal("localhost:19070", u.path)
    end)

    it("binds an absolute path for unix:///abs/path (not etcd's abstract socket)", function()
      local u = assert(url.parse("unix:///abs/dir/peer.sock"))
      assert.equal("/abs/dir/peer.sock", u.path)
      assert.equal("unix:///abs/dir/peer.sock", u.url)
    end)

    local bad = {
      { "http://127.0.0.1", 'URL address does not have the form "host:port": http://127.0.0.1' },
      { "http://127.0.0.1:19080/path", "URL must not contain a path: http://127.0.0.1:19080/path" },
      { "http://127.0.0.1:19080/", "URL must not contain a path: http://127.0.0.1:19080/" },
      { "ftp://127.0.0.1:19080", "URL scheme must be http, https, unix, or unixs: ftp://127.0.0.1:19080" },
      { "mailto:x@y", "URL scheme must be http, https, unix, or unixs: mailto:x@y" },
      { "http://[::1", 'parse "http://[::1": missing \']\' in host' },
      { "://127.0.0.1:19080", 'parse "://127.0.0.1:19080": missing protocol scheme' },
      { "127.0.0.1:2380", 'parse "127.0.0.1:2380": first path segment in URL cannot contain colon' },
      { "http://::1:80", 'URL address does not have the form "host:port": http://::1:80' },
      { "http://127.0.0.1:abc", 'parse "http://127.0.0.1:abc": invalid port ":abc" after host' },
      { "", "URL scheme must be http, https, unix, or unixs: " },
      { "unix://", "unix socket URL has no socket path: unix://" },
    }
    for _, case in ipairs(bad) do
      it("rejects " .. case[1] .. " with etcd's error", function()
        local u, err, code = url.parse(case[1])
        assert.is_nil(u)
        assert.equal(case[2], err)
        assert.equal("EURL", code)
      end)
    end

    it("raises on a non-string", function()
      assert.has_error(function() url.parse(1) end)
    end)
  end)

  describe(".parse_list()", function()
    it("splits on commas, trims and keeps order by default", function()
      local l = assert(url.parse_list("http://127.0.0.1:2, http://127.0.0.1:1"))
      assert.same({ "http://127.0.0.1:2", "http://127.0.0.1:1" }, url.strings(l))
    end)

    it("sorts lexicographically and de-duplicates on request", function()
      local l = assert(url.parse_list("https://localhost:19032,https://127.0.0.1:19031,https://127.0.0.1:19031",
        { sort = true, unique = true }))
      assert.same({ "https://127.0.0.1:19031", "https://localhost:19032" }, url.strings(l))
      l = assert(url.parse_list({ "http://127.0.0.1:2", "http://127.0.0.1:2" }, { sort = true }))
      assert.equal(2, #l)
    end)

    it("fails on an empty list, a trailing comma and non-strings", function()
      assert.same({ nil, "no valid URLs given", "EURL" }, { url.parse_list({}) })
      local l, err, code = url.parse_list("http://127.0.0.1:1,")
      assert.is_nil(l)
      assert.equal("URL scheme must be http, https, unix, or unixs: ", err)
      assert.equal("EURL", code)
      l, err, code = url.parse_list({ 5 })
      assert.is_nil(l)
      assert.matches("not a string", err)
      assert.equal("EURL", code)
    end)
  end)

  describe(".check_bind()", function()
    it("accepts IP literals, localhost and unix URLs", function()
      for _, s in ipairs { "http://127.0.0.1:1", "http://[::1]:1", "http://[2001:db8::8:1]:1",
        "http://0.0.0.0:1", "http://localhost:1", "unix://x:1", "http://[::ffff:1.2.3.4]:1" } do
        assert.is_true(url.check_bind(assert(url.parse(s))), s)
      end
    end)

    it("rejects names with etcd's error", function()
      local ok, err, code = url.check_bind(assert(url.parse("http://example.com:19080")))
      assert.is_nil(ok)
      assert.equal("expected IP in URL for binding (http://example.com:19080)", err)
      assert.equal("EURL", code)
      assert.is_nil((url.check_bind(assert(url.parse("http://010.0.0.1:1")))))
      assert.is_nil((url.check_bind(assert(url.parse("http://1.2.3:1")))))
    end)
  end)
end)
