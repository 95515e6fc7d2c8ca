-- mcp.health: probing a container, and the state machine of its health.
--
-- A probe is one check, by the kind the definition names: http and tcp go
-- through the loop (mcp.http, mcp.net), exec runs inside the container
-- through Podman, lua calls a function of the definition or of the service's
-- policy, running asks Podman whether the container runs. None blocks the
-- loop; each has its timeout.
--
-- A probe answers true (passed), false (failed) or nil (could not tell:
-- Podman, which runs exec checks, did not answer). An inconclusive probe
-- counts neither way, so losing Podman for a while does not make healthy
-- containers unhealthy.
--
-- The state machine is pure: starting -> healthy after `successes` passes
-- in a row; healthy or starting -> unhealthy after `failures` misses in a
-- row (misses inside start_period do not count while the container has not
-- yet been healthy); unhealthy -> healthy again after `successes` passes.
local mcp = require("mcp.core")
local definition = require("mcp.definition")

local health = {}

-- The host port a check goes to: the route it names (by route name or by
-- container port), else the component's only route, else the number itself.
function health.host_port(comp, hc, ports)
  ports = ports or {}
  local want = hc.port
  for _, r in ipairs(comp.routes or {}) do
    if want == nil or want == r.name or want == r.key or want == r.port then
      return ports[r.key]
    end
  end
  if type(want) == "number" then return want end
  return nil
end

-- The container port a check's route maps to, or nil.
function health.container_port(comp, hc)
  local want = hc.port
  for _, r in ipairs(comp.routes or {}) do
    if want == nil or want == r.name or want == r.key or want == r.port then return r.port end
  end
  return nil
end

-- Whether a socket listens on port in the container's network namespace:
-- /proc/PID/net/tcp{,6} of its main process, readable by the agent's user.
-- Returns true, or false and why; true when it cannot tell (the host port
-- check then decides). pid: the container's main process when the caller
-- knows it (the monitor does), else Podman is asked.
function health.listens(container, port, pid)
  if not pid or pid == 0 then
    local info = mcp.podman.inspect(container)
    pid = info and info.State and info.State.Pid
  end
  if not pid or pid == 0 then return false, container .. " is not running" end
  local want = string.format(":%04X", port)
  local readable = false
  for _, f in ipairs({ "tcp", "tcp6" }) do
    local fh = io.open(string.format("/proc/%d/net/%s", pid, f), "r")
    if fh then
      readable = true
      for line in fh:lines() do
        -- sl local_address rem_address st ...; st 0A is LISTEN
        local laddr, st = line:match("^%s*%d+:%s+(%x+:%x+)%s+%x+:%x+%s+(%x%x)")
        if laddr and st == "0A" and laddr:sub(-5):upper() == want then
          fh:close()
          return true
        end
      end
      fh:close()
    end
  end
  if not readable then return true end
  return false, string.format("nothing listens on port %d inside %s", port, container)
end

-- The object a lua check receives.
local function check_context(target, port)
  return {
    service = target.service, component = target.component, container = target.container,
    port = port, host = "127.0.0.1",
    url = function(path)
      return string.format("http://127.0.0.1:%d%s", port or 0, path or "/")
    end,
  }
end

-- Runs one probe. target = {service, component, container, def, comp, ports,
-- policy [, pid]}. Returns ok (true, false, or nil when it could not tell), detail
-- (string) and the time it took in ms.
function health.probe(target)
  local comp = target.comp
  local hc = comp.health
  local t0 = mcp.timer.monotime()
  local ok, detail = false, nil
  local port = health.host_port(comp, hc, target.ports)
  local kind = hc.kind
  if kind == "http" then
    if not port then
      detail = "no host port for the check"
    else
      local url = string.format("http://127.0.0.1:%d%s", port, hc.path or "/")
      local r, err = mcp.http.get(url, { timeout = hc.timeout })
      if not r then
        detail = err
      elseif not definition.status_ok(hc.expect_status, r.status) then
        detail = string.format("%s answered %d", url, r.status)
      elseif hc.expect_body and not (r.body or ""):find(hc.expect_body, 1, true) then
        detail = string.format("%s: body lacks %q", url, hc.expect_body)
      else
        ok, detail = true, string.format("HTTP %d", r.status)
      end
    end
  elseif kind == "tcp" then
    if not port then
      detail = "no host port for the check"
    else
      -- Podman's port forwarders (rootlessport, slirp4netns) accept on the
      -- host port whether or not anything listens inside the container, so
      -- the check first asks the container's own network namespace.
      local cport = health.container_port(comp, hc)
      local listening, why = true, nil
      if cport then listening, why = health.listens(target.container, cport, target.pid) end
      if not listening then
        detail = why
      else
        local r, err = mcp.net.tcp_check("127.0.0.1", port, { timeout = hc.timeout })
        ok, detail = r and true or false, r and ("127.0.0.1:" .. port .. " accepts")
          or err
      end
    end
  elseif kind == "exec" then
    local r, err, status = mcp.podman.exec(target.container, { cmd = hc.command,
      timeout = hc.timeout })
    if not r then
      detail = err
      if status == nil and not mcp.podman.ping() then
        ok, detail = nil, "Podman does not answer: " .. tostring(err)
      end
    else
      ok = r.exit_code == 0
      local out = ((r.stderr ~= "" and r.stderr) or r.stdout or ""):gsub("%s+$", "")
      detail = string.format("%s exited %d%s", table.concat(hc.command, " "):sub(1, 80),
        r.exit_code, out ~= "" and (": " .. out:sub(1, 200)) or "")
    end
  elseif kind == "lua" then
    local fn = hc.fn
    if type(fn) == "string" then
      fn = target.policy and target.policy[fn]
    end
    if type(fn) ~= "function" then
      detail = string.format("lua check %s is not a function of policy %s",
        tostring(hc.fn), tostring(target.def and target.def.policy))
    else
      local pok, res, why = pcall(fn, check_context(target, port))
      if not pok then
        detail = "lua check failed: " .. tostring(res)
      else
        ok, detail = res and true or false, why or (res and "ok" or "lua check said no")
      end
    end
  else -- running
    local info, err, status = mcp.podman.inspect(target.container)
    if not info then
      detail = err
      if status == nil and not mcp.podman.ping() then
        ok, detail = nil, "Podman does not answer: " .. tostring(err)
      end
    else
      ok = info.State and info.State.Running == true
      detail = info.State and info.State.Status or "?"
    end
  end
  return ok, detail or "?", (mcp.timer.monotime() - t0) * 1000
end

-- A fresh health state for a container started at `now`.
function health.new_state(now)
  return { state = "starting", since = now, started = now, passes = 0, misses = 0,
    checks = 0, was_healthy = false }
end

-- Feeds one probe result (true, false, or nil: inconclusive) into st, at
-- time now (seconds, the clock new_state was given); returns the new state
-- name and whether it changed. Pure: st is the only thing it touches.
--   starting  -> healthy    after hc.successes passes in a row (default 1)
--   starting  -> unhealthy  after hc.failures misses in a row (default 3);
--                misses within hc.start_period of the start do not count
--   healthy   -> unhealthy  after hc.failures misses in a row, start_period
--                or not: it is for slow starters, not for a service that
--                has already served
--   unhealthy -> healthy    after hc.successes passes in a row
function health.step(st, hc, ok, now)
  local before = st.state
  if ok == nil then return st.state, false end
  st.checks = (st.checks or 0) + 1
  if ok then
    st.passes, st.misses = st.passes + 1, 0
    if st.state ~= "healthy" and st.passes >= (hc.successes or 1) then
      st.state = "healthy"
      st.was_healthy = true
    end
  else
    st.passes = 0
    if st.was_healthy or now - st.started >= (hc.start_period or 0) then
      st.misses = st.misses + 1
    end
    if st.state ~= "unhealthy" and st.misses >= (hc.failures or 3) then
      st.state = "unhealthy"
    end
  end
  if st.state ~= before then st.since = now end
  return st.state, st.state ~= before
end

-- Waits until every target is healthy, probing faster than the steady
-- interval so a deploy does not wait a whole interval per pass. Returns true,
-- or false and why (the last detail of a target that never got healthy).
function health.wait(targets, timeout)
  local deadline = mcp.timer.monotime() + timeout
  local states = {}
  for i = 1, #targets do states[i] = health.new_state(mcp.timer.monotime()) end
  while true do
    local all, why = true, nil
    for i, t in ipairs(targets) do
      if states[i].state ~= "healthy" then
        local ok, detail = health.probe(t)
        local hc = t.comp.health
        -- While waiting, a miss never marks unhealthy: only the deadline ends it.
        health.step(states[i], { successes = hc.successes, failures = math.huge }, ok,
          mcp.timer.monotime())
        if states[i].state ~= "healthy" then
          all, why = false, string.format("%s: %s", t.container, detail)
        end
      end
    end
    if all then return true end
    if mcp.timer.monotime() >= deadline then
      return false, why .. string.format(" (not healthy after %gs)", timeout)
    end
    local pause = 0.25
    for _, t in ipairs(targets) do
      pause = math.min(pause, math.max(0.05, (t.comp.health.interval or 1) / 4))
    end
    mcp.sleep(pause)
  end
end

return health
