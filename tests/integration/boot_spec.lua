-- Recovery when the agent starts, against a real Podman: an operator
-- restarts the agent after containers went away (a reboot, `podman rm`),
-- and the agent brings them back by itself, in dependency order and in the
-- order of the [[boot.sequence]] stages of its config.
local podman_env = require("tests.env.podman_env")
local agent_env = require("tests.env.agent_env")

local IMAGE = podman_env.image1

-- Service names unique to this run: /srv/<service> is on the host, where
-- another run of the suite may be using the same names at the same time.
local function suffix()
  local f = assert(io.open("/dev/urandom", "rb"))
  local b = f:read(3)
  f:close()
  return (b:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end
local SFX = suffix()
local BDB, BAPI, BWEB = "bt-db-" .. SFX, "bt-api-" .. SFX, "bt-web-" .. SFX
local BINT = "bt-int-" .. SFX
local SAPP, SDB, SEXTRA = "st-app-" .. SFX, "st-db-" .. SFX, "st-extra-" .. SFX

local function web(name, opts)
  opts = opts or {}
  local deps = ""
  if opts.depends_on then
    deps = "depends_on = [" .. table.concat(opts.depends_on, ", "):gsub("([%w-]+)", '"%1"')
      .. "]"
  end
  return string.format([==[
name = %q
node = "test"
%s
[[components]]
name = "web"
image = %q
cmd = ["httpd", "-f", "-p", "8080", "-h", "/www"]
%s
[[components.routes]]
port = 8080
[components.health]
%s
]==], name, deps, IMAGE, opts.component or "", opts.health or [[
kind = "http"
interval = "0.5s"
timeout = "0.5s"]])
end

local function events_of(agent, name, kind)
  local status, body = agent:api("GET", "/v1/events?limit=1000"
    .. (name and ("&service=" .. name) or ""))
  assert.equal(200, status)
  local out = {}
  for _, e in ipairs(body.events) do
    if not kind or e.kind == kind then out[#out + 1] = e end
  end
  return out
end

local function last_id(agent)
  local evs = events_of(agent)
  return evs[#evs] and evs[#evs].id or 0
end

-- The first event of a kind for a service after event id `after`.
local function event_after(agent, name, kind, after)
  for _, e in ipairs(events_of(agent, name, kind)) do
    if e.id > after then return e end
  end
end

local function inspect(env, name)
  local out, code = env:podman({ "inspect", "--format",
    "{{.State.Status}}|{{.Id}}|{{.Created.UnixNano}}", name })
  if code ~= 0 then return nil end
  local st, id, created = out:match("^([^|]+)|([^|]+)|(%d+)")
  return { state = st, id = id, created = tonumber(created) }
end

local function ids(env, names)
  local out = {}
  for _, n in ipairs(names) do
    local c = inspect(env, n .. "-web")
    out[n] = c and c.id
  end
  return out
end

local function deploy(agent, name)
  local status, body = agent:api("POST", "/v1/services/" .. name .. "/deploy")
  assert.equal(200, status, name .. ": " .. tostring(body and body.error
    and body.error.message) .. "\n" .. agent:log_tail())
end

local function wait_running(env, names, timeout)
  for _, n in ipairs(names) do
    agent_env.wait_for(function()
      local c = inspect(env, n .. "-web")
      return c and c.state == "running"
    end, timeout or 60, n .. " to run")
  end
end

local function wait_boot_done(agent)
  return agent_env.wait_for(function()
    local status, body = agent:api("GET", "/v1/status", { timeout = 10 })
    return status == 200 and body.monitor.boot.state == "done" and body
  end, 120, "boot to finish")
end

describe("an agent restart", function()
  local env, agent
  local NAMES = { BDB, BAPI, BWEB }

  setup(function()
    env = podman_env.start()
    for _, n in ipairs({ BDB, BAPI, BWEB }) do os.execute("rm -rf /srv/" .. n) end
    agent = agent_env.start({ podman = env, config = '[monitor]\nrelist_interval = "2s"\n',
      services = {
        [BDB] = web(BDB),
        [BAPI] = web(BAPI, { depends_on = { BDB } }),
        [BWEB] = web(BWEB, { depends_on = { BAPI } }),
      } })
    for _, n in ipairs(NAMES) do deploy(agent, n) end
  end)

  teardown(function()
    if agent then agent:stop() end
    if env then env:stop() end
    for _, n in ipairs({ BDB, BAPI, BWEB }) do os.execute("rm -rf /srv/" .. n) end
  end)

  it("brings back the containers removed while it was down, dependencies first", function()
    local before = ids(env, NAMES)
    local mark = last_id(agent)
    agent:halt()
    for _, n in ipairs({ BWEB, BDB }) do
      local out, code = env:podman({ "rm", "-f", n .. "-web" })
      assert.equal(0, code, out)
    end
    agent:start()
    wait_running(env, NAMES)
    wait_boot_done(agent)
    local after = ids(env, NAMES)
    assert.equal(before[BAPI], after[BAPI])          -- left alone
    assert.are_not.equal(before[BDB], after[BDB])
    assert.are_not.equal(before[BWEB], after[BWEB])
    -- bt-db (what bt-api, and so bt-web, depend on) first.
    local db = event_after(agent, BDB, "recovered", mark)
    local w = event_after(agent, BWEB, "recovered", mark)
    assert.is_truthy(db)
    assert.is_truthy(w)
    assert.is_true(db.id < w.id)
    assert.is_nil(event_after(agent, BAPI, "recovered", mark))
    assert.is_true(inspect(env, (BDB .. "-web")).created < inspect(env, (BWEB .. "-web")).created)
    -- and the monitor checks them again
    agent_env.wait_for(function()
      local _, body = agent:api("GET", "/v1/ps")
      local n = 0
      for _, c in ipairs(body.containers) do
        if c.health == "healthy" then n = n + 1 end
      end
      return n == 3
    end, 30, "all three healthy")
  end)

  it("changes nothing when started again with everything running", function()
    wait_running(env, NAMES)
    local before = ids(env, NAMES)
    local mark = last_id(agent)
    agent:halt()
    agent:start()
    wait_boot_done(agent)
    -- Give the monitor a few re-lists (every 2 s) to do something, if it would.
    agent_env.sleep(5)
    assert.same(before, ids(env, NAMES))
    for _, kind in ipairs({ "boot", "recovered", "restart_scheduled", "restarted", "drift" }) do
      for _, n in ipairs(NAMES) do
        assert.is_nil(event_after(agent, n, kind, mark), n .. ": " .. kind)
      end
      if kind == "boot" then assert.is_nil(event_after(agent, nil, kind, mark)) end
    end
  end)
end)

describe("an agent killed in the middle of a deploy", function()
  local env, agent

  setup(function()
    env = podman_env.start()
    agent = agent_env.start({ podman = env, config = '[monitor]\nrelist_interval = "2s"\n',
      services = { [BINT] = web(BINT) } })
    deploy(agent, BINT)
  end)

  teardown(function()
    if agent then agent:stop() end
    if env then env:stop() end
    os.execute("rm -rf /srv/" .. BINT)
  end)

  it("finishes it at the next start: the revision failed, the last one back", function()
    local _, before = agent:api("GET", "/v1/services/" .. BINT)
    local r1 = before.revision.id
    local port = before.ports[1].port
    -- r2's check never passes, so its deploy waits (60 s) after the recreate
    -- policy has removed r1's container: the agent is killed meanwhile.
    local status = agent:api("PUT", "/v1/services/" .. BINT, { body = web(BINT, { health = [[
kind = "http"
path = "/never"
interval = "0.5s"
timeout = "0.5s"]] }), headers = { ["Content-Type"] = "application/toml" } })
    assert.equal(200, status)
    agent:api("POST", "/v1/services/" .. BINT .. "/deploy", { timeout = 3 })
    local _, during = agent:api("GET", "/v1/services/" .. BINT)
    assert.equal(r1, during.revision.id)
    agent:halt("KILL")
    local mark = 0                          -- every event of this agent's data
    agent:start()
    local body = wait_boot_done(agent)
    assert.is_nil(body.monitor.boot.failed_stage)
    wait_running(env, { BINT })
    local c = inspect(env, BINT .. "-web")
    local out = env:podman({ "inspect", "--format", "{{index .Config.Labels \"mcp.revision\"}}",
      BINT .. "-web" })
    assert.equal(r1, (out:gsub("%s+$", "")))
    assert.equal("running", c.state)
    local _, after = agent:api("GET", "/v1/services/" .. BINT)
    assert.equal(r1, after.revision.id)
    assert.same({ { component = "web", route = "default", port = port } }, after.ports)
    local ev = event_after(agent, BINT, "deploy_interrupted", mark)
    assert.is_truthy(ev)
    assert.equal("r2", ev.data.revision)
    local revs, code = agent:eval(string.format('local out = {} for _, r in ipairs('
      .. 'require("mcp.registry").revision_list(mcp.state.db, "%s")) do '
      .. 'out[#out + 1] = r.id .. "=" .. r.status end return table.concat(out, " ")', BINT))
    assert.equal(0, code, revs)
    assert.matches("r2=failed", revs)
    assert.matches(r1 .. "=deployed", revs)
    -- Only one container, under its own name.
    local list = env:podman({ "ps", "-a", "--format", "{{.Names}}", "--filter",
      "label=mcp.service=" .. BINT })
    assert.equal(BINT .. "-web", (list:gsub("%s+$", "")))
  end)
end)

describe("[[boot.sequence]] stages", function()
  local env, agent
  local NAMES = { SAPP, SDB, SEXTRA }
  local READY = ("/srv/" .. SDB .. "/ready")

  local function stages(blocking)
    return string.format([==[
[monitor]
relist_interval = "2s"

[[boot.sequence]]
name = "data"
services = ["%s"]
timeout = "6s"
blocking = %s

[[boot.sequence]]
name = "apps"
services = ["%s"]
timeout = "30s"
]==], SDB, tostring(blocking), SAPP)
  end

  local function set_blocking(blocking)
    local text = agent_env.read_file(agent.config_path)
    text = text:gsub("blocking = %a+", "blocking = " .. tostring(blocking))
    agent_env.write_file(agent.config_path, text)
  end

  local function remove_all()
    for _, n in ipairs(NAMES) do env:podman({ "rm", "-f", n .. "-web" }) end
  end

  setup(function()
    env = podman_env.start()
    os.execute(("rm -rf /srv/" .. SAPP .. " /srv/" .. SDB .. " /srv/" .. SEXTRA))
    os.execute(("mkdir -p /srv/" .. SDB .. " && touch ") .. READY)
    agent = agent_env.start({ podman = env, config = stages(true), services = {
      -- Alphabetically, and by depends_on (none), st-app would come first;
      -- the stages put st-db first.
      [SDB] = web(SDB, { component = 'on_unhealthy = "none"', health = string.format([[
kind = "exec"
command = ["sh", "-c", "test -f %s"]
interval = "0.5s"
timeout = "0.5s"]], READY) }),
      [SAPP] = web(SAPP),
      [SEXTRA] = web(SEXTRA),
    } })
    for _, n in ipairs(NAMES) do deploy(agent, n) end
  end)

  teardown(function()
    if agent then agent:stop() end
    if env then env:stop() end
    os.execute(("rm -rf /srv/" .. SAPP .. " /srv/" .. SDB .. " /srv/" .. SEXTRA))
  end)

  it("brings a stage's services back, healthy, before the next stage's", function()
    local mark = last_id(agent)
    agent:halt()
    remove_all()
    agent:start()
    wait_running(env, NAMES)
    local body = wait_boot_done(agent)
    assert.is_nil(body.monitor.boot.failed_stage)
    local db_up = event_after(agent, SDB, "healthy", mark)
    local app = event_after(agent, SAPP, "recovered", mark)
    local extra = event_after(agent, SEXTRA, "recovered", mark)
    assert.is_truthy(db_up and app and extra)
    assert.is_true(db_up.id < app.id, (SDB .. " healthy before " .. SAPP .. " is recovered"))
    local app_up = agent_env.wait_for(function()
      return event_after(agent, SAPP, "healthy", mark)
    end, 30, (SAPP .. " healthy"))
    -- What no stage names comes after the last stage.
    assert.is_true(app_up.id < extra.id, (SAPP .. " healthy before " .. SEXTRA .. " is recovered"))
    local stage_evs = events_of(agent, nil, "boot_stage")
    assert.equal("data", stage_evs[#stage_evs - 1].data.stage)
    assert.equal("apps", stage_evs[#stage_evs].data.stage)
  end)

  it("stops the later stages when a blocking stage fails", function()
    local mark = last_id(agent)
    agent:halt()
    remove_all()
    assert.is_true(os.remove(READY))        -- st-db will never be healthy
    agent:start()
    local body = wait_boot_done(agent)
    assert.equal("data", body.monitor.boot.failed_stage)
    local held = {}
    for _, h in ipairs(body.monitor.boot.held) do held[#held + 1] = h.service end
    assert.same({ SAPP, SEXTRA }, held)
    local failed = event_after(agent, nil, "boot_stage_failed", mark)
    assert.is_truthy(failed)
    assert.equal("data", failed.data.stage)
    assert.is_true(failed.data.blocking)
    -- st-db was brought back (and runs, unhealthy); the later ones stay
    -- down, also across several re-lists of the monitor.
    assert.equal("running", inspect(env, (SDB .. "-web")).state)
    agent_env.sleep(5)
    assert.is_nil(inspect(env, (SAPP .. "-web")))
    assert.is_nil(inspect(env, (SEXTRA .. "-web")))
    assert.is_nil(event_after(agent, SAPP, "recovered", mark))
    -- An operator's start brings a held service back.
    local out, code, err = agent:cli(("start " .. SAPP))
    assert.equal(0, code, out .. err)
    wait_running(env, { SAPP })
  end)

  it("goes on past a failing stage that is not blocking", function()
    local mark = last_id(agent)
    agent:halt()
    remove_all()
    set_blocking(false)
    agent:start()
    wait_running(env, NAMES)
    local body = wait_boot_done(agent)
    assert.is_nil(body.monitor.boot.failed_stage)
    assert.same({}, body.monitor.boot.held)
    local failed = event_after(agent, nil, "boot_stage_failed", mark)
    assert.is_truthy(failed)
    assert.is_false(failed.data.blocking)
    assert.is_true(failed.id < event_after(agent, SAPP, "recovered", mark).id)
  end)
end)
