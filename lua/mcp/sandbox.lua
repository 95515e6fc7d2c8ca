-- mcp.sandbox: the environment that operator code runs in.
--
-- Policies, Lua service definitions and route providers are code an operator
-- edits on a live host. They see the mcp API and the safe parts of the
-- standard library, nothing that reaches the host around the agent: no io,
-- os.execute, load of bytecode, debug, ffi, require of arbitrary modules, and
-- no writes to tables they share with the agent or with each other. Their
-- chunks run with the JIT off, so the instruction budget of their task holds
-- (LuaJIT's count hook does not fire inside compiled traces).
local mcp = require("mcp.core")

local sandbox = {}

-- What of mcp operator code may use. exec, fs, store, watch and task stay
-- out: each would hand out the host (commands, files, the registry).
local MCP_ALLOWED = {
  "log", "json", "toml", "timer", "sleep", "now", "podman", "http", "net", "crypto",
  "version", "config",
}

local function readonly(t, name, seen)
  seen = seen or {}
  if seen[t] then return seen[t] end
  local proxy = {}
  seen[t] = proxy
  for k, v in pairs(t) do
    if type(v) == "table" and getmetatable(v) == nil then
      proxy[k] = readonly(v, name .. "." .. tostring(k), seen)
    else
      proxy[k] = v
    end
  end
  return setmetatable(proxy, {
    __newindex = function(_, k)
      error(string.format("%s is read-only (tried to set %s)", name, tostring(k)), 2)
    end,
    __metatable = false,
  })
end

local function copy_lib(lib, except)
  local t = {}
  for k, v in pairs(lib) do
    if not (except and except[k]) then t[k] = v end
  end
  return t
end

-- load() of text only: bytecode could break out of any sandbox.
local function safe_load(env)
  return function(chunk, chunkname)
    if type(chunk) ~= "string" then
      error("load: only strings of Lua source are allowed here", 2)
    end
    if chunk:byte(1) == 27 then
      error("load: binary chunks are not allowed", 2)
    end
    local fn, err = loadstring(chunk, chunkname)
    if not fn then return nil, err end
    setfenv(fn, env)
    jit.off(fn, true)
    return fn
  end
end

-- The shared, read-only base every sandboxed environment falls back to.
local function build_base()
  local m = {}
  for _, k in ipairs(MCP_ALLOWED) do m[k] = mcp[k] end
  local base = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    pcall = pcall, select = select, tonumber = tonumber, tostring = tostring,
    type = type, unpack = unpack, xpcall = xpcall, rawequal = rawequal,
    rawget = rawget, setmetatable = setmetatable,
    -- The string metatable is the agent's: handing it out would let a
    -- policy redefine string methods for everyone.
    getmetatable = function(v)
      if type(v) == "string" then return nil end
      return getmetatable(v)
    end,
    string = copy_lib(string, { dump = true }),
    table = copy_lib(table),
    math = copy_lib(math, { randomseed = true }),
    os = { time = os.time, clock = os.clock, date = os.date, difftime = os.difftime },
    coroutine = copy_lib(coroutine),
    mcp = m,
  }
  return readonly(base, "the sandbox")
end

local base

-- Returns a fresh environment for one file: its globals are its own, and
-- reads fall through to the read-only base. extra (optional) adds names.
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
  if extra then
    for k, v in pairs(extra) do env[k] = v end
  end
  return setmetatable(env, { __index = base })
end

-- Compiles a file's text into a function that runs in env, JIT off. Returns
-- fn or nil, "file:line: message".
function sandbox.compile(text, chunkname, env)
  if text:byte(1) == 27 then
    return nil, chunkname .. ": binary chunks are not allowed"
  end
  local fn, err = loadstring(text, "@" .. chunkname)
  if not fn then return nil, err end
  setfenv(fn, env)
  jit.off(fn, true)
  return fn
end

-- Loads a file of operator code: compiles it in a fresh environment and
-- runs it, returning what it returns, or nil, "file:line: message".
function sandbox.load_file(path, text, extra)
  local env = sandbox.env(path, extra)
  local fn, err = sandbox.compile(text, path, env)
  if not fn then return nil, err end
  local ok, result = pcall(fn)
  if not ok then return nil, tostring(result) end
  return result, nil, env
end

sandbox.readonly = readonly

return sandbox
