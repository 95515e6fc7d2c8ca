-- mcp.registry: the agent's record of truth, in SQLite (mcp.store, WAL).
--
-- What must survive a restart lives here: service definitions, revisions
-- (everything needed to recreate a revision's containers), assigned host
-- ports, events, health, API tokens (as hashes only) and a few facts about
-- the host (meta). Every function takes the db that registry.open returned;
-- the agent keeps it in mcp.state.db so that a reload of this library does
-- not reopen it.
--
-- Errors: a wrong argument raises. A condition the caller handles (no such
-- service, no free port, a token name taken) returns nil, err. A failure of
-- the database itself (disk full, lock held too long) returns nil, err from
-- the functions that write, as db:tx does; inside a caller's own db:tx it
-- raises and dooms that transaction instead (see docs/registry.md).
--
-- Functions that change several rows do it in one transaction; called inside
-- a caller's db:tx they become savepoints of it, so a caller can make, say,
-- port assignment and revision_new one atomic step.
local mcp = require("mcp.core")

local json, crypto = mcp.json, mcp.crypto

local registry = {}

-- The registry's file in the agent's data_dir.
registry.FILE = "mcp.db"

-- Host ports the agent assigns to routes.
registry.PORT_MIN, registry.PORT_MAX = 10000, 60000
-- How many unrecorded ports port_assign asks is_free about before giving up:
-- past that many taken by other programs, something else is wrong.
registry.PORT_TRIES = 1000

-- What is kept: the newest `events` events, and the newest `revisions`
-- revisions per service (never the current one). The agent may change these
-- from its config.
registry.retention = { events = 10000, revisions = 50 }

registry.STATUSES = { "deploying", "deployed", "failed", "stopped", "superseded",
  "rolled-back" }
registry.HEALTH_STATES = { "starting", "healthy", "unhealthy" }

-- last_used of a token is written at most this often (seconds): verifying a
-- token on every API request must not mean a write on every request.
registry.TOKEN_TOUCH_INTERVAL = 60

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end
local STATUS = set_of(registry.STATUSES)
local HEALTH_STATE = set_of(registry.HEALTH_STATES)

local function need(fn, i, what, v, kind)
  if type(v) ~= kind then
    error(string.format("registry.%s: argument %d (%s): expected a %s, got %s", fn, i, what,
      kind, type(v)), 3)
  end
end

local function need_db(fn, db)
  if type(db) ~= "userdata" or not tostring(db):find("^mcp%.store%.db") then
    error(string.format("registry.%s: argument 1: expected a db from registry.open, got %s",
      fn, type(db)), 3)
  end
end

local function check_opts(fn, opts, allowed)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(string.format("registry.%s: options: expected a table, got %s", fn, type(opts)), 3)
  end
  for k in pairs(opts) do
    if not allowed[k] then
      local names = {}
      for name in pairs(allowed) do names[#names + 1] = name end
      table.sort(names)
      error(string.format("registry.%s: unknown option %q (expected one of: %s)", fn,
        tostring(k), table.concat(names, ", ")), 3)
    end
  end
  return opts
end

local function encode(v)
  return json.encode(v, { sort = true })
end

local function decode(text)
  if text == nil then return nil end
  return assert(json.decode(text))
end

----------------------------------------------------------------------------
-- Schema and migrations
----------------------------------------------------------------------------

-- Each migration is a list of SQL statements or a function(db); migration N
-- brings the schema from version N-1 to N, in one transaction with the
-- version bump. Append only: a migration that has shipped never changes.
registry.migrations = {
  -- 1: what deploys need.
  {
    [[CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value)]],
    [[CREATE TABLE services (
        name             TEXT PRIMARY KEY,
        definition       TEXT NOT NULL,          -- JSON of the normalised definition
        source           TEXT NOT NULL,          -- file path, or "api"
        spec_hash        TEXT NOT NULL,
        active           INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
        current_revision TEXT,                   -- id of the revision last deployed
        created          REAL NOT NULL,
        updated          REAL NOT NULL)]],
    -- Outlives its service, so that a service deleted and defined again goes
    -- on from r8 rather than r1: a container left from before can never pass
    -- for the new revision.
    [[CREATE TABLE revision_counters (
        service TEXT PRIMARY KEY,
        last    INTEGER NOT NULL)]],
    [[CREATE TABLE revisions (
        service  TEXT NOT NULL REFERENCES services (name) ON DELETE CASCADE,
        id       TEXT NOT NULL,                  -- "r" .. seq
        seq      INTEGER NOT NULL,
        spec     TEXT NOT NULL,                  -- JSON: definition, ports, images
        status   TEXT NOT NULL CHECK (status IN ('deploying', 'deployed', 'failed',
                   'stopped', 'superseded', 'rolled-back')),
        error    TEXT,
        created  REAL NOT NULL,
        finished REAL,
        PRIMARY KEY (service, id),
        UNIQUE (service, seq))]],
    [[CREATE TABLE ports (
        port      INTEGER PRIMARY KEY CHECK (port BETWEEN 1 AND 65535),
        service   TEXT NOT NULL REFERENCES services (name) ON DELETE CASCADE,
        component TEXT NOT NULL,
        route     TEXT NOT NULL,
        assigned  REAL NOT NULL,
        used      REAL NOT NULL)]],
    [[CREATE INDEX ports_route ON ports (service, component, route)]],
  },
  -- 2: the operational record.
  {
    [[CREATE TABLE events (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        time      REAL NOT NULL,
        service   TEXT,
        component TEXT,
        kind      TEXT NOT NULL,
        message   TEXT,
        data      TEXT)]],                       -- JSON
    [[CREATE INDEX events_service ON events (service, id)]],
    [[CREATE TABLE health (
        container TEXT PRIMARY KEY,
        service   TEXT NOT NULL,
        component TEXT NOT NULL,
        state     TEXT NOT NULL CHECK (state IN ('starting', 'healthy', 'unhealthy')),
        since     REAL NOT NULL,
        checked   REAL,
        result    TEXT,
        failures  INTEGER NOT NULL DEFAULT 0,
        successes INTEGER NOT NULL DEFAULT 0)]],
    [[CREATE INDEX health_service ON health (service)]],
    [[CREATE TABLE tokens (
        name      TEXT PRIMARY KEY,
        sha256    TEXT NOT NULL UNIQUE,
        created   REAL NOT NULL,
        last_used REAL)]],
  },
}

-- registry.schema_version(db) -> the version the file is at (0: empty), or
-- nil, err.
function registry.schema_version(db)
  need_db("schema_version", db)
  local r, err = db:row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
  if err then return nil, err end
  if not r then return 0 end
  r, err = db:row("SELECT value FROM meta WHERE key = 'schema_version'")
  if err then return nil, err end
  return r and tonumber(r.value) or 0
end

-- registry.migrate(db [, migrations]) -> the version now, or nil, err.
-- Applies the migrations the file lacks, each in a transaction of its own;
-- on a failure the file stays at the last version that applied.
function registry.migrate(db, migrations)
  need_db("migrate", db)
  migrations = migrations or registry.migrations
  local have, err = registry.schema_version(db)
  if not have then return nil, err end
  local want = #migrations
  if have > want then
    return nil, string.format("registry %s: schema version %d is newer than this agent "
      .. "knows (%d): run a newer mcp-agent, or restore a backup", db:path(), have, want)
  end
  for v = have + 1, want do
    local m = migrations[v]
    local ok, res, err = pcall(db.tx, db, function()
      if type(m) == "function" then
        m(db)
      else
        for _, sql in ipairs(m) do db:exec(sql) end
      end
      db:exec([[INSERT INTO meta (key, value) VALUES ('schema_version', ?)
                ON CONFLICT (key) DO UPDATE SET value = excluded.value]], v)
    end)
    if not ok or not res then
      return nil, string.format("registry %s: migration to version %d failed: %s",
        db:path(), v, tostring(ok and err or res))
    end
  end
  return want
end

-- registry.open(path [, store_opts]) -> db, or nil, err: the file opened
-- (created 0600 if need be) and migrated to the current schema.
function registry.open(path, opts)
  need("open", 1, "path", path, "string")
  local db, err = mcp.store.open(path, opts)
  if not db then return nil, err end
  local ok
  ok, err = registry.migrate(db)
  if not ok then
    db:close()
    return nil, err
  end
  return db
end

-- registry.check(db) -> true, or nil, err: SQLite's integrity and foreign
-- key checks, for `mcp-agent doctor` and the tests.
function registry.check(db)
  need_db("check", db)
  local problems = {}
  local integrity, err = db:query("PRAGMA integrity_check")
  if not integrity then return nil, err end
  for _, r in ipairs(integrity) do
    if r.integrity_check ~= "ok" then problems[#problems + 1] = r.integrity_check end
  end
  local fks
  fks, err = db:query("PRAGMA foreign_key_check")
  if not fks then return nil, err end
  for _, r in ipairs(fks) do
    problems[#problems + 1] = string.format("%s row %s: no row in %s", r.table,
      tostring(r.rowid), r.parent)
  end
  if #problems > 0 then
    return nil, string.format("registry %s: %s", db:path(), table.concat(problems, "; "))
  end
  return true
end

----------------------------------------------------------------------------
-- Meta
----------------------------------------------------------------------------

-- registry.meta_get(db, key) -> the value, or nil.
function registry.meta_get(db, key)
  need_db("meta_get", db)
  need("meta_get", 2, "key", key, "string")
  local r, err = db:row("SELECT value FROM meta WHERE key = ?", key)
  if err then return nil, err end
  return r and r.value
end

-- registry.meta_set(db, key, value) -> true, or nil, err. A nil value
-- removes the key; strings, numbers and booleans (stored as 1/0) are kept.
function registry.meta_set(db, key, value)
  need_db("meta_set", db)
  need("meta_set", 2, "key", key, "string")
  local ok, err
  if value == nil then
    ok, err = db:exec("DELETE FROM meta WHERE key = ?", key)
  else
    ok, err = db:exec([[INSERT INTO meta (key, value) VALUES (?, ?)
                        ON CONFLICT (key) DO UPDATE SET value = excluded.value]], key, value)
  end
  if not ok then return nil, err end
  return true
end

----------------------------------------------------------------------------
-- Services
----------------------------------------------------------------------------

local function service_row(r)
  if not r then return nil end
  return {
    name = r.name,
    definition = decode(r.definition),
    source = r.source,
    spec_hash = r.spec_hash,
    active = r.active == 1,
    current_revision = r.current_revision,
    created = r.created,
    updated = r.updated,
  }
end

-- registry.service_put(db, def, source, spec_hash) -> "created", "updated"
-- or "unchanged"; or nil, err. def is the normalised definition (def.name is
-- the key; functions in it, such as a Lua health check, are not stored);
-- def.active sets the active flag.
function registry.service_put(db, def, source, spec_hash)
  need_db("service_put", db)
  need("service_put", 2, "def", def, "table")
  need("service_put", 2, "def.name", def.name, "string")
  need("service_put", 3, "source", source, "string")
  need("service_put", 4, "spec_hash", spec_hash, "string")
  local text, active = encode(def), def.active ~= false
  return db:tx(function()
    local old = db:row("SELECT definition, source, spec_hash, active FROM services "
      .. "WHERE name = ?", def.name)
    local now = mcp.now()
    if not old then
      db:exec([[INSERT INTO services (name, definition, source, spec_hash, active, created,
                updated) VALUES (?, ?, ?, ?, ?, ?, ?)]], def.name, text, source, spec_hash,
        active, now, now)
      return "created"
    end
    if old.definition == text and old.source == source and old.spec_hash == spec_hash
        and (old.active == 1) == active then
      return "unchanged"
    end
    db:exec([[UPDATE services SET definition = ?, source = ?, spec_hash = ?, active = ?,
              updated = ? WHERE name = ?]], text, source, spec_hash, active, now, def.name)
    return "updated"
  end)
end

-- registry.service_get(db, name) -> service, or nil:
-- { name, definition = table, source, spec_hash, active = bool,
--   current_revision = "r3" | nil, created, updated }.
function registry.service_get(db, name)
  need_db("service_get", db)
  need("service_get", 2, "name", name, "string")
  local r, err = db:row("SELECT * FROM services WHERE name = ?", name)
  if err then return nil, err end
  return service_row(r)
end

-- registry.service_list(db) -> { service, ... } by name.
function registry.service_list(db)
  need_db("service_list", db)
  local rows, err = db:query("SELECT * FROM services ORDER BY name")
  if not rows then return nil, err end
  for i, r in ipairs(rows) do rows[i] = service_row(r) end
  return rows
end

-- registry.service_set_active(db, name, active) -> true, or nil, err.
function registry.service_set_active(db, name, active)
  need_db("service_set_active", db)
  need("service_set_active", 2, "name", name, "string")
  need("service_set_active", 3, "active", active, "boolean")
  local n, err = db:exec("UPDATE services SET active = ?, updated = ? WHERE name = ?",
    active, mcp.now(), name)
  if not n then return nil, err end
  if n == 0 then return nil, string.format("service_set_active: no service %q", name) end
  return true
end

-- registry.service_delete(db, name) -> true, or nil, err. Removes the
-- service with its revisions, ports and health; its events stay, and so
-- does its revision counter.
function registry.service_delete(db, name)
  need_db("service_delete", db)
  need("service_delete", 2, "name", name, "string")
  return db:tx(function()
    db:exec("DELETE FROM health WHERE service = ?", name)
    local n = db:exec("DELETE FROM services WHERE name = ?", name)
    if n == 0 then return nil, string.format("service_delete: no service %q", name) end
    return true
  end)
end

----------------------------------------------------------------------------
-- Revisions
----------------------------------------------------------------------------

local function revision_row(r, current)
  if not r then return nil end
  return {
    id = r.id,
    seq = r.seq,
    service = r.service,
    spec = decode(r.spec),
    status = r.status,
    error = r.error,
    created = r.created,
    finished = r.finished,
    current = r.id == current,
  }
end

local function current_of(db, service)
  local r = db:row("SELECT current_revision FROM services WHERE name = ?", service)
  return r and r.current_revision
end

-- registry.revision_new(db, service, spec) -> id ("r1", "r2", ... per
-- service, never reused), or nil, err. spec is everything needed to
-- recreate the revision's containers (definition, ports, images); the new
-- revision is "deploying". Revisions past registry.retention.revisions go.
function registry.revision_new(db, service, spec)
  need_db("revision_new", db)
  need("revision_new", 2, "service", service, "string")
  need("revision_new", 3, "spec", spec, "table")
  local text = encode(spec)
  return db:tx(function()
    if not db:row("SELECT 1 FROM services WHERE name = ?", service) then
      return nil, string.format("revision_new: no service %q", service)
    end
    db:exec([[INSERT INTO revision_counters (service, last) VALUES (?, 1)
              ON CONFLICT (service) DO UPDATE SET last = last + 1]], service)
    local seq = db:row("SELECT last FROM revision_counters WHERE service = ?", service).last
    local id = "r" .. string.format("%d", seq)
    db:exec([[INSERT INTO revisions (service, id, seq, spec, status, created)
              VALUES (?, ?, ?, ?, 'deploying', ?)]], service, id, seq, text, mcp.now())
    db:exec([[DELETE FROM revisions WHERE service = ? AND seq <= ?
              AND id IS NOT (SELECT current_revision FROM services WHERE name = ?)]],
      service, seq - registry.retention.revisions, service)
    return id
  end)
end

-- registry.revision_set_status(db, service, id, status [, err]) -> true, or
-- nil, err. Every status but "deploying" sets `finished`. "deployed" makes
-- the revision the service's current one; the one it replaces, if it was
-- "deployed", becomes "superseded" (mark it "rolled-back" first to say why
-- it went). The current revision stays current through "stopped", "failed"
-- or "rolled-back": it is what a recovery recreates.
function registry.revision_set_status(db, service, id, status, err)
  need_db("revision_set_status", db)
  need("revision_set_status", 2, "service", service, "string")
  need("revision_set_status", 3, "id", id, "string")
  need("revision_set_status", 4, "status", status, "string")
  if not STATUS[status] then
    error(string.format("registry.revision_set_status: status %q is not one of: %s", status,
      table.concat(registry.STATUSES, ", ")), 2)
  end
  if err ~= nil then need("revision_set_status", 5, "err", err, "string") end
  return db:tx(function()
    local now = mcp.now()
    local finished = status ~= "deploying" and now or nil
    local n = db:exec("UPDATE revisions SET status = ?, error = ?, finished = ? "
      .. "WHERE service = ? AND id = ?", status, err, finished, service, id)
    if n == 0 then
      return nil, string.format("revision_set_status: service %q has no revision %q",
        service, id)
    end
    if status == "deployed" then
      local cur = current_of(db, service)
      if cur and cur ~= id then
        db:exec("UPDATE revisions SET status = 'superseded' WHERE service = ? AND id = ? "
          .. "AND status = 'deployed'", service, cur)
      end
      db:exec("UPDATE services SET current_revision = ?, updated = ? WHERE name = ?",
        id, now, service)
    end
    return true
  end)
end

-- registry.revision_set_spec(db, service, id, spec) -> true, or nil, err.
-- Completes the spec of a revision still "deploying": a deploy records its
-- definition first and the ports once they are assigned, before any
-- container starts, so a recovery always knows what was meant to run. A
-- finished revision's spec is history and stays as it was.
function registry.revision_set_spec(db, service, id, spec)
  need_db("revision_set_spec", db)
  need("revision_set_spec", 2, "service", service, "string")
  need("revision_set_spec", 3, "id", id, "string")
  need("revision_set_spec", 4, "spec", spec, "table")
  local text = encode(spec)
  return db:tx(function()
    local r = db:row("SELECT status FROM revisions WHERE service = ? AND id = ?", service, id)
    if not r then
      return nil, string.format("revision_set_spec: service %q has no revision %q",
        service, id)
    end
    if r.status ~= "deploying" then
      return nil, string.format("revision_set_spec: revision %s of %q is %s: only a "
        .. "revision still deploying may change", id, service, r.status)
    end
    db:exec("UPDATE revisions SET spec = ? WHERE service = ? AND id = ?", text, service, id)
    return true
  end)
end

-- registry.revision_get(db, service, id) -> revision, or nil:
-- { id, seq, service, spec = table, status, error, created, finished,
--   current = bool }.
function registry.revision_get(db, service, id)
  need_db("revision_get", db)
  need("revision_get", 2, "service", service, "string")
  need("revision_get", 3, "id", id, "string")
  local r, err = db:row("SELECT * FROM revisions WHERE service = ? AND id = ?", service, id)
  if err then return nil, err end
  return revision_row(r, r and current_of(db, service))
end

-- registry.revision_current(db, service) -> the revision last deployed, or nil.
function registry.revision_current(db, service)
  need_db("revision_current", db)
  need("revision_current", 2, "service", service, "string")
  local cur = current_of(db, service)
  if not cur then return nil end
  local r, err = db:row("SELECT * FROM revisions WHERE service = ? AND id = ?", service, cur)
  if err then return nil, err end
  return revision_row(r, cur)
end

-- registry.revision_list(db, service [, limit]) -> { revision, ... }, newest first.
function registry.revision_list(db, service, limit)
  need_db("revision_list", db)
  need("revision_list", 2, "service", service, "string")
  if limit ~= nil then need("revision_list", 3, "limit", limit, "number") end
  local cur = current_of(db, service)
  local rows, err = db:query("SELECT * FROM revisions WHERE service = ? ORDER BY seq DESC "
    .. "LIMIT ?", service, limit or -1)
  if not rows then return nil, err end
  for i, r in ipairs(rows) do rows[i] = revision_row(r, cur) end
  return rows
end

-- registry.revision_set_ports(db, service, id, ports) -> true, or nil, err.
-- Records that a revision's containers now run on other host ports (a port
-- was taken by another program while the agent restored a container): the
-- only part of a finished revision's spec that may change.
function registry.revision_set_ports(db, service, id, ports)
  need_db("revision_set_ports", db)
  need("revision_set_ports", 2, "service", service, "string")
  need("revision_set_ports", 3, "id", id, "string")
  need("revision_set_ports", 4, "ports", ports, "table")
  return db:tx(function()
    local r = db:row("SELECT spec FROM revisions WHERE service = ? AND id = ?", service, id)
    if not r then
      return nil, string.format("revision_set_ports: service %q has no revision %q",
        service, id)
    end
    local spec = decode(r.spec) or {}
    spec.ports = ports
    db:exec("UPDATE revisions SET spec = ? WHERE service = ? AND id = ?", encode(spec),
      service, id)
    return true
  end)
end

----------------------------------------------------------------------------
-- Ports
----------------------------------------------------------------------------

-- registry.port_assign(db, service, component, route, is_free) -> port, or
-- nil, err. The same route keeps its port across redeploys when is_free(port)
-- says it is free; while the old revision still holds it (a rolling deploy)
-- the route gets a second port, and later deploys alternate between the two.
-- Otherwise the lowest port in PORT_MIN..PORT_MAX that no route holds and
-- is_free accepts. is_free(port) -> boolean is the caller's check (it binds
-- the port); it must not wait, since it runs inside the transaction.
function registry.port_assign(db, service, component, route, is_free)
  need_db("port_assign", db)
  need("port_assign", 2, "service", service, "string")
  need("port_assign", 3, "component", component, "string")
  need("port_assign", 4, "route", route, "string")
  need("port_assign", 5, "is_free", is_free, "function")
  return db:tx(function()
    if not db:row("SELECT 1 FROM services WHERE name = ?", service) then
      return nil, string.format("port_assign: no service %q", service)
    end
    local now = mcp.now()
    for _, r in ipairs(db:query("SELECT port FROM ports WHERE service = ? AND component = ? "
        .. "AND route = ? ORDER BY used DESC, port", service, component, route)) do
      if is_free(r.port) then
        db:exec("UPDATE ports SET used = ? WHERE port = ?", now, r.port)
        return r.port
      end
    end
    local taken = {}
    for _, r in ipairs(db:query("SELECT port FROM ports")) do taken[r.port] = true end
    local tries = 0
    for port = registry.PORT_MIN, registry.PORT_MAX do
      if not taken[port] then
        if is_free(port) then
          db:exec([[INSERT INTO ports (port, service, component, route, assigned, used)
                    VALUES (?, ?, ?, ?, ?, ?)]], port, service, component, route, now, now)
          return port
        end
        tries = tries + 1
        if tries >= registry.PORT_TRIES then break end
      end
    end
    return nil, string.format("port_assign: no free port for %s/%s route %q in %d-%d "
      .. "(%d recorded, %d more in use by other programs)", service, component, route,
      registry.PORT_MIN, registry.PORT_MAX, #db:query("SELECT port FROM ports"), tries)
  end)
end

-- registry.port_release(db, service [, keep]) -> how many ports were
-- released, or nil, err. Releases every port of the service except those in
-- the list keep (the ports its current revision uses).
function registry.port_release(db, service, keep)
  need_db("port_release", db)
  need("port_release", 2, "service", service, "string")
  if keep ~= nil then need("port_release", 3, "keep", keep, "table") end
  local kept = set_of(keep or {})
  return db:tx(function()
    local n = 0
    for _, r in ipairs(db:query("SELECT port FROM ports WHERE service = ?", service)) do
      if not kept[r.port] then
        n = n + db:exec("DELETE FROM ports WHERE port = ?", r.port)
      end
    end
    return n
  end)
end

-- registry.port_list(db [, service]) -> { {port, service, component, route,
-- assigned, used}, ... } by port.
function registry.port_list(db, service)
  need_db("port_list", db)
  if service ~= nil then
    need("port_list", 2, "service", service, "string")
    return db:query("SELECT * FROM ports WHERE service = ? ORDER BY port", service)
  end
  return db:query("SELECT * FROM ports ORDER BY port")
end

----------------------------------------------------------------------------
-- Events
----------------------------------------------------------------------------

local EVENT_FIELDS = set_of({ "kind", "service", "component", "message", "data", "time" })

-- registry.event_add(db, {kind =, service =, component =, message =, data =,
-- time =}) -> id, or nil, err. kind is required; data is any JSON value;
-- time defaults to now. The oldest events past registry.retention.events go.
function registry.event_add(db, ev)
  need_db("event_add", db)
  check_opts("event_add", ev, EVENT_FIELDS)
  need("event_add", 2, "event.kind", ev.kind, "string")
  for _, k in ipairs({ "service", "component", "message" }) do
    if ev[k] ~= nil then need("event_add", 2, "event." .. k, ev[k], "string") end
  end
  if ev.time ~= nil then need("event_add", 2, "event.time", ev.time, "number") end
  local data = ev.data ~= nil and encode(ev.data) or nil
  return db:tx(function()
    local _, id = db:exec([[INSERT INTO events (time, service, component, kind, message, data)
                            VALUES (?, ?, ?, ?, ?, ?)]], ev.time or mcp.now(), ev.service,
      ev.component, ev.kind, ev.message, data)
    db:exec("DELETE FROM events WHERE id <= ?", id - registry.retention.events)
    return id
  end)
end

local EVENTS_OPTS = set_of({ "service", "since_id", "limit", "kind" })

-- registry.events(db [, {service =, kind =, since_id =, limit = 100}]) ->
-- { {id, time, service, component, kind, message, data}, ... }, oldest
-- first: those after since_id, or else the newest `limit`.
function registry.events(db, opts)
  need_db("events", db)
  opts = check_opts("events", opts, EVENTS_OPTS)
  local limit = opts.limit or 100
  local where, args = {}, {}
  if opts.service ~= nil then
    need("events", 2, "service", opts.service, "string")
    where[#where + 1], args[#args + 1] = "service = ?", opts.service
  end
  if opts.kind ~= nil then
    need("events", 2, "kind", opts.kind, "string")
    where[#where + 1], args[#args + 1] = "kind = ?", opts.kind
  end
  if opts.since_id ~= nil then
    need("events", 2, "since_id", opts.since_id, "number")
    where[#where + 1], args[#args + 1] = "id > ?", opts.since_id
  end
  need("events", 2, "limit", limit, "number")
  local cond = #where > 0 and (" WHERE " .. table.concat(where, " AND ")) or ""
  args[#args + 1] = limit
  local sql
  if opts.since_id ~= nil then
    sql = "SELECT * FROM events" .. cond .. " ORDER BY id LIMIT ?"
  else
    sql = "SELECT * FROM (SELECT * FROM events" .. cond .. " ORDER BY id DESC LIMIT ?) "
      .. "ORDER BY id"
  end
  local rows, err = db:query(sql, unpack(args))
  if not rows then return nil, err end
  for _, r in ipairs(rows) do r.data = decode(r.data) end
  return rows
end

----------------------------------------------------------------------------
-- Health
----------------------------------------------------------------------------

local HEALTH_FIELDS = set_of({ "service", "component", "state", "result", "failures",
  "successes", "checked" })

-- registry.health_put(db, container, {service, component, state, result,
-- failures, successes, checked}) -> the record, or nil, err. state is
-- "starting", "healthy" or "unhealthy"; `since` is kept while the state
-- stays the same and set to now when it changes.
function registry.health_put(db, container, h)
  need_db("health_put", db)
  need("health_put", 2, "container", container, "string")
  check_opts("health_put", h, HEALTH_FIELDS)
  need("health_put", 3, "health.service", h.service, "string")
  need("health_put", 3, "health.component", h.component, "string")
  need("health_put", 3, "health.state", h.state, "string")
  if not HEALTH_STATE[h.state] then
    error(string.format("registry.health_put: state %q is not one of: %s", h.state,
      table.concat(registry.HEALTH_STATES, ", ")), 2)
  end
  return db:tx(function()
    local now = mcp.now()
    local old = db:row("SELECT state, since FROM health WHERE container = ?", container)
    local since = (old and old.state == h.state) and old.since or now
    db:exec([[INSERT INTO health (container, service, component, state, since, checked,
              result, failures, successes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
              ON CONFLICT (container) DO UPDATE SET service = excluded.service,
              component = excluded.component, state = excluded.state,
              since = excluded.since, checked = excluded.checked, result = excluded.result,
              failures = excluded.failures, successes = excluded.successes]],
      container, h.service, h.component, h.state, since, h.checked or now, h.result,
      h.failures or 0, h.successes or 0)
    return db:row("SELECT * FROM health WHERE container = ?", container)
  end)
end

-- registry.health_get(db, container) -> {container, service, component,
-- state, since, checked, result, failures, successes}, or nil.
function registry.health_get(db, container)
  need_db("health_get", db)
  need("health_get", 2, "container", container, "string")
  return db:row("SELECT * FROM health WHERE container = ?", container)
end

-- registry.health_list(db [, service]) -> { record, ... } by container.
function registry.health_list(db, service)
  need_db("health_list", db)
  if service ~= nil then
    need("health_list", 2, "service", service, "string")
    return db:query("SELECT * FROM health WHERE service = ? ORDER BY container", service)
  end
  return db:query("SELECT * FROM health ORDER BY container")
end

-- registry.health_delete(db, container) -> true when there was a record.
function registry.health_delete(db, container)
  need_db("health_delete", db)
  need("health_delete", 2, "container", container, "string")
  local n, err = db:exec("DELETE FROM health WHERE container = ?", container)
  if not n then return nil, err end
  return n > 0
end

----------------------------------------------------------------------------
-- Tokens
----------------------------------------------------------------------------

registry.TOKEN_PREFIX = "mcp_"

local function valid_token_name(name)
  return #name <= 64 and name:match("^[%w][%w._@-]*$") ~= nil
end

-- registry.token_create(db, name) -> the token ("mcp_" and 64 hex digits),
-- or nil, err. The token is returned once: only its SHA-256 is stored.
function registry.token_create(db, name)
  need_db("token_create", db)
  need("token_create", 2, "name", name, "string")
  if not valid_token_name(name) then
    return nil, string.format("token_create: %q is not a token name (expected 1 to 64 "
      .. "letters, digits and . _ @ -, starting with a letter or digit)", name)
  end
  local token = assert(crypto.random_hex(32))
  token = registry.TOKEN_PREFIX .. token
  return db:tx(function()
    if db:row("SELECT 1 FROM tokens WHERE name = ?", name) then
      return nil, string.format("token_create: a token named %q exists (revoke it first)",
        name)
    end
    db:exec("INSERT INTO tokens (name, sha256, created) VALUES (?, ?, ?)", name,
      crypto.sha256(token), mcp.now())
    return token
  end)
end

-- registry.token_verify(db, token) -> the token's name, or nil; nil, err
-- when the database failed. Every stored hash is compared in constant time,
-- whatever matches.
function registry.token_verify(db, token)
  need_db("token_verify", db)
  if type(token) ~= "string" then return nil end
  local hash = crypto.sha256(token)
  local rows, err = db:query("SELECT name, sha256, last_used FROM tokens")
  if not rows then return nil, err end
  local match
  for _, r in ipairs(rows) do
    if crypto.equal(r.sha256, hash) then match = r end
  end
  if not match then return nil end
  local now = mcp.now()
  if not match.last_used or now - match.last_used >= registry.TOKEN_TOUCH_INTERVAL then
    -- Best effort: a busy database must not turn a valid token away.
    db:exec("UPDATE tokens SET last_used = ? WHERE name = ?", now, match.name)
  end
  return match.name
end

-- registry.token_list(db) -> { {name, created, last_used}, ... } by name.
function registry.token_list(db)
  need_db("token_list", db)
  return db:query("SELECT name, created, last_used FROM tokens ORDER BY name")
end

-- registry.token_revoke(db, name) -> true, or nil, err.
function registry.token_revoke(db, name)
  need_db("token_revoke", db)
  need("token_revoke", 2, "name", name, "string")
  local n, err = db:exec("DELETE FROM tokens WHERE name = ?", name)
  if not n then return nil, err end
  if n == 0 then return nil, string.format("token_revoke: no token named %q", name) end
  return true
end

return registry
