-- tests/valgrind/leaks_spec.lua: the agent under valgrind memcheck, doing
-- MCP_LEAK_ROUNDS rounds of work, then stopped with SIGTERM so that
-- valgrind writes its leak summary. tests/valgrind/run.sh runs it twice
-- (few rounds, many rounds) and compares: a leak that grows with the work
-- done shows as more bytes lost after more rounds. Every ten rounds it
-- also prints the Lua heap after a full collection and the process's RSS
-- (a leak of objects still referenced shows there, not in valgrind's
-- summary); without MCP_AGENT_WRAPPER it runs the agent as it is, fast.
-- Not a suite of tests/run.sh (it takes minutes): docs/reliability.md has
-- the results.
--
-- One round: the requests an operator and a dashboard make (list, show,
-- status, metrics, events, render, ps, a definition PUT, a bad request);
-- every tenth round also a deploy (recreate, then rolling) and a stop and
-- start.
local podman_env = require("tests.env.podman_env")
local agent_env = require("tests.env.agent_env")

local ROUNDS = tonumber(os.getenv("MCP_LEAK_ROUNDS") or "") or 10

local function definition(policy, image)
  return ([==[
name = "leak"
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
]==]):format(policy, image)
end

describe("the agent under valgrind", function()
  local env, agent
  setup(function()
    env = podman_env.start()
    agent = agent_env.start({ podman = env, log_level = "warn",
      agent_config = 'stop_timeout = "30s"' })
  end)
  teardown(function()
    if agent then agent:stop() end
    if env then env:stop() end
  end)

  it(("serves %d rounds of requests and deploys, then stops"):format(ROUNDS), function()
    local toml = { ["Content-Type"] = "application/toml" }
    for i = 1, ROUNDS do
      local image = i % 2 == 0 and env.image2 or env.image1
      local policy = math.floor(i / 10) % 2 == 0 and "recreate" or "rolling"
      local s = agent:api("PUT", "/v1/services/leak", { body = definition(policy, image),
        headers = toml })
      assert.is_true(s == 200 or s == 201, "PUT: " .. s)
      if i % 10 == 1 then
        assert.equal(200, (agent:api("POST", "/v1/services/leak/deploy")))
        assert.equal(200, (agent:api("POST", "/v1/services/leak/stop")))
        assert.equal(200, (agent:api("POST", "/v1/services/leak/start")))
      end
      assert.equal(200, (agent:api("GET", "/v1/services")))
      assert.equal(200, (agent:api("GET", "/v1/services/leak")))
      assert.equal(200, (agent:api("GET", "/v1/status")))
      assert.equal(200, (agent:api("GET", "/metrics")))
      assert.equal(200, (agent:api("GET", "/v1/events?limit=20")))
      assert.equal(200, (agent:api("GET", "/v1/services/leak/render")))
      assert.equal(200, (agent:api("GET", "/v1/ps")))
      assert.equal(400, (agent:api("PUT", "/v1/services/leak", { body = "name = ",
        headers = toml })))
      assert.equal(401, (agent:api("GET", "/v1/services", { token = "mcp_nope" })))
      if i % 10 == 0 or i == 1 then
        -- What stays after a full collection, and the process's resident
        -- size: a leak of live objects (a table that only grows) shows here.
        local heap = agent:eval('collectgarbage("collect"); collectgarbage("collect"); '
          .. 'return math.floor(collectgarbage("count"))')
        local rss = agent_env.run("grep VmRSS /proc/" .. agent.pid .. "/status")
        print(("round %d: Lua heap %s KiB after a full collection, %s"):format(i,
          tostring(heap), rss:gsub("%s+", " ")))
      end
    end
    assert.equal(200, (agent:api("DELETE", "/v1/services/leak")))
    -- SIGTERM, and time for valgrind to write its summary.
    local pid = agent.pid
    os.execute("kill -TERM " .. pid)
    agent_env.wait_for(function()
      return os.execute("kill -0 " .. pid .. " 2>/dev/null") ~= 0
    end, 300, "the agent to exit under valgrind")
  end)
end)
