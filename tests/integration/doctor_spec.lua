-- An operator runs `mcp-agent doctor` on a host: the real binary, against
-- temporary configs, a real Podman (the root test environment) and a
-- throwaway system user, so that checks fail the way they fail on a host
-- set up wrongly: no subuid range, XDG_RUNTIME_DIR of another user, no
-- Podman socket, a data_dir the user cannot write, a registry recorded by
-- another uid.
--
-- The tests run as root; the failing cases run the doctor as the throwaway
-- user (runuser), because root can write anywhere. The user is made here
-- and removed in teardown; no other user is touched.
local podman_env = require("tests.env.podman_env")
local q, run = podman_env.quote, podman_env.run

local ROOT = os.getenv("MCP_ROOT") or "."
local AGENT = os.getenv("MCP_AGENT") or (ROOT .. "/build/mcp-agent")

local RISK = "the uid must never change: rootless Podman's storage, subuid mappings and user "
  .. "session belong to the uid, so under another uid the agent drives a different, empty "
  .. "Podman, and changing the user's uid destroys all container state"

local function sh(cmd)
  local out, code, err = run(cmd)
  assert(code == 0, ("%s\nexit %d:\n%s%s"):format(cmd, code, out, err))
  return (out:gsub("%s+$", ""))
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function lines_of(s)
  local out = {}
  for l in s:gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

-- A registry holding only what the doctor reads: the uid the agent recorded.
local function registry_with_uid(path, uid)
  sh(("sqlite3 %s %s"):format(q(path), q("CREATE TABLE meta (key TEXT PRIMARY KEY, value "
    .. "TEXT NOT NULL); INSERT INTO meta VALUES ('uid', '" .. uid .. "');")))
end

describe("mcp-agent doctor, run on a host", function()
  local T, lib, user, uid, env

  -- Runs the doctor as `as` (nil: root) with XDG_RUNTIME_DIR = xdg (false:
  -- unset). Returns the lines and the exit code.
  local function doctor(config, as, xdg)
    local envs = xdg and ("env XDG_RUNTIME_DIR=" .. q(xdg)) or "env -u XDG_RUNTIME_DIR"
    local cmd = ("%s %s doctor --config %s"):format(envs, q(lib .. "/mcp-agent"), q(config))
    if as then cmd = ("runuser -u %s -- %s"):format(q(as), cmd) end
    local out, code, err = run(cmd)
    assert(err == "" or not err:find("%S"), "stderr: " .. err)
    return lines_of(out), code
  end

  local function config(name, t)
    local path = T .. "/" .. name .. ".toml"
    write(path, ("[agent]\ndata_dir = %q\nlib_dir = %q\n[podman]\nsocket = %q\n"
      .. "[console]\nsocket = %q\n"):format(t.data_dir, lib, t.socket, t.console))
    sh("chmod 0644 " .. q(path))
    return path
  end

  -- /srv is what it is on this machine: the lines say so.
  local srv_exists = select(2, run("test -d /srv")) == 0

  setup(function()
    T = sh("mktemp -d /tmp/mcp-doctor-XXXXXX")
    sh("chmod 0755 " .. q(T))
    -- The binary and its library where any user can read them, whatever the
    -- permissions of the checkout.
    lib = T .. "/lib"
    sh(("mkdir -p %s && cp %s %s/mcp-agent && cp -r %s/lua %s/policies %s/ && chmod -R a+rX %s")
      :format(q(lib), q(AGENT), q(lib), q(ROOT), q(ROOT), q(lib), q(lib)))
    -- Users a killed run left behind: their comment names their directory,
    -- which is gone. A run still going keeps its directory, and its user.
    for l in io.lines("/etc/passwd") do
      local name, dir = l:match("^(mcpdoc[%w]*):[^:]*:%d+:%d+:mcp%-agent doctor test ([^:]+):")
      if name and select(2, run("test -e " .. q(dir))) ~= 0 then run("userdel " .. q(name)) end
    end
    user = ("mcpdoc" .. T:match("(%w+)$"):lower():gsub("[^a-z0-9]", "")):sub(1, 20)
    local ok
    for _ = 1, 5 do   -- useradd gives up when another process holds /etc/passwd's lock
      local _, code = run(("useradd --system --no-create-home --home-dir /nonexistent "
        .. "--shell /usr/sbin/nologin --user-group --comment %s %s")
        :format(q("mcp-agent doctor test " .. T), q(user)))
      if code == 0 then ok = true break end
      run("sleep 0.5")
    end
    assert(ok, "useradd " .. user .. " failed")
    uid = tonumber(sh("id -u " .. q(user)))
  end)

  teardown(function()
    if user and uid then run("userdel " .. q(user)) end
    if env then env:stop() end
    if T then run("rm -rf " .. q(T)) end
  end)

  it("passes every check as root with a real Podman, and exits 0", function()
    env = podman_env.start({ images = false })
    local xdg, data = T .. "/root-xdg", T .. "/root-data"
    sh(("install -d -m 0700 %s %s"):format(q(xdg), q(data)))
    registry_with_uid(data .. "/mcp.db", 0)
    local lines, code = doctor(config("root", { data_dir = data, socket = env.socket,
      console = xdg .. "/mcp-agent.sock" }), nil, xdg)
    assert.are.same({
      "ok   uid 0 (root) is the uid recorded in " .. data .. "/mcp.db",
      "ok   registry " .. data .. "/mcp.db passes SQLite's integrity and foreign key checks",
      "ok   /etc/subuid: not needed for uid 0 (Podman runs rootful)",
      "ok   /etc/subgid: not needed for uid 0 (Podman runs rootful)",
      "ok   XDG_RUNTIME_DIR " .. xdg .. " is a directory of uid 0 (root), mode 0700",
      "ok   Podman socket " .. env.socket .. " answers a ping",
      "ok   lingering: not needed for uid 0",
      "ok   data_dir " .. data .. " is writable",
      srv_exists and "ok   /srv is writable"
        or "ok   /srv does not exist yet; the agent creates it (/ is writable)",
      "ok   console socket directory " .. xdg .. " is private (mode 0700)",
    }, lines)
    assert.equals(0, code)
  end)

  it("tells a Podman socket that nobody answers on from a missing one", function()
    local xdg, data = T .. "/stale-xdg", T .. "/stale-data"
    sh(("install -d -m 0700 %s %s"):format(q(xdg), q(data)))
    local sock = xdg .. "/podman.sock"   -- bound, then closed: a socket file, no listener
    sh(("python3 -c %s %s"):format(q("import socket, sys; s = socket.socket(socket.AF_UNIX); "
      .. "s.bind(sys.argv[1]); s.close()"), q(sock)))
    local lines, code = doctor(config("stale", { data_dir = data, socket = sock,
      console = xdg .. "/c.sock" }), nil, xdg)
    assert.matches("^FAIL Podman socket " .. sock:gsub("%p", "%%%0") .. " does not answer a "
      .. "ping %(.+%): restart the Podman API service as root %(systemctl "
      .. "restart podman%.socket%), and read its log$", lines[5])
    assert.equals(1, code)
  end)

  it("as a user set up wrongly, names each broken precondition and its fix, and exits 1",
    function()
      local xdg = T .. "/root-owned-xdg"          -- root's, not the user's
      local data = T .. "/ro-data"                -- the user's, but 0500
      local con = T .. "/user-con"
      local sock = T .. "/no-podman/podman.sock"  -- nothing there
      sh(("install -d -m 0700 %s"):format(q(xdg)))
      sh(("install -d -m 0500 -o %s %s"):format(q(user), q(data)))
      sh(("install -d -m 0700 -o %s %s"):format(q(user), q(con)))
      local lines, code = doctor(config("user", { data_dir = data, socket = sock,
        console = con .. "/mcp-agent.sock" }), user, xdg)
      local me = ("uid %d (%s)"):format(uid, user)
      assert.equals(9, #lines, table.concat(lines, "\n"))
      assert.equals("ok   " .. me .. ": no registry yet at " .. data .. "/mcp.db; the agent "
        .. "records its uid there at first start", lines[1])
      for i, file in ipairs({ "/etc/subuid", "/etc/subgid" }) do
        assert.matches("^FAIL " .. file:gsub("%p", "%%%0") .. " has no range for "
          .. me:gsub("%p", "%%%0") .. ": add the line \"" .. user .. ":%d+:65536\" to "
          .. file:gsub("%p", "%%%0") .. "$", lines[1 + i])
      end
      assert.equals("FAIL XDG_RUNTIME_DIR " .. xdg .. " belongs to uid 0 (root), not to " .. me
        .. ": set XDG_RUNTIME_DIR=/run/user/" .. uid .. ", the user's own directory", lines[4])
      assert.equals("FAIL Podman socket " .. sock .. " does not exist: start the Podman API "
        .. "service as " .. user .. " (systemctl --user enable --now podman.socket, or podman "
        .. "system service --time=0 unix://" .. sock .. "), or correct [podman] socket",
        lines[5])
      assert.matches("lingering of " .. user, lines[6], 1, true)
      assert.equals("FAIL data_dir " .. data .. " is not writable by " .. me
        .. " (Permission denied): chown " .. user .. " " .. data .. " and chmod u+rwx "
        .. data, lines[7])
      if srv_exists then
        assert.equals("FAIL /srv is not writable by " .. me .. " (Permission denied): chown "
          .. user .. " /srv and chmod u+rwx /srv, or, where /srv is shared: chgrp " .. user
          .. " /srv and chmod g+rwx /srv (the agent makes /srv/<service> for each "
          .. "service's volume)", lines[8])
      else
        assert.matches("^FAIL /srv does not exist, and ", lines[8])
      end
      assert.equals("ok   console socket directory " .. con .. " is private (mode 0700)",
        lines[9])
      assert.equals(1, code)
    end)

  it("refuses a registry recorded by another uid, naming both uids and the risk", function()
    local data = T .. "/other-data"
    local xdg = T .. "/user-xdg"
    sh(("install -d -m 0700 -o %s %s %s"):format(q(user), q(data), q(xdg)))
    registry_with_uid(data .. "/mcp.db", 850)
    sh(("chown %s %s && chmod 0600 %s"):format(q(user), q(data .. "/mcp.db"),
      q(data .. "/mcp.db")))
    local lines, code = doctor(config("other", { data_dir = data,
      socket = T .. "/none.sock", console = xdg .. "/c.sock" }), user, xdg)
    local name850 = sh("getent passwd 850 | cut -d: -f1 || true")
    local rec = name850 ~= "" and ("uid 850 (" .. name850 .. ")") or "uid 850"
    assert.equals(("FAIL uid: running as uid %d (%s), but the registry %s/mcp.db was recorded "
      .. "by %s: run the agent as %s again, and if the user's uid was changed, change it back; "
      .. "%s"):format(uid, user, data, rec, rec, RISK), lines[1])
    assert.equals("ok   registry " .. data .. "/mcp.db passes SQLite's integrity and foreign "
      .. "key checks", lines[2])
    assert.equals("ok   XDG_RUNTIME_DIR " .. xdg .. " is a directory of uid " .. uid .. " ("
      .. user .. "), mode 0700", lines[5])
    assert.equals(1, code)
  end)

  it("run as root on the user's registry, says to run as the user and leaves it alone",
    function()
      local data = T .. "/other-data"   -- the user's registry of the test above
      local cfg = T .. "/other.toml"
      local lines, code = doctor(cfg, nil, T .. "/user-xdg")
      assert.equals(("FAIL uid: running as uid 0 (root), but the registry %s/mcp.db belongs to "
        .. "uid %d (%s): run the agent and doctor as uid %d (%s) (runuser -u %s -- mcp-agent "
        .. "doctor --config %s); %s"):format(data, uid, user, uid, user, user, cfg, RISK),
        lines[1])
      assert.equals(1, code)
      -- SQLite was not opened as root: nothing beside the registry belongs to root.
      assert.equals("", sh(("find %s -user root"):format(q(data .. "/"))))
    end)

  it("says XDG_RUNTIME_DIR is not set when it is not", function()
    local lines, code = doctor(T .. "/other.toml", user, false)
    assert.equals("FAIL XDG_RUNTIME_DIR is not set: set XDG_RUNTIME_DIR=/run/user/" .. uid
      .. " in the agent's environment (the unit's Environment=)", lines[5])
    assert.equals(1, code)
  end)

  it("rejects arguments it does not know", function()
    local out, code, err = run(q(lib .. "/mcp-agent") .. " doctor --config "
      .. q(T .. "/root.toml") .. " extra")
    assert.equals(2, code, out)
    assert.matches("unexpected argument \"extra\"", err, 1, true)
  end)
end)
