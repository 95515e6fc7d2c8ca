-- mcp.ops: the operations an operator asks for, besides deploy itself:
-- stop, start, restart, undeploy, adopt, purge, recover; and the views
-- (ps, show) the API, the CLI and the console print.
--
-- Each returns a result table, or nil, a message and a code the API maps to
-- a status ("not_found" 404, "conflict" 409, "unavailable" 503, "failed" 500).
local mcp = require("mcp.core")
local definition = require("mcp.definition")
local deploy = require("mcp.deploy")
local events = require("mcp.events")
local registry = require("mcp.registry")
local routes = require("mcp.routes")

local ops = {}

local function db() return mcp.state.db end

local function not_found(name)
  return nil, string.format("service %q is not deployed on this node", name), "not_found"
end

-- Runs fn with the service locked against other operations.
local function locked(name, op, fn)
  local ok, err = deploy.lock(name, op)
  if not ok then return nil, err, "conflict" end
  local res = { pcall(fn) }
  deploy.unlock(name)
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2)
end

local function each_container(name, fn)
  local cs, err = deploy.containers(name)
  if not cs then return nil, err, "unavailable" end
  local done = {}
  for _, c in ipairs(cs) do
    local ok, cerr = fn(c)
    if not ok and cerr and not tostring(cerr):find("no such container") then
      return nil, string.format("%s: %s", c.name, cerr), "failed"
    end
    done[#done + 1] = c.name
  end
  return done
end

function ops.stop(name)
  if not registry.service_get(db(), name) then return not_found(name) end
  return locked(name, "stop", function()
    registry.service_set_active(db(), name, false)
    local done, err, code = each_container(name, function(c)
      if not c.running then return true end
      return mcp.podman.stop(c.name)
    end)
    if not done then return nil, err, code end
    events.emit({ kind = "stopped", service = name, message = "stopped by an operator" })
    return { service = name, state = "stopped", containers = done }
  end)
end

-- Recreates one component from the registry's current revision: the
-- container as the revision describes it, on its recorded ports.
function ops.restore_component(name, component)
  local rev = registry.revision_current(db(), name)
  if not rev or not rev.spec or not rev.spec.definition then
    return nil, "no deployed revision of " .. name .. " in the registry"
  end
  local def = rev.spec.definition
  local comp = definition.component(def, component)
  if not comp then return nil, "no component " .. component .. " in " .. name end
  local cname = definition.container_name(name, component)
  local info = mcp.podman.inspect(cname)
  if info then
    if info.State and info.State.Running then return true end
    local image_ok = not info.ImageName or info.ImageName == comp.image
    if image_ok then return mcp.podman.start(cname) end
    mcp.podman.remove(cname, { force = true })
  end
  if not mcp.podman.images.exists(comp.image) then
    local ok, err = mcp.podman.images.pull(comp.image)
    if not ok then return nil, err end
  end
  local dok, derr = deploy.ensure_dirs(def, comp)
  if not dok then return nil, derr end
  local spec = definition.container_spec(def, comp, { ports = rev.spec.ports or {},
    revision = rev.id })
  spec.restart_policy = "no"      -- the agent supervises restarts itself
  local ok, err = mcp.podman.create(spec)
  if not ok then return nil, err end
  return mcp.podman.start(cname)
end

function ops.start(name)
  if not registry.service_get(db(), name) then return not_found(name) end
  return locked(name, "start", function()
    registry.service_set_active(db(), name, true)
    require("mcp.monitor").reset(name)
    local rev = registry.revision_current(db(), name)
    local started = {}
    for _, comp in ipairs(rev and rev.spec.definition.components or {}) do
      local ok, err = ops.restore_component(name, comp.name)
      if not ok then return nil, string.format("%s/%s: %s", name, comp.name, err), "failed" end
      started[#started + 1] = definition.container_name(name, comp.name)
    end
    events.emit({ kind = "started", service = name, message = "started by an operator" })
    return { service = name, state = "running", containers = started }
  end)
end

function ops.restart(name)
  if not registry.service_get(db(), name) then return not_found(name) end
  return locked(name, "restart", function()
    registry.service_set_active(db(), name, true)
    require("mcp.monitor").reset(name)
    local rev = registry.revision_current(db(), name)
    local done = {}
    for _, comp in ipairs(rev and rev.spec.definition.components or {}) do
      local cname = definition.container_name(name, comp.name)
      local ok, err
      if mcp.podman.inspect(cname) then
        ok, err = mcp.podman.restart(cname, { timeout = comp.stop_timeout })
      else
        ok, err = ops.restore_component(name, comp.name)
      end
      if not ok then return nil, string.format("%s: %s", cname, err), "failed" end
      done[#done + 1] = cname
    end
    events.emit({ kind = "restarted", service = name,
      message = "restarted by an operator (restart backoff and flapping cleared)" })
    return { service = name, state = "running", containers = done }
  end)
end

-- Containers, ports, routes and the registry entry go; /srv/<name> stays.
function ops.undeploy(name, opts)
  opts = opts or {}
  local svc = registry.service_get(db(), name)
  local gen = mcp.state.gen
  local file = gen and gen.sources and gen.sources[name]
  if not svc and not file then return not_found(name) end
  return locked(name, "undeploy", function()
    local removed, err, code = each_container(name, function(c)
      return mcp.podman.remove(c.name, { force = true })
    end)
    if not removed then return nil, err, code end
    local rev = registry.revision_current(db(), name)
    if rev and rev.spec and rev.spec.definition then routes.remove(rev.spec.definition) end
    registry.service_delete(db(), name)
    require("mcp.monitor").reset(name)
    if opts.forget and file then os.remove(file) end
    events.emit({ kind = "undeployed", service = name,
      message = string.format("removed %d container(s); data in /srv/%s kept", #removed, name) })
    return { service = name, removed = removed, definition_removed = opts.forget and file or nil }
  end)
end

-- Takes containers named <name>-<component> under management: they are
-- recorded as the service's current revision, as Podman describes them.
function ops.adopt(name)
  if not definition.valid_name(name) then
    return nil, string.format("%q is not a valid service name", name), "invalid"
  end
  local list, err = mcp.podman.list({ all = true })
  if not list then return nil, err, "unavailable" end
  local found = {}
  for _, c in ipairs(list) do
    local cname = (c.Names or {})[1] or ""
    local comp = cname:match("^" .. name:gsub("%-", "%%-") .. "%-([a-z0-9][a-z0-9-]*)$")
    if comp then found[#found + 1] = { name = cname, component = comp, c = c } end
  end
  if #found == 0 then
    return nil, string.format("no container named %s-* exists", name), "not_found"
  end
  local gen = mcp.state.gen
  local def = gen and gen.definitions[name]
  local ports = {}
  if not def then
    -- No definition: describe what runs, so recover can bring it back.
    local comps = {}
    for _, f in ipairs(found) do
      local info = mcp.podman.inspect(f.name) or {}
      local cfg = info.Config or {}
      comps[#comps + 1] = { name = f.component, image = cfg.Image or f.c.Image,
        cmd = cfg.Cmd, env = cfg.Env, volumes = {}, routes = {} }
    end
    local d, errs = definition.validate({ name = name, components = comps },
      "adopt " .. name, { node = mcp.config.agent.node,
        allowed_volume_roots = mcp.config.agent.volume_roots })
    if not d then return nil, table.concat(errs, "\n"), "invalid" end
    def = d
  end
  return locked(name, "adopt", function()
    registry.service_put(db(), def, "adopt", require("mcp.planner").spec_hash(def))
    local rev = registry.revision_new(db(), name, { definition = def, ports = ports,
      adopted = true })
    registry.revision_set_status(db(), name, rev, "deployed")
    registry.service_set_active(db(), name, true)
    local names = {}
    for _, f in ipairs(found) do names[#names + 1] = f.name end
    events.emit({ kind = "adopted", service = name,
      message = "took " .. table.concat(names, ", ") .. " under management" })
    return { service = name, revision = rev, containers = names }
  end)
end

-- Drops registry entries whose containers are all gone. Refuses services
-- that still run; dry_run says what it would do.
function ops.purge(opts)
  opts = opts or {}
  local list, err = mcp.podman.list({ all = true, filters = { label = { "mcp.managed=true" } } })
  if not list then return nil, err, "unavailable" end
  local have = {}
  for _, c in ipairs(list) do
    local s = (c.Labels or {})["mcp.service"]
    if s then have[s] = (have[s] or 0) + 1 end
  end
  local purged, kept = {}, {}
  for _, svc in ipairs(registry.service_list(db())) do
    if (have[svc.name] or 0) > 0 then
      kept[#kept + 1] = { service = svc.name, reason = "has containers" }
    else
      purged[#purged + 1] = svc.name
      if not opts.dry_run then
        registry.service_delete(db(), svc.name)
        events.emit({ kind = "purged", service = svc.name,
          message = "registry entry dropped: no container left" })
      end
    end
  end
  return { purged = purged, kept = kept, dry_run = opts.dry_run and true or false }
end

-- Recreates every service the registry says should run, in depends_on
-- order, from its recorded revision: what an operator did by hand after
-- Podman lost its containers.
function ops.recover(opts)
  opts = opts or {}
  local progress = opts.progress or function() end
  local defs = {}
  for _, svc in ipairs(registry.service_list(db())) do
    if svc.active then
      local rev = registry.revision_current(db(), svc.name)
      if rev and rev.spec and rev.spec.definition then defs[svc.name] = rev.spec.definition end
    end
  end
  local order, err = definition.topo_order(defs, { complete = false })
  if not order then return nil, err, "invalid" end
  local results = {}
  for _, name in ipairs(order) do
    if not opts.only or opts.only[name] then
      progress({ step = "recover", service = name })
      local r = { service = name, components = {} }
      for _, comp in ipairs(defs[name].components) do
        local ok, cerr = ops.restore_component(name, comp.name)
        r.components[#r.components + 1] = { component = comp.name, ok = ok and true or false,
          error = not ok and tostring(cerr) or nil }
        if not ok then r.error = cerr end
      end
      r.ok = r.error == nil
      results[#results + 1] = r
      events.emit({ kind = r.ok and "recovered" or "recover_failed", service = name,
        message = r.ok and "containers recreated from the registry" or tostring(r.error) })
    end
  end
  return { services = results, order = order }
end

local function uptime(started_at)
  if not started_at then return nil end
  local t = tonumber(started_at)
  if not t then return nil end
  return math.max(0, os.time() - t)
end

-- Every managed container: service, component, node, state, version,
-- uptime, health, ports.
function ops.ps()
  local list, err = mcp.podman.list({ all = true, filters = { label = { "mcp.managed=true" } } })
  if not list then return nil, err, "unavailable" end
  local h = mcp.state.health or {}
  local rows = {}
  for _, c in ipairs(list) do
    local l = c.Labels or {}
    local name = (c.Names or {})[1]
    local hs = h[name]
    local ports = {}
    for _, p in ipairs(c.Ports or {}) do
      ports[#ports + 1] = string.format("%s:%d->%d", p.host_ip ~= "" and p.host_ip or "*",
        p.host_port, p.container_port)
    end
    local service, component = l["mcp.service"], l["mcp.component"]
    local flapping = service and component and require("mcp.monitor").flapping(service,
      component)
    rows[#rows + 1] = {
      service = service, component = component,
      node = mcp.config.agent.node, container = name, id = c.Id and c.Id:sub(1, 12),
      state = flapping and "flapping" or c.State, version = definition.version(c.Image or ""),
      image = c.Image, revision = l["mcp.revision"],
      uptime = c.State == "running" and uptime(c.StartedAt) or nil,
      health = c.State == "running" and (hs and hs.state or "starting") or nil,
      ports = mcp.json.array(ports),
    }
  end
  table.sort(rows, function(a, b)
    return (a.service or "") .. "/" .. (a.component or "") .. (a.container or "")
      < (b.service or "") .. "/" .. (b.component or "") .. (b.container or "")
  end)
  return mcp.json.array(rows)
end

return ops
