-- The doctest runner behind spec/docs_spec.lua, and a tool to refresh a
-- document's blocks from what they print:
--   lua5.4 spec/support/doctest.lua --update README.md docs/cli.md
-- (run from the checkout after `make`; review the diff before committing).
--
-- A marker is an HTML comment on the line just before a fence:
--   <!-- doctest -->             the ```console block that follows is run:
--                                `$ ` lines (with `\` continuations) are
--                                commands for one bash, the lines after a
--                                command its expected output (stdout and
--                                stderr); after `$ lua5.4 -i` the `> `/`>> `
--                                lines are fed to the real interpreter, whose
--                                output (readline echoes the input) must read
--                                exactly like the transcript.
--   <!-- doctest: file NAME -->  the block is written to NAME for the
--                                blocks after it.
-- Each document runs in a fresh temporary directory that looks like the
-- checkout (lua/, bin/, peerlisten/ are symlinks to it), so examples written
-- for the checkout work and nothing they create lands in it; its bin/ is on
-- the PATH, as an installed `peerlisten` would be. Addresses,
-- ports, times, day counts, temporary paths and long hex strings (serials,
-- fingerprints) are masked on both sides before comparing.
if arg and arg[0] and arg[0]:match("doctest%.lua$") then   -- run as a tool from the checkout
  package.path = "./spec/?.lua;./lua/?.lua;./lua/?/init.lua;" .. package.path
  package.cpath = "./?.so;" .. package.cpath
end
local helper = require "helper"

local ROOT = helper.sh("pwd"):match("[^\n]+")

local M = {}

--- The masked form of a transcript.
function M.mask(s)
  s = s:gsub("%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d[%.%d]*Z", "<TIME>")
  s = s:gsub("%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d", "<TIME>")
  -- mktemp's directories (TMPDIR is inside the spec's own directory)
  s = s:gsub("/tmp/peerlisten%-spec%.%w+/%.doctest/tmp/", "/tmp/")
  s = s:gsub("/tmp/[%w%._%-]+", "/tmp/<TMP>")
  s = s:gsub("0x%x+", "<ADDR>")
  s = s:gsub("%x[%x:]+", function(h)
    local _, n = h:gsub("%x", "")
    if n >= 16 then return "<HEX>" end
  end)
  -- day counts flip with the second a certificate was made in
  s = s:gsub("%d+ days", "<N> days")
  s = s:gsub("(%d+%.%d+%.%d+%.%d+)([:\t]%s*)(%d+)", "%1%2<PORT>")
  s = s:gsub("(%[[%x:]+%]:)(%d+)", "%1<PORT>")
  return s
end

-- Parses one Markdown file into its marked blocks, in document order:
-- { kind = "console" | "file", name =, line =, text = }.
function M.blocks(path)
  local out, lines = {}, {}
  for line in (helper.readfile(path) .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = line end
  local i = 1
  while i <= #lines do
    local marker = lines[i]:match("^<!%-%-%s*doctest(.-)%s*%-%->%s*$")
    if marker then
      local fence, lang = (lines[i + 1] or ""):match("^(```+)(%S*)%s*$")
      assert(fence, ("%s:%d: a doctest marker must be followed by a fence"):format(path, i))
      local body, j = {}, i + 2
      while lines[j] and lines[j] ~= fence do body[#body + 1] = lines[j]; j = j + 1 end
      assert(lines[j], ("%s:%d: fence not closed"):format(path, i + 1))
      local name = marker:match("^:%s*file%s+(%S+)$")
      if name then
        out[#out + 1] = { kind = "file", name = name, line = i + 2, text = table.concat(body, "\n") .. "\n" }
      else
        assert(marker == "", ("%s:%d: unknown doctest marker %q"):format(path, i, marker))
        assert(lang == "console", ("%s:%d: only ```console blocks run"):format(path, i + 1))
        out[#out + 1] = { kind = "console", line = i + 2, lines = body }
      end
      i = j + 1
    else
      i = i + 1
    end
  end
  return out
end

-- Splits a console block into steps { cmd =, repl = bool, input = {..}, expect = {..}, line = }.
function M.steps(block)
  local list, cur = {}, nil
  local k = 1
  local body = block.lines
  while k <= #body do
    local l = body[k]
    if l:match("^%$ ") then
      local cmd, line = l:sub(3), block.line + k - 1
      while cmd:match("\\$") and body[k + 1] do
        k = k + 1
        cmd = cmd .. "\n" .. body[k]
      end
      cur = { cmd = cmd, line = line, expect = {}, input = {}, repl = cmd:match("^lua5%.4 %-i%s*$") ~= nil }
      list[#list + 1] = cur
    else
      assert(cur, ("line %d: output before the first command"):format(block.line + k - 1))
      cur.expect[#cur.expect + 1] = l
      if cur.repl then
        local input = l:match("^>> (.*)$") or l:match("^> (.*)$")
        if input then cur.input[#cur.input + 1] = input end
      end
    end
    k = k + 1
  end
  return list
end

-- A directory that looks like the checkout to the examples.
function M.workdir()
  local d = helper.tmpdir()
  for _, name in ipairs { "lua", "bin", "peerlisten" } do
    helper.run(("ln -s %s %s"):format(helper.q(ROOT .. "/" .. name), helper.q(d .. "/" .. name)))
  end
  os.execute("mkdir " .. helper.q(d .. "/.doctest"))
  return d
end

-- Runs the steps of one console block in dir; returns the actual text of each step.
function M.run_console(dir, list)
  local meta = dir .. "/.doctest"
  -- `peerlisten` is on the PATH, as after installing the rock
  local script = { "cd " .. helper.q(dir), "export TMPDIR=" .. helper.q(meta .. "/tmp"),
    "export PATH=" .. helper.q(dir .. "/bin") .. ":\"$PATH\"",
    "mkdir -p \"$TMPDIR\"", "trap 'kill $(jobs -p) 2>/dev/null' EXIT" }
  for i, s in ipairs(list) do
    local out = helper.q(("%s/out.%d"):format(meta, i))
    if s.repl then
      local inf = ("%s/in.%d"):format(meta, i)
      helper.writefile(inf, table.concat(s.input, "\n") .. "\n")
      script[#script + 1] = ("{ %s < %s; } > %s 2>&1"):format(s.cmd, helper.q(inf), out)
    else
      script[#script + 1] = ("{ %s\n} > %s 2>&1"):format(s.cmd, out)
    end
  end
  helper.writefile(meta .. "/script.sh", table.concat(script, "\n") .. "\n")
  helper.run(("timeout -k 5 300 bash %s >%s/script.out 2>&1"):format(helper.q(meta .. "/script.sh"), helper.q(meta)))
  local got = {}
  for i, s in ipairs(list) do
    local text = helper.readfile(("%s/out.%d"):format(meta, i)) or ""
    -- the prompt left at end of input
    if s.repl then text = text:gsub("> \n$", ""):gsub(">%s*$", "") end
    got[i] = text
  end
  return got
end

-- Compares step by step; the error names the document line that differs.
function M.compare(path, list, got)
  for i, s in ipairs(list) do
    local want = #s.expect > 0 and (table.concat(s.expect, "\n") .. "\n") or ""
    local a, b = M.mask(want), M.mask(got[i])
    if a ~= b then
      local wl, gl = {}, {}
      for l in (a .. (a:sub(-1) == "\n" and "" or "\n")):gmatch("(.-)\n") do wl[#wl + 1] = l end
      for l in (b .. (b:sub(-1) == "\n" and "" or "\n")):gmatch("(.-)\n") do gl[#gl + 1] = l end
      local n = 1
      while wl[n] == gl[n] do n = n + 1 end
      local _, cmdlines = s.cmd:gsub("\n", "")
      error(("%s:%d: `$ %s` prints something else than the document shows.\n"
        .. "first difference at output line %d:\n  document: %s\n  actual:   %s\n--- actual output (masked) ---\n%s")
        :format(path, s.line + cmdlines + n, s.cmd:match("[^\n]*"), n, tostring(wl[n]), tostring(gl[n]), b), 0)
    end
  end
end


-- Rewrites the expected output of every console block of `path` with what
-- it prints now (REPL transcripts included). Returns the number of blocks.
function M.update(path)
  local lines = {}
  for line in (helper.readfile(path) .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = line end
  if lines[#lines] == "" then lines[#lines] = nil end
  local dir = M.workdir()
  local n, replace = 0, {}
  for _, b in ipairs(M.blocks(path)) do
    if b.kind == "file" then
      helper.writefile(dir .. "/" .. b.name, b.text)
    else
      n = n + 1
      local list = M.steps(b)
      local got = M.run_console(dir, list)
      local body = {}
      for i, s in ipairs(list) do
        body[#body + 1] = "$ " .. s.cmd
        local text = got[i]
        if s.repl then
          -- the interpreter's transcript already holds the input lines
          text = text:gsub("\n$", "")
          if text ~= "" then body[#body + 1] = text end
        else
          text = text:gsub("\n$", "")
          if text ~= "" then body[#body + 1] = text end
        end
      end
      replace[#replace + 1] = { first = b.line, last = b.line + #b.lines - 1, text = table.concat(body, "\n") }
    end
  end
  helper.rmdir(dir)
  -- readable paths (the masks treat every /tmp path alike)
  for _, r in ipairs(replace) do
    r.text = r.text:gsub("/tmp/peerlisten%-spec%.%w+/%.doctest/tmp/", "/tmp/"):gsub("/tmp/peerlisten%-spec%.%w+/", "/tmp/demo/")
  end
  for i = #replace, 1, -1 do
    local r = replace[i]
    for _ = r.first, r.last do table.remove(lines, r.first) end
    table.insert(lines, r.first, r.text)
  end
  helper.writefile(path, table.concat(lines, "\n") .. "\n")
  return n
end

if arg and arg[0] and arg[0]:match("doctest%.lua$") and arg[1] == "--update" then
  for i = 2, #arg do
    print(("%s: %d blocks refreshed"):format(arg[i], M.update(arg[i])))
  end
end

return M
