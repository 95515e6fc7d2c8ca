-- Specs for mcp.planner: reconcile as a pure function of (desired, actual,
-- registry), tested with tables, without Podman.
local definition = require("mcp.definition")
local planner = require("mcp.planner")

local IMG = "mcr.svc.mcp.metacircular.net:8443/mcq:v0.3.2"
local OLD = "mcr.svc.mcp.metacircular.net:8443/mcq:v0.3.1"

local function define(t, name)
  local def, errs = definition.validate(t, "services/" .. (name or t.name) .. ".toml",
    { node = "rift" })
  assert(def, errs and table.concat(errs, "\n"))
  return def
end

local function mcq(fields)
  local t = { name = "mcq", components = { { name = "mcq", image = IMG,
    cmd = { "server" }, routes = { { port = 8443 } } } } }
  for k, v in pairs(fields or {}) do t[k] = v end
  return define(t)
end

local ACTIVE, INACTIVE = mcq(), mcq({ active = false })
local HASH = planner.spec_hash(ACTIVE)

local function reg(status, fields)
  local r = { revision = "r12", spec_hash = HASH, status = status,
    components = { mcq = { image = IMG, ports = { default = 10001 } } } }
  for k, v in pairs(fields or {}) do r[k] = v end
  return r
end

local function ctr(name, revision, image, state, fields)
  local c = { name = name, id = "id-" .. name, service = "mcq", component = "mcq",
    revision = revision, image = image, state = state,
    labels = { ["mcp.managed"] = "true", ["mcp.service"] = "mcq", ["mcp.component"] = "mcq",
      ["mcp.revision"] = revision } }
  for k, v in pairs(fields or {}) do c[k] = v end
  return c
end

-- "op/cause container" per action, "-" where no container applies.
local function brief(actions)
  local out = {}
  for i, a in ipairs(actions) do
    out[i] = a.op .. "/" .. a.cause .. " " .. (a.container or "-")
  end
  return out
end

local DEFS = { active = ACTIVE, inactive = INACTIVE, absent = nil }
local REGS = { deployed = "deployed", stopped = "stopped", failed = "failed", absent = false }
local CONTAINERS = {
  running = function() return { ctr("mcq-mcq", "r12", IMG, "running") } end,
  exited = function() return { ctr("mcq-mcq", "r12", IMG, "exited") } end,
  absent = function() return {} end,
  ["wrong image"] = function() return { ctr("mcq-mcq", "r12", OLD, "running") } end,
  duplicate = function() return { ctr("mcq-mcq", "r12", IMG, "running"),
    ctr("mcq-mcq-r11", "r11", OLD, "running") } end,
}

local function world(d, r, c)
  local desired, registry = {}, {}
  if DEFS[d] then desired.mcq = DEFS[d] end
  if REGS[r] then registry.mcq = reg(REGS[r]) end
  return desired, CONTAINERS[c](), registry
end

-- definition × registry × containers → the plan. Every combination.
local MATRIX = {
  { "active", "deployed", "running", { "ok/ok mcq-mcq" } },
  { "active", "deployed", "exited", { "start/stopped mcq-mcq" } },
  { "active", "deployed", "absent", { "recreate/missing mcq-mcq" } },
  { "active", "deployed", "wrong image", { "recreate/drift-image mcq-mcq" } },
  { "active", "deployed", "duplicate", { "remove/duplicate mcq-mcq-r11", "ok/ok mcq-mcq" } },
  { "active", "stopped", "running", { "stop/registry-stopped mcq-mcq" } },
  { "active", "stopped", "exited", { "ok/stopped mcq-mcq" } },
  { "active", "stopped", "absent", { "ok/stopped -" } },
  { "active", "stopped", "wrong image", { "stop/registry-stopped mcq-mcq" } },
  { "active", "stopped", "duplicate", { "stop/registry-stopped mcq-mcq",
    "stop/registry-stopped mcq-mcq-r11" } },
  { "active", "failed", "running", { "failed/failed -" } },
  { "active", "failed", "exited", { "failed/failed -" } },
  { "active", "failed", "absent", { "failed/failed -" } },
  { "active", "failed", "wrong image", { "failed/failed -" } },
  { "active", "failed", "duplicate", { "failed/failed -" } },
  { "active", "absent", "running", { "deploy/new -", "orphan/unregistered mcq-mcq" } },
  { "active", "absent", "exited", { "deploy/new -", "orphan/unregistered mcq-mcq" } },
  { "active", "absent", "absent", { "deploy/new -" } },
  { "active", "absent", "wrong image", { "deploy/new -", "orphan/unregistered mcq-mcq" } },
  { "active", "absent", "duplicate", { "deploy/new -", "orphan/unregistered mcq-mcq",
    "orphan/unregistered mcq-mcq-r11" } },

  { "inactive", "deployed", "running", { "stop/inactive mcq-mcq" } },
  { "inactive", "deployed", "exited", { "ok/inactive mcq-mcq" } },
  { "inactive", "deployed", "absent", { "ok/inactive -" } },
  { "inactive", "deployed", "wrong image", { "stop/inactive mcq-mcq" } },
  { "inactive", "deployed", "duplicate", { "stop/inactive mcq-mcq", "stop/inactive mcq-mcq-r11" } },
  { "inactive", "stopped", "running", { "stop/inactive mcq-mcq" } },
  { "inactive", "stopped", "exited", { "ok/inactive mcq-mcq" } },
  { "inactive", "stopped", "absent", { "ok/inactive -" } },
  { "inactive", "stopped", "wrong image", { "stop/inactive mcq-mcq" } },
  { "inactive", "stopped", "duplicate", { "stop/inactive mcq-mcq", "stop/inactive mcq-mcq-r11" } },
  { "inactive", "failed", "running", { "stop/inactive mcq-mcq" } },
  { "inactive", "failed", "exited", { "ok/inactive mcq-mcq" } },
  { "inactive", "failed", "absent", { "ok/inactive -" } },
  { "inactive", "failed", "wrong image", { "stop/inactive mcq-mcq" } },
  { "inactive", "failed", "duplicate", { "stop/inactive mcq-mcq", "stop/inactive mcq-mcq-r11" } },
  { "inactive", "absent", "running", { "stop/inactive mcq-mcq", "orphan/unregistered mcq-mcq" } },
  { "inactive", "absent", "exited", { "orphan/unregistered mcq-mcq" } },
  { "inactive", "absent", "absent", { "ok/inactive -" } },
  { "inactive", "absent", "wrong image", { "stop/inactive mcq-mcq",
    "orphan/unregistered mcq-mcq" } },
  { "inactive", "absent", "duplicate", { "stop/inactive mcq-mcq", "stop/inactive mcq-mcq-r11",
    "orphan/unregistered mcq-mcq", "orphan/unregistered mcq-mcq-r11" } },

  { "absent", "deployed", "running", { "undefined/undefined -" } },
  { "absent", "deployed", "exited", { "undefined/undefined -" } },
  { "absent", "deployed", "absent", { "undefined/undefined -" } },
  { "absent", "deployed", "wrong image", { "undefined/undefined -" } },
  { "absent", "deployed", "duplicate", { "undefined/undefined -" } },
  { "absent", "stopped", "running", { "undefined/undefined -" } },
  { "absent", "stopped", "exited", { "undefined/undefined -" } },
  { "absent", "stopped", "absent", { "undefined/undefined -" } },
  { "absent", "stopped", "wrong image", { "undefined/undefined -" } },
  { "absent", "stopped", "duplicate", { "undefined/undefined -" } },
  { "absent", "failed", "running", { "undefined/undefined -" } },
  { "absent", "failed", "exited", { "undefined/undefined -" } },
  { "absent", "failed", "absent", { "undefined/undefined -" } },
  { "absent", "failed", "wrong image", { "undefined/undefined -" } },
  { "absent", "failed", "duplicate", { "undefined/undefined -" } },
  { "absent", "absent", "running", { "orphan/unregistered mcq-mcq" } },
  { "absent", "absent", "exited", { "orphan/unregistered mcq-mcq" } },
  { "absent", "absent", "absent", {} },
  { "absent", "absent", "wrong image", { "orphan/unregistered mcq-mcq" } },
  { "absent", "absent", "duplicate", { "orphan/unregistered mcq-mcq",
    "orphan/unregistered mcq-mcq-r11" } },
}

-- A tiny executor over in-memory state, doing what each action asks as if
-- the operator had said yes to everything: deploy, remove orphans,
-- undeploy what has no definition.
local function apply(actions, desired, actual, registry)
  local next_rev = 100
  local function drop(pred)
    local keep = {}
    for _, c in ipairs(actual) do
      if not pred(c) then keep[#keep + 1] = c end
    end
    actual = keep
  end
  local function deploy(service)
    local def = desired[service]
    next_rev = next_rev + 1
    local rev = "r" .. next_rev
    local comps = {}
    drop(function(c) return c.service == service end)
    for _, comp in ipairs(def.components) do
      comps[comp.name] = { image = comp.image }
      actual[#actual + 1] = { name = definition.container_name(service, comp.name),
        id = "new-" .. service .. "-" .. comp.name, service = service, component = comp.name,
        revision = rev, image = comp.image, state = "running" }
    end
    registry[service] = { revision = rev, spec_hash = planner.spec_hash(def),
      status = "deployed", components = comps }
  end
  for _, a in ipairs(actions) do
    if a.op == "deploy" or a.op == "outdated" or a.op == "failed" then
      deploy(a.service)
    elseif a.op == "recreate" then
      drop(function(c) return c.name == a.container end)
      actual[#actual + 1] = { name = a.container, id = "re-" .. a.container,
        service = a.service, component = a.component, revision = a.revision, image = a.image,
        state = "running" }
    elseif a.op == "start" or a.op == "unpause" or a.op == "stop" then
      for _, c in ipairs(actual) do
        if c.id == a.id then c.state = (a.op == "stop") and "exited" or "running" end
      end
    elseif a.op == "remove" or a.op == "orphan" then
      drop(function(c) return c.id == a.id end)
    elseif a.op == "undefined" then
      drop(function(c) return c.service == a.service end)
      registry[a.service] = nil
    end
  end
  return actual, registry
end

describe("planner.plan", function()
  for _, row in ipairs(MATRIX) do
    local d, r, c, expected = row[1], row[2], row[3], row[4]
    it(("plans %s for a %s definition, registry %s, container %s"):format(
      #expected == 0 and "nothing" or table.concat(expected, ", "), d, r, c), function()
      assert.are.same(expected, brief(planner.plan(world(d, r, c))))
    end)
  end

  it("covers every combination of definition, registry and containers", function()
    local seen = {}
    for _, row in ipairs(MATRIX) do seen[row[1] .. "|" .. row[2] .. "|" .. row[3]] = true end
    for d in pairs({ active = 1, inactive = 1, absent = 1 }) do
      for r in pairs(REGS) do
        for c in pairs(CONTAINERS) do
          assert.is_true(seen[d .. "|" .. r .. "|" .. c], d .. "|" .. r .. "|" .. c)
        end
      end
    end
  end)

  for _, row in ipairs(MATRIX) do
    local d, r, c = row[1], row[2], row[3]
    it(("converges in one pass from a %s definition, registry %s, container %s"):format(d, r, c),
      function()
        local desired, actual, registry = world(d, r, c)
        actual, registry = apply(planner.plan(desired, actual, registry), desired, actual,
          registry)
        assert.are.same({}, brief(planner.pending(planner.plan(desired, actual, registry))))
      end)
  end

  it("plans only ok for a converged node of several services, and again on a second look",
    function()
      local web = define({ name = "web", depends_on = { "mcq" }, components = {
        { name = "nginx", image = "nginx:1.25", routes = { { port = 80 } } },
        { name = "php", image = "php:8.3-fpm" } } })
      local desired = { mcq = ACTIVE, web = web, old = define({ name = "old", active = false,
        components = { { name = "old", image = "old:v1" } } }) }
      local registry = {
        mcq = reg("deployed"),
        web = { revision = "r3", spec_hash = planner.spec_hash(web), status = "deployed",
          components = { nginx = { image = "docker.io/library/nginx:1.25" },
            php = { image = "php:8.3-fpm" } } },
      }
      local actual = {
        ctr("mcq-mcq", "r12", IMG, "running"),
        { name = "web-nginx", id = "n", image = "docker.io/library/nginx:1.25", state = "running",
          labels = { ["mcp.managed"] = "true", ["mcp.service"] = "web",
            ["mcp.component"] = "nginx", ["mcp.revision"] = "r3" } },
        { name = "web-php", id = "p", image = "docker.io/library/php:8.3-fpm", state = "running",
          labels = { ["mcp.managed"] = "true", ["mcp.service"] = "web",
            ["mcp.component"] = "php", ["mcp.revision"] = "r3" } },
        { name = "postgres", id = "x", image = "postgres:16", state = "exited", labels = {} },
      }
      local plan = planner.plan(desired, actual, registry)
      assert.are.same({ "ok/ok mcq-mcq", "ok/inactive -", "ok/ok web-nginx", "ok/ok web-php" },
        brief(plan))
      assert.are.same({}, planner.pending(plan))
      assert.are.same(plan, planner.plan(desired, actual, registry))
    end)

  it("reports a changed definition as outdated, to act on only with auto_deploy", function()
    local NEW = IMG:gsub("v0.3.2", "v0.4.0")
    local changed = mcq({ components = { { name = "mcq", image = NEW, cmd = { "server" },
      routes = { { port = 8443 } } } } })
    local plan = planner.plan({ mcq = changed }, { ctr("mcq-mcq", "r12", IMG, "running") },
      { mcq = reg("deployed") })
    assert.are.same({ "outdated/changed -", "ok/ok mcq-mcq" }, brief(plan))
    assert.is_false(plan[1].auto)
    assert.are.equal(HASH, plan[1].deployed_hash)
    assert.are.equal(planner.spec_hash(changed), plan[1].spec_hash)
    assert.are.equal("the definition changed since revision r12 was deployed;"
      .. " `mcp deploy mcq` deploys it", plan[1].reason)

    local auto = mcq({ auto_deploy = true, components = { { name = "mcq", image = NEW,
      cmd = { "server" }, routes = { { port = 8443 } } } } })
    plan = planner.plan({ mcq = auto }, { ctr("mcq-mcq", "r12", IMG, "running") },
      { mcq = reg("deployed") })
    assert.is_true(plan[1].auto)
  end)

  it("retries a failed deploy only once the definition changed", function()
    local changed = mcq({ components = { { name = "mcq", image = IMG,
      cmd = { "server", "-v" } } } })
    assert.are.same({ "outdated/changed -" },
      brief(planner.plan({ mcq = changed }, {}, { mcq = reg("failed") })))
  end)

  it("does not call a stopped service outdated, since deploying would start it", function()
    local changed = mcq({ components = { { name = "mcq", image = IMG, cmd = { "other" } } } })
    assert.are.same({ "ok/stopped -" },
      brief(planner.plan({ mcq = changed }, {}, { mcq = reg("stopped") })))
  end)

  it("marks which actions the executor may take unasked", function()
    local function autos(d, r, c)
      local out = {}
      for _, a in ipairs(planner.plan(world(d, r, c))) do
        out[#out + 1] = a.op .. "=" .. tostring(a.auto)
      end
      return out
    end
    assert.are.same({ "recreate=true" }, autos("active", "deployed", "absent"))
    assert.are.same({ "start=true" }, autos("active", "deployed", "exited"))
    assert.are.same({ "remove=true", "ok=false" }, autos("active", "deployed", "duplicate"))
    assert.are.same({ "stop=true" }, autos("inactive", "deployed", "running"))
    assert.are.same({ "deploy=false", "orphan=false" }, autos("active", "absent", "running"))
    assert.are.same({ "undefined=false" }, autos("absent", "deployed", "running"))
    assert.are.same({ "failed=false" }, autos("active", "failed", "running"))
  end)

  local function one(state, fields)
    return brief(planner.plan({ mcq = ACTIVE }, { ctr("mcq-mcq", "r12", IMG, state, fields) },
      { mcq = reg("deployed") }))
  end

  it("unpauses a paused container and starts a created one", function()
    assert.are.same({ "unpause/paused mcq-mcq" }, one("paused"))
    assert.are.same({ "start/stopped mcq-mcq" }, one("created"))
    assert.are.same({ "start/stopped mcq-mcq" }, one("stopped"))
  end)

  it("waits for a container in passing, and recreates a dead one", function()
    assert.are.same({ "wait/transient mcq-mcq" }, one("stopping"))
    assert.are.same({ "wait/transient mcq-mcq" }, one("removing"))
    assert.are.same({ "recreate/dead mcq-mcq" }, one("dead"))
    assert.are.same({ "recreate/dead mcq-mcq" }, one("unknown"))
  end)

  it("recreates a container of another revision even with the same image", function()
    assert.are.same({ "recreate/drift-revision mcq-mcq" }, one("running", { revision = "r11" }))
  end)

  it("waits while a deploy is in flight", function()
    assert.are.same({ "wait/busy -" },
      brief(planner.plan({ mcq = ACTIVE }, {}, { mcq = reg("deploying") })))
  end)

  it("reports a container of a component the revision does not have", function()
    local plan = planner.plan({ mcq = ACTIVE }, { ctr("mcq-mcq", "r12", IMG, "running"),
      ctr("mcq-cron", "r12", IMG, "running", { component = "cron" }) }, { mcq = reg("deployed") })
    assert.are.same({ "ok/ok mcq-mcq", "orphan/unknown-component mcq-cron" }, brief(plan))
  end)

  it("ignores containers without the agent's labels", function()
    local plan = planner.plan({}, {
      { name = "postgres", id = "a", image = "postgres:16", state = "running", labels = {} },
      { name = "x", id = "b", image = "x:1", state = "running",
        labels = { ["mcp.managed"] = "false", ["mcp.service"] = "x" } },
    }, {})
    assert.are.same({}, plan)
  end)

  it("reads service, component and revision from the labels when not given", function()
    local c = ctr("mcq-mcq", "r12", IMG, "running")
    c.service, c.component, c.revision = nil, nil, nil
    assert.are.same({ "ok/ok mcq-mcq" },
      brief(planner.plan({ mcq = ACTIVE }, { c }, { mcq = reg("deployed") })))
  end)

  it("recreates a component from the registry's revision, carrying what it needs", function()
    local plan = planner.plan({ mcq = ACTIVE }, {}, { mcq = reg("deployed") })
    assert.are.same({ { op = "recreate", cause = "missing", service = "mcq", component = "mcq",
      container = "mcq-mcq", revision = "r12", image = IMG, auto = true,
      reason = "container mcq-mcq of revision r12 is gone" } }, plan)
  end)

  it("names the container and its id in every container action", function()
    local plan = planner.plan(world("active", "deployed", "duplicate"))
    assert.are.same({ "mcq-mcq-r11", "id-mcq-mcq-r11" }, { plan[1].container, plan[1].id })
    assert.are.same({ "mcq-mcq", "id-mcq-mcq" }, { plan[2].container, plan[2].id })
  end)

  it("repairs each component of a service on its own", function()
    local two = define({ name = "mcq", components = {
      { name = "api", image = IMG }, { name = "worker", image = IMG } } })
    local plan = planner.plan({ mcq = two }, {
      ctr("mcq-worker", "r1", IMG, "exited", { component = "worker" }) },
      { mcq = { revision = "r1", spec_hash = planner.spec_hash(two), status = "deployed",
        components = { api = { image = IMG }, worker = { image = IMG } } } })
    assert.are.same({ "recreate/missing mcq-api", "start/stopped mcq-worker" }, brief(plan))
  end)

  it("falls back to the definition's components for a registry without them", function()
    local r = reg("deployed")
    r.components = nil
    assert.are.same({ "ok/ok mcq-mcq" }, brief(planner.plan({ mcq = ACTIVE },
      { ctr("mcq-mcq", "r12", OLD, "running") }, { mcq = r })))
  end)

  it("keeps the container of the deployed revision among duplicates, whatever the names", function()
    local plan = planner.plan({ mcq = ACTIVE }, {
      ctr("mcq-mcq", "r11", OLD, "running"), ctr("mcq-mcq-r12", "r12", IMG, "running") },
      { mcq = reg("deployed") })
    assert.are.same({ "remove/duplicate mcq-mcq", "ok/ok mcq-mcq-r12" }, brief(plan))
  end)

  it("is deterministic: the same inputs give the same plan", function()
    local a = planner.plan(world("active", "absent", "duplicate"))
    for _ = 1, 5 do assert.are.same(a, planner.plan(world("active", "absent", "duplicate"))) end
  end)
end)

describe("planner.order", function()
  local function svc(name, deps)
    return define({ name = name, depends_on = deps,
      components = { { name = "main", image = "app:v1" } } })
  end
  local defs = { db = svc("db"), api = svc("api", { "db" }), web = svc("web", { "api" }) }
  local function a(op, service) return { op = op, service = service } end
  local function names(actions)
    local out = {}
    for i, x in ipairs(actions) do out[i] = x.op .. " " .. x.service end
    return out
  end

  it("brings dependencies up before the services that need them", function()
    assert.are.same({ "deploy db", "recreate api", "start web" }, names(planner.order(
      { a("start", "web"), a("recreate", "api"), a("deploy", "db") }, defs)))
  end)

  it("takes things down first, dependents before their dependencies", function()
    assert.are.same({ "stop web", "remove api", "stop db", "start db", "start web" },
      names(planner.order({ a("start", "web"), a("stop", "db"), a("start", "db"),
        a("stop", "web"), a("remove", "api") }, defs)))
  end)

  it("keeps a service's own actions in plan order and puts unknown services last", function()
    assert.are.same({ "outdated db", "ok db", "orphan aa2", "orphan zz" }, names(planner.order(
      { a("orphan", "zz"), a("outdated", "db"), a("ok", "db"), a("orphan", "aa2") }, defs)))
  end)
end)

describe("planner.spec_hash", function()
  it("is 8 hex digits, and the same for the same definition", function()
    assert.matches("^%x%x%x%x%x%x%x%x$", HASH)
    assert.are.equal(HASH, planner.spec_hash(mcq()))
  end)

  it("does not depend on the order in which tables were built", function()
    local a = { name = "x", components = { { env = { "A=1" }, image = "i:1", name = "c" } } }
    local b = { components = { { name = "c", image = "i:1", env = { "A=1" } } }, name = "x" }
    assert.are.equal(planner.spec_hash(a), planner.spec_hash(b))
  end)

  it("changes with anything that changes the containers", function()
    local function changed(c)
      local t = { name = "mcq", components = { { name = "mcq", image = IMG, cmd = { "server" },
        routes = { { port = 8443 } } } } }
      for k, v in pairs(c) do t.components[1][k] = v end
      return planner.spec_hash(define(t))
    end
    local seen = { [HASH] = "base" }
    for what, c in pairs({ image = { image = OLD }, env = { env = { "A=1" } },
      cmd = { cmd = { "server", "-v" } }, port = { routes = { { port = 8444 } } },
      health = { health = { kind = "http" } }, user = { user = "1000" },
      volume = { volumes = { "/srv/mcq:/srv/mcq:ro" } } }) do
      local h = changed(c)
      assert.is_nil(seen[h], what .. " collides with " .. tostring(seen[h]))
      seen[h] = what
    end
  end)

  it("ignores where the definition came from and when or how it is deployed", function()
    local t = { name = "mcq", components = { { name = "mcq", image = IMG, cmd = { "server" },
      routes = { { port = 8443 } } } } }
    local other = define(t, "elsewhere")
    other.active, other.auto_deploy, other.policy, other.node = false, true, "rolling", "x"
    other.depends_on = { "mcns" }
    assert.are.equal(HASH, planner.spec_hash(other))
  end)

  it("sees an edited lua health check", function()
    local function with(fn)
      return planner.spec_hash(mcq({ components = { { name = "mcq", image = IMG,
        health = { kind = "lua", fn = fn } } } }))
    end
    local f1 = function() return true end
    local f2 = function() return false end
    assert.are_not.equal(with(f1), with(f2))
    assert.are.equal(with(f1), with(f1))
  end)

  it("implements FNV-1a 32", function()
    assert.are.equal("811c9dc5", planner.fnv1a32(""))
    assert.are.equal("e40c292c", planner.fnv1a32("a"))
    assert.are.equal("bf9cf968", planner.fnv1a32("foobar"))
  end)
end)

describe("planner.same_image", function()
  it("takes Docker Hub short names as their fully qualified form", function()
    assert.is_true(planner.same_image("nginx:1.25", "docker.io/library/nginx:1.25"))
    assert.is_true(planner.same_image("team/app:v1", "docker.io/team/app:v1"))
    assert.is_false(planner.same_image(IMG, OLD))
    assert.is_false(planner.same_image("localhost/app:v1", "docker.io/library/app:v1"))
  end)
end)
