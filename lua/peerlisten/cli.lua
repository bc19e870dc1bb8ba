--- The `peerlisten` command: serve, check, cert, inspect.
--
-- `main(args, io)` runs one command and returns its exit status: 0 ok, 1
-- failure, 2 usage error. Messages go to `io.stderr`, data to `io.stdout`
-- (both replaceable for specs); logs are zap JSON lines on stderr unless the
-- configuration's log settings say otherwise. This module is the only place
-- that writes to the terminal; the library never exits.
-- @module peerlisten.cli

local peerlisten = require "peerlisten"
local serve = require "peerlisten.serve"
local etcd_versions = require "peerlisten.etcd_versions"
local startup = require "peerlisten.startup"

local config = peerlisten.config
local log = peerlisten.log

local M = {}

M.USAGE = [[
Usage: peerlisten <command> [options]

Commands:
  serve [--etcd-version V | --etcd BIN] [etcd flags | --config-file FILE]
      Configure the peer listeners as etcd does and answer peer probes
      (GET /health, GET /version) until SIGINT or SIGTERM.
  check [--json] [--explain] [--etcd-version V | --etcd BIN] [etcd flags | --config-file FILE]
      Preflight: would this etcd version start its peer listeners? Loads and
      validates as that version, binds every URL, loads every TLS file,
      releases everything, prints a verdict.
  cert [--dir DIR] [--hosts h1,h2] [--validity YEARS] [--key-type TYPE]
      Create (or reuse) etcd's auto-TLS certificate pair in DIR.
  cert ca --dir DIR [--name NAME] [--validity YEARS] [--key-type TYPE]
  cert issue --ca-cert F --ca-key F --dir DIR --name NAME --hosts h1,h2
      Create a cluster CA; issue a member certificate signed by it.
  inspect [--json] FILE
      Show a certificate (or chain) in PEM.
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
  check = [[
Usage: peerlisten check [--json] [--explain] [--etcd-version V | --etcd BIN]
                        [etcd flags | --config-file FILE]

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
              certificates, etcd_version, differences
  --explain   also every effective setting and where it came from
Exit status 0 (PASS) only when that etcd would start its peer listeners with
this configuration; 1 (FAIL) when it would not; 2 for what etcd's flag package
refuses too (unknown flag, malformed flag value: etcd exits 2 as well).
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
-- version (--etcd BIN or etcd on PATH), else the newest modelled.
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
  args = rest
  local cfg, msg, code = load_config(args, env, prof)
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
  local prev_hook = peerlisten.core.set_log_hook(logger:hook())
  -- the probe responder speaks HTTP/1.1: offer that in ALPN instead of etcd's h2
  local peers, perr = peerlisten.configure_peer_listeners(cfg, { logger = logger, tls = { alpn = { "http/1.1" } } })
  if not peers then
    err("peerlisten serve: ", perr, "\n")
    peerlisten.core.set_log_hook(prev_hook)
    logger:close()
    return 1
  end
  local got
  local function on_signal(name)
    got = name
    peerlisten.stop()
  end
  local hint = peerlisten.core.on_signal("SIGINT", on_signal)
  local hterm = peerlisten.core.on_signal("SIGTERM", on_signal)
  peers:serve(serve.handler { logger = logger })
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
  peerlisten.core.set_log_hook(prev_hook)
  logger:close()
  return got and 0 or 1
end

-- check --------------------------------------------------------------------

local function url_hosts(cfg, schemes)
  local hosts = {}
  for _, s in ipairs(cfg.listen_peer_urls) do
    local u = peerlisten.url.parse(s)
    if u and schemes[u.scheme] and u.host and u.host ~= "" then hosts[#hosts + 1] = u.host end
  end
  return hosts
end

local function contains(list, v)
  for _, x in ipairs(list or {}) do if x == v then return true end end
  return false
end

-- Certificate checks beyond what etcd does at startup: warnings only.
-- `auto`: the pair is etcd's auto-TLS one, whose peers verify nothing.
local function check_certs(cfg, policy_files, warn, certs, auto)
  local ok, cert = pcall(require, "peerlisten.cert")
  if not ok then return end
  local p = policy_files
  if p.cert_file == "" or p.key_file == "" then return end
  local info = cert.inspect(p.cert_file)
  if not info then return end
  if info.subject == nil then info = info[1] end
  local entry = { file = p.cert_file, subject = info.subject, not_after = info.not_after_rfc3339,
    days_left = info.days_left, sans = info.sans }
  certs[#certs + 1] = entry
  if auto then return end
  local mok, merr = cert.matches_key(p.cert_file, p.key_file)
  if not mok then warn("peer certificate and key do not match", { ["cert-file"] = p.cert_file, error = merr }) end
  local now = os.time()
  if info.not_after and info.not_after < now then
    warn("peer certificate has expired", { ["cert-file"] = p.cert_file, ["not-after"] = info.not_after_rfc3339 })
  elseif info.not_after and info.not_after - now < 30 * 86400 then
    warn("peer certificate expires within 30 days",
      { ["cert-file"] = p.cert_file, ["not-after"] = info.not_after_rfc3339 })
  elseif info.not_before and info.not_before > now then
    warn("peer certificate is not valid yet", { ["cert-file"] = p.cert_file })
  end
  local sans = info.sans or {}
  for _, h in ipairs(url_hosts(cfg, { https = true })) do
    local unspecified = h == "0.0.0.0" or h == "::"
    if not unspecified and not contains(sans.ip, h) and not contains(sans.dns, h) then
      warn("peer certificate does not cover the URL host", { ["cert-file"] = p.cert_file, host = h })
    end
  end
  local eku = info.ext_key_usage or {}
  if #eku > 0 then
    local function has(u)
      for _, x in ipairs(eku) do if x:lower():find(u, 1, true) then return true end end
      return false
    end
    if not has("server") then
      warn("peer certificate lacks the serverAuth extended key usage", { ["cert-file"] = p.cert_file })
    end
    if p.client_cert_file == "" and not has("client") then
      warn("peer certificate lacks the clientAuth extended key usage (peers dial with it)",
        { ["cert-file"] = p.cert_file })
    end
  end
  if p.trusted_ca_file ~= "" and cert.verify then
    local vok, verr = cert.verify(p.client_cert_file ~= "" and p.client_cert_file or p.cert_file,
      p.trusted_ca_file, "client")
    if not vok then
      warn("peer client certificate does not verify against the trusted CA",
        { ["trusted-ca-file"] = p.trusted_ca_file, error = verr })
    end
  end
end

local function field_text(fields)
  local keys = {}
  for k in pairs(fields or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. log.encode(fields[k]) end
  return table.concat(parts, " ")
end

-- The stages etcd runs after configuring its listeners (and the CRL the
-- listener reads per handshake). Returns nil or the failure message and code;
-- `note(level, msg, fields)` records the rest.
local function after_listeners(cfg, note, diffs)
  local ok, e, c = startup.peer_client(cfg)
  if not ok then return e, c end
  local crl, cerr, ccode = startup.crl(cfg)
  if crl == nil then
    local fields = { ["crl-file"] = cfg.peer_transport_security.crl_file, error = cerr }
    if startup.mtls(cfg) then
      diffs[#diffs + 1] = { id = "crl_checked", text = etcd_versions.DIFFERENCES.crl_checked,
        key = "peer-crl-file" }
      return ("peer CRL file %s cannot be used (%s): every peer presenting a client certificate would be refused")
        :format(cfg.peer_transport_security.crl_file, cerr), ccode
    end
    note("warn", "peer CRL file cannot be used; a peer presenting a client certificate would be refused", fields)
  elseif crl then
    if crl.next_update and crl.next_update < os.time() then
      note("warn", "peer CRL is past its nextUpdate", { ["crl-file"] = crl.file })
    end
  end
  return nil
end

local function cmd_check(args, out, err, env)
  local flags = {}
  local rest = {}
  for _, a in ipairs(args) do
    if a == "--json" or a == "-json" then flags.json = true
    elseif a == "--explain" or a == "-explain" then flags.explain = true
    else rest[#rest + 1] = a end
  end
  local vo, vrest = version_args(rest)
  if not vo then
    err("peerlisten check: ", vrest, "\n", "Run 'peerlisten check --help' for usage.\n")
    return 2
  end
  local prof, how, vwarn = choose_version(vo, env)
  if not prof then
    err("peerlisten check: ", how, "\n", "Run 'peerlisten check --help' for usage.\n")
    return 2
  end
  local report = { ok = false, warnings = {}, listeners = {}, certificates = {}, infos = {},
    etcd_version = prof.version, etcd_version_source = how }
  if vwarn then report.warnings[#report.warnings + 1] = { level = "warn", msg = vwarn } end
  local cfg, msg, code, extra = load_config(vrest, env, prof)
  local diffs = cfg and cfg._differences or (extra and extra.differences) or {}
  if not cfg and code == "EUSAGE" then
    if flags.json then
      out(log.encode { ok = false, error = msg, code = code, etcd_version = prof.version,
        etcd_version_source = how, differences = diffs, warnings = {}, listeners = {}, certificates = {},
        notes = {} }, "\n")
    end
    err("peerlisten check: ", msg, "\n", "Run 'peerlisten check --help' for usage.\n")
    return 2
  end
  local capture = log.capture { level = "info" }
  for _, n in ipairs(cfg and cfg._notes or {}) do
    if n.level ~= "info" and n.level ~= "debug" then
      report.warnings[#report.warnings + 1] = { level = n.level, msg = n.msg, fields = n.fields, text = n.text }
    end
  end
  if cfg then
    local pts = cfg.peer_transport_security
    local lok, lerr, lcode = startup.log_outputs(cfg)
    local peers, perr, pcode
    if lok then
      peers, perr, pcode = peerlisten.configure_peer_listeners(cfg, { logger = capture })
    else
      perr, pcode = lerr, lcode
    end
    if peers then
      for i = 1, #peers do
        report.listeners[i] = { url = peers[i]:url(), address = peerlisten.bound_address(peers[i]),
          tls = peers[i]:tls() ~= nil }
      end
      local files = {
        cert_file = pts.cert_file, key_file = pts.key_file, client_cert_file = pts.client_cert_file,
        trusted_ca_file = pts.trusted_ca_file,
      }
      if peers.policy and peers.policy.info then
        local info = peers.policy:info()
        files.cert_file, files.key_file = info.cert_file or files.cert_file, info.key_file or files.key_file
      end
      peers:close(1)
      if peers.policy then peers.policy:close() end   -- a preflight keeps nothing open
      local auto = pts.auto_tls and pts.cert_file == "" and pts.key_file == ""
      local function note(level, m, f) capture:log(level, m, f) end
      local aerr, acode = after_listeners(cfg, note, diffs)
      if aerr then
        msg, code = aerr, acode
      else
        report.ok = true
        if auto then
          -- etcd's auto-TLS peers skip certificate verification: usages and
          -- names of the generated certificate do not matter
          report.infos[#report.infos + 1] = { level = "info",
            msg = "peer auto-TLS: peers do not verify each other's certificates (etcd skips verification "
              .. "for auto-TLS peers)" }
        end
        check_certs(cfg, files, function(m, f) capture:warn(m, f) end, report.certificates, auto)
      end
    else
      msg, code = perr, pcode
      if perr and perr:find("leave no TLS 1.2 cipher suite", 1, true) then
        diffs[#diffs + 1] = { id = "tls12_without_suite", text = etcd_versions.DIFFERENCES.tls12_without_suite }
      end
    end
  end
  for _, e in ipairs(capture.entries) do
    if e.level ~= "info" and e.level ~= "debug" then
      report.warnings[#report.warnings + 1] = { level = e.level, msg = e.msg, fields = e.fields }
    end
  end
  if not report.ok then report.error, report.code = msg, code end
  if flags.explain and cfg then report.explain = config.explain(cfg) end
  report.differences = diffs

  local v = "etcd " .. prof.version
  if flags.json then
    local j = { ok = report.ok, error = report.error, code = report.code, warnings = report.warnings,
      listeners = report.listeners, certificates = report.certificates, notes = report.infos,
      etcd_version = report.etcd_version, etcd_version_source = report.etcd_version_source,
      differences = report.differences }
    if report.explain then
      j.explain = {}
      for i, row in ipairs(report.explain) do
        j.explain[i] = { key = row.yaml, value = row.value, source = row.source }
      end
    end
    out(log.encode(j), "\n")
  else
    out("predicting for ", v, " (", how, ")\n")
    if report.explain then
      out("Effective configuration (value, source):\n")
      for _, row in ipairs(report.explain) do out("  ", row.text, "\n") end
    end
    for _, w in ipairs(report.warnings) do
      local f = field_text(w.fields)
      out(w.level, ": ", w.text or w.msg, (f ~= "" and not w.text) and (" (" .. f .. ")") or "", "\n")
    end
    for _, i in ipairs(report.infos) do out("info: ", i.msg, "\n") end
    for _, d in ipairs(report.differences) do
      out("difference from etcd", d.key and (" (" .. d.key .. ")") or "", ": ", d.text, "\n")
    end
    for _, l in ipairs(report.listeners) do
      out("ok: ", l.url, " can be bound (", l.address, l.tls and ", TLS" or "", ")\n")
    end
    for _, c in ipairs(report.certificates) do
      out("ok: certificate ", c.file, " valid until ", tostring(c.not_after), "\n")
    end
    if report.ok then
      out("PASS: ", v, " would start its peer listeners with this configuration\n")
    else
      out("FAIL: ", v, " would not start: ", tostring(report.error), "\n")
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
  local cert = require "peerlisten.cert"
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
  local cert = require "peerlisten.cert"
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
