-- mcp.commands: `mcp-agent` subcommands written in Lua. Each returns the
-- process exit code.
local mcp = require("mcp.core")

local commands = {}

-- `mcp-agent check-config`: the config (already loaded by C), then every
-- policy, route provider and service definition, loaded exactly as the
-- server's reload would. Every problem is printed; exit 1 if any.
function commands.check_config()
  local gen, errors = require("mcp.reload").build()
  if not gen then
    for _, e in ipairs(errors) do io.stderr:write(e, "\n") end
    io.stderr:write(string.format("%s: %d problem%s\n", mcp.config.path, #errors,
      #errors == 1 and "" or "s"))
    return 1
  end
  local ndefs, npol = 0, 0
  for _ in pairs(gen.definitions) do ndefs = ndefs + 1 end
  for _ in pairs(gen.policies) do npol = npol + 1 end
  print(string.format("%s: ok (%d service definition%s, %d polic%s, %d files)",
    mcp.config.path, ndefs, ndefs == 1 and "" or "s", npol, npol == 1 and "y" or "ies",
    gen.files))
  return 0
end

-- `mcp-agent render SERVICE`: the `podman run` lines of SERVICE on stdout,
-- notes on stderr. A deployed service is rendered as the registry records
-- it (the current revision's definition, host ports and revision label): what
-- brings it back by hand. A service never deployed is rendered from its
-- definition, on the ports a deploy would pick now (not recorded).
function commands.render(service)
  local definition = require("mcp.definition")
  local registry = require("mcp.registry")
  local function note(fmt, ...) io.stderr:write("# ", string.format(fmt, ...), "\n") end
  local gen, errors = require("mcp.reload").build()
  if not gen then
    for _, e in ipairs(errors) do io.stderr:write(e, "\n") end
    io.stderr:write("mcp-agent render: the definitions do not load; fix them first\n")
    return 1
  end
  local live = gen.definitions[service]
  local path = mcp.config.agent.data_dir .. "/" .. registry.FILE
  local db
  local f = io.open(path, "rb")
  if f then
    f:close()
    local err
    db, err = registry.open(path)
    if not db then
      io.stderr:write("mcp-agent render: ", tostring(err), "\n")
      return 1
    end
  end
  local rev = db and registry.revision_current(db, service)
  local def, ports, revision
  if rev and rev.spec and rev.spec.definition then
    def, ports, revision = rev.spec.definition, rev.spec.ports or {}, rev.id
    note("%s: revision %s (%s) as the registry records it", service, rev.id, rev.status)
    local planner = require("mcp.planner")
    if live and planner.spec_hash(live) ~= planner.spec_hash(def) then
      note("%s has changed since %s was deployed: these lines are what was deployed",
        gen.sources[service] or service, rev.id)
    end
  elseif live then
    def, ports, revision = live, {}, "r0"
    local taken = {}
    for _, p in ipairs(db and registry.port_list(db) or {}) do taken[p.port] = p end
    local next_port = registry.PORT_MIN
    for _, comp in ipairs(def.components) do
      ports[comp.name] = {}
      for _, r in ipairs(comp.routes) do
        local port
        for _, p in pairs(taken) do
          if p.service == service and p.component == comp.name and p.route == r.key then
            port = p.port
          end
        end
        while not port and next_port <= registry.PORT_MAX do
          if not taken[next_port] and mcp.net.port_free(next_port) == true then
            port = next_port
          end
          next_port = next_port + 1
        end
        ports[comp.name][r.key] = port
        taken[port or 0] = { port = port }
      end
    end
    note("%s is not deployed: host ports picked now, not recorded", service)
  else
    io.stderr:write(string.format("mcp-agent render: no service %q: no definition in %s and "
      .. "nothing deployed in %s\n", service, tostring(mcp.config.agent.services_dir), path))
    if db then db:close() end
    return 1
  end
  if db then db:close() end
  for _, line in ipairs(definition.render(def, { ports = ports, revision = revision })) do
    print(line)
  end
  return 0
end

-- `mcp-agent token create|list|revoke [--name NAME]`: the API's bearer
-- tokens, straight in the registry (SQLite lets this run beside the agent).
function commands.token(action, name)
  local registry = require("mcp.registry")
  local function fail(msg)
    io.stderr:write("mcp-agent token: ", msg, "\n")
    return 1
  end
  if (action == "create" or action == "revoke") and not name then
    return fail(action .. " needs --name NAME")
  elseif action == "list" and name then
    return fail("list takes no --name")
  end
  local path = mcp.config.agent.data_dir .. "/" .. registry.FILE
  local existed = io.open(path, "r")
  if existed then existed:close() end
  local db, err = registry.open(path)
  if not db then return fail(err) end
  if not existed then io.stderr:write("mcp-agent token: created the registry ", path, "\n") end
  local function when(t)
    return t and os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t)) or "never"
  end
  local rc = 0
  if action == "create" then
    local token
    token, err = registry.token_create(db, name)
    if token then
      print(token)
      io.stderr:write(string.format("mcp-agent token: created %q; the token above is shown "
        .. "only this once\n", name))
    else
      rc = fail((err:gsub("^token_%w+: ", "")))
    end
  elseif action == "list" then
    local rows = { { "NAME", "CREATED", "LAST_USED" } }
    for _, t in ipairs(registry.token_list(db)) do
      rows[#rows + 1] = { t.name, when(t.created), when(t.last_used) }
    end
    local width = 4
    for _, r in ipairs(rows) do width = math.max(width, #r[1]) end
    for _, r in ipairs(rows) do
      print(string.format("%-" .. width .. "s  %-20s  %s", r[1], r[2], r[3]))
    end
  else
    local ok
    ok, err = registry.token_revoke(db, name)
    if ok then
      print(string.format("revoked token %q: requests bearing it are refused from now on",
        name))
    else
      rc = fail((err:gsub("^token_%w+: ", "")))
    end
  end
  db:close()
  return rc
end

-- `mcp-agent doctor`: one line per check of the host, ok or what to fix
-- (mcp.doctor). Exit 0 only when every check passed.
function commands.doctor()
  return require("mcp.doctor").run(mcp.config)
end

return commands
