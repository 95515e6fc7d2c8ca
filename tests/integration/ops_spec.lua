-- tests/integration/ops_spec.lua: what an operator does to deployed services
-- besides deploying them (stop, start, restart, undeploy, adopt, purge,
-- recover), each checked against what the real Podman reports.
local podman_env = require("tests.env.podman_env")
local agent_env = require("tests.env.agent_env")
local mcp = require("mcp.core")

local run, q, read_file, write_file = agent_env.run, agent_env.quote, agent_env.read_file,
  agent_env.write_file

local function http_get(url)
  local out = run(("curl -s --max-time 5 -w '\\n%%{http_code}' %s"):format(q(url)))
  local body, code = out:match("^(.*)\n(%d+)$")
  return tonumber(code) or 0, body or out
end

-- A one-component web service serving /www on 8080. opts: depends_on (a
-- list), restart.
local function web(name, opts)
  opts = opts or {}
  local deps = {}
  for i, d in ipairs(opts.depends_on or {}) do deps[i] = ('"%s"'):format(d) end
  return table.concat({
    ('name = "%s"'):format(name),
    'node = "test"',
    ("depends_on = [%s]"):format(table.concat(deps, ", ")),
    "[[components]]",
    'name = "web"',
    ('image = "%s"'):format(podman_env.image1),
    'cmd = ["httpd", "-f", "-p", "8080", "-h", "/www"]',
    opts.restart and ('restart = "%s"'):format(opts.restart) or "",
    "[[components.routes]]",
    "port = 8080",
    "[components.health]",
    'kind = "http"',
    'interval = "2s"',
  }, "\n") .. "\n"
end

describe("operating deployed services", function()
  local env, agent
  local made_srv = {}
  local SERVICES = { "ops", "hand", "kept", "gone", "a", "b", "c" }

  local function api(method, path, json)
    return agent:api(method, path, json and { json = json } or nil)
  end

  local function deploy(name)
    local status, body = api("POST", "/v1/services/" .. name .. "/deploy")
    assert.equal(200, status, mcp.json.encode(body) .. "\n" .. agent:log_tail())
    return body
  end

  local function inspect(name)
    local out, rc = env:podman({ "inspect", name })
    if rc ~= 0 then return nil end
    return mcp.json.decode(out)[1]
  end

  -- "NAME STATE REVISION" of every container Podman has whose name starts
  -- with the service's.
  local function containers(service)
    local out = env:podman({ "ps", "-a", "--format", "json" })
    local list = {}
    for _, c in ipairs(mcp.json.decode(out) or {}) do
      local name = c.Names[1]
      if name:sub(1, #service + 1) == service .. "-" then
        list[#list + 1] = ("%s %s %s"):format(name, c.State,
          (c.Labels or {})["mcp.revision"] or "-")
      end
    end
    table.sort(list)
    return list
  end

  -- The registry, read inside the running agent through its console.
  local function registry_eval(expr)
    local out, rc = agent:eval('(function() local registry = require("mcp.registry") '
      .. 'local db = mcp.state.db return mcp.json.encode(' .. expr .. ') end)()')
    assert.equal(0, rc, out)
    local v = mcp.json.decode((out:gsub('^"', ""):gsub('"$', ""):gsub('\\"', '"')))
    if v == mcp.json.null then return nil end
    return v
  end

  local function port_of(service)
    local rows = registry_eval(('registry.port_list(db, "%s")'):format(service))
    return rows[1] and rows[1].port
  end

  setup(function()
    for _, s in ipairs(SERVICES) do
      if os.execute("test -e /srv/" .. s) ~= 0 then made_srv[#made_srv + 1] = "/srv/" .. s end
    end
    env = podman_env.start()
    agent = agent_env.start({ podman = env, node = "test",
      services = {
        ops = web("ops"),
        kept = web("kept"),
        gone = web("gone", { restart = "no" }),
        -- a needs b, b needs c. restart = "no": the monitor must not bring
        -- them back by itself before the test asks for a recovery.
        a = web("a", { depends_on = { "b" }, restart = "no" }),
        b = web("b", { depends_on = { "c" }, restart = "no" }),
        c = web("c", { restart = "no" }),
      },
      -- The monitor looks often: an operation it would undo gets undone
      -- within the test.
      config = '[monitor]\nrelist_interval = "1s"' })
  end)

  teardown(function()
    for _, d in ipairs(made_srv) do os.execute("rm -rf " .. q(d)) end
    if agent then pcall(agent.stop, agent) end
    if env then env:stop() end
  end)

  describe("stop, start and restart", function()
    local port, id

    setup(function()
      local body = deploy("ops")
      port = body.containers[1].ports.default
      id = inspect("ops-web").Id
    end)

    it("stops a service: its container exits, the registry says inactive, and the monitor "
      .. "leaves it stopped", function()
      local out, rc = agent:cli("stop ops")
      assert.equal(0, rc, out)
      local info = inspect("ops-web")
      assert.is_false(info.State.Running)
      assert.equal("exited", info.State.Status)
      assert.equal(0, (http_get("http://127.0.0.1:" .. port .. "/")))
      local _, s = api("GET", "/v1/services/ops")
      assert.is_false(s.active)
      os.execute("sleep 3")                  -- three re-lists of the monitor
      assert.is_false(inspect("ops-web").State.Running)
    end)

    it("starts it again: the same container, on the same port, serving", function()
      local status, body = api("POST", "/v1/services/ops/start")
      assert.equal(200, status, mcp.json.encode(body) .. "\n" .. agent:log_tail(60))
      local info = inspect("ops-web")
      assert.is_true(info.State.Running)
      if info.Id ~= id then
        -- Only when another program took the port while ops was stopped
        -- (other agents' tests on this host pick ports from 10000 up): then
        -- it is recreated on a new port, and says so.
        local _, evs = api("GET", "/v1/events?service=ops&limit=100")
        local changed
        for _, e in ipairs(evs.events) do
          if e.kind == "ports_changed" then changed = e end
        end
        assert.is_table(changed, "a new container, but no ports_changed event")
        local new_port = port_of("ops")
        io.stderr:write(("\n# start: port %d was taken meanwhile; ops moved to %d\n"):format(
          port, new_port))
        assert.are_not.equal(port, new_port)
        port, id = new_port, info.Id
      end
      assert.equal(tostring(port), info.HostConfig.PortBindings["8080/tcp"][1].HostPort)
      agent_env.wait_for(function() return http_get("http://127.0.0.1:" .. port .. "/") == 200 end,
        10, "ops to serve")
      local _, s = api("GET", "/v1/services/ops")
      assert.is_true(s.active)
    end)

    it("restarts it: the same container starts anew and serves", function()
      local before = inspect("ops-web").State.StartedAt
      os.execute("sleep 1")
      local status, body = api("POST", "/v1/services/ops/restart")
      assert.equal(200, status, mcp.json.encode(body))
      local info = inspect("ops-web")
      assert.is_true(info.State.Running)
      assert.equal(id, info.Id)
      assert.are_not.equal(before, info.State.StartedAt)
      agent_env.wait_for(function() return http_get("http://127.0.0.1:" .. port .. "/") == 200 end,
        10, "ops to serve")
    end)

    it("undeploys it: containers, ports and registry entry go; /srv/ops stays", function()
      write_file("/srv/ops/data.txt", "kept\n")
      assert.is_number(port_of("ops"))
      local out, rc = agent:cli("undeploy ops")
      assert.equal(0, rc, out)
      assert.same({}, containers("ops"))
      assert.is_nil(inspect("ops-web"))
      assert.is_nil(port_of("ops"))
      assert.is_nil(registry_eval('registry.service_get(db, "ops")'))
      assert.equal(404, (api("GET", "/v1/services/ops")))
      assert.equal("kept\n", read_file("/srv/ops/data.txt"))
    end)
  end)

  describe("adopt", function()
    it("takes a container made by hand with podman run under management, keeping its "
      .. "port and data", function()
      os.execute("mkdir -p /srv/hand && echo mine > /srv/hand/data.txt")
      local hport = agent_env.free_port()
      local out, rc, err = env:podman({ "run", "-d", "--name", "hand-web", "--init",
        "-p", "127.0.0.1:" .. hport .. ":8080", "-v", "/srv/hand:/srv/hand", "-e", "GREETING=hi",
        podman_env.image1, "httpd", "-f", "-p", "8080", "-h", "/www" })
      assert.equal(0, rc, out .. err)
      agent_env.wait_for(function() return http_get("http://127.0.0.1:" .. hport .. "/") == 200 end,
        10, "the hand-made container to serve")
      -- Unmanaged: the agent does not list it.
      local _, ps = api("GET", "/v1/ps")
      for _, c in ipairs(ps.containers) do assert.are_not.equal("hand", c.service) end

      out, rc = agent:cli("adopt hand")
      assert.equal(0, rc, out)
      local info = inspect("hand-web")
      local labels = info.Config.Labels
      assert.equal("true", labels["mcp.managed"])
      assert.equal("hand", labels["mcp.service"])
      assert.equal("web", labels["mcp.component"])
      assert.equal("r1", labels["mcp.revision"])
      assert.is_true(info.State.Running)
      assert.equal(tostring(hport), info.HostConfig.PortBindings["8080/tcp"][1].HostPort)
      local env_set = table.concat(info.Config.Env, " ")
      assert.matches("GREETING=hi", env_set, 1, true)
      assert.matches("PORT=" .. hport, env_set, 1, true)
      assert.same({ "hand-web running r1" }, containers("hand"))
      agent_env.wait_for(function() return http_get("http://127.0.0.1:" .. hport .. "/") == 200 end,
        10, "the adopted container to serve")
      assert.equal("mine\n", read_file("/srv/hand/data.txt"))

      -- Managed now: listed, recorded, and operations reach it.
      _, ps = api("GET", "/v1/ps")
      local seen
      for _, c in ipairs(ps.containers) do
        if c.service == "hand" then seen = c end
      end
      assert.is_table(seen)
      assert.equal("hand-web", seen.container)
      local _, s = api("GET", "/v1/services/hand")
      assert.equal("r1", s.revision.id)
      assert.equal("deployed", s.revision.status)
      assert.equal(200, (api("POST", "/v1/services/hand/stop")))
      assert.is_false(inspect("hand-web").State.Running)
      assert.equal(200, (api("POST", "/v1/services/hand/start")))
      assert.is_true(inspect("hand-web").State.Running)
    end)

    it("adopts by the service's definition when there is one, on the port the container "
      .. "published", function()
      local hport = agent_env.free_port()
      local out, rc, err = env:podman({ "run", "-d", "--name", "kept-web",
        "-p", "127.0.0.1:" .. hport .. ":8080", podman_env.image1,
        "httpd", "-f", "-p", "8080", "-h", "/www" })
      assert.equal(0, rc, out .. err)
      local status, body = api("POST", "/v1/adopt", { service = "kept" })
      assert.equal(200, status, mcp.json.encode(body))
      assert.same({ "kept-web" }, body.containers)
      local info = inspect("kept-web")
      assert.equal("kept", info.Config.Labels["mcp.service"])
      -- As the definition says: its cmd, its defaults (init, /srv/kept).
      assert.is_true(info.HostConfig.Init)
      assert.equal("/srv/kept", info.Mounts[1].Source)
      assert.equal(tostring(hport), info.HostConfig.PortBindings["8080/tcp"][1].HostPort)
      local _, s = api("GET", "/v1/services/kept")
      assert.is_false(s.outdated)
      agent_env.wait_for(function() return http_get("http://127.0.0.1:" .. hport .. "/") == 200 end,
        10, "the adopted container to serve")
    end)

    it("says so when no container has the service's name", function()
      local status, body = api("POST", "/v1/adopt", { service = "nobody" })
      assert.equal(404, status)
      assert.matches("no container named nobody%-%* exists", body.error.message)
    end)
  end)

  describe("purge", function()
    it("drops registry entries whose containers are gone, lists them first with "
      .. "dry_run, and refuses services that still have containers", function()
      deploy("gone")
      assert.is_number(port_of("gone"))
      local _, rc = env:podman({ "rm", "-f", "gone-web" })
      assert.equal(0, rc)
      -- hand is stopped: it has a container all the same.
      assert.equal(200, (api("POST", "/v1/services/hand/stop")))

      local status, body = api("POST", "/v1/purge", { dry_run = true })
      assert.equal(200, status, mcp.json.encode(body))
      assert.is_true(body.dry_run)
      assert.same({ "gone" }, body.purged)
      local kept = {}
      for _, k in ipairs(body.kept) do kept[k.service] = k.reason end
      assert.matches("has 1 container", kept.hand)
      assert.matches("has 1 container", kept.kept)
      assert.is_not_nil(registry_eval('registry.service_get(db, "gone")'))
      assert.is_number(port_of("gone"))

      local out
      out, rc = agent:cli("purge")
      assert.equal(0, rc, out)
      assert.matches("purged gone", out, 1, true)
      assert.is_nil(registry_eval('registry.service_get(db, "gone")'))
      assert.is_nil(port_of("gone"))
      assert.is_not_nil(registry_eval('registry.service_get(db, "hand")'))
      assert.same({ "hand-web exited r1" }, containers("hand"))
      -- The definition stays: gone can be deployed again.
      local _, s = api("GET", "/v1/services/gone")
      assert.is_false(s.deployed)
    end)
  end)

  describe("recover", function()
    it("brings back three services whose containers were removed behind the agent's back, "
      .. "in depends_on order", function()
      local ports, ids = {}, {}
      for _, name in ipairs({ "c", "b", "a" }) do
        ports[name] = deploy(name).containers[1].ports.default
        ids[name] = inspect(name .. "-web").Id
      end
      local _, since = api("GET", "/v1/events?limit=1")
      local last = since.events[#since.events].id

      local out, rc = env:podman({ "rm", "-f", "a-web", "b-web", "c-web" })
      assert.equal(0, rc, out)
      os.execute("sleep 2")                  -- the monitor saw it and left it alone
      for _, name in ipairs({ "a", "b", "c" }) do assert.same({}, containers(name)) end

      local status, body = api("POST", "/v1/recover")
      assert.equal(200, status, mcp.json.encode(body))
      local order = {}
      for _, s in ipairs(body.services) do
        if s.service == "a" or s.service == "b" or s.service == "c" then
          order[#order + 1] = s.service
          assert.is_true(s.ok, mcp.json.encode(s))
        end
      end
      assert.same({ "c", "b", "a" }, order)

      -- The event log says the same order.
      local _, evs = api("GET", "/v1/events?since=" .. last .. "&limit=1000")
      local recovered = {}
      for _, e in ipairs(evs.events) do
        if e.kind == "recovered" and (e.service == "a" or e.service == "b"
            or e.service == "c") then
          recovered[#recovered + 1] = e.service
        end
      end
      assert.same({ "c", "b", "a" }, recovered)

      -- New containers, of the recorded revision, on its recorded ports
      -- (which stay those of the deploy unless another program took one
      -- meanwhile: other agents' tests may run on this host).
      for _, name in ipairs({ "a", "b", "c" }) do
        local info = inspect(name .. "-web")
        assert.is_true(info.State.Running)
        assert.are_not.equal(ids[name], info.Id)
        assert.equal("r1", info.Config.Labels["mcp.revision"])
        local rev = registry_eval(('registry.revision_current(db, "%s")'):format(name))
        local recorded = rev.spec.ports.web.default
        if recorded ~= ports[name] then
          io.stderr:write(("\n# %s: port %d was taken meanwhile; recovered on %d\n"):format(
            name, ports[name], recorded))
          ports[name] = recorded
        end
        assert.equal(tostring(ports[name]), info.HostConfig.PortBindings["8080/tcp"][1].HostPort,
          agent:log_tail(80))
        agent_env.wait_for(function()
          return http_get("http://127.0.0.1:" .. ports[name] .. "/") == 200
        end, 10, name .. " to serve")
      end
      -- Their StartedAt says the same order: each started after what it needs.
      local function started(name) return inspect(name .. "-web").State.StartedAt end
      assert.is_true(started("c") < started("b") and started("b") < started("a"))
    end)
  end)
end)
