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
local etcd_versions = require "peerlisten.etcd_versions"
local responder = require "peerlisten.responder"

local config = peerlisten.config
local log = peerlisten.log

local M = {}

M.USAGE = [[
Usage: peerlisten <command> [options]

Commands:
  serve [--etcd-version V | --etcd BIN] [etcd flags | --config-file FILE]
      Configure the peer listeners as etcd does and answer peer probes
      (GET /health, GET /version) until SIGINT or SIGTERM.
  check [--json] [--explain] [--strict] [--no-bind] [--peers] [--etcd-version V | --etcd BIN]
        [etcd flags | --config-file FILE]
      Preflight: would this etcd version start its peer listeners? Loads and
      validates as that version, binds every URL, loads every TLS file,
      checks the cluster (membership, SANs, dial sources), releases
      everything, prints a verdict.
  probe URL [--json] [--timeout S] [--source IP] [etcd flags | --config-file FILE]
      Dial a peer URL with this member's peer TLS settings and speak to it
      as an etcd peer does; exit 0 only when the link would work for etcd.
  cert [--dir DIR] [--hosts h1,h2] [--validity YEARS] [--key-type TYPE]
      Create (or reuse) etcd's auto-TLS certificate pair in DIR.
  cert ca --dir DIR [--name NAME] [--validity YEARS] [--key-type TYPE]
  cert issue --ca-cert F --ca-key F --dir DIR --name NAME --hosts h1,h2
      Create a cluster CA; issue a member certificate signed by it.
  inspect [--json] FILE
      Show a certificate (or chain) in PEM.
  cluster plan|init|status|check ...
      Bootstrap a cluster from one description (`peerlisten cluster --help`).
  help, --help, -h      this text; `peerlisten <command> --help` for one command
  version, --version

Exit status: 0 ok (check: PASS), 1 failure (check: FAIL), 2 usage error
(also what etcd's flag package refuses: unknown flag, malformed value).
]]

local HELP = {
  serve = [[
Usage: peerlisten serve [--etcd-version V | --etcd BIN] [etcd flags | --config-file FILE]

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
Other etcd flags are accepted and ignored. Flags and keys follow the etcd
version chosen as for `check` (so --etcd-version 3.4 refuses
--socket-reuse-port, as etcd 3.4 does).
]],
  probe = [[
Usage: peerlisten probe URL [--json] [--timeout S] [--source IP] [etcd flags | --config-file FILE]

Dials URL as this member's etcd would dial a peer: its peer certificate
(--peer-client-cert-file/--peer-client-key-file, else --peer-cert-file/
--peer-key-file; auto-TLS: its self-signed pair), --peer-trusted-ca-file to
verify the server (name from the URL host), --cipher-suites and the TLS
versions. Then GET /version and GET /raft/probing. Prints one verdict line
and the details (TLS version, cipher, server certificate, the local address
dialled from, round-trip time).
  --json        one JSON object (see peerlisten.probe)
  --timeout S   connect + handshake and each request (default 5)
  --source IP   dial from this address (default: the kernel's route)
Failure codes: ECONNREFUSED, ETIMEDOUT, ENOTTLS, ESERVERCERT (we refuse the
server's certificate), EPEERREJECTED (the server refuses ours), EALPN,
EHTTP (not an etcd peer), ETLS.
Exit status 0 only when the link works; 1 otherwise; 2 for a usage error.
]],
  check = [[
Usage: peerlisten check [--json] [--explain] [--strict] [--no-bind] [--peers]
                        [--etcd-version V | --etcd BIN] [etcd flags | --config-file FILE]

Predicts whether etcd would start its peer listeners with this configuration:
loads it as that etcd version does (flags, ETCD_* variables, YAML types),
opens the log outputs, binds every URL, builds every TLS policy (generating
the auto-TLS pair if configured), loads the peer key pair and CA as etcd's
peer client does (also for http URLs) and the CRL file as the listener does,
checks certificates (expiry, SANs covering the URL hosts, key usages), then
releases everything. Prints warnings and a verdict on stdout.
  --etcd-version V  3.4, 3.5, 3.6 (modelled as 3.4.23, 3.5.33, 3.6.14) or a
              full version such as 3.5.9; default: what `etcd --version`
              reports (--etcd BIN, or etcd on PATH), else the newest
  --json      one JSON object: ok, error, code, warnings, listeners,
              certificates, etcd_version, differences, cluster, peers
  --explain   also every effective setting and where it came from
  --strict    every certificate or cluster warning fails the check
  --no-bind   do not bind the URLs (a member that is running); certificate
              and cluster checks still run
  --peers     probe every other member of --initial-cluster with this
              member's certificate (peerlisten probe) and report the row
With --name, --initial-cluster and --initial-advertise-peer-urls set, also:
the name is in --initial-cluster with exactly the advertise URLs (etcd's
rule), the certificate names every advertise URL host, and (peer client
certificate auth on) the source address this host dials each other member
from, since those members check it against the certificate's SANs.
Exit status 0 (PASS) only when that etcd would start its peer listeners with
this configuration (and, with --strict, no certificate or cluster warning);
1 (FAIL) otherwise; 2 for what etcd's flag package refuses too (unknown flag,
malformed flag value: etcd exits 2 as well).
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

local function logger_for(cfg, stderr)
  local outputs = {}
  for _, o in ipairs(cfg and cfg.log_outputs or { "stderr" }) do
    if o == "default" or o == "stderr" then outputs[#outputs + 1] = function(line) stderr(line, "\n") end
    else outputs[#outputs + 1] = o end
  end
  return log.new { level = cfg and cfg.log_level or "info", format = cfg and cfg.log_format or "json",
    outputs = outputs }
end

-- Takes --etcd-version V and --etcd BIN out of args; returns them and the rest.
local function version_args(args)
  local o, rest = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local name, value = a:match("^%-%-?(etcd%-version)=(.*)$")
    if not name then name, value = a:match("^%-%-?(etcd)=(.*)$") end
    if not name then name = a:match("^%-%-?(etcd%-version)$") or a:match("^%-%-?(etcd)$") end
    if name then
      if value == nil then
        i = i + 1
        value = args[i]
        if value == nil then return nil, ("option --%s needs a value"):format(name) end
      end
      o[name == "etcd" and "bin" or "version"] = value
    else
      rest[#rest + 1] = a
    end
    i = i + 1
  end
  return o, rest
end

-- The etcd profile to follow: --etcd-version, else the installed etcd's
-- version (--etcd BIN, or etcd on the PATH of env), else the newest modelled.
local function choose_version(o, env)
  local path
  if type(env) == "table" then path = env.PATH
  else path = (env or os.getenv)("PATH") end
  return etcd_versions.choose { version = o.version, bin = o.bin, path = path }
end

local function load_config(args, env, prof)
  return config.load { args = args, env = env or os.getenv, etcd_version = prof }
end

-- serve --------------------------------------------------------------------

local function cmd_serve(args, _, err, env)
  local vo, rest = version_args(args)
  if not vo then
    err("peerlisten serve: ", rest, "\n")
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

local CHECK_FLAGS = { json = "json", explain = "explain", strict = "strict", ["no-bind"] = "no_bind",
  peers = "peers" }

local function cmd_check(args, out, err, env)
  local flags = {}
  local rest = {}
  for _, a in ipairs(args) do
    local f = CHECK_FLAGS[a:match("^%-%-?([%w-]+)$") or ""]
    if f then flags[f] = true
    else rest[#rest + 1] = a end
  end
  local vo, vrest = version_args(rest)
  local prof, how, vwarn
  if vo then prof, how, vwarn = choose_version(vo, env) end
  if not prof then
    err("peerlisten check: ", vo and how or vrest, "\n", "Run 'peerlisten check --help' for usage.\n")
    return 2
  end
  local cfg, msg, code, extra = load_config(vrest, env, prof)
  local report = cfg and peerlisten.check(cfg, { explain = flags.explain, strict = flags.strict,
    bind = not flags.no_bind, peers = flags.peers, env = env or os.getenv })
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
  local o, rest = getopt(args, { json = "flag", timeout = "value", source = "value" }, true)
  if not o then err("peerlisten probe: ", rest, "\n"); return 2 end
  -- the URL comes before the etcd flags (whose values may be URLs too)
  local target = rest[1] and rest[1]:sub(1, 1) ~= "-" and rest[1] or nil
  local flags = { table.unpack(rest, target and 2 or 1) }
  if not target then err("peerlisten probe: a peer URL is required\n", HELP.probe); return 2 end
  local timeout = o.timeout and tonumber(o.timeout)
  if o.timeout and not (timeout and timeout > 0) then
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

-- The --validity option: nil when absent, a number, or false when it is not a number.
local function validity_of(o)
  if o.validity == nil then return nil end
  return tonumber(o.validity) or false
end

local function cmd_cert(args, out, err)
  local cert = peerlisten.cert
  local sub = args[1]
  local logger = log.new { outputs = { function(line) err(line, "\n") end }, sampling = false }
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

local COMMANDS = { serve = cmd_serve, check = cmd_check, probe = cmd_probe, cert = cmd_cert, inspect = cmd_inspect }

--- Runs the command line `args` (without the program name).
-- @tparam table args
-- @tparam[opt] table streams `stdout`, `stderr` (files or objects with
-- `:write`), `env` (os.getenv or a table, for the ETCD_* variables)
-- @treturn integer exit status: 0 ok, 1 failure, 2 usage error
function M.main(args, streams)
  streams = streams or {}
  local out = writer(streams.stdout or io.stdout)
  local err = writer(streams.stderr or io.stderr)
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
  if cmd == "cluster" then
    return require("peerlisten.cli_cluster").main({ table.unpack(args, 2) }, out, err)
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
