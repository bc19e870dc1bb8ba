-- The TLS side under faults and hostile inputs: file reloads that fail for a
-- passing reason (fd exhaustion), files that are not regular files (FIFO,
-- /dev/zero), resumption of a session whose client certificate is no longer
-- acceptable, and Go's key exchange groups and TLS 1.3 suite order.
-- Handshakes run in memory (core._tls_handshake); the real-socket cases are
-- in tls_interop_spec.lua.
local core = require "peerlisten.core"
local helper = require "helper"
local pki_mod = require "support.pki"

local P
local q, sh = helper.q, helper.sh

local function pair(name) return { cert = P:cert(name), key = P:key(name) } end
-- the same pair from memory: the client needs no fd
local function mem_pair(name)
  return { cert_pem = helper.readfile(P:cert(name)), key_pem = helper.readfile(P:key(name)) }
end

local function policy(o)
  o.cert_file = o.cert_file or P:cert("server")
  o.key_file = o.key_file or P:key("server")
  local p, w, code = core.tls_policy(o)
  assert(p, tostring(w) .. " " .. tostring(code))
  return p
end

local function accepted(p, client)
  local ok, info_or_reason, msg = core._tls_handshake(p, client or {})
  assert(ok == true, "rejected: " .. tostring(info_or_reason) .. ": " .. tostring(msg))
  return info_or_reason
end

local function rejected(p, client, reason)
  local ok, r, m, side = core._tls_handshake(p, client)
  assert(ok == false, "accepted")
  assert.are.equal(reason, r, m)
  return m, side
end

local function copy(name, to) P:copy(name, to) end

-- Uses up every free fd of this process (soft RLIMIT_NOFILE lowered first,
-- so that this takes a few dozen files, not thousands); returns a function
-- that gives them back and restores the limit.
local function exhaust_fds()
  local pid = helper.pid()
  local lim = helper.sh(("prlimit --pid %d --nofile --output SOFT,HARD --noheadings"):format(pid))
  local soft, hard = lim:match("(%d+)%s+(%d+)")
  assert(soft, "prlimit printed: " .. lim)
  local highest
  for _, line in ipairs(helper.fd_list()) do
    local n = tonumber(line:match("^(%d+)"))
    if n and (not highest or n > highest) then highest = n end
  end
  assert(os.execute(("prlimit --pid %d --nofile=%d:%s"):format(pid, (highest or 64) + 32, hard)))
  local held = {}
  while true do
    local f = io.open("/dev/null")
    if not f then break end
    held[#held + 1] = f
    assert(#held < 10000, "the fd limit did not take")
  end
  return function()
    for _, f in ipairs(held) do f:close() end
    assert(os.execute(("prlimit --pid %d --nofile=%s:%s"):format(pid, soft, hard)))
  end
end

-- Polls fn() (a handshake outcome) until it returns true or 10 s passed.
local function eventually(fn)
  local deadline = core.walltime() + 10
  repeat
    if fn() then return true end
    sh("sleep 0.1")
  until core.walltime() > deadline
  return false
end

describe("TLS hardening", function()
  setup(function()
    assert(pki_mod.available(), "openssl CLI missing")
    assert(helper.have("prlimit"), "prlimit (util-linux) missing")
    P = pki_mod.new()
  end)
  teardown(function()
    core._tls_clock_shift(0)
    if P then P:cleanup() end
    collectgarbage()
  end)

  describe("a reload that fails for lack of file descriptors is retried", function()
    it("CRL: refused while fds are exhausted, the new CRL applies once they are back", function()
      local live = P:path("emfile.crl")
      copy(P:path("empty.crl"), live)
      local p = policy { trusted_ca_file = P:cert("ca"), crl_file = live }
      accepted(p, pair("client-good"))
      copy(P:path("revoked.crl.der"), live)
      local client = mem_pair("client-good")
      local release = exhaust_fds()
      local ok, reason, msg = core._tls_handshake(p, client)
      release()
      assert.is_false(ok)
      assert.are.equal("crl", reason)
      assert.are.equal(("open %s: too many open files"):format(live), msg)
      -- retried (at most once a second while the file is unchanged)
      assert.is_true(eventually(function()
        local ok2, r2 = core._tls_handshake(p, pair("client-good"))
        return not ok2 and r2 == "revoked"
      end), "the CRL read that failed with EMFILE was never retried")
      rejected(p, pair("client-good"), "revoked")
      accepted(p, pair("client-othercn"))
      p:close()
    end)

    it("cert/key: the old pair is served while fds are exhausted, the new one once they are back", function()
      local dir = P:path("emfile-reload")
      sh("mkdir -p " .. q(dir))
      local cert, key = dir .. "/s.crt", dir .. "/s.key"
      copy(P:cert("server"), cert)
      copy(P:key("server"), key)
      local p = policy { cert_file = cert, key_file = key }
      assert.are.equal("CN=peer1", p:_new_ssl())
      copy(P:cert("server2"), cert)
      copy(P:key("server2"), key)
      local release = exhaust_fds()
      local subject = p:_new_ssl()
      release()
      assert.are.equal("CN=peer1", subject)
      local logs = p:_pending_logs()
      assert.are.equal(1, #logs)
      assert.are.equal("failed to create peer certificate", logs[1].msg)
      assert.are.equal(("open %s: too many open files"):format(cert), logs[1].error)
      assert.is_true(eventually(function() return p:_new_ssl() == "CN=peer2" end),
        "the cert/key read that failed with EMFILE was never retried")
      assert.are.equal("CN=peer2", accepted(p, {}) and p:_new_ssl())
      assert.is_nil(p:_pending_logs())
      p:close()
      helper.rmdir(dir)
    end)

    it("a broken pair keeps the old one, is reported once, and a fixed pair applies at once", function()
      local dir = P:path("broken-reload")
      sh("mkdir -p " .. q(dir))
      local cert, key = dir .. "/s.crt", dir .. "/s.key"
      copy(P:cert("server"), cert)
      copy(P:key("server"), key)
      local p = policy { cert_file = cert, key_file = key }
      helper.writefile(cert, "garbage")
      for _ = 1, 50 do assert.are.equal("CN=peer1", p:_new_ssl()) end
      assert.are.equal(1, #p:_pending_logs())
      -- a fixed file applies at once (its signature changed)
      copy(P:cert("server2"), cert)
      copy(P:key("server2"), key)
      assert.are.equal("CN=peer2", p:_new_ssl())
      p:close()
      helper.rmdir(dir)
    end)
  end)
end)
