-- mcp.sandbox: the environment that operator code runs in.
--
-- Policies, Lua service definitions and route providers are code an operator
-- edits on a live host. They see the mcp API and the safe parts of the
-- standard library, nothing that reaches the host around the agent: no io,
-- os.execute, load of bytecode, string.dump, debug, ffi, require of arbitrary
-- modules, and no writes to tables they share with the agent or with each
-- other. Reaching for one of those raises an error that names it (and, through
-- the error's position, the file and line), rather than "attempt to call a nil
-- value". Their chunks run with the JIT off, so the instruction budget of
-- their task holds (LuaJIT's count hook does not fire inside compiled traces).
--
-- This module builds environments and compiles; running a file under the
-- [lua] limits, in a task of its own, is mcp.reload's job.
local mcp = require("mcp.core")

local sandbox = {}

-- What of mcp operator code may use. exec, fs, store, watch and task stay
-- out: each would hand out the host (commands, files, the registry).
local MCP_ALLOWED = {
  "log", "json", "toml", "timer", "sleep", "now", "podman", "http", "net", "crypto",
  "version", "config",
}

local WHO = "policies and definitions"

-- Names that exist outside the sandbox and not in it: reading one raises,
-- saying why, so that a policy calling os.execute fails where it calls it.
local FORBIDDEN = {
  _G = {
    io = "io is not available to " .. WHO .. ": they cannot open files",
    require = "require is not available to " .. WHO .. " (nor ffi or other modules): "
      .. "a policy is one file; the mcp API is the global mcp",
    debug = "debug is not available to " .. WHO,
    jit = "jit is not available to " .. WHO .. ": their code runs with the JIT off",
    ffi = "ffi is not available to " .. WHO,
    package = "package is not available to " .. WHO,
    module = "module is not available to " .. WHO,
    dofile = "dofile is not available to " .. WHO .. ": they cannot read files",
    loadfile = "loadfile is not available to " .. WHO .. ": they cannot read files",
    getfenv = "getfenv is not available to " .. WHO,
    setfenv = "setfenv is not available to " .. WHO,
    rawset = "rawset is not available to " .. WHO .. " (shared tables are read-only)",
    collectgarbage = "collectgarbage is not available to " .. WHO,
    gcinfo = "gcinfo is not available to " .. WHO,
    newproxy = "newproxy is not available to " .. WHO,
  },
  os = {
    execute = "os.execute is not available to " .. WHO .. ": they cannot run commands "
      .. "(the sandbox's os has time, clock, date and difftime)",
    exit = "os.exit is not available to " .. WHO,
    remove = "os.remove is not available to " .. WHO .. ": they cannot touch files",
    rename = "os.rename is not available to " .. WHO .. ": they cannot touch files",
    tmpname = "os.tmpname is not available to " .. WHO,
    getenv = "os.getenv is not available to " .. WHO .. " (the agent's config is mcp.config)",
    setlocale = "os.setlocale is not available to " .. WHO,
  },
  string = {
    dump = "string.dump is not available to " .. WHO,
  },
  math = {
    randomseed = "math.randomseed is not available to " .. WHO
      .. " (the generator is the agent's)",
  },
  mcp = {
    exec = "mcp.exec is not available to " .. WHO .. ": they cannot run commands",
    fs = "mcp.fs is not available to " .. WHO .. ": they cannot touch files",
    store = "mcp.store is not available to " .. WHO .. ": the registry is the agent's",
    watch = "mcp.watch is not available to " .. WHO,
    task = "mcp.task is not available to " .. WHO,
    spawn = "mcp.spawn is not available to " .. WHO,
    run = "mcp.run is not available to " .. WHO,
    proc = "mcp.proc is not available to " .. WHO,
    httpd = "mcp.httpd is not available to " .. WHO,
    systemd = "mcp.systemd is not available to " .. WHO,
    state = "mcp.state is not available to " .. WHO .. ": the agent's state is its own",
  },
}
sandbox.FORBIDDEN = FORBIDDEN

-- Read-only views: an empty proxy whose reads fall through to a copy of the
-- table, so that every write, also to a name that exists, reaches
-- __newindex and raises. views maps a proxy to its copy, for the sandbox's
-- pairs, next, ipairs and rawget, which see through it.
local views = setmetatable({}, { __mode = "k" })

local function readonly_error(name)
  return function(_, k)
    error(string.format("%s is read-only in the sandbox (tried to set %s)",
      name == "_G" and "the sandbox" or name,
      name == "_G" and tostring(k) or (name .. "." .. tostring(k))), 2)
  end
end

-- A read-only view of t, recursively. Missing names listed in FORBIDDEN[name]
-- raise, with the reason.
local function readonly(t, name, seen)
  seen = seen or {}
  if seen[t] then return seen[t] end
  local data = {}
  local proxy = setmetatable({}, { __index = data, __newindex = readonly_error(name),
    __metatable = false })
  seen[t] = proxy
  views[proxy] = data
  for k, v in pairs(t) do
    if type(v) == "table" and getmetatable(v) == nil then
      data[k] = readonly(v, name == "_G" and tostring(k) or (name .. "." .. tostring(k)),
        seen)
    else
      data[k] = v
    end
  end
  local forbidden = FORBIDDEN[name]
  if forbidden then
    setmetatable(data, { __index = function(_, k)
      local why = forbidden[k]
      if why then error(why, 2) end
      return nil
    end })
  end
  return proxy
end

local function view_next(t, k)
  return next(views[t] or t, k)
end

local function view_pairs(t)
  if views[t] then return view_next, t, nil end
  return pairs(t)
end

local function view_ipairs(t)
  return ipairs(views[t] or t)
end

local function view_rawget(t, k)
  return rawget(views[t] or t, k)
end

-- A deep copy of plain data (the agent's config for one file).
local function data_copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = data_copy(x) end
  return setmetatable(out, getmetatable(v))
end

local function copy_lib(lib, except)
  local t = {}
  for k, v in pairs(lib) do
    if not (except and except[k]) then t[k] = v end
  end
  return t
end

-- Strings share one metatable with the agent, whose __index is the string
-- library: ("").dump would reach string.dump. The method table becomes a
-- copy without dump (the agent never calls dump as a method; string.dump
-- itself stays). Done once per Lua state: mcp.state remembers the table.
local function seal_string_methods()
  local smt = getmetatable("")
  if type(smt) ~= "table" or (smt.__index ~= nil
      and smt.__index == mcp.state.sandbox_string_methods) then
    return
  end
  local methods = copy_lib(string, { dump = true })
  setmetatable(methods, { __index = function(_, k)
    if k == "dump" then error(FORBIDDEN.string.dump, 2) end
    return string[k]       -- functions added to string later stay reachable
  end })
  smt.__index = methods
  mcp.state.sandbox_string_methods = methods
end

-- Metatables set by sandboxed code: getmetatable shows only these, so that a
-- policy cannot reach (and change) the metatable of an agent object such as
-- the deploy context. Weak: they go with their tables.
local own_mts = setmetatable({}, { __mode = "k" })

local function sandbox_getmetatable(v)
  if type(v) ~= "table" or not own_mts[debug.getmetatable(v) or false] then return nil end
  return getmetatable(v)
end

local function sandbox_setmetatable(t, mt)
  if type(t) ~= "table" then
    error("bad argument #1 to 'setmetatable' (table expected, got " .. type(t) .. ")", 2)
  end
  local cur = debug.getmetatable(t)
  if cur ~= nil and not own_mts[cur] then
    error("setmetatable: cannot change the metatable of a table the agent owns", 2)
  end
  if mt ~= nil and type(mt) ~= "table" then
    error("bad argument #2 to 'setmetatable' (nil or table expected)", 2)
  end
  if mt then own_mts[mt] = true end
  return setmetatable(t, mt)
end

-- load() of source text only: bytecode could break out of any sandbox.
local function safe_load(env)
  return function(chunk, chunkname)
    if type(chunk) ~= "string" then
      error("load: only strings of Lua source are allowed in the sandbox", 2)
    end
    if chunk:byte(1) == 27 then
      error("load: binary chunks (bytecode) are not allowed in the sandbox", 2)
    end
    local fn, err = load(chunk, chunkname, "t")
    if not fn then return nil, err end
    setfenv(fn, env)
    jit.off(fn, true)
    return fn
  end
end

-- The shared, read-only base every sandboxed environment falls back to.
local function build_base()
  seal_string_methods()
  local m = {}
  for _, k in ipairs(MCP_ALLOWED) do m[k] = mcp[k] end
  local base = {
    assert = assert, error = error, ipairs = view_ipairs, next = view_next,
    pairs = view_pairs, pcall = pcall, select = select, tonumber = tonumber,
    tostring = tostring, type = type, unpack = unpack, xpcall = xpcall,
    rawequal = rawequal, rawget = view_rawget, setmetatable = sandbox_setmetatable,
    getmetatable = sandbox_getmetatable,
    string = copy_lib(string, { dump = true }),
    table = copy_lib(table),
    math = copy_lib(math, { randomseed = true }),
    os = { time = os.time, clock = os.clock, date = os.date, difftime = os.difftime },
    coroutine = copy_lib(coroutine),
    mcp = m,
  }
  return readonly(base, "_G")
end

-- The mcp of one file: the shared read-only bindings, and mcp.config as a
-- copy of its own (what it changes there, it changes for itself).
local function file_mcp(shared)
  local data = setmetatable({}, getmetatable(views[shared]))
  for k, v in pairs(views[shared]) do data[k] = v end
  data.config = mcp.config and data_copy(mcp.config) or nil
  local proxy = setmetatable({}, { __index = data, __newindex = readonly_error("mcp"),
    __metatable = false })
  views[proxy] = data
  return proxy
end

local base

-- Returns a fresh environment for one file: its globals are its own (a write
-- goes to this table, never to another file's or the agent's), and reads
-- fall through to the read-only base. extra (optional) adds names.
function sandbox.env(name, extra)
  base = base or build_base()
  local env = {}
  env._G = env
  env.print = function(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[#parts + 1] = tostring((select(i, ...))) end
    mcp.log.info("%s: %s", name, table.concat(parts, "\t"))
  end
  env.load = safe_load(env)
  env.loadstring = env.load
  env.mcp = file_mcp(views[base].mcp)
  if extra then
    for k, v in pairs(extra) do env[k] = v end
  end
  return setmetatable(env, { __index = base })
end

-- Compiles a file's text into a function that runs in env, JIT off. Returns
-- fn or nil, "file:line: message".
function sandbox.compile(text, chunkname, env)
  if text:byte(1) == 27 then
    return nil, chunkname .. ": binary chunks (bytecode) are not allowed"
  end
  local fn, err = load(text, "@" .. chunkname, "t")
  if not fn then return nil, err end
  setfenv(fn, env)
  jit.off(fn, true)
  return fn
end

-- Loads a file of operator code: compiles it in a fresh environment and
-- runs it, returning what it returns, or nil, "file:line: message". It runs
-- in the caller's task: mcp.reload runs it in one of its own, with limits.
function sandbox.load_file(path, text, extra)
  local env = sandbox.env(path, extra)
  local fn, err = sandbox.compile(text, path, env)
  if not fn then return nil, err end
  local ok, result = pcall(fn)
  if not ok then
    if type(result) ~= "string" then
      result = path .. ": raised a " .. type(result) .. " value"
    end
    return nil, result
  end
  return result, nil, env
end

-- A copy of what a definition file returned, as plain data: tables copied
-- field by field with next (a metamethod never runs in the agent's code that
-- reads it later), metatables dropped, functions kept. Raises "file: field
-- x.y: ..." on a table inside itself or nesting deeper than 32 levels: a
-- definition is a tree.
function sandbox.plain(v, file)
  local seen = {}
  local function copy(x, path, depth)
    if type(x) ~= "table" then return x end
    if seen[x] then
      error(string.format("%s: %s: a table that contains itself cannot be part of a "
        .. "definition", file, path), 0)
    end
    if depth >= 32 then
      error(string.format("%s: %s: nested deeper than 32 levels", file, path), 0)
    end
    seen[x] = true
    local out = {}
    local k, val = next(x)
    while k ~= nil do
      local sub = type(k) == "string" and (path == "the table" and k or path .. "." .. k)
        or string.format("%s[%s]", path, tostring(k))
      out[copy(k, sub, depth + 1)] = copy(val, sub, depth + 1)
      k, val = next(x, k)
    end
    seen[x] = nil
    return out
  end
  return copy(v, "the table", 0)
end

----------------------------------------------------------------------------
-- Limits, and calls into operator code in tasks of their own
----------------------------------------------------------------------------

-- The [lua] limits of operator code, as mcp.spawn options.
function sandbox.limits()
  local c = mcp.config and mcp.config.lua or {}
  return { instructions = c.task_instructions or 100000000,
    timeout = c.task_timeout or 600, memory = c.task_memory or 64 * 1024 * 1024 }
end

local LIMITS = {
  { "instruction budget of %S+ exceeded", "[lua] task_instructions" },
  { "deadline of .- exceeded", "[lua] task_timeout" },
  { "memory cap of .- exceeded", "[lua] task_memory" },
}

-- The limit a message is about, as the runtime said it, with the setting
-- that sets it: "instruction budget of 5000 exceeded ([lua] task_instructions)".
-- nil when msg is not a limit's message. setting (optional) replaces the
-- deadline's setting (load time has a deadline of its own).
function sandbox.limit_text(msg, deadline_setting)
  if type(msg) ~= "string" then return nil end
  for _, l in ipairs(LIMITS) do
    local what = msg:match(l[1])
    if what then
      local setting = l[2]
      if deadline_setting and setting == "[lua] task_timeout" then
        setting = deadline_setting
      end
      return what .. " (" .. setting .. ")"
    end
  end
  if msg:find("not enough memory", 1, true) then
    return string.format("memory cap of %d bytes exceeded ([lua] task_memory): an "
      .. "allocation failed", sandbox.limits().memory)
  end
  return nil
end

-- The error a coroutine died of, when it is a string. A dead coroutine keeps
-- its stack for the debug API with the error on top (the contract of
-- lua_resume); that is the only place a limit's message survives, since a
-- task past a limit cannot run another instruction to pass it on.
function sandbox.dead_error(co)
  if type(co) ~= "thread" or coroutine.status(co) ~= "dead" then return nil end
  local last
  for i = 1, 255 do
    local ok, name, v = pcall(debug.getlocal, co, 0, i)
    if not ok or not name then break end
    last = v
  end
  return type(last) == "string" and last or nil
end

local function task_alive(id)
  for _, t in ipairs(mcp.task.list()) do
    if t.id == id then return true end
  end
  return false
end

local function pack(...) return { n = select("#", ...), ... } end

-- Wraps fn, the function `hook` of the operator file `file`: a call runs
-- fn in a task of its own, with the [lua] limits and named after it, and
-- waits for it. The call returns what fn returns, or raises what fn raised;
-- when fn went past a limit, it raises "file: hook: <the limit's message>"
-- as an ordinary error, so the agent's code around the call (the deploy
-- executor's cleanup) still runs: the limit ended the policy's task, not the
-- caller's. Outside a task (tests, the CLI) fn is called directly.
function sandbox.isolate(fn, file, hook, name)
  local task_name = "policy " .. (name or file:match("([^/]+)%.lua$") or file) .. "." .. hook
  return function(...)
    if not mcp.task.current() then return fn(...) end
    local slot = { args = pack(...) }
    local lim = sandbox.limits()
    lim.name = task_name
    local t0 = mcp.timer.monotime()
    local id = mcp.spawn(lim, function()
      slot.thread = coroutine.running()
      slot.r = pack(pcall(fn, unpack(slot.args, 1, slot.args.n)))
    end)
    local delay = 0.001
    while not slot.r and task_alive(id) do
      mcp.sleep(delay)
      delay = math.min(delay * 2, 0.05)
    end
    local r = slot.r
    if r then
      if r[1] then return unpack(r, 2, r.n) end
      -- A failed allocation is an ordinary error, without a position.
      local limit = r[2] == "not enough memory" and sandbox.limit_text(r[2])
      if limit then error(string.format("%s: %s: %s", file, hook, limit), 0) end
      error(r[2], 0)
    end
    -- The task ended without a word: a limit (or the agent stopping) ended it.
    local msg = sandbox.dead_error(slot.thread)
    if not msg and lim.timeout > 0 and mcp.timer.monotime() - t0 >= lim.timeout then
      msg = string.format("deadline of %g s exceeded", lim.timeout)
    end
    local limit = sandbox.limit_text(msg)
    error(string.format("%s: %s: %s", file, hook, limit or msg
      or "ended before it returned (cancelled, or the agent is stopping)"), 0)
  end
end

-- The fields of a policy or route provider table, copied with next: the
-- agent reads hooks from the copy, so that a metatable cannot run code in
-- the agent's own tasks. Functions are wrapped by sandbox.isolate; the
-- policy's own code still calls the originals (they are its upvalues).
function sandbox.hooks(t, file, name)
  local out = {}
  local k, v = next(t)
  while k ~= nil do
    if type(v) == "function" and type(k) == "string" and file then
      out[k] = sandbox.isolate(v, file, k, name)
    else
      out[k] = v
    end
    k, v = next(t, k)
  end
  return out
end

sandbox.readonly = readonly

return sandbox
