local core = require "peerlisten.core"
local helper = require "helper"

describe("peerlisten.core", function()
  local fds
  setup(function() helper.warm(); fds = helper.fd_count() end)
  teardown(function() helper.assert_fds(fds) end)

  it("loads and exports only luaopen_peerlisten_core", function()
    assert.is_table(core)
    local out = helper.sh("nm -D --defined-only peerlisten/core.so")
    local syms = {}
    for s in out:gmatch("%s[TDBRV]%s+(%S+)") do syms[#syms + 1] = s end
    assert.are.same({ "luaopen_peerlisten_core" }, syms)
  end)

  describe("spawn()", function()
    it("runs the function at once with its arguments", function()
      local got
      local co = core.spawn(function(a, b) got = a + b end, 1, 2)
      assert.are.equal(3, got)
      assert.are.equal("thread", type(co))
    end)

    it("logs errors with a traceback through the log hook", function()
      local entries = {}
      local old = core.set_log_hook(function(level, msg, fields)
        entries[#entries + 1] = { level = level, msg = msg, fields = fields }
      end)
      core.spawn(function() error("boom") end)
      core.set_log_hook(old)
      assert.are.equal(1, #entries)
      assert.are.equal("error", entries[1].level)
      assert.matches("boom", entries[1].fields.error)
      assert.matches("stack traceback", entries[1].fields.error)
    end)
  end)

  describe("sleep()", function()
    it("blocks outside coroutines by driving the loop", function()
      local t0 = os.clock()
      core.sleep(0.01)
      assert.is_true(os.clock() - t0 >= 0)
    end)

    it("yields inside spawned coroutines; run() returns when work is done", function()
      local order = {}
      core.spawn(function() core.sleep(0.06); order[#order + 1] = "b" end)
      core.spawn(function() core.sleep(0.01); order[#order + 1] = "a" end)
      assert.are.same({}, order)
      core.run()
      assert.are.same({ "a", "b" }, order)
    end)

    it("treats a huge duration as forever, not as zero", function()
      -- a child process: a coroutine sleeping "forever" would pin this loop
      local script = "package.cpath = './?.so;' .. package.cpath; " ..
        "local core = require 'peerlisten.core'; local woke = false; " ..
        "core.spawn(function() core.sleep(1e30); woke = true end); " ..
        "core.spawn(function() core.sleep(math.huge); woke = true end); " ..
        "core.step(0.05); core.step(0); io.write(tostring(woke)); os.exit(0)"
      local out = helper.sh("env -u LD_PRELOAD timeout 10 lua5.4 -e \"" .. script .. "\" 2>&1")
      assert.are.equal("false", out)
    end)

    it("resumes coroutines that yield bare on the next turn", function()
      local n = 0
      core.spawn(function() coroutine.yield(); n = n + 1 end)
      assert.are.equal(0, n)
      core.run()
      assert.are.equal(1, n)
    end)
  end)

  describe("step()", function()
    it("runs one turn and reports whether work is left", function()
      local done = false
      core.spawn(function() core.sleep(0.01); done = true end)
      while not done do core.step(0.1) end
      assert.is_false(core.step(0))
    end)

    it("waits up to a huge timeout for the next event", function()
      local done = false
      core.spawn(function() core.sleep(0.02); done = true end)
      core.step(1e30)
      assert.is_true(done)
    end)
  end)

  describe("stop()", function()
    it("makes run() return", function()
      core.spawn(function() core.sleep(0.01); core.stop() end)
      local other = false
      core.spawn(function() core.sleep(0.5); other = true end)
      core.run()
      assert.is_false(other)
      core.run()
      assert.is_true(other)
    end)
  end)
end)
