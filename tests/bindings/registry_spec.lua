-- mcp.registry on a real SQLite file: migrations, services, revisions, ports,
-- events, health, tokens and meta.
local mcp = require("mcp.core")
local registry = require("mcp.registry")

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return (out:gsub("%s+$", ""))
end

local function always_free() return true end

local function def(name, extra)
  local d = { name = name, node = "rift", active = true, policy = "recreate",
    components = { { name = name, image = "r.example/" .. name .. ":v1",
      routes = { { name = "default", port = 8080 } } } } }
  for k, v in pairs(extra or {}) do d[k] = v end
  return d
end

describe("mcp.registry", function()
  local dir, path, db

  before_each(function()
    dir = sh("mktemp -d /tmp/mcp-registry.XXXXXX")
    path = dir .. "/mcp.db"
    db = assert(registry.open(path))
  end)

  after_each(function()
    db:close()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  describe("open and migrations", function()
    it("creates every table in an empty file and records the schema version", function()
      assert.equal(#registry.migrations, registry.schema_version(db))
      assert.equal(#registry.migrations, registry.meta_get(db, "schema_version"))
      local tables = {}
      for _, r in ipairs(db:query("SELECT name FROM sqlite_master WHERE type = 'table' "
          .. "AND name NOT LIKE 'sqlite_%' ORDER BY name")) do
        tables[#tables + 1] = r.name
      end
      assert.same({ "events", "health", "meta", "ports", "revision_counters", "revisions",
        "services", "tokens" }, tables)
      assert.is_true(registry.check(db))
    end)

    it("opens the same file again without migrating anything", function()
      registry.service_put(db, def("a"), "a.lua", "h1")
      db:close()
      db = assert(registry.open(path))
      assert.equal(#registry.migrations, registry.schema_version(db))
      assert.equal("h1", registry.service_get(db, "a").spec_hash)
    end)

    it("migrates a file of an older version to the current one, keeping its data", function()
      local old = assert(mcp.store.open(dir .. "/old.db"))
      assert.equal(1, registry.migrate(old, { registry.migrations[1] }))
      old:exec([[INSERT INTO services (name, definition, source, spec_hash, created, updated)
                 VALUES ('mcq', '{"name":"mcq"}', '/srv/mcp/services/mcq.toml', 'h', 1, 1)]])
      assert.is_nil(old:row("SELECT name FROM sqlite_master WHERE name = 'tokens'"))
      old:close()

      local d = assert(registry.open(dir .. "/old.db"))
      assert.equal(#registry.migrations, registry.schema_version(d))
      assert.same({ name = "mcq" }, registry.service_get(d, "mcq").definition)
      assert.truthy(registry.token_create(d, "ci"))
      assert.is_true(registry.check(d))
      d:close()
    end)

    it("applies each migration in a transaction of its own, with its version", function()
      local d = assert(mcp.store.open(dir .. "/m.db"))
      local list = {
        { "CREATE TABLE meta (key TEXT PRIMARY KEY, value)", "CREATE TABLE a (x)" },
        function(db2) db2:exec("CREATE TABLE b (x)"); db2:exec("INSERT INTO b VALUES (1)") end,
        function(db2) db2:exec("CREATE TABLE c (x)"); error("migration 3 is broken") end,
      }
      local v, err = registry.migrate(d, list)
      assert.is_nil(v)
      assert.matches("migration to version 3 failed: .*migration 3 is broken", err)
      assert.equal(2, registry.schema_version(d))
      assert.is_nil(d:row("SELECT name FROM sqlite_master WHERE name = 'c'"))
      list[3] = function(db2) db2:exec("CREATE TABLE c (x)") end
      assert.equal(3, registry.migrate(d, list))
      assert.equal(1, d:row("SELECT count(*) AS n FROM b").n)
      d:close()
    end)

    it("refuses a file from a newer agent", function()
      registry.meta_set(db, "schema_version", #registry.migrations + 1)
      db:close()
      local d, err = registry.open(path)
      assert.is_nil(d)
      assert.matches("schema version " .. (#registry.migrations + 1)
        .. " is newer than this agent knows", err, 1, true)
      db = assert(mcp.store.open(path))
    end)

    it("returns nil, err for a path it cannot open", function()
      local d, err = registry.open("/dev/null/mcp.db")
      assert.is_nil(d)
      assert.matches("/dev/null/mcp.db", err, 1, true)
    end)
  end)

  describe("services", function()
    it("records a definition as created, updated or unchanged", function()
      assert.equal("created", registry.service_put(db, def("mcq"), "/s/mcq.toml", "h1"))
      assert.equal("unchanged", registry.service_put(db, def("mcq"), "/s/mcq.toml", "h1"))
      assert.equal("updated", registry.service_put(db, def("mcq", { policy = "rolling" }),
        "/s/mcq.toml", "h2"))
      local s = registry.service_get(db, "mcq")
      assert.equal("mcq", s.name)
      assert.equal("rolling", s.definition.policy)
      assert.equal("r.example/mcq:v1", s.definition.components[1].image)
      assert.equal("/s/mcq.toml", s.source)
      assert.equal("h2", s.spec_hash)
      assert.is_true(s.active)
      assert.is_nil(s.current_revision)
      assert.is_true(s.updated >= s.created)
      assert.is_nil(registry.service_get(db, "nope"))
    end)

    it("does not store functions that a Lua definition carries", function()
      local d = def("fn")
      d.components[1].health = { kind = "lua", fn = function() return true end }
      registry.service_put(db, d, "api", "h")
      assert.same({ kind = "lua" }, registry.service_get(db, "fn").definition.components[1].health)
    end)

    it("lists services by name and switches them on and off", function()
      registry.service_put(db, def("b", { active = false }), "api", "h")
      registry.service_put(db, def("a"), "api", "h")
      local list = registry.service_list(db)
      assert.same({ "a", "b" }, { list[1].name, list[2].name })
      assert.is_false(list[2].active)
      assert.is_true(registry.service_set_active(db, "b", true))
      assert.is_true(registry.service_get(db, "b").active)
      local ok, err = registry.service_set_active(db, "zz", true)
      assert.is_nil(ok)
      assert.equal('service_set_active: no service "zz"', err)
    end)

    it("deletes a service with its revisions, ports and health, keeping its events", function()
      registry.service_put(db, def("a"), "api", "h")
      registry.service_put(db, def("b"), "api", "h")
      local r = registry.revision_new(db, "a", { x = 1 })
      registry.port_assign(db, "a", "a", "default", always_free)
      local pb = registry.port_assign(db, "b", "b", "default", always_free)
      registry.health_put(db, "a-a", { service = "a", component = "a", state = "healthy" })
      registry.event_add(db, { kind = "deployed", service = "a" })
      assert.is_true(registry.service_delete(db, "a"))
      assert.is_nil(registry.service_get(db, "a"))
      assert.is_nil(registry.revision_get(db, "a", r))
      assert.same({ pb }, { registry.port_list(db)[1].port })
      assert.equal(1, #registry.port_list(db))
      assert.is_nil(registry.health_get(db, "a-a"))
      assert.equal(1, #registry.events(db, { service = "a" }))
      local ok, err = registry.service_delete(db, "a")
      assert.is_nil(ok)
      assert.equal('service_delete: no service "a"', err)
      assert.is_true(registry.check(db))
    end)

    it("raises on arguments of the wrong type", function()
      assert.has_error(function() registry.service_put(db, def("a"), nil, "h") end,
        "registry.service_put: argument 3 (source): expected a string, got nil")
      assert.has_error(function() registry.service_get({}, "a") end,
        "registry.service_get: argument 1: expected a db from registry.open, got table")
    end)
  end)

  describe("revisions", function()
    before_each(function() registry.service_put(db, def("mcq"), "api", "h") end)

    it("numbers revisions r1, r2, ... per service, starting as deploying", function()
      assert.equal("r1", registry.revision_new(db, "mcq", { image = "v1" }))
      assert.equal("r2", registry.revision_new(db, "mcq", { image = "v2" }))
      registry.service_put(db, def("other"), "api", "h")
      assert.equal("r1", registry.revision_new(db, "other", {}))
      local r = registry.revision_get(db, "mcq", "r2")
      assert.equal("deploying", r.status)
      assert.same({ image = "v2" }, r.spec)
      assert.equal(2, r.seq)
      assert.is_nil(r.finished)
      assert.is_false(r.current)
    end)

    it("keeps the full spec: the definition, ports and images per component", function()
      local spec = { definition = def("mcq"), components = { mcq = { image =
        "r.example/mcq:v1@sha256:abcd", ports = { default = 10000 } } } }
      local id = registry.revision_new(db, "mcq", spec)
      assert.same(spec, registry.revision_get(db, "mcq", id).spec)
    end)

    it("completes the spec of a revision while it deploys, and only then", function()
      local id = registry.revision_new(db, "mcq", { definition = def("mcq") })
      assert.is_true(registry.revision_set_spec(db, "mcq", id,
        { definition = def("mcq"), ports = { mcq = { default = 10000 } } }))
      assert.same({ mcq = { default = 10000 } }, registry.revision_get(db, "mcq", id).spec.ports)
      registry.revision_set_status(db, "mcq", id, "deployed")
      local ok, err = registry.revision_set_spec(db, "mcq", id, {})
      assert.is_nil(ok)
      assert.equal('revision_set_spec: revision r1 of "mcq" is deployed: only a revision '
        .. "still deploying may change", err)
      ok, err = registry.revision_set_spec(db, "mcq", "r7", {})
      assert.is_nil(ok)
      assert.equal('revision_set_spec: service "mcq" has no revision "r7"', err)
    end)

    it("makes a deployed revision current and supersedes the one before", function()
      local r1 = registry.revision_new(db, "mcq", {})
      assert.is_true(registry.revision_set_status(db, "mcq", r1, "deployed"))
      local cur = registry.revision_current(db, "mcq")
      assert.equal("r1", cur.id)
      assert.is_true(cur.current)
      assert.is_number(cur.finished)
      assert.equal("r1", registry.service_get(db, "mcq").current_revision)
      local r2 = registry.revision_new(db, "mcq", {})
      registry.revision_set_status(db, "mcq", r2, "deployed")
      assert.equal("r2", registry.revision_current(db, "mcq").id)
      assert.equal("superseded", registry.revision_get(db, "mcq", "r1").status)
    end)

    it("keeps the current revision through a failed deploy of the next", function()
      registry.revision_set_status(db, "mcq", registry.revision_new(db, "mcq", {}), "deployed")
      local r2 = registry.revision_new(db, "mcq", {})
      registry.revision_set_status(db, "mcq", r2, "failed", "never became healthy")
      assert.equal("r1", registry.revision_current(db, "mcq").id)
      assert.equal("deployed", registry.revision_current(db, "mcq").status)
      local f = registry.revision_get(db, "mcq", r2)
      assert.same({ "failed", "never became healthy" }, { f.status, f.error })
    end)

    it("records a rollback: the abandoned revision stays rolled-back", function()
      registry.revision_set_status(db, "mcq", registry.revision_new(db, "mcq", { v = 1 }),
        "deployed")
      registry.revision_set_status(db, "mcq", registry.revision_new(db, "mcq", { v = 2 }),
        "deployed")
      db:tx(function()
        registry.revision_set_status(db, "mcq", "r2", "rolled-back", "operator rollback")
        local r3 = registry.revision_new(db, "mcq", registry.revision_get(db, "mcq", "r1").spec)
        registry.revision_set_status(db, "mcq", r3, "deployed")
      end)
      local list = registry.revision_list(db, "mcq")
      assert.same({ "r3", "r2", "r1" }, { list[1].id, list[2].id, list[3].id })
      assert.same({ "deployed", "rolled-back", "superseded" },
        { list[1].status, list[2].status, list[3].status })
      assert.same({ v = 1 }, list[1].spec)
      assert.equal(2, #registry.revision_list(db, "mcq", 2))
    end)

    it("never reuses a revision id, even after the service was deleted", function()
      registry.revision_new(db, "mcq", {})
      registry.revision_new(db, "mcq", {})
      registry.service_delete(db, "mcq")
      registry.service_put(db, def("mcq"), "api", "h")
      assert.equal("r3", registry.revision_new(db, "mcq", {}))
    end)

    it("keeps the newest revisions per service, and always the current one", function()
      local keep = registry.retention.revisions
      registry.retention.revisions = 3
      finally(function() registry.retention.revisions = keep end)
      registry.revision_set_status(db, "mcq", registry.revision_new(db, "mcq", {}), "deployed")
      for _ = 2, 6 do registry.revision_new(db, "mcq", {}) end
      local ids = {}
      for _, r in ipairs(registry.revision_list(db, "mcq")) do ids[#ids + 1] = r.id end
      assert.same({ "r6", "r5", "r4", "r1" }, ids)
    end)

    it("answers nil, err for an unknown service or revision", function()
      local id, err = registry.revision_new(db, "nope", {})
      assert.is_nil(id)
      assert.equal('revision_new: no service "nope"', err)
      local ok
      ok, err = registry.revision_set_status(db, "mcq", "r9", "deployed")
      assert.is_nil(ok)
      assert.equal('revision_set_status: service "mcq" has no revision "r9"', err)
      assert.is_nil(registry.revision_current(db, "mcq"))
      assert.is_nil(registry.revision_current(db, "nope"))
    end)

    it("raises on a status it does not know", function()
      local id = registry.revision_new(db, "mcq", {})
      assert.has_error(function() registry.revision_set_status(db, "mcq", id, "done") end,
        'registry.revision_set_status: status "done" is not one of: deploying, deployed, '
        .. "failed, stopped, superseded, rolled-back")
    end)

    it("records a revision and its ports in one transaction, or neither", function()
      local ok = pcall(db.tx, db, function()
        registry.port_assign(db, "mcq", "mcq", "default", always_free)
        registry.revision_new(db, "mcq", {})
        error("the deploy failed before anything started")
      end)
      assert.is_false(ok)
      assert.same({}, registry.port_list(db))
      assert.same({}, registry.revision_list(db, "mcq"))
      assert.equal("r1", registry.revision_new(db, "mcq", {}))
    end)
  end)

  describe("ports", function()
    before_each(function()
      registry.service_put(db, def("a"), "api", "h")
      registry.service_put(db, def("b"), "api", "h")
    end)

    it("assigns the lowest free port of 10000-60000 and records it", function()
      assert.equal(10000, registry.port_assign(db, "a", "a", "default", always_free))
      assert.equal(10001, registry.port_assign(db, "a", "a", "admin", always_free))
      local p = registry.port_list(db, "a")[2]
      assert.same({ 10001, "a", "a", "admin" }, { p.port, p.service, p.component, p.route })
    end)

    it("skips ports that is_free says are taken by other programs", function()
      local busy = { [10000] = true, [10001] = true }
      local asked = {}
      local port = registry.port_assign(db, "a", "a", "default", function(p)
        asked[#asked + 1] = p
        return not busy[p]
      end)
      assert.equal(10002, port)
      assert.same({ 10000, 10001, 10002 }, asked)
    end)

    it("keeps the same port for the same route across redeploys", function()
      local p = registry.port_assign(db, "a", "a", "default", always_free)
      registry.port_assign(db, "b", "b", "default", always_free)
      for _ = 1, 3 do
        assert.equal(p, registry.port_assign(db, "a", "a", "default", always_free))
      end
    end)

    it("gives a second port while the old one is in use, and alternates after", function()
      local a = registry.port_assign(db, "a", "a", "default", always_free)
      local in_use = { [a] = true }
      local b = registry.port_assign(db, "a", "a", "default", function(p) return not in_use[p] end)
      assert.not_equal(a, b)
      -- the old revision stopped; the new one holds b: the next deploy gets a back
      in_use = { [b] = true }
      assert.equal(a, registry.port_assign(db, "a", "a", "default",
        function(p) return not in_use[p] end))
      -- with both free, the port used last is kept
      assert.equal(a, registry.port_assign(db, "a", "a", "default", always_free))
      assert.equal(2, #registry.port_list(db, "a"))
    end)

    it("never assigns a port twice, even with many services", function()
      local seen, n = {}, 0
      for i = 1, 150 do
        local name = "svc" .. i
        registry.service_put(db, def(name), "api", "h")
        for _, route in ipairs({ "default", "admin" }) do
          local p = assert(registry.port_assign(db, name, name, route, always_free))
          assert.is_nil(seen[p])
          seen[p], n = true, n + 1
        end
      end
      -- redeploying everything while the old containers run needs new ports, all distinct
      for i = 1, 150 do
        local name = "svc" .. i
        local p = assert(registry.port_assign(db, name, name, "default",
          function(port) return not seen[port] end))
        assert.is_nil(seen[p])
        seen[p], n = true, n + 1
      end
      assert.equal(450, n)
      assert.equal(450, db:row("SELECT count(DISTINCT port) AS n FROM ports").n)
      assert.is_true(registry.check(db))
    end)

    it("answers nil, err when no port is free", function()
      local lo, hi = registry.PORT_MIN, registry.PORT_MAX
      registry.PORT_MIN, registry.PORT_MAX = 20000, 20002
      finally(function() registry.PORT_MIN, registry.PORT_MAX = lo, hi end)
      registry.port_assign(db, "a", "a", "default", always_free)
      local function taken_elsewhere(p) return p ~= 20001 end
      local port, err = registry.port_assign(db, "b", "b", "default", taken_elsewhere)
      assert.equal(20002, port)
      port, err = registry.port_assign(db, "b", "b", "admin", taken_elsewhere)
      assert.is_nil(port)
      assert.equal('port_assign: no free port for b/b route "admin" in 20000-20002 '
        .. "(2 recorded, 1 more in use by other programs)", err)
    end)

    it("answers nil, err for an unknown service", function()
      local port, err = registry.port_assign(db, "zz", "zz", "default", always_free)
      assert.is_nil(port)
      assert.equal('port_assign: no service "zz"', err)
    end)

    it("records nothing when is_free raises", function()
      assert.has_error(function()
        registry.port_assign(db, "a", "a", "default", function() error("bind: EPERM") end)
      end)
      assert.same({}, registry.port_list(db))
    end)

    it("releases a service's ports, except those it is told to keep", function()
      local p1 = registry.port_assign(db, "a", "a", "default", always_free)
      local p2 = registry.port_assign(db, "a", "a", "default", function(p) return p ~= p1 end)
      local p3 = registry.port_assign(db, "b", "b", "default", always_free)
      assert.equal(1, registry.port_release(db, "a", { p2 }))
      assert.same({ p2, p3 }, { registry.port_list(db)[1].port, registry.port_list(db)[2].port })
      assert.equal(1, registry.port_release(db, "a"))
      assert.equal(0, registry.port_release(db, "a"))
      assert.equal(1, #registry.port_list(db))
    end)
  end)

  describe("events", function()
    it("records events and lists them oldest first, with their data", function()
      local id1 = registry.event_add(db, { kind = "deploy", service = "a", component = "web",
        message = "deploying r1", data = { revision = "r1", ports = { 10000 } } })
      local id2 = registry.event_add(db, { kind = "health", service = "b", message = "ok" })
      assert.is_true(id2 > id1)
      local evs = registry.events(db)
      assert.equal(2, #evs)
      assert.same({ id1, "deploy", "a", "web", "deploying r1" },
        { evs[1].id, evs[1].kind, evs[1].service, evs[1].component, evs[1].message })
      assert.same({ revision = "r1", ports = { 10000 } }, evs[1].data)
      assert.is_number(evs[1].time)
      assert.is_nil(evs[2].data)
    end)

    it("filters by service and kind, and pages with since_id and limit", function()
      for i = 1, 10 do
        registry.event_add(db, { kind = i % 2 == 0 and "even" or "odd",
          service = i <= 5 and "a" or "b", message = tostring(i) })
      end
      local function messages(list)
        local out = {}
        for _, e in ipairs(list) do out[#out + 1] = e.message end
        return out
      end
      assert.same({ "1", "2", "3", "4", "5" }, messages(registry.events(db, { service = "a" })))
      assert.same({ "8", "9", "10" }, messages(registry.events(db, { limit = 3 })))
      assert.same({ "6", "8", "10" }, messages(registry.events(db,
        { service = "b", kind = "even" })))
      local first = registry.events(db, { limit = 1, since_id = 0 })
      assert.same({ "1" }, messages(first))
      assert.same({ "2", "3" }, messages(registry.events(db,
        { since_id = first[1].id, limit = 2 })))
      assert.same({}, registry.events(db, { since_id = 1e9 }))
    end)

    it("keeps only the newest events", function()
      local keep = registry.retention.events
      registry.retention.events = 5
      finally(function() registry.retention.events = keep end)
      for i = 1, 12 do registry.event_add(db, { kind = "tick", message = tostring(i) }) end
      local evs = registry.events(db, { limit = 100 })
      assert.equal(5, #evs)
      assert.equal("8", evs[1].message)
      assert.equal("12", evs[5].message)
      assert.equal(5, db:row("SELECT count(*) AS n FROM events").n)
    end)

    it("rejects events without a kind and unknown fields", function()
      assert.has_error(function() registry.event_add(db, { message = "x" }) end,
        "registry.event_add: argument 2 (event.kind): expected a string, got nil")
      assert.has_error(function() registry.event_add(db, { kind = "x", servce = "a" }) end)
      assert.has_error(function() registry.events(db, { servce = "a" }) end,
        'registry.events: unknown option "servce" (expected one of: kind, limit, service, '
        .. "since_id)")
    end)
  end)

  describe("health", function()
    local h = { service = "mcq", component = "mcq", state = "starting", result = "",
      failures = 0, successes = 0 }

    it("records the health of a container and when its state began", function()
      local r = registry.health_put(db, "mcq-mcq", h)
      assert.equal("starting", r.state)
      local since = r.since
      r = registry.health_put(db, "mcq-mcq", { service = "mcq", component = "mcq",
        state = "starting", result = "connection refused", failures = 1, successes = 0 })
      assert.equal(since, r.since)
      assert.same({ "connection refused", 1 }, { r.result, r.failures })
      r = registry.health_put(db, "mcq-mcq", { service = "mcq", component = "mcq",
        state = "healthy", result = "200 OK", failures = 0, successes = 1,
        checked = since + 100 })
      assert.equal("healthy", r.state)
      assert.is_true(r.since >= since)
      assert.equal(since + 100, r.checked)
      assert.same(r, registry.health_get(db, "mcq-mcq"))
    end)

    it("lists health by service and forgets a container", function()
      registry.health_put(db, "a-web", { service = "a", component = "web", state = "healthy" })
      registry.health_put(db, "a-db", { service = "a", component = "db", state = "unhealthy",
        failures = 3 })
      registry.health_put(db, "b-b", { service = "b", component = "b", state = "healthy" })
      local list = registry.health_list(db, "a")
      assert.same({ "a-db", "a-web" }, { list[1].container, list[2].container })
      assert.equal(3, #registry.health_list(db))
      assert.is_true(registry.health_delete(db, "a-db"))
      assert.is_false(registry.health_delete(db, "a-db"))
    end)

    it("rejects a state it does not know", function()
      assert.has_error(function()
        registry.health_put(db, "x", { service = "a", component = "b", state = "ok" })
      end, 'registry.health_put: state "ok" is not one of: starting, healthy, unhealthy')
    end)
  end)

  describe("tokens", function()
    it("creates a token that verifies to its name", function()
      local token = assert(registry.token_create(db, "ci"))
      assert.matches("^mcp_%x+$", token)
      assert.equal(68, #token)
      assert.equal("ci", registry.token_verify(db, token))
    end)

    it("stores only the token's SHA-256", function()
      local token = registry.token_create(db, "ci")
      local r = db:row("SELECT * FROM tokens")
      assert.equal(mcp.crypto.sha256(token), r.sha256)
      for _, v in pairs(r) do assert.not_equal(token, v) end
      db:exec("PRAGMA wal_checkpoint(TRUNCATE)")
      for _, file in ipairs({ path, path .. "-wal" }) do
        local f = io.open(file, "rb")
        if f then
          local bytes = f:read("*a")
          f:close()
          assert.is_nil(bytes:find(token:sub(5), 1, true))
        end
      end
    end)

    it("turns away wrong, truncated and revoked tokens", function()
      local token = registry.token_create(db, "ci")
      assert.is_nil(registry.token_verify(db, token:sub(1, -2)))
      assert.is_nil(registry.token_verify(db, token .. "0"))
      assert.is_nil(registry.token_verify(db, "mcp_" .. string.rep("0", 64)))
      assert.is_nil(registry.token_verify(db, ""))
      assert.is_nil(registry.token_verify(db, nil))
      assert.is_true(registry.token_revoke(db, "ci"))
      assert.is_nil(registry.token_verify(db, token))
      local ok, err = registry.token_revoke(db, "ci")
      assert.is_nil(ok)
      assert.equal('token_revoke: no token named "ci"', err)
    end)

    it("tells tokens apart, and records when each was last used", function()
      local t1 = registry.token_create(db, "alice")
      local t2 = registry.token_create(db, "bob")
      assert.equal("bob", registry.token_verify(db, t2))
      assert.equal("alice", registry.token_verify(db, t1))
      local list = registry.token_list(db)
      assert.same({ "alice", "bob" }, { list[1].name, list[2].name })
      assert.is_number(list[1].created)
      assert.is_number(list[1].last_used)
      assert.is_nil(list[1].sha256)
    end)

    it("refuses a name that is taken or not a name", function()
      registry.token_create(db, "ci")
      local t, err = registry.token_create(db, "ci")
      assert.is_nil(t)
      assert.equal('token_create: a token named "ci" exists (revoke it first)', err)
      t, err = registry.token_create(db, "has space")
      assert.is_nil(t)
      assert.matches('"has space" is not a token name', err, 1, true)
      assert.is_nil((registry.token_create(db, "")))
      assert.is_nil((registry.token_create(db, string.rep("x", 65))))
    end)
  end)

  describe("meta", function()
    it("keeps values by key and forgets them when set to nil", function()
      assert.is_nil(registry.meta_get(db, "uid"))
      assert.is_true(registry.meta_set(db, "uid", 850))
      assert.is_true(registry.meta_set(db, "graphroot", "/srv/mcp/.local/share/containers"))
      assert.equal(850, registry.meta_get(db, "uid"))
      assert.equal("/srv/mcp/.local/share/containers", registry.meta_get(db, "graphroot"))
      registry.meta_set(db, "uid", nil)
      assert.is_nil(registry.meta_get(db, "uid"))
    end)
  end)

  it("answers nil, err when another process holds the write lock too long", function()
    local impatient = assert(registry.open(path, { busy_timeout = 0.05 }))
    local results
    db:tx(function()
      results = {
        { registry.service_put(impatient, def("a"), "api", "h") },
        { registry.meta_set(impatient, "uid", 850) },
        { registry.token_create(impatient, "ci") },
      }
    end)
    for _, r in ipairs(results) do
      assert.is_nil(r[1])
      assert.matches("database is locked", r[2], 1, true)
    end
    -- reads go on beside a writer (WAL)
    db:tx(function() assert.same({}, registry.service_list(impatient)) end)
    assert.equal("created", registry.service_put(impatient, def("a"), "api", "h"))
    impatient:close()
  end)

  it("passes SQLite's integrity check after a day's worth of work", function()
    for i = 1, 30 do
      local name = "s" .. i
      registry.service_put(db, def(name), "api", "h" .. i)
      db:tx(function()
        local port = registry.port_assign(db, name, name, "default", always_free)
        local id = registry.revision_new(db, name, { ports = { default = port } })
        registry.revision_set_status(db, name, id, "deployed")
        registry.event_add(db, { kind = "deployed", service = name, data = { port = port } })
      end)
      registry.health_put(db, name .. "-" .. name, { service = name, component = name,
        state = "healthy" })
    end
    for i = 1, 10 do registry.service_delete(db, "s" .. i) end
    assert.is_true(registry.check(db))
    assert.same({ { integrity_check = "ok" } }, db:query("PRAGMA integrity_check"))
  end)
end)
