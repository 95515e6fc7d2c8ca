-- mcp.reload: building a generation, and swapping to it in one step.
--
-- A generation is everything operators can change while the agent runs: the
-- agent's own Lua library, the policies and route providers, and the service
-- definitions. build() makes a complete new one aside, without touching the
-- running one: library modules load through a private `require` into a table
-- of their own, policies and definitions load in their sandbox and are
-- validated by the NEW library. Only when every file loads does install()
-- put the new modules into package.loaded and make the generation current;
-- on any error the running generation stays and the errors say file:line.
--
-- Tasks already running keep the closures they started with, so they finish
-- on their own generation's code.
local mcp = require("mcp.core")

local reload = {}

local function read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local text = f:read("*a")
  f:close()
  return text
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- Files of a directory with one of the extensions, sorted; a missing
-- directory is empty (an agent may have no operator policies).
local function files(dir, exts)
  local names = mcp.fs.listdir(dir)
  local out = {}
  for _, name in ipairs(names or {}) do
    local ext = name:match("%.([%w]+)$")
    if ext and exts[ext] and name:sub(1, 1) ~= "." then
      out[#out + 1] = { name = name, path = dir .. "/" .. name, ext = ext,
        base = name:sub(1, -#ext - 2) }
    end
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

-- Every module of the library: lua/mcp/x.lua -> "mcp.x", lua/mcp/a/b.lua -> "mcp.a.b".
local function library_modules(lua_dir)
  local out = {}
  local function walk(dir, prefix)
    for _, name in ipairs(mcp.fs.listdir(dir) or {}) do
      local path = dir .. "/" .. name
      local base = name:match("^(.+)%.lua$")
      if base then
        out[#out + 1] = { name = base == "init" and prefix or prefix .. "." .. base,
          path = path }
      elseif not name:find("%.") and mcp.fs.listdir(path) then
        walk(path, prefix .. "." .. name)
      end
    end
  end
  walk(lua_dir .. "/mcp", "mcp")
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

-- Loads the whole library privately: the returned table maps module names
-- to what they returned; package.loaded is not touched.
local function load_library(lib_dir, gen, errors)
  local lua_dir = lib_dir .. "/lua"
  local loaded, loading = {}, {}
  local env
  local function gen_require(name)
    -- Once installed, lazy requires see whatever generation is current.
    if gen.installed then return require(name) end
    if loaded[name] ~= nil then return loaded[name] end
    if name == "mcp.core" or name:sub(1, 4) ~= "mcp." then return require(name) end
    if loading[name] then error("module " .. name .. " requires itself in a loop", 2) end
    local rel = name:gsub("%.", "/")
    local path = lua_dir .. "/" .. rel .. ".lua"
    if not exists(path) then path = lua_dir .. "/" .. rel .. "/init.lua" end
    local fn, err = loadfile(path)
    if not fn then
      if not exists(path) then
        error(string.format("module %s not found (looked for %s/%s.lua)", name, lua_dir,
          rel), 2)
      end
      error(err, 0)
    end
    setfenv(fn, env)
    loading[name] = true
    local result = fn(name)
    loading[name] = nil
    if result == nil then result = true end
    loaded[name] = result
    return result
  end
  env = setmetatable({ require = gen_require }, {
    __index = _G,
    __newindex = function(_, k)
      error(string.format("the agent's library may not set the global %q", tostring(k)), 2)
    end,
  })
  local mods = library_modules(lua_dir)
  for _, m in ipairs(mods) do
    local ok, err = pcall(gen_require, m.name)
    if not ok then errors[#errors + 1] = tostring(err) end
  end
  return loaded, #mods
end

-- Policies: shipped ones first, then the operator's, which override by name.
local function load_policies(cfg, sandbox, errors)
  local policies, sources = {}, {}
  local dirs = { cfg.agent.lib_dir .. "/policies", cfg.agent.policies_dir }
  local n = 0
  for _, dir in ipairs(dirs) do
    for _, f in ipairs(files(dir, { lua = true })) do
      n = n + 1
      local text, rerr = read(f.path)
      local policy, err
      if text then
        policy, err = sandbox.load_file(f.path, text)
      else
        err = f.path .. ": " .. tostring(rerr)
      end
      if err then
        errors[#errors + 1] = err
      elseif type(policy) ~= "table" then
        errors[#errors + 1] = string.format("%s: a policy must return a table of hooks, "
          .. "got %s", f.path, type(policy))
      elseif policy.deploy ~= nil and type(policy.deploy) ~= "function" then
        errors[#errors + 1] = string.format("%s: deploy must be a function, got %s",
          f.path, type(policy.deploy))
      else
        policies[f.base] = policy
        sources[f.base] = f.path
      end
    end
  end
  return policies, sources, n
end

local function load_routes(cfg, sandbox, errors)
  local providers = {}
  local n = 0
  for _, f in ipairs(files(cfg.agent.lib_dir .. "/policies/routes", { lua = true })) do
    n = n + 1
    local text = read(f.path)
    local p, err = sandbox.load_file(f.path, text or "", { config = cfg })
    if err then
      errors[#errors + 1] = err
    elseif type(p) ~= "table" or type(p.route_add) ~= "function"
        or type(p.route_remove) ~= "function" then
      errors[#errors + 1] = f.path .. ": a route provider returns a table with functions "
        .. "route_add and route_remove"
    else
      providers[f.base] = p
    end
  end
  return providers, n
end

-- Reads one definition file into a raw table (not yet validated).
function reload.read_definition(path, text, ext, sandbox)
  if ext == "toml" then
    return mcp.toml.decode(text, path)
  elseif ext == "json" then
    local v, err = mcp.json.decode(text)
    if v == nil then return nil, path .. ": " .. tostring(err) end
    return v
  end
  local def, err = sandbox.load_file(path, text)
  if err then return nil, err end
  if type(def) ~= "table" then
    return nil, string.format("%s: a Lua definition must return a table, got %s", path,
      type(def))
  end
  return def
end

-- Validates every definition in services_dir with the given library.
local function load_definitions(cfg, lib, policies, errors)
  local definition, sandbox = lib["mcp.definition"], lib["mcp.sandbox"]
  local known = {}
  for name in pairs(policies) do known[name] = true end
  local defs, sources = {}, {}
  local list = files(cfg.agent.services_dir, { toml = true, lua = true, json = true })
  for _, f in ipairs(list) do
    local text, rerr = read(f.path)
    local raw, err
    if text then
      raw, err = reload.read_definition(f.path, text, f.ext, sandbox)
    else
      err = f.path .. ": " .. tostring(rerr)
    end
    if err then
      errors[#errors + 1] = err
    else
      local def, verrs = definition.validate(raw, f.path, {
        node = cfg.agent.node, allowed_volume_roots = cfg.agent.volume_roots,
        known_policies = known })
      if not def then
        for _, e in ipairs(verrs) do errors[#errors + 1] = e end
      elseif defs[def.name] then
        errors[#errors + 1] = string.format("%s: name: service %q is also defined in %s",
          f.path, def.name, sources[def.name])
      else
        defs[def.name] = def
        sources[def.name] = f.path
      end
    end
  end
  if #errors == 0 then
    local _, err = definition.topo_order(defs)
    if err then errors[#errors + 1] = err end
  end
  return defs, sources, #list
end

-- Builds a complete generation aside. Returns it, or nil and the list of
-- errors ("file:line: message"). opts.library_only leaves policies and
-- definitions out: what the agent runs on when they are broken at start.
function reload.build(opts)
  opts = opts or {}
  local cfg = mcp.config
  local t0 = mcp.timer.monotime()
  local errors = {}
  local prev = mcp.state.gen
  local gen = { id = (prev and prev.id or 0) + 1, installed = false }
  local lib, nlib = load_library(cfg.agent.lib_dir, gen, errors)
  if #errors > 0 then return nil, errors end
  for _, m in ipairs({ "mcp.definition", "mcp.sandbox" }) do
    if type(lib[m]) ~= "table" then
      return nil, { string.format("%s/lua: module %s is missing", cfg.agent.lib_dir, m) }
    end
  end
  local policies, policy_sources, npol, providers, nroutes, defs, def_sources, ndefs =
    {}, {}, 0, {}, 0, {}, {}, 0
  if not opts.library_only then
    policies, policy_sources, npol = load_policies(cfg, lib["mcp.sandbox"], errors)
    providers, nroutes = load_routes(cfg, lib["mcp.sandbox"], errors)
    defs, def_sources, ndefs = load_definitions(cfg, lib, policies, errors)
  end
  if #errors > 0 then return nil, errors end
  gen.modules = lib
  gen.policies, gen.policy_sources = policies, policy_sources
  gen.route_providers = providers
  gen.definitions, gen.sources = defs, def_sources
  gen.files = nlib + npol + nroutes + ndefs
  gen.took_ms = (mcp.timer.monotime() - t0) * 1000
  gen.at = mcp.now()
  return gen
end

-- Makes gen current: its modules replace the library's in package.loaded.
function reload.install(gen)
  for name in pairs(package.loaded) do
    if name:sub(1, 4) == "mcp." and name ~= "mcp.core" and gen.modules[name] == nil then
      package.loaded[name] = nil
    end
  end
  for name, mod in pairs(gen.modules) do package.loaded[name] = mod end
  gen.installed = true
  mcp.state.gen = gen
end

-- Builds and installs; on failure keeps the running generation and records
-- the error where operators look: the log, /v1/status, an event, a metric.
-- Returns the generation, or nil and the error text.
function reload.run(why)
  local m = mcp.state.metrics
  local prev = mcp.state.gen
  local gen, errors = reload.build()
  if not gen then
    local msg = table.concat(errors, "\n")
    mcp.state.reload_error = { message = msg, errors = errors, at = mcp.now(), why = why }
    m.reload_failures_total = (m.reload_failures_total or 0) + 1
    mcp.log.error("reload (%s) failed; generation %s keeps running:\n%s", why or "?",
      prev and prev.id or "none", msg)
    return nil, msg
  end
  reload.install(gen)
  mcp.state.reload_error = nil
  m.reloads_total = (m.reloads_total or 0) + 1
  mcp.log.info("generation %s%d: %d files, %.1f ms (%s)",
    prev and (prev.id .. " → ") or "", gen.id, gen.files, gen.took_ms, why or "?")
  return gen
end

return reload
