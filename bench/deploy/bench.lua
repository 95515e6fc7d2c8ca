-- bench/deploy/bench.lua: the node benchmarks that share one real Podman and
-- one agent (100 services take a while to deploy; they are deployed once).
-- Run by bench/run.sh:
--
--   luajit bench/deploy/bench.lua OUT.json
--
-- In order, on a private Podman (tests/env) and a real agent (its library
-- copied aside by run.sh), each figure a list of runs for the report:
--   1. memory, idle, 0 services: VmRSS of the agent and of `podman system
--      service` (bench/memory/memory.lua);
--   2. deploy cost, DEPLOY_BENCH_ROUNDS rounds (default 3): 20 services
--      deployed through the agent (POST /v1/services/NAME/deploy, one after
--      another; an operator policy that creates and starts without waiting
--      for health), against 20 containers of the same spec created and
--      started through Podman's API by a script, and against a loop of
--      `podman run -d` (bench/deploy/peers.py). The order rotates each
--      round; the peers' containers are removed after their round;
--   3. the agent's services made up to 100 (the rest deployed untimed);
--   4. memory with 100 services, idle;
--   5. API reads with 100 containers (bench/api/api.lua);
--   6. memory after the API load;
--   7. the health-check peer: `podman healthcheck run` on a container with a
--      health command of the same check (busybox wget of /), CPU seconds of
--      podman and its waited children per check (bench/deploy/peers.py).
--
--   BENCH_SERVICES (100), DEPLOY_BENCH_N (20), DEPLOY_BENCH_ROUNDS (3),
--   API_BENCH_ROUNDS (3), API_BENCH_SECONDS (4), API_BENCH_MAX_SECONDS (10),
--   API_BENCH_MIN_REQUESTS (24), API_BENCH_CEILING_SECONDS (2, nginx),
--   API_BENCH_CONNECTIONS (8),
--   MEMORY_SAMPLES (5), HEALTH_PEER_CHECKS (15), HEALTH_PEER_ROUNDS (3)
--   BENCH_LOADGEN   the load generator (build/bench/loadgen)
--   BENCH_CLEANUP   a file to which what must be cleaned up is appended as
--                   soon as it exists ("podman-env DIR", "pid PID", "dir
--                   DIR", "srv NAME"), for run.sh's trap when this process
--                   is killed
--
-- Nothing here asserts a time.
local podman_env = require("tests.env.podman_env")
local agent_env = require("tests.env.agent_env")
local mcp = require("mcp.core")
local memory = require("bench.memory.memory")
local api = require("bench.api.api")

local OUT = assert(arg[1], "usage: bench.lua OUT.json")
local function knob(name, default) return tonumber(os.getenv(name) or "") or default end
local SERVICES = knob("BENCH_SERVICES", 100)
local DEPLOY_N = knob("DEPLOY_BENCH_N", 20)
local DEPLOY_ROUNDS = knob("DEPLOY_BENCH_ROUNDS", 3)
local API_ROUNDS = knob("API_BENCH_ROUNDS", 3)
local API_SECONDS = knob("API_BENCH_SECONDS", 4)
local API_MAX_SECONDS = knob("API_BENCH_MAX_SECONDS", 10)
local API_MIN_REQUESTS = knob("API_BENCH_MIN_REQUESTS", 24)
local API_CEILING_SECONDS = knob("API_BENCH_CEILING_SECONDS", 2)
local API_CONNECTIONS = knob("API_BENCH_CONNECTIONS", 8)
local MEM_SAMPLES = knob("MEMORY_SAMPLES", 5)
local HEALTH_CHECKS = knob("HEALTH_PEER_CHECKS", 15)
local HEALTH_ROUNDS = knob("HEALTH_PEER_ROUNDS", 3)
local ROOT = agent_env.ROOT
local REPO = os.getenv("BENCH_REPO") or "."
local LOADGEN = os.getenv("BENCH_LOADGEN") or (REPO .. "/build/bench/loadgen")
local CLEANUP = os.getenv("BENCH_CLEANUP")
local run, q = agent_env.run, agent_env.quote
assert(DEPLOY_N * DEPLOY_ROUNDS < SERVICES, "DEPLOY_BENCH_N * ROUNDS >= BENCH_SERVICES")

local function note_cleanup(line)
  if not CLEANUP then return end
  local f = assert(io.open(CLEANUP, "a"))
  f:write(line, "\n")
  f:close()
end

local function say(fmt, ...) io.stderr:write(string.format(fmt, ...) .. "\n") end

local function service_name(i) return string.format("bench-%03d", i) end

-- A small service: busybox httpd, one route, a health check that only asks
-- Podman whether it runs (every 30 s, so that 100 of them stay quiet while
-- the API is measured), and the policy below.
local function service(i)
  return string.format([==[
name = "%s"
node = "test"
policy = "nowait"
[[components]]
name = "web"
image = %q
cmd = ["httpd", "-f", "-p", "8080", "-h", "/www"]
[[components.routes]]
port = 8080
[components.health]
kind = "running"
interval = "30s"
]==], service_name(i), podman_env.image1)
end

-- An operator policy: create and start, no health wait, so that the time is
-- the agent's cost of a deploy and not the service's start-up.
local NOWAIT = [[
-- policies/nowait.lua (bench): start the new revision and return.
local nowait = {}

function nowait.deploy(ctx)
  ctx:stop(ctx.old)
  ctx:remove(ctx.old)
  local new, err = ctx:start_new()
  if not new then return ctx:fail("could not start the new revision: " .. err) end
end

return nowait
]]

local function deploy_through_agent(agent, first, last)
  return mcp.run({ name = "bench deploys" }, function()
    local t0 = mcp.timer.monotime()
    for i = first, last do
      local r, err = mcp.http.post(agent.url .. "/v1/services/" .. service_name(i) .. "/deploy",
        { timeout = 120, headers = { Authorization = "Bearer " .. agent.token } })
      assert(r, err)
      assert(r.status == 200, "deploy " .. service_name(i) .. ": " .. r.status .. " " .. r.body)
    end
    return mcp.timer.monotime() - t0
  end)
end

local function peers(env, args)
  local out, rc, err = run(". " .. q(env.dir .. "/env.sh") .. " && python3 "
    .. q(REPO .. "/bench/deploy/peers.py") .. " " .. args)
  assert(rc == 0, "peers.py " .. args .. ": " .. err .. out)
  return assert(mcp.json.decode(out), "peers.py printed: " .. out)
end

-- Removes the peers' containers and waits for the `podman container
-- cleanup` processes their conmons start (they name the environment's
-- directory), so that they do not load the next measurement. ([c] keeps
-- the shell that runs pgrep from matching its own command line.)
local function remove_peers(env)
  local _, rc, err = run(". " .. q(env.dir .. "/env.sh") .. " && podman ps -aq "
    .. "--filter label=bench.peer=true | xargs -r podman rm -f -t 0 >/dev/null")
  assert(rc == 0, "removing the peers' containers: " .. err)
  pcall(agent_env.wait_for, function()
    local out = run("pgrep -f -- " .. q(env.dir .. ".*[c]ontainer cleanup") .. " || true")
    return out == ""
  end, 15, "podman container cleanup")
  agent_env.sleep(1)
end

local function podman_pid(env)
  return tonumber(agent_env.read_file(env.dir .. "/podman.pid"):match("%d+"))
end

local function sample_memory(agent, env, label, result)
  agent_env.sleep(2)                  -- settle: a deploy's or a request's garbage
  local pids = { agent = agent.pid, podman = podman_pid(env) }
  local s = memory.sample(pids, MEM_SAMPLES, 0.5, agent_env.sleep)
  local lua_kib = agent:eval("return math.floor(collectgarbage('count'))")
  result.memory[label] = { agent_kib = s.agent, podman_kib = s.podman,
    agent_lua_kib = tonumber(lua_kib:match("%d+")) }
  say("memory %s: agent %d KiB, podman %d KiB", label, s.agent[1], s.podman[1])
end

local result = { benchmark = "node", date = os.date("!%Y-%m-%dT%H:%M:%SZ"), memory = {} }
local env = podman_env.start()
note_cleanup("podman-env " .. env.dir)
local services = {}
for i = 1, SERVICES do services[service_name(i)] = service(i) end
local created_srv = {}
local agent
local ok, err = pcall(function()
  agent = agent_env.start({ podman = env, services = services, policies = { nowait = NOWAIT },
    log_level = "info" })
  note_cleanup("pid " .. agent.pid)
  note_cleanup("dir " .. agent.dir)
  for i = 1, SERVICES do
    created_srv[#created_srv + 1] = "/srv/" .. service_name(i)
    note_cleanup("srv " .. service_name(i))
  end
  assert(memory.comm(agent.pid) == "mcp-agent", "agent pid " .. agent.pid .. " is "
    .. tostring(memory.comm(agent.pid)))
  local ppid = podman_pid(env)
  assert(memory.comm(ppid) == "podman", "podman pid " .. ppid .. " is "
    .. tostring(memory.comm(ppid)))
  result.env = { agent = agent_env.AGENT, lib = ROOT, podman_pid_comm = memory.comm(ppid),
    podman_service = "podman system service (tests/env/podman-env.sh: root, slirp4netns, "
      .. "runc, overlay, log level info)" }

  agent_env.sleep(3)
  sample_memory(agent, env, "idle_0", result)

  -- Deploy cost. One deploy first, untimed, warms the agent and Podman (the
  -- last service; the rest of the 100 come after the rounds).
  deploy_through_agent(agent, SERVICES, SERVICES)
  local rounds = { agent = {}, podman_api = {}, podman_run = {} }
  local order = { "agent", "podman_api", "podman_run" }
  local next_service = 1
  for round = 1, DEPLOY_ROUNDS do
    for k = 0, 2 do
      local what = order[(round - 1 + k) % 3 + 1]
      local secs
      if what == "agent" then
        secs = deploy_through_agent(agent, next_service, next_service + DEPLOY_N - 1)
        next_service = next_service + DEPLOY_N
      else
        local prefix = ("peer-r%d-%s"):format(round, what == "podman_api" and "api" or "run")
        for i = 1, DEPLOY_N do
          note_cleanup(("srv %s-%03d"):format(prefix, i))
          created_srv[#created_srv + 1] = ("/srv/%s-%03d"):format(prefix, i)
        end
        local args = what == "podman_api"
          and ("api %s %s %d"):format(q(env.socket), prefix, DEPLOY_N)
          or ("cli %s %d"):format(prefix, DEPLOY_N)
        secs = peers(env, args).seconds
        remove_peers(env)
      end
      table.insert(rounds[what], secs)
      say("deploy round %d: %s %d in %.2f s", round, what, DEPLOY_N, secs)
    end
  end
  result.deploy = { services = DEPLOY_N, rounds = DEPLOY_ROUNDS, seconds = rounds,
    spec = "busybox httpd, one published port, $PORT, bind mount /srv/NAME, 4 labels, "
      .. "init, user 0:0, no restart policy" }

  -- The rest of the 100, untimed.
  if next_service < SERVICES then
    local secs = deploy_through_agent(agent, next_service, SERVICES - 1)
    say("deployed services %d-%d in %.1f s", next_service, SERVICES - 1, secs)
  end
  local status, ps = agent:api("GET", "/v1/ps")
  assert(status == 200, "GET /v1/ps: " .. tostring(status))
  local running = 0
  for _, c in ipairs(ps.containers) do
    if c.state == "running" then running = running + 1 end
  end
  assert(running == SERVICES, ("%d of %d containers run"):format(running, SERVICES))
  sample_memory(agent, env, "idle_100", result)

  result.api = api.run({ agent = agent, env = env, loadgen = LOADGEN, dir = agent.dir,
    rounds = API_ROUNDS, seconds = API_SECONDS, ceiling_seconds = API_CEILING_SECONDS,
    max_seconds = API_MAX_SECONDS, min_requests = API_MIN_REQUESTS,
    warmup = 0.5, connections = API_CONNECTIONS,
    on_pid = function(pid) note_cleanup("pid " .. pid) end })
  sample_memory(agent, env, "after_api_100", result)

  -- The health-check peer, on one more container of the same spec.
  note_cleanup("srv peer-health-001")
  created_srv[#created_srv + 1] = "/srv/peer-health-001"
  local hc = {}
  for _ = 1, HEALTH_ROUNDS do
    local r = peers(env, ("healthcheck peer-health %d"):format(HEALTH_CHECKS))
    hc[#hc + 1] = r.cpu_seconds_per_check * 1000
    result.health_peer = r
  end
  remove_peers(env)
  if result.health_peer then
    result.health_peer.cpu_seconds_per_1000_checks = hc
    result.health_peer.cpu_seconds_per_check = nil
  end
end)
if agent then agent:stop() end
env:stop()
-- The bind mounts' directories this run made under /srv (empty ones only).
for _, d in ipairs(created_srv) do os.execute("rmdir " .. q(d) .. " 2>/dev/null") end
if not ok then
  io.stderr:write("bench/deploy/bench.lua: ", tostring(err), "\n")
  os.exit(1)
end
agent_env.write_file(OUT, mcp.json.encode(result))
os.exit(0)
