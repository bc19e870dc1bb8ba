local helper = require "helper"
local cli = require "peerlisten.cli"
local cli_args = require "peerlisten.cli_args"
local commands = require "peerlisten.cli_commands"
local config = require "peerlisten.config"
local cert = require "peerlisten.cert"
local etcd_versions = require "peerlisten.etcd_versions"

local function run(args)
  local out, err = helper.buffer(), helper.buffer()
  local rc = cli.main(args, { stdout = out, stderr = err, env = {}, tty = false })
  return rc, out:text(), err:text()
end

local function words(s)
  local out = {}
  for w in s:gmatch("%S+") do out[#out + 1] = w end
  return out
end

-- The option names a help text shows, read back from the printed text:
-- own = the "Options:" section, passed = the sections after it (etcd's flags).
-- Flags of the etcd sections the help marks as defined by some etcd versions only.
local passed_versioned

-- The option names a help text shows, read back from the printed text:
-- own = the "Options:" section, passed = the sections after it (etcd's flags).
local function shown(help)
  local own, passed = {}, {}
  passed_versioned = {}
  local section, current
  local text = {}   -- flag -> its help text, lines joined
  for line in (help .. "\n"):gmatch("(.-)\n") do
    if line == "Options:" then section = own
    elseif line == "Examples:" or line == "Exit status:" then section = nil
    elseif line ~= "" and not line:match("^%s") and section then section = passed
    elseif section and line:match("^  %-%-") then
      local first = line:match("^  %-%-([%w-]+)")
      if section == own then
        own[first] = true
      elseif line:match("^  %-%-[%w-]+%s%s") or line:match("^  %-%-[%w-]+ %u") or not line:match("%-%-.*%-%-") then
        passed[first], current = true, first   -- an option line
        text[first] = line
      else
        current = nil                          -- a list of names; * marks versioned ones
        for n, star in line:gmatch("%-%-([%w-]+)(%*?)") do
          passed[n] = true
          if star == "*" then passed_versioned[n] = true end
        end
      end
    elseif section == passed and current and line:match("^%s%s%s%s") then
      text[current] = text[current] .. " " .. line:match("^%s*(.-)$")
    end
  end
  for flag, t in pairs(text) do
    if t:find("not in every etcd version", 1, true) then passed_versioned[flag] = true end
  end
  return own, passed
end

-- Every flag config.load accepts.
local function etcd_flags()
  local set = { ["config-file"] = true }
  for _, o in ipairs(config.options()) do set[o.flag] = true end
  local names, aliases = config.other_flags()
  for _, n in ipairs(names) do set[n] = true end
  for n in pairs(aliases) do set[n] = true end
  return set
end

-- A value for option o of decl that the parser takes.
local function sample(o)
  if o[2] == nil then return nil end
  if o.choices then return o.choices[1] end
  if o.number then return "2" end
  return "x"
end

-- The words of a full command line for decl: every required option, plus o.
local function argv(decl, o)
  local a = {}
  for _, r in ipairs(decl.options) do
    if r.required and r ~= o then a[#a + 1] = "--" .. r[1]; a[#a + 1] = sample(r) end
  end
  if o then
    a[#a + 1] = "--" .. o[1]
    if sample(o) then a[#a + 1] = sample(o) end
  end
  for i = 1, (decl.positional and decl.positional.min or 0) do a[#a + 1] = "f" .. i end
  return a
end

local function keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

describe("peerlisten --help", function()
  it("lists every command, and every command has its own help", function()
    local rc, top = run { "--help" }
    assert.equal(0, rc)
    local helps = {}
    for _, name in ipairs(commands.ORDER) do
      assert.matches("\n  " .. name:gsub("%p", "%%%0") .. "%s", top)
      local a = words(name)
      a[#a + 1] = "--help"
      local hrc, help, err = run(a)
      assert.equal(0, hrc, name)
      assert.equal("", err)
      assert.matches("^Usage: peerlisten " .. name:gsub("%p", "%%%0") .. " ", help)
      assert.is_nil(helps[help], name .. " prints another command's help")
      helps[help] = name
      -- the same text for `help <command>` and `<command> -h`
      local _, via_help = run { "help", table.unpack(words(name)) }
      assert.equal(help, via_help)
    end
  end)

  for _, name in ipairs(commands.ORDER) do
    local decl = commands[name]
    describe(name, function()
      local help
      setup(function()
        local a = words(name)
        a[#a + 1] = "-h"
        local _
        _, help = run(a)
      end)

      it("shows exactly the options its parser accepts", function()
        local own, passed = shown(help)
        own.help = nil
        local declared = {}
        for _, n in ipairs(cli_args.names(decl)) do declared[n] = true end
        assert.same(keys(declared), keys(own))
        -- every option shown is accepted by the parser, with its value
        for _, o in ipairs(decl.options) do
          local opts, perr = cli_args.parse(decl, argv(decl, o))
          assert.is_table(opts, name .. " --" .. o[1] .. ": " .. tostring(perr))
          assert.is_not_nil(opts[o[1]])
        end
        -- and one that is not shown is refused with exit status 2, writing nothing
        local a = words(name)
        for _, w in ipairs(argv(decl)) do a[#a + 1] = w end
        a[#a + 1] = "--not-an-option-of-" .. name:gsub(" ", "-")
        local rc, out, err = run(a)
        assert.equal(2, rc)
        assert.equal("", out)
        assert.matches("not%-an%-option", err)
        if decl.passthrough then
          -- etcd's flags: those shown are those config.load accepts
          assert.same(keys(etcd_flags()), keys(passed))
          -- each is defined by every modelled etcd version, unless the help says it is not
          local profiles = {}
          for _, v in ipairs { "3.4", "3.5", "3.6" } do profiles[#profiles + 1] = assert(etcd_versions.resolve(v)) end
          for flag in pairs(passed) do
            local defined = 0
            for _, prof in ipairs(profiles) do
              local _, lerr = config.load { args = { "--" .. flag .. "=1" }, env = {}, etcd_version = prof }
              if not tostring(lerr):find("not defined", 1, true) then defined = defined + 1 end
            end
            if passed_versioned[flag] then
              assert.is_true(defined > 0 and defined < #profiles, flag .. " is marked but defined by " .. defined)
            else
              assert.equal(#profiles, defined, flag .. " is not marked but defined by " .. defined)
            end
          end
        else
          assert.same({}, keys(passed))
        end
      end)

      it("has examples its own parser accepts, and exit statuses 0, 1 and 2", function()
        assert.matches("\nExamples:\n  peerlisten ", help)
        for _, e in ipairs(decl.examples) do
          local line = e:gsub("\\\n%s*", "")
          local w = words(line)
          while w[1] and w[1]:match("^[A-Z_]+=") do table.remove(w, 1) end
          assert.equal("peerlisten", table.remove(w, 1), e)
          for _ in name:gmatch("%S+") do table.remove(w, 1) end
          local opts, rest = cli_args.parse(decl, w)
          assert.is_table(opts, e .. ": " .. tostring(rest))
          if decl.passthrough then
            -- the positional words (probe's URL) come first; the rest are etcd's flags
            for _ = 1, (decl.positional and decl.positional.min or 0) do table.remove(rest, 1) end
            local _, lerr, code = config.load { args = rest, env = {} }
            assert.are_not.equal("EUSAGE", code, e .. ": " .. tostring(lerr))
          end
        end
        assert.matches("\nExit status:\n  0  .-\n  1  .-\n  2  ", help)
      end)
    end)
  end

  it("lists the key types cert accepts, all of them", function()
    for _, name in ipairs { "cert", "cert ca", "cert issue" } do
      local a = words(name)
      a[#a + 1] = "--help"
      local _, help = run(a)
      local text = help:gsub("%s+", " ")
      assert.is_truthy(text:find("--key-type TYPE key algorithm: " .. table.concat(cert.KEY_TYPES, ", "), 1, true), name)
    end
  end)

  it("says what inspect prints: a summary, not PEM", function()
    local _, top = run { "--help" }
    assert.matches("inspect%s+summarize a certificate", top)
    assert.is_nil(top:find("PEM", 1, true))
  end)
end)
