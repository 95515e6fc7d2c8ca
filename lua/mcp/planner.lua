-- mcp.planner: reconcile as a pure function. From what the operator wants
-- (validated definitions), what Podman runs (containers with the agent's
-- labels) and what the registry records (the deployed revision of each
-- service), plan() derives a list of actions. It decides; the executor acts.
--
-- The principle: repairs bring containers back to the revision the registry
-- records (the executor does them unasked); moving the record forward to a
-- new definition is the operator's call (`mcp deploy`) unless the service
-- says auto_deploy = true. Anything the agent cannot attribute it reports
-- and leaves alone.
local definition = require("mcp.definition")

local planner = {}

----------------------------------------------------------------------------
-- spec_hash: a stable fingerprint of what a deploy of a definition produces.

local function is_list(t)
  local n = 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k % 1 ~= 0 then return false end
    n = n + 1
  end
  return n == #t
end

local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "string" or ta == "number" then return a < b end
  return tostring(a) < tostring(b)
end

-- Canonical text: the same value gives the same text whatever the order in
-- which its tables were built. Strings carry their length, so no choice of
-- content can make two different values serialise alike.
local function canon(v, out)
  local t = type(v)
  if t == "nil" then
    out[#out + 1] = "n"
  elseif t == "boolean" then
    out[#out + 1] = v and "t" or "f"
  elseif t == "number" then
    if v % 1 == 0 and v > -2 ^ 53 and v < 2 ^ 53 then
      out[#out + 1] = string.format("i%d;", v)
    else
      out[#out + 1] = string.format("d%.17g;", v)
    end
  elseif t == "string" then
    out[#out + 1] = "s" .. #v .. ":" .. v
  elseif t == "table" then
    if is_list(v) then
      out[#out + 1] = "["
      for _, x in ipairs(v) do canon(x, out) end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = k end
      table.sort(keys, key_less)
      out[#out + 1] = "{"
      for _, k in ipairs(keys) do
        canon(k, out)
        canon(v[k], out)
      end
      out[#out + 1] = "}"
    end
  elseif t == "function" then
    -- A Lua health fn: its stripped bytecode, so an edited check counts as
    -- a change while a moved comment does not. Upvalues are not seen.
    local ok, code = pcall(string.dump, v, true)
    out[#out + 1] = ok and ("F" .. #code .. ":" .. code) or "F?"
  else
    out[#out + 1] = "?" .. t
  end
end

function planner.canonical(v)
  local out = {}
  canon(v, out)
  return table.concat(out)
end

local function bxor8(a, b)
  local r, bit = 0, 1
  for _ = 1, 8 do
    local x, y = a % 2, b % 2
    if x ~= y then r = r + bit end
    a, b, bit = (a - x) / 2, (b - y) / 2, bit * 2
  end
  return r
end

-- FNV-1a, 32 bits, in plain arithmetic (no bit library needed). Not a
-- security boundary: it only tells "changed" from "unchanged".
function planner.fnv1a32(s)
  local h = 2166136261
  for i = 1, #s do
    local low = h % 256
    h = h - low + bxor8(low, s:byte(i))
    -- h * 16777619 mod 2^32, split so no product exceeds 2^53.
    h = ((h % 256) * 16777216 + h * 403) % 4294967296
  end
  return string.format("%08x", h)
end

-- spec_hash(def) -> 8 hex digits over the service name and its components.
-- Left out on purpose: where the definition came from (source), and the
-- fields that decide when or how the agent deploys rather than what runs
-- (node, active, auto_deploy, policy, depends_on, path, tier, build):
-- changing those must not make a running revision "outdated".
function planner.spec_hash(def)
  return planner.fnv1a32(planner.canonical({ name = def.name, components = def.components }))
end

----------------------------------------------------------------------------
-- Plan

local STARTABLE = { created = true, exited = true, stopped = true, configured = true,
  initialized = true }
local TRANSIENT = { stopping = true, removing = true, restarting = true }

-- Ops the executor may perform without being asked. deploy and outdated
-- depend on the service's auto_deploy; reports are never acted on.
local AUTO = { recreate = true, start = true, unpause = true, stop = true, remove = true }

local function same_image(a, b)
  if a == b then return true end
  if not a or not b then return false end
  -- Podman reports Docker Hub short names fully qualified.
  local function full(x)
    if x:match("^[^/]+[.:][^/]*/") or x:match("^localhost/") then return x end
    if not x:find("/", 1, true) then x = "library/" .. x end
    return "docker.io/" .. x
  end
  return full(a) == full(b)
end
planner.same_image = same_image

local function reduce(c)
  local l = c.labels or {}
  if l["mcp.managed"] ~= nil and l["mcp.managed"] ~= "true" then return nil end
  local service = c.service or l["mcp.service"]
  if not service then return nil end
  return { name = c.name, id = c.id, service = service,
    component = c.component or l["mcp.component"],
    revision = c.revision or l["mcp.revision"], image = c.image, state = c.state }
end

local function act(list, op, cause, service, fields, reason)
  local a = fields or {}
  a.op, a.cause, a.service, a.reason = op, cause, service, reason
  if a.auto == nil then a.auto = AUTO[op] or false end
  list[#list + 1] = a
  return a
end

local function on(c, fields)
  fields = fields or {}
  fields.component = c.component
  fields.container = c.name
  fields.id = c.id
  return fields
end

local function sorted_names(set)
  local names = {}
  for k in pairs(set) do names[#names + 1] = k end
  table.sort(names)
  return names
end

local function by_name(a, b) return (a.name or "") < (b.name or "") end

-- Which of several containers of one component to keep: the deployed
-- revision, the right image, running, under the plain name; then by name.
local function keeper_score(c, want)
  local s = 0
  if c.revision == want.revision then s = s + 8 end
  if want.image and same_image(c.image, want.image) then s = s + 4 end
  if c.state == "running" then s = s + 2 end
  if c.name == want.name then s = s + 1 end
  return s
end

local function plan_component(out, service, comp, cs, reg)
  local want = { revision = reg.revision, image = comp.image,
    name = definition.container_name(service, comp.name) }
  local base = { component = comp.name, revision = reg.revision, image = comp.image }
  if #cs == 0 then
    base.container = want.name
    return act(out, "recreate", "missing", service, base, "container " .. want.name
      .. " of revision " .. tostring(reg.revision) .. " is gone")
  end
  table.sort(cs, function(a, b)
    local sa, sb = keeper_score(a, want), keeper_score(b, want)
    if sa ~= sb then return sa > sb end
    return by_name(a, b)
  end)
  local c = cs[1]
  for i = 2, #cs do
    act(out, "remove", "duplicate", service, on(cs[i], { revision = cs[i].revision }),
      "container " .. cs[i].name .. " duplicates " .. c.name .. " for component " .. comp.name)
  end
  local f = on(c, { revision = reg.revision, image = comp.image })
  if comp.image and not same_image(c.image, comp.image) then
    return act(out, "recreate", "drift-image", service, f, "container " .. c.name
      .. " runs image " .. tostring(c.image) .. ", revision " .. tostring(reg.revision)
      .. " has " .. comp.image)
  end
  if c.revision ~= reg.revision then
    return act(out, "recreate", "drift-revision", service, f, "container " .. c.name
      .. " belongs to revision " .. tostring(c.revision) .. ", the deployed revision is "
      .. tostring(reg.revision))
  end
  if c.state == "running" then
    return act(out, "ok", "ok", service, f, "container " .. c.name .. " runs revision "
      .. tostring(reg.revision))
  end
  if c.state == "paused" then
    return act(out, "unpause", "paused", service, f, "container " .. c.name .. " is paused")
  end
  if STARTABLE[c.state] then
    return act(out, "start", "stopped", service, f, "container " .. c.name .. " is "
      .. c.state .. " but revision " .. tostring(reg.revision) .. " is deployed")
  end
  if TRANSIENT[c.state] then
    return act(out, "wait", "transient", service, f, "container " .. c.name .. " is "
      .. c.state .. "; look again on the next pass")
  end
  return act(out, "recreate", "dead", service, f, "container " .. c.name .. " is in state "
    .. tostring(c.state))
end

-- The components of the deployed revision, in definition order where the
-- definition still has them. Without a record of them (an old registry
-- row), the definition's components stand in, without an image to compare.
local function deployed_components(def, reg)
  local list, seen = {}, {}
  if reg.components then
    if def then
      for _, c in ipairs(def.components) do
        local r = reg.components[c.name]
        if r then
          list[#list + 1] = { name = c.name, image = r.image }
          seen[c.name] = true
        end
      end
    end
    for _, name in ipairs(sorted_names(reg.components)) do
      if not seen[name] then
        list[#list + 1] = { name = name, image = reg.components[name].image }
      end
    end
  elseif def then
    for _, c in ipairs(def.components) do list[#list + 1] = { name = c.name } end
  end
  return list
end

local function plan_deployed(out, service, def, reg, cs)
  local comps = deployed_components(def, reg)
  local by_comp, known = {}, {}
  for _, comp in ipairs(comps) do
    by_comp[comp.name] = {}
    known[comp.name] = true
  end
  local strays = {}
  for _, c in ipairs(cs) do
    if c.component and known[c.component] then
      table.insert(by_comp[c.component], c)
    else
      strays[#strays + 1] = c
    end
  end
  if def then
    local hash = planner.spec_hash(def)
    if hash ~= reg.spec_hash then
      act(out, "outdated", "changed", service, { revision = reg.revision, spec_hash = hash,
        deployed_hash = reg.spec_hash, auto = def.auto_deploy },
        "the definition changed since revision " .. tostring(reg.revision) .. " was deployed"
        .. (def.auto_deploy and " (auto_deploy is on)" or "; `mcp deploy " .. service
          .. "` deploys it"))
    end
  end
  for _, comp in ipairs(comps) do
    plan_component(out, service, comp, by_comp[comp.name], reg)
  end
  for _, c in ipairs(strays) do
    act(out, "orphan", "unknown-component", service, on(c, { revision = c.revision }),
      "container " .. c.name .. " is for component " .. tostring(c.component)
      .. ", which revision " .. tostring(reg.revision) .. " does not have")
  end
end

local function plan_service(out, service, def, reg, cs)
  table.sort(cs, by_name)
  if def and def.active == false then
    local any = false
    for _, c in ipairs(cs) do
      any = true
      local running = c.state == "running" or c.state == "paused"
      if running then
        act(out, "stop", "inactive", service, on(c), service .. " is inactive (active = false)"
          .. " but container " .. c.name .. " is " .. c.state)
      end
      if not reg then
        -- Stopping it is safe either way; whether to remove it is the operator's call.
        act(out, "orphan", "unregistered", service, on(c, { revision = c.revision }),
          "container " .. c.name .. " is for " .. service .. ", which the registry does not"
          .. " record")
      elseif not running then
        act(out, "ok", "inactive", service, on(c), service .. " is inactive; container "
          .. c.name .. " is " .. tostring(c.state))
      end
    end
    if not any then
      act(out, "ok", "inactive", service, nil, service .. " is inactive and has no containers")
    end
    return
  end
  if not reg then
    if def then
      act(out, "deploy", "new", service, { auto = def.auto_deploy }, service
        .. " is defined and active but was never deployed"
        .. (def.auto_deploy and " (auto_deploy is on)" or "; `mcp deploy " .. service
          .. "` deploys it"))
    end
    for _, c in ipairs(cs) do
      act(out, "orphan", "unregistered", service, on(c, { revision = c.revision }),
        "container " .. c.name .. " is for " .. service .. ", which the registry does not"
        .. " record")
    end
    return
  end
  if not def then
    act(out, "undefined", "undefined", service, { revision = reg.revision },
      service .. " (revision " .. tostring(reg.revision) .. ", " .. tostring(reg.status)
      .. ") has no definition any more: restore the definition, or undeploy it")
    return
  end
  if reg.status == "deployed" then
    return plan_deployed(out, service, def, reg, cs)
  end
  if reg.status == "stopped" then
    local any = false
    for _, c in ipairs(cs) do
      any = true
      if c.state == "running" or c.state == "paused" then
        act(out, "stop", "registry-stopped", service, on(c), service .. " was stopped"
          .. " (registry status stopped) but container " .. c.name .. " is " .. c.state)
      else
        act(out, "ok", "stopped", service, on(c), service .. " is stopped; container "
          .. c.name .. " is " .. tostring(c.state))
      end
    end
    if not any then
      act(out, "ok", "stopped", service, nil, service .. " is stopped and has no containers")
    end
    return
  end
  if reg.status == "failed" then
    -- Retrying the same failed definition would loop; a changed one is a fix.
    local hash = planner.spec_hash(def)
    if hash ~= reg.spec_hash then
      act(out, "outdated", "changed", service, { revision = reg.revision, spec_hash = hash,
        deployed_hash = reg.spec_hash, auto = def.auto_deploy },
        "the definition changed since the failed deploy of revision " .. tostring(reg.revision)
        .. (def.auto_deploy and " (auto_deploy is on)" or "; `mcp deploy " .. service
          .. "` deploys it"))
    else
      act(out, "failed", "failed", service, { revision = reg.revision }, "the deploy of "
        .. service .. " revision " .. tostring(reg.revision) .. " failed and the definition has"
        .. " not changed since: fix it, or roll back")
    end
    return
  end
  -- "deploying" and anything newer than this planner: a deploy is in flight.
  act(out, "wait", "busy", service, { revision = reg.revision }, service .. " has registry"
    .. " status " .. tostring(reg.status) .. "; look again when it settles")
end

-- plan(desired, actual, registry) -> actions, ordered by planner.order.
function planner.plan(desired, actual, registry)
  desired, actual, registry = desired or {}, actual or {}, registry or {}
  local services, containers = {}, {}
  for name in pairs(desired) do services[name] = true end
  for name in pairs(registry) do services[name] = true end
  for _, raw in ipairs(actual) do
    local c = reduce(raw)
    if c then
      services[c.service] = true
      containers[c.service] = containers[c.service] or {}
      table.insert(containers[c.service], c)
    end
  end
  local out = {}
  for _, service in ipairs(sorted_names(services)) do
    plan_service(out, service, desired[service], registry[service], containers[service] or {})
  end
  return planner.order(out, desired)
end

-- Taking things down goes first, dependents before what they depend on;
-- then everything else, dependencies first. Within a service the plan's
-- order stays. Services outside defs come after those in it, by name.
local DOWN = { stop = true, remove = true }

function planner.order(actions, defs)
  local names = definition.topo_order(defs or {}, { complete = false })
  if not names then names = sorted_names(defs or {}) end   -- a cycle: the loader refuses those
  local rank = {}
  for i, n in ipairs(names) do rank[n] = i end
  local extra = {}
  for _, a in ipairs(actions) do
    if not rank[a.service] then extra[a.service] = true end
  end
  for _, n in ipairs(sorted_names(extra)) do
    names[#names + 1] = n
    rank[n] = #names
  end
  local keyed = {}
  for i, a in ipairs(actions) do
    local down = DOWN[a.op] and true or false
    keyed[i] = { a = a, phase = down and 1 or 2,
      rank = down and -rank[a.service] or rank[a.service], i = i }
  end
  table.sort(keyed, function(x, y)
    if x.phase ~= y.phase then return x.phase < y.phase end
    if x.rank ~= y.rank then return x.rank < y.rank end
    return x.i < y.i
  end)
  local out = {}
  for i, k in ipairs(keyed) do out[i] = k.a end
  return out
end

-- The actions that are not "ok": what `mcp plan` shows and the executor
-- looks at.
function planner.pending(actions)
  local out = {}
  for _, a in ipairs(actions) do
    if a.op ~= "ok" then out[#out + 1] = a end
  end
  return out
end

return planner
