-- The agent as a process: its config, its start, its stop.
local agent_env = require("tests.env.agent_env")
local run, q = agent_env.run, agent_env.quote
local AGENT = agent_env.AGENT

local dir
local function write(name, text)
  local path = dir .. "/" .. name
  agent_env.write_file(path, text)
  return path
end

local function check(text)
  local path = write("agent.toml", text)
  local out, code, err = run(q(AGENT) .. " check-config --config " .. q(path))
  return code, err, out, path
end

describe("the agent config", function()
  setup(function() dir = run("mktemp -d /tmp/mcp-config-test.XXXXXX") end)
  teardown(function() os.execute("rm -rf " .. q(dir)) end)

  it("loads the example config", function()
    local out, code, err = run(q(AGENT) .. " check-config --config "
      .. q(agent_env.ROOT .. "/examples/agent.toml"))
    assert.equal(0, code, err)
    assert.matches("examples/agent.toml: ok", out)
  end)

  -- Each class of error, and the exact message a person reads.
  local cases = {
    { "a missing file", nil, "cannot read the config: No such file or directory" },
    { "a syntax error", '[agent]\nnode "x"\n', "agent.toml:2:6: expected '=' after key \"node\"" },
    { "an unknown section", '[agnet]\nnode = "x"\n',
      'agent.toml:1: unknown section "agnet" (did you mean "agent"?)' },
    { "an unknown key", '[api]\nlsten = []\n',
      'agent.toml:2: [api] unknown key "lsten" (did you mean "listen"?)' },
    { "a wrong type", '[api]\nlisten = 9444\n',
      "agent.toml:2: [api] listen: expected a list of strings, got integer" },
    { "a wrong item type", '[api]\nlisten = ["127.0.0.1:1", 2]\n',
      "agent.toml:2: [api] listen: item 2: expected a string, got integer" },
    { "a bad duration", '[podman]\ntimeout = "soon"\n',
      'agent.toml:2: [podman] timeout: expected a duration like "30s", got "soon"' },
    { "a bad size", '[api]\nmax_body = "lots"\n',
      'agent.toml:2: [api] max_body: expected a size like "64MiB", got "lots"' },
    { "a relative path", '[agent]\ndata_dir = "srv/mcp"\n',
      'agent.toml:2: [agent] data_dir: expected an absolute path, got "srv/mcp"' },
    { "a bad log level", '[log]\nlevel = "loud"\n',
      'agent.toml:2: [log] level: "loud" is not one of debug|info|warn|error' },
    { "a key outside any section", 'node = "x"\n',
      'agent.toml:1: unknown key "node"' },
    { "half of TLS", '[api]\ntls_cert = "/x.crt"\n',
      "[api] tls_cert and tls_key go together: set both or neither" },
    { "a bad boot stage", '[[boot.sequence]]\nname = "a"\n',
      "boot.sequence[1]: needs name (a string) and services (a list of service names)" },
  }
  for _, c in ipairs(cases) do
    it("names the file, line and key for " .. c[1], function()
      local code, err
      if c[2] then
        code, err = check(c[2])
      else
        local _
        _, code, err = run(q(AGENT) .. " check-config --config " .. q(dir .. "/absent.toml"))
      end
      assert.equal(1, code)
      assert.truthy(err:find(c[3], 1, true), "expected «" .. c[3] .. "» in «" .. err .. "»")
    end)
  end

  it("documents every key it accepts", function()
    local out, code = run(q(AGENT) .. " config-doc")
    assert.equal(0, code)
    for key in out:gmatch("| `([%w_]+)` |") do
      local doc = agent_env.read_file(agent_env.ROOT .. "/docs/config.md")
      assert.truthy(doc:find("`" .. key .. "`", 1, true), key .. " is not in docs/config.md")
    end
  end)
end)

describe("the agent process", function()
  local agent
  after_each(function() if agent then agent:stop() agent = nil end end)

  it("starts without Podman and answers SIGTERM within 2 s with exit 0", function()
    agent = agent_env.start({})
    local pid = agent.pid
    -- Timed inside one shell, so that starting the timing programs on a
    -- loaded machine does not count against the agent.
    local out, code = run("s=$(date +%s%N); kill -TERM " .. pid .. "; while kill -0 " .. pid
      .. " 2>/dev/null; do sleep 0.01; done; e=$(date +%s%N); echo $(( (e - s) / 1000000 ))")
    local took = tonumber(out) / 1000
    assert.equal(0, code)
    assert.is_true(took < 2, string.format("stopped in %.2fs", took))
    assert.matches("SIGTERM: stopping", agent:log_text())
    assert.matches("stopped", agent:log_text())
  end)

  it("exits 0 on SIGTERM, as its exit status shows", function()
    local cfg = agent_env.start({})
    cfg:halt()
    local out, code = run(("%s server --config %s >/dev/null 2>&1 & p=$!; sleep 1; "
      .. "kill -TERM $p; wait $p; echo $?"):format(q(AGENT), q(cfg.config_path)))
    cfg:stop()
    assert.equal(0, code)
    assert.equal("0", out)
  end)

  it("gives a clear error and exit 1 for a missing config", function()
    local _, code, err = run(q(AGENT) .. " server --config /nonexistent/mcp-agent.toml")
    assert.equal(1, code)
    assert.matches("/nonexistent/mcp%-agent.toml: cannot read the config", err)
  end)

  it("refuses to run without --config, with exit 2 and the usage", function()
    local _, code, err = run(q(AGENT) .. " server")
    assert.equal(2, code)
    assert.matches("%-%-config FILE is required", err)
  end)

  it("prints its version and the usage of each command", function()
    local out, code = run(q(AGENT) .. " version")
    assert.equal(0, code)
    assert.matches("^mcp%-agent %d+%.%d+%.%d+", out)
    for _, cmd in ipairs({ "server", "check-config", "toml-decode", "console", "token" }) do
      local help, hcode = run(q(AGENT) .. " " .. cmd .. " --help")
      assert.equal(0, hcode, cmd)
      assert.matches("usage: mcp%-agent " .. cmd:gsub("%-", "%%-"), help)
    end
  end)

  it("logs with journal priorities when JOURNAL_STREAM is set", function()
    local cfg = agent_env.start({})
    cfg:halt()
    local out = run(("JOURNAL_STREAM=8:1 %s server --config %s 2>&1 & p=$!; sleep 1; "
      .. "kill -TERM $p; wait $p"):format(q(AGENT), q(cfg.config_path)))
    cfg:stop()
    assert.matches("^<6>", out)
  end)

  it("keeps running a sleeping task without blocking the API", function()
    agent = agent_env.start({})
    local _, code = agent:eval("mcp.spawn(function() mcp.sleep(3) end) return true")
    assert.equal(0, code)
    local t0 = agent_env.now()
    local status = agent:api("GET", "/v1/health")
    assert.equal(200, status)
    assert.is_true(agent_env.now() - t0 < 1)
  end)

  it("reports an erroring task with its traceback and goes on", function()
    agent = agent_env.start({})
    agent:eval([[mcp.spawn({ name = "doomed" }, function() local function inner() error("boom") end inner() end) return 1]])
    agent_env.wait_for(function() return agent:log_text():find("task doomed") end, 5,
      "the failed task in the log")
    local log = agent:log_text()
    assert.matches("task doomed %(#%d+%) failed: .*boom", log)
    assert.matches("stack traceback", log)
    assert.equal(200, (agent:api("GET", "/v1/health")))
  end)

  it("stops a task that loops forever at its budget and goes on", function()
    agent = agent_env.start({})
    agent:eval([[mcp.spawn({ name = "spin", instructions = 1000000 }, function() while true do end end) return 1]])
    agent_env.wait_for(function() return agent:log_text():find("task spin") end, 5,
      "the stopped task in the log")
    assert.matches("instruction budget of 1000000 exceeded", agent:log_text())
    assert.equal(200, (agent:api("GET", "/v1/health")))
  end)
end)
