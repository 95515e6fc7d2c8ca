-- The `mcp` CLI end to end: what an operator types, against a real agent
-- and a real Podman. Definitions come from ~/.config/mcp/services (HOME is
-- the agent's temporary directory); MCP_AGENT_URL and MCP_TOKEN name the
-- agent, except where a ~/.config/mcp/mcp.toml lists the nodes.
local podman_env = require("tests.env.podman_env")
local agent_env = require("tests.env.agent_env")
local mcp = require("mcp.core")

local run, q, now = agent_env.run, agent_env.quote, agent_env.now
local read_file, write_file = agent_env.read_file, agent_env.write_file

local env, agent, defs_dir

local function toml(name, o)
  o = o or {}
  local cmd = o.cmd or { "httpd", "-f", "-p", "8080", "-h", "/www" }
  local words = {}
  for i, w in ipairs(cmd) do words[i] = string.format("%q", w) end
  return table.concat({
    ('name = "%s"'):format(name), 'node = "test"',
    "[[components]]", 'name = "web"',
    ('image = "%s"'):format(o.image or "localhost/mcp-test:1.0"),
    ("cmd = [%s]"):format(table.concat(words, ", ")),
    "[[components.routes]]", "port = 8080",
  }, "\n") .. "\n"
end

local LUA_DEF = [[
-- A Lua definition, as an operator keeps it in ~/.config/mcp/services.
return {
  name = "clilua", node = "test",
  components = {
    { name = "web", image = "localhost/mcp-test:2.0",
      cmd = { "httpd", "-f", "-p", "8080", "-h", "/www" },
      env = { GREETING = "hello" },
      routes = { { port = 8080 } } },
  },
}
]]

local function define(name, text, ext)
  write_file(defs_dir .. "/" .. name .. "." .. (ext or "toml"), text)
end

-- `mcp ARGS` against the agent: stdout, exit code, stderr.
local function mcp_cli(args, env_extra)
  return agent:cli(args, env_extra)
end

local function container_state(name)
  local out, code = env:podman({ "inspect", "--format", "{{.State.Status}}", name })
  return code == 0 and out:match("%S+") or nil
end

-- The rows of an aligned table: a list of {column = cell}, and the header's
-- column offsets, checked against every row.
local function parse_table(text)
  local lines = {}
  for l in text:gmatch("[^\n]+") do lines[#lines + 1] = l end
  local header = lines[1] or ""
  local cols = {}
  for start, name in header:gmatch("()(%S+)") do cols[#cols + 1] = { name = name, at = start } end
  local rows = {}
  for i = 2, #lines do
    local row = {}
    for c, col in ipairs(cols) do
      local stop = cols[c + 1] and cols[c + 1].at - 1 or #lines[i]
      -- Every cell starts exactly under its header: the table is aligned.
      assert(lines[i]:sub(col.at - 1, col.at - 1):match("^%s?$"),
        "cell of " .. col.name .. " not aligned in: " .. lines[i])
      row[col.name] = lines[i]:sub(col.at, stop):match("^(%S.-)%s*$")
    end
    rows[#rows + 1] = row
  end
  return rows, cols
end

local function row_of(rows, key, value)
  for _, r in ipairs(rows) do if r[key] == value then return r end end
end

setup(function()
  env = podman_env.start()
  agent = agent_env.start({ podman = env, node = "test", log_level = "info" })
  defs_dir = agent.dir .. "/.config/mcp/services"
  os.execute("mkdir -p " .. q(defs_dir))
  define("clitoml", toml("clitoml"))
  define("clilua", LUA_DEF, "lua")
end)

teardown(function()
  if agent then agent:stop() end
  if env then env:stop() end
  for _, s in ipairs({ "clitoml", "clilua", "clilogs", "clisync-a", "clisync-b", "clibad" }) do
    os.execute("rm -rf /srv/" .. s)
  end
end)

describe("mcp deploy", function()
  it("deploys a TOML definition from ~/.config/mcp/services, showing its steps", function()
    local out, code, err = mcp_cli("deploy clitoml")
    assert.equal(0, code, out .. err)
    assert.matches("deploy clitoml: revision r1, policy recreate", out, 1, true)
    assert.matches("  create clitoml-web", out, 1, true)
    assert.matches("  wait_healthy", out, 1, true)
    assert.matches("clitoml: revision r1 deployed on test\n  clitoml%-web  default=%d+", out)
    assert.equal("running", container_state("clitoml-web"))
    -- the definition went to the agent as it was written
    assert.equal(toml("clitoml"), read_file(agent.services_dir .. "/clitoml.toml"))
  end)

  it("deploys a Lua definition", function()
    local out, code, err = mcp_cli("deploy clilua")
    assert.equal(0, code, out .. err)
    assert.matches("clilua: revision r1 deployed on test", out, 1, true)
    assert.equal(LUA_DEF, read_file(agent.services_dir .. "/clilua.lua"))
    local env_out = env:podman({ "exec", "clilua-web", "sh", "-c", "echo $GREETING" })
    assert.equal("hello", env_out:match("%S+"))
  end)

  it("prints the deploy's result as JSON with --json", function()
    local out, code = mcp_cli("--json deploy clitoml")
    assert.equal(0, code)
    local r = mcp.json.decode(out)
    assert.equal("clitoml", r.service)
    assert.equal("r2", r.revision)
    assert.equal("deployed", r.status)
  end)

  it("fails with exit 1 and the precise error for an invalid definition", function()
    define("clibad", toml("clibad", { image = "localhost/mcp-test" }))
    local out, code, err = mcp_cli("deploy clibad")
    assert.equal(1, code, out)
    assert.equal('mcp: test: PUT /v1/services/clibad: 400 PUT /v1/services/clibad: '
      .. 'components[1].image: "localhost/mcp-test" is not pinned: expected a version tag '
      .. '(":v1.2.3") or a digest ("@sha256:...")\n', err)
    assert.is_nil(read_file(agent.services_dir .. "/clibad.toml"))
    os.remove(defs_dir .. "/clibad.toml")
  end)
end)

describe("mcp ps and status", function()
  it("prints every container in an aligned table", function()
    local out, code, err = mcp_cli("ps")
    assert.equal(0, code, err)
    local rows, cols = parse_table(out)
    local names = {}
    for _, c in ipairs(cols) do names[#names + 1] = c.name end
    assert.same({ "SERVICE", "COMPONENT", "NODE", "STATE", "VERSION", "UPTIME", "HEALTH",
      "PORTS" }, names)
    local r = row_of(rows, "SERVICE", "clitoml")
    assert.truthy(r, out)
    assert.equal("web", r.COMPONENT)
    assert.equal("test", r.NODE)
    assert.equal("running", r.STATE)
    assert.equal("1.0", r.VERSION)
    assert.matches("^%d+[ms]", r.UPTIME)
    assert.matches("^127%.0%.0%.1:%d+%->8080$", r.PORTS)
    assert.equal("2.0", row_of(rows, "SERVICE", "clilua").VERSION)
  end)

  it("prints parseable JSON with --json", function()
    local out, code = mcp_cli("--json ps")
    assert.equal(0, code)
    local rows = mcp.json.decode(out)
    assert.is_table(rows, out)
    local found
    for _, c in ipairs(rows) do if c.container == "clitoml-web" then found = c end end
    assert.equal("clitoml", found.service)
    assert.equal("running", found.state)
  end)

  it("shows the agents' status, and one service in detail", function()
    local out, code = mcp_cli("status")
    assert.equal(0, code)
    local r = row_of(parse_table(out), "NODE", "test")
    assert.equal("ok", r.STATE)
    assert.matches("^%d+%.%d+%.%d+", r.VERSION)
    out, code = mcp_cli("status clitoml")
    assert.equal(0, code)
    assert.matches("^clitoml on test: active, revision r2 %(deployed%)\n", out)
    assert.matches("CONTAINER +STATE +VERSION +HEALTH +PORTS\nclitoml%-web +running +1%.0", out)
    assert.matches("recent events:", out, 1, true)
    out, code = mcp_cli("--json status clitoml")
    assert.equal(0, code)
    assert.equal("clitoml", mcp.json.decode(out).name)
    out, code = mcp_cli("--json status")
    assert.equal(0, code)
    assert.equal("test", mcp.json.decode(out)[1].node)
  end)
end)

describe("mcp logs", function()
  setup(function()
    define("clilogs", toml("clilogs", { cmd = { "sh", "-c", "httpd -p 8080 -h /www; i=0; "
      .. "while true; do echo out $i; echo err $i >&2; i=$((i+1)); sleep 0.3; done" } }))
    local out, code, err = mcp_cli("deploy clilogs")
    assert(code == 0, out .. err)
    agent_env.wait_for(function()
      local o = mcp_cli("logs clilogs -n 100")
      return select(2, o:gsub("\n", "")) >= 3
    end, 15, "log lines")
  end)

  it("prints the last N lines: stdout to stdout, stderr to stderr", function()
    local out, code, err = mcp_cli("logs clilogs -n 4")
    assert.equal(0, code, err)
    local n = 0
    for l in out:gmatch("[^\n]+") do assert.matches("^out %d+$", l) n = n + 1 end
    for l in err:gmatch("[^\n]+") do assert.matches("^err %d+$", l) n = n + 1 end
    assert.equal(4, n)
  end)

  it("prints NDJSON lines with --json", function()
    local out, code = mcp_cli("--json logs clilogs -n 2")
    assert.equal(0, code)
    local n = 0
    for l in out:gmatch("[^\n]+") do
      local j = mcp.json.decode(l)
      assert.equal("clilogs-web", j.container)
      n = n + 1
    end
    assert.equal(2, n)
  end)

  it("follows with -f until stopped", function()
    local out = mcp_cli("logs clilogs -f -n 0", "timeout 2")
    -- `timeout` ends the CLI; what it printed before is new lines only.
    local n = select(2, out:gsub("out %d+", ""))
    assert.is_true(n >= 3, out)
  end)
end)

describe("mcp stop, start, restart", function()
  it("stops, starts and restarts a service", function()
    local out, code = mcp_cli("stop clitoml")
    assert.equal(0, code)
    assert.equal("clitoml: stopped on test", out)
    assert.equal("exited", container_state("clitoml-web"))
    out, code = mcp_cli("start clitoml")
    assert.equal(0, code)
    assert.equal("clitoml: running on test", out)
    assert.equal("running", container_state("clitoml-web"))
    out, code = mcp_cli("restart clitoml")
    assert.equal(0, code)
    assert.equal("clitoml: running on test", out)
    out, code = mcp_cli("--json stop clitoml")
    assert.equal(0, code)
    assert.equal("stopped", mcp.json.decode(out).state)
    assert.equal(0, select(2, mcp_cli("start clitoml")))
  end)
end)

describe("mcp push and pull", function()
  it("copies a file into /srv/SERVICE and back", function()
    local src = agent.dir .. "/app.conf"
    write_file(src, "key = 1\n\0binary\255\n")
    local out, code, err = mcp_cli("push clitoml " .. q(src) .. " conf/app.conf")
    assert.equal(0, code, err)
    assert.equal(src .. " -> test:/srv/clitoml/conf/app.conf (17 bytes)", out)
    assert.equal("key = 1\n\0binary\255\n", read_file("/srv/clitoml/conf/app.conf"))
    out, code = mcp_cli("pull clitoml conf/app.conf -")
    assert.equal(0, code)
    assert.equal("key = 1\n\0binary\255", out)   -- (run() drops the last newline)
    local dst = agent.dir .. "/back.conf"
    out, code, err = mcp_cli("pull clitoml conf/app.conf " .. q(dst))
    assert.equal(0, code)
    assert.equal("key = 1\n\0binary\255\n", read_file(dst))
    assert.matches("test:/srv/clitoml/conf/app.conf %-> .*back%.conf %(17 bytes%)", err)
    out, code, err = mcp_cli("pull clitoml ../../etc/passwd -")
    assert.equal(1, code)
    assert.equal("", out)
    assert.matches("escapes /srv/clitoml", err)
  end)
end)

describe("mcp events, reload, node list, render", function()
  it("prints the event log, and --json lines that parse", function()
    local out, code, err = mcp_cli("events clitoml")
    assert.equal(0, code, err)
    assert.matches("%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d  deployed +clitoml", out)
    assert.matches("stopped +clitoml +stopped by an operator", out)
    out, code = mcp_cli("--json events")
    assert.equal(0, code)
    local n = 0
    for l in out:gmatch("[^\n]+") do
      assert.is_string(mcp.json.decode(l).kind)
      n = n + 1
    end
    assert.is_true(n > 5)
  end)

  it("follows events with -f", function()
    local out = mcp_cli("events -f clitoml", "timeout 3")
    assert.matches("deployed +clitoml", out)
  end)

  it("reloads the agent", function()
    local out, code = mcp_cli("reload")
    assert.equal(0, code)
    assert.matches("^test: generation %d+ → %d+: %d+ files, %d+ ms$", out)
    assert.is_number(mcp.json.decode((mcp_cli("--json reload"))).generation)
  end)

  it("lists the nodes and whether they answer", function()
    local out, code = mcp_cli("node list")
    assert.equal(0, code)
    local r = row_of(parse_table(out), "NODE", "test")
    assert.equal(agent.url, r.ADDRESS)
    assert.equal("yes", r.UP)
    assert.matches("^%d+$", r.SERVICES)
  end)

  it("renders a service's podman run lines", function()
    local out, code = mcp_cli("render clitoml")
    assert.equal(0, code)
    assert.matches("^podman run %-d %-%-name clitoml%-web .*localhost/mcp%-test:1%.0 httpd", out)
    out, code = mcp_cli("--json render clilua")
    assert.equal(0, code)
    assert.matches("GREETING=hello", mcp.json.decode(out).lines[1], 1, true)
  end)
end)

describe("mcp sync", function()
  it("sends every definition and deploys only what changed", function()
    define("clisync-a", toml("clisync-a"))
    define("clisync-b", toml("clisync-b"))
    local out, code, err = mcp_cli("sync")
    assert.equal(0, code, out .. err)
    local rows = parse_table(out)
    assert.equal("created", row_of(rows, "SERVICE", "clisync-a").DEFINITION)
    assert.equal("r1", row_of(rows, "SERVICE", "clisync-a").DEPLOYED)
    assert.equal("unchanged", row_of(rows, "SERVICE", "clitoml").DEFINITION)
    assert.equal("-", row_of(rows, "SERVICE", "clitoml").DEPLOYED)
    define("clisync-b", toml("clisync-b", { image = "localhost/mcp-test:2.0" }))
    out, code = mcp_cli("--json sync")
    assert.equal(0, code)
    local by = {}
    for _, s in ipairs(mcp.json.decode(out)) do by[s.name] = s end
    assert.is_false(by["clisync-a"].deployed)
    assert.is_true(by["clisync-b"].deployed)
    assert.equal("r2", by["clisync-b"].revision)
  end)
end)

describe("mcp purge and recover", function()
  it("purge --dry-run says what it would drop, and drops nothing", function()
    assert.equal(0, select(2, mcp_cli("stop clisync-a")))
    env:podman({ "rm", "-f", "clisync-a-web" })
    local out, code, err = mcp_cli("purge --dry-run")
    assert.equal(0, code, err)
    assert.matches("test: would purge clisync%-a\n", out .. "\n")
    assert.matches("test: kept clitoml %(has 1 container", out)
    local st = mcp.json.decode((mcp_cli("--json status clisync-a")))
    assert.is_true(st.deployed)
    out, code = mcp_cli("--json purge")
    assert.equal(0, code)
    assert.same({ "clisync-a" }, mcp.json.decode(out).purged)
  end)

  it("recover recreates what Podman lost", function()
    env:podman({ "rm", "-f", "clitoml-web" })
    local out, code, err = mcp_cli("recover")
    assert.equal(0, code, out .. err)
    assert.matches("test: clitoml recovered", out, 1, true)
    agent_env.wait_for(function() return container_state("clitoml-web") == "running" end, 10,
      "clitoml-web to run")
  end)
end)

describe("mcp undeploy", function()
  it("removes the containers; the data stays", function()
    local out, code = mcp_cli("undeploy clilua")
    assert.equal(0, code)
    assert.equal("clilua: undeployed on test", out)
    assert.is_nil(container_state("clilua-web"))
    local _, scode = mcp_cli("status clilua")
    assert.equal(1, scode)
  end)
end)

describe("exit codes", function()
  local usage = {
    "", "frobnicate", "deploy", "deploy a b", "logs", "logs clitoml -n abc", "logs clitoml -x",
    "ps extra", "ps --bogus", "push clitoml", "pull", "node", "node remove x", "events -z",
    "purge --force", "render",
  }
  for _, args in ipairs(usage) do
    it("exits 2 for a usage error: mcp " .. args, function()
      local out, code, err = mcp_cli(args)
      assert.equal(2, code, out .. err)
      assert.matches("usage", err)
    end)
  end

  it("exits 1 when the agent refuses or cannot be reached, naming the node", function()
    local _, code, err = mcp_cli("stop nosuch")
    assert.equal(1, code)
    assert.equal('mcp: test: POST /v1/services/nosuch/stop: 404 service "nosuch" is not '
      .. 'deployed on this node\n', err)
    _, code, err = mcp_cli("ps", "MCP_TOKEN=wrong")
    assert.equal(1, code)
    assert.matches("401 unknown or revoked token", err)
    _, code, err = mcp_cli("ps", "MCP_AGENT_URL=http://127.0.0.1:1")
    assert.equal(1, code)
    assert.matches("^mcp: test %(http://127%.0%.0%.1:1%): GET /v1/ps: ", err)
  end)

  it("prints help and exits 0 for --help", function()
    local out, code = mcp_cli("--help")
    assert.equal(0, code)
    assert.matches("^usage: mcp ", out)
  end)
end)

describe("several nodes from ~/.config/mcp/mcp.toml", function()
  it("ps shows the rows of the nodes that answer and says which failed", function()
    local cfgdir = agent.dir .. "/.config/mcp"
    write_file(cfgdir .. "/token", agent.token .. "\n")
    write_file(cfgdir .. "/mcp.toml", table.concat({
      "[[nodes]]", 'name = "test"', ('address = "%s"'):format(agent.url), "",
      "[[nodes]]", 'name = "down"', 'address = "http://127.0.0.1:1"', "" }, "\n"))
    local t0 = now()
    local out, code, err = mcp_cli("ps", "MCP_AGENT_URL= MCP_TOKEN=")
    assert.is_true(now() - t0 < 10)
    assert.equal(1, code)
    local rows = parse_table(out)
    assert.equal("test", row_of(rows, "SERVICE", "clitoml").NODE)
    assert.matches("^mcp: down %(http://127%.0%.0%.1:1%): GET /v1/ps: ", err)
    out, code = mcp_cli("node list", "MCP_AGENT_URL= MCP_TOKEN=")
    rows = parse_table(out)
    assert.equal("yes", row_of(rows, "NODE", "test").UP)
    assert.equal("no", row_of(rows, "NODE", "down").UP)
    assert.matches("127%.0%.0%.1:1", row_of(rows, "NODE", "down").ERROR)
    -- a service's node picks its agent
    out, code, err = mcp_cli("status clitoml", "MCP_AGENT_URL= MCP_TOKEN=")
    assert.equal(0, code, err)
    assert.matches("^clitoml on test:", out)
    os.remove(cfgdir .. "/mcp.toml")
  end)
end)
