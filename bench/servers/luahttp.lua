-- lua-http benchmark server (Debian lua-http on Lua 5.4; its files come from
-- /usr/share/lua/5.3 on LUA_PATH). Usage: luahttp.lua PORT MODE CERTDIR
-- MODE: plain | tls | mtls | tickets. The TLS context is built here because
-- lua-http's default server context offers no X25519.
local port, mode, dir = tonumber(arg[1]), arg[2], arg[3]
local http_server = require "http.server"
local http_headers = require "http.headers"
local http_tls = require "http.tls"
local openssl_ctx = require "openssl.ssl.context"
local pkey = require "openssl.pkey"
local x509 = require "openssl.x509"
local x509_store = require "openssl.x509.store"

local function slurp (p)
  local f = assert(io.open(p, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local ctx
if mode ~= "plain" then
  ctx = http_tls.new_server_context()
  ctx:setOptions(openssl_ctx.OP_NO_TLSv1 + openssl_ctx.OP_NO_TLSv1_1)
  ctx:setGroups("X25519:P-256")
  assert(ctx:setPrivateKey(pkey.new(slurp(dir .. "/server.key"))))
  assert(ctx:setCertificate(x509.new(slurp(dir .. "/server.crt"))))
  if mode == "mtls" then
    local store = x509_store.new()
    store:add(dir .. "/ca.crt")
    ctx:setStore(store)
    ctx:setVerify(openssl_ctx.VERIFY_PEER + openssl_ctx.VERIFY_FAIL_IF_NO_PEER_CERT)
  end
end

local bulk = string.rep("x", 1 << 20)
local health = '{"health":"true"}'

local server = assert(http_server.listen{
  host = "127.0.0.1", port = port, tls = mode ~= "plain", ctx = ctx, version = 1.1,
  onstream = function (_, stream)
    local req = assert(stream:get_headers())
    local path = req:get(":path")
    local body = path == "/bulk" and bulk or health
    local h = http_headers.new()
    h:append(":status", "200")
    h:append("content-type", "application/json")
    h:append("content-length", tostring(#body))
    stream:write_headers(h, false)
    stream:write_chunk(body, true)
  end,
  onerror = function () end,
})
assert(server:listen())
io.stdout:write("listening\n")
io.stdout:flush()
assert(server:loop())
