-- mcp.deploy: carrying out a deploy through the service's policy.
--
-- The policy decides the order of things (policies/recreate.lua,
-- policies/rolling.lua); this module gives it the verbs, as methods of a
-- context `ctx`: start_new, wait_healthy, switch_routes, stop, remove, fail.
-- The mechanics behind each verb (ports, names, images, the registry) stay
-- here, so a policy reads like what it does.
--
-- Ports: a route keeps its host port across redeploys when the old revision
-- is gone by the time the new one starts (recreate); when the old one still
-- holds it (rolling), the route gets a second port, and later rolling
-- deploys alternate between the two (registry.port_assign).
local mcp = require("mcp.core")
local definition = require("mcp.definition")
local events = require("mcp.events")
local health = require("mcp.health")
local planner = require("mcp.planner")
local registry = require("mcp.registry")
local routes = require("mcp.routes")

local deploy = {}

local function db() return mcp.state.db end

-- Managed containers of a service as Podman reports them, reduced.
function deploy.containers(service)
  local list, err = mcp.podman.list({ all = true,
    filters = { label = { "mcp.managed=true", "mcp.service=" .. service } } })
  if not list then return nil, err end
  local out = {}
  for _, c in ipairs(list) do
    local labels = c.Labels or {}
    out[#out + 1] = {
      id = c.Id, name = (c.Names or {})[1], image = c.Image,
      service = labels["mcp.service"], component = labels["mcp.component"],
      revision = labels["mcp.revision"], state = c.State,
      running = c.State == "running", started_at = c.StartedAt, labels = labels,
    }
  end
  table.sort(out, function(a, b) return (a.name or "") < (b.name or "") end)
  return out
end

local function is_free(port)
  return mcp.net.port_free(port) == true
end

-- Whether a port a route held before can be published again. mcp.net's
-- bind test counts a port in TIME_WAIT as taken, and a port that served
-- requests a moment ago is in TIME_WAIT (Podman's port forwarder accepted
-- the connections). Podman binds with SO_REUSEADDR, so such a port is only
-- taken when something still listens on it.
local function reusable(port)
  if is_free(port) then return true end
  return not mcp.net.tcp_check("127.0.0.1", port, { timeout = 1 })
end

-- Assigns (or finds again) the host ports of def's routes: of every
-- component, or only of `only` (a component name) into `ports`. Ports in
-- `bad` are not given out again.
local function assign_ports(def, ports, only, bad)
  ports = ports or {}
  bad = bad or {}
  -- Decided before port_assign, whose check runs inside a transaction and
  -- must not wait.
  local again = {}
  for _, p in ipairs(registry.port_list(db(), def.name) or {}) do
    again[p.port] = not bad[p.port] and reusable(p.port)
  end
  for _, routes_of in pairs(ports) do
    for _, port in pairs(routes_of) do again[port] = false end
  end
  local function free(port)
    if bad[port] then return false end
    if again[port] ~= nil then return again[port] end
    return is_free(port)
  end
  for _, comp in ipairs(def.components) do
    if not only or only == comp.name then
      ports[comp.name] = {}
      for _, r in ipairs(comp.routes) do
        local port, err = registry.port_assign(db(), def.name, comp.name, r.key, free)
        if not port then return nil, err end
        again[port] = false               -- one port, one route
        ports[comp.name][r.key] = port
      end
    end
  end
  return ports
end

deploy.assign_ports = assign_ports

local function port_list(ports)
  local out = {}
  for _, routes_of in pairs(ports or {}) do
    for _, port in pairs(routes_of) do out[#out + 1] = port end
  end
  return out
end

-- Makes sure the image is present, pulling it when missing.
local function ensure_image(ref, progress)
  local have = mcp.podman.images.exists(ref)
  if have then return true end
  progress({ step = "pull", image = ref })
  local ok, err = mcp.podman.images.pull(ref, { on_progress = function(line)
    progress({ step = "pull", image = ref, progress = line })
  end })
  if not ok then return nil, err end
  return true
end

-- Creates the host directories of a component's bind mounts that lie in
-- /srv/<service>: the service's data directory belongs to the agent's user,
-- and Podman refuses a bind mount whose source is missing.
function deploy.ensure_dirs(def, comp)
  local root = "/srv/" .. def.name
  for _, v in ipairs(comp.volumes or {}) do
    if v.source == root or v.source:sub(1, #root + 1) == root .. "/" then
      local ok, err = mcp.fs.mkdir(v.source, 488)   -- 0750
      if not ok then return nil, err end
    end
  end
  return true
end

local Ctx = {}
Ctx.__index = Ctx

function Ctx:log(fmt, ...)
  local msg = select("#", ...) > 0 and string.format(fmt, ...) or fmt
  mcp.log.info("deploy %s %s: %s", self.service, self.revision, msg)
  self.progress({ step = "log", message = msg })
end

-- Creates and starts the new revision's containers. Beside a running old
-- revision they get ports of their own and a temporary name; returns the new
-- set, or nil and why (what it created is removed again).
function Ctx:start_new()
  local def = self.def
  local beside = false
  for _, c in ipairs(self.old.containers) do
    if c.exists then beside = true end
  end
  local ports, perr = assign_ports(def)
  if not ports then return nil, perr end
  local set = { revision = self.revision, ports = ports, containers = {} }
  self.new = set
  registry.revision_set_spec(db(), def.name, self.revision, { definition = def,
    ports = ports })
  local bad = {}
  for _, comp in ipairs(def.components) do
    local ok, err = ensure_image(comp.image, self.progress)
    if not ok then
      self:remove(set)
      return nil, string.format("image %s: %s", comp.image, err)
    end
    local dok, derr = deploy.ensure_dirs(def, comp)
    if not dok then
      self:remove(set)
      return nil, derr
    end
    local suffix = beside and self.revision or nil
    -- A port found free can be taken by another program before Podman
    -- binds it: then the component gets other ports, a few times over.
    for attempt = 1, 3 do
      local spec = definition.container_spec(def, comp, { ports = ports,
        revision = self.revision, suffix = suffix })
      -- The agent supervises restarts itself (backoff, flap detection): a
      -- Podman restart policy would race it.
      spec.restart_policy = "no"
      self.progress({ step = "create", container = spec.name })
      local created, cerr = mcp.podman.create(spec)
      if not created then
        self:remove(set)
        return nil, cerr
      end
      local c = { name = spec.name, id = created.Id or created.id, component = comp.name,
        comp = comp, exists = true, ports = ports[comp.name] }
      set.containers[#set.containers + 1] = c
      self.progress({ step = "start", container = spec.name })
      local started, serr = mcp.podman.start(spec.name)
      if started then
        c.running = true
        break
      end
      if attempt == 3 or not tostring(serr):find("address already in use", 1, true) then
        self:remove(set)
        return nil, serr
      end
      self:log("%s: %s; trying other ports", spec.name, tostring(serr))
      mcp.podman.remove(spec.name, { force = true })
      table.remove(set.containers)
      for _, port in pairs(ports[comp.name]) do bad[port] = true end
      local _, aerr = assign_ports(def, ports, comp.name, bad)
      if aerr then
        self:remove(set)
        return nil, aerr
      end
      registry.revision_set_spec(db(), def.name, self.revision, { definition = def,
        ports = ports })
    end
  end
  events.emit({ kind = "started", service = def.name,
    message = string.format("revision %s started", self.revision) })
  return set
end

local function targets_of(ctx, set)
  local out = {}
  for _, c in ipairs(set.containers) do
    out[#out + 1] = { service = ctx.service, component = c.component, container = c.name,
      def = ctx.def, comp = c.comp, ports = c.ports, policy = ctx.policy }
  end
  return out
end

-- Waits until every container of set passes its health check.
function Ctx:wait_healthy(set, opts)
  opts = opts or {}
  local timeout = mcp.timer.parse(opts.timeout or "60s")
  self.progress({ step = "wait_healthy", timeout = timeout })
  local ok, err = health.wait(targets_of(self, set), timeout)
  if ok then
    events.emit({ kind = "healthy", service = self.service,
      message = "revision " .. set.revision .. " is healthy" })
    return true
  end
  return false, err
end

-- Tells the route provider that the routes now go to set's ports. Returns
-- true, or nil and why: a policy that is about to stop the old revision
-- must not do so when the proxy still sends traffic there.
function Ctx:switch_routes(set)
  self.progress({ step = "switch_routes" })
  local def = set == self.old and self.old.def or self.def
  local ok, err = routes.switch(def, set.ports, set == self.old and self.def or self.old.def)
  if not ok then
    events.emit({ kind = "routes_failed", service = self.service,
      message = string.format("switching routes to revision %s: %s",
        tostring(set.revision), tostring(err)) })
    return nil, err
  end
  self.switched = set ~= self.old
  return true
end

-- Stops a set's containers, after an optional drain period (skipped when
-- nothing of the set runs: a first deploy has nothing to drain).
function Ctx:stop(set, opts)
  opts = opts or {}
  local running = false
  for _, c in ipairs(set.containers) do
    if c.exists and c.running ~= false then running = true end
  end
  if opts.drain and running then mcp.sleep(mcp.timer.parse(opts.drain)) end
  for _, c in ipairs(set.containers) do
    if c.exists and c.running ~= false then
      self.progress({ step = "stop", container = c.name })
      local ok, err = mcp.podman.stop(c.name, { timeout = c.comp and c.comp.stop_timeout })
      if not ok and not tostring(err):find("no such container") then return nil, err end
      c.running = false
    end
  end
  return true
end

-- Removes a set's containers.
function Ctx:remove(set)
  for _, c in ipairs(set.containers) do
    if c.exists then
      self.progress({ step = "remove", container = c.name })
      local ok, err = mcp.podman.remove(c.name, { force = true })
      if not ok and not tostring(err):find("no such container") then return nil, err end
      c.exists, c.running = false, false
    end
  end
  set.removed = true
  return true
end

-- Ends the deploy as failed; `return ctx:fail(msg)` from a policy.
function Ctx:fail(msg)
  self.failed = msg or "the policy failed the deploy"
  return false, self.failed
end

-- The old revision, as it runs now: its containers and its ports.
local function old_set(service, containers, current)
  local set = { containers = {}, revision = current and current.id,
    ports = current and current.spec and current.spec.ports or {},
    def = current and current.spec and current.spec.definition }
  for _, c in ipairs(containers) do
    local comp = current and current.spec and current.spec.definition
      and definition.component(current.spec.definition, c.component)
    set.containers[#set.containers + 1] = { name = c.name, id = c.id,
      component = c.component, comp = comp, exists = true, running = c.running,
      revision = c.revision }
  end
  return set
end

-- After a side-by-side deploy, the new containers take the canonical names
-- once the old ones are gone, so `podman logs mcq-mcq` always finds the
-- running revision.
local function canonical_names(ctx)
  for _, c in ipairs(ctx.new and ctx.new.containers or {}) do
    local want = definition.container_name(ctx.service, c.component)
    if c.exists and c.name ~= want then
      local taken = mcp.podman.inspect(want)
      if not taken then
        local ok, err = mcp.podman.rename(c.name, want)
        if ok then c.name = want
        else mcp.log.warn("rename %s to %s: %s", c.name, want, tostring(err)) end
      end
    end
  end
end

local function lock(service, op)
  local locks = mcp.state.locks
  local held = locks[service]
  if held then
    local alive = false
    for _, t in ipairs(mcp.task.list()) do
      if t.id == held.task then alive = true end
    end
    if alive then
      return nil, string.format("%s of %s is already in progress (since %s)", held.op,
        service, os.date("!%H:%M:%SZ", held.since))
    end
  end
  locks[service] = { op = op, task = mcp.task.current(), since = os.time() }
  return true
end

-- What ps serves may now be behind: an operation just changed containers,
-- and Podman's events about it may not have arrived yet.
function deploy.changed()
  local cache = mcp.state.ps_cache
  if cache then cache.stale = true end
end

local function unlock(service)
  mcp.state.locks[service] = nil
  deploy.changed()
end
deploy.lock, deploy.unlock = lock, unlock

-- True while a live task holds the service's lock.
function deploy.busy(service)
  local held = mcp.state.locks[service]
  if not held then return false end
  for _, t in ipairs(mcp.task.list()) do
    if t.id == held.task then return true end
  end
  return false
end

-- Deploys def through its policy. opts.progress(event) sees each step.
-- Returns {service, revision, status, containers} or nil, err, code.
function deploy.run(def, opts)
  opts = opts or {}
  local progress = opts.progress or function() end
  local gen = mcp.state.gen
  local policy = gen.policies[def.policy]
  if not policy or type(policy.deploy) ~= "function" then
    return nil, string.format("%s: policy %q has no deploy hook", def.name, def.policy),
      "invalid"
  end
  local ok, lerr = lock(def.name, "deploy")
  if not ok then return nil, lerr, "conflict" end

  local containers, perr = deploy.containers(def.name)
  if not containers then
    unlock(def.name)
    return nil, perr, "unavailable"
  end
  local current = registry.revision_current(db(), def.name)
  -- The service's active flag changes only when the deploy succeeds: a
  -- stopped service whose deploy fails (or whose agent is killed mid-way)
  -- must stay stopped, not be brought back by the monitor.
  local known = registry.service_get(db(), def.name)
  local record = def
  if known and known.active ~= (def.active ~= false) then
    record = { active = known.active }
    for k, v in pairs(def) do if k ~= "active" then record[k] = v end end
  end
  registry.service_put(db(), record, opts.source or "api", planner.spec_hash(def))
  local rev = registry.revision_new(db(), def.name, { definition = def })
  local ctx = setmetatable({
    service = def.name, def = def, revision = rev, policy = policy,
    old = old_set(def.name, containers, current), progress = progress,
  }, Ctx)
  progress({ step = "deploy", service = def.name, revision = rev, policy = def.policy })
  events.emit({ kind = "deploying", service = def.name,
    message = string.format("revision %s with policy %s", rev, def.policy) })

  local pok, res, rerr = pcall(policy.deploy, ctx)
  local failed = ctx.failed
  if not pok then failed = tostring(res)
  elseif res == false or (res == nil and rerr) then failed = failed or tostring(rerr) end

  if failed then
    -- Whatever the policy left of the new revision goes; the old one stays,
    -- and routes the policy switched to the new one point back at it.
    if ctx.switched then ctx:switch_routes(ctx.old) end
    if ctx.new and not ctx.new.removed then ctx:remove(ctx.new) end
    registry.revision_set_status(db(), def.name, rev, "failed", failed)
    events.emit({ kind = "deploy_failed", service = def.name,
      message = string.format("revision %s: %s", rev, failed) })
    unlock(def.name)
    return nil, failed, "failed", rev
  end
  if not ctx.switched and ctx.new then
    local rok, rerr = routes.switch(def, ctx.new.ports, ctx.old.def)
    if not rok then
      events.emit({ kind = "routes_failed", service = def.name,
        message = string.format("switching routes to revision %s: %s", rev, tostring(rerr)) })
    end
  end
  canonical_names(ctx)
  registry.revision_set_status(db(), def.name, rev, "deployed")
  registry.service_set_active(db(), def.name, true)
  -- Ports the old revision held go back to the pool once it is gone; they
  -- stay recorded while its containers remain (a policy may keep them).
  local old_left = false
  for _, c in ipairs(ctx.old.containers) do
    if c.exists then old_left = true end
  end
  if ctx.new and not old_left then
    registry.port_release(db(), def.name, port_list(ctx.new.ports))
  end
  require("mcp.monitor").reset(def.name)
  events.emit({ kind = "deployed", service = def.name,
    message = string.format("revision %s deployed", rev) })
  unlock(def.name)
  local result = { service = def.name, revision = rev, status = "deployed", containers = {} }
  for _, c in ipairs(ctx.new and ctx.new.containers or {}) do
    result.containers[#result.containers + 1] = { name = c.name, component = c.component,
      ports = c.ports }
  end
  progress({ step = "done", service = def.name, revision = rev })
  return result
end

return deploy
