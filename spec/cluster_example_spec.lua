-- spec/cluster_example_spec.lua: examples/bootstrap.lua goes from a description to a healthy
-- three-member etcd 3.4 cluster on this machine, and stops it again.
local helper = require "helper"

local NOPRELOAD = "unset LD_PRELOAD ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS; "

describe("examples/bootstrap.lua #slow #interop", function()
  it("bootstraps a healthy cluster (put/get) and stops every member", function()
    for _, tool in ipairs { "etcd", "etcdctl" } do
      if not helper.have(tool) then
        pending(tool .. " (etcd-server / etcd-client package) not installed")
        return
      end
    end
    local tmp = helper.tmpdir()
    finally(function() helper.rmdir(tmp) end)
    -- three members with their own loopback address each; ports free a moment ago
    local lines = { "name: example-spec", 'etcd-version: "3.4"', "members:" }
    for i = 1, 3 do
      local ip = "127.0.0.1"
      lines[#lines + 1] = ("  - name: e%d\n    addresses: [%s]\n    peer-urls: [https://%s:%d]\n"
        .. "    client-urls: [https://%s:%d]"):format(i, ip, ip, helper.free_port(), ip, helper.free_port())
    end
    local f = assert(io.open(tmp .. "/desc.yaml", "w"))
    f:write(table.concat(lines, "\n"), "\n")
    f:close()
    local out = helper.sh(NOPRELOAD .. ("lua5.4 examples/bootstrap.lua '%s/desc.yaml' --out '%s/c' 2>&1; echo rc=$?")
      :format(tmp, tmp))
    assert.matches("healthy: 3 of 3 members", out)
    assert.matches("get bootstrap%-example %-> ok", out)
    assert.matches("\nOK\nrc=0\n$", out)
    -- every member it started is gone
    for i = 1, 3 do
      local pid = tonumber(helper.readfile(("%s/c/e%d/etcd.pid"):format(tmp, i)))
      assert.is_number(pid)
      assert.is_false(os.execute(("kill -0 %d 2>/dev/null"):format(pid)) == true, "member still running")
    end
  end)
end)
