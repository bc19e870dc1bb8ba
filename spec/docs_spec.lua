-- Runs the examples of README.md and docs/*.md that are marked to run, and
-- compares their output with what the document shows (spec/support/doctest.lua
-- says how blocks are marked and run).
local helper = require "helper"
local doctest = require "support.doctest"
local M = doctest
local steps, workdir, run_console, compare = doctest.steps, doctest.workdir, doctest.run_console, doctest.compare

local function documents()
  local list = { "README.md" }
  for f in helper.sh("ls docs/*.md 2>/dev/null"):gmatch("[^\n]+") do list[#list + 1] = f end
  return list
end

describe("docs", function()
  it("masks what changes from run to run, and only that", function()
    assert.equal("127.0.0.1\t<PORT>\n", M.mask("127.0.0.1\t46147\n"))
    assert.equal("listen tcp 127.0.0.1:<PORT>: bind", M.mask("listen tcp 127.0.0.1:2380: bind"))
    assert.equal("valid until <TIME>", M.mask("valid until 2027-11-27T15:40:57Z"))
    assert.equal("serial <HEX> n=364", M.mask("serial 5f:3a:9c:00:11:22:33:44:55:66 n=364"))
    assert.equal("/tmp/<TMP>/pki/n1.pem", M.mask("/tmp/tmp.Ab3dE/pki/n1.pem"))
    assert.are_not.equal(M.mask("days_left 364"), M.mask("days_left 365"))
  end)

  it("finds the marked blocks of a document", function()
    local dir = helper.tmpdir()
    helper.writefile(dir .. "/t.md", "x\n<!-- doctest: file a.lua -->\n```lua\nprint(1)\n```\n"
      .. "<!-- doctest -->\n```console\n$ lua5.4 a.lua\n1\n```\n```console\n$ not run\n```\n")
    local b = M.blocks(dir .. "/t.md")
    helper.rmdir(dir)
    assert.equal(2, #b)
    assert.same({ "file", "a.lua", "print(1)\n" }, { b[1].kind, b[1].name, b[1].text })
    assert.same({ "console", { "$ lua5.4 a.lua", "1" } }, { b[2].kind, b[2].lines })
  end)

  it("fails a document that lies", function()
    local dir = workdir()
    local list = steps { line = 1, lines = { "$ echo one", "two", "$ lua5.4 -i",
      "Lua 5.4.4  Copyright (C) 1994-2022 Lua.org, PUC-Rio", "> 1 + 1", "3" } }
    local got = run_console(dir, list)
    helper.rmdir(dir)
    local ok, err = pcall(compare, "t.md", list, got)
    assert.is_false(ok)
    assert.matches("t.md:2: `$ echo one`", err, 1, true)
    list[1].expect = { "one" }
    ok, err = pcall(compare, "t.md", list, got)
    assert.is_false(ok)
    assert.matches("document: 3\n  actual:   2", err, 1, true)
    list[2].expect[3] = "2"
    assert.is_true(pcall(compare, "t.md", list, got))
  end)

  it("docs/benchmarks.md is what bench/mkdoc.lua makes of bench/results/latest.md", function()
    local made = helper.sh("lua5.4 bench/mkdoc.lua bench/results/latest.md")
    assert.is_truthy(made:find("| 1. TLS 1.3 full handshake |", 1, true))
    assert.equal(made, helper.readfile("docs/benchmarks.md"), "run `make docs/benchmarks.md`")
  end)

  it("README.md's benchmark table is what bench/mkdoc.lua makes of bench/results/latest.md", function()
    local made = helper.sh("lua5.4 bench/mkdoc.lua --readme README.md bench/results/latest.md")
    assert.is_truthy(made:find("<!-- bench:begin -->\nFrom `make bench`", 1, true))
    assert.equal(made, helper.readfile("README.md"), "run `make docs/benchmarks.md`")
  end)

  for _, path in ipairs(documents()) do
    local blocks = M.blocks(path)
    if #blocks > 0 then
      -- #interop: the examples talk to real peers (curl, openssl, etcd)
      describe(path .. " #interop", function()
        local dir, before
        setup(function()
          before = helper.sh("git status --porcelain --ignored")
          dir = workdir()
        end)
        teardown(function() helper.rmdir(dir) end)

        for _, b in ipairs(blocks) do
          if b.kind == "file" then
            it(("writes %s (line %d)"):format(b.name, b.line), function()
              helper.writefile(dir .. "/" .. b.name, b.text)
            end)
          else
            it(("runs the session at line %d as shown"):format(b.line), function()
              local list = steps(b)
              compare(path, list, run_console(dir, list))
            end)
          end
        end

        it("leaves nothing in the checkout", function()
          assert.equal(before, helper.sh("git status --porcelain --ignored"))
        end)
      end)
    end
  end
end)
