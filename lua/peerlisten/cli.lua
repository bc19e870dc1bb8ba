--- The `peerlisten` command: serve, check, cert, inspect.
--
-- `main(args, io)` runs one command and returns its exit status: 0 ok, 1
-- failure, 2 usage error. Messages go to `io.stderr`, data to `io.stdout`
-- (both replaceable for specs); logs are zap JSON lines on stderr unless the
-- configuration's log settings say otherwise. This module is the only place
-- that writes to the terminal; the library never exits.
-- @module peerlisten.cli

local peerlisten = require "peerlisten"
local check = require "peerlisten.check"
local responder = require "peerlisten.responder"

local config = peerlisten.config
local log = peerlisten.log

local M = {}

M.USAGE = [[
Usage: peerlisten <command> [options]

Commands:
  serve [etcd flags | --config-file FILE]
      Configure the peer listeners as etcd does and answer peer probes
      (GET /health, GET /version) until SIGINT or SIGTERM.
  check [--json] [--explain] [etcd flags | --config-file FILE]
      Preflight: load and validate, bind every URL, build every TLS policy,
      check certificates and keys, release everything, print a verdict.
  cert [--dir DIR] [--hosts h1,h2] [--validity YEARS] [--key-type TYPE]
      Create (or reuse) etcd's auto-TLS certificate pair in DIR.
  cert ca --dir DIR [--name NAME] [--validity YEARS] [--key-type TYPE]
  cert issue --ca-cert F --ca-key F --dir DIR --name NAME --hosts h1,h2
      Create a cluster CA; issue a member certificate signed by it.
  inspect [--json] FILE
      Show a certificate (or chain) in PEM.
  help, --help, -h      this text; `peerlisten <command> --help` for one command
  version, --version

Exit status: 0 ok, 1 failure, 2 usage error.
]]

local HELP = {
  serve = [[
Usage: peerlisten serve [etcd flags | --config-file FILE]

Configures etcd's peer listeners (etcd's flags, ETCD_* variables or an etcd
YAML config file, with etcd's precedence) and serves each connection with a
small HTTP/1.1 peer-probe responder (keep-alive): GET /health -> 200
{"health":"true"}, GET /version -> 200 JSON, anything else -> 404.
SIGINT or SIGTERM closes every listener (1 s each) and exits 0.
With no arguments it runs on etcd's defaults (http://localhost:2380,
data dir default.etcd).

Peer flags: --listen-peer-urls, --peer-cert-file, --peer-key-file,
  --peer-client-cert-file, --peer-client-key-file, --peer-trusted-ca-file,
  --peer-client-cert-auth, --peer-crl-file, --peer-auto-tls,
  --peer-cert-allowed-cn, --peer-cert-allowed-hostname,
  --peer-skip-client-san-verification, --cipher-suites, --tls-min-version,
  --tls-max-version, --self-signed-cert-validity, --socket-reuse-port,
  --socket-reuse-address, --raft-read-timeout, --raft-write-timeout,
  --name, --data-dir, --log-level, --log-format, --log-outputs, --config-file.
Other etcd flags are accepted and ignored.
]],
  check = [[
Usage: peerlisten check [--json] [--explain] [etcd flags | --config-file FILE]

Runs the whole peer-listener configuration (binding every URL, building every
TLS policy, generating the auto-TLS pair if configured), checks certificates
(key match, expiry, SANs covering the URL hosts, key usages a peer needs),
then releases everything. Prints warnings and a verdict on stdout.
  --json      one JSON object: ok, error, code, warnings, listeners, certificates
  --explain   also every effective setting and where it came from
Exit status 0 only when etcd would start its peer listeners with this
configuration; 1 otherwise; 2 for a malformed command line.
]],
  cert = [[
Usage: peerlisten cert [--dir DIR] [--hosts h1,h2] [--validity YEARS] [--key-type TYPE]
       peerlisten cert ca --dir DIR [--name NAME] [--validity YEARS] [--key-type TYPE]
       peerlisten cert issue --ca-cert F --ca-key F --dir DIR --name NAME --hosts h1,h2
                             [--sans s1,s2] [--validity YEARS] [--key-type TYPE]

Without a subcommand: etcd's auto-TLS pair (cert.pem, key.pem) in DIR
(default default.etcd/fixtures/peer), reused when still valid.
Key types: ecdsa-p521 (etcd's), ecdsa-p256, ecdsa-p384, ed25519, rsa-2048.
Prints the files written on stdout.
]],
  inspect = [[
Usage: peerlisten inspect [--json] FILE

Prints a certificate (or every certificate of a chain file): subject, issuer,
serial, validity, SANs, key usages, key, fingerprint.
]],
}

local function writer(stream)
  return function(...) stream:write(...) end
end

-- Splits "--name=value" / "--name value" options known to a subcommand.
-- spec: name -> "flag" (boolean) or "value". Returns opts, rest or nil, err.
local function getopt(args, spec, stop_at_unknown)
  local opts, rest = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local name, value = a:match("^%-%-?([%w-]+)=(.*)$")
    if not name then name = a:match("^%-%-?([%w-]+)$") end
    local kind = name and spec[name]
    if kind == "flag" then
      opts[name] = true
    elseif kind == "value" then
      if value == nil then
        i = i + 1
        value = args[i]
        if value == nil then return nil, ("option --%s needs a value"):format(name) end
      end
      opts[name] = value
    elseif stop_at_unknown then
      rest[#rest + 1] = a
    else
      return nil, ("unknown option %s"):format(a)
    end
    i = i + 1
  end
  return opts, rest
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

local function load_config(args, env)
  return config.load { args = args, env = env or os.getenv }
end

-- serve --------------------------------------------------------------------

local function cmd_serve(args, _, err, env)
  local cfg, msg, code = load_config(args, env)
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
  local flags = {}
  local rest = {}
  for _, a in ipairs(args) do
    if a == "--json" or a == "-json" then flags.json = true
    elseif a == "--explain" or a == "-explain" then flags.explain = true
    else rest[#rest + 1] = a end
  end
  local cfg, msg, code = load_config(rest, env)
  if not cfg and code == "EUSAGE" then
    err("peerlisten check: ", msg, "\n", "Run 'peerlisten check --help' for usage.\n")
    return 2
  end
  local report = cfg and peerlisten.check(cfg, { explain = flags.explain }) or check.failure(msg, code)

  if flags.json then
    out(log.encode(report), "\n")
  else
    if report.explain then
      out("Effective configuration (value, source):\n")
      for _, row in ipairs(config.explain(cfg)) do out("  ", row.text, "\n") end
    end
    for _, w in ipairs(report.warnings) do
      local f = field_text(w.fields)
      out(w.level, ": ", w.text or w.msg, (f ~= "" and not w.text) and (" (" .. f .. ")") or "", "\n")
    end
    for _, l in ipairs(report.listeners) do
      out("ok: ", l.url, " can be bound (", l.address, l.tls and ", TLS" or "", ")\n")
    end
    for _, c in ipairs(report.certificates) do
      out("ok: certificate ", c.file, " valid until ", tostring(c.not_after), "\n")
    end
    if report.ok then
      out("PASS: etcd would start its peer listeners with this configuration\n")
    else
      out("FAIL: ", tostring(report.error), "\n")
    end
  end
  if not report.ok then
    err("peerlisten check: ", tostring(report.error), "\n")
    return 1
  end
  return 0
end

-- cert / inspect --------------------------------------------------------------

-- The --validity option: nil when absent, a number, or false when it is not a number.
local function validity_of(o)
  if o.validity == nil then return nil end
  return tonumber(o.validity) or false
end

local function cmd_cert(args, out, err)
  local cert = peerlisten.cert
  local sub = args[1]
  local logger = log.new { outputs = { function(line) err(line, "\n") end }, sampling = false,
    format = log_format(nil) }
  if sub == "ca" then
    local o, e = getopt({ table.unpack(args, 2) }, { dir = "value", name = "value", validity = "value",
      ["key-type"] = "value" })
    if not o then err("peerlisten cert ca: ", e, "\n"); return 2 end
    if not o.dir then err("peerlisten cert ca: --dir is required\n"); return 2 end
    local validity = validity_of(o)
    if validity == false then err("peerlisten cert ca: --validity must be a number\n"); return 2 end
    local c, k, code = cert.ca { dir = o.dir, name = o.name, validity_years = validity,
      key_type = o["key-type"], logger = logger }
    if not c then err("peerlisten cert ca: ", k, " (", tostring(code), ")\n"); return 1 end
    out("ca-cert: ", c, "\n", "ca-key: ", k, "\n")
    return 0
  elseif sub == "issue" then
    local o, e = getopt({ table.unpack(args, 2) }, { ["ca-cert"] = "value", ["ca-key"] = "value", dir = "value",
      name = "value", hosts = "value", sans = "value", validity = "value", ["key-type"] = "value" })
    if not o then err("peerlisten cert issue: ", e, "\n"); return 2 end
    for _, req in ipairs { "ca-cert", "ca-key", "dir", "name", "hosts" } do
      if not o[req] then err("peerlisten cert issue: --", req, " is required\n"); return 2 end
    end
    local validity = validity_of(o)
    if validity == false then err("peerlisten cert issue: --validity must be a number\n"); return 2 end
    local c, k, code = cert.issue { ca_cert = o["ca-cert"], ca_key = o["ca-key"], dir = o.dir, name = o.name,
      hosts = split(o.hosts), sans = o.sans and split(o.sans) or nil, validity_years = validity,
      key_type = o["key-type"], logger = logger }
    if not c then err("peerlisten cert issue: ", k, " (", tostring(code), ")\n"); return 1 end
    out("cert: ", c, "\n", "key: ", k, "\n")
    return 0
  end
  local o, e = getopt(args, { dir = "value", hosts = "value", validity = "value", ["key-type"] = "value" })
  if not o then err("peerlisten cert: ", e, "\n"); return 2 end
  local validity = validity_of(o)
  if validity == false then err("peerlisten cert: --validity must be a number\n"); return 2 end
  local c, k, created = cert.self_signed { dir = o.dir or "default.etcd/fixtures/peer",
    hosts = split(o.hosts or "localhost"), validity_years = validity, key_type = o["key-type"], logger = logger }
  if not c then err("peerlisten cert: ", k, " (", tostring(created), ")\n"); return 1 end
  out("cert: ", c, "\n", "key: ", k, "\n", "created: ", tostring(created), "\n")
  return 0
end

local function cmd_inspect(args, out, err)
  local cert = peerlisten.cert
  local json = false
  local files = {}
  for _, a in ipairs(args) do
    if a == "--json" then json = true
    elseif a:sub(1, 1) == "-" and a ~= "-" then err("peerlisten inspect: unknown option ", a, "\n"); return 2
    else files[#files + 1] = a end
  end
  if #files ~= 1 then err("peerlisten inspect: exactly one FILE expected\n", HELP.inspect); return 2 end
  local info, e, code = cert.inspect(files[1])
  if not info then err("peerlisten inspect: ", e, " (", tostring(code), ")\n"); return 1 end
  if json then out(log.encode(info), "\n") else out(cert.format(info), "\n") end
  return 0
end

local COMMANDS = { serve = cmd_serve, check = cmd_check, cert = cmd_cert, inspect = cmd_inspect }

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
  if cmd == "help" or cmd == "--help" or cmd == "-h" or cmd == "-help" then
    local topic = args[2]
    out(topic and HELP[topic] or M.USAGE)
    return 0
  end
  if cmd == "version" or cmd == "--version" then
    out("peerlisten ", peerlisten._VERSION, "\n")
    return 0
  end
  local fn = COMMANDS[cmd]
  if not fn then
    err("peerlisten: unknown command '", tostring(cmd), "'\n", M.USAGE)
    return 2
  end
  local rest = { table.unpack(args, 2) }
  for _, a in ipairs(rest) do
    if a == "--help" or a == "-h" or a == "-help" then
      out(HELP[cmd])
      return 0
    end
  end
  return fn(rest, out, err, streams.env)
end

return M
