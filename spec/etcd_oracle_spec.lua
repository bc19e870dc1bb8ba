-- Re-runs a few recorded cases of spec/fixtures/etcd34_cases.lua through the
-- real etcd binary, so that the fixture the check/config specs compare against
-- cannot drift from what etcd actually does.
local oracle = require "support.etcd_oracle"
local helper = require "helper"

local SAMPLE = {
  "one http URL",
  "port 70000",
  "--socket-reuse-port",
  "http URL + mismatched cert/key (after listeners)",
  "empty env ETCD_PEER_CERT_FILE= with the flag",
  "listen-peer-urls as a list",
  "zap to a path under a regular file",
  "allowed CN and hostname both (https)",
}

local pid_alive = helper.alive

describe("etcd oracle #slow #etcd", function()
  local cases = dofile("spec/fixtures/etcd34_cases.lua")
  local by_name = {}
  for _, c in ipairs(cases) do by_name[c.name] = c end

  it("the fixture holds at least 50 recorded cases, each with etcd's verdict", function()
    assert.is_true(#cases >= 50)
    for _, c in ipairs(cases) do
      assert.is_string(c.name)
      assert.truthy(({ started = true, usage = true, failed = true })[c.etcd.outcome], c.name)
      if c.etcd.outcome ~= "started" then
        assert.is_number(c.etcd.exit, c.name)
        assert.is_string(c.etcd.message, c.name)
      end
    end
  end)

  describe("re-run", function()
    local O
    setup(function()
      if oracle.available() then O = oracle.new() end
    end)
    teardown(function()
      if O then O:cleanup() end
    end)

    for _, name in ipairs(SAMPLE) do
      it(name, function()
        if not O then
          pending("etcd not installed at " .. oracle.ETCD .. " (Debian etcd-server)")
          return
        end
        local case = assert(by_name[name], "case missing from the fixture: " .. name)
        local r = O:run(case)
        assert.equal(case.etcd.outcome, r.outcome, r.stderr)
        assert.equal(case.etcd.exit, r.exit)
        -- which listener logs first is up to etcd's goroutines: compare the message of failures only
        if case.etcd.outcome ~= "started" then assert.equal(case.etcd.message, r.message) end
        -- the harness leaves nothing behind
        if r.pid then assert.is_false(pid_alive(r.pid)) end
        assert.is_nil(io.open(r.dir .. "/stderr"))
      end)
    end
  end)
end)
