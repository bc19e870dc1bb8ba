--- The `peerlisten` command: serve, check, cert, inspect.
--
-- `main(args, io)` runs one command and returns its exit status: 0 ok, 1
-- failure, 2 usage error. Messages go to `io.stderr`, data to `io.stdout`
-- (both replaceable for specs); logs go to stderr as console lines at a
-- terminal, zap JSON lines otherwise, unless the configuration's log settings
-- say otherwise. Each command's options and help come from one declaration
-- (peerlisten.cli_commands). This module is the only place that writes to
-- the terminal; the library never exits.
-- @module peerlisten.cli

local peerlisten = require "peerlisten"
local check = require "peerlisten.check"
local cli_args = require "peerlisten.cli_args"
local commands = require "peerlisten.cli_commands"
local etcd_versions = require "peerlisten.etcd_versions"
local responder = require "peerlisten.responder"

local config = peerlisten.config
local log = peerlisten.log

local M = {}

M.USAGE = commands.usage()

local function writer(stream)
  return function(...) stream:write(...) end
end

local function split(s)
  local out = {}
  for item in (s or ""):gmatch("[^,]+") do out[#out + 1] = item:match("^%s*(.-)%s*$") end
  return out
end

-- Whether logs go to a person: set by main() from the stderr stream.
local stderr_tty = false

-- Console lines for a person at a terminal, JSON lines (etcd's default) for
-- everything else; an explicit --log-format (flag, env or file) always wins.
local function log_format(cfg)
  local explicit = cfg and cfg._sources and cfg._sources.log_format ~= "default"
  if explicit then return cfg.log_format end
  return stderr_tty and "console" or "json"
end

local function logger_for(cfg, stderr)
  local outputs = {}
  for _, o in ipairs(cfg and cfg.log_outputs or { "stderr" }) do
    if o == "default" or o == "stderr" then outputs[#outputs + 1] = function(line) stderr(line, "\n") end
    else outputs[#outputs + 1] = o end
  end
  return log.new { level = cfg and cfg.log_level or "info", format = log_format(cfg), outputs = outputs }
end

-- The etcd profile to follow: --etcd-version, else the installed etcd's
-- version (--etcd BIN, or etcd on the PATH of env), else the newest modelled.
local function choose_version(o, env)
  local path
  if type(env) == "table" then path = env.PATH
  else path = (env or os.getenv)("PATH") end
  return etcd_versions.choose { version = o["etcd-version"], bin = o.etcd, path = path }
end

local function load_config(args, env, prof)
  return config.load { args = args, env = env or os.getenv, etcd_version = prof }
end

-- serve --------------------------------------------------------------------

local function cmd_serve(args, _, err, env)
  local vo, rest = cli_args.parse(commands.serve, args)
  if not vo then
    err("peerlisten serve: ", rest, "\n", "Run 'peerlisten serve --help' for usage.\n")
    return 2
  end
  local prof, how = choose_version(vo, env)
  if not prof then
    err("peerlisten serve: ", how, "\n")
    return 2
  end
  local cfg, msg, code = load_config(rest, env, prof)
  if not cfg then
    err("peerlisten serve: ", msg, "\n")
    if code == "EUSAGE" then err("Run 'peerlisten serve --help' for usage.\n") end
    return code == "EUSAGE" and 2 or 1
  end
  local logger, lerr = logger_for(cfg, err)
  if not logger then
    err("peerlisten serve: ", lerr, "\n")
    return 1
  end
  config.log_notes(cfg, logger)
  local prev_hook = peerlisten.set_log_hook(logger:hook())
  -- the probe responder speaks HTTP/1.1: offer that in ALPN instead of etcd's h2
  local peers, perr = peerlisten.configure_peer_listeners(cfg, { logger = logger, tls = { alpn = { "http/1.1" } } })
  if not peers then
    err("peerlisten serve: ", perr, "\n")
    peerlisten.set_log_hook(prev_hook)
    logger:close()
    return 1
  end
  local got
  local function on_signal(name)
    got = name
    peerlisten.stop()
  end
  local hint = peerlisten.on_signal("SIGINT", on_signal)
  local hterm = peerlisten.on_signal("SIGTERM", on_signal)
  peers:serve(responder.handler { logger = logger })
  peerlisten.run()
  if got then
    logger:info("received signal; shutting down", { signal = got == "SIGINT" and "interrupt" or "terminated" })
  else
    logger:error("event loop ended without a signal; shutting down")
  end
  logger:info("closing peer listeners", { name = cfg.name, ["data-dir"] = cfg.data_dir })
  peers:close(1)
  logger:info("closed peer listeners", { name = cfg.name, ["data-dir"] = cfg.data_dir })
  hint:close()
  hterm:close()
  peerlisten.set_log_hook(prev_hook)
  logger:close()
  return got and 0 or 1
end

-- check --------------------------------------------------------------------

local function field_text(fields)
  local keys = {}
  for k in pairs(fields or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. log.encode(fields[k]) end
  return table.concat(parts, " ")
end

local function cmd_check(args, out, err, env)
  local flags, rest = cli_args.parse(commands.check, args)
  if not flags then
    err("peerlisten check: ", rest, "\n", "Run 'peerlisten check --help' for usage.\n")
    return 2
  end
  local prof, how, vwarn = choose_version(flags, env)
  if not prof then
    err("peerlisten check: ", how, "\n", "Run 'peerlisten check --help' for usage.\n")
    return 2
  end
  local cfg, msg, code, extra = load_config(rest, env, prof)
  local report = cfg and peerlisten.check(cfg, { explain = flags.explain, strict = flags.strict,
    bind = not flags["no-bind"], peers = flags.peers, env = env or os.getenv })
    or check.failure(msg, code, { etcd_version = prof.version, differences = extra and extra.differences })
  report.etcd_version_source = how
  if vwarn then table.insert(report.warnings, 1, { level = "warn", msg = vwarn }) end

  if flags.json then
    out(log.encode(report), "\n")
  elseif code ~= "EUSAGE" then
    local v = "etcd " .. report.etcd_version
    out("predicting for ", v, " (", how, ")\n")
    if report.explain then
      out("Effective configuration (value, source):\n")
      for _, row in ipairs(config.explain(cfg)) do out("  ", row.text, "\n") end
    end
    for _, w in ipairs(report.warnings) do
      local f = field_text(w.fields)
      out(w.level, ": ", w.text or w.msg, (f ~= "" and not w.text) and (" (" .. f .. ")") or "", "\n")
    end
    for _, n in ipairs(report.notes) do out("info: ", n.msg, "\n") end
    for _, d in ipairs(report.differences) do
      out("difference from etcd", d.key and (" (" .. d.key .. ")") or "", ": ", d.text, "\n")
    end
    for _, l in ipairs(report.listeners) do
      out("ok: ", l.url, " can be bound (", l.address, l.tls and ", TLS" or "", ")\n")
    end
    for _, c in ipairs(report.certificates) do
      out("ok: certificate ", c.file, " valid until ", tostring(c.not_after), "\n")
    end
    for _, p in ipairs(report.peers or {}) do
      out(p.ok and "ok: " or (p.reachable and "fail: " or "not reachable: "), "peer ", p.name, " ", p.verdict, "\n")
    end
    if report.ok then
      out("PASS: ", v, " would start its peer listeners with this configuration\n")
    elseif report.code == "ESTRICT" then
      out("FAIL: ", v, " would start, but ", tostring(report.error), "\n")
    else
      out("FAIL: ", v, " would not start: ", tostring(report.error), "\n")
    end
  end
  if not report.ok then
    err("peerlisten check: ", tostring(report.error), "\n")
    -- what etcd's flag package refuses (etcd exits 2 and prints its usage)
    if code == "EUSAGE" then
      err("Run 'peerlisten check --help' for usage.\n")
      return 2
    end
    return 1
  end
  return 0
end

-- probe --------------------------------------------------------------------

local function cmd_probe(args, out, err, env)
  local o, rest = cli_args.parse(commands.probe, args)
  if not o then err("peerlisten probe: ", rest, "\n", "Run 'peerlisten probe --help' for usage.\n"); return 2 end
  -- the URL comes before the etcd flags (whose values may be URLs too)
  local target = rest[1] and rest[1]:sub(1, 1) ~= "-" and rest[1] or nil
  local flags = { table.unpack(rest, target and 2 or 1) }
  if not target then
    err("peerlisten probe: a peer URL is required\n", "Run 'peerlisten probe --help' for usage.\n"); return 2
  end
  local timeout = o.timeout
  if timeout and timeout <= 0 then
    err("peerlisten probe: --timeout must be a positive number of seconds\n"); return 2
  end
  local cfg, msg, code = load_config(flags, env)
  if not cfg then
    err("peerlisten probe: ", msg, "\n")
    return code == "EUSAGE" and 2 or 1
  end
  local probe = require "peerlisten.probe"
  local dopts, derr, dcode = probe.member_options(cfg)
  if not dopts then err("peerlisten probe: ", derr, " (", tostring(dcode), ")\n"); return 1 end
  local logger = logger_for(cfg, err)
  dopts.timeout, dopts.source, dopts.logger = timeout, o.source, logger
  local r = probe.probe(target, dopts)
  if logger then logger:close() end
  if o.json then
    out(log.encode(r), "\n")
  else
    out(r.verdict, "\n")
    if r.code then out("  code: ", r.code, " (refused by the ", r.side == "local" and "local side" or
      (r.side == "remote" and "remote side" or "network"), ")\n") end
    if r.local_address then out("  dialled from: ", r.local_address, " to ", r.remote_address, "\n") end
    if r.tls then out("  tls: ", tostring(r.tls.version), " ", tostring(r.tls.cipher), "\n") end
    local sc = r.server_cert
    if sc then
      local sans = {}
      for _, v in ipairs(sc.sans and sc.sans.dns or {}) do sans[#sans + 1] = "DNS:" .. v end
      for _, v in ipairs(sc.sans and sc.sans.ip or {}) do sans[#sans + 1] = "IP:" .. v end
      out("  server certificate: ", tostring(sc.subject), " [", table.concat(sans, ", "), "] expires ",
        tostring(sc.not_after), " (", tostring(sc.days_left), " days)\n")
    end
    if r.version then out("  GET /version: ", r.version.status, " ", (r.version.body:gsub("%s+$", "")), "\n") end
    if r.rtt then out(("  GET /raft/probing: %d, rtt %.3f ms\n"):format(r.probing.status, r.rtt * 1000)) end
  end
  return r.ok and 0 or 1
end

-- cert / inspect --------------------------------------------------------------

local function cert_logger(err)
  return log.new { outputs = { function(line) err(line, "\n") end }, sampling = false, format = log_format(nil) }
end

local function cmd_cert(o, _, out, err)
  local c, k, created = peerlisten.cert.self_signed { dir = o.dir or "default.etcd/fixtures/peer",
    hosts = split(o.hosts or "localhost"), validity_years = o.validity, key_type = o["key-type"],
    logger = cert_logger(err) }
  if not c then err("peerlisten cert: ", k, " (", tostring(created), ")\n"); return 1 end
  out("cert: ", c, "\n", "key: ", k, "\n", "created: ", tostring(created), "\n")
  return 0
end

local function cmd_cert_ca(o, _, out, err)
  local c, k, code = peerlisten.cert.ca { dir = o.dir, name = o.name, validity_years = o.validity,
    key_type = o["key-type"], logger = cert_logger(err) }
  if not c then err("peerlisten cert ca: ", k, " (", tostring(code), ")\n"); return 1 end
  out("ca-cert: ", c, "\n", "ca-key: ", k, "\n")
  return 0
end

local function cmd_cert_issue(o, _, out, err)
  local c, k, code = peerlisten.cert.issue { ca_cert = o["ca-cert"], ca_key = o["ca-key"], dir = o.dir,
    name = o.name, hosts = split(o.hosts), sans = o.sans and split(o.sans) or nil, validity_years = o.validity,
    key_type = o["key-type"], logger = cert_logger(err) }
  if not c then err("peerlisten cert issue: ", k, " (", tostring(code), ")\n"); return 1 end
  out("cert: ", c, "\n", "key: ", k, "\n")
  return 0
end

local function cmd_inspect(o, files, out, err)
  local cert = peerlisten.cert
  local info, e, code = cert.inspect(files[1])
  if not info then err("peerlisten inspect: ", e, " (", tostring(code), ")\n"); return 1 end
  if o.json then out(log.encode(info), "\n") else out(cert.format(info), "\n") end
  return 0
end

-- Commands whose declaration is parsed here: fn(opts, positional, out, err).
local PARSED = { cert = cmd_cert, ["cert ca"] = cmd_cert_ca, ["cert issue"] = cmd_cert_issue,
  inspect = cmd_inspect }

-- Commands that parse their own words: fn(args, out, err, env).
local COMMANDS = { serve = cmd_serve, check = cmd_check, probe = cmd_probe }

-- The declared command `args` names ("cert ca" before "cert") and the words after it.
local function resolve(args)
  local two = args[2] and commands[args[1] .. " " .. args[2]]
  if two then return two, { table.unpack(args, 3) } end
  return commands[args[1]], { table.unpack(args, 2) }
end

--- Runs the command line `args` (without the program name).
-- @tparam table args
-- @tparam[opt] table streams `stdout`, `stderr` (files or objects with
-- `:write`), `env` (os.getenv or a table, for the ETCD_* variables), `tty`
-- (whether stderr is a terminal: console logs; default: asks the terminal
-- when stderr is the process's own)
-- @treturn integer exit status: 0 ok, 1 failure, 2 usage error
function M.main(args, streams)
  streams = streams or {}
  local out = writer(streams.stdout or io.stdout)
  local err = writer(streams.stderr or io.stderr)
  stderr_tty = streams.tty
  if stderr_tty == nil then
    stderr_tty = (streams.stderr == nil or streams.stderr == io.stderr) and os.execute("test -t 2") == true
  end
  local cmd = args[1]
  if cmd == nil then
    err(M.USAGE)
    return 2
  end
  if cmd == "help" or cli_args.is_help(cmd) then
    local decl = args[2] and resolve { table.unpack(args, 2) }
    if not decl and args[2] == "cluster" then out(commands.group_usage("cluster")) return 0 end
    out(decl and cli_args.help(decl) or M.USAGE)
    return 0
  end
  if cmd == "version" or cmd == "--version" then
    out("peerlisten ", peerlisten._VERSION, "\n")
    return 0
  end
  if cmd == "cluster" then
    return require("peerlisten.cli_cluster").main({ table.unpack(args, 2) }, out, err)
  end
  local decl, rest = resolve(args)
  if not decl then
    err("peerlisten: unknown command '", tostring(cmd), "'\n", M.USAGE)
    return 2
  end
  for _, a in ipairs(rest) do
    if cli_args.is_help(a) then
      out(cli_args.help(decl))
      return 0
    end
  end
  local fn = COMMANDS[decl.name]
  if fn then return fn(rest, out, err, streams.env) end
  local opts, pos = cli_args.parse(decl, rest)
  if not opts then
    err("peerlisten ", decl.name, ": ", pos, "\n", "Run 'peerlisten ", decl.name, " --help' for usage.\n")
    return 2
  end
  return PARSED[decl.name](opts, pos, out, err)
end

return M
