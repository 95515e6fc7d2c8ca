-- The HTTP API over real HTTP: a real `mcp-agent server` against a real
-- Podman (tests/env). Each endpoint's success and its failures, streaming,
-- files and their confinement, responsiveness while a deploy waits, the
-- metrics, and the OpenAPI description of every route.
local podman_env = require("tests.env.podman_env")
local agent_env = require("tests.env.agent_env")
local mcp = require("mcp.core")

local run, q, now = agent_env.run, agent_env.quote, agent_env.now
local read_file, write_file = agent_env.read_file, agent_env.write_file

local env, agent, tmp
local exchanges = {}     -- every answer seen, for the OpenAPI check

-- One request through curl. opts: json, body, body_file, headers, token
-- (false: none), raw (--path-as-is), timeout. Returns {status, headers
-- (lower-case names), body, json, time}.
local function http(method, path, opts)
  opts = opts or {}
  local hdr, out = tmp .. "/h", tmp .. "/b"
  os.remove(hdr); os.remove(out)
  local args = { "curl -s -S -X", q(method), "--max-time", tostring(opts.timeout or 120),
    "-D", q(hdr), "-o", q(out), "-w", q("%{http_code} %{time_total}") }
  if opts.raw then args[#args + 1] = "--path-as-is" end
  local token = opts.token
  if token == nil then token = agent.token end
  if token then args[#args + 1] = "-H " .. q("Authorization: Bearer " .. token) end
  for k, v in pairs(opts.headers or {}) do args[#args + 1] = "-H " .. q(k .. ": " .. v) end
  local body = opts.body
  if opts.json ~= nil then
    body = mcp.json.encode(opts.json)
    args[#args + 1] = "-H 'Content-Type: application/json'"
  end
  if body then
    write_file(tmp .. "/req", body)
    args[#args + 1] = "--data-binary @" .. q(tmp .. "/req")
  elseif opts.body_file then
    args[#args + 1] = "--data-binary @" .. q(opts.body_file)
  end
  args[#args + 1] = q(agent.url .. path)
  local o = run(table.concat(args, " "))
  local status, t = o:match("(%d+) ([%d.]+)%s*$")
  local r = { status = tonumber(status) or 0, time = tonumber(t), headers = {},
    body = read_file(out) or "" }
  for line in (read_file(hdr) or ""):gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:]+):%s*(.*)$")
    if k then r.headers[k:lower()] = v end
  end
  local ct = r.headers["content-type"] or ""
  if ct:find("json", 1, true) and not ct:find("ndjson", 1, true) then
    r.json = mcp.json.decode(r.body)
  end
  exchanges[#exchanges + 1] = { method = method, path = path:match("^[^?]*"), status = r.status,
    content_type = ct, body = r.body }
  return r
end

local function lines_of(body)
  local out = {}
  for l in body:gmatch("[^\n]+") do out[#out + 1] = assert(mcp.json.decode(l), l) end
  return out
end

-- A service definition in TOML. o: image, cmd (list), health (TOML lines
-- of [components.health]), route (false: none), active.
local function toml(name, o)
  o = o or {}
  local cmd = o.cmd or { "httpd", "-f", "-p", "8080", "-h", "/www" }
  local words = {}
  for i, w in ipairs(cmd) do words[i] = string.format("%q", w) end
  local t = {
    ('name = "%s"'):format(name), 'node = "test"',
    "[[components]]", 'name = "web"',
    ('image = "%s"'):format(o.image or "localhost/mcp-test:1.0"),
    ("cmd = [%s]"):format(table.concat(words, ", ")),
  }
  if o.route ~= false then
    t[#t + 1] = "[[components.routes]]"
    t[#t + 1] = "port = 8080"
  end
  if o.health then
    t[#t + 1] = "[components.health]"
    t[#t + 1] = o.health
  end
  return table.concat(t, "\n") .. "\n"
end

local function put_toml(name, text)
  return http("PUT", "/v1/services/" .. name, { body = text or toml(name),
    headers = { ["Content-Type"] = "application/toml" } })
end

local function deploy(name, text)
  local r = put_toml(name, text)
  assert(r.status == 200 or r.status == 201, r.body)
  r = http("POST", "/v1/services/" .. name .. "/deploy")
  assert(r.status == 200, r.body .. "\n" .. agent:log_tail())
  return r
end

local function container_state(name)
  local out, code = env:podman({ "inspect", "--format", "{{.State.Status}}", name })
  return code == 0 and out:match("%S+") or nil
end

local function services_files()
  local out = run("ls " .. q(agent.services_dir))
  return out
end

-- Starts a command in the background, its output to a file; returns pid, file.
local function background(cmd)
  local file = os.tmpname()
  local pid = run(("%s >%s 2>&1 & echo $!"):format(cmd, q(file)))
  return tonumber(pid), file
end

local function curl_stream(path, extra)
  return background(("curl -s -N --max-time 60 -H %s %s %s"):format(
    q("Authorization: Bearer " .. agent.token), extra or "", q(agent.url .. path)))
end

local function wait_for(fn, timeout, what) return agent_env.wait_for(fn, timeout, what) end

local used_srv = {}
local function srv(name)
  used_srv[#used_srv + 1] = "/srv/" .. name
  return "/srv/" .. name
end

setup(function()
  tmp = run("mktemp -d /tmp/mcp-api-spec.XXXXXX")
  env = podman_env.start()
  agent = agent_env.start({ podman = env, node = "test", log_level = "info" })
end)

teardown(function()
  if agent then agent:stop() end
  if env then env:stop() end
  for _, d in ipairs(used_srv) do os.execute("rm -rf " .. q(d)) end
  if tmp then os.execute("rm -rf " .. q(tmp)) end
end)

describe("authentication", function()
  local routes = {
    { "GET", "/v1/status" }, { "GET", "/v1/services" }, { "GET", "/v1/services/x" },
    { "PUT", "/v1/services/x" }, { "DELETE", "/v1/services/x" },
    { "POST", "/v1/services/x/deploy" }, { "POST", "/v1/services/x/stop" },
    { "POST", "/v1/services/x/start" }, { "POST", "/v1/services/x/restart" },
    { "POST", "/v1/adopt" }, { "POST", "/v1/purge" }, { "POST", "/v1/recover" },
    { "POST", "/v1/sync" }, { "GET", "/v1/ps" }, { "GET", "/v1/services/x/logs" },
    { "GET", "/v1/events" }, { "GET", "/v1/services/x/files/a" },
    { "PUT", "/v1/services/x/files/a" }, { "POST", "/v1/reload" }, { "GET", "/metrics" },
    { "GET", "/v1/services/x/render" }, { "POST", "/v1/render" },
  }

  it("answers /v1/health without a token", function()
    local r = http("GET", "/v1/health", { token = false })
    assert.equal(200, r.status)
    assert.same({ status = "ok" }, r.json)
  end)

  it("refuses every other endpoint without a token, with a Bearer challenge", function()
    for _, rt in ipairs(routes) do
      local r = http(rt[1], rt[2], { token = false })
      assert.equal(401, r.status, rt[1] .. " " .. rt[2] .. ": " .. r.body)
      assert.equal("unauthorized", r.json.error.code)
      assert.matches("missing Authorization header", r.json.error.message)
      assert.matches('^Bearer realm="mcp%-agent"', r.headers["www-authenticate"])
    end
  end)

  it("refuses a wrong token and a malformed Authorization header", function()
    for _, rt in ipairs(routes) do
      local r = http(rt[1], rt[2], { token = "mcp_" .. string.rep("0", 64) })
      assert.equal(401, r.status, rt[1] .. " " .. rt[2])
      assert.equal("unknown or revoked token", r.json.error.message)
    end
    local r = http("GET", "/v1/status", { token = false,
      headers = { Authorization = "Basic dXNlcjpwYXNz" } })
    assert.equal(401, r.status)
    assert.matches("malformed Authorization header", r.json.error.message)
    r = http("GET", "/v1/status", { token = agent.token .. " extra" })
    assert.equal(401, r.status)
  end)

  it("refuses a token once `mcp-agent token revoke` removed it, while the agent runs", function()
    local cfg = q(agent.config_path)
    local out, code, err = run(q(agent_env.AGENT) .. " token create --config " .. cfg
      .. " --name revokeme")
    assert.equal(0, code, err)
    local token = out:match("(mcp_%x+)")
    assert.equal(200, http("GET", "/v1/status", { token = token }).status)
    local _, rcode, rerr = run(q(agent_env.AGENT) .. " token revoke --config " .. cfg
      .. " --name revokeme")
    assert.equal(0, rcode, rerr)
    local r = http("GET", "/v1/status", { token = token })
    assert.equal(401, r.status)
    assert.equal("unknown or revoked token", r.json.error.message)
    assert.equal(200, http("GET", "/v1/status").status)   -- the others still work
  end)
end)

describe("status and health", function()
  it("reports version, node, uptime, Podman, generation and counts", function()
    local r = http("GET", "/v1/status")
    assert.equal(200, r.status)
    local s = r.json
    assert.equal("test", s.node)
    assert.is_string(s.version)
    assert.is_number(s.uptime_seconds)
    assert.is_number(s.generation)
    assert.is_true(s.podman.reachable)
    assert.is_number(s.counts.services)
    assert.is_number(s.reload.generation)
  end)
end)

describe("service definitions", function()
  it("takes a TOML definition: 201, stored as NAME.toml, listed and shown", function()
    local r = put_toml("deftoml")
    assert.equal(201, r.status, r.body)
    assert.same({ service = "deftoml", result = "created",
      source = agent.services_dir .. "/deftoml.toml" }, r.json)
    assert.equal(toml("deftoml"), read_file(agent.services_dir .. "/deftoml.toml"))
    r = put_toml("deftoml")
    assert.equal(200, r.status)
    assert.equal("unchanged", r.json.result)
    r = http("GET", "/v1/services")
    local found
    for _, s in ipairs(r.json.services) do
      if s.name == "deftoml" then found = s end
    end
    assert.same({ name = "deftoml", node = "test", policy = "recreate", active = false,
      defined = true, source = agent.services_dir .. "/deftoml.toml" }, found)
    r = http("GET", "/v1/services/deftoml")
    assert.equal(200, r.status)
    assert.equal("deftoml", r.json.name)
    assert.is_false(r.json.deployed)
    assert.equal("localhost/mcp-test:1.0", r.json.definition.components[1].image)
  end)

  it("takes a JSON definition, replacing the TOML file of the same service", function()
    local def = { name = "deftoml", node = "test", components = { { name = "web",
      image = "localhost/mcp-test:2.0", cmd = { "httpd", "-f", "-p", "8080", "-h", "/www" },
      routes = { { port = 8080 } } } } }
    local r = http("PUT", "/v1/services/deftoml", { json = def })
    assert.equal(200, r.status, r.body)
    assert.equal("updated", r.json.result)
    assert.is_nil(read_file(agent.services_dir .. "/deftoml.toml"))
    assert.truthy(read_file(agent.services_dir .. "/deftoml.json"))
    r = http("GET", "/v1/services/deftoml")
    assert.equal("localhost/mcp-test:2.0", r.json.definition.components[1].image)
  end)

  it("takes a Lua definition (text/x-lua), run in the sandbox", function()
    local text = [[
return { name = "deflua", node = "test",
  components = { { name = "web", image = "localhost/mcp-test:1.0",
    env = { GREETING = "hi" }, routes = { { port = 8080 } },
    health = { kind = "lua", interval = "2s", fn = function(c) return true end } } } }
]]
    local r = http("PUT", "/v1/services/deflua", { body = text,
      headers = { ["Content-Type"] = "text/x-lua" } })
    assert.equal(201, r.status, r.body)
    assert.equal(text, read_file(agent.services_dir .. "/deflua.lua"))
    r = http("GET", "/v1/services/deflua")
    assert.same({ "GREETING=hi" }, r.json.definition.components[1].env)
  end)

  it("refuses an invalid definition with 400 and the precise list of errors; nothing stored",
    function()
    local before = services_files()
    local r = http("PUT", "/v1/services/bad", { json = { name = "bad", node = "test",
      components = { { name = "web", image = "localhost/mcp-test", volumes = { "/etc:/etc" },
        cmd = "httpd" } } } })
    assert.equal(400, r.status)
    assert.equal("invalid_definition", r.json.error.code)
    assert.same({
      'PUT /v1/services/bad: components[1].image: "localhost/mcp-test" is not pinned: '
        .. 'expected a version tag (":v1.2.3") or a digest ("@sha256:...")',
      'PUT /v1/services/bad: components[1].cmd: expected a list of strings, got string '
        .. '"httpd" (write it as a list: ["httpd"])',
      'PUT /v1/services/bad: components[1].volumes[1]: host path "/etc" is outside the '
        .. 'allowed roots: /srv/bad',
    }, r.json.error.errors)
    assert.equal(table.concat(r.json.error.errors, "\n"), r.json.error.message)
    assert.equal(before, services_files())
  end)

  it("names the line of a TOML syntax error and of a Lua error", function()
    local r = put_toml("badtoml", 'name = "badtoml"\nnode = "test"\n[[components]\n')
    assert.equal(400, r.status)
    assert.matches("^PUT /v1/services/badtoml:3:", r.json.error.errors[1])
    r = http("PUT", "/v1/services/badlua", { body = 'return {\n name = "badlua",\n oops(\n}',
      headers = { ["Content-Type"] = "text/x-lua" } })
    assert.equal(400, r.status)
    assert.matches("^PUT /v1/services/badlua:%d+:", r.json.error.errors[1])
    r = http("PUT", "/v1/services/badlua", { body = 'os.execute("touch /tmp/pwned") return {}',
      headers = { ["Content-Type"] = "text/x-lua" } })
    assert.equal(400, r.status)
    assert.equal("PUT /v1/services/badlua:1: os.execute is not available to policies and "
      .. "definitions: they cannot run commands (the sandbox's os has time, clock, date and "
      .. "difftime)", r.json.error.message)
  end)

  it("refuses a Lua definition that never finishes, and goes on serving", function()
    local r = http("PUT", "/v1/services/loop", { body = "while true do end",
      headers = { ["Content-Type"] = "text/x-lua" } })
    assert.equal(400, r.status, r.body)
    assert.matches("instruction budget of %d+ exceeded %(%[lua%] task_instructions%)",
      r.json.error.message)
    assert.equal(200, http("GET", "/v1/health").status)
    assert.is_nil(read_file(agent.services_dir .. "/loop.lua"))
  end)

  it("refuses a definition whose name or node differ from the request's", function()
    local r = http("PUT", "/v1/services/other", { body = toml("deftoml"),
      headers = { ["Content-Type"] = "application/toml" } })
    assert.equal(400, r.status)
    assert.same({ 'PUT /v1/services/other: name: "deftoml" does not match the URL\'s "other"' },
      r.json.error.errors)
    r = put_toml("elsewhere", toml("elsewhere"):gsub('node = "test"', 'node = "rift"'))
    assert.equal(400, r.status)
    assert.same({ 'PUT /v1/services/elsewhere: node: "rift" is not this agent\'s node "test"' },
      r.json.error.errors)
  end)

  it("refuses malformed JSON, an unknown media type and an oversized body", function()
    local r = http("PUT", "/v1/services/x", { body = '{"name": "x",',
      headers = { ["Content-Type"] = "application/json" } })
    assert.equal(400, r.status)
    assert.equal("bad_json", r.json.error.code)
    assert.matches("not valid JSON: line 1", r.json.error.message)
    r = http("PUT", "/v1/services/x", { body = "name: x",
      headers = { ["Content-Type"] = "application/yaml" } })
    assert.equal(415, r.status)
    assert.matches("got application/yaml", r.json.error.message)
    local big = tmp .. "/big"
    write_file(big, string.rep("#", 1024 * 1024 + 1))
    r = http("PUT", "/v1/services/huge", { body_file = big,
      headers = { ["Content-Type"] = "application/toml" } })
    assert.equal(413, r.status)
    assert.equal("too_large", r.json.error.code)
    assert.matches("max_body %(1048576 bytes%)", r.json.error.message)
    assert.is_nil(read_file(agent.services_dir .. "/huge.toml"))
  end)

  it("answers 404 for an unknown service, 400 for an invalid name", function()
    for _, rt in ipairs({ { "GET", "/v1/services/nosuch" }, { "DELETE", "/v1/services/nosuch" },
        { "POST", "/v1/services/nosuch/deploy" }, { "POST", "/v1/services/nosuch/stop" },
        { "POST", "/v1/services/nosuch/start" }, { "POST", "/v1/services/nosuch/restart" },
        { "GET", "/v1/services/nosuch/render" }, { "GET", "/v1/services/nosuch/files/a" } }) do
      local r = http(rt[1], rt[2])
      assert.equal(404, r.status, rt[1] .. " " .. rt[2] .. ": " .. r.body)
      assert.equal("not_found", r.json.error.code)
      assert.matches('"nosuch"', r.json.error.message)
    end
    local r = http("GET", "/v1/services/Not_A_Name")
    assert.equal(400, r.status)
    assert.equal("invalid_name", r.json.error.code)
  end)
end)

describe("operations", function()
  it("deploys: containers, ports, revision; the service answers on its port", function()
    local r = deploy("ops")
    srv("ops")
    assert.equal("deployed", r.json.status)
    assert.equal("r1", r.json.revision)
    local c = r.json.containers[1]
    assert.equal("ops-web", c.name)
    local port = c.ports.default
    assert.is_number(port)
    assert.matches("hello from mcp%-test 1.0", run("curl -s 127.0.0.1:" .. port .. "/"))
    r = http("GET", "/v1/services/ops")
    assert.is_true(r.json.deployed)
    assert.is_true(r.json.active)
    assert.equal("r1", r.json.revision.id)
    assert.equal("deployed", r.json.revision.status)
    assert.same({ { component = "web", route = "default", port = port } }, r.json.ports)
    assert.equal("ops-web", r.json.containers[1].container)
  end)

  it("streams a deploy's steps as NDJSON when asked, the result last", function()
    local r = http("POST", "/v1/services/ops/deploy",
      { headers = { Accept = "application/x-ndjson" } })
    assert.equal(200, r.status)
    assert.matches("^application/x%-ndjson", r.headers["content-type"])
    local ls = lines_of(r.body)
    local steps = {}
    for _, l in ipairs(ls) do if l.step then steps[#steps + 1] = l.step end end
    assert.equal("deploy", steps[1])
    assert.truthy(table.concat(steps, " "):find("create start wait_healthy", 1, true),
      table.concat(steps, " "))
    assert.equal("r2", ls[#ls].result.revision)
  end)

  it("stops, starts and restarts", function()
    local r = http("POST", "/v1/services/ops/stop")
    assert.equal(200, r.status, r.body)
    assert.same({ service = "ops", state = "stopped", containers = { "ops-web" } }, r.json)
    assert.equal("exited", container_state("ops-web"))
    assert.is_false(http("GET", "/v1/services/ops").json.active)
    r = http("POST", "/v1/services/ops/start")
    assert.equal(200, r.status, r.body)
    assert.equal("running", r.json.state)
    assert.equal("running", container_state("ops-web"))
    local before = env:podman({ "inspect", "--format", "{{.State.StartedAt}}", "ops-web" })
    r = http("POST", "/v1/services/ops/restart")
    assert.equal(200, r.status, r.body)
    assert.same({ "ops-web" }, r.json.containers)
    assert.equal("running", container_state("ops-web"))
    assert.are_not.equal(before,
      env:podman({ "inspect", "--format", "{{.State.StartedAt}}", "ops-web" }))
  end)

  it("lists every managed container in /v1/ps", function()
    local r = http("GET", "/v1/ps")
    assert.equal(200, r.status)
    local row
    for _, c in ipairs(r.json.containers) do
      if c.container == "ops-web" then row = c end
    end
    assert.truthy(row, r.body)
    assert.equal("ops", row.service)
    assert.equal("web", row.component)
    assert.equal("test", row.node)
    assert.equal("running", row.state)
    assert.equal("1.0", row.version)
    assert.is_number(row.uptime)
    assert.is_string(row.health)
    assert.matches("^127%.0%.0%.1:%d+%->8080$", row.ports[1])
  end)

  it("refuses an operation while another runs on the same service (409)", function()
    local text = toml("busy", { cmd = { "sh", "-c", "sleep 3; exec httpd -f -p 8080 -h /www" },
      health = 'kind = "http"\ninterval = "300ms"\ntimeout = "300ms"' })
    assert.equal(201, put_toml("busy", text).status)
    srv("busy")
    local pid, file = curl_stream("/v1/services/busy/deploy", "-X POST")
    wait_for(function()
      return http("GET", "/v1/services/busy").json.last_deploy ~= nil
    end, 10, "the deploy to start")
    assert.is_nil(http("GET", "/v1/services/busy").json.revision)   -- not deployed yet
    local r = http("POST", "/v1/services/busy/stop")
    assert.equal(409, r.status, r.body)
    assert.equal("conflict", r.json.error.code)
    assert.matches("already in progress", r.json.error.message)
    wait_for(function() return run("kill -0 " .. pid .. " 2>/dev/null; echo $?") ~= "0" end, 30,
      "the deploy to finish")
    assert.matches('"status":"deployed"', read_file(file))
    os.remove(file)
  end)

  it("fails a deploy whose image cannot be had, 422 with the reason; nothing left", function()
    local r = put_toml("noimage", toml("noimage", { image = "localhost/does-not-exist:1.0" }))
    assert.equal(201, r.status, r.body)
    r = http("POST", "/v1/services/noimage/deploy")
    assert.equal(422, r.status, r.body)
    assert.equal("deploy_failed", r.json.error.code)
    assert.matches("localhost/does%-not%-exist:1.0", r.json.error.message)
    assert.is_nil(container_state("noimage-web"))
    local show = http("GET", "/v1/services/noimage").json
    assert.is_nil(show.revision)                  -- nothing deployed became current
    assert.equal("failed", show.last_deploy.status)
    assert.matches("does%-not%-exist", show.last_deploy.error)
    assert.equal(200, http("DELETE", "/v1/services/noimage").status)
  end)

  it("undeploys: containers and registry entry go, /srv/NAME stays", function()
    deploy("gone")
    srv("gone")
    write_file("/srv/gone/keep.txt", "data")
    local r = http("DELETE", "/v1/services/gone")
    assert.equal(200, r.status, r.body)
    assert.same({ "gone-web" }, r.json.removed)
    assert.is_nil(container_state("gone-web"))
    assert.is_nil(read_file(agent.services_dir .. "/gone.toml"))
    assert.equal(404, http("GET", "/v1/services/gone").status)
    assert.equal("data", read_file("/srv/gone/keep.txt"))
  end)
end)

describe("adopt, purge and recover", function()
  it("adopts containers named SERVICE-*", function()
    local _, code, err = env:podman({ "run", "-d", "--name", "adoptee-web", "--init",
      "-p", "127.0.0.1::8080", env.image1, "httpd", "-f", "-p", "8080", "-h", "/www" })
    assert.equal(0, code, err)
    local r = http("POST", "/v1/adopt", { json = { service = "adoptee" } })
    assert.equal(200, r.status, r.body)
    assert.equal("adoptee", r.json.service)
    assert.same({ "adoptee-web" }, r.json.containers)
    assert.is_string(r.json.revision)
    r = http("GET", "/v1/services/adoptee")
    assert.equal(200, r.status)
    assert.is_true(r.json.active)
    r = http("POST", "/v1/adopt", { json = { service = "nobody" } })
    assert.equal(404, r.status)
    assert.matches("nobody%-", r.json.error.message)
    r = http("POST", "/v1/adopt", { json = { name = "adoptee" } })
    assert.equal(400, r.status)
    assert.equal('expected {"service": "NAME"}', r.json.error.message)
  end)

  it("purges registry entries whose containers are gone; --dry-run only says so", function()
    deploy("purgee")
    srv("purgee")
    assert.equal(200, http("POST", "/v1/services/purgee/stop").status)
    local _, code = env:podman({ "rm", "-f", "purgee-web" })
    assert.equal(0, code)
    local r = http("POST", "/v1/purge", { json = { dry_run = true } })
    assert.equal(200, r.status, r.body)
    assert.is_true(r.json.dry_run)
    assert.truthy(table.concat(r.json.purged, " "):find("purgee", 1, true), r.body)
    local kept = {}
    for _, k in ipairs(r.json.kept) do kept[k.service] = k.reason end
    assert.matches("has 1 container", kept.ops)
    assert.is_true(http("GET", "/v1/services/purgee").json.deployed)
    r = http("POST", "/v1/purge", { json = {} })
    assert.equal(200, r.status)
    assert.is_false(r.json.dry_run)
    assert.truthy(table.concat(r.json.purged, " "):find("purgee", 1, true))
    r = http("GET", "/v1/services/purgee")
    assert.is_false(r.json.deployed)          -- the definition stays, the registry forgot
    r = http("POST", "/v1/purge", { json = { dry_run = "yes" } })
    assert.equal(400, r.status)
    assert.equal("dry_run: expected a boolean, got string", r.json.error.message)
    assert.equal(200, http("DELETE", "/v1/services/purgee").status)
  end)

  it("recovers services whose containers Podman lost, streaming when asked", function()
    deploy("lost")
    srv("lost")
    env:podman({ "rm", "-f", "lost-web" })
    local r = http("POST", "/v1/recover")
    assert.equal(200, r.status, r.body)
    local got
    for _, s in ipairs(r.json.services) do if s.service == "lost" then got = s end end
    assert.truthy(got, r.body)
    assert.is_true(got.ok)
    assert.truthy(table.concat(r.json.order, " "):find("lost", 1, true))
    wait_for(function() return container_state("lost-web") == "running" end, 10,
      "lost-web to run again")
    env:podman({ "rm", "-f", "lost-web" })
    r = http("POST", "/v1/recover", { headers = { Accept = "application/x-ndjson" } })
    assert.equal(200, r.status)
    local ls = lines_of(r.body)
    local saw_step = false
    for _, l in ipairs(ls) do
      if l.step == "recover" and l.service == "lost" then saw_step = true end
    end
    assert.is_true(saw_step, r.body)
    assert.is_table(ls[#ls].result)
    assert.equal(200, http("DELETE", "/v1/services/lost").status)
  end)
end)

describe("logs", function()
  local text = toml("talker", { cmd = { "sh", "-c", "httpd -p 8080 -h /www; i=0; "
    .. "while true; do echo out $i; echo err $i >&2; i=$((i+1)); sleep 0.5; done" } })

  it("gives the last N lines as NDJSON {container, stream, line}", function()
    deploy("talker", text)
    srv("talker")
    wait_for(function()
      return #lines_of(http("GET", "/v1/services/talker/logs?tail=100").body) >= 6
    end, 15, "six log lines")
    local r = http("GET", "/v1/services/talker/logs?tail=4")
    assert.equal(200, r.status)
    assert.matches("^application/x%-ndjson", r.headers["content-type"])
    local ls = lines_of(r.body)
    assert.equal(4, #ls)
    local streams = {}
    for _, l in ipairs(ls) do
      assert.equal("talker-web", l.container)
      assert.matches("^%a+ %d+$", l.line)
      streams[l.stream] = true
    end
    assert.is_true(streams.stdout and streams.stderr)
    assert.equal(0, #lines_of(http("GET", "/v1/services/talker/logs?tail=0").body))
    r = http("GET", "/v1/services/talker/logs?tail=x")
    assert.equal(400, r.status)
    assert.matches("^tail: expected a whole number", r.json.error.message)
    assert.equal(404, http("GET", "/v1/services/deftoml/logs").status)  -- nothing deployed
  end)

  it("follows: a line reaches the client as the container writes it", function()
    local pid, file = curl_stream("/v1/services/talker/logs?tail=0&follow=1")
    wait_for(function() return (read_file(file) or ""):find("out %d+") end, 10, "a first line")
    local latencies = {}
    for i = 1, 3 do
      local mark = "MARK-" .. i .. "-" .. math.random(1e6)
      local t0 = now()
      env:podman({ "exec", "talker-web", "sh", "-c", "echo " .. mark .. " > /proc/1/fd/1" })
      wait_for(function() return (read_file(file) or ""):find(mark, 1, true) end, 10, mark)
      latencies[#latencies + 1] = now() - t0
    end
    run("kill " .. pid)
    table.sort(latencies)
    local t0 = now()
    env:podman({ "exec", "talker-web", "true" })
    local exec = now() - t0
    print(string.format("\nlogs follow: a line written with podman exec reached the client "
      .. "%.0f ms after the exec began (median of 3; an empty exec takes %.0f ms)",
      latencies[2] * 1000, exec * 1000))
    assert.is_true(latencies[2] < 2, "median " .. latencies[2])
    -- The stream's lines are whole NDJSON objects.
    for l in (read_file(file) or ""):gmatch("[^\n]+") do
      assert.is_table(mcp.json.decode(l), l)
    end
    os.remove(file)
  end)
end)

describe("events", function()
  it("lists the event log, filtered by service", function()
    local r = http("GET", "/v1/events?service=ops&limit=5")
    assert.equal(200, r.status)
    assert.is_true(#r.json.events > 0 and #r.json.events <= 5)
    for _, e in ipairs(r.json.events) do
      assert.equal("ops", e.service)
      assert.is_number(e.id)
      assert.is_string(e.kind)
      assert.is_number(e.time)
    end
    r = http("GET", "/v1/events?limit=0")
    assert.equal(400, r.status)
    assert.matches("^limit: expected a whole number from 1 to 10000", r.json.error.message)
  end)

  it("follows: a new event arrives as NDJSON while the stream is open", function()
    local last = http("GET", "/v1/events?limit=1").json.events[1].id
    local pid, file = curl_stream("/v1/events?follow=1&since=" .. last)
    run("sleep 0.5")
    local t0 = now()
    local r = http("POST", "/v1/services/ops/restart")
    assert.equal(200, r.status, r.body)
    wait_for(function() return (read_file(file) or ""):find('"kind":"restarted"', 1, true) end,
      10, "the restarted event")
    local took = now() - t0
    run("kill " .. pid)
    for l in read_file(file):gmatch("[^\n]+") do
      local e = mcp.json.decode(l)
      assert.is_true(e.id > last)
    end
    os.remove(file)
    assert.is_true(took < 5, took)
  end)
end)

describe("files", function()
  local root

  setup(function()
    deploy("files")
    root = srv("files")
  end)

  it("pushes and pulls a file, bytes unchanged, directories made", function()
    local data = "line 1\n\0binary\255\254\n" .. string.rep("x", 70000)
    local r = http("PUT", "/v1/services/files/files/conf/app.conf", { body = data,
      headers = { ["Content-Type"] = "application/octet-stream" } })
    assert.equal(200, r.status, r.body)
    assert.same({ service = "files", path = "conf/app.conf", bytes = #data }, r.json)
    assert.equal(data, read_file(root .. "/conf/app.conf"))
    r = http("GET", "/v1/services/files/files/conf/app.conf")
    assert.equal(200, r.status)
    assert.equal(data, r.body)
    assert.equal(404, http("GET", "/v1/services/files/files/conf/absent").status)
  end)

  local escapes = {
    { "../../etc/passwd", raw = true },
    { "%2e%2e/%2e%2e/etc/passwd" },
    { "..%2f..%2fetc%2fpasswd" },
    { "%2fetc%2fpasswd" },
    { "conf/../../../etc/passwd", raw = true },
    { "out/passwd" },            -- out -> /etc
    { "pw" },                    -- pw -> /etc/passwd
  }

  it("refuses paths out of /srv/NAME: traversal, %2e%2e, absolute, symlinks", function()
    os.execute("ln -sfn /etc " .. q(root .. "/out") .. " && ln -sfn /etc/passwd "
      .. q(root .. "/pw"))
    for _, e in ipairs(escapes) do
      local r = http("GET", "/v1/services/files/files/" .. e[1], { raw = e.raw })
      assert.is_true(r.status >= 400 and r.status < 500, e[1] .. ": " .. r.status)
      assert.is_falsy(r.body:find("root:", 1, true), e[1] .. " leaked /etc/passwd")
      if r.json then assert.is_string(r.json.error.message) end
    end
    local r = http("GET", "/v1/services/files/files/%2e%2e/%2e%2e/etc/passwd")
    assert.equal(400, r.status)
    assert.equal('fs.read: "../../etc/passwd": escapes /srv/files', r.json.error.message)
    r = http("GET", "/v1/services/files/files/%2fetc%2fpasswd")
    assert.equal('fs.read: "/etc/passwd": escapes /srv/files (an absolute path)',
      r.json.error.message)
    r = http("GET", "/v1/services/files/files/out/passwd")
    assert.equal('fs.read: "out/passwd": escapes /srv/files through a symlink',
      r.json.error.message)
  end)

  it("writes nothing outside /srv/NAME", function()
    local canary = "mcp-api-canary-" .. math.random(1e9)
    local targets = {
      { "../../tmp/" .. canary, raw = true }, { "%2e%2e/%2e%2e/tmp/" .. canary },
      { "%2ftmp%2f" .. canary }, { "out/" .. canary }, { "tmpout/" .. canary },
    }
    os.execute("ln -sfn /tmp " .. q(root .. "/tmpout"))
    for _, t in ipairs(targets) do
      local r = http("PUT", "/v1/services/files/files/" .. t[1], { body = "pwned", raw = t.raw })
      assert.is_true(r.status >= 400 and r.status < 500, t[1] .. ": " .. r.status)
    end
    assert.is_nil(read_file("/tmp/" .. canary))
    assert.is_nil(read_file("/etc/" .. canary))
    -- A write to a symlink's own name replaces the link (inside the root),
    -- never the file it pointed to.
    local passwd = read_file("/etc/passwd")
    local r = http("PUT", "/v1/services/files/files/pw", { body = "replaced" })
    assert.equal(200, r.status, r.body)
    assert.equal(passwd, read_file("/etc/passwd"))
    assert.equal("replaced", read_file(root .. "/pw"))
    assert.equal("", run("find " .. q(root .. "/pw") .. " -type l"))
  end)
end)

describe("reload", function()
  it("reloads: a new generation", function()
    local before = http("GET", "/v1/status").json.generation
    local r = http("POST", "/v1/reload")
    assert.equal(200, r.status, r.body)
    assert.is_true(r.json.generation > before)
    assert.is_number(r.json.files)
    assert.is_number(r.json.took_ms)
  end)

  it("keeps the running generation when a file is broken, and says where (422)", function()
    local gen = http("GET", "/v1/status").json.generation
    write_file(agent.services_dir .. "/broken.toml", 'name = "broken"\nnode = \n')
    local r = http("POST", "/v1/reload")
    assert.equal(422, r.status, r.body)
    assert.equal("reload_failed", r.json.error.code)
    assert.matches("broken%.toml:2", r.json.error.message)
    local st = http("GET", "/v1/status").json
    assert.equal(gen, st.generation)
    assert.matches("broken%.toml:2", st.reload.error)
    os.remove(agent.services_dir .. "/broken.toml")
    wait_for(function() return http("POST", "/v1/reload").status == 200 end, 10, "a good reload")
    assert.is_nil(http("GET", "/v1/status").json.reload.error)
  end)
end)

describe("render", function()
  it("renders a known service's podman run lines", function()
    local r = http("GET", "/v1/services/ops/render")
    assert.equal(200, r.status)
    assert.equal("ops", r.json.service)
    assert.matches("^podman run %-d %-%-name ops%-web ", r.json.lines[1])
    assert.matches("%-%-label mcp%.managed=true", r.json.lines[1])
    assert.matches("localhost/mcp%-test:1%.0 httpd %-f %-p 8080 %-h /www$", r.json.lines[1])
  end)

  it("renders a definition sent in the body, and refuses an invalid one", function()
    local r = http("POST", "/v1/render", { body = toml("fresh"),
      headers = { ["Content-Type"] = "application/toml" } })
    assert.equal(200, r.status, r.body)
    assert.matches("%-%-name fresh%-web", r.json.lines[1])
    assert.matches("%-p 127%.0%.0%.1:0:8080", r.json.lines[1])
    r = http("POST", "/v1/render", { json = { name = "fresh" } })
    assert.equal(400, r.status)
    assert.equal("invalid_definition", r.json.error.code)
  end)
end)

describe("sync", function()
  local function def(name, image)
    return { name = name, format = "toml", text = toml(name, { image = image }) }
  end

  it("stores several definitions and deploys only those that changed", function()
    srv("sync-a"); srv("sync-b"); srv("sync-c")
    local r = http("POST", "/v1/sync", { json = { definitions = {
      def("sync-a"), def("sync-b") } } })
    assert.equal(200, r.status, r.body)
    local by = {}
    for _, s in ipairs(r.json.services) do by[s.name] = s end
    assert.equal("created", by["sync-a"].result)
    assert.is_true(by["sync-a"].deployed)
    assert.is_true(by["sync-b"].deployed)
    r = http("POST", "/v1/sync", { json = { definitions = {
      def("sync-a"), def("sync-b", "localhost/mcp-test:2.0"), def("sync-c") } } })
    assert.equal(200, r.status, r.body)
    by = {}
    for _, s in ipairs(r.json.services) do by[s.name] = s end
    assert.equal("unchanged", by["sync-a"].result)
    assert.is_false(by["sync-a"].deployed)
    assert.equal("updated", by["sync-b"].result)
    assert.is_true(by["sync-b"].deployed)
    assert.equal("r2", by["sync-b"].revision)
    assert.is_true(by["sync-c"].deployed)
    assert.equal("running", container_state("sync-c-web"))
    local ps = http("GET", "/v1/ps").json.containers
    for _, c in ipairs(ps) do
      if c.service == "sync-b" then assert.equal("2.0", c.version) end
    end
  end)

  it("refuses the whole set when one definition is invalid; nothing stored", function()
    local before = services_files()
    local bad = def("sync-d")
    bad.text = bad.text:gsub('image = "[^"]*"', 'image = "nope"')
    local r = http("POST", "/v1/sync", { json = { definitions = { def("sync-e"), bad } } })
    assert.equal(400, r.status)
    assert.same({ 'sync sync-d: components[1].image: "nope" is not pinned: expected a version '
      .. 'tag (":v1.2.3") or a digest ("@sha256:...")' }, r.json.error.errors)
    assert.equal(before, services_files())
    r = http("POST", "/v1/sync", { json = { definitions = { { name = "x" } } } })
    assert.equal(400, r.status)
    assert.same({ "definitions[1]: expected {name, format (toml, lua, json), text}" },
      r.json.error.errors)
  end)
end)

describe("while a deploy waits on Podman", function()
  it("GET /v1/health and GET /v1/ps keep answering promptly", function()
    local text = toml("slowpoke", { cmd = { "sh", "-c", "sleep 5; exec httpd -f -p 8080 -h /www" },
      health = 'kind = "http"\ninterval = "300ms"\ntimeout = "300ms"' })
    assert.equal(201, put_toml("slowpoke", text).status)
    srv("slowpoke")
    local t0 = now()
    local pid, file = curl_stream("/v1/services/slowpoke/deploy", "-X POST")
    local function deploying() return run("kill -0 " .. pid .. " 2>/dev/null; echo $?") == "0" end
    run("sleep 1")
    local health, ps = {}, {}
    while now() - t0 < 4 and deploying() do
      health[#health + 1] = http("GET", "/v1/health").time
      ps[#ps + 1] = http("GET", "/v1/ps").time
    end
    assert.is_true(deploying(), "the deploy should still wait on its health check")
    wait_for(function() return not deploying() end, 60, "the deploy to end")
    local deploy_took = now() - t0
    assert.matches('"status":"deployed"', read_file(file))
    os.remove(file)
    table.sort(health); table.sort(ps)
    local function pct(t, p) return t[math.max(1, math.ceil(#t * p))] * 1000 end
    print(string.format("\nduring a %.1f s deploy: GET /v1/health median %.1f ms, max %.1f ms "
      .. "(%d requests); GET /v1/ps median %.1f ms, max %.1f ms", deploy_took,
      pct(health, 0.5), pct(health, 1), #health, pct(ps, 0.5), pct(ps, 1)))
    assert.is_true(#health >= 5, "too few requests: " .. #health)
    assert.is_true(deploy_took > 4.5, "the deploy should have waited " .. deploy_took)
    assert.is_true(health[#health] < 1.0, "slowest /v1/health " .. health[#health])
    assert.is_true(ps[#ps] < 2.0, "slowest /v1/ps " .. ps[#ps])
  end)
end)

describe("a service without routes", function()
  it("shows in /v1/ps and GET /v1/services/NAME (its container publishes no port)", function()
    deploy("quiet", toml("quiet", { route = false }))
    srv("quiet")
    finally(function() http("DELETE", "/v1/services/quiet") end)
    local r = http("GET", "/v1/ps")
    assert.equal(200, r.status, r.body)
    local row
    for _, c in ipairs(r.json.containers) do if c.container == "quiet-web" then row = c end end
    assert.truthy(row, r.body)
    assert.same({}, row.ports)
    r = http("GET", "/v1/services/quiet")
    assert.equal(200, r.status, r.body)
    assert.equal("quiet-web", r.json.containers[1].container)
  end)
end)

describe("metrics", function()
  it("exposes the agent's families in a text promtool accepts", function()
    -- A component that exits makes the monitor restart it. It serves for a
    -- few seconds first, so that the deploy sees it healthy.
    deploy("crashy", toml("crashy", { cmd = { "sh", "-c",
      "httpd -p 8080 -h /www; sleep 3; exit 3" } }))
    srv("crashy")
    local text
    wait_for(function()
      text = http("GET", "/metrics").body
      return text:find('mcp_restarts_total{[^}]*service="crashy"') ~= nil
    end, 30, "an automatic restart of crashy")
    local r = http("GET", "/metrics")
    assert.equal(200, r.status)
    assert.matches("^text/plain; version=0%.0%.4", r.headers["content-type"])
    text = r.body
    write_file(tmp .. "/metrics.txt", text)
    local out, code, err = run("promtool check metrics < " .. q(tmp .. "/metrics.txt"))
    assert.equal(0, code, out .. err)
    local function value(pattern)
      return tonumber(text:match("\n" .. pattern .. " ([%d.e+-]+)"))
    end
    assert.is_true(value('mcp_services{state="active"}') >= 3)
    assert.is_true(value('mcp_containers{state="running"}') >= 3)
    assert.is_true(value('mcp_deploys_total{result="deployed"}') >= 8)
    assert.is_true(value('mcp_deploys_total{result="failed"}') >= 1)
    assert.is_true(value('mcp_reloads_total{result="ok"}') >= 1)
    assert.is_true(value('mcp_reloads_total{result="failed"}') >= 1)
    assert.is_number(value("mcp_reload_generation"))
    assert.matches('mcp_health_checks_total{kind="tcp",result="pass"} %d+', text)
    assert.matches('mcp_podman_request_duration_seconds_bucket{le="%+Inf",op="create"} %d+',
      text)
    assert.matches('mcp_podman_request_duration_seconds_count{op="list"} %d+', text)
    assert.matches('mcp_api_requests_total{method="GET",route="/v1/services/{name}",'
      .. 'status="404"} %d+', text)
    assert.matches('mcp_api_requests_total{method="PUT",route="/v1/services/{name}",'
      .. 'status="400"} %d+', text)
    assert.matches('mcp_service_revision{revision="r1",service="ops",status="deployed"} 1',
      text:gsub('revision="r%d+",service="ops"', 'revision="r1",service="ops"'))
    assert.matches('mcp_events_total{kind="deployed"} %d+', text)
  end)
end)

describe("the OpenAPI description", function()
  local spec_path = agent_env.ROOT .. "/docs/openapi.yaml"
  local lib = agent_env.ROOT .. "/tests/lib/openapi.lua"

  local function server_routes()
    local out, code, err = agent:eval(
      'mcp.json.encode(require("mcp.api").routes())')
    assert.equal(0, code, err)
    local text = out:match('^"(.*)"%s*$')
    if text then text = assert(loadstring("return " .. out))() end
    return assert(mcp.json.decode(text or out), out)
  end

  -- A pattern with its parameters' names left out: /v1/services/{}/files/{}.
  local function shape(pattern)
    return (pattern:gsub("{[%w_]+%.?%.?%.?}", "{}"))
  end

  it("describes every route the server answers, and no route it does not", function()
    assert.truthy(read_file(spec_path), "docs/openapi.yaml is missing")
    local routes = server_routes()
    assert.is_true(#routes >= 20, #routes .. " routes")
    local openapi = require("tests.lib.openapi")
    local spec = openapi.load(spec_path)
    local missing, served = {}, {}
    for _, r in ipairs(routes) do
      served[r.method .. " " .. shape(r.pattern)] = true
      if not openapi.find(spec, r.method, r.pattern) then
        missing[#missing + 1] = r.method .. " " .. r.pattern
      end
    end
    assert.same({}, missing)
    local extra = {}
    for _, op in ipairs(openapi.operations(spec)) do
      if not served[op.method .. " " .. shape(op.path)] then
        extra[#extra + 1] = op.method .. " " .. op.path
      end
    end
    assert.same({}, extra)
  end)

  it("matches the schema of every answer this spec saw", function()
    assert.truthy(read_file(lib), "tests/lib/openapi.lua is missing")
    local openapi = require("tests.lib.openapi")
    local spec = openapi.load(spec_path)
    local problems = {}
    for _, x in ipairs(exchanges) do
      local ok, why = openapi.check_response(spec, x.method, x.path, x.status, x.content_type,
        x.body)
      if not ok then
        problems[#problems + 1] = string.format("%s %s -> %d: %s", x.method, x.path, x.status,
          tostring(why))
      end
    end
    assert.is_true(#exchanges > 100, #exchanges .. " answers")
    assert.same({}, problems)
  end)
end)
