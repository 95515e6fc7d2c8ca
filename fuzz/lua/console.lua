-- fuzz/lua/console.lua: the driver of console_fuzz.c. It gets the frames a
-- client sent, { {type, payload}, ... }, and does with them what
-- core/console.c does: EVAL -> mcp.console.eval(session, text) (here in the
-- run's task, with its limits), COMPLETE -> mcp.console.complete(session,
-- word) in a protected call, INTERRUPT -> nothing (no evaluation in flight).
--
-- The session's environment falls back to a small table of pure functions
-- instead of the agent's globals: fuzzed code must not reach os.exit, io or
-- the registry. What is checked: eval answers "result", "error" or
-- "continue" with a string, complete answers a list of strings that start
-- with the word's head.
local console = require("mcp.console")

local driver = {}

local SAFE = {
  string = string, table = table, math = math, pairs = pairs, ipairs = ipairs,
  next = next, select = select, tostring = tostring, tonumber = tonumber, type = type,
  error = error, pcall = pcall, xpcall = xpcall, assert = assert, unpack = unpack,
  setmetatable = setmetatable, getmetatable = getmetatable, rawget = rawget,
  rawset = rawset, rawequal = rawequal,
}

local function safe_env()
  return setmetatable({}, { __index = SAFE })
end

local session

function driver.setup()
  session = console.session({ id = 1, uid = 0, pid = 1 })
end

local KINDS = { result = true, error = true, continue = true }

local function fail(fmt, ...) return false, string.format(fmt, ...) end

function driver.run(frames)
  session.env = safe_env()      -- :reset gives a session the agent's globals
  session.trace = nil
  for _, fr in ipairs(frames) do
    local t, payload = fr[1], fr[2]
    if t == "E" then
      session.env = getmetatable(session.env) and getmetatable(session.env).__index == SAFE
        and session.env or safe_env()
      local kind, text = console.eval(session, payload)
      if os.getenv("MCP_FUZZ_DEBUG") then
        io.stderr:write(("eval %q -> %s %q\n"):format(payload, tostring(kind), tostring(text)))
      end
      if not KINDS[kind] then return fail("eval answered kind %s", tostring(kind)) end
      if type(text) ~= "string" then return fail("eval answered a %s", type(text)) end
    elseif t == "C" then
      local ok, list = pcall(console.complete, session, payload)
      if not ok then return fail("complete raised: %s", tostring(list)) end
      if type(list) ~= "table" then return fail("complete answered a %s", type(list)) end
      local head = payload:match("^(.-[%.:])[%w_]*$") or ""
      for _, c in ipairs(list) do
        if type(c) ~= "string" or c:sub(1, #head) ~= head then
          return fail("completion %q does not start with %q", tostring(c), head)
        end
      end
    end
  end
  return true
end

return driver
