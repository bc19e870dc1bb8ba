local core = require "peerlisten.core"
local helper = require "helper"

local function raise(name)
  os.execute(("kill -%s %d"):format(name:sub(4), helper.pid()))
end

describe("core.on_signal", function()
  local fds
  setup(function()
    helper.warm()
    core.on_signal("SIGUSR1", function() end):close()   -- libuv's signal pipe, opened once per loop
    core.step(0)
    fds = helper.fd_count()
  end)
  teardown(function() helper.assert_fds(fds) end)

  it("calls the function on the loop with the signal's name, each time", function()
    local got = {}
    local h = core.on_signal("SIGUSR1", function(name) got[#got + 1] = name end)
    raise("SIGUSR1")
    assert.is_true(helper.wait_until(function() return #got == 1 end))
    raise("SIGUSR1")
    assert.is_true(helper.wait_until(function() return #got == 2 end))
    assert.are.same({ "SIGUSR1", "SIGUSR1" }, got)
    h:close()
  end)

  it("does not keep the loop alive", function()
    local h = core.on_signal("SIGUSR2", function() end)
    assert.is_false(core.step(0))
    assert.is_true(core.run())   -- returns at once
    h:close()
  end)

  it("keeps running after the function raises", function()
    local n = 0
    local h = core.on_signal("SIGUSR2", function() n = n + 1; error("handler failed") end)
    raise("SIGUSR2")
    assert.is_true(helper.wait_until(function() return n == 1 end))
    raise("SIGUSR2")
    assert.is_true(helper.wait_until(function() return n == 2 end))
    h:close()
  end)

  it("raises on an unknown signal name or a missing function", function()
    assert.has_error(function() core.on_signal("SIGKILL", function() end) end)
    assert.has_error(function() core.on_signal("SIGUSR1") end)
    assert.has_error(function() core.on_signal(nil, function() end) end)
  end)

  it("close is idempotent, <close> closes, tostring says closed", function()
    local h = core.on_signal("SIGHUP", function() end)
    assert.matches("^peerlisten.Signal %(%d+%)$", tostring(h))
    h:close(); h:close()
    assert.are.equal("peerlisten.Signal (closed)", tostring(h))
    local seen
    do
      local h2 <close> = core.on_signal("SIGHUP", function() end)
      seen = h2
    end
    assert.are.equal("peerlisten.Signal (closed)", tostring(seen))
    seen = nil   -- luacheck: ignore 311
    collectgarbage(); collectgarbage()
  end)

  it("close restores the default disposition", function()
    -- a child: after close, SIGUSR1 kills it as it would any process
    local script = "package.cpath = './?.so;' .. package.cpath; " ..
      "local core = require 'peerlisten.core'; " ..
      "local f = io.open('/proc/self/stat'); local pid = f:read('n'); f:close(); " ..
      "local h = core.on_signal('SIGUSR1', function() end); h:close(); core.step(0); " ..
      "os.execute('kill -USR1 ' .. pid); core.step(0.2); io.write('survived')"
    local out = helper.sh("env -u LD_PRELOAD timeout 10 lua5.4 -e \"" .. script .. "\" 2>/dev/null; echo \" rc=$?\"")
    assert.are.equal(" rc=138\n", out)   -- 128 + SIGUSR1
  end)
end)

describe("core.walltime", function()
  it("is the wall clock in seconds with a fraction", function()
    local t = core.walltime()
    assert.is_true(math.abs(t - os.time()) < 2)
    local later
    repeat later = core.walltime() until later ~= t
    assert.is_true(later > t and later - t < 1)
    local fraction = false
    for _ = 1, 1000 do
      local x = core.walltime()
      if x ~= math.floor(x) then fraction = true break end
    end
    assert.is_true(fraction)
  end)
end)
