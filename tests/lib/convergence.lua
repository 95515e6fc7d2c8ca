-- tests/lib/convergence.lua: what a service and the registry look like once
-- the agent has settled, for the specs that kill or stop the agent in the
-- middle of its work (tests/integration/crash_spec.lua, sigterm_spec.lua).
--
--   local conv = require("tests.lib.convergence")
--   local w = conv.observe(agent, env)          -- registry (sqlite3) + Podman
--   local problems = conv.problems(w, allowed)  -- {} when everything holds
--
-- observe reads the registry file with the sqlite3 CLI (read-only, beside
-- the running agent: WAL allows it) and the managed containers with podman.
-- problems checks what must hold whatever happened (listed at
-- convergence.problems) and, for each service in allowed, that it is in one
-- of the states listed: { {status = "absent"|"stopped"|"running", image =,
-- revision =, newer_than = "rN"}, ... }.
local mcp = require("mcp.core")
local agent_env = require("tests.env.agent_env")
local json = mcp.json
local run, q = agent_env.run, agent_env.quote

local convergence = {}

----------------------------------------------------------------------------
-- Looking at the world: the registry (sqlite3 on the file) and Podman.

local function sql(db, query)
  local out, rc, err = run(("sqlite3 -readonly -json %s %s"):format(q(db), q(query)))
  if rc ~= 0 then return nil, err end
  if out == "" then return {} end
  local rows = json.decode(out) or {}
  for _, r in ipairs(rows) do        -- SQL NULL: absent, not json.null
    for k, v in pairs(r) do if type(v) == "userdata" then r[k] = nil end end
  end
  return rows
end

-- The registry file as the kill left it, checked on a copy (the WAL with
-- it), so the check sees what the next open recovers and disturbs nothing.
function convergence.integrity(data_dir)
  local tmp = run("mktemp -d /tmp/mcp-crash-db.XXXXXX")
  run(("cp %s/mcp.db %s/ && { cp %s/mcp.db-wal %s/ 2>/dev/null; true; }"):format(
    q(data_dir), q(tmp), q(data_dir), q(tmp)))
  local out, rc, err = run(("sqlite3 %s/mcp.db 'PRAGMA integrity_check; "
    .. "PRAGMA foreign_key_check;'"):format(q(tmp)))
  run("rm -rf " .. q(tmp))
  if rc ~= 0 then return nil, "sqlite3: " .. err end
  if out ~= "ok" then return nil, "integrity: " .. out end
  return true
end

function convergence.containers(env)
  local out, rc, err = env:podman({ "ps", "-a", "--format", "json",
    "--filter", "label=mcp.managed=true" })
  if rc ~= 0 then return nil, err end
  local list = json.decode(out) or {}
  local cs = {}
  for _, c in ipairs(list) do
    local l = c.Labels or {}
    local ports = {}
    for _, p in ipairs(c.Ports or {}) do ports[#ports + 1] = p.host_port end
    table.sort(ports)
    cs[#cs + 1] = { name = (c.Names or {})[1], service = l["mcp.service"],
      component = l["mcp.component"], revision = l["mcp.revision"], image = c.Image,
      running = c.State == "running", state = c.State, ports = ports }
  end
  return cs
end

-- What the registry and Podman say now.
function convergence.observe(agent, env)
  local db = agent.data_dir .. "/mcp.db"
  local svcs, err = sql(db, "SELECT name, active, current_revision FROM services")
  if not svcs then return nil, err end
  local revs = sql(db, "SELECT service, id, status, spec FROM revisions") or {}
  local ports = sql(db, "SELECT port, service, component, route FROM ports") or {}
  local cs, cerr = convergence.containers(env)
  if not cs then return nil, cerr end
  local w = { services = {}, revisions = {}, ports = ports, containers = cs }
  for _, s in ipairs(svcs) do w.services[s.name] = s end
  for _, r in ipairs(revs) do
    r.spec = json.decode(r.spec)
    w.revisions[r.service .. "/" .. r.id] = r
  end
  return w
end

----------------------------------------------------------------------------
-- What must hold once the agent has settled. Returns a list of problems.
--   * every active service has exactly its containers: one per component,
--     named <service>-<component>, of its current revision, running, on the
--     ports its revision records; a stopped one has none running;
--   * no managed container is left over: none of a service without a current
--     revision, of another revision, without its canonical name (a revision
--     suffix), or twice for one component;
--   * no host port is recorded twice or for an unknown service, and no two
--     containers publish one;
--   * no revision is left "deploying".

-- The state of one service as a model: "absent", "stopped" or "running",
-- with the image and revision a running one has.
function convergence.state(w, name)
  local s = w.services[name]
  if not s or s.current_revision == nil then return { status = "absent" } end
  local rev = w.revisions[name .. "/" .. s.current_revision]
  local image = rev and rev.spec and rev.spec.definition
    and rev.spec.definition.components[1].image
  return { status = s.active == 1 and "running" or "stopped", image = image,
    revision = s.current_revision }
end

local function seq(rev) return tonumber(tostring(rev or ""):match("^r(%d+)$")) or 0 end

local function matches(st, want)
  if st.status ~= want.status then return false end
  if want.status == "absent" then return true end
  if want.image and st.image ~= want.image then return false end
  if want.revision and st.revision ~= want.revision then return false end
  if want.newer_than and seq(st.revision) <= seq(want.newer_than) then return false end
  return true
end

local function show(st)
  return st.status .. (st.image and (" " .. st.image) or "")
    .. (st.revision and (" " .. st.revision) or "")
    .. (st.newer_than and (" newer than " .. st.newer_than) or "")
end

function convergence.problems(w, allowed)
  local p = {}
  local function add(fmt, ...) p[#p + 1] = string.format(fmt, ...) end
  local seen = {}
  local host_ports = {}
  for _, c in ipairs(w.containers) do
    local svc = c.service and w.services[c.service]
    local key = tostring(c.service) .. "/" .. tostring(c.component)
    if seen[key] then add("%s and %s are both %s", seen[key], c.name, key) end
    seen[key] = c.name
    if not svc or not svc.current_revision then
      add("%s (%s, %s) is orphaned: its service is not deployed", c.name, c.state,
        tostring(c.revision))
    else
      if c.revision ~= svc.current_revision then
        add("%s is of revision %s, the current one is %s", c.name, tostring(c.revision),
          svc.current_revision)
      end
      if c.name ~= c.service .. "-" .. tostring(c.component) then
        add("%s does not have its canonical name %s-%s", c.name, c.service,
          tostring(c.component))
      end
      if svc.active == 0 and c.running then add("%s runs, but %s is stopped", c.name, c.service) end
    end
    for _, port in ipairs(c.ports) do
      if host_ports[port] then add("host port %d is published by %s and %s", port,
        host_ports[port], c.name) end
      host_ports[port] = c.name
    end
  end
  local recorded = {}
  for _, r in ipairs(w.ports) do
    if recorded[r.port] then add("port %d is recorded twice", r.port) end
    recorded[r.port] = r
    if not w.services[r.service] then add("port %d is recorded for unknown service %s",
      r.port, r.service) end
  end
  for id, r in pairs(w.revisions) do
    if r.status == "deploying" then add("revision %s is still deploying", id) end
  end
  for name, s in pairs(w.services) do
    local rev = s.current_revision and w.revisions[name .. "/" .. s.current_revision]
    if s.current_revision and not rev then
      add("%s: current revision %s is not in the registry", name, s.current_revision)
    end
    if rev and s.active == 1 then
      for _, comp in ipairs(rev.spec.definition.components) do
        local cname = name .. "-" .. comp.name
        local c
        for _, x in ipairs(w.containers) do if x.name == cname then c = x end end
        if not c then
          add("%s is active but %s does not exist", name, cname)
        else
          if not c.running then add("%s is active but %s is %s", name, cname, c.state) end
          local want = (rev.spec.ports or {})[comp.name] or {}
          for route, port in pairs(want) do
            local found = false
            for _, hp in ipairs(c.ports) do if hp == port then found = true end end
            if not found then add("%s: route %s should publish %d, publishes %s", cname, route,
              port, table.concat(c.ports, ",")) end
            if not recorded[port] or recorded[port].service ~= name then
              add("%s: port %d of its revision is not recorded for it", cname, port)
            end
          end
        end
      end
    end
  end
  for name, wants in pairs(allowed) do
    local st = convergence.state(w, name)
    local ok = false
    for _, want in ipairs(wants) do if matches(st, want) then ok = true end end
    if not ok then
      local shown = {}
      for _, want in ipairs(wants) do shown[#shown + 1] = show(want) end
      add("%s is %s; after the operations that answered it must be %s", name, show(st),
        table.concat(shown, " or "))
    end
  end
  table.sort(p)
  return p
end

-- SIGKILL, then waits until the process is gone (or a zombie nobody reaps).
function convergence.kill9(pid)
  run(("kill -KILL %d 2>/dev/null; for i in $(seq 500); do [ -e /proc/%d ] || break; "
    .. "grep -q '^State:.*Z' /proc/%d/status 2>/dev/null && break; sleep 0.01; done"):format(
    pid, pid, pid))
end

-- Polls until problems(observe()) is empty or timeout seconds pass. Returns
-- the world seen last and the problems left (empty: settled).
function convergence.settle(agent, env, allowed, timeout)
  local deadline = agent_env.now() + timeout
  local w, problems
  repeat
    local err
    w, err = convergence.observe(agent, env)
    problems = w and convergence.problems(w, allowed) or { "cannot observe: " .. tostring(err) }
    if #problems == 0 then break end
    os.execute("sleep 0.3")
  until agent_env.now() > deadline
  return w, problems
end

return convergence
