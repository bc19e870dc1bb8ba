-- `peerlisten check --etcd-version 3.4` against etcd 3.4.23 itself: every case
-- recorded from the real binary in spec/fixtures/etcd34_cases.lua is run
-- through `bin/peerlisten check` on exactly the inputs etcd got (the oracle's
-- prepare: same flags, variables, YAML, files, placeholders), and the
-- outcomes must match: started <-> PASS (exit 0), exit 2 <-> exit 2, any other
-- failure <-> FAIL (exit 1), with etcd's message in ours. A sample is also run
-- live through the real etcd next to check, so the recording cannot drift.
-- What differs on purpose is listed in DIFFERENCES, each with its reason,
-- and is asserted too (it is also in README "Differences from etcd").
local oracle = require "support.etcd_oracle"
local cjson = require "cjson"

-- case name -> what check does instead, and why (the id is the entry check
-- --json lists under `differences`)
local DIFFERENCES = {
  ["CRL file missing"] = { exit = 1, id = "crl_checked", message = "no such file or directory",
    why = "etcd reads the CRL only per handshake and then refuses every mTLS peer; check fails up front" },
  ["CRL file garbage"] = { exit = 1, id = "crl_checked", message = "x509: malformed crl",
    why = "as above: every mTLS peer would be refused at run time" },
  ["CRL path is a directory"] = { exit = 1, id = "crl_checked", message = "is a directory",
    why = "as above: every mTLS peer would be refused at run time" },
  ["TLS1.3-only names"] = { exit = 1, id = "tls12_without_suite", message = "leave no TLS 1.2 cipher suite",
    why = "etcd starts but every TLS 1.2 peer fails its handshake; peerlisten refuses the configuration" },
  ["allowed-cn mapping (3.4: unknown key)"] = { exit = 1, id = "ignored_security_key",
    message = "peer-transport-security.allowed-cn: etcd 3.4.23 has no such key",
    why = "etcd 3.4 ignores the key and lets any certificate of the CA in; never drop a security setting silently" },
  ["allowed-cn list (3.4: unknown key)"] = { exit = 1, id = "ignored_security_key",
    message = "peer-transport-security.allowed-cn: etcd 3.4.23 has no such key", why = "as above" },
  ["allowed-cn scalar (3.5.14 form)"] = { exit = 1, id = "ignored_security_key",
    message = "peer-transport-security.allowed-cn: etcd 3.4.23 has no such key", why = "as above" },
  ["log-level bogus"] = { exit = 2, id = "log_level_panic", message = 'unknown log level "bogus"',
    why = "etcd panics (exit 2); the same exit status with a clean message" },
}

-- Live re-runs through the real etcd (a few seconds each at most).
local LIVE = {
  "one http URL", "duplicate URL", "http URL + missing CA (after listeners)", "empty env ETCD_LISTEN_PEER_URLS= "
    .. "with the flag", "listen-peer-urls as a mapping", "capnslog to a writable file", "--tls-min-version",
  "allowed CN a,b",
}

local OUTCOME_EXIT = { started = 0, usage = 2, failed = 1 }

local ROOT do
  local p = io.popen("pwd")
  ROOT = p:read("l")
  p:close()
end

-- etcd's error without capnslog's wrapper for configuration errors
local function core_message(m)
  return (m:gsub("^error verifying flags, ", ""):gsub("%. See 'etcd %-%-help'%.$", ""))
end

-- Runs check --json --etcd-version 3.4 on a prepared case.
local function run_check(O, ctx)
  local argv = { "lua5.4", ROOT .. "/bin/peerlisten", "check", "--json", "--etcd-version", "3.4" }
  for _, a in ipairs(ctx.args) do argv[#argv + 1] = a end
  local rc, out, err = O:exec(ctx, argv, ctx.env)
  local ok, report = pcall(cjson.decode, out)
  return rc, ok and report or nil, O:unsubst(ctx, err), out
end

local function has_difference(report, id)
  for _, d in ipairs(report and report.differences or {}) do
    if d.id == id then return true end
  end
  return false
end

describe("check --etcd-version 3.4 against etcd 3.4.23 #slow #etcd", function()
  local cases = dofile("spec/fixtures/etcd34_cases.lua")
  local O
  setup(function() O = oracle.new() end)
  teardown(function() O:cleanup() end)

  it("agrees with every recorded case, apart from the documented differences", function()
    local same, differ, compared, failures = 0, 0, 0, {}
    local seen = {}
    for _, case in ipairs(cases) do
      local ctx = O:prepare(case)
      local rc, report, err, out = run_check(O, ctx)
      O:finish(ctx)
      compared = compared + 1
      local d = DIFFERENCES[case.name]
      local msg = case.etcd.message and core_message(case.etcd.message)
      local problem
      if d then
        seen[case.name] = true
        differ = differ + 1
        if rc ~= d.exit then problem = ("exit %d, documented difference says %d"):format(rc, d.exit)
        elseif not err:find(d.message, 1, true) then problem = "message lacks " .. d.message
        elseif not has_difference(report, d.id) then problem = "--json lists no difference " .. d.id end
      else
        local want = OUTCOME_EXIT[case.etcd.outcome]
        if rc ~= want then
          problem = ("exit %d, etcd: %s (want %d)"):format(rc, case.etcd.outcome, want)
        elseif case.etcd.outcome ~= "started" and not err:find(msg, 1, true) then
          problem = "etcd's message missing: " .. msg
        elseif not report or report.etcd_version ~= "3.4.23" then
          problem = "no --json report naming etcd 3.4.23: " .. tostring(out)
        else
          same = same + 1
        end
      end
      if problem then failures[#failures + 1] = case.name .. ": " .. problem .. "\n    stderr: " .. err end
    end
    print(("\netcd 3.4.23 vs check --etcd-version 3.4: %d cases compared, %d the same, %d documented "
      .. "differences, %d failures"):format(compared, same, differ, #failures))
    for name in pairs(DIFFERENCES) do assert.truthy(seen[name], "documented difference without a case: " .. name) end
    assert.equal(0, #failures, table.concat(failures, "\n"))
    assert.is_true(same >= 40, "fewer than 40 cases agree")
  end)

  describe("live, side by side with the real binary", function()
    local by_name = {}
    for _, c in ipairs(cases) do by_name[c.name] = c end
    for _, name in ipairs(LIVE) do
      it(name, function()
        if not oracle.available() then
          pending("etcd not installed at " .. oracle.ETCD .. " (Debian etcd-server)")
          return
        end
        local case = assert(by_name[name], "case missing from the fixture: " .. name)
        local r = O:run(case)
        assert.equal(case.etcd.outcome, r.outcome, r.stderr)
        local ctx = O:prepare(case)
        local rc, _, err = run_check(O, ctx)
        O:finish(ctx)
        assert.equal(OUTCOME_EXIT[r.outcome], rc, err)
        if r.outcome ~= "started" then assert.matches(core_message(r.message), err, 1, true) end
      end)
    end
  end)
end)
