-- mcp.api.services: the endpoints of services and their operations: the
-- definitions (PUT/GET/DELETE), deploy, stop, start, restart, adopt, purge,
-- recover, sync, ps, logs, events, files, reload and render.
--
-- Definitions sent through the API are written into [agent] services_dir
-- (NAME.toml, NAME.lua or NAME.json, as they came) and the agent reloads: the
-- directory stays the one place where desired state is, whether an operator
-- edits it on the host or sends it with `mcp deploy`.
local mcp = require("mcp.core")
local api = require("mcp.api")
local definition = require("mcp.definition")
local deploy = require("mcp.deploy")
local ops = require("mcp.ops")
local registry = require("mcp.registry")

local services = {}

-- Text for a message or an answer: invalid UTF-8 (a name or a path a
-- client sent, a Lua definition's strings) becomes \xNN escapes, so that an
-- error about a bad byte is still a JSON answer and not a 500.
local function printable(s)
  s = tostring(s)
  if not s:find("[\128-\255]") then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local c = s:byte(i)
    local len, lo, hi = 0, 0x80, 0xBF
    if c < 0x80 then len = 1
    elseif c >= 0xC2 and c <= 0xDF then len = 2
    elseif c >= 0xE0 and c <= 0xEF then
      len = 3
      if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
    elseif c >= 0xF0 and c <= 0xF4 then
      len = 4
      if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
    end
    local ok = len > 0 and i + len - 1 <= n
    if ok and len > 1 then
      local b = s:byte(i + 1)
      ok = b >= lo and b <= hi
      for j = i + 2, i + len - 1 do
        b = s:byte(j)
        if b < 0x80 or b > 0xBF then ok = false end
      end
    end
    if ok then
      out[#out + 1] = s:sub(i, i + len - 1)
      i = i + len
    else
      out[#out + 1] = string.format("\\x%02X", c)
      i = i + 1
    end
  end
  return table.concat(out)
end
services.printable = printable

-- api.error and api.raise, with the message made printable.
local function fail(status, code, fmt, ...)
  return api.error(status, code, "%s", printable(string.format(fmt, ...)))
end

local function raise(status, code, fmt, ...)
  api.raise(status, code, "%s", printable(string.format(fmt, ...)))
end

local STATUS_OF = { invalid = 400, not_found = 404, conflict = 409, failed = 422,
  unavailable = 503 }

local function op_error(err, code)
  local status = STATUS_OF[code] or 500
  local name = code == "failed" and "deploy_failed" or code or "internal"
  return fail(status, name, "%s", tostring(err))
end

local function db() return mcp.state.db end
local function gen() return mcp.state.gen or { definitions = {}, sources = {}, policies = {} } end

-- A service name from the path, checked before it reaches a file name.
local function service_name(req)
  local name = req.params.name
  if not definition.valid_name(name) then
    raise(400, "invalid_name", "%q is not a service name (expected ^[a-z0-9][a-z0-9-]{0,62}$)",
      name)
  end
  return name
end

-- A whole number from the query string, in [min, max]; raises a 400 that
-- names the parameter otherwise.
local function query_int(req, key, default, min, max)
  local raw = req.query[key]
  if raw == nil or raw == "" then return default end
  local n = raw:match("^%d+$") and tonumber(raw)
  if not n or n < min or n > max then
    raise(400, "bad_request", "%s: expected a whole number from %d to %d, got %q", key,
      min, max, raw)
  end
  return n
end

-- A boolean flag from the query string: 1/true/yes or 0/false/no.
local function query_flag(req, key)
  local raw = req.query[key]
  if raw == nil then return false end
  local v = ({ ["1"] = true, ["true"] = true, yes = true, [""] = true,
    ["0"] = false, ["false"] = false, no = false })[raw:lower()]
  if v == nil then
    raise(400, "bad_request", "%s: expected 1 or 0 (true or false), got %q", key, raw)
  end
  return v
end

local FORMATS = {
  ["application/toml"] = "toml", ["application/x-toml"] = "toml", ["text/toml"] = "toml",
  ["text/x-lua"] = "lua", ["application/x-lua"] = "lua", ["text/lua"] = "lua",
  ["application/json"] = "json",
}

local function is_json_array(v)
  local mt = type(v) == "table" and getmetatable(v)
  return mt and mt.__jsontype == "array" or false
end

-- Decodes and validates one definition text. Returns def, or nil and the
-- list of every problem (for a 400). A Lua definition runs under the limits
-- of load-time code (reload.read_definition runs it as a job): an endless
-- loop or a huge allocation in it fails the request, not the API's task.
local function parse_definition(text, format, source)
  local reload = require("mcp.reload")
  local raw, err = reload.read_definition(source, text, format, require("mcp.sandbox"))
  if raw == nil then return nil, { tostring(err or source .. ": empty definition") } end
  if format == "json" and (type(raw) ~= "table" or is_json_array(raw)) then
    return nil, { string.format("%s: a definition is a JSON object, got %s", source,
      is_json_array(raw) and "an array" or type(raw) == "userdata" and "null" or type(raw)) }
  end
  local known = {}
  for name in pairs(gen().policies or {}) do known[name] = true end
  local def, errs = definition.validate(raw, source, { node = mcp.config.agent.node,
    allowed_volume_roots = mcp.config.agent.volume_roots, known_policies = known })
  if not def and type(errs) ~= "table" then errs = { tostring(errs) } end
  return def, errs
end

local function invalid(errs)
  local shown = {}
  for i, e in ipairs(errs) do shown[i] = printable(e) end
  local status, body = fail(400, "invalid_definition", "%s", table.concat(shown, "\n"))
  body.error.errors = mcp.json.array(shown)
  return status, body
end

-- Writes a definition file atomically and reloads; on a failed reload the
-- previous file comes back, so a PUT never leaves a broken set behind.
local function store_definition(name, format, text)
  local dir = mcp.config.agent.services_dir
  mcp.fs.mkdir(dir, 493)
  local saved = {}
  for _, ext in ipairs({ "toml", "lua", "json" }) do
    local old = mcp.fs.read(dir, name .. "." .. ext)
    if old then saved[ext] = old end
  end
  if saved[format] == text then return "unchanged" end
  local ok, err = mcp.fs.write(dir, name .. "." .. format, text, { mode = 416 })
  if not ok then return nil, err end
  for ext in pairs(saved) do
    if ext ~= format then mcp.fs.remove(dir, name .. "." .. ext) end
  end
  local r, rerr = require("mcp.agent").reload("definition of " .. name)
  if not r then
    mcp.fs.remove(dir, name .. "." .. format)
    for ext, old in pairs(saved) do mcp.fs.write(dir, name .. "." .. ext, old, { mode = 416 }) end
    return nil, rerr
  end
  return next(saved) and "updated" or "created"
end

-- One service as the API shows it.
function services.show(name)
  local g = gen()
  local def = g.definitions[name]
  local svc = db() and registry.service_get(db(), name)
  if not def and not svc then return nil end
  local rev = svc and registry.revision_current(db(), name)
  local last = svc and (registry.revision_list(db(), name, 1) or {})[1]
  local rows = {}
  local all = ops.ps() or {}
  for _, c in ipairs(all) do
    if c.service == name then rows[#rows + 1] = c end
  end
  local ports = {}
  for _, p in ipairs(registry.port_list(db(), name)) do
    ports[#ports + 1] = { component = p.component, route = p.route, port = p.port }
  end
  return {
    name = name, node = (def or svc.definition).node,
    active = svc and svc.active or false,
    deployed = rev ~= nil,
    source = g.sources[name] or (svc and svc.source),
    definition = def or (svc and svc.definition),
    outdated = def and svc and svc.spec_hash ~= require("mcp.planner").spec_hash(def) or false,
    revision = rev and { id = rev.id, status = rev.status, error = rev.error,
      created = rev.created, finished = rev.finished } or nil,
    -- The latest deploy, whatever became of it: a failed one is not current.
    last_deploy = last and { id = last.id, status = last.status, error = last.error,
      created = last.created, finished = last.finished } or nil,
    containers = mcp.json.array(rows),
    ports = mcp.json.array(ports),
    events = mcp.json.array(registry.events(db(), { service = name, limit = 20 })),
  }
end

function services.list()
  local g = gen()
  local names, out = {}, {}
  for name in pairs(g.definitions) do names[name] = true end
  for _, s in ipairs(db() and registry.service_list(db()) or {}) do names[s.name] = true end
  local sorted = {}
  for name in pairs(names) do sorted[#sorted + 1] = name end
  table.sort(sorted)
  for _, name in ipairs(sorted) do
    local def = g.definitions[name]
    local svc = db() and registry.service_get(db(), name)
    out[#out + 1] = {
      name = name, node = (def or svc.definition).node,
      policy = (def or svc.definition).policy,
      active = svc and svc.active or false, defined = def ~= nil,
      revision = svc and svc.current_revision or nil,
      source = g.sources[name] or (svc and svc.source),
    }
  end
  return mcp.json.array(out)
end

-- One health check now, for the console and `mcp status`.
function services.health_run(name)
  local rev = registry.revision_current(db(), name)
  if not rev then return nil, "service " .. name .. " is not deployed" end
  local health = require("mcp.health")
  local g = gen()
  local live = g.definitions[name]
  local out = {}
  for _, comp in ipairs(rev.spec.definition.components) do
    if live then comp = definition.component(live, comp.name) or comp end
    local cname = definition.container_name(name, comp.name)
    local ok, detail, took = health.probe({ service = name, component = comp.name,
      container = cname, def = rev.spec.definition, comp = comp,
      ports = (rev.spec.ports or {})[comp.name], policy = g.policies[rev.spec.definition.policy] })
    out[#out + 1] = { container = cname, status = ok and "healthy" or "unhealthy",
      detail = detail, took_ms = math.floor(took * 10) / 10 }
  end
  return #out == 1 and out[1] or out
end

api.route("GET", "/v1/services", function()
  return 200, { services = services.list() }
end, { summary = "Every service: defined here or deployed." })

api.route("GET", "/v1/services/{name}", function(req)
  local name = service_name(req)
  local s = services.show(name)
  if not s then return fail(404, "not_found", "no service %q on this node", name) end
  return 200, s
end, { summary = "One service: definition, revision, containers, ports, events." })

api.route("PUT", "/v1/services/{name}", function(req)
  local name = service_name(req)
  local ct = (req.headers["content-type"] or "application/json"):lower():match("^%s*([^;%s]+)")
  local format = FORMATS[ct]
  if not format then
    return fail(415, "unsupported_media_type", "a definition is application/json, "
      .. "application/toml or text/x-lua; got %s", ct)
  end
  local source = string.format("PUT /v1/services/%s", name)
  local def, errs = parse_definition(req.body, format, source)
  if not def then return invalid(errs) end
  if def.name ~= name then
    return invalid({ string.format("%s: name: %q does not match the URL's %q", source,
      def.name, name) })
  end
  if def.node ~= mcp.config.agent.node then
    return invalid({ string.format("%s: node: %q is not this agent's node %q", source,
      def.node, mcp.config.agent.node) })
  end
  local result, err = store_definition(name, format, req.body)
  if not result then
    return fail(422, "reload_failed", "the definition is valid, but the agent could "
      .. "not reload with it (nothing changed): %s", tostring(err))
  end
  return result == "created" and 201 or 200, { service = name, result = result,
    source = gen().sources[name] }
end, { summary = "Creates or replaces a definition (JSON, TOML or Lua)." })

api.route("DELETE", "/v1/services/{name}", function(req)
  local name = service_name(req)
  local r, err, code = ops.undeploy(name, { forget = true })
  if not r then return op_error(err, code) end
  if r.definition_removed then require("mcp.agent").reload("undeploy " .. name) end
  return 200, r
end, { summary = "Undeploys: containers, ports and registry entry go; /srv/NAME stays." })

-- Runs an operation, streaming its progress as NDJSON when asked.
local function run_streamed(req, fn)
  if api.wants_stream(req) then
    local out = api.ndjson(req, 200)
    if not out then return nil end
    local r, err, code = fn(function(ev) out:send(ev) end)
    if r then out:send({ result = r })
    else out:send({ error = { code = code or "failed", message = printable(err) } }) end
    out:close()
    return nil
  end
  local r, err, code = fn(nil)
  if not r then return op_error(err, code) end
  return 200, r
end

api.route("POST", "/v1/services/{name}/deploy", function(req)
  local name = service_name(req)
  local def = gen().definitions[name]
  if not def then
    return fail(404, "not_found", "service %q has no definition here: send it first "
      .. "(PUT /v1/services/%s, or `mcp deploy %s`)", name, name, name)
  end
  if def.node ~= mcp.config.agent.node then
    return fail(400, "wrong_node", "service %q belongs to node %q, not %q", name,
      def.node, mcp.config.agent.node)
  end
  return run_streamed(req, function(progress)
    return deploy.run(def, { progress = progress, source = gen().sources[name] })
  end)
end, { summary = "Deploys the service's definition through its policy." })

for _, verb in ipairs({ "stop", "start", "restart" }) do
  api.route("POST", "/v1/services/{name}/" .. verb, function(req)
    local r, err, code = ops[verb](service_name(req))
    if not r then return op_error(err, code) end
    return 200, r
  end, { summary = "Operator " .. verb .. " of every container of the service." })
end

api.route("POST", "/v1/adopt", function(req)
  local name = type(req.json) == "table" and req.json.service
  if type(name) ~= "string" then
    return fail(400, "bad_request", "expected {\"service\": \"NAME\"}")
  end
  local r, err, code = ops.adopt(name)
  if not r then return op_error(err, code) end
  return 200, r
end, { body = "json", summary = "Takes containers named SERVICE-* under management." })

api.route("POST", "/v1/purge", function(req)
  local j = type(req.json) == "table" and req.json or {}
  if j.dry_run ~= nil and type(j.dry_run) ~= "boolean" then
    return fail(400, "bad_request", "dry_run: expected a boolean, got %s", type(j.dry_run))
  end
  local r, err, code = ops.purge({ dry_run = j.dry_run })
  if not r then return op_error(err, code) end
  return 200, r
end, { summary = "Drops registry entries whose containers are gone." })

api.route("POST", "/v1/recover", function(req)
  return run_streamed(req, function(progress) return ops.recover({ progress = progress }) end)
end, { summary = "Recreates every deployed service from the registry." })

api.route("POST", "/v1/sync", function(req)
  local j = req.json
  if type(j) ~= "table" or is_json_array(j) or not is_json_array(j.definitions) then
    return fail(400, "bad_request", "expected {\"definitions\": [{\"name\", \"format\": "
      .. "\"toml\"|\"lua\"|\"json\", \"text\"}, ...]}")
  end
  local parsed, errs = {}, {}
  for i, d in ipairs(j.definitions) do
    local where = string.format("definitions[%d]", i)
    if type(d) ~= "table" or type(d.name) ~= "string" or type(d.text) ~= "string"
        or not ({ toml = true, lua = true, json = true })[d.format] then
      errs[#errs + 1] = where .. ": expected {name, format (toml, lua, json), text}"
    elseif not definition.valid_name(d.name) then
      errs[#errs + 1] = string.format("%s: name: %q is not a service name", where, d.name)
    else
      local def, derrs = parse_definition(d.text, d.format, "sync " .. d.name)
      if not def then
        for _, e in ipairs(derrs) do errs[#errs + 1] = e end
      elseif def.name ~= d.name then
        errs[#errs + 1] = string.format("%s: name %q differs from the definition's %q", where,
          d.name, def.name)
      else
        parsed[#parsed + 1] = { name = d.name, format = d.format, text = d.text, def = def }
      end
    end
  end
  if #errs > 0 then return invalid(errs) end
  local results = {}
  for _, p in ipairs(parsed) do
    local r, err = store_definition(p.name, p.format, p.text)
    results[#results + 1] = { name = p.name, result = r or "failed", error = err }
  end
  -- Deploy what changed, dependencies first.
  local planner = require("mcp.planner")
  local defs = gen().definitions
  local order = definition.topo_order(defs, { complete = false }) or {}
  local by_name = {}
  for _, r in ipairs(results) do by_name[r.name] = r end
  for _, name in ipairs(order) do
    local r, def = by_name[name], defs[name]
    if r and not r.error and def and def.active then
      local svc = registry.service_get(db(), name)
      if not svc or svc.spec_hash ~= planner.spec_hash(def) or not svc.current_revision then
        local d, err = deploy.run(def, { source = gen().sources[name] })
        r.deployed = d ~= nil
        r.revision = d and d.revision
        r.error = not d and tostring(err) or nil
      else
        r.deployed = false
      end
    end
  end
  return 200, { services = mcp.json.array(results) }
end, { body = "json", summary = "Sends a set of definitions; deploys those that changed." })

api.route("GET", "/v1/ps", function()
  local rows, err, code = ops.ps()
  if not rows then return op_error(err, code) end
  return 200, { containers = rows }
end, { summary = "Every managed container." })

api.route("GET", "/v1/services/{name}/logs", function(req)
  local name = service_name(req)
  local tail = query_int(req, "tail", 100, 0, 1000000)
  local follow = query_flag(req, "follow")
  local cs, err = deploy.containers(name)
  if not cs then return fail(503, "unavailable", "%s", tostring(err)) end
  if #cs == 0 then return fail(404, "not_found", "service %q has no container", name) end
  local out = api.ndjson(req, 200)
  if not out then return nil end
  if not follow then
    for _, c in ipairs(cs) do
      local lines = mcp.podman.logs(c.name, { tail = tail }) or {}
      for _, l in ipairs(lines) do
        out:send({ container = c.name, stream = l.stream, line = l.line })
      end
    end
    out:close()
    return nil
  end
  local open = 0
  for _, c in ipairs(cs) do
    local s = mcp.podman.logs(c.name, { tail = tail, follow = true })
    if s then
      open = open + 1
      mcp.spawn({ name = "logs:" .. c.name }, function()
        while true do
          local l = s:read()
          if not l or not out:send({ container = c.name, stream = l.stream, line = l.line }) then
            break
          end
        end
        s:close()
        open = open - 1
      end)
    end
  end
  while open > 0 and out:alive() do mcp.sleep(0.5) end
  out:close()
  return nil
end, { summary = "A service's logs as NDJSON {container, stream, line}; follow=1 streams." })

api.route("GET", "/v1/events", function(req)
  local q = req.query
  local limit = query_int(req, "limit", 100, 1, 10000)
  local since = query_int(req, "since", 0, 0, 2 ^ 53)
  local service = q.service
  if service and not definition.valid_name(service) then
    return fail(400, "invalid_name", "%q is not a service name", service)
  end
  local follow = query_flag(req, "follow")
  local evs = registry.events(db(), { service = service, since_id = since > 0 and since or nil,
    limit = limit })
  if not follow and not api.wants_stream(req) then
    return 200, { events = mcp.json.array(evs) }
  end
  local out = api.ndjson(req, 200)
  if not out then return nil end
  local last = since
  for _, e in ipairs(evs) do
    out:send(e)
    last = math.max(last, e.id)
  end
  if not follow then out:close() return nil end
  -- Followers read the registry: events survive reloads and restarts, and
  -- nothing about a follower lives in the agent's memory.
  while out:alive() do
    mcp.sleep(0.25)
    for _, e in ipairs(registry.events(db(), { service = service, since_id = last,
        limit = 1000 })) do
      if not out:send(e) then break end
      last = math.max(last, e.id)
    end
  end
  out:close()
  return nil
end, { summary = "The event log; follow=1 streams new events as NDJSON." })

local function files_root(name)
  local g = gen()
  if not g.definitions[name] and not registry.service_get(db(), name) then
    raise(404, "not_found", "no service %q on this node", name)
  end
  return "/srv/" .. name
end

api.route("GET", "/v1/services/{name}/files/{path...}", function(req)
  local name = service_name(req)
  local root = files_root(name)
  local data, err = mcp.fs.read(root, req.params.path,
    { max = mcp.config.api.max_body * 16 })
  if not data then
    local e = tostring(err):lower()
    local missing = e:find("no such file", 1, true) or e:find("not found", 1, true)
    return fail(missing and 404 or 400, missing and "not_found" or "bad_path", "%s",
      tostring(err))
  end
  return 200, data, { ["Content-Type"] = "application/octet-stream" }
end, { summary = "Pulls a file from inside /srv/NAME." })

api.route("PUT", "/v1/services/{name}/files/{path...}", function(req)
  local name = service_name(req)
  local root = files_root(name)
  local ok, err = mcp.fs.write(root, req.params.path, req.body, { mkdir = true })
  if not ok then return fail(400, "bad_path", "%s", tostring(err)) end
  return 200, { service = name, path = printable(req.params.path), bytes = #req.body }
end, { summary = "Pushes a file into /srv/NAME." })

api.route("POST", "/v1/reload", function()
  local r, err = require("mcp.agent").reload("POST /v1/reload")
  if not r then
    return fail(422, "reload_failed", "the running generation stays: %s", tostring(err))
  end
  return 200, r
end, { summary = "Reloads the library, policies and definitions." })

local function render_lines(def)
  local ports = {}
  for _, comp in ipairs(def.components) do
    ports[comp.name] = {}
    for _, r in ipairs(comp.routes) do ports[comp.name][r.key] = 0 end
  end
  local rev = "r0"
  if db() then
    for _, p in ipairs(registry.port_list(db(), def.name)) do
      if ports[p.component] then ports[p.component][p.route] = p.port end
    end
    local cur = registry.revision_current(db(), def.name)
    if cur then
      rev = cur.id
      for comp, routes_of in pairs(cur.spec.ports or {}) do
        for key, port in pairs(routes_of) do
          if ports[comp] then ports[comp][key] = port end
        end
      end
    end
  end
  return definition.render(def, { ports = ports, revision = rev })
end
services.render_lines = render_lines

api.route("GET", "/v1/services/{name}/render", function(req)
  local name = service_name(req)
  local def = gen().definitions[name]
  local svc = not def and registry.service_get(db(), name)
  def = def or (svc and svc.definition)
  if not def then return fail(404, "not_found", "no service %q on this node", name) end
  return 200, { service = name, lines = mcp.json.array(render_lines(def)) }
end, { summary = "The podman run lines the definition means." })

api.route("POST", "/v1/render", function(req)
  local ct = (req.headers["content-type"] or "application/json"):lower():match("^%s*([^;%s]+)")
  local format = FORMATS[ct]
  if not format then
    return fail(415, "unsupported_media_type", "expected application/json, "
      .. "application/toml or text/x-lua; got %s", ct)
  end
  local def, errs = parse_definition(req.body, format, "POST /v1/render")
  if not def then return invalid(errs) end
  return 200, { service = def.name, lines = mcp.json.array(render_lines(def)) }
end, { summary = "The podman run lines a definition sent in the body means." })

api.status_field("podman", function()
  local ok = mcp.podman.ping()
  mcp.state.podman_ok = ok and true or false
  return { reachable = ok and true or false, socket = mcp.config.podman.socket }
end)

api.status_field("reload", function()
  local g = mcp.state.gen
  return { generation = g and g.id, files = g and g.files, took_ms = g and g.took_ms,
    at = g and g.at, error = mcp.state.reload_error and mcp.state.reload_error.message }
end)

return services
