--- The commands of `peerlisten`: one declaration each (see peerlisten.cli_args),
-- read by the parser and printed by `--help`.
-- @module peerlisten.cli_commands

local cert = require "peerlisten.cert"
local cli_args = require "peerlisten.cli_args"
local config = require "peerlisten.config"

local M = {}

local EXIT_USAGE = { 2, "usage error: unknown option, missing or malformed value (nothing is written)" }

-- etcd's flags, as config.load reads them: the peer-listener ones with their
-- variable and default, then the others (accepted and ignored).
local META = { urls = "URLS", list = "A,B", bool = nil, uint = "N", duration = "DURATION", string = "VALUE" }

local function show_default(d)
  if type(d) == "table" then return #d > 0 and table.concat(d, ",") or nil end
  if d == "" or d == false then return nil end
  return tostring(d)
end

local function etcd_flags()
  local peer = { { "config-file", "FILE", "etcd's YAML config file (ETCD_CONFIG_FILE); when given, the other flags "
    .. "and ETCD_* variables are ignored, as etcd does" } }
  local names, aliases, versioned = config.other_flags()
  for _, o in ipairs(config.options()) do
    local meta
    if o.type ~= "bool" then
      meta = o.flag:match("file$") and "FILE" or o.flag:match("dir$") and "DIR" or META[o.type] or "VALUE"
    end
    local text = o.env .. (o.type == "bool" and "; a flag, or --" .. o.flag .. "=false" or "")
    if versioned[o.flag] then text = text .. "; not in every etcd version" end
    if o.flag == "log-format" then text = text .. "; json or console (unless given: console at a terminal)" end
    peer[#peer + 1] = { o.flag, meta, text, default = show_default(o.default) }
  end
  local old = {}
  for name in pairs(aliases) do old[#old + 1] = name end
  table.sort(old)
  for _, name in ipairs(old) do
    peer[#peer + 1] = { name, nil, "old name of --" .. aliases[name] }
  end
  local other = {}
  for _, name in ipairs(names) do
    if name ~= "config-file" then other[#other + 1] = name .. (versioned[name] and "*" or "") end
  end
  return {
    { title = "etcd flags for the peer listeners (or their ETCD_* variables, or a config file):", options = peer },
    { title = "Other etcd flags, accepted as the chosen etcd version does and ignored (* not in every etcd "
      .. "version; 3.5 and 3.6 also take any --experimental-* flag):", names = other },
  }
end

local PASSTHROUGH = { groups = etcd_flags }

local ETCD_VERSION = { "etcd-version", "V", "the etcd to follow: 3.4, 3.5, 3.6 (modelled as 3.4.23, 3.5.33, "
  .. "3.6.14) or a full version such as 3.5.9; default: what `etcd --version` reports (--etcd BIN, or etcd on "
  .. "the PATH), else the newest" }
local ETCD_BIN = { "etcd", "BIN", "the etcd binary whose version to follow" }

M.serve = {
  name = "serve",
  synopsis = "[--etcd-version V | --etcd BIN] [etcd flags | --config-file FILE]",
  summary = "etcd's peer listeners from etcd's flags or config file, answering peer probes until "
    .. "SIGINT/SIGTERM.",
  text = [[
Configures etcd's peer listeners (etcd's flags, ETCD_* variables or an etcd
YAML config file, with etcd's precedence) and serves each connection with a
small HTTP/1.1 peer-probe responder (keep-alive): GET /health -> 200
{"health":"true"}, GET /version -> 200 JSON, anything else -> 404.
SIGINT or SIGTERM closes every listener (1 s each) and exits 0.
With no arguments it runs on etcd's defaults (http://localhost:2380,
data dir default.etcd). Flags and keys follow the etcd version chosen as for
`check` (so --etcd-version 3.4 refuses --socket-reuse-port, as etcd 3.4
does). Logs go to stderr: console lines at a terminal, etcd's JSON lines
otherwise; --log-format decides when given.]],
  options = { ETCD_VERSION, ETCD_BIN },
  passthrough = PASSTHROUGH,
  examples = {
    "peerlisten serve",
    "peerlisten serve --listen-peer-urls https://10.0.0.1:2380 --peer-auto-tls --data-dir n1.etcd",
    "peerlisten serve --config-file /etc/etcd/etcd.yaml --etcd-version 3.5",
    "ETCD_LISTEN_PEER_URLS=http://127.0.0.1:12380 peerlisten serve --log-format json",
  },
  exit = {
    { 0, "stopped by SIGINT or SIGTERM" },
    { 1, "the configuration is invalid or a listener could not be created (everything opened is closed)" },
    { 2, "usage error: what etcd's flag package refuses too (unknown flag, malformed flag value), an unknown "
      .. "--etcd-version" },
  },
}

M.check = {
  name = "check",
  synopsis = "[--json] [--explain] [--etcd-version V | --etcd BIN] [etcd flags | --config-file FILE]",
  summary = "preflight: would this etcd version start its peer listeners with this configuration?",
  text = [[
Predicts whether etcd would start its peer listeners with this configuration:
loads it as that etcd version does (flags, ETCD_* variables, YAML types),
opens the log outputs, binds every URL, builds every TLS policy (generating
the auto-TLS pair if configured), loads the peer key pair and CA as etcd's
peer client does (also for http URLs) and the CRL file as the listener does,
checks certificates (expiry, SANs covering the URL hosts, key usages), then
releases everything. Prints warnings and a verdict on stdout.]],
  options = {
    ETCD_VERSION, ETCD_BIN,
    { "json", nil, "one JSON object: ok, error, code, warnings, listeners, certificates, etcd_version, "
      .. "differences" },
    { "explain", nil, "also every effective setting and where it came from" },
    { "strict", nil, "every certificate or cluster warning fails the check" },
    { "no-bind", nil, "do not bind the URLs (a member that is running); certificate and cluster checks still run" },
    { "peers", nil, "probe every other member of --initial-cluster with this member's certificate (peerlisten "
      .. "probe) and report the row" },
  },
  passthrough = PASSTHROUGH,
  examples = {
    "peerlisten check --listen-peer-urls https://127.0.0.1:2380 --peer-auto-tls",
    "peerlisten check --etcd-version 3.4 --json --config-file etcd.yaml",
  },
  exit = {
    { 0, "PASS: that etcd would start its peer listeners with this configuration" },
    { 1, "FAIL: it would not (the reason is printed)" },
    { 2, "usage error: what etcd's flag package refuses too (unknown flag, malformed flag value: etcd exits 2 "
      .. "as well), an unknown --etcd-version" },
  },
}

M.probe = {
  name = "probe",
  synopsis = "URL [--json] [--timeout S] [--source IP] [etcd flags | --config-file FILE]",
  summary = "dial a peer URL as this member's etcd would, and say which side refuses and why.",
  text = [[
Dials URL as this member's etcd would dial a peer: its peer certificate
(--peer-client-cert-file/--peer-client-key-file, else --peer-cert-file/
--peer-key-file; auto-TLS: its self-signed pair), --peer-trusted-ca-file to
verify the server (name from the URL host), --cipher-suites and the TLS
versions. Then GET /version and GET /raft/probing. Prints one verdict line
and the details (TLS version, cipher, server certificate, the local address
dialled from, round-trip time). Failure codes: ECONNREFUSED, ETIMEDOUT,
ENOTTLS, ESERVERCERT (we refuse the server's certificate), EPEERREJECTED (the
server refuses ours), EALPN, EHTTP (not an etcd peer), ETLS.]],
  options = {
    { "json", nil, "one JSON object (see peerlisten.probe)" },
    { "timeout", "S", "seconds for connect + handshake and for each request", number = true, default = "5" },
    { "source", "IP", "dial from this address (default: the kernel's route)" },
  },
  positional = { "URL", min = 1, max = 1 },
  passthrough = PASSTHROUGH,
  examples = {
    "peerlisten probe https://10.0.0.2:2380 --config-file /etc/etcd/etcd.yaml",
    "peerlisten probe https://10.0.0.2:2380 --json --peer-cert-file n1.pem --peer-key-file n1-key.pem "
      .. "--peer-trusted-ca-file ca.pem",
  },
  exit = {
    { 0, "the link works: TLS as configured, and the peer answers as an etcd peer" },
    { 1, "it does not (the verdict names the side that refused and why)" },
    { 2, "usage error: no URL, unknown option, malformed value" },
  },
}

local KEY_TYPE = { "key-type", "TYPE", "key algorithm", choices = cert.KEY_TYPES }

M.cert = {
  name = "cert",
  synopsis = "[--dir DIR] [--hosts H1,H2] [--validity YEARS] [--key-type TYPE]\n"
    .. "       peerlisten cert ca|issue ... (peerlisten cert ca --help, peerlisten cert issue --help)",
  summary = "etcd's auto-TLS certificate pair.",
  text = [[
Creates (or reuses, when still valid for the same hosts) etcd's auto-TLS
pair cert.pem and key.pem in DIR, as etcd's --peer-auto-tls does: a
self-signed certificate (O=etcd, CA:TRUE, serverAuth) with the hosts as
SANs. The key is written 0600, both files atomically. Prints the paths
and whether the pair was created on stdout; etcd's log lines on stderr.

Subcommands:
  cert ca      a cluster CA (peerlisten cert ca --help)
  cert issue   a member certificate signed by that CA (peerlisten cert issue --help)]],
  options = {
    { "dir", "DIR", "directory for cert.pem and key.pem", default = "default.etcd/fixtures/peer" },
    { "hosts", "H1,H2", "IP addresses and DNS names for the SANs", default = "localhost" },
    { "validity", "YEARS", "validity in years", number = true, default = "1" },
    { KEY_TYPE[1], KEY_TYPE[2], KEY_TYPE[3], choices = KEY_TYPE.choices, default = "ecdsa-p521" },
  },
  examples = {
    "peerlisten cert --dir n1.etcd/fixtures/peer --hosts 10.0.0.1,n1.example",
  },
  exit = {
    { 0, "the pair exists (created or reused)" },
    { 1, "it could not be written (the reason is printed)" },
    EXIT_USAGE,
  },
}

M["cert ca"] = {
  name = "cert ca",
  synopsis = "--dir DIR [--name NAME] [--validity YEARS] [--key-type TYPE]",
  summary = "a cluster CA for peer mutual TLS.",
  text = [[
Creates a CA certificate NAME.pem and its key NAME-key.pem (0600) in DIR
for signing member certificates (peerlisten cert issue). A valid CA
already there is reused, never overwritten. Prints both paths on stdout.]],
  options = {
    { "dir", "DIR", "directory for the CA files (created 0700 if missing)", required = true },
    { "name", "NAME", "file name and CN of the CA", default = "peerlisten-ca" },
    { "validity", "YEARS", "validity in years", number = true, default = "10" },
    { KEY_TYPE[1], KEY_TYPE[2], KEY_TYPE[3], choices = KEY_TYPE.choices, default = "ecdsa-p256" },
  },
  examples = { "peerlisten cert ca --dir pki" },
  exit = {
    { 0, "the CA exists (created or reused)" },
    { 1, "it could not be written, or what is there is not a usable CA" },
    EXIT_USAGE,
  },
}

M["cert issue"] = {
  name = "cert issue",
  synopsis = "--ca-cert F --ca-key F --dir DIR --name NAME --hosts H1,H2 [options]",
  summary = "a member certificate signed by the cluster CA.",
  text = [[
Issues NAME.pem and NAME-key.pem (0600) in DIR, signed by the CA: CN=NAME,
serverAuth and clientAuth (etcd peers use one certificate for both sides),
SANs from --hosts (IP addresses, DNS names, or peer URLs whose host is
taken) plus --sans. Prints both paths on stdout.]],
  options = {
    { "ca-cert", "FILE", "the CA certificate", required = true },
    { "ca-key", "FILE", "the CA key", required = true },
    { "dir", "DIR", "directory for the member files", required = true },
    { "name", "NAME", "member name: CN and file names", required = true },
    { "hosts", "H1,H2", "the member's peer hosts or URLs", required = true },
    { "sans", "S1,S2", "extra SANs (load balancer names, ...)" },
    { "validity", "YEARS", "validity in years", number = true, default = "1" },
    { KEY_TYPE[1], KEY_TYPE[2], KEY_TYPE[3], choices = KEY_TYPE.choices, default = "ecdsa-p256" },
  },
  examples = {
    "peerlisten cert issue --ca-cert pki/peerlisten-ca.pem --ca-key pki/peerlisten-ca-key.pem \\\n"
      .. "      --dir pki --name n1 --hosts https://10.0.0.1:2380",
  },
  exit = {
    { 0, "the certificate and key were written" },
    { 1, "the CA cannot be used, or the files could not be written" },
    EXIT_USAGE,
  },
}

M.inspect = {
  name = "inspect",
  synopsis = "[--json] FILE",
  summary = "summarize a certificate (or every certificate of a chain file).",
  text = [[
Prints a summary of each certificate in FILE (PEM or DER): subject, issuer,
serial, validity and days left, SANs, key usages, key type, signature
algorithm and SHA-256 fingerprint. --json prints the same fields as the
table peerlisten.cert.inspect returns.]],
  options = {
    { "json", nil, "one JSON value (a list for a chain file)" },
  },
  positional = { "FILE", min = 1, max = 1 },
  examples = { "peerlisten inspect pki/n1.pem", "peerlisten inspect --json default.etcd/fixtures/peer/cert.pem" },
  exit = {
    { 0, "the file was read" },
    { 1, "the file cannot be read or holds no certificate" },
    { 2, "usage error: not exactly one FILE, unknown option" },
  },
}

local RENEW = { "renew-within", "DURATION", "reissue certificates that expire sooner (e.g. 30d, 12h); the CA is kept" }
local MEMBER_RENEW = { "member", "NAME", "limit the renewal to NAME's certificates", multiple = true }

M["cluster plan"] = {
  name = "cluster plan",
  synopsis = "FILE [--out DIR] [--renew-within DURATION] [--member NAME]",
  summary = "what `cluster init` would create, reuse or renew, and the checks `cluster check` runs.",
  text = [[
Validates the cluster description FILE (YAML) and prints each file init would
create (or reuse or renew, when DIR exists) and each check `cluster check`
runs. Changes nothing.]],
  options = { { "out", "DIR", "the cluster directory to compare with" }, RENEW, MEMBER_RENEW },
  positional = { "FILE", min = 1, max = 1 },
  examples = { "peerlisten cluster plan cluster.yaml", "peerlisten cluster plan cluster.yaml --out pki --renew-within 30d" },
  exit = { { 0, "the description is valid (the plan is printed)" }, { 1, "it is not (every error is named)" },
    { 2, "usage error: not exactly one FILE, unknown option, malformed DURATION" } },
}

M["cluster init"] = {
  name = "cluster init",
  synopsis = "FILE --out DIR [--renew-within DURATION] [--member NAME]",
  summary = "create or update a cluster directory: CA, member and client certificates, etcd.yaml per member.",
  text = [[
Creates or updates DIR from the description FILE: the CA, each member's peer
and server certificates, the etcdctl client certificate, DIR/<member>/etcd.yaml
(an etcd --config-file), DIR/etcdctl.env and DIR/manifest.json. Re-running
reuses every certificate that is still good; what changed in the description
is reissued. New material is made aside and moved into place only when all of
it was made. One progress line per step on stderr.]],
  options = { { "out", "DIR", "the cluster directory", required = true }, RENEW, MEMBER_RENEW },
  positional = { "FILE", min = 1, max = 1 },
  examples = { "peerlisten cluster init cluster.yaml --out pki",
    "peerlisten cluster init cluster.yaml --out pki --renew-within 30d --member m2" },
  exit = { { 0, "DIR is ready" }, { 1, "the description is invalid or a file could not be written (nothing is left half-made)" },
    { 2, "usage error: not exactly one FILE, --out missing, unknown option" } },
}

M["cluster status"] = {
  name = "cluster status",
  synopsis = "DIR [--json]",
  summary = "expiry of every certificate of a cluster directory.",
  text = [[
Shows subject, expiry and days left of every certificate in DIR.]],
  options = { { "json", nil, "one JSON list" } },
  positional = { "DIR", min = 1, max = 1 },
  examples = { "peerlisten cluster status pki" },
  exit = { { 0, "every certificate is readable and valid" }, { 1, "one is unreadable or expired" },
    { 2, "usage error: not exactly one DIR, unknown option" } },
}

M["cluster check"] = {
  name = "cluster check",
  synopsis = "DIR [--json] [--preflight] [--member NAME]",
  summary = "check a cluster directory: certificates, etcd.yaml files, and the member probe matrix.",
  text = [[
Per member: peer and server certificate (key, signed by the cluster CA,
usages, SANs including the dial source, validity), etcd.yaml (name,
initial-cluster, files); the client certificate. Then the probe matrix when
peerlisten.dial exists. Every failed cell is printed with member, check and
reason.]],
  options = {
    { "json", nil, "one JSON object: ok, cells, matrix" },
    { "preflight", nil, "also each member's `peerlisten check` on its etcd.yaml (binds its peer URLs; any warning fails)" },
    { "member", "NAME", "the members on this host, for --preflight and the matrix", multiple = true },
  },
  positional = { "DIR", min = 1, max = 1 },
  examples = { "peerlisten cluster check pki", "peerlisten cluster check pki --preflight --member m1" },
  exit = { { 0, "PASS: every check passed" }, { 1, "FAIL: a check failed (each failure is printed)" },
    { 2, "usage error: not exactly one DIR, unknown option" } },
}

--- The commands in the order `peerlisten --help` lists them.
M.ORDER = { "serve", "check", "probe", "cert", "cert ca", "cert issue", "inspect", "cluster plan", "cluster init",
  "cluster status", "cluster check" }

--- The help of a command group (`peerlisten cluster --help`): its commands and their synopses.
-- @tparam string group
-- @treturn string
function M.group_usage(group)
  local out = { ("Usage: peerlisten %s <command> [options]"):format(group), "", "Commands:" }
  for _, name in ipairs(M.ORDER) do
    if name:sub(1, #group + 1) == group .. " " then
      local c = M[name]
      out[#out + 1] = ("  %s %s"):format(name, c.synopsis)
      local words = {}
      for w in c.summary:gmatch("%S+") do words[#words + 1] = w end
      out[#out + 1] = cli_args.wrap(words, "      ", 79)
    end
  end
  out[#out + 1] = ""
  out[#out + 1] = ("`peerlisten %s <command> --help` for one command's options, examples and exit status."):format(group)
  out[#out + 1] = "Exit status: 0 ok, 1 failure or failed check, 2 usage error."
  return table.concat(out, "\n") .. "\n"
end

--- The top-level help.
-- @treturn string
function M.usage()
  local out = { "Usage: peerlisten <command> [options]", "", "Commands:" }
  for _, name in ipairs(M.ORDER) do
    local c = M[name]
    local words = {}
    for w in c.summary:gmatch("%S+") do words[#words + 1] = w end
    out[#out + 1] = ("  %-14s %s"):format(name, cli_args.wrap(words, (" "):rep(17), 79):sub(18))
  end
  out[#out + 1] = "  help, -h       this text; `peerlisten <command> --help` for one command's"
  out[#out + 1] = "                 options, examples and exit status"
  out[#out + 1] = "  version        the version (also --version)"
  out[#out + 1] = ""
  out[#out + 1] = "Exit status: 0 ok, 1 failure, 2 usage error."
  return table.concat(out, "\n") .. "\n"
end

return M
