local helper = require "helper"

local ROCKSPEC = "rockspec/peerlisten-scm-1.rockspec"

local function load_rockspec()
  local env = {}
  local chunk = assert(loadfile(ROCKSPEC, "t", env))
  chunk()
  return env
end

local function ls(pattern)
  local out = {}
  for line in helper.sh("ls " .. pattern .. " 2>/dev/null"):gmatch("[^\n]+") do out[#out + 1] = line end
  table.sort(out)
  return out
end

describe("rockspec", function()
  it("is a 3.0 builtin rockspec with OPENSSL and LIBUV external dependencies", function()
    local r = load_rockspec()
    assert.are.equal("3.0", r.rockspec_format)
    assert.are.equal("scm-1", r.version)
    assert.are.equal("builtin", r.build.type)
    assert.is_table(r.external_dependencies.OPENSSL)
    assert.is_table(r.external_dependencies.LIBUV)
    assert.are.same({ "lua >= 5.4, < 5.5" }, r.dependencies)
    assert.are.same({ type = "busted" }, r.test)
  end)

  it("lists exactly csrc/*.c as the sources of peerlisten.core", function()
    local r = load_rockspec()
    local sources = {}
    for _, s in ipairs(r.build.modules["peerlisten.core"].sources) do sources[#sources + 1] = s end
    table.sort(sources)
    assert.are.same(ls("csrc/*.c"), sources)
  end)

  it("lists Lua modules that exist, and every module of lua/peerlisten", function()
    local r = load_rockspec()
    local listed = {}
    for name, v in pairs(r.build.modules) do
      if type(v) == "string" then
        assert.is_truthy(io.open(v), name .. ": " .. v .. " is missing")
        listed[v] = true
      end
    end
    for _, f in ipairs(ls("lua/peerlisten/*.lua")) do
      assert.is_true(listed[f] or false, f .. " is not in the rockspec")
    end
  end)

  it("#slow builds and installs offline with luarocks make into a temporary tree", function()
    if not helper.sh("command -v luarocks"):match("luarocks") then
      pending("luarocks is not installed")
      return
    end
    -- built from a copy: luarocks writes objects and peerlisten/core.so into
    -- the source directory, which would replace the in-tree test build
    local tree, src = helper.tmpdir(), helper.tmpdir()
    helper.sh(("cp -r csrc lua bin rockspec '%s'"):format(src))
    local out = helper.sh(("cd '%s' && luarocks --lua-version=5.4 make --tree '%s' --deps-mode=none %s 2>&1; echo rc=$?")
      :format(src, tree, ROCKSPEC))
    local ok = out:match("rc=0\n$") ~= nil
    local so = helper.sh(("find '%s' -name core.so -path '*peerlisten*'"):format(tree))
    local syms = so ~= "" and helper.sh("nm -D --defined-only " .. so:match("[^\n]+") .. " | grep -c ' T '") or ""
    local probe = "print(type(require(\"peerlisten.core\").listen))"
    local loaded = helper.sh(("LUA_CPATH='%s/lib/lua/5.4/?.so' lua5.4 -e '%s' 2>&1"):format(tree, probe))
    -- the test hooks (test_hooks.c, only with -DPL_TEST_HOOKS) are not in the installed module
    local hooks_probe = "local c = require(\"peerlisten.core\"); local p = c.tls_policy{}; "
      .. "print(c._tls_handshake, c._tls_clock_shift, c._tls_dial, "
      .. "p._verify_cache, p._new_ssl, p._pending_logs)"
    local hooks = helper.sh(("LUA_CPATH='%s/lib/lua/5.4/?.so' lua5.4 -e '%s' 2>&1"):format(tree, hooks_probe))
    local hook_strings = so ~= "" and helper.sh("grep -c -a -w -e _tls_handshake -e _tls_clock_shift "
      .. "-e _tls_dial -e _verify_cache " .. so:match("[^\n]+") .. "; true") or ""
    helper.rmdir(tree)
    helper.rmdir(src)
    assert.is_true(ok, out)
    assert.are_not.equal("", so)
    assert.are.equal("1\n", syms)
    assert.are.equal("function\n", loaded)
    assert.are.equal("nil\tnil\tnil\tnil\tnil\tnil\n", hooks)
    assert.are.equal("0\n", hook_strings)
  end)

  it("builds the in-tree module with the test hooks", function()
    local core = require "peerlisten.core"
    assert.is_function(core._tls_handshake)
    assert.is_function(core._tls_clock_shift)
  end)
end)
