--- Command lines from declarations: one table per command is both what the
-- parser accepts and what `--help` prints, so the two cannot disagree.
--
-- A command declaration:
--
--    {
--      name = "cert ca",                       -- as typed after `peerlisten`
--      synopsis = "--dir DIR [options]",
--      summary = "one line for the command list",
--      text = "what it does (paragraphs)",
--      options = {                             -- in help order
--        { "dir", "DIR", "what it is", required = true },
--        { "validity", "YEARS", "...", number = true, default = "10" },
--        { "json", nil, "a flag: no value" },
--        { "member", "NAME", "...", multiple = true },   -- repeatable: a list
--      },
--      positional = { "FILE", min = 1, max = 1 },   -- optional
--      passthrough = { title =, groups = function() ... end },  -- options left for another
--                                              -- parser (etcd's flags), listed in help
--      examples = { "peerlisten cert ca --dir pki" },
--      exit = { { 0, "..." }, { 1, "..." }, { 2, "..." } },
--    }
--
-- Options are written `--name value`, `--name=value` or with one dash, as
-- Go's flag package (and so etcd) reads them; `-h`/`--help` is every
-- command's.
-- @module peerlisten.cli_args

local M = {}

local function opt_index(cmd)
  local idx = cmd._idx
  if not idx then
    idx = {}
    for _, o in ipairs(cmd.options or {}) do idx[o[1]] = o end
    cmd._idx = idx
  end
  return idx
end

--- Whether `a` asks for help.
function M.is_help(a)
  return a == "--help" or a == "-h" or a == "-help"
end

--- Parses `args` for `cmd`.
-- @tparam table cmd a command declaration
-- @tparam table args the words after the command name
-- @treturn[1] table options by name (flags `true`, values strings, `number` options numbers)
-- @treturn[1] table the positional words, then (with `passthrough`) every word the
-- declaration does not know, in order
-- @treturn[2] nil
-- @treturn[2] string a usage error
function M.parse(cmd, args)
  local idx = opt_index(cmd)
  local opts, rest = {}, {}
  local npos = 0
  local i = 1
  while i <= #args do
    local a = args[i]
    local name, value = a:match("^%-%-?([%w][%w-]*)=(.*)$")
    if not name then name = a:match("^%-%-?([%w][%w-]*)$") end
    local o = name and idx[name]
    if o then
      if o[2] == nil then
        if value ~= nil then return nil, ("option --%s takes no value"):format(name) end
        opts[name] = true
      else
        if value == nil then
          i = i + 1
          value = args[i]
          if value == nil then return nil, ("option --%s needs a value (%s)"):format(name, o[2]) end
        end
        if o.number then
          local n = tonumber(value)
          if not n then return nil, ("--%s must be a number, got %q"):format(name, value) end
          value = n
        end
        if o.choices then
          local ok = false
          for _, c in ipairs(o.choices) do ok = ok or c == value end
          if not ok then
            return nil, ("--%s must be one of: %s"):format(name, table.concat(o.choices, ", "))
          end
        end
        if o.multiple then
          opts[name] = opts[name] or {}
          table.insert(opts[name], value)
        else
          opts[name] = value
        end
      end
    elseif cmd.passthrough then
      rest[#rest + 1] = a
    elseif name and a ~= "-" then
      return nil, ("unknown option %s"):format(a)
    else
      npos = npos + 1
      rest[#rest + 1] = a
    end
    i = i + 1
  end
  for _, o in ipairs(cmd.options or {}) do
    if o.required and opts[o[1]] == nil then return nil, ("--%s is required"):format(o[1]) end
  end
  local p = cmd.positional
  if p and not cmd.passthrough then
    if npos < (p.min or 0) or npos > (p.max or math.huge) then
      local want = p.min == p.max and tostring(p.min) or ("%d to %s"):format(p.min or 0, p.max or "any")
      return nil, ("%s argument(s) expected (%s), got %d"):format(want, table.concat(p, " "), npos)
    end
  elseif npos > 0 and not cmd.passthrough then
    return nil, ("unexpected argument %s"):format(rest[1])
  end
  return opts, rest
end

-- Wraps words to `width` columns after `indent`.
local function wrap(words, indent, width)
  local lines, line = {}, indent
  for _, w in ipairs(words) do
    if #line > #indent and #line + 1 + #w > width then
      lines[#lines + 1] = line
      line = indent
    end
    line = line .. (#line > #indent and " " or "") .. w
  end
  if #line > #indent then lines[#lines + 1] = line end
  return table.concat(lines, "\n")
end
M.wrap = wrap

local function words(s)
  local out = {}
  for w in s:gmatch("%S+") do out[#out + 1] = w end
  return out
end

-- One option line: "  --name META   text (default: d)", text wrapped under column 28.
local function option_line(o)
  local head = "  --" .. o[1] .. (o[2] and (" " .. o[2]) or "")
  local text = o[3]
  if o.choices then text = text .. ": " .. table.concat(o.choices, ", ") end
  if o.required then text = text .. " (required)" end
  if o.default ~= nil then text = text .. (" (default: %s)"):format(tostring(o.default)) end
  if o.multiple then text = text .. " (repeatable)" end
  local body = wrap(words(text), (" "):rep(28), 79):sub(29)
  if #head >= 27 then return head .. "\n" .. (" "):rep(28) .. body end
  return head .. (" "):rep(28 - #head) .. body
end
M.option_line = option_line

--- The help text of `cmd`.
-- @tparam table cmd a command declaration
-- @treturn string
function M.help(cmd)
  local out = { ("Usage: peerlisten %s %s"):format(cmd.name, cmd.synopsis or "[options]"), "" }
  if cmd.text then out[#out + 1] = cmd.text:gsub("\n+$", ""); out[#out + 1] = "" end
  out[#out + 1] = "Options:"
  for _, o in ipairs(cmd.options or {}) do out[#out + 1] = option_line(o) end
  out[#out + 1] = option_line { "help", nil, "this help (also -h)" }
  if cmd.passthrough then
    for _, g in ipairs(cmd.passthrough.groups()) do
      out[#out + 1] = ""
      out[#out + 1] = g.title
      if g.options then
        for _, o in ipairs(g.options) do out[#out + 1] = option_line(o) end
      else
        local names = {}
        for i, n in ipairs(g.names) do names[i] = "--" .. n end
        out[#out + 1] = wrap(names, "  ", 79)
      end
    end
  end
  if cmd.examples and #cmd.examples > 0 then
    out[#out + 1] = ""
    out[#out + 1] = "Examples:"
    for _, e in ipairs(cmd.examples) do out[#out + 1] = "  " .. e end
  end
  if cmd.exit then
    out[#out + 1] = ""
    out[#out + 1] = "Exit status:"
    for _, e in ipairs(cmd.exit) do
      out[#out + 1] = ("  %d  %s"):format(e[1], wrap(words(e[2]), "     ", 79):sub(6))
    end
  end
  return table.concat(out, "\n") .. "\n"
end

--- Every option name `cmd` accepts itself (without `help`), in help order.
-- @tparam table cmd
-- @treturn table
function M.names(cmd)
  local out = {}
  for i, o in ipairs(cmd.options or {}) do out[i] = o[1] end
  return out
end

return M
