-- tests/integration/definitions_spec.lua: malformed service definitions sent
-- to a running agent (TOML, JSON and Lua bodies of PUT /v1/services/NAME) and
-- checked with `mcp-agent check-config`: each is refused with its precise
-- error (file or request, field path, value, what was expected), and nothing
-- changes: not the definition the agent serves, not the services directory,
-- not the running container.
local podman_env = require("tests.env.podman_env")
local agent_env = require("tests.env.agent_env")
local mcp = require("mcp.core")

local run, q, read_file, write_file = agent_env.run, agent_env.quote, agent_env.read_file,
  agent_env.write_file

local GOOD = [==[
name = "web"
node = "test"

[[components]]
name = "web"
image = "localhost/mcp-test:1.0"
cmd = ["httpd", "-f", "-p", "8080", "-h", "/www"]

[[components.routes]]
port = 8080
]==]

-- GOOD with its component's lines replaced by `comp` (TOML).
local function toml(comp, top)
  return ([==[
name = "web"
node = "test"
%s
[[components]]
name = "web"
%s
]==]):format(top or "", comp)
end

local function json(t) return mcp.json.encode(t) end

local IMAGE = "localhost/mcp-test:1.0"

-- Each case: a body, its format, and the errors expected, without the
-- "SOURCE: " that starts each of them (the request for the API, the file for
-- check-config). api_only: an error that depends on the request, not on the
-- file (a file may define another node's service).
local CASES = {
  { "an image tagged latest", "toml",
    toml('image = "localhost/mcp-test:latest"'),
    { 'components[1].image: tag "latest" is not pinned' } },
  { "an image without a tag", "toml",
    toml('image = "localhost/mcp-test"'),
    { 'components[1].image: "localhost/mcp-test" is not pinned: expected a version tag '
      .. '(":v1.2.3") or a digest ("@sha256:...")' } },
  { "a misspelt field", "toml",
    'nme = "web"\nnode = "test"\n[[components]]\nname = "web"\nimage = "' .. IMAGE .. '"\n',
    { 'nme: unknown field (did you mean "name"?)',
      'name: missing: expected the service name, like "mcq"' } },
  { "a compose-style command", "toml",
    toml('image = "' .. IMAGE .. '"\ncommand = ["httpd"]'),
    { 'components[1].command: unknown field (did you mean "cmd"?)' } },
  { "a cmd written as a shell string", "toml",
    toml('image = "' .. IMAGE .. '"\ncmd = "httpd -f -p 8080"'),
    { 'components[1].cmd: expected a list of strings, got string "httpd -f -p 8080" '
      .. '(write it as a list: ["httpd", "-f", "-p", "8080"])' } },
  { "an env setting PORT", "toml",
    toml('image = "' .. IMAGE .. '"\nenv = ["PORT=80"]'),
    { 'components[1].env[1]: "PORT=80" sets PORT, which is reserved: the agent sets PORT '
      .. 'and PORT_<ROUTE> from the component\'s routes' } },
  { "a volume escaping /srv/web through ..", "toml",
    toml('image = "' .. IMAGE .. '"\nvolumes = ["/srv/web/../etc:/etc"]'),
    { 'components[1].volumes[1]: host path "/srv/web/../etc" (that is /srv/etc) is outside '
      .. 'the allowed roots: /srv/web' } },
  { "a route mode l9", "toml",
    toml('image = "' .. IMAGE .. '"\n[[components.routes]]\nport = 8080\nmode = "l9"'),
    { 'components[1].routes[1].mode: "l9" is not one of l4, l7' } },
  { "a route port of 0", "toml",
    toml('image = "' .. IMAGE .. '"\n[[components.routes]]\nport = 0'),
    { 'components[1].routes[1].port: 0 is out of range: expected an integer port 1-65535' } },
  { "an unknown health kind", "toml",
    toml('image = "' .. IMAGE .. '"\n[components.health]\nkind = "grpc"'),
    { 'components[1].health.kind: "grpc" is not one of http, tcp, exec, lua, running' } },
  { "an unknown restart policy", "toml",
    toml('image = "' .. IMAGE .. '"\nrestart = "sometimes"'),
    { 'components[1].restart: "sometimes" is not one of no, on-failure, always, '
      .. 'unless-stopped' } },
  { "two components with one name", "toml",
    toml('image = "' .. IMAGE .. '"\n[[components]]\nname = "web"\nimage = "' .. IMAGE .. '"'),
    { 'components[2].name: "web" is used by components[1] too' } },
  { "a service depending on itself", "toml",
    toml('image = "' .. IMAGE .. '"', 'depends_on = ["web"]'),
    { 'depends_on[1]: "web" is the service itself: a service cannot depend on itself' } },
  { "an unknown policy", "toml",
    toml('image = "' .. IMAGE .. '"', 'policy = "rollin"'),
    { 'policy: "rollin" is not a known policy: expected one of recreate, rolling '
      .. '(did you mean "rolling"?)' } },
  { "a TOML value missing", "toml",
    'name = "web"\nnode =\n',
    { '2:7: unexpected end of line; expected a value' }, sep = ":" },
  { "a TOML key given twice", "toml",
    'name = "web"\nname = "other"\n',
    { '2:1: duplicate key "name" (first defined at line 1)' }, sep = ":" },
  { "a definition named differently from the URL", "toml",
    (GOOD:gsub('name = "web"', 'name = "other"', 1)),
    { 'name: "other" does not match the URL\'s "web"' }, api_only = true },
  { "a definition for another node", "toml",
    (GOOD:gsub('node = "test"', 'node = "elsewhere"')),
    { 'node: "elsewhere" is not this agent\'s node "test"' }, api_only = true },
  -- The API decodes a JSON body before it reaches the definition, and
  -- answers bad_json itself.
  { "malformed JSON", "json",
    '{"name": "web",}',
    { "json: line 1 column 16: string or '}' expected near '}'" },
    api_code = "bad_json",
    api_message = "the request body is not valid JSON: line 1 column 16: string or '}' "
      .. "expected near '}'" },
  { "components as one object in JSON", "json",
    json({ name = "web", components = { name = "web", image = IMAGE } }),
    { 'components: expected a non-empty list of components, got a table (even one '
      .. 'component goes in a list)' } },
  { "a route port as a JSON string", "json",
    json({ name = "web", components = { { name = "web", image = IMAGE,
      routes = { { port = "8080" } } } } }),
    { 'components[1].routes[1].port: expected an integer port 1-65535, got string "8080"' } },
  { "an env map with a list value in JSON", "json",
    json({ name = "web", components = { { name = "web", image = IMAGE,
      env = { A = { 1 } } } } }),
    { 'components[1].env.A: expected a string value, got a list' } },
  { "active as a JSON string", "json",
    json({ name = "web", active = "yes", components = { { name = "web", image = IMAGE } } }),
    { 'active: expected true or false, got string "yes"' } },
  { "a Lua syntax error", "lua",
    'return {\n  name = "web",,\n}\n',
    { "2: unexpected symbol near ','" }, sep = ":" },
  { "a Lua definition calling os.execute", "lua",
    'os.execute("touch /tmp/pwned")\nreturn { name = "web" }\n',
    nil, sep = ":", pattern = "^1: .*os%.execute" },
  { "a Lua definition returning a string", "lua",
    'return "web"\n',
    { "a Lua definition must return a table, got string" } },
  { "a Lua cmd written as a string", "lua",
    'return { name = "web", components = { { name = "web", image = "' .. IMAGE .. '",\n'
      .. '  cmd = "httpd -f" } } }\n',
    { 'components[1].cmd: expected a list of strings, got string "httpd -f" (write it as a '
      .. 'list: { "httpd", "-f" })' },
    -- The API names the request, not a .lua file, so its hint is in TOML's syntax.
    api_errors = { 'components[1].cmd: expected a list of strings, got string "httpd -f" '
      .. '(write it as a list: ["httpd", "-f"])' } },
  { "a Lua health fn that is a number", "lua",
    'return { name = "web", components = { { name = "web", image = "' .. IMAGE .. '",\n'
      .. '  routes = { { port = 8080 } }, health = { kind = "lua", fn = 5 } } } }\n',
    { 'components[1].health.fn: expected a function, or the name of a function in the '
      .. 'service\'s policy, got number 5' } },
}

local CONTENT_TYPE = { toml = "application/toml", json = "application/json",
  lua = "text/x-lua" }

describe("malformed definitions", function()
  local env, agent, original, check_dir, check_config
  local made_srv = os.execute("test -e /srv/web") ~= 0

  -- Names, sizes and contents of the services directory.
  local function snapshot(dir)
    local out = run("cd " .. q(dir) .. " && for f in $(ls -A); do echo \"== $f\"; cat \"$f\"; done")
    return out
  end

  setup(function()
    env = podman_env.start()
    agent = agent_env.start({ podman = env, node = "test", services = { web = GOOD } })
    local status, body = agent:api("POST", "/v1/services/web/deploy")
    assert.equal(200, status, mcp.json.encode(body))
    status, original = agent:api("GET", "/v1/services/web")
    assert.equal(200, status)
    -- check-config reads its own services directory, with the agent's config.
    check_dir = agent.dir .. "/check-services"
    os.execute("mkdir -p " .. q(check_dir))
    check_config = agent.dir .. "/check.toml"
    local text = read_file(agent.config_path):gsub('services_dir = "[^"]*"',
      'services_dir = "' .. check_dir .. '"')
    write_file(check_config, text)
  end)

  teardown(function()
    if made_srv then os.execute("rm -rf /srv/web") end
    if agent then pcall(agent.stop, agent) end
    if env then env:stop() end
  end)

  it("covers at least 20 malformed definitions, in TOML, JSON and Lua", function()
    local formats = {}
    for _, c in ipairs(CASES) do formats[c[2]] = (formats[c[2]] or 0) + 1 end
    assert.is_true(#CASES >= 20)
    assert.is_true(formats.toml >= 5 and formats.json >= 5 and formats.lua >= 5)
  end)

  -- The messages of an error list without their source; asserts each starts
  -- with it.
  local function strip(errs, source, sep)
    local out = {}
    local prefix = source .. (sep or ": ")
    for i, e in ipairs(errs) do
      assert.equal(prefix, e:sub(1, #prefix), "error " .. i .. " does not start with the source")
      out[i] = e:sub(#prefix + 1)
    end
    return out
  end

  local function check(c, errs)
    if c.pattern then
      assert.equal(1, #errs, table.concat(errs, "\n"))
      assert.matches(c.pattern, errs[1])
    else
      assert.same(c[4], errs)
    end
  end

  for _, c in ipairs(CASES) do
    local title, format, body = c[1], c[2], c[3]

    it(("refuses %s (%s) over the API with 400 and its precise error, changing nothing")
      :format(title, format:upper()), function()
      local before = snapshot(agent.services_dir)
      local status, res, raw = agent:api("PUT", "/v1/services/web", { body = body,
        headers = { ["Content-Type"] = CONTENT_TYPE[format] } })
      assert.equal(400, status, raw)
      if c.api_code then
        assert.equal(c.api_code, res.error.code)
        assert.equal(c.api_message, res.error.message)
      else
        assert.equal("invalid_definition", res.error.code)
        local errs = strip(res.error.errors, "PUT /v1/services/web", c.sep)
        if c.api_errors then assert.same(c.api_errors, errs) else check(c, errs) end
        assert.equal(table.concat(res.error.errors, "\n"), res.error.message)
      end

      assert.equal(before, snapshot(agent.services_dir))
      local _, now = agent:api("GET", "/v1/services/web")
      assert.same(original.definition, now.definition)
      assert.same(original.source, now.source)
      assert.equal("r1", now.revision.id)
      assert.equal(1, #now.containers)
      assert.equal("running", now.containers[1].state)
      assert.equal("r1", now.containers[1].revision)
      assert.is_nil(io.open("/tmp/pwned"))
    end)

    if not c.api_only then
      it(("makes check-config exit 1 with the same error for %s in a services file")
        :format(title), function()
        os.execute("rm -f " .. q(check_dir) .. "/*")
        local file = check_dir .. "/web." .. format
        write_file(file, body)
        local out, rc, err = run(q(agent_env.AGENT) .. " check-config --config "
          .. q(check_config))
        assert.equal(1, rc, out .. err)
        local errs = {}
        for line in err:gmatch("[^\n]+") do
          if line:sub(1, #file) == file then errs[#errs + 1] = line end
        end
        check(c, strip(errs, file, c.sep))
        assert.is_nil(io.open("/tmp/pwned"))
      end)
    end
  end

  -- A dependency is checked against the whole set, which only the reload
  -- that follows a valid PUT sees: the API answers 422 reload_failed there.
  it("refuses a definition depending on a service not defined, naming the entry, and "
    .. "changes nothing", function()
    local before = snapshot(agent.services_dir)
    local status, res, raw = agent:api("PUT", "/v1/services/web", {
      body = toml('image = "' .. IMAGE .. '"', 'depends_on = ["nope"]'),
      headers = { ["Content-Type"] = "application/toml" } })
    assert.is_true(status == 400 or status == 422, raw)
    assert.matches(agent.services_dir .. '/web.toml: depends_on[1]: "nope" is not a defined '
      .. 'service', res.error.message, 1, true)
    assert.equal(before, snapshot(agent.services_dir))
    local _, now = agent:api("GET", "/v1/services/web")
    assert.same(original.definition, now.definition)
  end)

  it("has kept the first definition and its container through all of it", function()
    local _, now = agent:api("GET", "/v1/services/web")
    assert.same(original.definition, now.definition)
    assert.equal(GOOD, read_file(agent.services_dir .. "/web.toml"))
    local out = env:podman({ "inspect", "--format", "{{.State.Running}} "
      .. "{{index .Config.Labels \"mcp.revision\"}}", "web-web" })
    assert.equal("true r1\n", out)
  end)
end)
