-- tests/integration/crash_spec.lua: the agent killed with SIGKILL at random
-- moments while it deploys, redeploys, stops, starts and undeploys, then
-- started again on the same data.
--
-- Each trial draws from its own seed (printed) a short stream of operations
-- on three services (recreate, rolling, and two components), sends them in
-- the background, kills the agent after a random delay, and starts it again.
-- The registry as the kill left it must pass PRAGMA integrity_check and the
-- foreign key check (on a copy, before the agent opens it again). Once the
-- agent has settled, what tests/lib/convergence.lua checks must hold (every
-- active service has exactly its containers, none twice, none left over, no
-- port recorded or published twice, no revision left "deploying"), and
-- every operation that answered success is reflected: the one in flight
-- when the agent died may have happened or not; nothing else may.
-- To replay: MCP_CRASH_SEED=<seed printed> MCP_CRASH_TRIALS=1.
local mcp = require("mcp.core")
local podman_env = require("tests.env.podman_env")
local agent_env = require("tests.env.agent_env")
local conv = require("tests.lib.convergence")
local json = mcp.json
local run, q = agent_env.run, agent_env.quote

local TRIALS = tonumber(os.getenv("MCP_CRASH_TRIALS") or "") or 30
local SEED = tonumber(os.getenv("MCP_CRASH_SEED") or "") or (os.time() % 100000) * 100
local SETTLE = 25          -- seconds a restarted agent gets to converge

local SERVICES = {
  { name = "crash-a", policy = "recreate", comps = { "web" } },
  { name = "crash-b", policy = "rolling", comps = { "web" } },
  { name = "crash-c", policy = "recreate", comps = { "web", "api" } },
}
local BY_NAME = {}
for _, s in ipairs(SERVICES) do BY_NAME[s.name] = s end

local function definition(svc, image)
  local out = { ('name = "%s"\nnode = "test"\npolicy = "%s"\n'):format(svc.name, svc.policy) }
  for _, comp in ipairs(svc.comps) do
    out[#out + 1] = ([==[
[[components]]
name = "%s"
image = "%s"
cmd = ["httpd", "-f", "-p", "8080", "-h", "/www"]
stop_timeout = "1s"
[[components.routes]]
port = 8080
[components.health]
kind = "http"
interval = "1s"
timeout = "0.5s"
]==]):format(comp, image)
  end
  return table.concat(out)
end

----------------------------------------------------------------------------
-- Operations, sent by a background shell script so that the agent can be
-- killed in the middle of one.

-- Half the operations deploy; stop, start and undeploy go to a service the
-- model says is deployed (a deploy when none is), so that most of them do
-- something.
local function random_ops(rand, model)
  local ops = {}
  for _ = 1, rand(1, 3) do
    local r = rand(1, 10)
    local kind = r <= 5 and "deploy" or r <= 7 and "stop" or r <= 8 and "start" or "undeploy"
    local svc = SERVICES[rand(1, #SERVICES)].name
    if kind ~= "deploy" then
      local deployed = {}
      for _, s in ipairs(SERVICES) do
        if model[s.name] and model[s.name].status ~= "absent" then
          deployed[#deployed + 1] = s.name
        end
      end
      if #deployed == 0 then kind = "deploy" else svc = deployed[rand(1, #deployed)] end
    end
    ops[#ops + 1] = { kind = kind, svc = svc,
      image = rand(1, 2) == 1 and podman_env.image1 or podman_env.image2 }
  end
  return ops
end

-- The requests of an operation: method, path, body file, content type.
local function requests(agent, op, dir, i)
  local path = "/v1/services/" .. op.svc
  if op.kind == "deploy" then
    local f = ("%s/def%d.toml"):format(dir, i)
    agent_env.write_file(f, definition(BY_NAME[op.svc], op.image))
    return { { "PUT", path, f, "application/toml" }, { "POST", path .. "/deploy" } }
  elseif op.kind == "undeploy" then
    return { { "DELETE", path } }
  end
  return { { "POST", path .. "/" .. op.kind } }
end

-- Writes and starts the script; returns the directory where each request
-- leaves its body (N.out), HTTP status (N.code) and curl's exit (N.rc).
local function send(agent, ops)
  local dir = run("mktemp -d /tmp/mcp-crash-ops.XXXXXX")
  local lines = { "#!/bin/sh" }
  local n = 0
  for i, op in ipairs(ops) do
    op.reqs = {}
    for _, r in ipairs(requests(agent, op, dir, i)) do
      n = n + 1
      op.reqs[#op.reqs + 1] = n
      local args = { "curl -s -o " .. q(dir .. "/" .. n .. ".out"), "-w '%{http_code}'",
        "--max-time 60", "-X", r[1], "-H", q("Authorization: Bearer " .. agent.token) }
      if r[3] then
        args[#args + 1] = "-H " .. q("Content-Type: " .. r[4])
        args[#args + 1] = "--data-binary @" .. q(r[3])
      end
      args[#args + 1] = q(agent.url .. r[2])
      lines[#lines + 1] = table.concat(args, " ") .. " >" .. q(dir .. "/" .. n .. ".code")
        .. "; echo $? >" .. q(dir .. "/" .. n .. ".rc")
    end
  end
  lines[#lines + 1] = "touch " .. q(dir .. "/done")
  agent_env.write_file(dir .. "/ops.sh", table.concat(lines, "\n") .. "\n")
  run("sh " .. q(dir .. "/ops.sh") .. " >/dev/null 2>&1 &")
  return dir
end

-- What each request got: "ok" (2xx), "refused" (never reached the agent),
-- "failed" (an answer that is not 2xx) or "lost" (sent, no answer: in flight
-- when the agent died).
local function outcome(dir, n)
  local rc = tonumber(agent_env.read_file(dir .. "/" .. n .. ".rc") or "")
  local code = tonumber(agent_env.read_file(dir .. "/" .. n .. ".code") or "") or 0
  if rc == 7 then return "refused" end
  if rc == 0 and code >= 200 and code < 300 then
    return "ok", json.decode(agent_env.read_file(dir .. "/" .. n .. ".out") or "")
  end
  if rc == 0 and code > 0 then return "failed" end
  return "lost"
end

-- The model: a service's state after an operation.
local function after(op, st, body)
  if op.kind == "deploy" then
    return { status = "running", image = op.image,
      revision = body and body.revision or nil, newer_than = not body and st.revision or nil }
  elseif op.kind == "stop" then
    if st.status == "absent" then return st end
    return { status = "stopped", image = st.image, revision = st.revision }
  elseif op.kind == "start" then
    if st.status == "absent" then return st end
    return { status = "running", image = st.image, revision = st.revision }
  end
  return { status = "absent" }
end

-- Folds the outcomes into the model; returns, per service, the states it
-- may be in now.
local function account(model, ops, dir)
  local allowed = {}
  for name, st in pairs(model) do allowed[name] = { st } end
  local log = {}
  for _, op in ipairs(ops) do
    local results, body = {}, nil
    for _, n in ipairs(op.reqs) do
      local o, b = outcome(dir, n)
      results[#results + 1] = o
      body = b
    end
    local last = results[#results]
    log[#log + 1] = op.kind .. " " .. op.svc .. (op.kind == "deploy" and (" " .. op.image) or "")
      .. ": " .. table.concat(results, "+")
    local st = model[op.svc]
    if last == "ok" then
      model[op.svc] = after(op, st, body)
      allowed[op.svc] = { model[op.svc] }
    elseif last == "lost" then
      -- In flight when the agent died: it happened, or it did not. (Every
      -- request after it was refused.)
      allowed[op.svc] = { st, after(op, st, nil) }
    end
    -- "refused" and "failed" changed nothing (a deploy whose PUT was lost
    -- never sent its POST).
  end
  return allowed, log
end

----------------------------------------------------------------------------

local function sleep(s) os.execute(("sleep %.3f"):format(s)) end

-- How long the operations may take, to draw the moment of the kill from.
local function duration_of(ops)
  local t = 0.1
  for _, op in ipairs(ops) do
    if op.kind == "deploy" then
      t = t + (BY_NAME[op.svc].policy == "rolling" and 2.6 or 0.5)
    else
      t = t + 0.25
    end
  end
  return t
end

-- The monitor re-lists every second and restarts without delay: a test of
-- convergence, not of backoff.
local function start_agent(env)
  return agent_env.start({ podman = env, log_level = "info",
    agent_config = 'stop_timeout = "3s"',
    config = '[monitor]\nrelist_interval = "1s"\nrestart_first = "0.2s"\n'
      .. 'restart_cap = "1s"\nflap_max = 1000\n' })
end

describe("an agent killed with SIGKILL", function()
  local env, agent
  local model = {}

  setup(function()
    env = podman_env.start()
    agent = start_agent(env)
    for _, s in ipairs(SERVICES) do model[s.name] = { status = "absent" } end
    print(("crash: %d trials, seeds %d..%d (MCP_CRASH_SEED=S MCP_CRASH_TRIALS=1 replays one)")
      :format(TRIALS, SEED, SEED + TRIALS - 1))
  end)

  teardown(function()
    if agent then agent:stop() end
    if env then env:stop() end
  end)

  for trial = 1, TRIALS do
    local seed = SEED + trial - 1
    it(("converges after a kill in the middle of operations (trial %d, seed %d)"):format(
        trial, seed), function()
      math.randomseed(seed)
      local rand = math.random
      local ops = random_ops(rand, model)
      -- The moment of the kill: at random within the whole stream, or (more
      -- often, where it matters most) at random within one of its deploys,
      -- timed from the agent's log line that the deploy began.
      local target
      for _, op in ipairs(ops) do
        if op.kind == "deploy" and (not target or rand() < 0.5) then target = op end
      end
      local mode = target and rand() < 0.7 and "in a deploy of " .. target.svc or "in the stream"
      local delay = rand() * (target and mode ~= "in the stream"
        and (BY_NAME[target.svc].policy == "rolling" and 2.6 or 0.5) or duration_of(ops))
      local log_before = #agent:log_text()
      local dir = send(agent, ops)
      if mode ~= "in the stream" then
        pcall(agent_env.wait_for, function()
          return agent:log_text():find(target.svc .. ": deploying: revision", log_before + 1,
            true)
        end, 10)
      end
      sleep(delay)
      conv.kill9(agent.pid)
      agent_env.wait_for(function()
        return agent_env.read_file(dir .. "/done") ~= nil
      end, 70, "the operations to end")
      local allowed, log = account(model, ops, dir)
      run("rm -rf " .. q(dir))
      print(("crash trial %d seed %d: killed %s after %.2fs: %s"):format(trial, seed, mode,
        delay, table.concat(log, "; ")))

      local ok, ierr = conv.integrity(agent.data_dir)
      assert(ok, ierr)
      agent:start()
      local w, problems = conv.settle(agent, env, allowed, SETTLE)
      if #problems > 0 then
        local text = ("seed %d: not settled after %ds:\n  %s\n-- agent log:\n%s"):format(seed,
          SETTLE, table.concat(problems, "\n  "), (run("tail -n 30 " .. q(agent.log))))
        -- Start the next trial from a clean agent rather than from this mess.
        agent:stop()
        env:podman("rm -af -t 0")
        agent = start_agent(env)
        for _, s in ipairs(SERVICES) do model[s.name] = { status = "absent" } end
        error(text, 0)
      end
      -- What is seen becomes the model for the next trial.
      for _, s in ipairs(SERVICES) do model[s.name] = conv.state(w, s.name) end
    end)
  end
end)
