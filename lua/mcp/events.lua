-- mcp.events: every transition the agent sees or makes, in one place.
--
-- An event is recorded in the registry (so /v1/events and `mcp events`
-- can replay it after a restart), logged, counted for /metrics, and handed to
-- the service's policy hook `on_event`, which may forward it (an HTTP POST
-- through mcp.http, say). Followers of /v1/events read the registry by id, so
-- nothing about them lives in Lua variables that a reload would lose.
local mcp = require("mcp.core")

local events = {}

-- The log level of an event, by a word its kind contains; errors first, so
-- that "restart_failed" is an error whatever else it says.
local LEVEL = {
  { "error", "error" }, { "failed", "error" },
  { "flapping", "warn" }, { "unhealthy", "warn" }, { "drift", "warn" }, { "died", "warn" },
  { "unreachable", "warn" }, { "interrupted", "warn" },
}

local function level_of(kind)
  for _, l in ipairs(LEVEL) do
    if kind:find(l[1], 1, true) then return l[2] end
  end
  return "info"
end

-- emit{kind=, service=, component=, message=, data=}. Never fails: an event
-- that cannot be stored is still logged.
function events.emit(e)
  local m = mcp.state.metrics
  if m then
    m.events = m.events or {}
    m.events[e.kind] = (m.events[e.kind] or 0) + 1
  end
  local where = e.service and (e.component and (e.service .. "/" .. e.component) or e.service)
    or "agent"
  mcp.log[level_of(e.kind)]("%s: %s: %s", where, e.kind, e.message or "")
  local db = mcp.state.db
  if db then
    local registry = require("mcp.registry")
    local ok, err = pcall(registry.event_add, db, e)
    if not ok then mcp.log.error("event not recorded: %s", tostring(err)) end
  end
  local gen = mcp.state.gen
  local def = gen and e.service and gen.definitions and gen.definitions[e.service]
  local policy = def and gen.policies[def.policy]
  if policy and type(policy.on_event) == "function" then
    local c = mcp.config.lua
    mcp.spawn({ name = "on_event:" .. (e.service or "?"), timeout = c.task_timeout,
      instructions = c.task_instructions, memory = c.task_memory },
      policy.on_event, e)
  end
end

return events
