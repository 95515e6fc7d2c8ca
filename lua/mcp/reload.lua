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
-- Code that runs at load time runs as jobs: each in a coroutine of its own
-- (so it cannot wait: loading never depends on Podman or the network) inside
-- a task of its own with the [lua] limits, while the reloading task only
-- waits. A file that loops, allocates without bound or catches its own abort
-- ends its job, not the reload: the reload fails with the file's name and the
-- limit's message, whatever task asked for it (the watcher's has no limits).
--
-- Tasks already running keep the closures they started with, so they finish
-- on their own generation's code.
local mcp = require("mcp.core")
local sandbox_now = require("mcp.sandbox")

local reload = {}

-- Load-time code cannot wait, so only a CPU loop can make it slow, and the
-- whole agent waits while it runs: its deadline is shorter than a task's,
-- and leaves the caller (an API request under task_timeout) time to answer.
reload.LOAD_DEADLINE = 10
local POLL = 0.001          -- seconds between two looks at running jobs

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

local function pack(...) return { n = select("#", ...), ... } end

----------------------------------------------------------------------------
-- Jobs: load-time code under limits
----------------------------------------------------------------------------

-- The limits of a job: the instruction budget and memory cap of [lua], and
-- a deadline of half task_timeout, at most LOAD_DEADLINE.
function reload.limits()
  local lim = sandbox_now.limits()
  local timeout = reload.LOAD_DEADLINE
  if lim.timeout > 0 then timeout = math.min(lim.timeout / 2, timeout) end
  lim.timeout = timeout
  return lim
end

local LOAD_DEADLINE_SETTING = string.format("the deadline of load time: half of [lua] "
  .. "task_timeout, at most %g s", reload.LOAD_DEADLINE)

-- The limit msg is about, for load time; nil when it is about none.
function reload.limit_text(msg)
  return sandbox_now.limit_text(msg, LOAD_DEADLINE_SETTING)
end

-- An error value as text, in the job (a __tostring that loops ends the job,
-- not the reload).
local function error_text(e)
  if type(e) == "string" then return e end
  if type(e) == "number" then return tostring(e) end
  local ok, s = pcall(tostring, e)
  if ok and type(s) == "string" then return s end
  return "(error object is a " .. type(e) .. " value)"
end

-- Starts fn(...) as a job named name; job_wait() waits for it.
local function job_start(name, fn, ...)
  local job = { name = name, co = coroutine.create(fn), args = pack(...) }
  local lim = reload.limits()
  lim.name = name
  job.id = mcp.spawn(lim, function()
    local r = pack(coroutine.resume(job.co, unpack(job.args, 1, job.args.n)))
    if r[1] and coroutine.status(job.co) ~= "dead" then
      r = { false, "coroutine.yield() at load time: a file cannot wait while it loads" }
    elseif not r[1] then
      r[2] = error_text(r[2])
    end
    job.result = r
  end)
  return job
end

-- Waits until every job has ended: with a result, or gone (a limit ended
-- its task, which then could not record anything).
local function job_wait(jobs)
  while true do
    local alive, pending
    for _, j in ipairs(jobs) do
      if not j.result and not j.gone then
        if not alive then
          alive = {}
          for _, t in ipairs(mcp.task.list()) do alive[t.id] = true end
        end
        if alive[j.id] then pending = true else j.gone = true end
      end
    end
    if not pending then return end
    mcp.sleep(POLL)
  end
end

-- Where in file the coroutine was when it died: ":LINE", ", in the function
-- at line N" (a limit leaves no current line), or "".
local function dead_where(co, file)
  for level = 0, 50 do
    local ok, info = pcall(debug.getinfo, co, level, "Sl")
    if not ok or not info then break end
    if info.source == "@" .. file then
      if info.currentline and info.currentline > 0 then return ":" .. info.currentline end
      if info.linedefined and info.linedefined > 0 then
        return string.format(", in the function at line %d", info.linedefined)
      end
      return ""
    end
  end
  return ""
end

-- The outcome of an ended job: true, results... or false, message. file
-- (optional) is the file the job loads, for where a limit stopped it.
local function job_outcome(job, file)
  local r = job.result
  if r and r[1] then return true, unpack(r, 2, r.n) end
  local msg = r and r[2] or sandbox_now.dead_error(job.co)
  local limit = reload.limit_text(msg)
  if limit then
    local where = file and dead_where(job.co, file) or ""
    if where:sub(1, 1) == ":" then
      return false, string.format("%s%s: stopped while loading: %s", file, where, limit)
    end
    return false, string.format("%s: stopped while loading%s: %s", file or job.name, where,
      limit)
  end
  if msg then return false, msg end
  return false, string.format("%s: stopped by a [lua] limit while loading (the agent's log "
    .. "has the task's error)", file or job.name)
end

----------------------------------------------------------------------------
-- Files
----------------------------------------------------------------------------

-- Files of a directory with one of the extensions, sorted; a missing
-- directory is empty (an agent may have no operator policies).
local function files(dir, exts)
  if not dir then return {} end
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

-- The compiled chunk of a library file. Parsing the library is most of a
-- reload's time, so the bytecode of each file is kept (in mcp.state, which
-- outlives this module; one entry per file) and parsed again only when the
-- file's text changed. Each generation loads the bytecode into functions of
-- its own: prototypes are never shared between generations (re-running one
-- set of prototypes under a new environment crashed LuaJIT's compiled code).
local function library_chunk(path, seen)
  local text, err = read(path)
  if not text then return nil, err end
  seen[path] = true
  local cache = mcp.state.reload_chunks
  if not cache then
    cache = {}
    mcp.state.reload_chunks = cache
  end
  local c = cache[path]
  if c and c.text == text and c.bytecode then return loadstring(c.bytecode, "@" .. path) end
  local fn, cerr = loadstring(text, "@" .. path)
  if not fn then return nil, cerr end
  cache[path] = { text = text, bytecode = string.dump(fn) }
  return fn
end

-- In a job: loads the whole library privately. Returns the table of module
-- names to what they returned, the number of modules, and the errors;
-- package.loaded is not touched. progress.path is the file loading now.
local function load_library(lib_dir, gen, progress)
  local lua_dir = lib_dir .. "/lua"
  local loaded, loading, errors, seen = {}, {}, {}, {}
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
    local fn, err = library_chunk(path, seen)
    if not fn then
      if not exists(path) then
        error(string.format("module %s not found (looked for %s/%s.lua)", name, lua_dir,
          rel), 2)
      end
      error(err, 0)
    end
    setfenv(fn, env)
    local outer = progress.path
    progress.path = path
    loading[name] = true
    local ok, result = pcall(fn, name)
    loading[name] = nil
    progress.path = outer
    if not ok then error(result, 0) end
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
  progress.path = nil
  for path in pairs(mcp.state.reload_chunks or {}) do
    if not seen[path] then mcp.state.reload_chunks[path] = nil end
  end
  return loaded, #mods, errors
end

-- In a job: one file of operator code, run in its sandbox, unprotected: an
-- error or a limit ends the job's coroutine inside the file, where
-- job_outcome finds it. kind is "policy", "route provider" or "definition".
-- Returns what the agent keeps of it (hooks, or the definition as plain
-- data), or nil, "file: message".
local function load_operator_file(sandbox, path, kind, extra)
  local text, rerr = read(path)
  if not text then return nil, path .. ": " .. tostring(rerr) end
  local fn, err = sandbox.compile(text, path, sandbox.env(path, extra))
  if not fn then return nil, err end
  local v = fn()
  if type(v) ~= "table" then
    if kind == "definition" then
      return nil, string.format("%s: a Lua definition must return a table, got %s", path,
        type(v))
    elseif kind == "policy" then
      return nil, string.format("%s: a policy must return a table of hooks, got %s", path,
        type(v))
    end
    return nil, string.format("%s: a route provider returns a table with functions "
      .. "route_add and route_remove, got %s", path, type(v))
  end
  if kind == "definition" then return sandbox.plain(v, path) end
  return sandbox.hooks(v, path)
end

-- Reads one definition file into a raw table (not yet validated). A Lua
-- definition runs as a job when called from a task.
function reload.read_definition(path, text, ext, sandbox)
  if ext == "toml" then
    return mcp.toml.decode(text, path)
  elseif ext == "json" then
    local v, err = mcp.json.decode(text)
    if v == nil then return nil, path .. ": " .. tostring(err) end
    return v
  end
  local function load_def()
    local fn, err = sandbox.compile(text, path, sandbox.env(path))
    if not fn then return nil, err end
    local def = fn()
    if type(def) ~= "table" then
      return nil, string.format("%s: a Lua definition must return a table, got %s", path,
        type(def))
    end
    return sandbox.plain(def, path)
  end
  if not mcp.task.current() then
    local ok, def, err = pcall(load_def)
    if not ok then return nil, tostring(def) end
    return def, err
  end
  local job = job_start("load " .. path, load_def)
  job_wait({ job })
  local ok, def, err = job_outcome(job, path)
  if not ok then return nil, def end
  return def, err
end

-- In a job: decodes the TOML and JSON definitions, then validates every
-- definition with the new library. items: { {path, ext, text | raw} }.
-- partial: some definition did not load, so dependencies are not checked.
local function validate_definitions(cfg, lib, known, items, partial)
  local definition = lib["mcp.definition"]
  local errors, defs, sources = {}, {}, {}
  for _, it in ipairs(items) do
    local raw, err = it.raw, nil
    if raw == nil then raw, err = reload.read_definition(it.path, it.text, it.ext) end
    if err or raw == nil then
      errors[#errors + 1] = err or (it.path .. ": empty definition")
    else
      local vok, def, verrs = pcall(definition.validate, raw, it.path, {
        node = cfg.agent.node, allowed_volume_roots = cfg.agent.volume_roots,
        known_policies = known })
      if not vok then
        errors[#errors + 1] = string.format("%s: the validator failed on it: %s", it.path,
          tostring(def))
      elseif not def then
        for _, e in ipairs(verrs) do errors[#errors + 1] = e end
      elseif defs[def.name] then
        errors[#errors + 1] = string.format("%s: name: service %q is also defined in %s",
          it.path, def.name, sources[def.name])
      else
        defs[def.name] = def
        sources[def.name] = it.path
      end
    end
  end
  if #errors == 0 and not partial then
    local _, err = definition.topo_order(defs)
    if err then errors[#errors + 1] = err end
  end
  return defs, sources, errors
end

----------------------------------------------------------------------------
-- A generation
----------------------------------------------------------------------------

-- Builds a complete generation aside. Returns it, or nil and the list of
-- errors ("file:line: message"). opts.library_only leaves policies and
-- definitions out: what the agent runs on when they are broken at start.
-- Must run in a task (it waits for its jobs).
function reload.build(opts)
  opts = opts or {}
  local cfg = mcp.config
  local t0 = mcp.timer.monotime()
  local prev = mcp.state.gen
  local gen = { id = (prev and prev.id or 0) + 1, installed = false }
  local lib_dir = cfg.agent.lib_dir
  local phases = {}
  local function phase(name, since)
    local t = mcp.timer.monotime()
    phases[name] = math.floor((t - since) * 1e5 + 0.5) / 100
    return t
  end

  -- 1. The library.
  local progress = {}
  local lj = job_start("reload: library", load_library, lib_dir, gen, progress)
  job_wait({ lj })
  local ok, lib, nlib, lib_errors = job_outcome(lj, progress.path)
  if not ok then
    local msg = lib
    if not progress.path then msg = lib_dir .. "/lua: " .. msg end
    return nil, { msg }
  end
  if #lib_errors > 0 then return nil, lib_errors end
  for _, m in ipairs({ "mcp.definition", "mcp.sandbox" }) do
    if type(lib[m]) ~= "table" then
      return nil, { string.format("%s/lua: module %s is missing", lib_dir, m) }
    end
  end
  local sandbox = lib["mcp.sandbox"]
  local t1 = phase("library_ms", t0)

  -- 2. Operator code: every file a job of its own, all started at once.
  local errors = {}
  local policies, policy_sources, providers, defs, def_sources = {}, {}, {}, {}, {}
  local nfiles = nlib
  if not opts.library_only then
    local jobs, items = {}, {}
    local function start(f, kind, extra)
      local j = job_start("load " .. f.path, load_operator_file, sandbox, f.path, kind, extra)
      j.file, j.kind = f, kind
      jobs[#jobs + 1] = j
      nfiles = nfiles + 1
      return j
    end
    -- Shipped policies first, then the operator's, which override by name.
    for _, dir in ipairs({ lib_dir .. "/policies", cfg.agent.policies_dir }) do
      for _, f in ipairs(files(dir, { lua = true })) do start(f, "policy") end
    end
    for _, f in ipairs(files(lib_dir .. "/policies/routes", { lua = true })) do
      start(f, "route provider", { config = cfg })
    end
    for _, f in ipairs(files(cfg.agent.services_dir, { toml = true, lua = true,
        json = true })) do
      local item = { path = f.path, ext = f.ext }
      items[#items + 1] = item
      if f.ext == "lua" then
        item.job = start(f, "definition")
      else
        nfiles = nfiles + 1
        local text, rerr = read(f.path)
        if not text then errors[#errors + 1] = f.path .. ": " .. tostring(rerr) end
        item.text = text or ""
      end
    end
    job_wait(jobs)
    t1 = phase("files_ms", t1)

    local broken = {}   -- policies that did not load: no "unknown policy" for them too
    for _, j in ipairs(jobs) do
      local jok, v, err = job_outcome(j, j.file.path)
      if not jok or v == nil then
        errors[#errors + 1] = jok and err or v
        if j.kind == "policy" then broken[j.file.base] = true end
      elseif j.kind == "policy" then
        if v.deploy ~= nil and type(v.deploy) ~= "function" then
          errors[#errors + 1] = string.format("%s: deploy must be a function, got %s",
            j.file.path, type(v.deploy))
        else
          policies[j.file.base] = v
          policy_sources[j.file.base] = j.file.path
        end
      elseif j.kind == "route provider" then
        if type(v.route_add) ~= "function" or type(v.route_remove) ~= "function" then
          errors[#errors + 1] = j.file.path .. ": a route provider returns a table with "
            .. "functions route_add and route_remove"
        else
          providers[j.file.base] = v
        end
      end
    end
    for _, it in ipairs(items) do
      if it.job then
        local jok, v = job_outcome(it.job, it.path)
        if jok and v ~= nil then it.raw = v end
        it.job = nil
      end
    end

    -- 3. The definitions, validated by the new library; also when other
    -- files failed, so that one reload reports every problem.
    local loaded, partial = {}, false
    for _, it in ipairs(items) do
      if it.ext == "lua" and it.raw == nil then partial = true else loaded[#loaded + 1] = it end
    end
    do
      local known = {}
      for name in pairs(policies) do known[name] = true end
      for name in pairs(broken) do known[name] = true end
      local vj = job_start("reload: definitions", validate_definitions, cfg, lib, known, loaded,
        partial)
      job_wait({ vj })
      local vok, d, s, verrs = job_outcome(vj)
      if not vok then
        errors[#errors + 1] = string.format("%s: validating the definitions: %s",
          tostring(cfg.agent.services_dir), d)
      else
        defs, def_sources = d, s
        for _, e in ipairs(verrs) do errors[#errors + 1] = e end
      end
      phase("definitions_ms", t1)
    end
  end
  if #errors > 0 then return nil, errors end
  gen.modules = lib
  gen.policies, gen.policy_sources = policies, policy_sources
  gen.route_providers = providers
  gen.definitions, gen.sources = defs, def_sources
  gen.files = nfiles
  gen.took_ms = (mcp.timer.monotime() - t0) * 1000
  gen.phases = phases
  gen.at = mcp.now()
  return gen
end

-- Makes gen current: its modules replace the library's in package.loaded.
-- No Lua code runs between the first and the last assignment (nothing here
-- can wait), so no task sees half of one generation and half of another.
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

----------------------------------------------------------------------------
-- A reload
----------------------------------------------------------------------------

local function task_alive(id)
  for _, t in ipairs(mcp.task.list()) do
    if t.id == id then return true end
  end
  return false
end

-- One reload at a time: a second one (a SIGHUP during a POST /v1/reload)
-- waits for the first, then reloads again (files may have changed since it
-- started). A holder that died (a cancelled request) releases it.
local function lock()
  local me = mcp.task.current()
  local s = mcp.state
  while s.reload_lock and s.reload_lock ~= me and task_alive(s.reload_lock) do
    mcp.sleep(0.005)
  end
  s.reload_lock = me
end

local function unlock()
  mcp.state.reload_lock = nil
end

-- Builds and installs; on failure keeps the running generation and records
-- the error where operators look: the log, /v1/status (reload_error) and
-- the counters of /metrics (the caller, mcp.agent, emits the event).
-- Returns the generation, or nil and the error text.
function reload.run(why)
  lock()
  -- Counters for /metrics (mcp.api.agent_metrics), in mcp.state so that they
  -- outlive this module.
  mcp.state.metrics = mcp.state.metrics or {}
  local m = mcp.state.metrics
  local prev = mcp.state.gen
  local ok, gen, errors = pcall(reload.build)
  if not ok then gen, errors = nil, { "reload: " .. tostring(gen) } end
  if not gen then
    local msg = table.concat(errors, "\n")
    mcp.state.reload_error = { message = msg, errors = errors, at = mcp.now(),
      why = why, generation = prev and prev.id }
    m.reload_failures_total = (m.reload_failures_total or 0) + 1
    unlock()
    mcp.log.error("reload (%s) failed; generation %s keeps running:\n%s", why or "?",
      prev and prev.id or "none", msg)
    return nil, msg
  end
  reload.install(gen)
  unlock()
  mcp.state.reload_error = nil
  m.reloads_total = (m.reloads_total or 0) + 1
  mcp.log.info("generation %s%d: %d files, %.1f ms (%s)",
    prev and (prev.id .. " → ") or "", gen.id, gen.files, gen.took_ms, why or "?")
  return gen
end

return reload
