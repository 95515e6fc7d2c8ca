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

local function pack(...) return { n = select("#", ...), ... } end

-- Runs fn with the service locked against other operations. Its results
-- are passed on whole: `nil, err, code` has a hole that `#` may not see past.
local function locked(name, op, fn)
  local ok, err = deploy.lock(name, op)
  if not ok then return nil, err, "conflict" end
  local res = pack(pcall(fn))
  deploy.unlock(name)
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, res.n)
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
    local rev = registry.revision_current(db(), name)
    local def = rev and rev.spec and rev.spec.definition
    local done, err, code = each_container(name, function(c)
      if not c.running then return true end
      local comp = def and definition.component(def, c.component)
      return mcp.podman.stop(c.name, { timeout = comp and comp.stop_timeout })
    end)
    if not done then return nil, err, code end
    events.emit({ kind = "stopped", service = name, message = "stopped by an operator" })
    return { service = name, state = "stopped", containers = done }
  end)
end

-- Recreates one component from the registry's current revision: the
-- container as the revision describes it, on its recorded ports. A recorded
-- port that another program took meanwhile is replaced by a free one: the
-- revision records the new port and the route provider is told.
function ops.restore_component(name, component)
  deploy.changed()
  local rev = registry.revision_current(db(), name)
  if not rev or not rev.spec or not rev.spec.definition then
    return nil, "no deployed revision of " .. name .. " in the registry"
  end
  local def = rev.spec.definition
  local comp = definition.component(def, component)
  if not comp then return nil, "no component " .. component .. " in " .. name end
  local cname = definition.container_name(name, component)
  local ports = rev.spec.ports or {}
  local bad = {}
  local info = mcp.podman.inspect(cname)
  if info then
    if info.State and info.State.Running then return true end
    local image_ok = not info.ImageName or info.ImageName == comp.image
    if image_ok then
      local ok, err = mcp.podman.start(cname)
      if ok or not tostring(err):find("address already in use", 1, true) then
        return ok, err
      end
      -- Its port was taken while it was stopped: recreated on another.
      for _, port in pairs(ports[comp.name] or {}) do bad[port] = true end
    end
    mcp.podman.remove(cname, { force = true })
  end
  if not mcp.podman.images.exists(comp.image) then
    local ok, err = mcp.podman.images.pull(comp.image)
    if not ok then return nil, err end
  end
  local dok, derr = deploy.ensure_dirs(def, comp)
  if not dok then return nil, derr end
  for attempt = 1, 3 do
    if next(bad) then
      local _, aerr = deploy.assign_ports(def, ports, comp.name, bad)
      if aerr then return nil, aerr end
      rev.spec.ports = ports
      local sok, serr = registry.revision_set_ports(db(), name, rev.id, ports)
      if not sok then return nil, serr end
      local keep = {}
      for _, routes_of in pairs(ports) do
        for _, p in pairs(routes_of) do keep[#keep + 1] = p end
      end
      registry.port_release(db(), name, keep)
      events.emit({ kind = "ports_changed", service = name, component = component,
        message = string.format("%s: a port was taken by another program; now on %s", cname,
          mcp.json.encode(ports[comp.name])) })
      local rok, rerr = routes.switch(def, ports, def)
      if not rok then
        events.emit({ kind = "routes_failed", service = name, message = tostring(rerr) })
      end
    end
    local spec = definition.container_spec(def, comp, { ports = ports, revision = rev.id })
    spec.restart_policy = "no"      -- the agent supervises restarts itself
    local ok, err = mcp.podman.create(spec)
    if not ok then return nil, err end
    ok, err = mcp.podman.start(cname)
    if ok then return true end
    if attempt == 3 or not tostring(err):find("address already in use", 1, true) then
      return nil, err
    end
    mcp.podman.remove(cname, { force = true })
    for _, port in pairs(ports[comp.name] or {}) do bad[port] = true end
  end
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

-- Variables Podman or the image put in every container: not the operator's.
local IMPLICIT_ENV = { PATH = true, TERM = true, container = true, HOME = true,
  HOSTNAME = true }

-- The host ports a container publishes: container port -> {host_port, public}.
local function published(info)
  local out = {}
  local bindings = (info.HostConfig or {}).PortBindings or {}
  for key, list in pairs(bindings) do
    local cport, proto = key:match("^(%d+)/(%a+)$")
    local b = type(list) == "table" and list[1]
    if cport and proto == "tcp" and b and tonumber(b.HostPort) then
      out[tonumber(cport)] = { host_port = tonumber(b.HostPort),
        public = b.HostIp == nil or b.HostIp == "" or b.HostIp == "0.0.0.0" }
    end
  end
  return out
end

-- A component as Podman describes a container that no definition describes:
-- what `adopt` records when the service has no definition here.
local function describe(comp_name, info)
  local cfg = info.Config or {}
  local env = {}
  for _, e in ipairs(cfg.Env or {}) do
    local k = e:match("^([^=]+)=")
    if k and not IMPLICIT_ENV[k] and k ~= "PORT" and not k:match("^PORT_") then
      env[#env + 1] = e
    end
  end
  local volumes = {}
  for _, m in ipairs(info.Mounts or {}) do
    if m.Type == "bind" then
      volumes[#volumes + 1] = m.Source .. ":" .. m.Destination .. (m.RW == false and ":ro" or "")
    end
  end
  local routes_of = {}
  local ports = {}
  for cport in pairs(published(info)) do ports[#ports + 1] = cport end
  table.sort(ports)
  for _, cport in ipairs(ports) do
    local p = published(info)[cport]
    routes_of[#routes_of + 1] = { port = cport, public = p.public,
      name = #ports > 1 and ("p" .. cport) or nil }
  end
  local entry = type(cfg.Entrypoint) == "table" and #cfg.Entrypoint > 0 and cfg.Entrypoint
    or nil
  local mode = (info.HostConfig or {}).NetworkMode
  return { name = comp_name, image = info.ImageName or cfg.Image,
    cmd = type(cfg.Cmd) == "table" and cfg.Cmd or nil, entrypoint = entry, env = env,
    volumes = volumes, routes = routes_of,
    user = (cfg.User and cfg.User ~= "") and cfg.User or nil,
    init = (info.HostConfig or {}).Init == true,
    network = (mode == "host" or mode == "none") and mode or nil }
end

-- Replaces a container made by hand with one the agent made from spec: the
-- same name, its labels, the host ports it had. Podman cannot add labels to
-- a container, so this is a restart. On failure the original comes back.
local function relabel(cname, spec, stop_timeout)
  local aside = cname .. "-adopting"
  local ok, err = mcp.podman.rename(cname, aside)
  if not ok then return nil, "rename " .. cname .. ": " .. tostring(err) end
  local function undo(why)
    mcp.podman.remove(cname, { force = true })
    mcp.podman.rename(aside, cname)
    mcp.podman.start(cname)
    return nil, why
  end
  ok, err = mcp.podman.stop(aside, { timeout = stop_timeout })
  if not ok then return undo("stop " .. cname .. ": " .. tostring(err)) end
  ok, err = mcp.podman.create(spec)
  if not ok then return undo("create " .. cname .. ": " .. tostring(err)) end
  ok, err = mcp.podman.start(cname)
  if not ok then return undo("start " .. cname .. ": " .. tostring(err)) end
  mcp.podman.remove(aside, { force = true })
  return true
end

-- Takes the containers named <name>-<component> under management. The
-- service's definition says what they are (without one, what Podman reports
-- of them: image, cmd, env, bind mounts, published ports); each keeps the
-- host ports it publishes. A container without the agent's labels is
-- recreated once with them (Podman cannot relabel a container), so the
-- monitor, `mcp ps` and every operation see it; its data in bind mounts is
-- untouched. The registry then records them as the current revision.
function ops.adopt(name)
  if not definition.valid_name(name) then
    return nil, string.format("%q is not a valid service name", name), "invalid"
  end
  local list, err = mcp.podman.list({ all = true })
  if not list then return nil, err, "unavailable" end
  local found = {}
  local pattern = "^" .. name:gsub("%-", "%%-") .. "%-([a-z0-9][a-z0-9-]*)$"
  for _, c in ipairs(list) do
    local cname = (c.Names or {})[1] or ""
    local comp = cname:match(pattern)
    if comp and not cname:match("%-adopting$") then
      found[#found + 1] = { name = cname, component = comp, c = c }
    end
  end
  if #found == 0 then
    return nil, string.format("no container named %s-* exists", name), "not_found"
  end
  table.sort(found, function(a, b) return a.name < b.name end)
  for _, f in ipairs(found) do
    local info, ierr = mcp.podman.inspect(f.name)
    if not info then return nil, f.name .. ": " .. tostring(ierr), "unavailable" end
    f.info = info
    local l = (info.Config or {}).Labels or {}
    f.managed = l["mcp.managed"] == "true" and l["mcp.service"] == name
      and l["mcp.component"] == f.component
  end
  local gen = mcp.state.gen
  local def = gen and gen.definitions[name]
  if def then
    local unknown = {}
    for _, f in ipairs(found) do
      if not definition.component(def, f.component) then unknown[#unknown + 1] = f.name end
    end
    if #unknown > 0 then
      return nil, string.format("%s: the definition of %s (%s) has no component for %s",
        name, name, tostring(gen.sources[name]), table.concat(unknown, ", ")), "invalid"
    end
  else
    local comps = {}
    for _, f in ipairs(found) do comps[#comps + 1] = describe(f.component, f.info) end
    local d, errs = definition.validate({ name = name, components = comps },
      "adopt " .. name, { node = mcp.config.agent.node,
        allowed_volume_roots = mcp.config.agent.volume_roots })
    if not d then
      return nil, table.concat(errs, "\n") .. "\n(write a definition for " .. name
        .. " that says what these containers are, then adopt again)", "invalid"
    end
    def = d
  end
  return locked(name, "adopt", function()
    local existed = registry.service_get(db(), name)
    registry.service_put(db(), def, "adopt", require("mcp.planner").spec_hash(def))
    -- Host ports: what each container publishes; a route it does not
    -- publish gets one from the agent's range.
    local ports = {}
    for _, comp in ipairs(def.components) do
      ports[comp.name] = {}
      local f
      for _, x in ipairs(found) do
        if x.component == comp.name then f = x end
      end
      local pub = f and published(f.info) or {}
      for _, r in ipairs(comp.routes) do
        local p = pub[r.port]
        if p then
          ports[comp.name][r.key] = p.host_port
        else
          local port, perr = registry.port_assign(db(), name, comp.name, r.key,
            function(n) return mcp.net.port_free(n) == true end)
          if not port then
            if not existed then registry.service_delete(db(), name) end
            return nil, perr, "failed"
          end
          ports[comp.name][r.key] = port
        end
      end
    end
    local rev = registry.revision_new(db(), name, { definition = def, ports = ports,
      adopted = true })
    local names, recreated = {}, {}
    for _, f in ipairs(found) do
      names[#names + 1] = f.name
      if not f.managed or f.info.Config.Labels["mcp.revision"] ~= rev then
        local comp = definition.component(def, f.component)
        local dok, derr = deploy.ensure_dirs(def, comp)
        local spec = definition.container_spec(def, comp, { ports = ports, revision = rev })
        spec.restart_policy = "no"      -- the agent supervises restarts itself
        local ok, rerr
        if dok then ok, rerr = relabel(f.name, spec, comp.stop_timeout) else rerr = derr end
        if not ok then
          registry.revision_set_status(db(), name, rev, "failed", tostring(rerr))
          if not existed then registry.service_delete(db(), name) end
          return nil, string.format("%s: %s (recreated before it: %s)", f.name,
            tostring(rerr), #recreated > 0 and table.concat(recreated, ", ") or "none"),
            "failed"
        end
        recreated[#recreated + 1] = f.name
      end
    end
    registry.revision_set_status(db(), name, rev, "deployed")
    registry.service_set_active(db(), name, true)
    require("mcp.monitor").reset(name)
    local rok, rerr = routes.switch(def, ports, existed and existed.definition)
    if not rok then
      events.emit({ kind = "routes_failed", service = name, message = tostring(rerr) })
    end
    events.emit({ kind = "adopted", service = name,
      message = string.format("took %s under management as revision %s%s",
        table.concat(names, ", "), rev, #recreated > 0 and (" (recreated with the agent's "
        .. "labels: " .. table.concat(recreated, ", ") .. ")") or "") })
    return { service = name, revision = rev, containers = names,
      recreated = mcp.json.array(recreated), ports = ports,
      definition = gen and gen.sources[name] or "described from Podman" }
  end)
end

-- Drops registry entries whose containers are all gone, with their ports
-- and routes. Refuses services that still have a container (running or
-- not): those are listed under `kept`. dry_run says what it would do.
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
      kept[#kept + 1] = { service = svc.name, reason = string.format(
        "has %d container(s): undeploy it to remove them", have[svc.name]) }
    elseif deploy.busy(svc.name) then
      kept[#kept + 1] = { service = svc.name, reason = "an operation is in progress" }
    else
      purged[#purged + 1] = svc.name
      if not opts.dry_run then
        local rev = registry.revision_current(db(), svc.name)
        if rev and rev.spec and rev.spec.definition then
          local ok, rerr = routes.remove(rev.spec.definition)
          if not ok then
            events.emit({ kind = "routes_failed", service = svc.name, message = tostring(rerr) })
          end
        end
        registry.service_delete(db(), svc.name)
        require("mcp.monitor").reset(svc.name)
        events.emit({ kind = "purged", service = svc.name,
          message = "registry entry dropped: no container left" })
      end
    end
  end
  return { purged = mcp.json.array(purged), kept = mcp.json.array(kept),
    dry_run = opts.dry_run and true or false }
end

-- Health-check targets of a revision's containers, as deploy waits on them.
local function targets(name, def, ports)
  local gen = mcp.state.gen
  local live = gen and gen.definitions[name]
  local out = {}
  for _, comp in ipairs(def.components) do
    -- A lua check's function does not survive the registry's JSON.
    if comp.health.kind == "lua" and live then comp = definition.component(live, comp.name)
      or comp end
    out[#out + 1] = { service = name, component = comp.name,
      container = definition.container_name(name, comp.name), def = def, comp = comp,
      ports = (ports or {})[comp.name], policy = gen and gen.policies[def.policy] }
  end
  return out
end

-- Recreates every service the registry says should run, in depends_on
-- order, from its recorded revision: what an operator did by hand after
-- Podman lost its containers. A service that others depend on must pass its
-- health check (opts.health_timeout, 60 s by default) before they start.
function ops.recover(opts)
  opts = opts or {}
  local progress = opts.progress or function() end
  local defs, revs = {}, {}
  for _, svc in ipairs(registry.service_list(db())) do
    if svc.active then
      local rev = registry.revision_current(db(), svc.name)
      if rev and rev.spec and rev.spec.definition then
        defs[svc.name], revs[svc.name] = rev.spec.definition, rev
      end
    end
  end
  local order, err = definition.topo_order(defs, { complete = false })
  if not order then return nil, err, "invalid" end
  local needed = {}
  for _, d in pairs(defs) do
    for _, dep in ipairs(d.depends_on or {}) do needed[dep] = true end
  end
  local timeout = opts.health_timeout or 60
  local results, ran = {}, {}
  for _, name in ipairs(order) do
    if not opts.only or opts.only[name] then
      ran[#ran + 1] = name
      progress({ step = "recover", service = name })
      local r = { service = name, revision = revs[name].id, components = {} }
      local ok, lerr = deploy.lock(name, "recover")
      if not ok then
        r.error = lerr
      else
        local pok, perr = pcall(function()
          for _, comp in ipairs(defs[name].components) do
            local cok, cerr = ops.restore_component(name, comp.name)
            r.components[#r.components + 1] = { component = comp.name,
              ok = cok and true or false, error = not cok and tostring(cerr) or nil }
            if not cok then r.error = tostring(cerr) end
          end
        end)
        deploy.unlock(name)
        if not pok then r.error = tostring(perr) end
      end
      if not r.error and needed[name] then
        progress({ step = "wait_healthy", service = name, timeout = timeout })
        local hok, herr = require("mcp.health").wait(targets(name, defs[name],
          revs[name].spec.ports), timeout)
        r.healthy = hok
        if not hok then r.error = "not healthy, its dependents start anyway: " .. tostring(herr) end
      end
      r.ok = r.error == nil
      results[#results + 1] = r
      events.emit({ kind = r.ok and "recovered" or "recover_failed", service = name,
        message = r.ok and ("containers recreated from revision " .. r.revision)
          or tostring(r.error) })
    end
  end
  return { services = mcp.json.array(results), order = mcp.json.array(ran) }
end

local function uptime(started_at)
  if not started_at then return nil end
  local t = tonumber(started_at)
  if not t then return nil end
  return math.max(0, os.time() - t)
end

-- Every managed container: service, component, node, state, version,
-- uptime, health, ports.
-- The managed containers as Podman lists them, cached between changes.
--
-- Listing is Podman's most expensive read (tens of ms with a hundred
-- containers), and `GET /v1/ps` is what dashboards poll. The cache is only
-- trusted while Podman's event stream is connected: any container event
-- marks it stale, and the next reader refreshes it. Concurrent readers share
-- one refresh.
local function ps_watch(cache)
  cache.watching = true
  mcp.spawn({ name = "ps.cache", daemon = true }, function()
    local sub = mcp.podman.events.subscribe({ type = { "container" },
      label = { "mcp.managed=true" } })
    while true do
      local ev, err = sub:next(60)
      if ev or err ~= "timeout" then cache.stale = true end
      if not ev and err ~= "timeout" then mcp.sleep(1) end
    end
  end)
end

function ops.managed_containers()
  local cache = mcp.state.ps_cache
  if not cache then
    cache = { stale = true }
    mcp.state.ps_cache = cache
  end
  if not cache.watching and mcp.config then ps_watch(cache) end
  -- Trusted only when the list was taken while the stream was connected,
  -- and the stream has not broken since (events in between are lost).
  local es = mcp.podman.stats().events or {}
  local live = es.connected and cache.trusted and es.connects == cache.connects
  if cache.list and not cache.stale and live then return cache.list end
  if cache.refreshing then
    local deadline = mcp.timer.monotime() + 30
    while cache.refreshing and mcp.timer.monotime() < deadline do mcp.sleep(0.005) end
    if cache.list and not cache.stale then return cache.list end
  end
  cache.refreshing = true
  cache.stale = false
  cache.trusted, cache.connects = es.connected, es.connects
  local ok, list, err = pcall(mcp.podman.list, { all = true,
    filters = { label = { "mcp.managed=true" } } })
  cache.refreshing = false
  if not ok then error(list, 0) end
  if not list then
    cache.stale = true
    return nil, err
  end
  cache.list = list
  return list
end

function ops.ps()
  local list, err = ops.managed_containers()
  if not list then return nil, err, "unavailable" end
  local h = mcp.state.health or {}
  local rows = {}
  for _, c in ipairs(list) do
    local l = c.Labels or {}
    local name = (c.Names or {})[1]
    local hs = h[name]
    local ports = {}
    for _, p in ipairs(type(c.Ports) == "table" and c.Ports or {}) do
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
