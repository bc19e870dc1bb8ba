-- A smoke run of the benchmark harness (bench/run), so it
-- cannot rot. One short round of scenarios 1 (TLS 1.3 handshakes) and 7 (plain
-- accept/response/close) against nginx, Go crypto/tls and peerlisten; the real
-- numbers come from `make bench`, not from here.
local helper = require "helper"

local have = helper.have

local function missing ()
  for _, c in ipairs{ "go", "taskset", "openssl", "curl" } do
    if not have(c) then return c end
  end
  if not io.open("/usr/sbin/nginx") then return "nginx (nginx-light)" end
  local ok = pcall(require, "cjson") and pcall(require, "socket") and pcall(require, "lfs")
  if not ok then return "lua-cjson, lua-socket or lua-filesystem" end
end

describe("bench #bench #slow", function ()
  describe("bench/run", function ()
    it("prints its usage", function ()
      local out = helper.sh("BENCH_NO_INSTALL=1 bench/run --help 2>&1")
      assert.matches("--scenario", out, 1, true)
    end)

    it("runs one short round of scenarios 1 and 7 and measures every server", function ()
      local why = missing()
      if why then
        pending("bench smoke skipped: " .. why .. " is missing")
        return
      end
      local servers = { "nginx", "go", "peerlisten" }
      local dir = helper.tmpdir()
      local json = dir .. "/bench.json"
      local out = helper.sh("BENCH_NO_INSTALL=1 bench/run --scenario 1,7 --rounds 1 --seconds 1 --no-write --no-ir"
        .. " --servers " .. table.concat(servers, ",") .. " --json " .. json .. " 2>" .. dir .. "/stderr")
      local f = io.open(json)
      local text = f and f:read("a")
      if f then f:close() end
      local stderr = io.open(dir .. "/stderr"):read("a")
      helper.rmdir(dir)
      assert.is_truthy(text, "no JSON written; stderr:\n" .. stderr)
      local doc = require("cjson").decode(text)
      local res = doc.results
      for _, scen in ipairs{ "1", "7" } do
        for _, name in ipairs(servers) do
          local r = res[scen] and res[scen][name]
          assert.is_table(r, "scenario " .. scen .. ": no result for " .. name)
          local m = r.rounds and r.rounds[1]
          assert.is_table(m, "scenario " .. scen .. ", " .. name .. ": no round: " .. tostring(r.err)
            .. "\n" .. stderr)
          assert.is_true(m.ops > 0, "scenario " .. scen .. ", " .. name .. ": no operation completed")
          assert.is_true(m.errors <= m.ops // 100, "scenario " .. scen .. ", " .. name .. ": "
            .. m.errors .. " errors, first: " .. tostring(m.first_error))
          assert.is_number(m.value)
        end
        -- no resumption can happen in these scenarios; nginx and Go count it server-side
        if scen == "1" then
          assert.equals(0, res[scen].nginx.rounds[1].server_resumed)
          assert.equals(0, res[scen].go.rounds[1].server_resumed)
        end
      end
      assert.matches("| 1. TLS 1.3 full handshake |", out, 1, true)
      -- every server process was stopped by its pid
      assert.is_true(#doc.pids >= #servers)
      for _, pid in ipairs(doc.pids) do
        local st = io.open("/proc/" .. pid .. "/stat")
        local state = st and st:read("a"):match("%) (%a)")
        if st then st:close() end
        assert.is_true(state == nil or state == "Z", "server pid " .. pid .. " still running")
      end
    end)
  end)
end)
