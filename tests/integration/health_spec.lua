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
local HOOK, DEAFT = "hc-hook-" .. SFX, "hc-deaft-" .. SFX
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

-- A policy with both hooks: on_unhealthy stops the container (its
-- component says "none"), on_event forwards every event to a webhook.
local HOOKS = [[
local p = {}
function p.deploy(ctx)
  local new, err = ctx:start_new()
  if not new then return ctx:fail(err) end
  ctx:switch_routes(new)
end
function p.on_unhealthy(info)
  return "stop"
end
function p.on_event(e)
  mcp.http.post("http://127.0.0.1:%d/hook", { json = { kind = e.kind, service = e.service,
    component = e.component, message = e.message }, timeout = "5s" })
end
return p
]]

-- The webhook: appends each POST body as a line to a file.
local SINK = [[
import http.server, sys
port, path = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(path, "ab") as f:
            f.write(body + b"\n")
        self.send_response(204)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
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
  -- the same with a tcp check: Podman's port forwarder accepts on the host
  -- port, so the check must look inside the container
  [DEAFT] = service(DEAFT, [[
kind = "tcp"
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
  local env, agent, sink_pid
  local sink_file = os.tmpname()

  setup(function()
    env = podman_env.start()
    local sink_port = agent_env.free_port()
    local script = os.tmpname()
    agent_env.write_file(script, SINK)
    sink_pid = agent_env.run(string.format("python3 %s %d %s >/dev/null 2>&1 & echo $!",
      script, sink_port, sink_file))
    SERVICES[HOOK] = service(HOOK, [[
kind = "http"
interval = "0.5s"
timeout = "0.5s"
failures = 2]], { service = 'policy = "hooks"', component = 'on_unhealthy = "none"',
      port = "9999" })
    agent = agent_env.start({ podman = env, services = SERVICES,
      policies = { nowait = NOWAIT, hooks = HOOKS:format(sink_port) },
      config = "[monitor]\nrelist_interval = \"2s\"\nrestart_first = \"0.5s\"\n" })
    for _, name in ipairs({ HTTP, TCP, EXEC, DEAF, DEAFT, HOOK }) do
      local status, body = agent:api("POST", "/v1/services/" .. name .. "/deploy")
      assert.equal(200, status, name .. ": " .. tostring(body and body.error
        and body.error.message) .. "\n" .. agent:log_tail())
    end
  end)

  teardown(function()
    if sink_pid and sink_pid:match("^%d+$") then os.execute("kill " .. sink_pid) end
    os.remove(sink_file)
    if agent then agent:stop() end
    if env then env:stop() end
    for _, n in ipairs({ HTTP, TCP, EXEC, DEAF, DEAFT, HOOK }) do
      os.execute("rm -rf /srv/" .. n)
    end
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

  for kind, name in pairs({ http = DEAF, tcp = DEAFT }) do
    it("turns a container unhealthy after `failures` " .. kind .. " misses when nothing listens",
        function()
      local row = wait_health(agent, name, "unhealthy")
      assert.equal("running", row.state)          -- on_unhealthy = none: left running
      local evs = events_of(agent, name, "unhealthy")
      assert.equal(1, #evs)
      assert.equal(3, evs[1].data.misses)
      assert.equal("starting", evs[1].data.previous)
      assert.equal(kind, evs[1].data.check)
      assert.equal(0, #events_of(agent, name, "healthy"))
      assert.equal(0, #events_of(agent, name, "restart_scheduled"))

      local status, svc = agent:api("GET", ("/v1/services/" .. name))
      assert.equal(200, status)
      assert.equal("unhealthy", svc.containers[1].health)
    end)
  end

  it("lets the policy's on_unhealthy decide, and its on_event forward every event", function()
    local ev = agent_env.wait_for(function()
      return events_of(agent, HOOK, "stopped")[1]
    end, 30, "the policy to stop the unhealthy container")
    assert.equal("unhealthy", ev.data.cause)
    local out = env:podman({ "inspect", "--format", "{{.State.Status}}", HOOK .. "-web" })
    assert.equal("exited", (out:gsub("%s+$", "")))
    -- It stays stopped: the monitor does not bring it back (re-lists every 2 s).
    agent_env.sleep(5)
    out = env:podman({ "inspect", "--format", "{{.State.Status}}", HOOK .. "-web" })
    assert.equal("exited", (out:gsub("%s+$", "")))
    assert.equal(0, #events_of(agent, HOOK, "restart_scheduled"))
    local status, body = agent:api("GET", "/v1/status")
    assert.equal(200, status)
    assert.same({ HOOK .. "/web" }, body.monitor.stopped_unhealthy)
    -- The webhook got the service's events, and none of another service.
    local got = {}
    for line in (agent_env.read_file(sink_file) or ""):gmatch("[^\n]+") do
      local e = require("mcp.core").json.decode(line)
      assert.equal(HOOK, e.service)
      got[e.kind] = true
    end
    for _, kind in ipairs({ "deploying", "deployed", "unhealthy", "stopped" }) do
      assert.is_true(got[kind], kind .. " forwarded")
    end
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
    assert.is_true(tonumber(text:match('mcp_events_total{kind="unhealthy"} (%d+)')) >= 1)

    -- (A re-list that failed once, on a loaded machine, shows for up to one
    -- relist_interval.)
    local body = agent_env.wait_for(function()
      local st, b = agent:api("GET", "/v1/status")
      return st == 200 and b.monitor.podman_reachable == true and b
    end, 10, "the monitor to find Podman reachable")
    assert.equal("done", body.monitor.boot.state)
    assert.is_true(body.monitor.health.healthy >= 3)
    assert.equal(2, body.monitor.health.unhealthy)
  end)

  it("records the health of each container in the registry", function()
    wait_health(agent, DEAF, "unhealthy")
    local out, code = agent:eval('require("mcp.registry").health_get(mcp.state.db, '
      .. '"' .. DEAF .. '-web").state')
    assert.equal(0, code, out)
    assert.matches("unhealthy", out)
  end)
end)
