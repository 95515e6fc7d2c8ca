-- Health checks against a real Podman: an operator deploys services with
-- http, tcp and exec checks and reads their health in `mcp ps`
-- (GET /v1/ps), in GET /v1/services/NAME, in the events and in /metrics.
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
local HTTP, TCP, EXEC, DEAF = "hc-http-" .. SFX, "hc-tcp-" .. SFX, "hc-exec-" .. SFX,
  "hc-deaf-" .. SFX
local function esc(s) return (s:gsub("%-", "%%-")) end

-- A policy that does not wait for health: a service whose check never
-- passes still gets deployed, so the monitor's verdict can be watched.
local NOWAIT = [[
local p = {}
function p.deploy(ctx)
  ctx:stop(ctx.old)
  ctx:remove(ctx.old)
  local new, err = ctx:start_new()
  if not new then return ctx:fail(err) end
  ctx:switch_routes(new)
end
return p
]]

local function service(name, health, extra)
  return string.format([==[
name = %q
node = "test"
%s
[[components]]
name = "web"
image = %q
cmd = ["httpd", "-f", "-p", "8080", "-h", "/www"]
%s
[[components.routes]]
port = %s
[components.health]
%s
]==], name, extra and extra.service or "", IMAGE, extra and extra.component or "",
    extra and extra.port or "8080", health)
end

local SERVICES = {
  [HTTP] = service(HTTP, [[
kind = "http"
path = "/"
expect_status = 200
expect_body = "hello from mcp-test"
interval = "0.5s"
timeout = "0.5s"]]),
  [TCP] = service(TCP, [[
kind = "tcp"
interval = "0.5s"
timeout = "0.5s"]]),
  [EXEC] = service(EXEC, [[
kind = "exec"
command = ["sh", "-c", "test -d /www"]
interval = "0.5s"
timeout = "0.5s"]]),
  -- the route goes to container port 9999, where nothing listens
  [DEAF] = service(DEAF, [[
kind = "http"
interval = "0.5s"
timeout = "0.5s"
failures = 3]], { service = 'policy = "nowait"', component = 'on_unhealthy = "none"',
    port = "9999" }),
}

local function events_of(agent, name, kind)
  local status, body = agent:api("GET", "/v1/events?limit=1000&service=" .. name)
  assert.equal(200, status)
  local out = {}
  for _, e in ipairs(body.events) do
    if not kind or e.kind == kind then out[#out + 1] = e end
  end
  return out
end

local function ps_row(agent, name)
  local status, body = agent:api("GET", "/v1/ps")
  assert.equal(200, status)
  for _, c in ipairs(body.containers) do
    if c.service == name then return c end
  end
end

local function wait_health(agent, name, want, timeout)
  return agent_env.wait_for(function()
    local row = ps_row(agent, name)
    return row and row.health == want and row
  end, timeout or 20, name .. " to be " .. want)
end

describe("health checks", function()
  local env, agent

  setup(function()
    env = podman_env.start()
    agent = agent_env.start({ podman = env, services = SERVICES,
      policies = { nowait = NOWAIT },
      config = "[monitor]\nrelist_interval = \"2s\"\nrestart_first = \"0.5s\"\n" })
    for _, name in ipairs({ HTTP, TCP, EXEC, DEAF }) do
      local status, body = agent:api("POST", "/v1/services/" .. name .. "/deploy")
      assert.equal(200, status, name .. ": " .. tostring(body and body.error
        and body.error.message) .. "\n" .. agent:log_tail())
    end
  end)

  teardown(function()
    if agent then agent:stop() end
    if env then env:stop() end
    os.execute(("rm -rf /srv/" .. HTTP .. " /srv/" .. TCP .. " /srv/" .. EXEC .. " /srv/" .. DEAF))
  end)

  for _, kind in ipairs({ "http", "tcp", "exec" }) do
    local name = ({ http = HTTP, tcp = TCP, exec = EXEC })[kind]
    it("turns a container healthy with a passing " .. kind .. " check", function()
      local row = wait_health(agent, name, "healthy")
      assert.equal("running", row.state)

      local status, svc = agent:api("GET", "/v1/services/" .. name)
      assert.equal(200, status)
      assert.equal("healthy", svc.containers[1].health)

      local evs = agent_env.wait_for(function()
        local e = events_of(agent, name, "healthy")
        for _, ev in ipairs(e) do
          if ev.component == "web" then return { ev } end
        end
      end, 10, "a healthy event from the monitor")
      assert.equal(name .. "-web", evs[1].data.container)
      assert.equal(kind, evs[1].data.check)
      assert.equal("starting", evs[1].data.previous)
    end)
  end

  it("turns a container unhealthy after `failures` misses when nothing listens", function()
    local row = wait_health(agent, DEAF, "unhealthy")
    assert.equal("running", row.state)          -- on_unhealthy = none: left running
    local evs = events_of(agent, DEAF, "unhealthy")
    assert.equal(1, #evs)
    assert.equal(3, evs[1].data.misses)
    assert.equal("starting", evs[1].data.previous)
    assert.equal(0, #events_of(agent, DEAF, "healthy"))
    assert.equal(0, #events_of(agent, DEAF, "restart_scheduled"))

    local status, svc = agent:api("GET", ("/v1/services/" .. DEAF))
    assert.equal(200, status)
    assert.equal("unhealthy", svc.containers[1].health)
  end)

  it("counts checks and states in /metrics and the monitor in /v1/status", function()
    wait_health(agent, DEAF, "unhealthy")
    local status, _, text = agent:api("GET", "/metrics")
    assert.equal(200, status)
    for _, kind in ipairs({ "http", "tcp", "exec" }) do
      local n = tonumber(text:match('mcp_health_checks_total{kind="' .. kind
        .. '",result="pass"} (%d+)'))
      assert.is_true(n and n > 0, kind .. " passes counted:\n" .. text)
    end
    assert.matches('mcp_health_checks_total{kind="http",result="fail"} %d+', text)
    assert.matches('mcp_health_status{component="web",container="' .. esc(DEAF) .. '%-web",'
      .. 'service="' .. esc(DEAF) .. '",state="unhealthy"} 1', text)
    assert.matches('mcp_events_total{kind="unhealthy"} 1', text)

    local st, body = agent:api("GET", "/v1/status")
    assert.equal(200, st)
    assert.is_true(body.monitor.podman_reachable)
    assert.equal("done", body.monitor.boot.state)
    assert.is_true(body.monitor.health.healthy >= 3)
    assert.equal(1, body.monitor.health.unhealthy)
  end)

  it("records the health of each container in the registry", function()
    wait_health(agent, DEAF, "unhealthy")
    local out, code = agent:eval('require("mcp.registry").health_get(mcp.state.db, '
      .. '"' .. DEAF .. '-web").state')
    assert.equal(0, code, out)
    assert.matches("unhealthy", out)
  end)
end)
