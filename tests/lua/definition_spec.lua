-- Specs for mcp.definition: what a service definition may say, what it
-- normalises to, and what it means to Podman.
local definition = require("mcp.definition")

local IMG = "mcr.svc.mcp.metacircular.net:8443/mcq:v0.3.2"

-- The existing MCP's TOML example, as the C parser hands it over.
local function mcq()
  return {
    name = "mcq", node = "rift", active = true,
    components = { {
      name = "mcq", image = IMG,
      volumes = { "/srv/mcq:/srv/mcq" },
      cmd = { "server", "--config", "/srv/mcq/mcq.toml" },
      routes = { { port = 8443, mode = "l7" } },
    } },
  }
end

local function valid(t, source, opts)
  local def, errs = definition.validate(t, source or "services/mcq.toml", opts)
  assert(def, errs and table.concat(errs, "\n"))
  return def
end

local function comp(d) return d.components[1] end

local HEALTH_DEFAULT_TIMING = { interval = 10, timeout = 2, start_period = 0, failures = 3,
  successes = 1 }

local function with_timing(h)
  for k, v in pairs(HEALTH_DEFAULT_TIMING) do h[k] = v end
  return h
end

describe("definition.validate", function()
  it("accepts the existing MCP's TOML example and fills in every default", function()
    assert.are.same({
      source = "services/mcq.toml",
      name = "mcq", node = "rift", active = true, policy = "recreate", depends_on = {},
      auto_deploy = false,
      components = { {
        name = "mcq", image = IMG,
        cmd = { "server", "--config", "/srv/mcq/mcq.toml" },
        env = {},
        volumes = { { source = "/srv/mcq", destination = "/srv/mcq", options = {} } },
        user = "0:0", restart = "unless-stopped", stop_timeout = 10, init = true,
        routes = { { key = "default", port = 8443, mode = "l7", public = false } },
        health = with_timing({ kind = "tcp", route = "default", port = 8443 }),
        on_unhealthy = "restart",
      } },
    }, valid(mcq()))
  end)

  it("gives a definition without a node the agent's node, and keeps an explicit one", function()
    local t = mcq()
    t.node = nil
    assert.are.equal("rift", valid(t, nil, { node = "rift" }).node)
    assert.is_nil(valid(t).node)
    assert.are.equal("rift", valid(mcq(), nil, { node = "other" }).node)
  end)

  it("reads a Lua definition with a lua health function, keeping the function", function()
    local fn = function(c) return c ~= nil end
    local def = valid({
      name = "mcq", node = "rift", policy = "rolling", depends_on = { "mcns" },
      components = { { name = "mcq", image = IMG,
        cmd = { "server", "--config", "/srv/mcq/mcq.toml" },
        routes = { { port = 8443, mode = "l7" } },
        health = { kind = "lua", fn = fn } } },
    }, "services/mcq.lua", { known_policies = { "recreate", "rolling" } })
    assert.are.equal("rolling", def.policy)
    assert.are.same({ "mcns" }, def.depends_on)
    assert.are.same(with_timing({ kind = "lua", fn = fn, route = "default", port = 8443 }),
      comp(def).health)
    assert.are.equal(fn, comp(def).health.fn)
  end)

  it("accepts a lua health fn named as a string, for a function in the policy", function()
    local t = mcq()
    comp(t).health = { kind = "lua", fn = "checks.db" }
    assert.are.equal("checks.db", comp(valid(t)).health.fn)
  end)

  it("normalises env given as a Lua table into a sorted KEY=VALUE list", function()
    local t = mcq()
    comp(t).env = { ZED = "z", DEBUG = 1, RATIO = 0.5, VERBOSE = true, EMPTY = "" }
    assert.are.same({ "DEBUG=1", "EMPTY=", "RATIO=0.5", "VERBOSE=true", "ZED=z" },
      comp(valid(t)).env)
  end)

  it("sorts an env list, keeping values with '=' in them whole", function()
    local t = mcq()
    comp(t).env = { "B=2", "A=x=y" }
    assert.are.same({ "A=x=y", "B=2" }, comp(valid(t)).env)
  end)

  it("mounts /srv/<service> at the same path when no volumes are given", function()
    local t = mcq()
    comp(t).volumes = nil
    assert.are.same({ { source = "/srv/mcq", destination = "/srv/mcq", options = {} } },
      comp(valid(t)).volumes)
  end)

  it("mounts nothing when volumes is an empty list", function()
    local t = mcq()
    comp(t).volumes = {}
    assert.are.same({}, comp(valid(t)).volumes)
  end)

  it("normalises volume paths and keeps their options", function()
    local t = mcq()
    comp(t).volumes = { "/srv/mcq/./data/:/data//:ro,Z", "/srv/mcq/a/../b:/b" }
    assert.are.same({
      { source = "/srv/mcq/data", destination = "/data", options = { "ro", "Z" } },
      { source = "/srv/mcq/b", destination = "/b", options = {} },
    }, comp(valid(t)).volumes)
  end)

  it("allows host paths under the agent's allowed volume roots", function()
    local t = mcq()
    comp(t).volumes = { "/data/mcq:/data", "/etc/ssl/certs:/etc/ssl/certs:ro" }
    local def = valid(t, nil, { allowed_volume_roots = { "/data", "/etc/ssl/certs/" } })
    assert.are.equal("/etc/ssl/certs", comp(def).volumes[2].source)
  end)

  it("does not take a sibling directory for a subdirectory of a root", function()
    local t = mcq()
    comp(t).volumes = { "/srv/mcq2:/x" }
    local def, errs = definition.validate(t, "services/mcq.toml")
    assert.is_nil(def)
    assert.are.same({ 'services/mcq.toml: components[1].volumes[1]: host path "/srv/mcq2"'
      .. " is outside the allowed roots: /srv/mcq" }, errs)
  end)

  it("accepts volumes as tables in Lua definitions", function()
    local t = mcq()
    comp(t).volumes = { { source = "/srv/mcq/db", destination = "/db", options = { "ro" } },
      { source = "/srv/mcq/x", destination = "/x", options = "rw,U" } }
    assert.are.same({
      { source = "/srv/mcq/db", destination = "/db", options = { "ro" } },
      { source = "/srv/mcq/x", destination = "/x", options = { "rw", "U" } },
    }, comp(valid(t, "services/mcq.lua")).volumes)
  end)

  it("checks a component with no routes by whether its container runs", function()
    local t = mcq()
    comp(t).routes = nil
    local c = comp(valid(t))
    assert.are.same({}, c.routes)
    assert.are.same(with_timing({ kind = "running" }), c.health)
  end)

  it("checks a component with routes over tcp on its first route by default", function()
    local t = mcq()
    comp(t).routes = { { name = "api", port = 8443 }, { name = "grpc", port = 9443 } }
    assert.are.same(with_timing({ kind = "tcp", route = "api", port = 8443 }),
      comp(valid(t)).health)
  end)

  it("fills in an http check's defaults: path /, any 2xx or 3xx, the only route", function()
    local t = mcq()
    comp(t).health = { kind = "http" }
    assert.are.same(with_timing({ kind = "http", path = "/", route = "default", port = 8443,
      expect_status = { min = 200, max = 399 } }), comp(valid(t)).health)
  end)

  it("reads an http check's port as a route name or a container port", function()
    local t = mcq()
    comp(t).routes = { { name = "api", port = 8443 }, { name = "admin", port = 9000 } }
    comp(t).health = { kind = "http", port = "admin", path = "/healthz",
      expect_status = { 200, 204 }, expect_body = "ok", interval = "30s", timeout = "1500ms",
      start_period = "1m", failures = 5, successes = 2 }
    assert.are.same({ kind = "http", route = "admin", port = 9000, path = "/healthz",
      expect_status = { 200, 204 }, expect_body = "ok", interval = 30, timeout = 1.5,
      start_period = 60, failures = 5, successes = 2 }, comp(valid(t)).health)
    comp(t).health = { kind = "tcp", port = 8443 }
    assert.are.equal("api", comp(valid(t)).health.route)
  end)

  it("reads expect_status as one status, a list, or a min/max range", function()
    local t = mcq()
    comp(t).health = { kind = "http", expect_status = 204 }
    assert.are.same({ 204 }, comp(valid(t)).health.expect_status)
    comp(t).health = { kind = "http", expect_status = { min = 200, max = 299 } }
    assert.are.same({ min = 200, max = 299 }, comp(valid(t)).health.expect_status)
  end)

  it("takes an exec check's command as a list", function()
    local t = mcq()
    comp(t).health = { kind = "exec", command = { "pg_isready", "-q" } }
    assert.are.same(with_timing({ kind = "exec", command = { "pg_isready", "-q" } }),
      comp(valid(t)).health)
  end)

  it("fills in route defaults, keys an unnamed route 'default' and lowercases hostnames",
    function()
      local t = mcq()
      comp(t).routes = { { port = 8443, hostname = "MCQ.svc.MCP.metacircular.net" } }
      assert.are.same({ { key = "default", port = 8443, mode = "l7", public = false,
        hostname = "mcq.svc.mcp.metacircular.net" } }, comp(valid(t)).routes)
      comp(t).routes = { { name = "api", port = 8443, mode = "l4", public = true } }
      assert.are.same({ { key = "api", name = "api", port = 8443, mode = "l4", public = true } },
        comp(valid(t)).routes)
    end)

  it("reads stop_timeout as a duration", function()
    local t = mcq()
    comp(t).stop_timeout = "1m30s"
    assert.are.equal(90, comp(valid(t)).stop_timeout)
  end)

  it("takes an image pinned by digest as pinned, whatever its tag", function()
    local digest = "@sha256:" .. string.rep("0123456789abcdef", 4)
    local t = mcq()
    comp(t).image = "mcr.svc.mcp.metacircular.net:8443/mcq" .. digest
    valid(t)
    comp(t).image = "mcr.svc.mcp.metacircular.net:8443/mcq:latest" .. digest
    valid(t)
  end)

  it("accepts a numeric user and a user name", function()
    local t = mcq()
    comp(t).user = 1000
    assert.are.equal("1000", comp(valid(t)).user)
    comp(t).user = "mcq:mcq"
    assert.are.equal("mcq:mcq", comp(valid(t)).user)
  end)

  it("keeps path, tier and build as given, without acting on them", function()
    local t = mcq()
    t.path, t.tier = "mcq", "core"
    t.build = { images = { mcq = "Dockerfile" } }
    local def = valid(t)
    assert.are.equal("mcq", def.path)
    assert.are.equal("core", def.tier)
    assert.are.same({ images = { mcq = "Dockerfile" } }, def.build)
    assert.are_not.equal(t.build, def.build)
  end)

  it("leaves its input untouched", function()
    local t = mcq()
    comp(t).env = { B = "1", A = "2" }
    local before = mcq()
    comp(before).env = { B = "1", A = "2" }
    valid(t)
    assert.are.same(before, t)
  end)

  it("reads active and auto_deploy", function()
    local t = mcq()
    t.active, t.auto_deploy = false, true
    local def = valid(t)
    assert.is_false(def.active)
    assert.is_true(def.auto_deploy)
  end)

  it("checks policy names only for their form when no known policies are given", function()
    local t = mcq()
    t.policy = "blue-green"
    assert.are.equal("blue-green", valid(t).policy)
  end)

  it("raises on an unknown option, which is a bug in the caller", function()
    assert.has_error(function() definition.validate(mcq(), "x", { nodes = "rift" }) end,
      "definition.validate: unknown option nodes (expected node, allowed_volume_roots,"
      .. " known_policies)")
  end)
end)

describe("definition.validate refuses malformed definitions", function()
  local cases = {}
  local function case(title, mutate, extra)
    cases[#cases + 1] = { title = title, mutate = mutate, extra = extra or {} }
  end
  local function expect(errors) cases[#cases].expected = errors end

  case("a misspelt top-level field", function(d) d.nme, d.name = d.name, nil end)
  expect {
    'services/mcq.toml: nme: unknown field (did you mean "name"?)',
    'services/mcq.toml: name: missing: expected the service name, like "mcq"',
  }
  case("a service name with capitals and '_'", function(d) d.name = "My_Svc" end)
  expect {
    'services/mcq.toml: name: "My_Svc" is not a valid name: expected 1 to 63 lowercase letters, digits or \'-\', starting with a letter or digit',
  }
  case("a service name longer than 63", function(d) d.name = string.rep("a", 64) end)
  expect {
    'services/mcq.toml: name: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" is not a valid name: expected 1 to 63 lowercase letters, digits or \'-\', starting with a letter or digit',
  }
  case("active as a string", function(d) d.active = "yes" end)
  expect {
    'services/mcq.toml: active: expected true or false, got string "yes"',
  }
  case("a policy outside the known ones", function(d) d.policy = "rollin" end, { opts = { known_policies = { recreate = true, rolling = true } } })
  expect {
    'services/mcq.toml: policy: "rollin" is not a known policy: expected one of recreate, rolling (did you mean "rolling"?)',
  }
  case("a depends_on naming the service itself", function(d) d.depends_on = { "mcns", "mcq" } end)
  expect {
    'services/mcq.toml: depends_on[2]: "mcq" is the service itself: a service cannot depend on itself',
  }
  case("a depends_on naming a service twice", function(d) d.depends_on = { "mcns", "mcns" } end)
  expect {
    'services/mcq.toml: depends_on[2]: "mcns" is listed twice (also at depends_on[1])',
  }
  case("a depends_on written as a string", function(d) d.depends_on = "mcns" end)
  expect {
    'services/mcq.toml: depends_on: expected a list of service names, got string "mcns" (write it as a list: ["mcns"])',
  }
  case("a definition without components", function(d) d.components = nil end)
  expect {
    'services/mcq.toml: components: missing: expected a non-empty list of components',
  }
  case("an empty components list", function(d) d.components = {} end)
  expect {
    'services/mcq.toml: components: is empty: expected at least one component',
  }
  case("components given as one table, not a list", function(d) d.components = d.components[1] end)
  expect {
    'services/mcq.toml: components: expected a non-empty list of components, got a table (even one component goes in a list)',
  }
  case("a compose-style 'command' field", function(d) comp(d).command = comp(d).cmd; comp(d).cmd = nil end)
  expect {
    'services/mcq.toml: components[1].command: unknown field (did you mean "cmd"?)',
  }
  case("an image tagged latest", function(d) comp(d).image = "mcr.svc.mcp.metacircular.net:8443/mcq:latest" end)
  expect {
    'services/mcq.toml: components[1].image: tag "latest" is not pinned',
  }
  case("an image without a tag", function(d) comp(d).image = "mcr.svc.mcp.metacircular.net:8443/mcq" end)
  expect {
    'services/mcq.toml: components[1].image: "mcr.svc.mcp.metacircular.net:8443/mcq" is not pinned: expected a version tag (":v1.2.3") or a digest ("@sha256:...")',
  }
  case("an image with capitals in its path", function(d) comp(d).image = "registry.example/MCQ:v1" end)
  expect {
    'services/mcq.toml: components[1].image: "registry.example/MCQ:v1" is not an image reference: the path component "MCQ" is not lowercase letters and digits separated by \'.\', \'_\' or \'-\'; expected [registry[:port]/]path[:tag][@digest]',
  }
  case("a component without an image", function(d) comp(d).image = nil end)
  expect {
    'services/mcq.toml: components[1].image: missing: expected an image reference like "registry.example:8443/app:v1.2.3"',
  }
  case("an image with a short digest", function(d) comp(d).image = "mcq@sha256:abc" end)
  expect {
    'services/mcq.toml: components[1].image: "mcq@sha256:abc" is not an image reference: the digest "sha256:abc" is not algorithm:hex (sha256:...); expected [registry[:port]/]path[:tag][@digest]',
  }
  case("a cmd written as a shell string", function(d) comp(d).cmd = "server --config /srv/mcq/mcq.toml" end)
  expect {
    'services/mcq.toml: components[1].cmd: expected a list of strings, got string "server --config /srv/mcq/mcq.toml" (write it as a list: ["server", "--config", "/srv/mcq/mcq.toml"])',
  }
  case("a cmd written as a shell string, hinting in Lua syntax for a Lua file", function(d) comp(d).cmd = "server --debug" end, { source = "services/mcq.lua" })
  expect {
    'services/mcq.lua: components[1].cmd: expected a list of strings, got string "server --debug" (write it as a list: { "server", "--debug" })',
  }
  case("a cmd holding a number", function(d) comp(d).cmd = { "server", 5 } end)
  expect {
    'services/mcq.toml: components[1].cmd[2]: expected a string, got number 5',
  }
  case("an env setting PORT", function(d) comp(d).env = { "PORT=80" } end)
  expect {
    'services/mcq.toml: components[1].env[1]: "PORT=80" sets PORT, which is reserved: the agent sets PORT and PORT_<ROUTE> from the component\'s routes',
  }
  case("an env map setting PORT_API", function(d) comp(d).env = { PORT_API = "80" } end)
  expect {
    'services/mcq.toml: components[1].env.PORT_API: PORT_API is reserved: the agent sets PORT and PORT_<ROUTE> from the component\'s routes',
  }
  case("an env with a bad variable name", function(d) comp(d).env = { "1ST=x" } end)
  expect {
    'services/mcq.toml: components[1].env[1]: "1ST=x": "1ST" is not a variable name: expected letters, digits and \'_\', not starting with a digit',
  }
  case("an env setting a variable twice", function(d) comp(d).env = { "A=1", "A=2" } end)
  expect {
    'services/mcq.toml: components[1].env[2]: "A=2" sets A again (first set at components[1].env[1])',
  }
  case("an env entry without =", function(d) comp(d).env = { "DEBUG" } end)
  expect {
    'services/mcq.toml: components[1].env[1]: "DEBUG" is not "KEY=VALUE"',
  }
  case("an env given as a number", function(d) comp(d).env = 5 end)
  expect {
    'services/mcq.toml: components[1].env: expected a list of "KEY=VALUE" strings or a table of KEY = "VALUE", got number 5',
  }
  case("an env map with a table value", function(d) comp(d).env = { A = { 1 } } end)
  expect {
    'services/mcq.toml: components[1].env.A: expected a string value, got a list',
  }
  case("a volume escaping /srv/<service> through ..", function(d) comp(d).volumes = { "/srv/mcq/../etc:/etc" } end)
  expect {
    'services/mcq.toml: components[1].volumes[1]: host path "/srv/mcq/../etc" (that is /srv/etc) is outside the allowed roots: /srv/mcq',
  }
  case("a volume outside the allowed roots", function(d) comp(d).volumes = { "/var/lib/x:/x" } end, { opts = { allowed_volume_roots = { "/data" } } })
  expect {
    'services/mcq.toml: components[1].volumes[1]: host path "/var/lib/x" is outside the allowed roots: /srv/mcq, /data',
  }
  case("a named volume", function(d) comp(d).volumes = { "mcqdata:/data" } end)
  expect {
    'services/mcq.toml: components[1].volumes[1]: host path "mcqdata" is not absolute: expected a directory under /srv/mcq (named volumes are not supported)',
  }
  case("a volume with an unknown option", function(d) comp(d).volumes = { "/srv/mcq:/srv/mcq:rx" } end)
  expect {
    'services/mcq.toml: components[1].volumes[1]: option "rx" in "/srv/mcq:/srv/mcq:rx" is not one of ro, rw, z, Z, U, nocopy',
  }
  case("a volume both ro and rw", function(d) comp(d).volumes = { "/srv/mcq:/srv/mcq:ro,rw" } end)
  expect {
    'services/mcq.toml: components[1].volumes[1]: "/srv/mcq:/srv/mcq:ro,rw" says both ro and rw',
  }
  case("a volume without a container path", function(d) comp(d).volumes = { "/srv/mcq" } end)
  expect {
    'services/mcq.toml: components[1].volumes[1]: "/srv/mcq" is not "host:container[:options]"',
  }
  case("a relative container path", function(d) comp(d).volumes = { "/srv/mcq:data" } end)
  expect {
    'services/mcq.toml: components[1].volumes[1]: container path "data" is not absolute',
  }
  case("two volumes on one container path", function(d) comp(d).volumes = { "/srv/mcq/a:/data", "/srv/mcq/b:/data" } end)
  expect {
    'services/mcq.toml: components[1].volumes[2]: container path /data is mounted twice (also at components[1].volumes[1])',
  }
  case("an unknown restart policy", function(d) comp(d).restart = "sometimes" end)
  expect {
    'services/mcq.toml: components[1].restart: "sometimes" is not one of no, on-failure, always, unless-stopped',
  }
  case("a stop_timeout that is not a duration", function(d) comp(d).stop_timeout = "ten" end)
  expect {
    'services/mcq.toml: components[1].stop_timeout: "ten" is not a duration: expected a number of seconds or a string like "500ms", "2s", "1m30s", "1h"',
  }
  case("an init given as a number", function(d) comp(d).init = 1 end)
  expect {
    'services/mcq.toml: components[1].init: expected true or false, got number 1',
  }
  case("a user with two colons", function(d) comp(d).user = "a:b:c" end)
  expect {
    'services/mcq.toml: components[1].user: "a:b:c" is not a user: expected "uid:gid", "uid" or a name',
  }
  case("an unknown on_unhealthy", function(d) comp(d).on_unhealthy = "reboot" end)
  expect {
    'services/mcq.toml: components[1].on_unhealthy: "reboot" is not one of restart, stop, none',
  }
  case("a route mode l9", function(d) comp(d).routes[1].mode = "l9" end)
  expect {
    'services/mcq.toml: components[1].routes[1].mode: "l9" is not one of l4, l7',
  }
  case("a route port of 0", function(d) comp(d).routes[1].port = 0 end)
  expect {
    'services/mcq.toml: components[1].routes[1].port: 0 is out of range: expected an integer port 1-65535',
  }
  case("a route port as a string", function(d) comp(d).routes[1].port = "8443" end)
  expect {
    'services/mcq.toml: components[1].routes[1].port: expected an integer port 1-65535, got string "8443"',
  }
  case("a route without a port", function(d) comp(d).routes[1].port = nil end)
  expect {
    'services/mcq.toml: components[1].routes[1].port: missing: expected the container port, an integer 1-65535',
  }
  case("a route port with a fraction", function(d) comp(d).routes[1].port = 8443.5 end)
  expect {
    'services/mcq.toml: components[1].routes[1].port: expected an integer port 1-65535, got number 8443.5',
  }
  case("two routes, one unnamed", function(d) comp(d).routes = { { port = 8443 }, { name = "grpc", port = 9443 } } end)
  expect {
    'services/mcq.toml: components[1].routes[1].name: missing: expected a route name: a component with more than one route names each of them',
  }
  case("two routes with one name", function(d) comp(d).routes = { { name = "api", port = 8443 }, { name = "api", port = 9443 } } end)
  expect {
    'services/mcq.toml: components[1].routes[2].name: "api" is used by components[1].routes[1] too',
  }
  case("a route hostname with a space", function(d) comp(d).routes[1].hostname = "mcq .example.net" end)
  expect {
    'services/mcq.toml: components[1].routes[1].hostname: "mcq .example.net" is not a DNS name: expected dot-separated labels of letters, digits and \'-\'',
  }
  case("routes given as one table, not a list", function(d) comp(d).routes = { port = 8443 } end)
  expect {
    'services/mcq.toml: components[1].routes: expected a list of routes, got a table (even one route goes in a list)',
  }
  case("a route public as a string", function(d) comp(d).routes[1].public = "yes" end)
  expect {
    'services/mcq.toml: components[1].routes[1].public: expected true or false, got string "yes"',
  }
  case("routes on the host network", function(d) comp(d).network = "host" end)
  expect {
    'services/mcq.toml: components[1].network: "host" cannot publish the component\'s routes: expected a bridged network (leave network out, or name a Podman network)',
  }
  case("a health check without a kind", function(d) comp(d).health = { path = "/" } end)
  expect {
    'services/mcq.toml: components[1].health.kind: missing: expected one of http, tcp, exec, lua, running',
  }
  case("a health kind grpc", function(d) comp(d).health = { kind = "grpc" } end)
  expect {
    'services/mcq.toml: components[1].health.kind: "grpc" is not one of http, tcp, exec, lua, running',
  }
  case("an http check on a component without routes", function(d) comp(d).routes = nil; comp(d).health = { kind = "http" } end)
  expect {
    'services/mcq.toml: components[1].health.kind: "http" checks a route, but the component has no routes: add one, or use kind exec, lua or running',
  }
  case("a health port naming no route", function(d) comp(d).health = { kind = "http", port = "admin" } end)
  expect {
    'services/mcq.toml: components[1].health.port: "admin" is not one of the component\'s routes (unnamed on 8443)',
  }
  case("a health port that is not a route's port", function(d) comp(d).health = { kind = "tcp", port = 9000 } end)
  expect {
    'services/mcq.toml: components[1].health.port: 9000 is not the container port of one of the component\'s routes (unnamed on 8443)',
  }
  case("a tcp check choosing between two routes", function(d) comp(d).routes = { { name = "api", port = 8443 }, { name = "grpc", port = 9443 } }; comp(d).health = { kind = "tcp" } end)
  expect {
    'services/mcq.toml: components[1].health.port: missing: expected the route to check: the component has 2 routes (api on 8443, grpc on 9443)',
  }
  case("a health timeout longer than the interval", function(d) comp(d).health = { kind = "tcp", interval = "2s", timeout = "5s" } end)
  expect {
    'services/mcq.toml: components[1].health.timeout: 5s is longer than the interval 2s: a check must end before the next one starts',
  }
  case("health failures of 0", function(d) comp(d).health = { kind = "tcp", failures = 0 } end)
  expect {
    'services/mcq.toml: components[1].health.failures: 0 is out of range: expected an integer of 1 or more',
  }
  case("an http path without a leading /", function(d) comp(d).health = { kind = "http", path = "health" } end)
  expect {
    'services/mcq.toml: components[1].health.path: "health" does not start with "/"',
  }
  case("a field another health kind uses", function(d) comp(d).health = { kind = "http", command = { "true" } } end)
  expect {
    'services/mcq.toml: components[1].health.command: not used by health kind "http"',
  }
  case("an exec check without a command", function(d) comp(d).health = { kind = "exec" } end)
  expect {
    'services/mcq.toml: components[1].health.command: missing: expected the check\'s command as a list of strings',
  }
  case("a lua check whose fn is a number", function(d) comp(d).health = { kind = "lua", fn = 5 } end)
  expect {
    'services/mcq.toml: components[1].health.fn: expected a function, or the name of a function in the service\'s policy, got number 5',
  }
  case("an expect_status out of range", function(d) comp(d).health = { kind = "http", expect_status = 700 } end)
  expect {
    'services/mcq.toml: components[1].health.expect_status: 700 is out of range: expected an HTTP status 100-599, a list of them, or { min = 200, max = 399 }',
  }
  case("two components with one name", function(d) d.components[2] = { name = "mcq", image = IMG } end)
  expect {
    'services/mcq.toml: components[2].name: "mcq" is used by components[1] too',
  }
  case("a build given as a string", function(d) d.build = "Dockerfile" end)
  expect {
    'services/mcq.toml: build: expected a table (kept for the build tooling), got string "Dockerfile"',
  }
  case("a definition that is not a table", function(d) return "name = mcq" end)
  expect {
    'services/mcq.toml: expected a table of service fields, got string "name = mcq"',
  }
  case("errors in two components, reporting all of them", function(d)
    d.components[2] = { name = "web", image = "web:latest", routes = { { port = 80, mode = "http" } } }
    comp(d).restart = "never"
  end)
  expect {
    'services/mcq.toml: components[1].restart: "never" is not one of no, on-failure, always, unless-stopped',
    'services/mcq.toml: components[2].image: tag "latest" is not pinned',
    'services/mcq.toml: components[2].routes[1].mode: "http" is not one of l4, l7',
  }

  for _, c in ipairs(cases) do
    it("refuses " .. c.title .. ", naming the field, the value and what was expected", function()
      local t = mcq()
      local r = c.mutate(t)
      if r ~= nil then t = r end
      local def, errs = definition.validate(t, c.extra.source or "services/mcq.toml",
        c.extra.opts)
      assert.is_nil(def)
      assert.are.same(c.expected, errs)
    end)
  end

  it("covers at least 25 malformed definitions", function()
    assert.is_true(#cases >= 25)
  end)
end)

describe("definition.parse_image", function()
  local cases = {
    { IMG, { registry = "mcr.svc.mcp.metacircular.net:8443", path = "mcq", tag = "v0.3.2" } },
    { "nginx:1.25", { path = "nginx", tag = "1.25" } },
    { "library/nginx:1.25-alpine", { path = "library/nginx", tag = "1.25-alpine" } },
    { "localhost/app:v1", { registry = "localhost", path = "app", tag = "v1" } },
    { "registry:5000/team/app", { registry = "registry:5000", path = "team/app" } },
    { "ghcr.io/a/b__c.d-e---f:v1_x", { registry = "ghcr.io", path = "a/b__c.d-e---f",
      tag = "v1_x" } },
    { "app@sha256:" .. string.rep("ab", 32), { path = "app",
      digest = "sha256:" .. string.rep("ab", 32) } },
  }
  for _, case in ipairs(cases) do
    it("splits " .. case[1] .. " into registry, path, tag and digest", function()
      assert.are.same(case[2], definition.parse_image(case[1]))
    end)
  end

  for _, bad in ipairs({ "", "App:v1", "app:", "app:-x", "/app:v1", "a//b:v1", "a_-b:v1",
    "reg.io:/app:v1", "app@md5:12" }) do
    it("refuses " .. string.format("%q", bad), function()
      local ref, why = definition.parse_image(bad)
      assert.is_nil(ref)
      assert.is_string(why)
    end)
  end
end)

describe("definition.version", function()
  it("is the image's tag", function()
    assert.are.equal("v0.3.2", definition.version(IMG))
    assert.are.equal("1.25", definition.version("nginx:1.25"))
  end)

  it("is the start of the digest for an image pinned only by digest", function()
    assert.are.equal("sha256:0123456789ab",
      definition.version("app@sha256:" .. string.rep("0123456789abcdef", 4)))
  end)

  it("is nil for something that is not an image reference", function()
    assert.is_nil(definition.version("Not An Image"))
    assert.is_nil(definition.version(nil))
  end)
end)

describe("definition.topo_order", function()
  local function svc(name, deps) return { name = name, depends_on = deps or {},
    source = "services/" .. name .. ".toml" } end

  it("puts dependencies before the services that need them, ties by name", function()
    local defs = { mcq = svc("mcq", { "mcns", "mcdb" }), mcns = svc("mcns", { "mcdb" }),
      mcdb = svc("mcdb"), web = svc("web"), api = svc("api", { "mcq" }) }
    assert.are.same({ "mcdb", "mcns", "mcq", "api", "web" }, definition.topo_order(defs))
  end)

  it("takes a list of definitions as well as a map", function()
    assert.are.same({ "b", "a" }, definition.topo_order({ svc("a", { "b" }), svc("b") }))
  end)

  it("refuses a cycle and names it", function()
    local order, err, errs = definition.topo_order({ a = svc("a", { "b" }),
      b = svc("b", { "c" }), c = svc("c", { "a" }), d = svc("d") })
    assert.is_nil(order)
    assert.are.equal("services/a.toml: depends_on: dependency cycle: a -> b -> c -> a", err)
    assert.are.same({ err }, errs)
  end)

  it("refuses a dependency outside the set, naming the file and the entry", function()
    local defs = { a = svc("a", { "b", "ghost", "phantom" }), b = svc("b") }
    local order, err, errs = definition.topo_order(defs)
    assert.is_nil(order)
    assert.are.same({ 'services/a.toml: depends_on[2]: "ghost" is not a defined service',
      'services/a.toml: depends_on[3]: "phantom" is not a defined service' }, errs)
    assert.are.equal(table.concat(errs, "\n"), err)
  end)

  it("orders a partial set when told so, skipping dependencies outside it", function()
    assert.are.same({ "b", "a" }, definition.topo_order({ a = svc("a", { "b", "ghost" }),
      b = svc("b") }, { complete = false }))
  end)
end)

describe("definition.container_spec", function()
  local opts = { revision = "r12", ports = { mcq = { default = 10001 } } }

  it("says what the MCQ example means to Podman", function()
    assert.are.same({
      name = "mcq-mcq", image = IMG,
      command = { "server", "--config", "/srv/mcq/mcq.toml" },
      env = { PORT = "10001" },
      labels = { ["mcp.managed"] = "true", ["mcp.service"] = "mcq",
        ["mcp.component"] = "mcq", ["mcp.revision"] = "r12" },
      portmappings = { { container_port = 8443, host_port = 10001, host_ip = "127.0.0.1",
        protocol = "tcp" } },
      mounts = { { type = "bind", source = "/srv/mcq", destination = "/srv/mcq", options = {} } },
      user = "0:0", restart_policy = "unless-stopped", init = true, stop_timeout = 10,
    }, definition.container_spec(valid(mcq()), "mcq", opts))
  end)

  it("names a rolling deploy's new container with the suffix", function()
    local spec = definition.container_spec(valid(mcq()), "mcq",
      { revision = "r13", suffix = "r13", ports = opts.ports })
    assert.are.equal("mcq-mcq-r13", spec.name)
  end)

  it("publishes a public route on all addresses, others on loopback only", function()
    local t = mcq()
    comp(t).routes = { { name = "api", port = 8443, public = true }, { name = "admin", port = 9000 } }
    local spec = definition.container_spec(valid(t), "mcq",
      { revision = "r1", ports = { mcq = { api = 10001, admin = 10002 } } })
    assert.are.same({
      { container_port = 8443, host_port = 10001, host_ip = "0.0.0.0", protocol = "tcp" },
      { container_port = 9000, host_port = 10002, host_ip = "127.0.0.1", protocol = "tcp" },
    }, spec.portmappings)
  end)

  it("passes PORT_<NAME> per named route, and PORT when there is one route", function()
    local t = mcq()
    comp(t).routes = { { name = "api", port = 8443 }, { name = "grpc-web", port = 9000 } }
    comp(t).env = { "LOG=debug" }
    local spec = definition.container_spec(valid(t), "mcq",
      { revision = "r1", ports = { mcq = { api = 10001, ["grpc-web"] = 10002 } } })
    assert.are.same({ LOG = "debug", PORT_API = "10001", PORT_GRPC_WEB = "10002" }, spec.env)
    comp(t).routes = { { name = "api", port = 8443 } }
    spec = definition.container_spec(valid(t), "mcq",
      { revision = "r1", ports = { mcq = { api = 10001 } } })
    assert.are.same({ LOG = "debug", PORT = "10001", PORT_API = "10001" }, spec.env)
  end)

  it("maps the network onto Podman's namespace modes", function()
    local t = mcq()
    comp(t).routes = nil
    local function ns(network)
      comp(t).network = network
      local spec = definition.container_spec(valid(t), "mcq", { revision = "r1" })
      return { spec.netns, spec.networks }
    end
    assert.are.same({}, ns(nil))
    assert.are.same({ { nsmode = "bridge" }, { mcp = {} } }, ns("mcp"))
    assert.are.same({ { nsmode = "host" } }, ns("host"))
    assert.are.same({ { nsmode = "none" } }, ns("none"))
    assert.are.same({ { nsmode = "container", value = "mcdb-db" } }, ns("container:mcdb-db"))
  end)

  it("rounds stop_timeout up to whole seconds", function()
    local t = mcq()
    comp(t).stop_timeout = "2500ms"
    assert.are.equal(3, definition.container_spec(valid(t), "mcq", opts).stop_timeout)
  end)

  it("raises when a route has no assigned host port, or the revision is missing", function()
    local def = valid(mcq())
    assert.has_error(function() definition.container_spec(def, "mcq", { revision = "r1" }) end,
      'definition.container_spec: no host port assigned for route default of mcq/mcq'
      .. ' (opts.ports["mcq"]["default"])')
    assert.has_error(function() definition.container_spec(def, "mcq", { ports = opts.ports }) end,
      "definition.container_spec: opts.revision is required (the mcp.revision label)")
    assert.has_error(function() definition.container_spec(def, "web", opts) end,
      "definition.container_spec: service mcq has no component web")
  end)
end)

describe("definition.render", function()
  it("writes the MCQ example as one podman run line", function()
    assert.are.same({
      "podman run -d --name mcq-mcq --label mcp.managed=true --label mcp.service=mcq"
      .. " --label mcp.component=mcq --label mcp.revision=r12 --user 0:0"
      .. " --restart unless-stopped --init --stop-timeout 10 -v /srv/mcq:/srv/mcq"
      .. " -e PORT=10001 -p 127.0.0.1:10001:8443 " .. IMG
      .. " server --config /srv/mcq/mcq.toml",
    }, definition.render(valid(mcq()), { revision = "r12", ports = { mcq = { default = 10001 } } }))
  end)

  it("writes one line per component, in definition order, quoting for the shell", function()
    local def = valid({
      name = "app", components = {
        { name = "web", image = "nginx:1.25", network = "mcp", init = false, restart = "always",
          volumes = { "/srv/app/html:/usr/share/nginx/html:ro,Z" },
          entrypoint = { "/bin/sh", "-c" },
          cmd = { "echo \"it's $HOME\" && exec nginx" },
          env = { GREETING = "hello world" },
          routes = { { port = 80, public = true } } },
        { name = "worker", image = "app@sha256:" .. string.rep("ab", 32), user = "1000:1000" },
      },
    })
    assert.are.same({
      "podman run -d --name app-web --label mcp.managed=true --label mcp.service=app"
      .. " --label mcp.component=web --label mcp.revision=r3 --user 0:0 --restart always"
      .. " --stop-timeout 10 --network mcp"
      .. " -v /srv/app/html:/usr/share/nginx/html:ro,Z"
      .. " -e 'GREETING=hello world' -e PORT=10005 -p 0.0.0.0:10005:80"
      .. " --entrypoint '[\"/bin/sh\",\"-c\"]' nginx:1.25"
      .. " 'echo \"it'\\''s $HOME\" && exec nginx'",
      "podman run -d --name app-worker --label mcp.managed=true --label mcp.service=app"
      .. " --label mcp.component=worker --label mcp.revision=r3 --user 1000:1000"
      .. " --restart unless-stopped --init --stop-timeout 10 -v /srv/app:/srv/app"
      .. " app@sha256:" .. string.rep("ab", 32),
    }, definition.render(def, { revision = "r3", ports = { web = { default = 10005 } } }))
  end)

  it("says the same as container_spec, since both come from one spec", function()
    local def = valid(mcq())
    local opts = { revision = "r1", ports = { mcq = { default = 10001 } } }
    local argv = definition.spec_argv(definition.container_spec(def, "mcq", opts))
    for i, s in ipairs(argv) do argv[i] = definition.shell_quote(s) end
    assert.are.same({ table.concat(argv, " ") }, definition.render(def, opts))
  end)
end)

describe("definition.status_ok", function()
  it("matches a status against a range or a list", function()
    assert.is_true(definition.status_ok({ min = 200, max = 399 }, 302))
    assert.is_false(definition.status_ok({ min = 200, max = 399 }, 404))
    assert.is_true(definition.status_ok({ 200, 204 }, 204))
    assert.is_false(definition.status_ok({ 200, 204 }, 201))
  end)
end)
