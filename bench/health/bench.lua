-- bench/health/bench.lua: the agent's CPU per 1000 http health checks, with
-- 500 containers' worth of checks at a 1 s interval. Run by run.sh.
--
-- Five real services (busybox httpd in real Podman containers) are deployed
-- through the API; then 495 more deployed services are written into the
-- registry through the console, each a copy of one of the five pointing at
-- its container's host port, and the monitor is told their containers run.
-- The monitor's own health loop then checks 500 targets once a second: the
-- scheduling, the HTTP request through libcurl and the loop, the state
-- machine and the counters are all the real ones; only Podman is spared
-- the 495 containers. The agent's CPU time comes from /proc/PID/stat, the
-- number of checks from /metrics (mcp_health_checks_total).
local podman_env = require("tests.env.podman_env")
local agent_env = require("tests.env.agent_env")
local mcp = require("mcp.core")

local TARGETS = tonumber(os.getenv("HEALTH_BENCH_TARGETS") or "500")
local SECONDS = tonumber(os.getenv("HEALTH_BENCH_SECONDS") or "30")
local INTERVAL = os.getenv("HEALTH_BENCH_INTERVAL") or "1s"
local OUT = assert(arg[1], "usage: bench.lua OUT.json")
local REAL = 5

local function service(i)
  return string.format([==[
name = "bh-%d"
node = "test"
[[components]]
name = "web"
image = %q
cmd = ["httpd", "-f", "-p", "8080", "-h", "/www"]
on_unhealthy = "none"
[[components.routes]]
port = 8080
[components.health]
kind = "http"
path = "/"
expect_status = 200
interval = %q
timeout = "1s"
failures = 3
]==], i, podman_env.image1, INTERVAL)
end

local function cpu_seconds(pid)
  local f = assert(io.open("/proc/" .. pid .. "/stat"))
  local line = f:read("*l")
  f:close()
  -- Fields after the command name (which may hold spaces) start at 3.
  local rest = line:match("%) (.*)$")
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  local hz = tonumber((agent_env.run("getconf CLK_TCK"))) or 100
  return (tonumber(fields[12]) + tonumber(fields[13])) / hz   -- utime, stime
end

local function checks(agent)
  local status, _, text = agent:api("GET", "/metrics")
  assert(status == 200, "GET /metrics: " .. tostring(status))
  local n, by = 0, {}
  local pattern = 'mcp_health_checks_total{kind="(%w+)",result="(%w+)"} (%d+)'
  for kind, result, v in text:gmatch(pattern) do
    n = n + tonumber(v)
    by[kind .. "/" .. result] = tonumber(v)
  end
  local sum = tonumber(text:match("mcp_health_check_seconds_sum (%S+)")) or 0
  return n, by, sum
end

-- The whole machine's busy and total jiffies (/proc/stat), for context: the
-- targets (httpd forks, Podman's port forwarders) share the CPUs.
local function machine()
  local f = assert(io.open("/proc/stat"))
  local line = f:read("*l")
  f:close()
  local v = {}
  for n in line:gmatch("%d+") do v[#v + 1] = tonumber(n) end
  local total = 0
  for _, x in ipairs(v) do total = total + x end
  return total - v[4] - (v[5] or 0), total
end

local function measure(agent, seconds)
  local c0, by0, s0 = checks(agent)
  local cpu0, t0 = cpu_seconds(agent.pid), agent_env.now()
  local busy0, total0 = machine()
  agent_env.sleep(seconds)
  local c1, by, s1 = checks(agent)
  local cpu1, t1 = cpu_seconds(agent.pid), agent_env.now()
  local busy1, total1 = machine()
  local n, cpu, wall = c1 - c0, cpu1 - cpu0, t1 - t0
  for k, v in pairs(by) do by[k] = v - (by0[k] or 0) end
  return {
    wall_seconds = math.floor(wall * 100 + 0.5) / 100,
    checks = n,
    checks_per_second = math.floor(n / wall * 10 + 0.5) / 10,
    cpu_seconds = math.floor(cpu * 1000 + 0.5) / 1000,
    cpu_percent = math.floor(cpu / wall * 1000 + 0.5) / 10,
    cpu_seconds_per_1000_checks = n > 0 and math.floor(cpu / n * 1000 * 10000 + 0.5) / 10000
      or nil,
    mean_check_ms = n > 0 and math.floor((s1 - s0) / n * 1000 * 100 + 0.5) / 100 or nil,
    results = by,
    machine_busy_percent = math.floor((busy1 - busy0) / (total1 - total0) * 1000 + 0.5) / 10,
  }
end

local env = podman_env.start()
local agent
local ok, err = pcall(function()
  local services = {}
  for i = 1, REAL do services["bh-" .. i] = service(i) end
  agent = agent_env.start({ podman = env, services = services, log_level = "info",
    -- No re-list: it would try to repair the 495 services that have no
    -- container (boot only looks at start).
    config = '[monitor]\nrelist_interval = "24h"\n' })
  for i = 1, REAL do
    local status, body = agent:api("POST", "/v1/services/bh-" .. i .. "/deploy")
    assert(status == 200, "deploy bh-" .. i .. ": " .. tostring(body and body.error
      and body.error.message))
  end
  agent_env.sleep(3)
  io.stderr:write(string.format("baseline: %d services, %d s\n", REAL, SECONDS))
  local baseline = measure(agent, SECONDS)

  local inject = string.format([[
local reg = require("mcp.registry"); local planner = require("mcp.planner")
local s = require("mcp.monitor").state(); local db = mcp.state.db
for i = 1, %d do
  local rev = reg.revision_current(db, "bh-" .. ((i - 1) %% %d + 1))
  local def = mcp.json.decode(mcp.json.encode(rev.spec.definition))
  def.name = "bv-" .. i
  reg.service_put(db, def, "bench", planner.spec_hash(def))
  local id = reg.revision_new(db, def.name, { definition = def, ports = rev.spec.ports })
  reg.revision_set_status(db, def.name, id, "deployed")
  local cname = def.name .. "-web"
  s.containers[cname] = { id = "bench-" .. i, name = cname, service = def.name,
    component = "web", state = "running", running = true }
end
s.targets_cache = nil
return "injected"]], TARGETS - REAL, REAL)
  local out, code = agent:eval(inject)
  assert(code == 0 and out:find("injected"), "inject: " .. out)
  agent_env.sleep(5)                  -- every target checked a few times: steady state
  io.stderr:write(string.format("loaded: %d targets, %d s\n", TARGETS, SECONDS))
  local loaded = measure(agent, SECONDS)
  -- What the failing checks said, if any failed: the targets' last details.
  local details = agent:eval([[
local out = {}
for _, h in pairs(require("mcp.monitor").state().health) do
  if h.last == false then
    local d = tostring(h.detail):gsub("%d+", "N")
    out[d] = (out[d] or 0) + 1
  end
end
local lines = {}
for d, n in pairs(out) do lines[#lines + 1] = n .. " x " .. d end
return table.concat(lines, "\n")]])
  -- The console prints a string result quoted, with escapes.
  local text = details:match('^"(.*)"%s*$')
  if text then details = text:gsub("\\n", "\n"):gsub('\\"', '"') end
  io.stderr:write("last failures:\n" .. details .. "\n")
  loaded.last_failures = details ~= "" and details or nil

  local extra_cpu = loaded.cpu_seconds - baseline.cpu_seconds * loaded.wall_seconds
    / baseline.wall_seconds
  local extra_checks = loaded.checks - baseline.checks * loaded.wall_seconds
    / baseline.wall_seconds
  local cpuinfo = agent_env.run("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")
  local result = {
    benchmark = "health-checks",
    date = os.date("!%Y-%m-%dT%H:%M:%SZ"),
    setup = {
      targets = TARGETS, real_containers = REAL, interval = INTERVAL, kind = "http",
      check = "GET / on busybox httpd through the route's host port (127.0.0.1)",
      podman = "podman-env (real Podman 4.3, slirp4netns, runc)",
      note = "the extra targets are registry entries pointing at the real containers' "
        .. "ports; the monitor's health loop checks all of them",
    },
    idle_5_services = baseline,
    loaded = loaded,
    cpu_seconds_per_1000_checks = loaded.cpu_seconds_per_1000_checks,
    marginal_cpu_seconds_per_1000_checks = extra_checks > 0
      and math.floor(extra_cpu / extra_checks * 1000 * 10000 + 0.5) / 10000 or nil,
    env = { cpu = (cpuinfo:gsub("^%s+", "")), cpus = tonumber((agent_env.run("nproc"))),
      agent = agent_env.AGENT },
  }
  agent_env.write_file(OUT, mcp.json.encode(result, { sort = true }) .. "\n")
end)
if agent then agent:stop() end
env:stop()
for i = 1, REAL do os.execute("rmdir /srv/bh-" .. i .. " 2>/dev/null") end  -- made by deploy
if not ok then error(err, 0) end
