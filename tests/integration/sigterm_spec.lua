-- tests/integration/sigterm_spec.lua: SIGTERM while a deploy runs.
--
-- The agent stops accepting work, gives the deploy in flight its stop
-- deadline ([agent] stop_timeout) to finish, abandons it past that, and exits
-- 0 within the deadline. Started again on the same data, it completes or
-- rolls back what was abandoned: the service ends running its last good
-- revision or the new one, never half of each, with nothing left over
-- (tests/lib/convergence.lua says what is checked).
--
-- Trials draw the moment of the signal from a seed (printed); replay one
-- with MCP_SIGTERM_SEED=<seed> MCP_SIGTERM_TRIALS=1.
local mcp = require("mcp.core")
local podman_env = require("tests.env.podman_env")
local agent_env = require("tests.env.agent_env")
local conv = require("tests.lib.convergence")
local json = mcp.json
local run, q = agent_env.run, agent_env.quote

local STOP = 1.5          -- [agent] stop_timeout, seconds
local SLACK = 3           -- beyond it: process exit, a sanitized build, a busy host
local TRIALS = tonumber(os.getenv("MCP_SIGTERM_TRIALS") or "") or 6
local SEED = tonumber(os.getenv("MCP_SIGTERM_SEED") or "") or (os.time() % 100000) * 100

local function definition(name, policy, image)
  return ([==[
name = "%s"
node = "test"
policy = "%s"
[[components]]
name = "web"
image = "%s"
cmd = ["httpd", "-f", "-p", "8080", "-h", "/www"]
stop_timeout = "1s"
[[components.routes]]
port = 8080
[components.health]
kind = "http"
interval = "1s"
timeout = "0.5s"
]==]):format(name, policy, image)
end

-- Starts the server so that its exit code is kept: agent.rc_file holds it
-- once the process has ended.
local function start(agent)
  agent.rc_file = agent.dir .. "/exit-code"
  local pid_file = agent.dir .. "/pid"
  os.remove(agent.rc_file)
  os.remove(pid_file)
  run(("( sh -c 'echo $$ >%s; exec %s server --config %s >>%s 2>&1'; echo $? >%s ) "
    .. ">/dev/null 2>&1 &"):format(q(pid_file), q(agent_env.AGENT), q(agent.config_path),
    q(agent.log), q(agent.rc_file)))
  agent.pid = agent_env.wait_for(function()
    return tonumber(agent_env.read_file(pid_file) or "")
  end, 10, "the agent's pid")
  agent_env.wait_for(function()
    return agent:api("GET", "/v1/health", { timeout = 2 }) == 200
  end, 20, "the agent to answer")
end

-- Sends SIGTERM; returns the exit code and the seconds it took to exit.
local function terminate(agent)
  local t0 = agent_env.now()
  run("kill -TERM " .. agent.pid)
  local rc = agent_env.wait_for(function()
    return tonumber(agent_env.read_file(agent.rc_file) or "")
  end, STOP + 30, "the agent to exit after SIGTERM")
  return rc, agent_env.now() - t0
end

-- Sends one request in the background; returns a function that waits for
-- it and gives its HTTP status (0: no answer) and decoded body.
local function background(agent, method, path)
  local dir = run("mktemp -d /tmp/mcp-sigterm.XXXXXX")
  run(("( curl -s -o %s -w '%%{http_code}' --max-time 60 -X %s -H %s %s >%s; touch %s ) "
    .. ">/dev/null 2>&1 &"):format(q(dir .. "/out"), method,
    q("Authorization: Bearer " .. agent.token), q(agent.url .. path), q(dir .. "/code"),
    q(dir .. "/done")))
  return function()
    agent_env.wait_for(function() return agent_env.read_file(dir .. "/done") end, 70,
      "the request to end")
    local code = tonumber(agent_env.read_file(dir .. "/code") or "") or 0
    local body = json.decode(agent_env.read_file(dir .. "/out") or "")
    run("rm -rf " .. q(dir))
    return code, body
  end
end

local function new_agent(env)
  local agent = agent_env.start({ podman = env, log_level = "info",
    agent_config = ('stop_timeout = "%gs"'):format(STOP),
    config = '[monitor]\nrelist_interval = "1s"\nrestart_first = "0.2s"\n' })
  agent:halt()
  start(agent)
  return agent
end

describe("SIGTERM during a deploy", function()
  local env, agent

  setup(function()
    env = podman_env.start()
    agent = new_agent(env)
    print(("sigterm: %d trials, seeds %d..%d"):format(TRIALS, SEED, SEED + TRIALS - 1))
  end)

  teardown(function()
    if agent then agent:stop() end
    if env then env:stop() end
  end)

  -- Deploys name with image (through PUT and deploy), synchronously.
  local function deploy(name, policy, image)
    local status, body = agent:api("PUT", "/v1/services/" .. name, {
      body = definition(name, policy, image), headers = { ["Content-Type"] = "application/toml" } })
    assert.is_true(status == 200 or status == 201, json.encode(body))
    status, body = agent:api("POST", "/v1/services/" .. name .. "/deploy")
    assert.equal(200, status, json.encode(body))
    return body
  end

  -- One trial: a deployed service, a redeploy with the other image, SIGTERM
  -- `delay` seconds into it (after the request was sent; with `started`,
  -- after the agent logged that the deploy began); then the checks.
  local function trial_body(name, policy, delay, expect_abandon, started)
    local old = deploy(name, policy, env.image1)
    local status = agent:api("PUT", "/v1/services/" .. name, {
      body = definition(name, policy, env.image2),
      headers = { ["Content-Type"] = "application/toml" } })
    assert.equal(200, status)
    local log_before = #agent:log_text()
    local wait = background(agent, "POST", "/v1/services/" .. name .. "/deploy")
    if started then
      agent_env.wait_for(function()
        return agent:log_text():find(name .. ": deploying: revision", log_before + 1, true)
      end, 20, "the deploy to begin")
    end
    os.execute(("sleep %.3f"):format(delay))
    local rc, took = terminate(agent)
    local code, body = wait()
    local log = agent:log_text():sub(log_before + 1)
    assert.equal(0, rc, "exit code; log:\n" .. log)
    assert.is_true(took <= STOP + SLACK, ("exited %.2fs after SIGTERM (stop_timeout %gs); log:\n%s")
      :format(took, STOP, log))
    local abandoned = log:find("abandoning", 1, true) ~= nil
    if expect_abandon ~= nil then
      assert.equal(expect_abandon, abandoned, "abandoned?; log:\n" .. log)
    end
    -- The deploy answered, or the agent abandoned it: not both, not neither.
    if code == 200 then
      assert.is_false(abandoned, "a deploy that answered 200 was abandoned; log:\n" .. log)
    end

    local ok, ierr = conv.integrity(agent.data_dir)
    assert(ok, ierr)
    start(agent)
    local allowed = { [name] = { { status = "running", image = env.image2,
      revision = code == 200 and body.revision or nil,
      newer_than = code ~= 200 and old.revision or nil } } }
    if code ~= 200 then
      table.insert(allowed[name], { status = "running", image = env.image1,
        revision = old.revision })
    end
    local w, problems = conv.settle(agent, env, allowed, 25)
    assert.are.same({}, problems, "after the restart; agent log:\n"
      .. (run("tail -n 30 " .. q(agent.log))))
    local st = conv.state(w, name)
    print(("sigterm %s (%s) after %.2fs: deploy answered %d, exit %d in %.2fs%s; "
      .. "restarted: %s %s"):format(name, policy, delay, code, rc, took,
      abandoned and " (abandoned)" or "", st.revision, st.image))
    -- Leave nothing for the next trial.
    assert.equal(200, (agent:api("DELETE", "/v1/services/" .. name)))
  end

  -- A trial that fails leaves its mess to no other: the next one gets a
  -- fresh agent and an empty Podman.
  local function trial(...)
    local ok, err = pcall(trial_body, ...)
    if not ok then
      agent:stop()
      env:podman("rm -af -t 0")
      agent = new_agent(env)
      error(err, 0)
    end
  end

  it("lets a short recreate deploy finish before it exits 0", function()
    trial("term-short", "recreate", 0.05, false, true)
  end)

  it("abandons a rolling deploy longer than stop_timeout, exits 0 in time, and the next "
    .. "start rolls it back or completes it", function()
    -- A rolling deploy drains the old revision for 2 s after the new one is
    -- healthy: from its start, more than STOP is left.
    trial("term-long", "rolling", 0.1, true, true)
  end)

  for i = 1, TRIALS do
    local seed = SEED + i - 1
    local policy = i % 2 == 0 and "rolling" or "recreate"
    it(("ends whole whatever the moment of the signal (%s, seed %d)"):format(policy, seed),
      function()
        math.randomseed(seed)
        local delay = math.random() * (policy == "rolling" and 2.8 or 0.6)
        trial("term-" .. i, policy, delay, nil)
      end)
  end
end)
