-- mcp.boot: bringing services back when the agent starts.
--
-- After a reboot (rootless containers do not come back by themselves) or
-- after Podman lost its state, every service the registry says should run is
-- brought back: the recover operation, without an operator. Order: the
-- [[boot.sequence]] stages of the agent config first, each waiting for its
-- services to be healthy up to its timeout (a blocking stage that fails
-- stops the later stages; a non-blocking one is logged and passed), then
-- everything else in depends_on order. Starting twice changes nothing the
-- second time: a service whose containers run is left alone.
local mcp = require("mcp.core")
local events = require("mcp.events")
local ops = require("mcp.ops")
local registry = require("mcp.registry")

local boot = {}

-- Services whose components are not all running.
local function needing(names)
  local need = {}
  local list = mcp.podman.list({ all = true, filters = { label = { "mcp.managed=true" } } })
  if not list then return nil end
  local running = {}
  for _, c in ipairs(list) do
    local l = c.Labels or {}
    if c.State == "running" then
      running[(l["mcp.service"] or "") .. "/" .. (l["mcp.component"] or "")] = true
    end
  end
  for _, name in ipairs(names) do
    local rev = registry.revision_current(mcp.state.db, name)
    for _, comp in ipairs(rev and rev.spec and rev.spec.definition
        and rev.spec.definition.components or {}) do
      if not running[name .. "/" .. comp.name] then need[name] = true end
    end
  end
  return need
end

-- Waits until Podman answers: at boot the agent may start first.
local function wait_podman(limit)
  local deadline = mcp.timer.monotime() + limit
  while mcp.timer.monotime() < deadline do
    if mcp.podman.ping() then return true end
    mcp.sleep(1)
  end
  return false
end

function boot.run()
  if not wait_podman(120) then
    mcp.log.error("boot: Podman did not answer within 120 s; the monitor keeps trying")
    return
  end
  local names = {}
  for _, svc in ipairs(registry.service_list(mcp.state.db)) do
    if svc.active then names[#names + 1] = svc.name end
  end
  local need = needing(names)
  if not need or next(need) == nil then
    mcp.log.info("boot: every deployed service runs")
    return
  end
  local done = {}
  for i, stage in ipairs(mcp.config.boot.sequence or {}) do
    local only = {}
    for _, s in ipairs(stage.services) do
      if need[s] then only[s] = true end
      done[s] = true
    end
    if next(only) then
      mcp.log.info("boot: stage %d (%s)", i, stage.name)
      local r = ops.recover({ only = only })
      local ok = r ~= nil
      for _, s in ipairs(r and r.services or {}) do ok = ok and s.ok end
      if ok then ok = boot.wait_healthy(only, stage.timeout) end
      if not ok then
        events.emit({ kind = "boot_stage_failed", message = string.format(
          "stage %s did not come up within %gs%s", stage.name, stage.timeout,
          stage.blocking and "; later stages are not started" or "") })
        if stage.blocking then return end
      end
    end
  end
  local rest = {}
  for name in pairs(need) do
    if not done[name] then rest[name] = true end
  end
  if next(rest) then ops.recover({ only = rest }) end
end

-- Waits until every running container of the given services is healthy.
function boot.wait_healthy(only, timeout)
  local deadline = mcp.timer.monotime() + timeout
  while mcp.timer.monotime() < deadline do
    local all = true
    for name in pairs(only) do
      local rev = registry.revision_current(mcp.state.db, name)
      for _, comp in ipairs(rev.spec.definition.components) do
        local h = (mcp.state.health or {})[name .. "-" .. comp.name]
        if not h or h.state ~= "healthy" then all = false end
      end
    end
    if all then return true end
    mcp.sleep(0.5)
  end
  return false
end

return boot
