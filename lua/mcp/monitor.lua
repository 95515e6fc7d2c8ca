-- mcp.monitor: keeping deployed services alive.
--
-- Three daemon tasks, each a short loop that looks up this module again on
-- every turn, so a reload of the library changes their behaviour without
-- restarting them:
--   events  Podman's event stream: a managed container that dies or goes
--           away is noticed at once; after a reconnect (and after events were
--           lost to a full queue) everything is re-listed.
--   relist  every [monitor] relist_interval, a full comparison of the
--           registry with Podman through the planner, for whatever the
--           events missed: missing, stopped, dead containers, and containers
--           that run another image or revision than the registry records.
--   health  each running container's check at its interval.
-- Remediation follows the component's `restart` and `on_unhealthy` (or the
-- policy's on_unhealthy hook), waits an exponential backoff with jitter
-- (mcp.backoff), and gives up on a component that restarts more than
-- [monitor] flap_max times within flap_window: it is `flapping` until an
-- operator restarts or redeploys it. docs/monitor.md says all of it.
--
-- What the monitor knows lives in mcp.state (it survives a reload of this
-- file) and is rebuilt from Podman after a restart of the agent: the
-- containers it saw, each container's health, each component's backoff.
local mcp = require("mcp.core")
local backoff = require("mcp.backoff")
local definition = require("mcp.definition")
local events = require("mcp.events")
local health = require("mcp.health")
local planner = require("mcp.planner")
local registry = require("mcp.registry")

local monitor = {}

local function state()
  local s = mcp.state
  s.restarts = s.restarts or {}     -- "svc/comp" -> {backoff, flap, pending, stopped}
  s.health = s.health or {}         -- container name -> health state (mcp.health)
  s.probing = s.probing or {}       -- container name -> next probe (monotime)
  s.inflight = s.inflight or {}     -- container name -> when its running probe began
  s.containers = s.containers or {} -- container name -> what Podman last said of it
  s.reported = s.reported or {}     -- drift already reported: key -> true
  s.held = s.held or {}             -- service -> why boot left it down
  s.boot = s.boot or { state = "pending" }
  local m = s.metrics or {}
  s.metrics = m
  m.monitor = m.monitor or { checks = {}, check_seconds = 0, check_count = 0, restarts = {},
    relists = 0, relist_errors = 0 }
  return s
end
monitor.state = state

local function cfg() return mcp.config.monitor end
local function now() return mcp.timer.monotime() end

local function restarts_of(key)
  local s = state()
  local r = s.restarts[key]
  if not r then
    local c = cfg()
    r = {
      backoff = backoff.new({ first = c.restart_first, factor = c.restart_factor,
        cap = c.restart_cap, jitter = c.restart_jitter, reset_after = c.restart_reset }),
      flap = backoff.flap.new({ max = c.flap_max, window = c.flap_window }),
      count = 0,
    }
    s.restarts[key] = r
  end
  return r
end

-- Forgets a service's restart history, flapping mark, health and boot hold:
-- after an operator's start or restart, or a new deploy, it starts afresh.
function monitor.reset(service)
  local s = state()
  local prefix = service .. "/"
  for key in pairs(s.restarts) do
    if key:sub(1, #prefix) == prefix then s.restarts[key] = nil end
  end
  for name, h in pairs(s.health) do
    if h.service == service then
      s.health[name], s.probing[name] = nil, nil
    end
  end
  for key in pairs(s.reported) do
    if key:sub(1, #prefix) == prefix then s.reported[key] = nil end
  end
  s.held[service] = nil
  if s.revisions then s.revisions[service] = nil end
  s.targets_cache = nil
end

function monitor.flapping(service, component)
  local r = state().restarts[service .. "/" .. component]
  return r and r.flap:is_flapping() or false
end

-- Podman answered (true) or did not (false): a change is an event.
local function podman_seen(ok, err)
  local s = state()
  -- Its own field: /v1/status sets mcp.state.podman_ok on every ping.
  if s.podman_seen_ok == ok then return end
  local was = s.podman_seen_ok
  s.podman_seen_ok = ok
  if ok and was == false then
    events.emit({ kind = "podman_reconnected", message = "Podman answers again; re-listing" })
  elseif not ok then
    s.podman_lost_at = mcp.now()
    events.emit({ kind = "podman_unreachable", message = tostring(err or "no answer")
      .. "; containers keep running, the monitor retries" })
  end
end
monitor.podman_seen = podman_seen

-- What the registry says should run: service -> current revision, for
-- services deployed and not stopped by an operator. The registry does not
-- change a revision once it is current, so each is read (and decoded) once
-- in a while rather than on every call.
local REVISION_TTL = 30

local function desired()
  local s = state()
  s.revisions = s.revisions or {}
  local out = {}
  local t = now()
  for _, svc in ipairs(registry.service_list(mcp.state.db) or {}) do
    if svc.active then
      local c = s.revisions[svc.name]
      local rev = c and c.rev
      if not c or not rev or rev.id ~= svc.current_revision or t - c.at > REVISION_TTL then
        rev = registry.revision_current(mcp.state.db, svc.name)
        s.revisions[svc.name] = { rev = rev, at = t }
      end
      if rev and rev.spec and rev.spec.definition then out[svc.name] = rev end
    end
  end
  return out
end
monitor.desired = desired

-- The health loop's targets, rebuilt at most every few seconds: it runs many
-- times a second. monitor.reset (on a deploy, start, restart, undeploy)
-- rebuilds them at once.
local TARGETS_TTL = 5

local function busy(service)
  local held = mcp.state.locks[service]
  if not held then return false end
  for _, t in ipairs(mcp.task.list()) do
    if t.id == held.task then return true end
  end
  return false
end
monitor.busy = busy

local function booting()
  return state().boot.state ~= "done"
end

local function component_of(rev, name)
  for _, c in ipairs(rev.spec.definition.components) do
    if c.name == name then return c end
  end
  return nil
end

local function forget_health(name)
  local s = state()
  if s.health[name] then
    pcall(registry.health_delete, mcp.state.db, name)
  end
  s.health[name], s.probing[name] = nil, nil
end

----------------------------------------------------------------------------
-- Remediation

-- Brings one component back after a backoff delay, unless it flaps.
-- opts.cause: "exited" (died, or found exited), "missing", "dead", "drift",
-- "unhealthy";
-- opts.restart: restart a running container (an unhealthy one);
-- opts.recreate: remove the container first (drift, dead).
-- Returns "scheduled", "pending" (a restart is on its way already),
-- "flapping", "stopped" (on_unhealthy = stop stopped it) or "deferred":
-- Podman does not answer, so nothing can be done and nothing is counted;
-- the re-list after Podman comes back looks again.
function monitor.remediate(service, component, why, opts)
  opts = opts or {}
  local key = service .. "/" .. component
  local r = restarts_of(key)
  if r.pending then return "pending" end
  if r.flap:is_flapping() then return "flapping" end
  if r.stopped then return "stopped" end
  local pok, perr = mcp.podman.ping()
  if not pok then
    podman_seen(false, perr)
    return "deferred"
  end
  if r.pending or r.flap:is_flapping() then return "pending" end  -- while the ping waited
  local t = now()
  if r.flap:record(t) then
    events.emit({ kind = "flapping", service = service, component = component,
      message = string.format("%s; more than %d restarts within %gs: not restarting until an "
        .. "operator restarts or redeploys it (mcp restart %s)", why, cfg().flap_max,
        cfg().flap_window, service),
      data = { restarts = r.flap:count(t), window = cfg().flap_window, cause = opts.cause } })
    return "flapping"
  end
  local delay = r.backoff:next_delay(t, math.random)
  local attempt = r.backoff.attempts
  r.pending = true
  r.last_delay = delay
  events.emit({ kind = "restart_scheduled", service = service, component = component,
    message = string.format("%s; restarting in %.2fs (attempt %d)", why, delay, attempt),
    data = { delay = delay, attempt = attempt, cause = opts.cause } })
  mcp.spawn({ name = "restart:" .. key, daemon = true }, function()
    mcp.sleep(delay)
    local done, err = require("mcp.monitor").carry_out(service, component, r, why, opts)
    r.pending = false
    if done == nil then
      events.emit({ kind = "restart_failed", service = service, component = component,
        message = tostring(err), data = { delay = delay, attempt = attempt,
          cause = opts.cause } })
    elseif done then
      local m = state().metrics.monitor
      local mk = key .. "|" .. (opts.cause or "?")
      m.restarts[mk] = (m.restarts[mk] or 0) + 1
      r.count = r.count + 1
      events.emit({ kind = "restarted", service = service, component = component,
        message = string.format("after %.2fs (%s)", delay, why),
        data = { delay = delay, attempt = attempt, cause = opts.cause } })
    end
  end)
  return "scheduled"
end

-- The restart itself, once the delay is over. Returns true (done), false
-- (nothing to do any more: an operator or a deploy got there first), or
-- nil, err.
function monitor.carry_out(service, component, r, why, opts)
  local s = state()
  local key = service .. "/" .. component
  if s.restarts[key] ~= r then return false end           -- reset meanwhile
  if r.stopped or busy(service) or s.held[service] then return false end
  local rev = desired()[service]
  if not rev then return false end
  local comp = component_of(rev, component)
  if not comp then return false end
  local name = definition.container_name(service, component)
  local info = mcp.podman.inspect(name)
  local ops = require("mcp.ops")
  if opts.restart then
    if info and info.State and info.State.Running then
      local ok, err = mcp.podman.restart(name, { timeout = comp.stop_timeout })
      if not ok then return nil, err end
      return true
    end
  elseif opts.recreate then
    if info then
      local ok, err = mcp.podman.remove(name, { force = true, timeout = comp.stop_timeout })
      if not ok and not tostring(err):find("no such container") then return nil, err end
    end
  elseif info and info.State and info.State.Running then
    return false                                          -- back by other means
  end
  local ok, err = ops.restore_component(service, component)
  if not ok then return nil, err end
  return true
end

-- Decides about one managed container that died or vanished. action:
-- "died", "remove", or a planner cause. code: its exit code, when known.
function monitor.container_gone(service, component, code, action, opts)
  opts = opts or {}
  local s = state()
  if booting() or s.held[service] or busy(service) then return end
  local rev = desired()[service]
  if not rev then return end
  local comp = component_of(rev, component)
  if not comp then return end
  if comp.restart == "no" then return end
  if comp.restart == "on-failure" and (action == "died" or action == "stopped")
      and code == 0 then
    return
  end
  local r = s.restarts[service .. "/" .. component]
  if r and (r.pending or r.stopped or r.flap:is_flapping()) then return end
  -- An event can arrive after the container came back (the monitor's own
  -- restart, an operator's): only a container that is down now is restarted.
  if not opts.recreate then
    local info = mcp.podman.inspect(definition.container_name(service, component))
    if info and info.State and info.State.Running then return end
  end
  local cause = opts.cause or (action == "died" and "exited") or (action == "remove"
    and "missing") or action
  local why = opts.why or string.format("container %s (exit %s)", action,
    tostring(code or "?"))
  monitor.remediate(service, component, why, { cause = cause, recreate = opts.recreate })
end

-- What to do with a container that turned unhealthy: the policy's
-- on_unhealthy hook decides when it has one, else the component's setting.
function monitor.unhealthy(service, comp, name, detail, policy)
  local action = comp.on_unhealthy or "restart"
  if policy and type(policy.on_unhealthy) == "function" then
    local c = mcp.config.lua
    local answer
    local done = false
    -- The hook runs with the limits of policy code, in a task of its own; one
    -- that fails or runs out of them leaves the component's setting in force.
    local id = mcp.spawn({ name = "on_unhealthy:" .. service, timeout = c.task_timeout,
      instructions = c.task_instructions, memory = c.task_memory }, function()
      local ok, res = pcall(policy.on_unhealthy, { service = service,
        component = comp.name, container = name, detail = detail })
      if ok then answer = res
      else mcp.log.error("%s: policy on_unhealthy failed: %s", service, tostring(res)) end
      done = true
    end)
    local function alive()
      for _, t in ipairs(mcp.task.list()) do
        if t.id == id then return true end
      end
      return false
    end
    while not done and alive() do mcp.sleep(0.05) end
    if answer == "restart" or answer == "stop" or answer == "none" then action = answer
    elseif answer ~= nil then
      mcp.log.warn("%s: policy on_unhealthy answered %q (expected restart, stop or none); "
        .. "on_unhealthy = %s applies", service, tostring(answer), action)
    end
  end
  local r = restarts_of(service .. "/" .. comp.name)
  r.backoff:unhealthy()
  if action == "restart" then
    return monitor.remediate(service, comp.name, "unhealthy: " .. detail,
      { cause = "unhealthy", restart = true }) ~= "deferred"
  elseif action == "stop" then
    r.stopped = "unhealthy: " .. detail
    mcp.podman.stop(name, { timeout = comp.stop_timeout })
    events.emit({ kind = "stopped", service = service, component = comp.name,
      message = name .. " stopped because it is unhealthy (on_unhealthy = stop): " .. detail
        .. "; `mcp restart " .. service .. "` starts it again",
      data = { cause = "unhealthy" } })
  end
  return true
end

----------------------------------------------------------------------------
-- What Podman runs

local function remember(c)
  local s = state()
  local l = c.Labels or {}
  local name = (c.Names or {})[1]
  if not name then return end
  local old = s.containers[name]
  local entry = { id = c.Id, name = name, service = l["mcp.service"],
    component = l["mcp.component"], revision = l["mcp.revision"], image = c.Image,
    state = c.State, running = c.State == "running", started = c.StartedAt,
    pid = c.State == "running" and c.Pid or nil }
  -- A container that was replaced, or that started again while the events
  -- were lost, gets a fresh health state.
  if old and (old.id ~= entry.id or (not old.running and entry.running)) then
    forget_health(name)
  elseif not entry.running then
    forget_health(name)
  end
  s.containers[name] = entry
  return entry
end

-- Compares the registry with Podman once; every difference is remediated.
function monitor.relist()
  local s = state()
  local m = s.metrics.monitor
  local list, err = mcp.podman.list({ all = true, filters = { label = { "mcp.managed=true" } } })
  if not list then
    m.relist_errors = m.relist_errors + 1
    podman_seen(false, err)
    return nil, err
  end
  podman_seen(true)
  m.relists = m.relists + 1
  s.last_relist = mcp.now()
  local seen, actual = {}, {}
  for _, c in ipairs(list) do
    local e = remember(c)
    if e then
      seen[e.name] = true
      actual[#actual + 1] = { name = e.name, id = e.id, labels = c.Labels or {},
        image = e.image, state = e.state, exit_code = c.ExitCode }
    end
  end
  for name in pairs(s.containers) do
    if not seen[name] then
      s.containers[name] = nil
      forget_health(name)
    end
  end
  if booting() then return true end
  monitor.plan_and_repair(desired(), actual)
  return true
end

-- Runs the planner over the deployed services and the containers, and
-- acts on the repairs: recreate, start. Reports what it does not repair.
function monitor.plan_and_repair(want, actual)
  local s = state()
  local defs, reg, mine = {}, {}, {}
  for name, rev in pairs(want) do
    local def = {}
    for k, v in pairs(rev.spec.definition) do def[k] = v end
    def.active = true
    def.auto_deploy = false
    local comps = {}
    for _, c in ipairs(def.components) do comps[c.name] = { image = c.image } end
    defs[name] = def
    reg[name] = { revision = rev.id, status = "deployed", spec_hash = planner.spec_hash(def),
      components = comps }
  end
  local exit_codes = {}
  for _, c in ipairs(actual) do
    local svc = c.labels["mcp.service"]
    if svc and want[svc] then
      mine[#mine + 1] = c
      exit_codes[c.name] = c.exit_code
    end
  end
  local still = {}
  for _, a in ipairs(planner.plan(defs, mine, reg)) do
    local service, component = a.service, a.component
    if want[service] and component and not busy(service) and not s.held[service] then
      local key = service .. "/" .. component .. "/" .. a.cause
      if a.op == "recreate" or a.op == "start" then
        if a.cause == "drift-image" or a.cause == "drift-revision" then
          still[key] = true
          if not s.reported[key] then
            s.reported[key] = true
            events.emit({ kind = "drift", service = service, component = component,
              message = a.reason, data = { cause = a.cause, container = a.container } })
          end
        end
        if not monitor.flapping(service, component) then
          local recreate = a.op == "recreate" and a.cause ~= "missing"
          monitor.container_gone(service, component, exit_codes[a.container], a.cause,
            { cause = a.cause == "stopped" and "exited" or (a.cause:match("^drift") and "drift")
              or a.cause, recreate = recreate, why = a.reason })
        end
      elseif a.op == "remove" or a.op == "unpause" or a.op == "orphan" then
        still[key] = true
        if not s.reported[key] then
          s.reported[key] = true
          events.emit({ kind = "drift", service = service, component = component,
            message = a.reason .. " (reported; the monitor leaves it to an operator)",
            data = { cause = a.cause, container = a.container } })
        end
      end
    end
  end
  for key in pairs(s.reported) do
    if not still[key] then s.reported[key] = nil end
  end
end

function monitor.on_event(ev)
  local s = state()
  if ev.type == "reconnected" then
    s.events_up = true
    podman_seen(true)
    return monitor.relist()
  end
  if ev.type == "overflow" then
    mcp.log.warn("podman events: %s lost to a full queue; re-listing", tostring(ev.dropped))
    return monitor.relist()
  end
  local action = ev.Action or ev.status
  local attrs = ev.Actor and ev.Actor.Attributes or {}
  local service, component = attrs["mcp.service"], attrs["mcp.component"]
  local name = attrs.name
  if not service or not component or not name then return end
  local c = s.containers[name]
  if action == "start" then
    forget_health(name)
    s.containers[name] = { id = ev.id or (ev.Actor and ev.Actor.ID), name = name,
      service = service, component = component, revision = attrs["mcp.revision"],
      image = attrs.image, state = "running", running = true, started = ev.time }
    s.probing[name] = nil              -- checked at the next tick
    return
  end
  if action == "died" or action == "remove" then
    -- (No "stop": Podman's stream loses it after its API service restarts,
    -- and "died" follows it anyway.)
    if c then c.running, c.state = false, action == "remove" and "removed" or "exited" end
    forget_health(name)
    if action == "remove" then s.containers[name] = nil end
    -- Events of a container the agent itself is replacing are not drift, nor
    -- are those of an older revision's container that a deploy removed.
    if busy(service) then return end
    local cur = registry.revision_current(mcp.state.db, service)
    local rev = attrs["mcp.revision"]
    if cur and rev and rev ~= cur.id then return end
    local code = tonumber(attrs.containerExitCode)
    monitor.container_gone(service, component, code, action)
  end
end

----------------------------------------------------------------------------
-- Health

-- The containers to check: one target per component of every deployed
-- service.
function monitor.health_targets()
  local s = state()
  local c = s.targets_cache
  if c and now() - c.at < TARGETS_TTL and c.gen == mcp.state.gen then return c.list end
  local out = {}
  local gen = mcp.state.gen
  for service, rev in pairs(desired()) do
    local def = rev.spec.definition
    local ports = rev.spec.ports or {}
    local policy = gen and gen.policies and gen.policies[def.policy]
    local live = gen and gen.definitions and gen.definitions[service]
    for _, comp in ipairs(def.components) do
      -- A lua check's function does not survive JSON: take it from the live definition.
      if comp.health.kind == "lua" and live then
        comp = definition.component(live, comp.name) or comp
      end
      out[#out + 1] = { service = service, component = comp.name, comp = comp, def = def,
        container = definition.container_name(service, comp.name), ports = ports[comp.name],
        policy = policy, revision = rev.id }
    end
  end
  s.targets_cache = { at = now(), list = out, gen = gen }
  return out
end

-- One pass: starts the probes that are due. Returns the seconds until the
-- next one is due; the loop sleeps at least TICK_MIN, so checks are due to
-- within that.
local TICK_MIN = 0.05
monitor.TICK_MIN = TICK_MIN

-- When the check after one that began at `at` is due. Each container has
-- its own phase within the interval (from a hash of its name), so that many
-- containers with the same interval are not all checked in the same tick:
-- after an agent start they would be, in bursts, for ever after.
local phases = setmetatable({}, { __mode = "k" })

local function next_check(name, at, interval)
  local frac = phases[name]
  if not frac then
    frac = (tonumber(planner.fnv1a32(name), 16) % 1000) / 1000
    phases[name] = frac
  end
  local phase = frac * interval
  local nxt = at + interval
  local off = (nxt - phase) % interval
  if off > interval / 2 then return nxt + (interval - off) end
  return nxt - off
end
monitor.next_check = next_check

function monitor.health_tick()
  local s = state()
  local real = now()
  local t = real + TICK_MIN / 2       -- due within half a tick: now
  local next_due = 1
  for _, tg in ipairs(monitor.health_targets()) do
    local name = tg.container
    local due = s.probing[name]
    local c = s.containers[name]
    if c and not c.running then
      -- Not running: nothing to probe until it starts again.
    elseif (not due or t >= due) and not busy(tg.service)
        -- one probe at a time; a probe task past its deadline was ended
        -- without clearing its mark
        and not (s.inflight[name] and real - s.inflight[name] < tg.comp.health.timeout + 15) then
      s.probing[name] = next_check(name, real, tg.comp.health.interval)
      s.inflight[name] = real
      next_due = math.min(next_due, tg.comp.health.interval)
      -- A lua check is operator code: the [lua] budget and memory cap hold.
      mcp.spawn({ name = "health:" .. name, timeout = tg.comp.health.timeout + 10,
        instructions = mcp.config.lua.task_instructions,
        memory = mcp.config.lua.task_memory }, function()
        local ok, err = pcall(require("mcp.monitor").check, tg)
        s.inflight[name] = nil
        if not ok then mcp.log.error("health %s: %s", name, tostring(err)) end
      end)
    elseif due then
      next_due = math.min(next_due, due - real)
    end
  end
  return next_due
end

-- Checks one container and records what changed.
function monitor.check(tg)
  local s = state()
  local name = tg.container
  local c = s.containers[name]
  if not c then
    -- Not seen yet (a renamed container, say): ask Podman once.
    local info = mcp.podman.inspect(name)
    if not info then return end
    c = { id = info.Id, name = name, service = tg.service, component = tg.component,
      state = info.State and info.State.Status, running = info.State and info.State.Running
        or false, pid = info.State and info.State.Pid }
    s.containers[name] = c
    if not c.running then return end
  end
  if tg.comp.health.kind == "tcp" and not c.pid then
    -- A tcp check looks into the container's network namespace through its
    -- main process: learnt once per start (a start event does not say it).
    local info = mcp.podman.inspect(name)
    c.pid = info and info.State and info.State.Running and info.State.Pid or nil
  end
  tg.pid = c.pid
  local st = s.health[name]
  if not st or st.id ~= c.id then
    st = health.new_state(now())
    st.service, st.component, st.container, st.id = tg.service, tg.component, name, c.id
    s.health[name] = st
  end
  local ok, detail, took = health.probe(tg)
  local m = s.metrics.monitor
  local res = ok == nil and "error" or (ok and "pass" or "fail")
  local mk = tg.comp.health.kind .. "|" .. res
  m.checks[mk] = (m.checks[mk] or 0) + 1
  m.check_seconds = m.check_seconds + took / 1000
  m.check_count = m.check_count + 1
  if s.health[name] ~= st then return end          -- the container restarted meanwhile
  st.last, st.detail, st.took_ms, st.checked = ok, detail, took, mcp.now()
  local before = st.state
  local now_state, changed = health.step(st, tg.comp.health, ok, now())
  if ok then
    restarts_of(tg.service .. "/" .. tg.component).backoff:healthy_since(now())
  end
  if changed then
    pcall(registry.health_put, mcp.state.db, name, { service = tg.service,
      component = tg.component, state = now_state, result = detail, failures = st.misses,
      successes = st.passes })
    events.emit({ kind = now_state, service = tg.service, component = tg.component,
      message = string.format("%s: %s", name, detail),
      data = { container = name, previous = before, check = tg.comp.health.kind,
        detail = detail, misses = st.misses, passes = st.passes } })
    if now_state == "unhealthy" then st.acted = false end
  end
  -- Acted on once per unhealthy spell; again when that could not be done
  -- (Podman did not answer).
  if st.state == "unhealthy" and not st.acted then
    st.acted = true
    -- In a task of its own: a policy hook may take longer than a probe may.
    mcp.spawn({ name = "unhealthy:" .. name, daemon = true }, function()
      local ok, acted = pcall(require("mcp.monitor").unhealthy, tg.service, tg.comp, name,
        detail, tg.policy)
      if not ok then mcp.log.error("unhealthy %s: %s", name, tostring(acted)) end
      if ok and not acted and s.health[name] == st then st.acted = false end
    end)
  end
end

----------------------------------------------------------------------------
-- The daemon loops. Each turn requires the module afresh: after a reload the
-- next turn runs the new code.

function monitor.start()
  -- The agent runs boot.run next: until it is done (state().boot.state is
  -- "done"), the monitor watches and reports but leaves repairs to boot,
  -- which recovers in stage and dependency order.
  state()
  mcp.spawn({ name = "monitor.events", daemon = true }, function()
    local sub
    while true do
      if not sub then
        local err
        sub, err = mcp.podman.events.subscribe({ type = { "container" },
          label = { "mcp.managed=true" } })
        if not sub then
          mcp.log.warn("podman events: %s", tostring(err))
          mcp.sleep(1)
        end
      end
      if sub then
        local ev, err = sub:next(5)
        if ev then
          local ok, herr = pcall(require("mcp.monitor").on_event, ev)
          if not ok then mcp.log.error("monitor event: %s", tostring(herr)) end
        elseif err ~= "timeout" then
          sub = nil                       -- closed: subscribe again
          mcp.sleep(1)
        end
      end
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
      local ok, wait = pcall(require("mcp.monitor").health_tick)
      if not ok then
        mcp.log.error("health: %s", tostring(wait))
        wait = 1
      end
      mcp.sleep(math.max(monitor.TICK_MIN, math.min(1, wait or 1)))
    end
  end)
end

-- A summary for /v1/status and the console.
function monitor.status()
  local s = state()
  local flapping, pending, stopped = {}, {}, {}
  local keys = {}
  for key in pairs(s.restarts) do keys[#keys + 1] = key end
  table.sort(keys)
  for _, key in ipairs(keys) do
    local r = s.restarts[key]
    if r.flap:is_flapping() then flapping[#flapping + 1] = key end
    if r.pending then pending[#pending + 1] = key end
    if r.stopped then stopped[#stopped + 1] = key end
  end
  local held = {}
  for svc, why in pairs(s.held) do held[#held + 1] = { service = svc, reason = why } end
  table.sort(held, function(a, b) return a.service < b.service end)
  local counts = { starting = 0, healthy = 0, unhealthy = 0 }
  for _, h in pairs(s.health) do counts[h.state] = (counts[h.state] or 0) + 1 end
  return {
    podman_reachable = s.podman_seen_ok,
    last_relist = s.last_relist,
    health = counts,
    flapping = mcp.json.array(flapping),
    restarts_pending = mcp.json.array(pending),
    stopped_unhealthy = mcp.json.array(stopped),
    boot = { state = s.boot.state, stage = s.boot.stage, failed_stage = s.boot.failed_stage,
      held = mcp.json.array(held) },
  }
end

return monitor
