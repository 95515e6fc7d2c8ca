-- An operator runs the agent as production does: as the system user mcp
-- (uid 850, home /srv/mcp), driving mcp's rootless Podman through
-- /run/user/850/podman/podman.sock, with the services' volumes in
-- /srv/<service>. Everything here is real: the rootless environment of
-- tests/env/podman-env-rootless.sh (which makes the user, its subuid/subgid
-- ranges, /run/user/850, a usable /dev/net/tun and a group-writable /srv the
-- way docs/operations.md says for a shared /srv, and puts back what it
-- changed), and the built agent started as uid 850 by tests/env/agent_env.lua
-- with its data in a private directory under /srv/mcp.
--
-- Runs as root (it sets up the host); nothing runs as, or touches, a uid
-- other than 850 and mcp's subordinate ids, except the one agent started as
-- root on purpose to see the uid guard refuse. Where the host cannot do
-- rootless containers at all, the suite says why and is skipped (pending).
local podman_env = require("tests.env.podman_env")
local agent_env = require("tests.env.agent_env")
local mcp = require("mcp.core")
local q, run = agent_env.quote, agent_env.run

local UID = 850
local SOCK = "/run/user/850/podman/podman.sock"

local function sh(cmd)
  local out, code, err = run(cmd)
  assert(code == 0, ("%s\nexit %s:\n%s\n%s"):format(cmd, tostring(code), out, err))
  return out
end

local function exists(path) return select(2, run("test -e " .. q(path))) == 0 end

local function lines_of(s)
  local out = {}
  for l in (s or ""):gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

local function esc(s) return (s:gsub("%p", "%%%0")) end

-- Why this host cannot run rootless containers at all, or nil. Only what a
-- host can lack is a reason to skip; a failure of the environment itself
-- (setup, Podman) fails the suite.
local function cannot()
  if run("id -u") ~= "0" then
    return "it must run as root: it creates user mcp (uid 850) and runs Podman and the agent as it"
  end
  for _, prog in ipairs({ "podman", "newuidmap", "newgidmap", "setpriv", "slirp4netns", "runc",
      "curl", "sqlite3" }) do
    if select(2, run("command -v " .. prog)) ~= 0 then
      return prog .. " is not installed (make deps)"
    end
  end
  local max = agent_env.read_file("/proc/sys/user/max_user_namespaces")
  if max and tonumber(max) == 0 then
    return "user namespaces are disabled (sysctl user.max_user_namespaces = 0)"
  end
  local clone = agent_env.read_file("/proc/sys/kernel/unprivileged_userns_clone")
  if clone and tonumber(clone) == 0 then
    return "unprivileged user namespaces are disabled (sysctl kernel.unprivileged_userns_clone = 0)"
  end
  -- The kernel's answer for uid 850 itself (AppArmor and seccomp policies
  -- can forbid what the sysctls allow). --clear-groups: the user may not exist yet.
  local _, code, err = run("setpriv --reuid=850 --regid=850 --clear-groups unshare -r true")
  if code ~= 0 then
    return "uid 850 cannot create a user namespace (unshare -r: "
      .. (err:gsub("%s+$", "")) .. ")"
  end
  if not exists("/dev/net/tun") then
    return "/dev/net/tun is missing: rootless port publishing (slirp4netns) needs it"
  end
  return nil
end

-- The rootless environment, waiting while another one (a demo, another
-- run of this suite) holds /run/user/850: one runs at a time.
local function start_rootless_env()
  local deadline = agent_env.now() + 300
  while true do
    local ok, env = pcall(podman_env.start, { rootless = true })
    if ok then return env end
    -- The refused start leaves its fresh, empty directory behind.
    local dir = tostring(env):match("start (/tmp/mcp%-test%-%w+) failed")
    if dir then run("rmdir " .. q(dir)) end
    if not tostring(env):find("another rootless environment", 1, true)
        or agent_env.now() > deadline then
      error(env, 0)
    end
    agent_env.sleep(2)
  end
end

local reason = cannot()
if reason then
  describe("the agent running rootless as uid 850", function()
    pending("skipped: this host cannot run rootless containers: " .. reason)
  end)
  return
end

describe("the agent running rootless as uid 850", function()
  local env, agent, svc, T, port, cname

  -- A service name of this run, whose /srv/<service> does not exist yet:
  -- the agent makes it, and teardown removes it.
  local function fresh_service()
    for _ = 1, 20 do
      local name = "rootless-" .. sh("tr -dc a-z0-9 </dev/urandom | head -c 6")
      if not exists("/srv/" .. name) then return name end
    end
    error("no free /srv/rootless-XXXXXX")
  end

  local function definition(name)
    return ([==[
name = "%s"
node = "test"
[[components]]
name = "web"
image = "localhost/mcp-test:1.0"
cmd = ["/bin/sh", "-c", "id -u >/srv/%s/whoami; echo written by the container >/srv/%s/hello.txt; echo rootless %s up; exec httpd -f -v -p 8080 -h /www"]
[[components.routes]]
port = 8080
]==]):format(name, name, name, name)
  end

  local function http(p)
    local out, code = run("curl -s --max-time 5 http://127.0.0.1:" .. p .. "/")
    return code == 0 and out or nil
  end

  -- {running = bool, pid = N, id = ...} of a container, seen by mcp's Podman.
  local function inspect(name)
    local out, code = env:podman({ "inspect", "--format",
      "{{.State.Running}} {{.State.Pid}} {{.Id}}", name })
    if code ~= 0 then return nil end
    local running, pid, id = out:match("^(%a+) (%d+) (%x+)")
    return { running = running == "true", pid = tonumber(pid), id = id }
  end

  -- `mcp-agent doctor` as uid 850 with the agent's config and environment;
  -- vars: words put before it (env assignments, `env -u NAME`).
  local function doctor(vars)
    local out, code, err = agent:run_as(("env %s %s doctor --config %s"):format(vars or "",
      q(agent.agent), q(agent.config_path)))
    assert(not err:find("%S"), "doctor wrote to stderr: " .. err)
    return lines_of(out), code
  end

  setup(function()
    T = sh("mktemp -d /tmp/mcp-rootless-XXXXXX")
    sh("chmod 0755 " .. q(T))
    svc = fresh_service()
    cname = svc .. "-web"
    env = start_rootless_env()
    agent = agent_env.start({ podman = env, user = UID, services = { [svc] = definition(svc) } })
  end)

  teardown(function()
    if agent then agent:stop() end
    if env then env:stop() end
    if svc then run("rm -rf --one-file-system " .. q("/srv/" .. svc)) end
    if T then run("rm -rf " .. q(T)) end
  end)

  it("deploys a service with a route and its /srv/<service> volume, in uid 850's Podman",
    function()
      local status, body = agent:api("POST", "/v1/services/" .. svc .. "/deploy")
      assert.equals(200, status, agent:log_tail())
      assert.equals("deployed", body.status)
      port = body.containers[1].ports.default
      assert.is_number(port)
      local c = inspect(cname)
      assert.is_truthy(c and c.running, "mcp's Podman does not run " .. cname)
      -- The container's first process belongs to uid 850 on the host:
      -- container root is the user, not root.
      assert.equals(tostring(UID), sh("stat -c %u /proc/" .. c.pid))
      -- The agent, as mcp, made the service's data directory.
      assert.equals(UID .. " 750", sh("stat -c '%u %a' " .. q("/srv/" .. svc)))
      local mounts = env:podman({ "inspect", "--format",
        "{{range .Mounts}}{{.Source}}:{{.Destination}} {{end}}", cname })
      assert.matches("/srv/" .. esc(svc) .. ":/srv/" .. esc(svc), mounts)
      -- And the agent itself runs as uid 850.
      assert.equals(tostring(UID), sh("stat -c %u /proc/" .. agent.pid))
    end)

  it("answers HTTP on the published port", function()
    assert.is_number(port)
    local body = agent_env.wait_for(function() return http(port) end, 20,
      "HTTP on 127.0.0.1:" .. tostring(port))
    assert.matches("hello from mcp%-test 1%.0", body)
  end)

  it("pulls a file the container wrote in /srv/<service> through the API", function()
    agent_env.wait_for(function() return exists("/srv/" .. svc .. "/hello.txt") end, 20,
      "the container's file")
    local status, _, text = agent:api("GET", "/v1/services/" .. svc .. "/files/hello.txt")
    assert.equals(200, status, text)
    assert.equals("written by the container\n", text)
    -- Root in the container, uid 850 on the host.
    local _, _, whoami = agent:api("GET", "/v1/services/" .. svc .. "/files/whoami")
    assert.equals("0\n", whoami)
    assert.equals(tostring(UID), sh("stat -c %u " .. q("/srv/" .. svc .. "/hello.txt")))
  end)

  it("shows the service's logs", function()
    assert.is_truthy(http(port))   -- one request, which httpd -v logs as "response:200"
    local seen = agent_env.wait_for(function()
      local status, _, text = agent:api("GET", "/v1/services/" .. svc .. "/logs?tail=50")
      if status ~= 200 then return nil end
      local up, request = false, false
      for _, l in ipairs(lines_of(text)) do
        local e = mcp.json.decode(l)
        assert.equals(cname, e.container)
        if e.line:find("rootless " .. svc .. " up", 1, true) then up = true end
        if e.line:find("response:200", 1, true) then request = true end
      end
      return up and request and text
    end, 20, "the start line and the request in the logs")
    assert.is_truthy(seen)
  end)

  it("stops the service, and starts it again", function()
    local status, body = agent:api("POST", "/v1/services/" .. svc .. "/stop")
    assert.equals(200, status, agent:log_tail())
    assert.equals("stopped", body.state)
    assert.is_false(inspect(cname).running)
    assert.is_nil(http(port))
    status = agent:api("POST", "/v1/services/" .. svc .. "/start")
    assert.equals(200, status, agent:log_tail())
    assert.is_true(inspect(cname).running)
    agent_env.wait_for(function() return http(port) end, 20, "HTTP after start")
  end)

  it("recovers after `podman rm -f` run as the user", function()
    local before = inspect(cname)
    local _, code, err = env:podman({ "rm", "-f", cname })
    assert.equals(0, code, err)
    local after = agent_env.wait_for(function()
      local c = inspect(cname)
      return c and c.running and c.id ~= before.id and c
    end, 60, "the agent to bring " .. cname .. " back")
    assert.equals(tostring(UID), sh("stat -c %u /proc/" .. after.pid))
    local body = agent_env.wait_for(function() return http(port) end, 20, "HTTP after recovery")
    assert.matches("hello from mcp%-test 1%.0", body)
  end)

  describe("mcp-agent doctor, run as the user", function()
    local base

    -- On a host where systemd runs, lingering is the host's own business:
    -- the expected line is what loginctl says.
    local function linger_line()
      if select(2, run("command -v loginctl")) ~= 0 then
        return "ok   lingering of mcp: not checked (no loginctl)"
      end
      if not exists("/run/systemd/system") then
        return "ok   lingering of mcp: not checked (systemd does not run this host)"
      end
      if run("loginctl show-user mcp -p Linger 2>/dev/null") == "Linger=yes" then
        return "ok   lingering of mcp is enabled"
      end
      return nil
    end

    it("passes every check in this set-up, and exits 0", function()
      local lines, code = doctor()
      local data = agent.data_dir
      local linger = linger_line()
      local expect = {
        "ok   uid 850 (mcp) is the uid recorded in " .. data .. "/mcp.db",
        "ok   registry " .. data .. "/mcp.db passes SQLite's integrity and foreign key checks",
        "^ok   /etc/subuid: uid 850 %(mcp%) has 65536 ids from %d+$",
        "^ok   /etc/subgid: uid 850 %(mcp%) has 65536 ids from %d+$",
        "ok   XDG_RUNTIME_DIR /run/user/850 is a directory of uid 850 (mcp), mode 0700",
        "ok   Podman socket " .. SOCK .. " answers a ping",
        linger or "^FAIL lingering of mcp is disabled: loginctl enable%-linger mcp ",
        "ok   data_dir " .. data .. " is writable",
        "ok   /srv is writable",
        "ok   console socket directory " .. agent.dir .. " is private (mode 0700)",
      }
      assert.equals(#expect, #lines, table.concat(lines, "\n"))
      for i, e in ipairs(expect) do
        if e:sub(1, 1) == "^" then assert.matches(e, lines[i]) else assert.equals(e, lines[i]) end
      end
      -- Where systemd runs and mcp does not linger, doctor is right to fail
      -- that one line (docs/operations.md, section 3).
      assert.equals(linger and 0 or 1, code)
      base = lines
    end)

    -- Runs doctor with one precondition broken (break_it returns the
    -- words for doctor's environment), puts it back whatever happens, and
    -- checks that the line `index` alone changed, to `want` (a string, or a
    -- pattern starting with ^), and that doctor exits 1.
    local function broken(index, want, break_it, restore)
      assert.is_table(base, "the passing run must come first")
      local ok, lines, code = pcall(function()
        return doctor(break_it())
      end)
      if restore then restore() end
      assert(ok, lines)
      assert.equals(#base, #lines, table.concat(lines, "\n"))
      for i, l in ipairs(lines) do
        if i == index then
          if want:sub(1, 1) == "^" then assert.matches(want, l) else assert.equals(want, l) end
        else
          assert.equals(base[i], l)
        end
      end
      assert.equals(1, code)
    end

    -- A copy of /etc/subuid or /etc/subgid without mcp's line.
    local function without_mcp(file)
      local copy = T .. "/" .. file:match("[^/]+$")
      sh(("grep -v '^mcp:' %s >%s || true; chmod 0644 %s"):format(q(file), q(copy), q(copy)))
      return copy
    end

    it("says which line to add when /etc/subuid has no range for mcp", function()
      local copy = without_mcp("/etc/subuid")
      broken(3, "^FAIL " .. esc(copy) .. " has no range for uid 850 %(mcp%): add the line "
        .. "\"mcp:%d+:65536\" to " .. esc(copy) .. "$",
        function() return "MCP_DOCTOR_SUBUID_FILE=" .. q(copy) end)
    end)

    it("says which line to add when /etc/subgid has no range for mcp", function()
      local copy = without_mcp("/etc/subgid")
      broken(4, "^FAIL " .. esc(copy) .. " has no range for uid 850 %(mcp%): add the line "
        .. "\"mcp:%d+:65536\" to " .. esc(copy) .. "$",
        function() return "MCP_DOCTOR_SUBGID_FILE=" .. q(copy) end)
    end)

    it("says to set XDG_RUNTIME_DIR when it is unset", function()
      broken(5, "FAIL XDG_RUNTIME_DIR is not set: set XDG_RUNTIME_DIR=/run/user/850 in the "
        .. "agent's environment (the unit's Environment=)",
        function() return "-u XDG_RUNTIME_DIR" end)
    end)

    it("says how to get XDG_RUNTIME_DIR when it does not exist", function()
      local gone = T .. "/no-runtime-dir"
      broken(5, "FAIL XDG_RUNTIME_DIR " .. gone .. " does not exist: enable lingering "
        .. "(loginctl enable-linger mcp) so that systemd creates it, or create it: install -d "
        .. "-m 0700 -o mcp " .. gone,
        function() return "XDG_RUNTIME_DIR=" .. q(gone) end)
    end)

    it("says to use the user's own XDG_RUNTIME_DIR when it belongs to someone else",
      function()
        local roots = T .. "/roots-runtime-dir"
        sh("install -d -m 0700 " .. q(roots))
        broken(5, "FAIL XDG_RUNTIME_DIR " .. roots .. " belongs to uid 0 (root), not to uid "
          .. "850 (mcp): set XDG_RUNTIME_DIR=/run/user/850, the user's own directory",
          function() return "XDG_RUNTIME_DIR=" .. q(roots) end)
      end)

    it("says how to start the user's Podman service when its socket is absent", function()
      broken(6, "FAIL Podman socket " .. SOCK .. " does not exist: start the Podman API "
        .. "service as mcp (systemctl --user enable --now podman.socket, or podman system "
        .. "service --time=0 unix://" .. SOCK .. "), or correct [podman] socket",
        function()
          env:stop_service()   -- Podman removes its socket when it stops
          assert.is_false(exists(SOCK))
          return ""
        end,
        function() env:start_service() end)
    end)

    it("says how to give data_dir back to the user when it is not writable", function()
      local data = agent.data_dir
      broken(8, "FAIL data_dir " .. data .. " is not writable by uid 850 (mcp) (Permission "
        .. "denied): chown mcp " .. data .. " and chmod u+rwx " .. data,
        function()
          sh("chmod 0500 " .. q(data))
          return ""
        end,
        function() sh("chmod 0700 " .. q(data)) end)
    end)

    it("says how to let the user write /srv, also where /srv is shared", function()
      local mode = sh("stat -c %a /srv")
      local owner = sh("stat -c %u /srv")
      broken(9, "FAIL /srv is not writable by uid 850 (mcp) (Permission denied): chown mcp "
        .. "/srv and chmod u+rwx /srv, or, where /srv is shared: chgrp mcp /srv and chmod "
        .. "g+rwx /srv (the agent makes /srv/<service> for each service's volume)",
        function()
          sh("chmod go-w" .. (owner == tostring(UID) and ",u-w" or "") .. " /srv")
          return ""
        end,
        function() sh("chmod " .. mode .. " /srv") end)
    end)

    it("passes again once every precondition is back", function()
      local lines = doctor()
      assert.are.same(base, lines)
    end)
  end)

  describe("the uid guard", function()
    it("refuses to run the agent's data under another uid, naming both uids and the risk",
      function()
        agent:halt()
        assert.is_false(agent:alive())
        -- Root, as an operator who forgot `runuser -u mcp`, with the same
        -- config and data_dir. `timeout`: an agent that does not refuse
        -- must not stay behind.
        local out, code = run(("cd / && XDG_RUNTIME_DIR=/run/user/850 timeout 30 %s server "
          .. "--config %s 2>&1"):format(q(agent.agent), q(agent.config_path)))
        assert.is_true(code ~= 0 and code ~= 124, "exit " .. tostring(code) .. ":\n" .. out)
        assert.matches("recorded by uid 850", out, 1, true)
        assert.matches("now runs as uid 0", out, 1, true)
        assert.matches("Rootless Podman keeps its containers, image storage, subuid mappings "
          .. "and user session per uid", out, 1, true)
        assert.matches("could destroy the recorded services' state", out, 1, true)
        -- It left nothing of root's in the user's directory, so the user's
        -- agent starts as before.
        assert.equals("", sh("find " .. q(agent.dir) .. " -path " .. q(agent.lib_dir)
          .. " -prune -o ! -user 850 -print"))
      end)

    it("lets the agent start again as uid 850, still managing the service", function()
      agent:start()
      local status, body = agent:api("GET", "/v1/services/" .. svc)
      assert.equals(200, status, agent:log_tail())
      assert.equals(svc, body.name or body.service)
      assert.is_truthy(http(port))
    end)
  end)

  it("undeploys: the container goes, /srv/<service> stays", function()
    local status = agent:api("DELETE", "/v1/services/" .. svc)
    assert.equals(200, status, agent:log_tail())
    assert.is_nil(inspect(cname))
    assert.is_nil(http(port))
    assert.is_true(exists("/srv/" .. svc .. "/hello.txt"))
  end)
end)
