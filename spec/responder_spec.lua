local responder = require "peerlisten.responder"

describe("peerlisten.responder", function()
  -- a fake connection fed with chunks
  local function fake(chunks)
    local c = { written = {}, closed = false }
    function c.read() return table.remove(chunks, 1) end
    function c:write(s) self.written[#self.written + 1] = s; return true end
    function c:close() self.closed = true end
    return c
  end

  it("answers /health, /version and 404 with keep-alive and pipelining in one write", function()
    local c = fake { "GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /version HTTP/1.1\r\n\r\n"
      .. "GET /nope HTTP/1.1\r\n\r\n" }
    responder.handler()(c)
    assert.equal(1, #c.written)
    local w = c.written[1]
    assert.matches('^HTTP/1.1 200 OK\r\nContent%-Type: application/json\r\nContent%-Length: 17\r\n\r\n'
      .. '{"health":"true"}', w)
    assert.matches('"peerlisten":"' .. require("peerlisten")._VERSION .. '"', w, 1, true)
    assert.matches("HTTP/1.1 404 Not Found", w, 1, true)
    assert.is_true(c.closed)
  end)

  it("handles split requests, bodies, Connection: close, HTTP/1.0 and garbage", function()
    local c = fake { "GET /hea", "lth HTTP/1.1\r\n", "\r\n", "POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nab",
      "cGET /health HTTP/1.1\r\nConnection: close\r\n\r\nGET /health HTTP/1.1\r\n\r\n" }
    responder.handler()(c)
    assert.equal(3, #c.written)
    assert.matches("^HTTP/1.1 200 OK", c.written[1])
    assert.matches("^HTTP/1.1 405", c.written[2])
    assert.matches("Connection: close", c.written[3], 1, true)
    c = fake { "GET /health HTTP/1.0\r\n\r\n", "GET /health HTTP/1.0\r\n\r\n" }
    responder.handler()(c)
    assert.equal(1, #c.written)
    c = fake { "hello\r\n\r\n" }
    responder.handler()(c)
    assert.matches("^HTTP/1.1 400", c.written[1])
  end)

  it("reads header names in any case and ignores look-alike headers", function()
    local c = fake { "GET /health HTTP/1.0\r\nCookie: a\r\nCONNECTION: Keep-Alive\r\nC\r\n\r\n"
      .. "POST /health?x=1 HTTP/1.1\r\ncontent-LENGTH: 2\r\nContent-Type: x\r\n\r\nzz"
      .. "HEAD /version?y HTTP/1.1\r\nconnection: close\r\n\r\nGET /health HTTP/1.1\r\n\r\n" }
    responder.handler()(c)
    assert.equal(1, #c.written)
    local w = c.written[1]
    local _, n = w:gsub("HTTP/1%.1 ", "")
    assert.equal(3, n)
    assert.matches("^HTTP/1.1 200 OK\r\n.-\r\n\r\n{\"health\":\"true\"}HTTP/1.1 405", w)
    assert.matches("HTTP/1.1 200 OK\r\nContent%-Type: application/json\r\nContent%-Length: %d+\r\n"
      .. "Connection: close\r\n\r\n$", w)
    assert.is_true(c.closed)
  end)
end)
