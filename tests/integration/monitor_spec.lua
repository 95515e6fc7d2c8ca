-- The monitor against a real Podman: what an operator sees when a managed
-- container is killed again and again, when its health check starts
-- failing, and when Podman itself goes away for a while.
local podman_env = require("tests.env.podman_env")
local agent_env = require("tests.env.agent_env")

local IMAGE = podman_env.image1

-- Service names unique to this run: /srv/<service> is on the host, where
-- another run of the suite may be using the same names at the same time.
local function suffix()
  local f = assert(io.open("/dev/urandom", "rb"))
  local b = f:read(3)
  f:close()
  return (b:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end
local SFX = suffix()
local KILL, SICK, MA, MB = "mon-kill-" .. SFX, "mon-sick-" .. SFX, "mon-a-" .. SFX,
  "mon-b-" .. SFX
local DRIFT, STOP = "mon-drift-" .. SFX, "mon-stop-" .. SFX
local ALL = { KILL, SICK, MA, MB, DRIFT, STOP }

local function rm_srv()
  for _, n in ipairs(ALL) do os.execute("rm -rf /srv/" .. n) end
end
local function esc(s) return (s:gsub("%-", "%%-")) end

-- A quick monitor: restarts after 0.5 s, doubling; more than 3 restarts in a
-- minute is flapping; a full re-list every 2 s.
local MONITOR = [[
[monitor]
restart_first = "0.5s"
restart_factor = 2
restart_jitter = 0.1
flap_max = 3
flap_window = "60s"
relist_interval = "2s"
]]

local function web(name, health, extra)
  return string.format([==[
name = %q
node = "test"
[[components]]
name = "web"
image = %q
cmd = ["httpd", "-f", "-p", "8080", "-h", %q]
%s
[[components.routes]]
port = 8080
[components.health]
%s
]==], name, IMAGE, extra and extra.root or "/www", extra and extra.component or "", health)
end

local QUICK_HTTP = [[
kind = "http"
interval = "0.5s"
timeout = "0.5s"]]

local function events_of(agent, name, kind)
  local status, body = agent:api("GET", "/v1/events?limit=1000"
    .. (name and ("&service=" .. name) or ""))
  assert.equal(200, status)
  local out = {}
  for _, e in ipairs(body.events) do
    if not kind or e.kind == kind then out[#out + 1] = e end
  end
  return out
end

local function ps_row(agent, name)
  local status, body = agent:api("GET", "/v1/ps")
  if status ~= 200 then return nil end
  for _, c in ipairs(body.containers) do
    if c.service == name then return c end
  end
end

local function container_state(env, name)
  local out = env:podman({ "inspect", "--format", "{{.State.Status}} {{.Id}} {{.State.StartedAt}}",
    name })
  local st, id, started = out:match("^(%S+) (%S+) (.-)%s*$")
  return st, id, started
end

local function deploy(agent, name)
  local status, body = agent:api("POST", "/v1/services/" .. name .. "/deploy")
  assert.equal(200, status, name .. ": " .. tostring(body and body.error
    and body.error.message) .. "\n" .. agent:log_tail())
end

describe("the monitor", function()
  local env, agent

  setup(function()
    env = podman_env.start()
    rm_srv()
    agent = agent_env.start({ podman = env, config = MONITOR, services = {
      [KILL] = web(KILL, QUICK_HTTP),
      [SICK] = web(SICK, [[
kind = "http"
path = "/ok.txt"
expect_body = "alive"
interval = "0.5s"
timeout = "0.5s"
failures = 2]], { root = "/srv/" .. SICK }),
      [MA] = web(MA, QUICK_HTTP),
      [MB] = web(MB, QUICK_HTTP),
      [DRIFT] = web(DRIFT, QUICK_HTTP),
      [STOP] = web(STOP, QUICK_HTTP),
    } })
    -- The file the check of mon-sick looks for, in its bind-mounted /srv dir.
    os.execute(("mkdir -p /srv/" .. SICK .. " && echo alive > /srv/" .. SICK .. "/ok.txt"))
    for _, name in ipairs(ALL) do deploy(agent, name) end
  end)

  teardown(function()
    if agent then agent:stop() end
    if env then env:stop() end
    rm_srv()
  end)

  describe("when an operator kills a managed container again and again", function()
    local delays = {}

    it("restarts it, waiting longer before each restart", function()
      for i = 1, 3 do
        agent_env.wait_for(function()
          local row = ps_row(agent, KILL)
          return row and row.state == "running" and row.health == "healthy"
        end, 30, (KILL .. " to run and be healthy before kill ") .. i)
        local _, id_before = container_state(env, (KILL .. "-web"))
        local t_kill = agent_env.now()
        local out, code = env:podman({ "kill", (KILL .. "-web") })
        assert.equal(0, code, out)
        local ev = agent_env.wait_for(function()
          local evs = events_of(agent, KILL, "restarted")
          return #evs >= i and evs[i]
        end, 30, "restart " .. i)
        delays[i] = ev.data.delay
        assert.equal("exited", ev.data.cause)
        -- Noticed from Podman's event stream, not at the next re-list.
        local sched = events_of(agent, KILL, "restart_scheduled")[i]
        assert.is_true(sched.time - t_kill < 1, string.format("noticed after %.2fs",
          sched.time - t_kill))
        local st, id_after = container_state(env, (KILL .. "-web"))
        assert.equal("running", st)
        assert.equal(id_before, id_after)      -- started again, not recreated
      end
      -- 0.5 s, then 1 s, then 2 s, each up to 10 % shorter.
      assert.is_true(delays[1] > 0.44 and delays[1] <= 0.5, tostring(delays[1]))
      assert.is_true(delays[2] > delays[1], table.concat(delays, ", "))
      assert.is_true(delays[3] > delays[2], table.concat(delays, ", "))
      assert.is_true(delays[3] > 1.79 and delays[3] <= 2, tostring(delays[3]))
      local scheduled = events_of(agent, KILL, "restart_scheduled")
      assert.equal(3, #scheduled)
      for i, e in ipairs(scheduled) do assert.equal(i, e.data.attempt) end
      -- The events' timestamps agree: each restart came its delay after the kill.
      local restarted = events_of(agent, KILL, "restarted")
      for i = 1, 3 do
        local gap = restarted[i].time - scheduled[i].time
        assert.is_true(gap >= delays[i] - 0.05, string.format("restart %d after %.3fs, "
          .. "delay %.3fs", i, gap, delays[i]))
      end
    end)

    it("marks it flapping after more than flap_max restarts and leaves it down", function()
      agent_env.wait_for(function()
        local row = ps_row(agent, KILL)
        return row and row.state == "running"
      end, 30, (KILL .. " to run before the last kill"))
      local out, code = env:podman({ "kill", (KILL .. "-web") })
      assert.equal(0, code, out)
      local ev = agent_env.wait_for(function()
        return events_of(agent, KILL, "flapping")[1]
      end, 30, "the flapping event")
      assert.equal("web", ev.component)
      assert.equal(4, ev.data.restarts)
      -- It stays down across several re-lists (every 2 s).
      agent_env.sleep(5)
      local st = container_state(env, (KILL .. "-web"))
      assert.equal("exited", st)
      assert.equal(3, #events_of(agent, KILL, "restarted"))
      assert.equal("flapping", ps_row(agent, KILL).state)
      local status, body = agent:api("GET", "/v1/status")
      assert.equal(200, status)
      assert.same({ (KILL .. "/web") }, body.monitor.flapping)
      local _, _, text = agent:api("GET", "/metrics")
      assert.matches('mcp_flapping{component="web",service="' .. esc(KILL) .. '"} 1', text)
      assert.matches('mcp_restarts_total{cause="exited",component="web",service="'
        .. esc(KILL) .. '"} 3',
        text)
    end)

    it("runs it again, and forgets the flapping, on `mcp restart`", function()
      local out, code, err = agent:cli(("restart " .. KILL))
      assert.equal(0, code, out .. err)
      agent_env.wait_for(function()
        local row = ps_row(agent, KILL)
        return row and row.state == "running" and row.health == "healthy"
      end, 30, (KILL .. " to run again"))
      local status, body = agent:api("GET", "/v1/status")
      assert.equal(200, status)
      assert.same({}, body.monitor.flapping)
      -- The backoff starts over: the next kill is restarted after 0.5 s again.
      local seen = events_of(agent, KILL)
      local last_id = seen[#seen].id
      out, code = env:podman({ "kill", (KILL .. "-web") })
      assert.equal(0, code, out)
      local ev = agent_env.wait_for(function()
        for _, e in ipairs(events_of(agent, KILL, "restarted")) do
          if e.id > last_id then return e end
        end
      end, 30, "the restart after the operator's restart")
      assert.equal(1, ev.data.attempt)
      assert.is_true(ev.data.delay <= 0.5, tostring(ev.data.delay))
      assert.equal("running", (container_state(env, (KILL .. "-web"))))
    end)
  end)

  it("restarts a running container whose health check starts failing", function()
    agent_env.wait_for(function()
      local row = ps_row(agent, SICK)
      return row and row.health == "healthy"
    end, 30, (SICK .. " to be healthy"))
    local _, id, started = container_state(env, (SICK .. "-web"))
    -- The check looks for /srv/mon-sick/ok.txt through the bind mount.
    assert.is_true(os.remove(("/srv/" .. SICK .. "/ok.txt")))
    local unhealthy = agent_env.wait_for(function()
      return events_of(agent, SICK, "unhealthy")[1]
    end, 30, (SICK .. " to turn unhealthy"))
    assert.equal(2, unhealthy.data.misses)
    local ev = agent_env.wait_for(function()
      return events_of(agent, SICK, "restarted")[1]
    end, 30, "the restart of the unhealthy container")
    assert.equal("unhealthy", ev.data.cause)
    assert.matches("unhealthy", ev.message)
    local st, id2, started2 = container_state(env, (SICK .. "-web"))
    assert.equal("running", st)
    assert.equal(id, id2)                   -- the same container, restarted
    assert.are_not.equal(started, started2)
    -- Once the file is back, it is healthy again.
    local f = assert(io.open(("/srv/" .. SICK .. "/ok.txt"), "w"))
    f:write("alive\n")
    f:close()
    agent_env.wait_for(function()
      local row = ps_row(agent, SICK)
      return row and row.health == "healthy"
    end, 30, (SICK .. " to be healthy again"))
  end)

  it("recreates a container that runs another image than its revision", function()
    agent_env.wait_for(function()
      return container_state(env, (DRIFT .. "-web")) == "running"
    end, 30, (DRIFT .. " to run"))
    local _, svc = agent:api("GET", ("/v1/services/" .. DRIFT))
    local rev = svc.revision.id
    -- Someone replaces the container behind the agent's back, labels and all.
    -- (With the API service stopped meanwhile, so that the agent cannot
    -- bring the removed container back before the impostor takes its name:
    -- it finds the impostor when it re-lists after Podman is back.)
    env:stop_service()
    env:podman({ "rm", "-f", (DRIFT .. "-web") })
    local out, code = env:podman({ "run", "-d", "--name", (DRIFT .. "-web"), "--init",
      "--label", "mcp.managed=true", "--label", ("mcp.service=" .. DRIFT),
      "--label", "mcp.component=web", "--label", "mcp.revision=" .. rev,
      podman_env.image2, "httpd", "-f", "-p", "8080", "-h", "/www" })
    assert.equal(0, code, out)
    env:start_service()
    local drift = agent_env.wait_for(function()
      return events_of(agent, DRIFT, "drift")[1]
    end, 30, "the drift event")
    assert.equal("drift-image", drift.data.cause)
    local ev = agent_env.wait_for(function()
      for _, e in ipairs(events_of(agent, DRIFT, "restarted")) do
        if e.data and e.data.cause == "drift" then return e end
      end
    end, 30, "the container to be recreated")
    assert.is_truthy(ev)
    local img = env:podman({ "inspect", "--format", "{{.ImageName}}", (DRIFT .. "-web") })
    assert.equal(podman_env.image1, (img:gsub("%s+$", "")))
    agent_env.wait_for(function()
      local row = ps_row(agent, DRIFT)
      return row and row.state == "running" and row.health == "healthy"
    end, 30, (DRIFT .. " healthy on its own image again"))
  end)

  it("starts a container stopped behind its back again, and one stopped by `mcp stop` not",
      function()
    agent_env.wait_for(function()
      return container_state(env, STOP .. "-web") == "running"
    end, 30, STOP .. " to run")
    local out, code = env:podman({ "stop", "-t", "2", STOP .. "-web" })
    assert.equal(0, code, out)
    agent_env.wait_for(function()
      return events_of(agent, STOP, "restarted")[1]
    end, 30, "the restart after podman stop")
    assert.equal("running", (container_state(env, STOP .. "-web")))

    local _, err
    out, code, err = agent:cli("stop " .. STOP)
    assert.equal(0, code, out .. err)
    agent_env.sleep(5)                        -- a few re-lists
    assert.equal("exited", (container_state(env, STOP .. "-web")))
    assert.equal(1, #events_of(agent, STOP, "restarted"))
    out, code, err = agent:cli("start " .. STOP)
    assert.equal(0, code, out .. err)
    assert.equal("running", (container_state(env, STOP .. "-web")))
  end)

  it("survives Podman going away for 10 s and repairs what happened meanwhile", function()
    for _, n in ipairs({ MA, MB }) do
      agent_env.wait_for(function()
        local row = ps_row(agent, n)
        return row and row.state == "running"
      end, 30, n .. " to run")
    end
    local _, id_b = container_state(env, (MB .. "-web"))
    env:stop_service()
    local t0 = agent_env.now()
    -- While the API is gone the podman CLI still works: one container is
    -- killed, another removed, behind the agent's back.
    local out, code = env:podman({ "kill", (MA .. "-web") })
    assert.equal(0, code, out)
    out, code = env:podman({ "rm", "-f", (MB .. "-web") })
    assert.equal(0, code, out)

    local status, body = agent:api("GET", "/v1/status", { timeout = 10 })
    assert.equal(200, status)
    assert.is_false(body.podman.reachable)
    agent_env.wait_for(function()
      local _, b = agent:api("GET", "/v1/status", { timeout = 10 })
      return b and b.monitor and b.monitor.podman_reachable == false
    end, 10, "the monitor to notice")
    -- The agent keeps answering.
    assert.equal(200, (agent:api("GET", "/v1/health", { timeout = 5 })))
    local left = 10 - (agent_env.now() - t0)
    if left > 0 then agent_env.sleep(left) end
    assert.is_true(agent:alive())
    env:start_service()

    agent_env.wait_for(function()
      local _, b = agent:api("GET", "/v1/status", { timeout = 10 })
      return b and b.podman and b.podman.reachable and b.monitor.podman_reachable
    end, 30, "Podman reachable again")
    for _, n in ipairs({ MA, MB, KILL, SICK }) do
      agent_env.wait_for(function()
        return container_state(env, n .. "-web") == "running"
      end, 30, n .. " to run again")
    end
    local _, id_b2 = container_state(env, (MB .. "-web"))
    assert.are_not.equal(id_b, id_b2)        -- recreated from the registry
    assert.is_true(#events_of(agent, nil, "podman_unreachable") > 0)
    local kinds = {}
    for _, e in ipairs(events_of(agent, MA)) do kinds[e.kind] = true end
    assert.is_true(kinds.restarted)
    local back = false
    local _, all = agent:api("GET", "/v1/events?limit=1000")
    for _, e in ipairs(all.events) do
      if e.kind == "podman_reconnected" then back = true end
    end
    assert.is_true(back)
  end)
end)
