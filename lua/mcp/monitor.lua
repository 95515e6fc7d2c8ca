-- mcp.monitor: keeping deployed services alive.
--
-- Three daemon tasks, each a short loop that looks up this module again on
-- every turn, so a reload of the library changes their behaviour without
-- restarting them:
--   events  Podman's event stream: a managed container that dies or goes
--           away is noticed at once; after a reconnect, everything is re-listed.
--   relist  every [monitor] relist_interval, a full comparison of the
--           registry with Podman, for whatever the events missed.
--   health  each running container's check at its interval.
-- Remediation follows the component's `restart` and `on_unhealthy`, waits an
-- exponential backoff with jitter, and gives up on a component that restarts
-- more than [monitor] flap_max times within flap_window: it is `flapping`
-- until an operator restarts or redeploys it.
local mcp = require("mcp.core")
local backoff = require("mcp.backoff")
local events = require("mcp.events")
local health = require("mcp.health")
local registry = require("mcp.registry")

local monitor = {}

local function state()
  local s = mcp.state
  s.restarts = s.restarts or {}     -- "svc/comp" -> {backoff, flap, pending}
  s.health = s.health or {}         -- container name -> health state
  s.probing = s.probing or {}       -- container name -> next probe time
  return s
end

local function cfg() return mcp.config.monitor end

local function restarts_of(key)
  local s = state()
  local r = s.restarts[key]
  if not r then
    local c = cfg()
    r = {
      backoff = backoff.new({ first = c.restart_first, factor = c.restart_factor,
        cap = c.restart_cap, jitter = c.restart_jitter, reset_after = c.restart_reset }),
      flap = backoff.flap.new({ max = c.flap_max, window = c.flap_window }),
    }
    s.restarts[key] = r
  end
  return r
end

-- Forgets a service's restart history and flapping mark: after an operator's
-- restart or a new deploy it starts afresh.
function monitor.reset(service)
  local s = state()
  for key in pairs(s.restarts) do
    if key:sub(1, #service + 1) == service .. "/" then s.restarts[key] = nil end
  end
  for name, h in pairs(s.health) do
    if h.service == service then s.health[name] = nil end
  end
end

function monitor.flapping(service, component)
  local r = state().restarts[service .. "/" .. component]
  return r and r.flap:is_flapping() or false
end

-- What the registry says should run: service -> current revision, for
-- services deployed and not stopped by an operator.
local function desired()
  local out = {}
  for _, svc in ipairs(registry.service_list(mcp.state.db)) do
    if svc.active then
      local rev = registry.revision_current(mcp.state.db, svc.name)
      if rev and rev.spec and rev.spec.definition then out[svc.name] = rev end
    end
  end
  return out
end

local function busy(service)
  local held = mcp.state.locks[service]
  if not held then return false end
  for _, t in ipairs(mcp.task.list()) do
    if t.id == held.task then return true end
  end
  return false
end

-- Brings one component back after a delay, unless it flaps.
function monitor.remediate(service, component, why)
  local key = service .. "/" .. component
  local r = restarts_of(key)
  if r.pending or r.flap:is_flapping() then return end
  local now = mcp.timer.monotime()
  if r.flap:record(now) then
    events.emit({ kind = "flapping", service = service, component = component,
      message = string.format("more than %d restarts within %gs; not restarting until an "
        .. "operator restarts or redeploys it", cfg().flap_max, cfg().flap_window) })
    return
  end
  local delay = r.backoff:next_delay(now, math.random)
  r.pending = true
  events.emit({ kind = "restart_scheduled", service = service, component = component,
    message = string.format("%s; restarting in %.1fs", why, delay),
    data = { delay = delay } })
  mcp.spawn({ name = "restart:" .. key, daemon = true }, function()
    mcp.sleep(delay)
    r.pending = false
    if busy(service) then return end
    local ops = require("mcp.ops")
    local ok, err = ops.restore_component(service, component)
    if ok then
      events.emit({ kind = "restarted", service = service, component = component,
        message = string.format("after %.1fs (%s)", delay, why) })
    else
      events.emit({ kind = "restart_failed", service = service, component = component,
        message = tostring(err) })
    end
  end)
end

-- Decides about one managed container that died or vanished.
function monitor.container_gone(service, component, exit_code, action)
  local want = desired()[service]
  if not want or busy(service) then return end
  local def = want.spec.definition
  local comp
  for _, c in ipairs(def.components) do
    if c.name == component then comp = c end
  end
  if not comp then return end
  if comp.restart == "no" then return end
  if comp.restart == "on-failure" and action == "died" and exit_code == 0 then return end
  monitor.remediate(service, component, string.format("container %s (exit %s)", action,
    tostring(exit_code or "?")))
end

-- Compares the registry with Podman once; every difference is remediated.
function monitor.relist()
  local want = desired()
  local list, err = mcp.podman.list({ all = true, filters = { label = { "mcp.managed=true" } } })
  if not list then
    mcp.state.podman_ok = false
    return nil, err
  end
  mcp.state.podman_ok = true
  local seen = {}
  for _, c in ipairs(list) do
    local l = c.Labels or {}
    local key = (l["mcp.service"] or "?") .. "/" .. (l["mcp.component"] or "?")
    seen[key] = seen[key] or {}
    table.insert(seen[key], c)
  end
  for service, rev in pairs(want) do
    if not busy(service) then
      for _, comp in ipairs(rev.spec.definition.components) do
        local cs = seen[service .. "/" .. comp.name] or {}
        local running = false
        for _, c in ipairs(cs) do
          if c.State == "running" then running = true end
          if c.Image and comp.image and c.Image ~= comp.image
              and not c.Image:find(comp.image, 1, true) then
            events.emit({ kind = "drift", service = service, component = comp.name,
              message = string.format("container %s runs %s, revision %s says %s",
                (c.Names or {})[1] or "?", c.Image, rev.id, comp.image) })
          end
        end
        if not running and not monitor.flapping(service, comp.name) then
          monitor.container_gone(service, comp.name, nil, #cs == 0 and "missing" or "stopped")
        end
      end
    end
  end
  return true
end

-- One pass of health checks: probes the containers whose turn it is.
function monitor.health_tick()
  local s = state()
  local now = mcp.timer.monotime()
  for service, rev in pairs(desired()) do
    local def = rev.spec.definition
    local ports = rev.spec.ports or {}
    local gen = mcp.state.gen
    local policy = gen and gen.policies[def.policy]
    local live = gen and gen.definitions[service]
    for _, comp in ipairs(def.components) do
      -- A lua check's function does not survive JSON: take it from the live definition.
      if comp.health.kind == "lua" and live then
        for _, lc in ipairs(live.components) do
          if lc.name == comp.name then comp = lc end
        end
      end
      local name = require("mcp.definition").container_name(service, comp.name)
      local due = s.probing[name]
      if (not due or now >= due) and not busy(service) then
        s.probing[name] = now + comp.health.interval
        mcp.spawn({ name = "health:" .. name, timeout = comp.health.timeout + 5 }, function()
          monitor.probe(service, comp, name, ports[comp.name], policy, rev)
        end)
      end
    end
  end
end

-- Probes one container and records what changed.
function monitor.probe(service, comp, name, ports, policy, rev)
  local s = state()
  local info = mcp.podman.inspect(name)
  if not info or not (info.State and info.State.Running) then
    s.health[name] = nil
    return
  end
  local st = s.health[name]
  local started = info.State.StartedAt
  if not st or st.started_at ~= started then
    st = health.new_state(mcp.timer.monotime())
    st.service, st.component, st.started_at = service, comp.name, started
    s.health[name] = st
  end
  local ok, detail, took = health.probe({ service = service, component = comp.name,
    container = name, def = rev.spec.definition, comp = comp, ports = ports,
    policy = policy })
  st.last, st.detail, st.took_ms, st.checked = ok, detail, took, mcp.now()
  local m = mcp.state.metrics
  m.health_checks = m.health_checks or {}
  local k = ok and "pass" or "fail"
  m.health_checks[k] = (m.health_checks[k] or 0) + 1
  local now_state, changed = health.step(st, comp.health, ok, mcp.timer.monotime())
  if changed then
    pcall(registry.health_set, mcp.state.db, name, { state = now_state, detail = detail })
    events.emit({ kind = now_state, service = service, component = comp.name,
      message = string.format("%s: %s", name, detail) })
    if now_state == "healthy" then
      restarts_of(service .. "/" .. comp.name).backoff:healthy_since(mcp.timer.monotime())
    elseif now_state == "unhealthy" then
      monitor.unhealthy(service, comp, name, detail, policy)
    end
  end
end

-- What to do with a container that turned unhealthy: the policy's
-- on_unhealthy hook decides when it has one, else the component's setting.
function monitor.unhealthy(service, comp, name, detail, policy)
  local action = comp.on_unhealthy
  if policy and type(policy.on_unhealthy) == "function" then
    local ok, res = pcall(policy.on_unhealthy, { service = service, component = comp.name,
      container = name, detail = detail })
    if ok and (res == "restart" or res == "stop" or res == "none") then action = res end
  end
  if action == "restart" then
    monitor.remediate(service, comp.name, "unhealthy: " .. detail)
  elseif action == "stop" then
    mcp.podman.stop(name, { timeout = comp.stop_timeout })
    events.emit({ kind = "stopped", service = service, component = comp.name,
      message = name .. " stopped because it is unhealthy" })
  end
end

-- The daemon loops. Each turn requires the module afresh: after a reload the
-- next turn runs the new code.
function monitor.start()
  mcp.spawn({ name = "monitor.events", daemon = true }, function()
    local sub
    while true do
      if not sub then sub = mcp.podman.events.subscribe({ type = { "container" },
        label = { "mcp.managed=true" } }) end
      local ev, err = sub:next(5)
      if ev then require("mcp.monitor").on_event(ev)
      elseif err ~= "timeout" then mcp.sleep(1) end
    end
  end)
  mcp.spawn({ name = "monitor.relist", daemon = true }, function()
    while true do
      local ok, err = pcall(require("mcp.monitor").relist)
      if not ok then mcp.log.error("relist: %s", tostring(err)) end
      mcp.sleep(mcp.config.monitor.relist_interval)
    end
  end)
  mcp.spawn({ name = "monitor.health", daemon = true }, function()
    while true do
      local ok, err = pcall(require("mcp.monitor").health_tick)
      if not ok then mcp.log.error("health: %s", tostring(err)) end
      mcp.sleep(1)
    end
  end)
end

function monitor.on_event(ev)
  if ev.type == "reconnected" then
    mcp.state.podman_ok = true
    events.emit({ kind = "podman_reconnected", message = "event stream back; re-listing" })
    return monitor.relist()
  end
  local action = ev.Action or ev.status
  local attrs = ev.Actor and ev.Actor.Attributes or {}
  local service, component = attrs["mcp.service"], attrs["mcp.component"]
  if not service or not component then return end
  if action == "died" or action == "remove" then
    -- Events of a container the agent itself is replacing are not drift, nor
    -- are those of an older revision's container that a deploy removed.
    if busy(service) then return end
    local cur = registry.revision_current(mcp.state.db, service)
    local rev = attrs["mcp.revision"]
    if cur and rev and rev ~= cur.id then return end
    local code = tonumber(attrs.containerExitCode)
    if action == "remove" then
      -- A removed container died first; its died event scheduled the restart.
      local r = state().restarts[service .. "/" .. component]
      if r and r.pending then return end
    end
    monitor.container_gone(service, component, code, action)
  end
end

return monitor
