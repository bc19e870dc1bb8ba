local helper = require "helper"
local peerlisten = require "peerlisten"

local SCM = "rockspec/peerlisten-scm-1.rockspec"
local RELEASE = "rockspec/peerlisten-" .. peerlisten._VERSION .. "-1.rockspec"

-- Each runtime dependency (other than lua) and the Debian package the
-- Makefile installs for it: offline, Debian provides what luarocks would fetch.
local DEBIAN = {
  lyaml = { package = "lua-yaml", module = "lyaml" },
  luasocket = { package = "lua-socket", module = "socket" },
}

local function load_rockspec(path)
  local env = {}
  local chunk = assert(loadfile(path, "t", env))
  chunk()
  return env
end

local function ls(pattern)
  local out = {}
  for line in helper.sh("ls " .. pattern .. " 2>/dev/null"):gmatch("[^\n]+") do out[#out + 1] = line end
  table.sort(out)
  return out
end

local function dep_name(d) return d:match("^([%w_%-]+)") end

describe("rockspec", function()
  for _, path in ipairs { SCM, RELEASE } do
    describe(path, function()
      it("is a 3.0 builtin rockspec with OPENSSL and LIBUV external dependencies", function()
        local r = load_rockspec(path)
        assert.are.equal("3.0", r.rockspec_format)
        assert.are.equal("builtin", r.build.type)
        assert.is_table(r.external_dependencies.OPENSSL)
        assert.is_table(r.external_dependencies.LIBUV)
        assert.are.equal("lua >= 5.4, < 5.5", r.dependencies[1])
        assert.are.same({ type = "busted" }, r.test)
        assert.are.same({ peerlisten = "bin/peerlisten" }, r.build.install.bin)
      end)

      it("lists exactly csrc/*.c as the sources of peerlisten.core", function()
        local r = load_rockspec(path)
        local sources = {}
        for _, s in ipairs(r.build.modules["peerlisten.core"].sources) do sources[#sources + 1] = s end
        table.sort(sources)
        assert.are.same(ls("csrc/*.c"), sources)
      end)

      it("lists Lua modules that exist, and every module of lua/peerlisten", function()
        local r = load_rockspec(path)
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

      it("declares every module the Lua layer requires outside peerlisten, each packaged by Debian", function()
        local r = load_rockspec(path)
        local declared = {}
        for i = 2, #r.dependencies do declared[dep_name(r.dependencies[i])] = true end
        local used = {}
        for _, f in ipairs(ls("lua/peerlisten/*.lua")) do
          for m in helper.readfile(f):gmatch('require%s*%(?%s*"([%w_%.]+)"') do
            if not m:match("^peerlisten") then used[m] = true end
          end
          for m in helper.readfile(f):gmatch('optional%.require%s*%(?%s*"([%w_%.]+)"') do used[m] = true end
        end
        local providers = require("peerlisten.optional").PROVIDERS
        for m in pairs(used) do
          local rock = providers[m] and providers[m].rock or m
          assert.is_true(declared[rock] or false, m .. " is required but its rock " .. rock .. " is not a dependency")
        end
        local makefile = helper.readfile("Makefile")
        for d in pairs(declared) do
          local deb = DEBIAN[d]
          assert.is_table(deb, d .. ": which Debian package provides it?")
          assert.matches("[ \t]" .. deb.package:gsub("%-", "%%-") .. "[ \t\n\\]", makefile:match("DEB_PACKAGES :=.-\n\n"))
        end
      end)
    end)
  end

  it("the release is pinned to its tag and names the version the code reports", function()
    local r = load_rockspec(RELEASE)
    assert.are.equal(peerlisten._VERSION .. "-1", r.version)
    assert.matches("^git%+https://", r.source.url)
    assert.are.equal("v" .. peerlisten._VERSION, r.source.tag)
    assert.is_nil(r.source.branch)
    local scm = load_rockspec(SCM)
    assert.are.equal("scm-1", scm.version)
    assert.are.equal(r.source.url, scm.source.url)
    -- the two differ only in version and source
    r.version, r.source, scm.version, scm.source = nil, nil, nil, nil
    assert.are.same(scm, r)
  end)

  -- Copies the files a rock is built from into a temporary directory, so the
  -- build leaves nothing (objects, build dirs) in the checkout.
  local function stage()
    local src = helper.tmpdir()
    helper.run(("cp -r csrc lua bin rockspec %s/"):format(helper.q(src)))
    return src
  end

  it("#slow the release installs with luarocks make into a clean tree; the installed CLI and module work from "
    .. "another directory with only `luarocks path` applied", function()
    if not helper.have("luarocks") then pending("luarocks is not installed") return end
    local status = "git status --porcelain --ignored csrc lua bin rockspec"
    local before = helper.sh(status)
    local src, tree, elsewhere = stage(), helper.tmpdir(), helper.tmpdir()
    local q = helper.q
    -- offline: lyaml comes from Debian (lua-yaml), which luarocks does not see
    local build = helper.sh(("cd %s && luarocks --lua-version=5.4 --tree %s make --deps-mode=none %s 2>&1; echo rc=$?")
      :format(q(src), q(tree), RELEASE))
    local env = ("cd %s && eval \"$(luarocks --lua-version=5.4 --tree %s path)\" && unset LUA_PATH_5_4 LUA_CPATH_5_4 && ")
      :format(q(elsewhere), q(tree))
    local which = helper.sh(env .. "command -v peerlisten")
    local help = helper.sh(env .. "peerlisten --help 2>&1; echo rc=$?")
    local version = helper.sh(env .. "peerlisten --version 2>&1")
    local req = helper.sh(env .. [[lua5.4 -e 'local p = require "peerlisten"; ]]
      .. [[print(p._VERSION, package.searchpath("peerlisten", package.path), type(require("peerlisten.core").listen))' 2>&1]])
    helper.writefile(elsewhere .. "/etcd.yaml", "listen-peer-urls: http://127.0.0.1:0\ndata-dir: d.etcd\n")
    local check = helper.sh(env .. "peerlisten check --config-file etcd.yaml 2>&1; echo rc=$?")
    local so = helper.sh(("find %s -name core.so -path '*peerlisten*'"):format(q(tree)))
    local syms = so ~= "" and helper.sh("nm -D --defined-only " .. so:match("[^\n]+") .. " | grep -c ' T '")
    -- the test hooks (test_hooks.c, only with -DPL_TEST_HOOKS) are not in the installed module
    local hooks = helper.sh(env .. [[lua5.4 -e 'local c = require("peerlisten.core"); local p = c.tls_policy{}; ]]
      .. [[print(c._tls_handshake, c._tls_clock_shift, c._tls_dial, p._verify_cache, p._new_ssl, p._pending_logs)' 2>&1]])
    local hook_strings = so ~= "" and helper.sh("grep -c -a -w -e _tls_handshake -e _tls_clock_shift "
      .. "-e _tls_dial -e _verify_cache " .. so:match("[^\n]+") .. "; true") or ""
    local after = helper.sh(status)
    helper.rmdir(src); helper.rmdir(tree); helper.rmdir(elsewhere)
    assert.matches("rc=0\n$", build)
    assert.are.equal(tree .. "/bin/peerlisten\n", which)
    assert.matches("^Usage: peerlisten <command>", help)
    assert.matches("rc=0\n$", help)
    assert.are.equal("peerlisten " .. peerlisten._VERSION .. "\n", version)
    assert.are.equal(("%s\t%s/share/lua/5.4/peerlisten/init.lua\tfunction\n"):format(peerlisten._VERSION, tree), req)
    assert.matches("PASS: ", check)
    assert.matches("rc=0\n$", check)
    assert.are_not.equal("", so)
    assert.are.equal("1\n", syms)
    assert.are.equal("nil\tnil\tnil\tnil\tnil\tnil\n", hooks)
    assert.are.equal("0\n", hook_strings)
    assert.are.equal(before, after)   -- nothing built or left in the checkout
  end)

  it("a missing lyaml is one line naming the Debian package and the rock, never a stack trace", function()
    local dir = helper.tmpdir()
    helper.writefile(dir .. "/etcd.yaml", "listen-peer-urls: http://127.0.0.1:0\n")
    -- only the tree's modules and core.so: lyaml (Debian's /usr/share/lua) is hidden
    local out = helper.sh(("LUA_PATH='./lua/?.lua;./lua/?/init.lua' LUA_CPATH='./?.so' "
      .. "lua5.4 bin/peerlisten check --config-file %s/etcd.yaml 2>&1 >/dev/null; echo rc=$?"):format(dir))
    helper.rmdir(dir)
    assert.are.equal("peerlisten check: module 'lyaml' is not installed (needed to read YAML files): "
      .. "install the Debian package lua-yaml or the rock lyaml\nrc=1\n", out)
  end)

  it("builds the in-tree module with the test hooks", function()
    local core = require "peerlisten.core"
    assert.is_function(core._tls_handshake)
    assert.is_function(core._tls_clock_shift)
  end)
end)
