-- tests/integration/reload_spec.lua: hot reload of a real agent: its files
-- on disk, its watcher, SIGHUP, the API and the console, and (with a real
-- Podman) what a reload does not do to containers, and a reload storm under
-- API load.
local podman_env = require("tests.env.podman_env")
local agent_env = require("tests.env.agent_env")
local mcp = require("mcp.core")

local run, q, write_file, read_file = agent_env.run, agent_env.quote, agent_env.write_file,
  agent_env.read_file
local now = agent_env.now

-- A policy whose behaviour the console can see: describe() says its taste.
local FLAVOUR = [[
-- flavour: a deploy policy for the reload tests
local flavour = {}

flavour.taste = "%s"

function flavour.deploy(ctx)
  return ctx:fail("flavour " .. flavour.taste .. " does not deploy")
end

function flavour.describe()
  return "tastes " .. flavour.taste
end

return flavour
]]

-- A policy with a slow function, to show that a running task keeps its code.
local SLOWPOKE = [[
local slowpoke = {}
function slowpoke.answer()
  %s
  return "answer of %s"
end
return slowpoke
]]

-- A TOML definition: top goes to the service's table, comp to its component's.
local function service_toml(name, top, comp)
  return ([==[
name = "%s"
node = "test"
%s
[[components]]
name = "web"
image = "localhost/mcp-test:1.0"
cmd = ["httpd", "-f", "-p", "8080", "-h", "/www"]
%s
[[components.routes]]
port = 8080
]==]):format(name, top or "", comp or "")
end

local function status(agent)
  local code, body = agent:api("GET", "/v1/status")
  assert.equal(200, code, agent:log_tail())
  return body
end

local function generation(agent)
  return status(agent).reload.generation
end

-- Polls fn every 20 ms until it returns a true value; fails after secs.
local function soon(fn, secs, what)
  local deadline = now() + (secs or 5)
  while true do
    local v = fn()
    if v then return v end
    if now() > deadline then error("timed out waiting for " .. (what or "a condition"), 2) end
    os.execute("sleep 0.02")
  end
end

-- The agent's /metrics text.
local function metrics(agent)
  local code, _, text = agent:api("GET", "/metrics")
  assert.equal(200, code)
  return text
end

local function escape(s) return (s:gsub("%p", "%%%0")) end

-- Checks that the last reload failed with an error at file:line (line may be
-- nil: a definition's field errors name the field instead), everywhere an
-- operator looks: the log, /v1/status, an event, /metrics; and that the
-- generation `gen` still runs.
local function assert_reported(agent, gen, file, line, what)
  local pos = escape(file) .. (line and (":" .. line .. ":") or ":")
  local st = status(agent)
  assert.equal(gen, st.reload.generation, "the running generation must stay")
  assert.is_truthy((st.reload.error or ""):find(pos), "status.reload.error: "
    .. tostring(st.reload.error))
  assert.is_truthy(st.last_reload_error.message:find(pos))
  if what then assert.matches(what, st.last_reload_error.message) end
  assert.matches(pos, agent:log_text())
  local code, body = agent:api("GET", "/v1/events?limit=50")
  assert.equal(200, code)
  local found
  for _, e in ipairs(body.events) do
    if e.kind == "reload_failed" and (e.message or ""):find(pos) then found = e end
  end
  assert.is_truthy(found, "a reload_failed event naming " .. pos)
  local text = metrics(agent)
  assert.matches("mcp_reload_failed 1", text, 1, true)
  assert.matches('mcp_reload_error{file="' .. escape(file) .. '",line="' .. (line or "")
    .. '",', text)
  assert.matches('mcp_reloads_total{result="failed"} [1-9]', text)
end

-- Waits for the reload the watcher makes after a file change to fail.
local function wait_failed(agent, file)
  return soon(function()
    local st = status(agent)
    return st.reload.error and st.reload.error:find(file, 1, true)
  end, 5, "the reload of " .. file .. " to fail")
end

-- Waits for a reload to succeed after `gen`.
local function wait_reloaded(agent, gen)
  return soon(function()
    local st = status(agent)
    return st.reload.generation > gen and not st.reload.error and st.reload.generation
  end, 5, "a reload after generation " .. gen)
end

describe("hot reload of a running agent", function()
  local agent

  setup(function()
    agent = agent_env.start({ policies = { flavour = FLAVOUR:format("v1") },
      services = { tasty = service_toml("tasty", 'policy = "flavour"') } })
  end)

  teardown(function()
    if agent then agent:stop() end
  end)

  it("makes a changed policy live within a second of saving it, without a restart", function()
    local pid = run(("%s console --socket %s -e 'mcp.proc.pid()'"):format(
      q(agent_env.AGENT), q(agent.dir .. "/console.sock")))
    local gen = generation(agent)
    local out = agent:eval("mcp.state.gen.policies.flavour.describe()")
    assert.matches("tastes v1", out)

    write_file(agent.policies_dir .. "/flavour.lua", FLAVOUR:format("v2"))
    local saved = now()
    soon(function()
      return agent:eval("mcp.state.gen.policies.flavour.describe()"):find("tastes v2")
    end, 5, "the new policy")
    local took = now() - saved
    assert.is_true(took < 1, ("the new policy took %.2f s to be live"):format(took))

    assert.is_true(agent:alive())
    assert.equal(pid, run(("%s console --socket %s -e 'mcp.proc.pid()'"):format(
      q(agent_env.AGENT), q(agent.dir .. "/console.sock"))), "the same process")
    assert.is_true(generation(agent) > gen)
    assert.matches("changed: " .. escape(agent.policies_dir .. "/flavour.lua"),
      agent:log_text())
  end)

  it("keeps the running generation on a syntax error and reports file and line", function()
    local gen = generation(agent)
    local file = agent.policies_dir .. "/broken.lua"
    write_file(file, "local broken = {}\nfunction broken.deploy(ctx)\n  if then\n  end\n"
      .. "end\nreturn broken\n")
    wait_failed(agent, file)
    assert_reported(agent, gen, file, 3)
    -- The old generation serves: its policies, its definitions.
    assert.matches("tastes v2", agent:eval("mcp.state.gen.policies.flavour.describe()"))
    local code, body = agent:api("POST", "/v1/reload")
    assert.equal(422, code)
    assert.equal("reload_failed", body.error.code)
    assert.matches(escape(file) .. ":3:", body.error.message)

    os.remove(file)
    wait_reloaded(agent, gen)
    local text = metrics(agent)
    assert.matches("mcp_reload_failed 0", text, 1, true)
    assert.not_matches('mcp_reload_error{', text, 1, true)
    assert.is_nil(status(agent).last_reload_error)
  end)

  it("keeps the running generation on an error at load time and reports file and line",
      function()
    local gen = generation(agent)
    local file = agent.policies_dir .. "/fails.lua"
    write_file(file, "local fails = {}\nlocal settings\nfails.timeout = settings.timeout\n"
      .. "return fails\n")
    wait_failed(agent, file)
    assert_reported(agent, gen, file, 3, "attempt to index local 'settings'")
    os.remove(file)
    wait_reloaded(agent, gen)
  end)

  it("keeps the running generation on an invalid definition and reports file and line "
      .. "(or field)", function()
    local gen = generation(agent)
    -- Not TOML: the parser names the line.
    local file = agent.services_dir .. "/bad.toml"
    write_file(file, 'name = "bad"\nnode = "test"\n[[components]]\nname = "web"\nimage =\n')
    wait_failed(agent, file)
    assert_reported(agent, gen, file, 5)
    -- TOML, but not a definition: the validator names the field.
    write_file(file, 'name = "bad"\nnode = "test"\n[[components]]\nname = "web"\n'
      .. 'image = "localhost/mcp-test:1.0"\nrestart = "sometimes"\n')
    soon(function()
      return (status(agent).reload.error or ""):find("restart", 1, true)
    end, 5, "the field error")
    assert_reported(agent, gen, file, nil, "components%[1%]%.restart")
    -- A Lua definition that fails as it runs: file and line.
    os.remove(file)
    file = agent.services_dir .. "/bad.lua"
    write_file(file, 'local image\nreturn {\n  name = "bad", node = "test",\n'
      .. '  components = { { name = "web", image = image .. ":1.0" } },\n}\n')
    wait_failed(agent, file)
    assert_reported(agent, gen, file, 4, "attempt to concatenate")
    os.remove(file)
    wait_reloaded(agent, gen)
  end)

  it("reloads on SIGHUP, on POST /v1/reload and on reload() at the console", function()
    local gen = generation(agent)
    os.execute("kill -HUP " .. agent.pid)
    local after = wait_reloaded(agent, gen)
    assert.matches("SIGHUP: reloading", agent:log_text(), 1, true)
    assert.matches("%(SIGHUP%)", agent:log_text())

    -- (The checkout's library is watched too: another reload may come in
    -- between, so generations are compared, not counted.)
    local code, body = agent:api("POST", "/v1/reload")
    assert.equal(200, code, agent:log_tail())
    assert.is_true(body.previous >= after)
    assert.equal(body.previous + 1, body.generation)
    assert.is_true(body.files > 20, "the library, the policies and the definitions")
    assert.is_true(body.took_ms > 0 and body.took_ms < 1000, "took_ms " .. body.took_ms)
    for _, k in ipairs({ "library_ms", "files_ms", "definitions_ms" }) do
      assert.is_number(body.phases[k])
    end

    local out, rc = agent:eval("reload()")
    assert.equal(0, rc)
    local from, to = out:match("generation (%d+) → (%d+): %d+ files")
    assert.is_truthy(from, out)
    assert.is_true(tonumber(from) >= body.generation)
    assert.equal(tonumber(from) + 1, tonumber(to))
    assert.is_true(generation(agent) >= tonumber(to))
  end)

  it("lets a task that started before a reload finish on its own generation's code", function()
    local file = agent.policies_dir .. "/slowpoke.lua"
    local gen = generation(agent)
    write_file(file, SLOWPOKE:format("mcp.sleep(2)", "v1"))
    gen = wait_reloaded(agent, gen)
    -- A console evaluation that runs v1's answer() in the background...
    local outfile = agent.dir .. "/slow.out"
    run(("%s console --socket %s -e %s >%s 2>&1 &"):format(q(agent_env.AGENT),
      q(agent.dir .. "/console.sock"), q("mcp.state.gen.policies.slowpoke.answer()"),
      q(outfile)))
    os.execute("sleep 0.3")
    -- ...while v2 replaces it.
    write_file(file, SLOWPOKE:format("", "v2"))
    wait_reloaded(agent, gen)
    assert.matches("answer of v2", agent:eval("mcp.state.gen.policies.slowpoke.answer()"))
    assert.equal("", read_file(outfile), "the first evaluation is still running")
    soon(function() return (read_file(outfile) or "") ~= "" end, 5, "the first evaluation")
    assert.matches("answer of v1", read_file(outfile))
  end)
end)

describe("hot reload with a real Podman", function()
  local env, agent

  setup(function()
    env = podman_env.start()
    agent = agent_env.start({ podman = env, policies = { flavour = FLAVOUR:format("v1") },
      services = { steady = service_toml("steady", nil, 'env = { GREETING = "one" }'),
        tasty = service_toml("tasty", 'policy = "flavour"') } })
  end)

  teardown(function()
    if agent then agent:stop() end
    if env then env:stop() end
  end)

  local function container(name)
    local out, rc = env:podman({ "inspect", "--format", "{{.Id}} {{.State.StartedAt}}", name })
    if rc ~= 0 then return nil end
    return out:match("^(%S+) (.-)%s*$")
  end

  it("uses a changed policy for the next deploy", function()
    local code, body = agent:api("POST", "/v1/services/tasty/deploy")
    assert.equal(422, code)
    assert.matches("flavour v1 does not deploy", body.error.message)
    local gen = generation(agent)
    write_file(agent.policies_dir .. "/flavour.lua", FLAVOUR:format("v2"))
    wait_reloaded(agent, gen)
    code, body = agent:api("POST", "/v1/services/tasty/deploy")
    assert.equal(422, code)
    assert.matches("flavour v2 does not deploy", body.error.message)
  end)

  it("never restarts a container by itself: deploy, change the definition, reload", function()
    local code = agent:api("POST", "/v1/services/steady/deploy")
    assert.equal(200, code, agent:log_tail())
    local id, started = container("steady-web")
    assert.is_string(id)

    local gen = generation(agent)
    agent:write_service("steady", service_toml("steady", nil, 'env = { GREETING = "two" }'))
    gen = wait_reloaded(agent, gen)
    assert.equal(200, (agent:api("POST", "/v1/reload")))
    os.execute("kill -HUP " .. agent.pid)
    wait_reloaded(agent, gen + 1)
    os.execute("sleep 1")       -- time for a wrong restart to show

    local id2, started2 = container("steady-web")
    assert.equal(id, id2, "the same container")
    assert.equal(started, started2, "not restarted")
    local _, svc = agent:api("GET", "/v1/services/steady")
    assert.is_true(svc.outdated, "the changed definition is drift, for the operator to deploy")
  end)

  it("deploys a changed definition by itself when the service sets auto_deploy = true",
      function()
    agent:write_service("eager", service_toml("eager", "auto_deploy = true",
      'env = { GREETING = "one" }'))
    local id = soon(function() return container("eager-web") end, 30, "eager's deploy")
    agent:write_service("eager", service_toml("eager", "auto_deploy = true",
      'env = { GREETING = "two" }'))
    local id2 = soon(function()
      local now_id = container("eager-web")
      return now_id and now_id ~= id and now_id
    end, 30, "eager's redeploy")
    assert.is_string(id2)
    local _, svc = agent:api("GET", "/v1/services/eager")
    assert.is_false(svc.outdated)
  end)

  it("answers GET /v1/ps without one failure while 100 reloads happen", function()
    local script = agent.dir .. "/count.lua"
    write_file(script, [[
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init() statuses = {} end
function response(status) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary)
  local e = summary.errors
  io.write(("requests %d\nerrors %d %d %d %d %d\n"):format(summary.requests, e.connect,
    e.read, e.write, e.status, e.timeout))
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses")) do io.write(("status %d %d\n"):format(status, n)) end
  end
end
]])
    local out = agent.dir .. "/wrk.out"
    local wrk_pid = run(("wrk -t2 -c8 -d300s --timeout 10s -s %s -H %s %s >%s 2>&1 & echo $!")
      :format(q(script), q("Authorization: Bearer " .. agent.token), q(agent.url .. "/v1/ps"),
      q(out)))
    os.execute("sleep 1")
    local gen = generation(agent)
    local t0 = now()
    local ok, err = pcall(function()
      for i = 1, 100 do
        local code, _, text = agent:api("POST", "/v1/reload")
        assert.equal(200, code, "reload " .. i .. ": " .. tostring(text) .. "\n"
          .. agent:log_tail(30))
      end
    end)
    local took = now() - t0
    os.execute("sleep 0.5")
    os.execute("kill -INT " .. wrk_pid)
    if not ok then error(err, 0) end
    local text = soon(function()
      local t = read_file(out) or ""
      return t:find("errors") and t:find("\nstatus") and t
    end, 10, "wrk's summary")
    local requests = tonumber(text:match("requests (%d+)"))
    assert.is_true(requests > 100, text)
    assert.matches("errors 0 0 0 0 0", text, 1, true)
    local ok = 0
    for status, n in text:gmatch("status (%d+) (%d+)") do
      assert.equal("200", status, text)
      ok = ok + tonumber(n)
    end
    assert.equal(requests, ok)
    assert.is_true(generation(agent) >= gen + 100)
    print(("\n# %d requests to /v1/ps during 100 reloads (%.1f s), none failed"):format(
      requests, took))
  end)
end)
