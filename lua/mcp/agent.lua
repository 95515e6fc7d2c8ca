-- mcp.agent: the server's Lua side: what runs at start, on a reload, on a
-- file change and at stop, and the views the console helpers call.
--
-- The C core calls these functions by name, each in a task of its own.
local mcp = require("mcp.core")

local agent = {}

local function init_state()
  local s = mcp.state
  s.metrics = s.metrics or {}
  s.locks = s.locks or {}
  s.auto_deploys = s.auto_deploys or {}
  s.started = s.started or mcp.now()
end

-- The UID guard: rootless Podman's storage, subuid mappings and user session
-- all belong to one uid; an agent started under another uid against the
-- same data would operate a different, empty Podman and lose track of every
-- container. Refuse, and say why.
local function uid_guard(registry)
  local uid = mcp.proc.uid()
  local recorded = registry.meta_get(mcp.state.db, "uid")
  if not recorded then
    registry.meta_set(mcp.state.db, "uid", tostring(uid))
    registry.meta_set(mcp.state.db, "podman_socket", mcp.config.podman.socket)
    return true
  end
  if tonumber(recorded) ~= uid then
    return nil, string.format("this agent's data (%s) was recorded by uid %s, but the agent "
      .. "now runs as uid %d. Rootless Podman keeps its containers, image storage, subuid "
      .. "mappings and user session per uid: running under another uid would manage a "
      .. "different, empty Podman and could destroy the recorded services' state. Run the "
      .. "agent as uid %s again (the mcp user's uid must never change).",
      mcp.config.agent.data_dir, recorded, uid, recorded)
  end
  return true
end

function agent.start()
  init_state()
  local cfg = mcp.config
  local registry = require("mcp.registry")
  local db, err = registry.open(cfg.agent.data_dir .. "/mcp.db")
  if not db then
    mcp.log.error("cannot open the registry: %s", tostring(err))
    return mcp.proc.stop(1)
  end
  mcp.state.db = db
  local ok, gerr = uid_guard(registry)
  if not ok then
    mcp.log.error("%s", gerr)
    return mcp.proc.stop(1)
  end

  local reload = require("mcp.reload")
  if not reload.run("start") then
    -- Broken files at start: run with the library alone, so the API answers
    -- and deployed services stay supervised from the registry.
    local gen, errs = reload.build({ library_only = true })
    if not gen then
      mcp.log.error("the agent's library does not load:\n%s", table.concat(errs, "\n"))
      return mcp.proc.stop(1)
    end
    reload.install(gen)
  end
  if cfg.agent.services_dir then mcp.watch.add(cfg.agent.services_dir) end
  mcp.watch.add(cfg.agent.policies_dir)
  mcp.watch.add(cfg.agent.lib_dir .. "/lua")
  mcp.watch.add(cfg.agent.lib_dir .. "/policies")

  require("mcp.monitor").start()
  mcp.spawn({ name = "boot", daemon = true }, function()
    require("mcp.boot").run()
  end)
  if mcp.systemd then mcp.systemd.notify("READY=1\nSTATUS=serving") end
  mcp.log.info("agent serving on node %s (generation %d)", cfg.agent.node, mcp.state.gen.id)
end

-- Reloads (mcp.reload: build aside, swap in one step, or keep the running
-- generation), tells the events, then deploys the services that ask for it
-- with auto_deploy = true and whose definition changed. Nothing else touches
-- a container: a changed definition is drift until the operator deploys it.
-- Returns {generation, previous, files, took_ms}, or nil and the errors.
function agent.reload(why)
  local prev = mcp.state.gen
  local gen, err = require("mcp.reload").run(why or "reload")
  local events = require("mcp.events")
  if not gen then
    events.emit({ kind = "reload_failed", message = string.format(
      "%s; generation %s keeps running:\n%s", why or "reload",
      prev and prev.id or "none", err) })
    return nil, err
  end
  events.emit({ kind = "reloaded", message = string.format(
    "generation %d: %d files, %.1f ms (%s)", gen.id, gen.files, gen.took_ms,
    why or "reload") })
  local planner = require("mcp.planner")
  local c = mcp.config and mcp.config.lua or {}
  mcp.state.auto_deploys = mcp.state.auto_deploys or {}
  local names = {}
  for name in pairs(gen.definitions) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local def = gen.definitions[name]
    local old = prev and prev.definitions and prev.definitions[name]
    if def.auto_deploy and def.active and (not old
        or planner.spec_hash(old) ~= planner.spec_hash(def)) then
      -- A deploy runs the service's policy: with the limits of policy code.
      local seq = (mcp.state.auto_deploys[name] or 0) + 1
      mcp.state.auto_deploys[name] = seq
      mcp.spawn({ name = "auto_deploy:" .. name, timeout = c.task_timeout,
        instructions = c.task_instructions, memory = c.task_memory },
        agent.auto_deploy, name, seq)
    end
  end
  return { generation = gen.id, previous = prev and prev.id, files = gen.files,
    took_ms = gen.took_ms, phases = gen.phases }
end

-- The deploy a reload starts for a service with auto_deploy = true: of the
-- definition current when it runs. A deploy of the service already in
-- progress (the one the previous reload started, say) is waited for; a
-- later reload's auto deploy of the same service takes over.
function agent.auto_deploy(name, seq)
  local deploy = require("mcp.deploy")
  while mcp.state.auto_deploys[name] == seq do
    local gen = mcp.state.gen
    local def = gen.definitions[name]
    if not def or not def.auto_deploy or not def.active then return end
    local r, err, code = deploy.run(def, { source = gen.sources[name] })
    if r then return r end
    if code ~= "conflict" then
      mcp.log.error("auto_deploy of %s failed: %s", name, tostring(err))
      return
    end
    mcp.sleep(0.5)
  end
end

-- A watched file changed (debounced by the core): the same reload. The
-- watcher's task has no limits; the reload's load-time code runs in jobs that
-- do (mcp.reload).
function agent.on_change(paths)
  local list = type(paths) == "table" and table.concat(paths, ", ") or tostring(paths)
  if #list > 300 then list = list:sub(1, 300) .. "..." end
  return agent.reload("changed: " .. list)
end

function agent.stop()
  if mcp.systemd then mcp.systemd.notify("STOPPING=1") end
end

-- Console helpers.
function agent.ps() return require("mcp.ops").ps() end
function agent.services() return require("mcp.api.services").list() end
function agent.show(name) return require("mcp.api.services").show(name) end
function agent.events(n)
  return require("mcp.registry").events(mcp.state.db, { limit = n or 20 })
end
function agent.health_run(name) return require("mcp.api.services").health_run(name) end
function agent.last_reload_error() return mcp.state.reload_error end

return agent
