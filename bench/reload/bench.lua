-- bench/reload/bench.lua: what a hot reload costs. Run by run.sh.
--
-- A real agent (its library copied aside by run.sh, so that edits in the
-- checkout do not reload it behind the bench's back) with 50 service
-- definitions (40 TOML, 10 Lua with a Lua health check) and 10 policies of
-- its own besides the shipped ones, against a real Podman:
--   1. reloads, one after another, through POST /v1/reload: the agent's own
--      took_ms from each answer (building the generation aside: library,
--      policies, definitions) and the wall time of the request;
--   2. 100 reloads while wrk sends GET /v1/ps (the managed containers, as
--      the agent keeps them from Podman's events) without pause: every
--      answer must be a 200; wrk's count of failures must be 0.
local podman_env = require("tests.env.podman_env")
local agent_env = require("tests.env.agent_env")
local mcp = require("mcp.core")

local RELOADS = tonumber(os.getenv("RELOAD_BENCH_RELOADS") or "200")
local UNDER_LOAD = tonumber(os.getenv("RELOAD_BENCH_UNDER_LOAD") or "100")
local OUT = assert(arg[1], "usage: bench.lua OUT.json")
local run, q = agent_env.run, agent_env.quote

local function toml_service(i)
  return string.format([==[
name = "svc-%02d"
node = "test"
policy = "policy-%02d"
[[components]]
name = "web"
image = "localhost/mcp-test:1.0"
cmd = ["httpd", "-f", "-p", "8080", "-h", "/www"]
env = { GREETING = "hello %d", MODE = "bench" }
[[components.routes]]
port = 8080
hostname = "svc-%02d.example.net"
[components.health]
kind = "http"
path = "/"
interval = "10s"
[[components]]
name = "worker"
image = "localhost/mcp-test:1.0"
cmd = ["sleep", "3600"]
]==], i, (i % 10) + 1, i, i)
end

local function lua_service(i)
  return string.format([==[
-- a Lua definition: what TOML cannot say
local name = "svc-%02d"
return {
  name = name, node = "test", policy = "policy-%02d", depends_on = { "svc-01" },
  components = {
    { name = "web", image = "localhost/mcp-test:1.0",
      cmd = { "httpd", "-f", "-p", "8080", "-h", "/www" },
      env = { GREETING = "hello from " .. name },
      routes = { { port = 8080 } },
      health = { kind = "lua", fn = function(c)
        local r = mcp.http.get(c.url("/"), { timeout = "2s" })
        return r and r.status == 200
      end } },
  },
}
]==], i, (i % 10) + 1)
end

-- Ten policies: the shipped rolling one, each with its own settings and an
-- on_event hook.
local function policy(i)
  local text = assert(agent_env.read_file(agent_env.ROOT .. "/policies/rolling.lua"))
  text = text:gsub('"60s"', string.format('"%ds"', 30 + i))
  return text:gsub("\nreturn rolling", string.format([[

function rolling.on_event(e)
  if e.kind == "deploy_failed" then mcp.log.warn("policy-%02d: %%s", e.message or "") end
end

return rolling]], i))
end

local function stats(list)
  local s = {}
  for i, v in ipairs(list) do s[i] = v end
  table.sort(s)
  local function at(p) return s[math.max(1, math.ceil(#s * p))] end
  local sum = 0
  for _, v in ipairs(s) do sum = sum + v end
  local function r(v) return math.floor(v * 100 + 0.5) / 100 end
  return { n = #s, min = r(s[1]), median = r(at(0.5)), p90 = r(at(0.9)), max = r(s[#s]),
    mean = r(sum / #s) }
end

local function reload(agent)
  local t0 = mcp.timer.monotime()
  local r, err = mcp.http.post(agent.url .. "/v1/reload", { timeout = 30,
    headers = { Authorization = "Bearer " .. agent.token } })
  local wall = (mcp.timer.monotime() - t0) * 1000
  assert(r, err)
  assert(r.status == 200, "POST /v1/reload: " .. r.status .. " " .. r.body)
  return r.json, wall
end

local WRK_SCRIPT = [[
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init() statuses = {} end
function response(status) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency)
  local e = summary.errors
  io.write(("requests %d\nerrors %d %d %d %d %d\nlatency_ms %.2f %.2f %.2f\n"):format(
    summary.requests, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean / 1000, latency:percentile(99) / 1000, latency.max / 1000))
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses")) do io.write(("status %d %d\n"):format(status, n)) end
  end
end
]]

-- wrk on /v1/ps while fn runs; returns wrk's counts and fn's result.
local function under_wrk(agent, dir, fn)
  local script, out = dir .. "/count.lua", dir .. "/wrk.out"
  agent_env.write_file(script, WRK_SCRIPT)
  os.remove(out)
  local pid = run(("wrk -t2 -c8 -d600s --timeout 10s -s %s -H %s %s >%s 2>&1 & echo $!"):format(
    q(script), q("Authorization: Bearer " .. agent.token), q(agent.url .. "/v1/ps"), q(out)))
  agent_env.sleep(1)
  local t0 = mcp.timer.monotime()
  local ok, result = pcall(fn)
  local seconds = mcp.timer.monotime() - t0
  os.execute("kill -INT " .. pid)
  if not ok then error(result, 0) end
  local text = agent_env.wait_for(function()
    local t = agent_env.read_file(out) or ""
    return t:find("latency_ms") and t
  end, 20, "wrk's summary")
  local w = { requests = tonumber(text:match("requests (%d+)")), statuses = {} }
  local c, r, wr, st, to = text:match("errors (%d+) (%d+) (%d+) (%d+) (%d+)")
  w.socket_errors = { connect = tonumber(c), read = tonumber(r), write = tonumber(wr),
    timeout = tonumber(to) }
  w.non_2xx = tonumber(st)
  local mean, p99, max = text:match("latency_ms (%S+) (%S+) (%S+)")
  w.latency_ms = { mean = tonumber(mean), p99 = tonumber(p99), max = tonumber(max) }
  for status, n in text:gmatch("status (%d+) (%d+)") do
    w.statuses[status] = (w.statuses[status] or 0) + tonumber(n)   -- one line per thread
  end
  w.failed = w.non_2xx + w.socket_errors.connect + w.socket_errors.read
    + w.socket_errors.write + w.socket_errors.timeout
  for status, n in pairs(w.statuses) do
    if status ~= "200" then w.failed = w.failed + n end
  end
  return w, result, seconds
end

local env = podman_env.start()
local services, policies = {}, {}
for i = 1, 50 do
  local name = string.format("svc-%02d", i)
  services[name] = i <= 40 and toml_service(i) or { ext = "lua", text = lua_service(i) }
end
for i = 1, 10 do policies[string.format("policy-%02d", i)] = policy(i) end
local agent = agent_env.start({ podman = env, services = services, policies = policies,
  log_level = "info" })

local ok, err = pcall(function()
  local result = { benchmark = "reload", date = os.date("!%Y-%m-%dT%H:%M:%SZ") }
  mcp.run({ name = "bench" }, function()
    for _ = 1, 10 do reload(agent) end            -- warm up: the JIT, the caches
    local took, wall, files, gen, phases = {}, {}, nil, nil, {}
    for i = 1, RELOADS do
      local r, w = reload(agent)
      took[i], wall[i], files, gen = r.took_ms, w, r.files, r.generation
      for k, v in pairs(r.phases or {}) do
        phases[k] = phases[k] or {}
        phases[k][i] = v
      end
    end
    result.reload = { reloads = RELOADS, files = files, took_ms = stats(took),
      wall_ms = stats(wall), generation = gen, phases_ms = {} }
    for k, list in pairs(phases) do result.reload.phases_ms[k] = stats(list) end
  end)

  -- Under load: first wrk alone, then wrk during the reloads.
  local alone = under_wrk(agent, agent.dir, function() agent_env.sleep(5) end)
  local loaded, times, seconds = under_wrk(agent, agent.dir, function()
    return mcp.run({ name = "bench" }, function()
      local took, wall = {}, {}
      for i = 1, UNDER_LOAD do
        local r, w = reload(agent)
        took[i], wall[i] = r.took_ms, w
      end
      return { took_ms = stats(took), wall_ms = stats(wall) }
    end)
  end)
  result.under_load = {
    reloads = UNDER_LOAD, seconds = math.floor(seconds * 100 + 0.5) / 100,
    reload = times, ps_requests = loaded.requests, ps_failed = loaded.failed,
    ps_statuses = loaded.statuses, ps_socket_errors = loaded.socket_errors,
    ps_latency_ms = loaded.latency_ms,
    ps_requests_per_second = math.floor(loaded.requests / (seconds + 1) * 10 + 0.5) / 10,
    baseline = { ps_requests_per_second = math.floor(alone.requests / 6 * 10 + 0.5) / 10,
      ps_failed = alone.failed, ps_latency_ms = alone.latency_ms },
  }
  local cpu = (run("grep -m1 'model name' /proc/cpuinfo") or ""):match(":%s*(.-)%s*$")
  result.env = { agent = agent_env.AGENT, cpu = cpu, cpus = tonumber((run("nproc"))),
    podman = "podman-env (real Podman 4.3)", lib = agent_env.ROOT .. " (a copy of lua/ and "
      .. "policies/)" }
  result.setup = { services = "50: 40 TOML (2 components, a route with a hostname, an http "
    .. "check), 10 Lua (a Lua health check, depends_on)", policies = "10 of the agent's "
    .. "own (rolling with an on_event hook) besides the shipped recreate and rolling",
    wrk = "wrk -t2 -c8 on GET /v1/ps (served from the agent's cache of Podman's "
      .. "containers)" }
  agent_env.write_file(OUT, mcp.json.encode(result))
  if loaded.failed ~= 0 then
    error(("%d requests failed during the reloads"):format(loaded.failed))
  end
end)
agent:stop()
env:stop()
if not ok then io.stderr:write(tostring(err), "\n") end
-- Leave without closing the Lua state: nothing is left to clean, and the C
-- module must not be unloaded while its allocator serves the state.
os.exit(ok and 0 or 1)
