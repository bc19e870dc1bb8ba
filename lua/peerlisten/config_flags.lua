--- etcd's command line and ETCD_* variables for peerlisten.config: Go's flag
-- package parsing (a bad flag or value is a usage error, exit status 2), and
-- the variables applied for flags not given, with etcd's conflict error and
-- its warning for unknown ones. Private to peerlisten.config.
-- @module peerlisten.config_flags

local url = require "peerlisten.url"
local options = require "peerlisten.config_options"

local OPTIONS, BY_FLAG = options.OPTIONS, options.BY_FLAG
local OTHER_FLAGS, EXPERIMENTAL_34 = options.OTHER_FLAGS, options.EXPERIMENTAL_34
local ENV_OPT, ENV_OTHER = options.ENV_OPT, options.ENV_OTHER
local coerce, flag_defined, url_opts = options.coerce, options.flag_defined, options.url_opts

local M = {}

-- Checks a flag value the way Go's flag package does while parsing (a bad
-- one is a usage error, exit status 2). Returns true or nil, message.
local function flag_value_ok(opt, name, value, prof)
  if opt.type == "bool" then
    if coerce(opt, value, "flag") == nil then
      return nil, ("invalid boolean value %q for -%s: parse error"):format(value, name)
    end
  elseif opt.type == "urls" then
    if value ~= "" then
      local ok, err = url.parse_list(value, url_opts(prof, "flag"))
      if not ok then return nil, ("invalid value %q for flag -%s: %s"):format(value, name, err) end
    end
  elseif opt.type == "uint" or opt.type == "duration" then
    if coerce(opt, value, "flag") == nil then
      return nil, ("invalid value %q for flag -%s: parse error"):format(value, name)
    end
  end
  return true
end

-- Go flag-package parsing of etcd's command line into raw values.
-- Returns given (flag name -> value), or nil, message, code.
local function parse_args(args, raw, sources, prof)
  local given = {}
  local i = 1
  local n = #args
  while i <= n do
    local a = args[i]
    if type(a) ~= "string" then return nil, ("argument %d is not a string"):format(i), "EUSAGE" end
    if a == "--" then
      i = i + 1
      break
    end
    if a:sub(1, 1) ~= "-" or a == "-" then break end
    local body = a:gsub("^%-%-?", "")
    local name, value = body:match("^([^=]+)=(.*)$")
    name = name or body
    if name == "" or name:sub(1, 1) == "-" or name:sub(1, 1) == "=" then
      return nil, ("bad flag syntax: %s"):format(a), "EUSAGE"
    end
    if not flag_defined(prof, name) then
      return nil, ("flag provided but not defined: -%s"):format(name), "EUSAGE"
    end
    local opt = BY_FLAG[name]
    local isbool
    if opt then
      isbool = opt.type == "bool"
    elseif OTHER_FLAGS[name] ~= nil then
      isbool = OTHER_FLAGS[name]
    elseif EXPERIMENTAL_34[name] ~= nil then
      isbool = EXPERIMENTAL_34[name]
    else
      isbool = value == nil and (args[i + 1] == nil or args[i + 1]:sub(1, 1) == "-")
    end
    if value == nil then
      if isbool then
        value = "true"
      else
        i = i + 1
        if i > n then return nil, ("flag needs an argument: -%s"):format(name), "EUSAGE" end
        value = args[i]
      end
    end
    if opt then
      local ok, verr = flag_value_ok(opt, name, value, prof)
      if not ok then return nil, verr, "EUSAGE" end
      -- an empty URL list keeps the default, as etcd's "exception" value
      if not (opt.type == "urls" and value == "") then
        raw[opt.key], sources[opt.key] = value, "flag"
      end
      given[opt.key] = name
    else
      given["flag:" .. name] = value
    end
    i = i + 1
  end
  if i <= n then
    local shown = prof.quoted_stray_arg and ("%q"):format(args[i]) or ("'%s'"):format(args[i])
    return nil, shown .. " is not a valid flag", "ECONFIG"
  end
  return given
end

local function env_lookup(env)
  if type(env) == "function" then return env end
  if type(env) == "table" then return function(name) return env[name] end end
  return function() return nil end
end

-- Every ETCD_* variable name in env (a table, or the process environment
-- when env is os.getenv).
local function env_names(env)
  local names = {}
  if type(env) == "table" then
    for k in pairs(env) do
      if type(k) == "string" and k:match("^ETCD_") then names[#names + 1] = k end
    end
  elseif env == os.getenv then
    local fh = io.open("/proc/self/environ", "rb")
    if fh then
      local data = fh:read("a")
      fh:close()
      for kv in data:gmatch("([^%z]+)") do
        local k = kv:match("^(ETCD_[^=]*)=")
        if k then names[#names + 1] = k end
      end
    end
  end
  table.sort(names)
  return names
end

-- etcd's error for a variable set next to its flag (the wording changed with zap in 3.5).
local function env_conflict(prof, envname)
  if prof.zap_env_conflict then
    return ("conflicting environment variable is shadowed by corresponding command-line flag (either unset "
      .. "environment variable or disable flag)) (environment-variable=%s)"):format(envname)
  end
  return ('conflicting environment variable %q is shadowed by corresponding command-line flag '
    .. '(either unset environment variable or disable flag)'):format(envname)
end

-- Applies the ETCD_* variables for flags not given (the etcd version's flags
-- only); returns etcd's conflict error for a variable set next to its flag.
local function apply_env(env, getenv, given, prof, raw, sources, notes)
  -- every flag given on the command line: a variable for it that is set
  -- at all (even empty) is a conflict, in flag-name order as etcd walks them
  local names = {}
  for k, v in pairs(given) do
    if k ~= "flag:config-file" then names[#names + 1] = k:match("^flag:(.*)$") or v end
  end
  table.sort(names)
  for _, name in ipairs(names) do
    local envname = "ETCD_" .. name:upper():gsub("-", "_")
    if getenv(envname) ~= nil then return env_conflict(prof, envname) end
  end
  for _, o in ipairs(OPTIONS) do
    local opt = o.opt
    local alias = opt.key == "peer_transport_security.skip_client_san_verification"
      and "ETCD_EXPERIMENTAL_PEER_SKIP_CLIENT_SAN_VERIFICATION" or nil
    for _, envname in ipairs { opt.env, alias } do
      local v = getenv(envname)
      local fname = envname:sub(6):lower():gsub("_", "-")
      if v and v ~= "" and flag_defined(prof, fname) then
        notes[#notes + 1] = { level = "info", msg = "recognized and used environment variable",
          fields = { ["variable-name"] = envname, ["variable-value"] = v } }
        raw[opt.key], sources[opt.key] = v, "env"
      end
    end
  end
  for _, name in ipairs(env_names(env)) do
    local fname = name:sub(6):lower():gsub("_", "-")
    local known = (ENV_OPT[name] or ENV_OTHER[name]) and flag_defined(prof, fname)
    if not known and name ~= "ETCD_CONFIG_FILE" then
      notes[#notes + 1] = { level = "warn", msg = "unrecognized environment variable",
        fields = { ["environment-variable"] = name .. "=" .. tostring(getenv(name)) } }
    end
  end
end


M.parse_args, M.env_lookup, M.apply_env = parse_args, env_lookup, apply_env

return M
