--- Modules peerlisten needs only for some jobs (lyaml for YAML files).
--
-- `optional.require(name)` loads one, or returns a one-line error that names
-- the Debian package and the rock to install, so a missing module never ends
-- in a Lua stack trace.
-- @module peerlisten.optional

local M = {}

--- What provides each optional module: `{ debian =, rock =, why = }`.
M.PROVIDERS = {
  lyaml = { debian = "lua-yaml", rock = "lyaml", why = "to read YAML files" },
  yaml = { debian = "lua-yaml", rock = "lyaml", why = "to read YAML files" },   -- lyaml's C part
  socket = { debian = "lua-socket", rock = "luasocket",
    why = "to resolve a certificate's DNS names in the cluster checks" },
}

--- Loads an optional module.
-- @tparam string name the module name (a key of `PROVIDERS`)
-- @return[1] the module
-- @treturn[2] nil
-- @treturn[2] string e.g. `module 'lyaml' is not installed (needed to read YAML files):
-- install the Debian package lua-yaml or the rock lyaml`
-- @treturn[2] string "ENOMODULE"
function M.require(name)
  local p = M.PROVIDERS[name]
  if not p then error("unknown optional module '" .. tostring(name) .. "'", 2) end
  local ok, mod = pcall(require, name)
  if ok then return mod end
  if not tostring(mod):find("module '" .. name .. "' not found", 1, true) then
    -- present but broken: say what failed, on one line
    return nil, ("module '%s' failed to load: %s"):format(name, (tostring(mod):match("^[^\n]*"))), "ENOMODULE"
  end
  return nil, ("module '%s' is not installed (needed %s): install the Debian package %s or the rock %s")
    :format(name, p.why, p.debian, p.rock), "ENOMODULE"
end

return M
