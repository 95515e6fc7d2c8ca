-- tests/integration/crash_spec.lua: the agent killed with SIGKILL at random
-- moments while it deploys, redeploys, stops, starts and undeploys, then
-- started again on the same data.
--
-- Each trial draws from its own seed (printed) a short stream of operations
-- on three services (recreate, rolling, and two components), sends them in
-- the background, kills the agent after a random delay, and starts it again.
-- Once it has settled:
--   * the registry as the kill left it passes PRAGMA integrity_check and the
--     foreign key check (a copy, opened before the agent runs again);
--   * every active service has exactly its containers: one per component,
--     named <service>-<component>, of its current revision, running, on the
--     ports its revision records; a stopped one has none running;
--   * no managed container is left over: none of an unknown service, of
--     another revision, with a revision suffix, or twice for one component;
--   * no host port is recorded twice, and no two containers publish one;
--   * no revision is left "deploying";
--   * every operation that answered success is reflected (the one in flight
--     when the agent died may have happened or not; nothing else may).
-- To replay: MCP_CRASH_SEED=<seed printed> MCP_CRASH_TRIALS=1.
local mcp = require("mcp.core")
local podman_env = require("tests.env.podman_env")
local agent_env = require("tests.env.agent_env")
local json = mcp.json
local run, q = agent_env.run, agent_env.quote

local TRIALS = tonumber(os.getenv("MCP_CRASH_TRIALS") or "") or 30
local SEED = tonumber(os.getenv("MCP_CRASH_SEED") or "") or (os.time() % 100000) * 100
local SETTLE = 25          -- seconds a restarted agent gets to converge

local SERVICES = {
  { name = "crash-a", policy = "recreate", comps = { "web" } },
  { name = "crash-b", policy = "rolling", comps = { "web" } },
  { name = "crash-c", policy = "recreate", comps = { "web", "api" } },
}
local BY_NAME = {}
for _, s in ipairs(SERVICES) do BY_NAME[s.name] = s end

local function definition(svc, image)
  local out = { ('name = "%s"\nnode = "test"\npolicy = "%s"\n'):format(svc.name, svc.policy) }
  for _, comp in ipairs(svc.comps) do
    out[#out + 1] = ([==[
[[components]]
name = "%s"
image = "%s"
cmd = ["httpd", "-f", "-p", "8080", "-h", "/www"]
stop_timeout = "1s"
[[components.routes]]
port = 8080
[components.health]
kind = "http"
interval = "1s"
timeout = "0.5s"
]==]):format(comp, image)
  end
  return table.concat(out)
end

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
local function integrity(data_dir)
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

local function containers(env)
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
local function observe(agent, env)
  local db = agent.data_dir .. "/mcp.db"
  local svcs, err = sql(db, "SELECT name, active, current_revision FROM services")
  if not svcs then return nil, err end
  local revs = sql(db, "SELECT service, id, status, spec FROM revisions") or {}
  local ports = sql(db, "SELECT port, service, component, route FROM ports") or {}
  local cs, cerr = containers(env)
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

-- The state of one service as a model: "absent", "stopped" or "running",
-- with the image and revision a running one has.
local function actual_state(w, name)
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

local function problems_of(w, allowed)
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
    local st = actual_state(w, name)
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

----------------------------------------------------------------------------
-- Operations, sent by a background shell script so that the agent can be
-- killed in the middle of one.

local function random_ops(rand)
  local ops = {}
  for _ = 1, rand(1, 3) do
    local svc = SERVICES[rand(1, #SERVICES)]
    local r = rand(1, 10)
    ops[#ops + 1] = { kind = r <= 5 and "deploy" or r <= 7 and "stop" or r <= 8 and "start"
      or "undeploy", svc = svc.name, image = rand(1, 2) == 1 and podman_env.image1
      or podman_env.image2 }
  end
  return ops
end

-- The requests of an operation: method, path, body file, content type.
local function requests(agent, op, dir, i)
  local path = "/v1/services/" .. op.svc
  if op.kind == "deploy" then
    local f = ("%s/def%d.toml"):format(dir, i)
    agent_env.write_file(f, definition(BY_NAME[op.svc], op.image))
    return { { "PUT", path, f, "application/toml" }, { "POST", path .. "/deploy" } }
  elseif op.kind == "undeploy" then
    return { { "DELETE", path } }
  end
  return { { "POST", path .. "/" .. op.kind } }
end

-- Writes and starts the script; returns the directory where each request
-- leaves its body (N.out), HTTP status (N.code) and curl's exit (N.rc).
local function send(agent, ops)
  local dir = run("mktemp -d /tmp/mcp-crash-ops.XXXXXX")
  local lines = { "#!/bin/sh" }
  local n = 0
  for i, op in ipairs(ops) do
    op.reqs = {}
    for _, r in ipairs(requests(agent, op, dir, i)) do
      n = n + 1
      op.reqs[#op.reqs + 1] = n
      local args = { "curl -s -o " .. q(dir .. "/" .. n .. ".out"), "-w '%{http_code}'",
        "--max-time 60", "-X", r[1], "-H", q("Authorization: Bearer " .. agent.token) }
      if r[3] then
        args[#args + 1] = "-H " .. q("Content-Type: " .. r[4])
        args[#args + 1] = "--data-binary @" .. q(r[3])
      end
      args[#args + 1] = q(agent.url .. r[2])
      lines[#lines + 1] = table.concat(args, " ") .. " >" .. q(dir .. "/" .. n .. ".code")
        .. "; echo $? >" .. q(dir .. "/" .. n .. ".rc")
    end
  end
  lines[#lines + 1] = "touch " .. q(dir .. "/done")
  agent_env.write_file(dir .. "/ops.sh", table.concat(lines, "\n") .. "\n")
  run("sh " .. q(dir .. "/ops.sh") .. " >/dev/null 2>&1 &")
  return dir
end

-- What each request got: "ok" (2xx), "refused" (never reached the agent),
-- "failed" (an answer that is not 2xx) or "lost" (sent, no answer: in flight
-- when the agent died).
local function outcome(dir, n)
  local rc = tonumber(agent_env.read_file(dir .. "/" .. n .. ".rc") or "")
  local code = tonumber(agent_env.read_file(dir .. "/" .. n .. ".code") or "") or 0
  if rc == 7 then return "refused" end
  if rc == 0 and code >= 200 and code < 300 then
    return "ok", json.decode(agent_env.read_file(dir .. "/" .. n .. ".out") or "")
  end
  if rc == 0 and code > 0 then return "failed" end
  return "lost"
end

-- The model: a service's state after an operation.
local function after(op, st, body)
  if op.kind == "deploy" then
    return { status = "running", image = op.image,
      revision = body and body.revision or nil, newer_than = not body and st.revision or nil }
  elseif op.kind == "stop" then
    if st.status == "absent" then return st end
    return { status = "stopped", image = st.image, revision = st.revision }
  elseif op.kind == "start" then
    if st.status == "absent" then return st end
    return { status = "running", image = st.image, revision = st.revision }
  end
  return { status = "absent" }
end

-- Folds the outcomes into the model; returns, per service, the states it
-- may be in now.
local function account(model, ops, dir)
  local allowed = {}
  for name, st in pairs(model) do allowed[name] = { st } end
  local log = {}
  for _, op in ipairs(ops) do
    local results, body = {}, nil
    for _, n in ipairs(op.reqs) do
      local o, b = outcome(dir, n)
      results[#results + 1] = o
      body = b
    end
    local last = results[#results]
    log[#log + 1] = op.kind .. " " .. op.svc .. (op.kind == "deploy" and (" " .. op.image) or "")
      .. ": " .. table.concat(results, "+")
    local st = model[op.svc]
    if last == "ok" then
      model[op.svc] = after(op, st, body)
      allowed[op.svc] = { model[op.svc] }
    elseif last == "lost" then
      -- In flight when the agent died: it happened, or it did not. (Every
      -- request after it was refused.)
      allowed[op.svc] = { st, after(op, st, nil) }
    end
    -- "refused" and "failed" changed nothing (a deploy whose PUT was lost
    -- never sent its POST).
  end
  return allowed, log
end

----------------------------------------------------------------------------

local function sleep(s) os.execute(("sleep %.3f"):format(s)) end

-- SIGKILL, then wait until the process is gone (or a zombie nobody reaps).
local function kill9(agent)
  run(("kill -KILL %d 2>/dev/null; for i in $(seq 500); do [ -e /proc/%d ] || break; "
    .. "grep -q '^State:.*Z' /proc/%d/status 2>/dev/null && break; sleep 0.01; done"):format(
    agent.pid, agent.pid, agent.pid))
end

-- How long the operations may take, to draw the moment of the kill from.
local function duration_of(ops)
  local t = 0.1
  for _, op in ipairs(ops) do
    if op.kind == "deploy" then
      t = t + (BY_NAME[op.svc].policy == "rolling" and 2.6 or 0.5)
    else
      t = t + 0.25
    end
  end
  return t
end

describe("an agent killed with SIGKILL", function()
  local env, agent
  local model = {}
  local failures = 0

  setup(function()
    env = podman_env.start()
    agent = agent_env.start({ podman = env, log_level = "info",
      agent_config = 'stop_timeout = "3s"',
      config = '[monitor]\nrelist_interval = "1s"\nrestart_first = "0.2s"\n'
        .. 'restart_cap = "1s"\nflap_max = 1000\n' })
    for _, s in ipairs(SERVICES) do model[s.name] = { status = "absent" } end
    print(("crash: %d trials, seeds %d..%d (MCP_CRASH_SEED=S MCP_CRASH_TRIALS=1 replays one)")
      :format(TRIALS, SEED, SEED + TRIALS - 1))
  end)

  teardown(function()
    if agent then agent:stop() end
    if env then env:stop() end
  end)

  for trial = 1, TRIALS do
    local seed = SEED + trial - 1
    it(("converges after a kill in the middle of operations (trial %d, seed %d)"):format(
        trial, seed), function()
      math.randomseed(seed)
      local rand = math.random
      local ops = random_ops(rand)
      local delay = rand() * duration_of(ops)
      local dir = send(agent, ops)
      sleep(delay)
      kill9(agent)
      agent_env.wait_for(function()
        return agent_env.read_file(dir .. "/done") ~= nil
      end, 70, "the operations to end")
      local allowed, log = account(model, ops, dir)
      run("rm -rf " .. q(dir))
      print(("crash trial %d seed %d: killed after %.2fs: %s"):format(trial, seed, delay,
        table.concat(log, "; ")))

      local ok, ierr = integrity(agent.data_dir)
      assert(ok, ierr)
      agent:start()

      local deadline = agent_env.now() + SETTLE
      local problems, w
      repeat
        local err
        w, err = observe(agent, env)
        problems = w and problems_of(w, allowed) or { "cannot observe: " .. tostring(err) }
        if #problems == 0 then break end
        sleep(0.3)
      until agent_env.now() > deadline
      if #problems > 0 then
        failures = failures + 1
        local text = ("seed %d: not settled after %ds:\n  %s\n-- agent log:\n%s"):format(seed,
          SETTLE, table.concat(problems, "\n  "), (run("tail -n 30 " .. q(agent.log))))
        -- Start the next trial from a clean agent rather than from this mess.
        agent:stop()
        env:podman("rm -af -t 0")
        agent = agent_env.start({ podman = env, log_level = "info",
          agent_config = 'stop_timeout = "3s"',
          config = '[monitor]\nrelist_interval = "1s"\nrestart_first = "0.2s"\n'
            .. 'restart_cap = "1s"\nflap_max = 1000\n' })
        for _, s in ipairs(SERVICES) do model[s.name] = { status = "absent" } end
        error(text, 0)
      end
      -- What is seen becomes the model for the next trial.
      for _, s in ipairs(SERVICES) do model[s.name] = actual_state(w, s.name) end
    end)
  end
end)
