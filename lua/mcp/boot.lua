-- mcp.boot: bringing services back when the agent starts.
--
-- After a reboot (rootless containers do not come back by themselves) or
-- after Podman lost its state, every service the registry says should run is
-- brought back: the recover operation, without an operator. Order: the
-- [[boot.sequence]] stages of the agent config first, each waiting for its
-- services to be healthy up to its timeout, then everything else in
-- depends_on order. A blocking stage (the default) that fails stops the
-- later stages and the rest: their services are held down, reported in
-- /v1/status and by a boot_stage_failed event, until an operator starts,
-- restarts or deploys them; a non-blocking one is logged and passed.
-- Starting twice changes nothing the second time: a service whose
-- containers run is left alone.
--
-- Before that, it finishes what a previous run of the agent left half done
-- when it died (a deploy, a stop): see boot.finish_interrupted.
--
-- Until boot is done, the monitor watches but leaves repairs to it, so the
-- order holds; when it is done, the monitor re-lists at once.
local mcp = require("mcp.core")
local events = require("mcp.events")
local ops = require("mcp.ops")
local registry = require("mcp.registry")

local boot = {}

local function monitor() return require("mcp.monitor") end

-- Services (of names) whose components are not all running, or nil, err.
function boot.needing(names)
  local need = {}
  local list, err = mcp.podman.list({ all = true, filters = { label = { "mcp.managed=true" } } })
  if not list then return nil, err end
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

local function sorted_keys(set)
  local out = {}
  for k in pairs(set) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- Recovers the services of `only` (a set) and waits up to timeout for them
-- to be healthy. Returns true, or false and why.
local function bring_up(only, timeout)
  local r, err = ops.recover({ only = only })
  if not r then return false, tostring(err) end
  for _, s in ipairs(r.services or {}) do
    if not s.ok then return false, string.format("%s: %s", s.service, tostring(s.error)) end
  end
  if timeout then return boot.wait_healthy(only, timeout) end
  return true
end

local function busy(name) return monitor().busy(name) end

-- What a previous run of the agent left half done when it died, finished
-- the way the registry says (the registry is written before and after each
-- step of an operation, so it knows what was meant):
--   * a revision still "deploying" that began before this agent started was
--     interrupted: it becomes "failed" (a deploy_interrupted event), and the
--     host ports it took that the current revision does not use go back;
--   * a managed container of a service the registry records, but of another
--     revision than its current one (or of a service with none), is left
--     over from such a deploy: removed;
--   * a container of the current revision under a temporary name (a rolling
--     deploy renames at the end) gets the canonical name when that is free,
--     and is removed when the canonical one exists;
--   * a running container of a service an operator stopped (mcp stop died
--     halfway) is stopped.
-- Containers of services the registry does not know are left alone: they
-- may be another agent's, or waiting for `mcp adopt`. A service whose lock
-- is held (an operation that began since this agent started) is skipped.
-- Returns a list of what it did.
function boot.finish_interrupted()
  local db = mcp.state.db
  local definition = require("mcp.definition")
  local started = mcp.state.started or mcp.now()
  local done = {}
  local function did(kind, service, message, data)
    done[#done + 1] = { kind = kind, service = service, message = message }
    events.emit({ kind = kind, service = service, message = message, data = data })
  end
  local services = {}
  for _, svc in ipairs(registry.service_list(db) or {}) do services[svc.name] = svc end
  for name, svc in pairs(services) do
    for _, rev in ipairs(registry.revision_list(db, name, 50) or {}) do
      if rev.status == "deploying" and (rev.created or 0) < started and not busy(name) then
        registry.revision_set_status(db, name, rev.id, "failed",
          "interrupted: the agent stopped during this deploy")
        local cur = svc.current_revision and registry.revision_current(db, name)
        local keep = {}
        for _, routes_of in pairs(cur and cur.spec and cur.spec.ports or {}) do
          for _, port in pairs(routes_of) do keep[#keep + 1] = port end
        end
        registry.port_release(db, name, keep)
        did("deploy_interrupted", name, string.format("revision %s was deploying when the "
          .. "agent stopped: marked failed%s", rev.id, cur and ("; " .. cur.id
          .. " stays current") or ""), { revision = rev.id })
      end
    end
  end
  local list, err = mcp.podman.list({ all = true, filters = { label = { "mcp.managed=true" } } })
  if not list then return nil, err end
  local canonical = {}
  for _, c in ipairs(list) do canonical[(c.Names or {})[1] or ""] = c end
  local renames, freed = {}, {}
  for _, c in ipairs(list) do
    local l = c.Labels or {}
    local name, service = (c.Names or {})[1], l["mcp.service"]
    local svc = service and services[service]
    if svc and name and not busy(service) then
      local want = l["mcp.component"] and definition.container_name(service,
        l["mcp.component"])
      if not svc.current_revision or l["mcp.revision"] ~= svc.current_revision then
        local ok, rerr = mcp.podman.remove(name, { force = true })
        if ok then
          canonical[name] = nil
          for _, p in ipairs(type(c.Ports) == "table" and c.Ports or {}) do
            freed[#freed + 1] = p.host_port
          end
          did("cleanup", service, string.format("removed %s, left over from revision %s "
            .. "(the current one is %s)", name, tostring(l["mcp.revision"]),
            tostring(svc.current_revision)), { container = name })
        else
          mcp.log.warn("boot: cannot remove %s: %s", name, tostring(rerr))
        end
      elseif want and name ~= want then
        renames[#renames + 1] = { name = name, want = want, service = service }
      elseif not svc.active and c.State == "running" then
        mcp.podman.stop(name)
        did("cleanup", service, string.format("stopped %s: %s was stopped by an operator",
          name, service), { container = name })
      end
    end
  end
  -- Podman's port forwarder lets go of a removed container's host ports a
  -- moment later; the recovery that follows may need them (the current
  -- revision's own ports, which the interrupted deploy had reused).
  local deadline = mcp.timer.monotime() + 5
  for _, port in ipairs(freed) do
    while mcp.net.port_free(port) ~= true and mcp.timer.monotime() < deadline do
      mcp.sleep(0.1)
    end
  end
  for _, r in ipairs(renames) do
    if not busy(r.service) then
      if canonical[r.want] then
        mcp.podman.remove(r.name, { force = true })
        did("cleanup", r.service, string.format("removed %s: %s exists", r.name, r.want),
          { container = r.name })
      else
        local ok = mcp.podman.rename(r.name, r.want)
        if ok then
          canonical[r.want] = true
          did("cleanup", r.service, string.format("renamed %s to %s", r.name, r.want),
            { container = r.want })
        end
      end
    end
  end
  return done
end

local function hold(services, why)
  local held = monitor().state().held
  for _, name in ipairs(services) do held[name] = why end
end

local function run(st)
  if not wait_podman(120) then
    mcp.log.error("boot: Podman did not answer within 120 s; the monitor keeps trying")
    return
  end
  local fixed, ferr = boot.finish_interrupted()
  if not fixed then mcp.log.error("boot: %s", tostring(ferr)) end
  local names = {}
  for _, svc in ipairs(registry.service_list(mcp.state.db) or {}) do
    if svc.active then names[#names + 1] = svc.name end
  end
  local need, err = boot.needing(names)
  if not need then
    mcp.log.error("boot: cannot list containers: %s; the monitor keeps trying", tostring(err))
    return
  end
  if next(need) == nil then
    mcp.log.info("boot: every deployed service runs")
    return
  end
  events.emit({ kind = "boot", message = "bringing back " .. table.concat(sorted_keys(need),
    ", "), data = { services = sorted_keys(need) } })
  local done = {}
  local stages = mcp.config.boot and mcp.config.boot.sequence or {}
  for i, stage in ipairs(stages) do
    local only = {}
    for _, s in ipairs(stage.services) do
      if need[s] and not done[s] then only[s] = true end
      done[s] = true
    end
    if next(only) then
      st.stage = stage.name
      mcp.log.info("boot: stage %d (%s): %s", i, stage.name,
        table.concat(sorted_keys(only), ", "))
      local ok, why = bring_up(only, stage.timeout)
      if ok then
        events.emit({ kind = "boot_stage", message = string.format("stage %s is up: %s",
          stage.name, table.concat(sorted_keys(only), ", ")),
          data = { stage = stage.name, services = sorted_keys(only) } })
      else
        local later = {}
        for name in pairs(need) do
          if not done[name] then later[#later + 1] = name end
        end
        table.sort(later)
        events.emit({ kind = "boot_stage_failed", message = string.format(
          "stage %s did not come up within %gs (%s)%s", stage.name, stage.timeout,
          tostring(why), stage.blocking and (#later > 0 and "; held down until an operator "
            .. "starts them: " .. table.concat(later, ", ") or "") or "; not blocking: going on"),
          data = { stage = stage.name, blocking = stage.blocking, reason = tostring(why),
            held = mcp.json.array(stage.blocking and later or {}) } })
        if stage.blocking then
          st.failed_stage = stage.name
          hold(later, string.format("boot stage %s failed: %s", stage.name, tostring(why)))
          return
        end
      end
    end
  end
  local rest = {}
  for name in pairs(need) do
    if not done[name] then rest[name] = true end
  end
  if next(rest) then
    st.stage = "rest"
    bring_up(rest, nil)
  end
end

-- Runs once, in a task of its own, when the agent starts. Whatever happens,
-- it ends with boot.state "done", so the monitor takes over.
function boot.run()
  local st = monitor().state().boot
  st.state, st.started = "running", mcp.now()
  local ok, err = pcall(run, st)
  if not ok then mcp.log.error("boot: %s", tostring(err)) end
  st.state, st.finished = "done", mcp.now()
  local rok, rerr = pcall(monitor().relist)
  if not rok then mcp.log.error("relist after boot: %s", tostring(rerr)) end
end

-- Waits until every component of the given services is healthy (the
-- monitor's health loop probes them). Returns true, or false and why.
function boot.wait_healthy(only, timeout)
  local deadline = mcp.timer.monotime() + timeout
  local definition = require("mcp.definition")
  local why
  while true do
    local all = true
    for name in pairs(only) do
      local rev = registry.revision_current(mcp.state.db, name)
      for _, comp in ipairs(rev and rev.spec.definition.components or {}) do
        local cname = definition.container_name(name, comp.name)
        local h = monitor().state().health[cname]
        if not h or h.state ~= "healthy" then
          all = false
          why = string.format("%s is %s%s", cname, h and h.state or "not checked yet",
            h and h.detail and (": " .. h.detail) or "")
        end
      end
    end
    if all then return true end
    if mcp.timer.monotime() >= deadline then return false, why end
    mcp.sleep(0.25)
  end
end

return boot
