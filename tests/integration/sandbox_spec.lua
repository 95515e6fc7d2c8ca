-- tests/integration/sandbox_spec.lua: operator code that misbehaves, in a
-- real agent. Each policy is stopped or refused with an error that names the
-- limit (or what it reached for) and the file, at load time (the reload
-- fails, the running generation stays) and at deploy time (the deploy fails;
-- a real Podman, though the policies fail before they touch it), while the
-- agent keeps answering /v1/health.
local podman_env = require("tests.env.podman_env")
local agent_env = require("tests.env.agent_env")

local run, q, write_file, read_file = agent_env.run, agent_env.quote, agent_env.write_file,
  agent_env.read_file
local now = agent_env.now

-- Small limits, so that a runaway policy ends quickly.
local LIMITS = [[
[lua]
task_instructions = 20000000
task_timeout = "6s"
task_memory = "32MiB"
]]

local function escape(s) return (s:gsub("%p", "%%%0")) end

-- What a policy does wrong, as the body of a function (at load time, its
-- chunk's top level; at deploy time, its deploy hook), and what the error
-- must say. Line numbers count from the line `body` starts on.
local CASES = {
  { "loops forever", "local n = 0\nwhile true do n = n + 1 end",
    "instruction budget of 20000000 exceeded %(%[lua%] task_instructions%)" },
  { "allocates without bound",
    "local hoard = {}\nwhile true do hoard[#hoard + 1] = (\"x\"):rep(4096) .. #hoard end",
    "memory cap of 33554432 bytes exceeded %(%[lua%] task_memory%)" },
  { "allocates one huge string", "local big = (\"x\"):rep(2 ^ 30)",
    "memory cap of 33554432 bytes exceeded %(%[lua%] task_memory%)" },
  { "catches its own abort with pcall and loops again", table.concat({
      "while true do",
      "  local ok, err = pcall(function() while true do end end)",
      "  -- caught the limit: try again",
      "end" }, "\n"),
    "instruction budget of 20000000 exceeded" },
  { "calls os.execute", "\nos.execute(\"touch /tmp/mcp-sandbox-pwned\")",
    ":2: os%.execute is not available to policies and definitions" },
  { "calls io.open", "local f = io.open(\"/etc/passwd\")",
    ":1: io is not available to policies and definitions" },
  { "requires ffi", "local ffi = require(\"ffi\")",
    ":1: require is not available to policies and definitions" },
  { "loads bytecode", "local f = load(\"\\27LJ\\2\\0\")",
    ":1: load: binary chunks %(bytecode%) are not allowed" },
  { "calls string.dump", "local code = string.dump(function() end)",
    ":1: string%.dump is not available to policies and definitions" },
  { "calls dump as a string method", "local code = (\"\"):dump()",
    ":1: string%.dump is not available to policies and definitions" },
  { "writes to a shared library table", "string.upper = string.lower",
    ":1: string is read%-only in the sandbox %(tried to set string%.upper%)" },
  { "writes to mcp", "mcp.log = nil",
    ":1: mcp is read%-only in the sandbox %(tried to set mcp%.log%)" },
  { "writes into an mcp binding", "mcp.podman.create = function() end",
    ":1: mcp%.podman is read%-only in the sandbox" },
  { "reaches for mcp.exec", "mcp.exec.run({ cmd = { \"id\" } })",
    ":1: mcp%.exec is not available to policies and definitions" },
}

-- /v1/health polled in the background every 50 ms; stop() returns the
-- number of answers and the failures.
local function watch_health(agent)
  local file = agent.dir .. "/health.log"
  local stop = agent.dir .. "/health.stop"
  os.remove(stop)
  write_file(file, "")
  run(("sh -c %s >/dev/null 2>&1 &"):format(q(([[
while [ ! -e %s ]; do
  curl -s -o /dev/null --max-time 10 -w '%%{http_code}\n' %s >> %s
  sleep 0.05
done]]):format(q(stop), q(agent.url .. "/v1/health"), q(file)))))
  return function()
    write_file(stop, "")
    os.execute("sleep 0.3")
    local ok, bad = 0, {}
    for code in (read_file(file) or ""):gmatch("(%d+)\n") do
      if code == "200" then ok = ok + 1 else bad[#bad + 1] = code end
    end
    return ok, bad
  end
end

describe("the sandbox of policies and definitions, at load time", function()
  local agent, stop_health

  setup(function()
    agent = agent_env.start({ config = LIMITS })
    stop_health = watch_health(agent)
  end)

  teardown(function()
    local ok, bad = 0, {}
    if stop_health then ok, bad = stop_health() end
    if agent then agent:stop() end
    assert.is_true(ok > 0, "health answers: " .. ok)
    assert.same({}, bad, "/v1/health failed while policies misbehaved")
  end)

  local function generation()
    local _, st = agent:api("GET", "/v1/status")
    return st.reload.generation
  end

  for _, case in ipairs(CASES) do
    local what, body, expect = case[1], case[2], case[3]
    it("refuses a policy that " .. what, function()
      local gen = generation()
      local file = agent.policies_dir .. "/evil.lua"
      write_file(file, body .. "\nreturn {}\n")
      local t0 = now()
      local code, res = agent:api("POST", "/v1/reload")
      local took = now() - t0
      local _, st = agent:api("GET", "/v1/status")
      os.remove(file)
      assert.equal(422, code, agent:log_tail())
      local msg = res.error.message
      assert.matches(escape(file), msg)
      assert.matches(expect, msg)
      assert.is_true(took < 5, ("the reload took %.1f s"):format(took))
      assert.equal(200, (agent:api("GET", "/v1/health")))
      -- The generation that ran when the reload failed still runs (the one
      -- before may have been replaced since `gen` was read: the watcher
      -- reloads after the previous test's cleanup).
      assert.is_true(st.reload.generation >= gen)
      assert.equal(st.last_reload_error.generation, st.reload.generation,
        "the running generation stays")
      assert.matches(escape(file), st.last_reload_error.message)
    end)
  end

  it("stops a policy that loops when the watcher reloads it (a task without limits)",
      function()
    local gen = generation()
    local file = agent.policies_dir .. "/spin.lua"
    write_file(file, "while true do end\nreturn {}\n")
    agent_env.wait_for(function()
      local _, st = agent:api("GET", "/v1/status")
      return st.reload.error and st.reload.error:find(file, 1, true)
    end, 10, "the watcher's reload to fail")
    local _, st = agent:api("GET", "/v1/status")
    assert.matches("instruction budget of 20000000 exceeded", st.reload.error)
    assert.equal(st.last_reload_error.generation, st.reload.generation)
    assert.matches("^changed: ", st.last_reload_error.why)
    gen = st.reload.generation
    os.remove(file)
    agent_env.wait_for(function() return generation() > gen end, 10, "the next reload")
  end)

  it("stops a Lua service definition that loops", function()
    local file = agent.services_dir .. "/spin.lua"
    write_file(file, "local n = 0\nwhile true do n = n + 1 end\nreturn {}\n")
    local code, res = agent:api("POST", "/v1/reload")
    os.remove(file)
    assert.equal(422, code)
    assert.matches(escape(file) .. ": stopped while loading: instruction budget",
      res.error.message)
  end)

  it("refuses a definition whose tables contain themselves", function()
    local file = agent.services_dir .. "/loop.lua"
    write_file(file, 'local d = { name = "loop", node = "test", components = {} }\n'
      .. "d.components[1] = d\nreturn d\n")
    local code, res = agent:api("POST", "/v1/reload")
    os.remove(file)
    assert.equal(422, code)
    assert.matches(escape(file) .. ": components%[1%]: a table that contains itself",
      res.error.message)
  end)

  it("gives every file its own globals", function()
    write_file(agent.policies_dir .. "/left.lua", table.concat({
      "note = \"left's\"",
      "return { peek = function() return note end }" }, "\n"))
    write_file(agent.policies_dir .. "/right.lua",
      "return { peek = function() return tostring(note) end }")
    local code = agent:api("POST", "/v1/reload")
    assert.equal(200, code, agent:log_tail())
    assert.matches("left's", agent:eval("mcp.state.gen.policies.left.peek()"))
    assert.matches('"nil"', agent:eval("mcp.state.gen.policies.right.peek()"))
    assert.matches("nil", agent:eval("tostring(rawget(_G, 'note'))"))
    os.remove(agent.policies_dir .. "/left.lua")
    os.remove(agent.policies_dir .. "/right.lua")
  end)

  it("never ran the command the policy asked for", function()
    assert.is_nil(io.open("/tmp/mcp-sandbox-pwned"))
  end)
end)

describe("the sandbox of policies, at deploy time", function()
  local env, agent, stop_health

  setup(function()
    env = podman_env.start()
    agent = agent_env.start({ podman = env, config = LIMITS,
      policies = { evil = "local evil = {}\nfunction evil.deploy(ctx) end\nreturn evil\n" },
      services = { victim = [==[
name = "victim"
node = "test"
policy = "evil"
[[components]]
name = "web"
image = "localhost/mcp-test:1.0"
cmd = ["httpd", "-f", "-p", "8080", "-h", "/www"]
[[components.routes]]
port = 8080
]==] } })
    stop_health = watch_health(agent)
  end)

  teardown(function()
    local ok, bad = 0, {}
    if stop_health then ok, bad = stop_health() end
    if agent then agent:stop() end
    if env then env:stop() end
    assert.is_true(ok > 0, "health answers: " .. ok)
    assert.same({}, bad, "/v1/health failed while policies misbehaved")
  end)

  -- Installs evil.lua with `body` as its deploy hook and deploys victim.
  local function deploy_with(body)
    local file = agent.policies_dir .. "/evil.lua"
    write_file(file, "local evil = {}\nfunction evil.deploy(ctx)\n" .. body
      .. "\nend\nreturn evil\n")
    local code = agent:api("POST", "/v1/reload")
    assert.equal(200, code, agent:log_tail())
    local t0 = now()
    local status, res = agent:api("POST", "/v1/services/victim/deploy")
    return status, res, now() - t0, file
  end

  for _, case in ipairs(CASES) do
    local what, body, expect = case[1], case[2], case[3]
    it("fails the deploy of a policy that " .. what, function()
      local status, res, took, file = deploy_with(body)
      assert.equal(422, status, agent:log_tail())
      assert.equal("deploy_failed", res.error.code)
      local msg = res.error.message
      assert.matches(escape(file), msg)
      if expect:sub(1, 1) == ":" then
        -- A refusal says where: the hook's body starts on line 3.
        local line = tonumber(expect:match("^:(%d+):")) + 2
        expect = ":" .. line .. expect:gsub("^:%d+", "")
      else
        assert.matches(escape(file) .. ": deploy: ", msg)
      end
      assert.matches(expect, msg)
      assert.is_true(took < 5, ("the deploy took %.1f s"):format(took))
      assert.equal(200, (agent:api("GET", "/v1/health")))
      -- The executor's own code ran after the policy's end: it recorded the
      -- revision as failed, with the message, and said so in an event.
      local _, evs = agent:api("GET", "/v1/events?service=victim&limit=5")
      local last
      for _, e in ipairs(evs.events) do
        if e.kind == "deploy_failed" and (not last or e.id > last.id) then last = e end
      end
      assert.is_truthy(last, "a deploy_failed event")
      assert.matches(expect, last.message)
    end)
  end

  it("ends a policy at the deadline while it waits", function()
    local status, res, took = deploy_with("mcp.sleep(3600)")
    assert.is_true(status == 422 or status == 504, tostring(status))
    assert.matches("deadline of 6 s exceeded", res.error.message)
    assert.is_true(took >= 5.5 and took < 9, ("after %.1f s"):format(took))
    assert.equal(200, (agent:api("GET", "/v1/health")))
  end)

  it("keeps the agent's objects out of reach: the deploy context's metatable", function()
    local status, res = deploy_with(table.concat({
      "assert(getmetatable(ctx) == nil, 'getmetatable(ctx) must be nil')",
      "setmetatable(ctx, {})" }, "\n"))
    assert.equal(422, status)
    assert.matches(":4: setmetatable: cannot change the metatable of a table the agent owns",
      res.error.message)
    -- and the next deploy still has the real context
    status, res = deploy_with("return ctx:fail('failed on purpose, revision ' .. ctx.revision)")
    assert.equal(422, status)
    assert.matches("failed on purpose, revision r%d+", res.error.message)
  end)
end)
