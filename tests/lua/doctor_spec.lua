-- Specs for mcp.doctor's checks: each is a function of facts, so every
-- passing line and every failure's exact line is stated here without
-- touching the machine.
local doctor = require("mcp.doctor")

local function line(r) return doctor.line(r) end

-- The facts of a host where everything is right, for uid 850 (mcp); a test
-- changes the one fact it is about.
local function good()
  local base = { uid = 850, user = "mcp" }
  local function with(t)
    for k, v in pairs(base) do if t[k] == nil then t[k] = v end end
    return t
  end
  return {
    uid = with({ registry = "/srv/mcp/mcp.db", config = "/srv/mcp/mcp-agent.toml",
      owner = 850, owner_name = "mcp", recorded = 850, recorded_name = "mcp" }),
    registry = { registry = "/srv/mcp/mcp.db", problems = false },
    subuid = with({ file = "/etc/subuid", text = "mcp:100000:65536\n" }),
    subgid = with({ file = "/etc/subgid", text = "mcp:100000:65536\n" }),
    runtime_dir = with({ value = "/run/user/850",
      stat = { type = "directory", uid = 850, mode = 448 } }),
    socket = with({ path = "/run/user/850/podman/podman.sock",
      stat = { type = "socket", uid = 850, mode = 432 }, answered = true }),
    linger = with({ loginctl = true, systemd = true, linger = "yes" }),
    writable = { with({ label = "data_dir", path = "/srv/mcp", writable = true }),
      with({ path = "/srv", writable = true,
        why = "the agent makes /srv/<service> for each service's volume" }) },
    console = with({ socket = "/run/user/850/mcp-agent.sock", dir = "/run/user/850",
      stat = { type = "directory", uid = 850, mode = 448 } }),
  }
end

local RISK = "the uid must never change: rootless Podman's storage, subuid mappings and user "
  .. "session belong to the uid, so under another uid the agent drives a different, empty "
  .. "Podman, and changing the user's uid destroys all container state"

describe("mcp-agent doctor", function()
  describe("on a host where everything is right", function()
    it("prints one ok line per check, in the order an operator fixes things", function()
      local lines, all = doctor.report(doctor.checks(good()))
      assert.is_true(all)
      assert.are.same({
        "ok   uid 850 (mcp) is the uid recorded in /srv/mcp/mcp.db",
        "ok   registry /srv/mcp/mcp.db passes SQLite's integrity and foreign key checks",
        "ok   /etc/subuid: uid 850 (mcp) has 65536 ids from 100000",
        "ok   /etc/subgid: uid 850 (mcp) has 65536 ids from 100000",
        "ok   XDG_RUNTIME_DIR /run/user/850 is a directory of uid 850 (mcp), mode 0700",
        "ok   Podman socket /run/user/850/podman/podman.sock answers a ping",
        "ok   lingering of mcp is enabled",
        "ok   data_dir /srv/mcp is writable",
        "ok   /srv is writable",
        "ok   console socket directory /run/user/850 is private (mode 0700)",
      }, lines)
    end)

    it("fails as a whole when one check fails", function()
      local f = good()
      f.linger.linger = "no"
      local lines, all = doctor.report(doctor.checks(f))
      assert.is_false(all)
      assert.equals(10, #lines)
      assert.equals(1, #(function()
        local out = {}
        for _, l in ipairs(lines) do if l:find("^FAIL ") then out[#out + 1] = l end end
        return out
      end)())
    end)
  end)

  describe("the uid", function()
    it("passes before the agent's first start, when there is no registry", function()
      local f = good().uid
      f.owner, f.owner_name, f.recorded, f.recorded_name = nil, nil, nil, nil
      assert.equals("ok   uid 850 (mcp): no registry yet at /srv/mcp/mcp.db; the agent records "
        .. "its uid there at first start", line(doctor.check_uid(f)))
    end)

    it("passes when the registry records no uid yet", function()
      local f = good().uid
      f.recorded, f.recorded_name = nil, nil
      assert.equals("ok   uid 850 (mcp): the registry /srv/mcp/mcp.db records no uid yet; the "
        .. "agent records it at its next start", line(doctor.check_uid(f)))
    end)

    it("fails under another uid than the recorded one, naming both and the risk", function()
      local f = good().uid
      f.uid, f.user, f.owner, f.owner_name = 851, "mcp", 851, "mcp"
      assert.equals("FAIL uid: running as uid 851 (mcp), but the registry /srv/mcp/mcp.db was "
        .. "recorded by uid 850 (mcp): run the agent as uid 850 (mcp) again, and if the user's "
        .. "uid was changed, change it back; " .. RISK, line(doctor.check_uid(f)))
    end)

    it("names a recorded uid that has no user any more by its number", function()
      local f = good().uid
      f.recorded, f.recorded_name = 900, nil
      assert.matches("recorded by uid 900: run the agent as uid 900 again,",
        line(doctor.check_uid(f)), 1, true)
    end)

    it("fails when run as another user than the registry's owner, and says how to run it",
      function()
        local f = good().uid
        f.uid, f.user = 0, "root"
        f.recorded, f.recorded_name = nil, nil
        assert.equals("FAIL uid: running as uid 0 (root), but the registry /srv/mcp/mcp.db "
          .. "belongs to uid 850 (mcp): run the agent and doctor as uid 850 (mcp) (runuser -u "
          .. "mcp -- mcp-agent doctor --config /srv/mcp/mcp-agent.toml); " .. RISK,
          line(doctor.check_uid(f)))
      end)

    it("fails when the registry cannot be read", function()
      local f = good().uid
      f.read_err = "Permission denied"
      assert.equals("FAIL registry /srv/mcp/mcp.db cannot be read (Permission denied): it "
        .. "must belong to the agent's user with mode 0600; run doctor as that user",
        line(doctor.check_uid(f)))
    end)
  end)

  describe("the registry's integrity", function()
    it("says nothing when the registry was not opened", function()
      assert.is_nil(doctor.check_registry({ registry = "/srv/mcp/mcp.db" }))
    end)

    it("fails with SQLite's findings and the way back", function()
      assert.equals("FAIL registry /srv/mcp/mcp.db is damaged (row 3 missing from index x): "
        .. "stop the agent and restore it from a backup (docs/operations.md, Backups)",
        line(doctor.check_registry({ registry = "/srv/mcp/mcp.db",
          problems = "row 3 missing from index x" })))
    end)
  end)

  describe("subordinate ids", function()
    it("parses entries by name or uid, skipping comments, blanks and junk", function()
      assert.are.same({
        { owner = "alice", start = 100000, count = 65536 },
        { owner = "850", start = 165536, count = 65536 },
      }, doctor.parse_subids("# ranges\nalice:100000:65536\n\nbroken line\n"
        .. "850:165536:65536\nbob:x:1\n"))
    end)

    it("passes with one range, and with several that add up", function()
      local f = good().subuid
      assert.equals("ok   /etc/subuid: uid 850 (mcp) has 65536 ids from 100000",
        line(doctor.check_subids(f)))
      f.text = "mcp:100000:32768\n850:300000:32768\n"
      assert.equals("ok   /etc/subuid: uid 850 (mcp) has 65536 ids in 2 ranges",
        line(doctor.check_subids(f)))
    end)

    it("fails for a user without a range, with the exact line to add", function()
      local f = good().subgid
      f.text = "alice:100000:65536\n"
      assert.equals("FAIL /etc/subgid has no range for uid 850 (mcp): add the line "
        .. "\"mcp:165536:65536\" to /etc/subgid", line(doctor.check_subids(f)))
    end)

    it("suggests mcp:100000:65536 on an empty host", function()
      local f = good().subuid
      f.text = ""
      assert.equals("FAIL /etc/subuid has no range for uid 850 (mcp): add the line "
        .. "\"mcp:100000:65536\" to /etc/subuid", line(doctor.check_subids(f)))
    end)

    it("fails when the file is missing, and says so", function()
      local f = good().subuid
      f.text, f.err = nil, "No such file or directory"
      assert.equals("FAIL /etc/subuid has no range for uid 850 (mcp) (No such file or "
        .. "directory): add the line \"mcp:100000:65536\" to /etc/subuid",
        line(doctor.check_subids(f)))
    end)

    it("fails when the ranges are too small for images", function()
      local f = good().subuid
      f.text = "mcp:100000:1000\nalice:101000:65536\n"
      assert.equals("FAIL /etc/subuid gives uid 850 (mcp) only 1000 ids: images need 65536: "
        .. "replace mcp's line in /etc/subuid with \"mcp:166536:65536\"",
        line(doctor.check_subids(f)))
    end)

    it("names a user without a name by uid", function()
      local f = good().subuid
      f.user, f.text = nil, ""
      assert.equals("FAIL /etc/subuid has no range for uid 850: add the line "
        .. "\"850:100000:65536\" to /etc/subuid", line(doctor.check_subids(f)))
    end)

    it("needs none for root, whose Podman is rootful", function()
      local f = good().subuid
      f.uid, f.user, f.text = 0, "root", ""
      assert.equals("ok   /etc/subuid: not needed for uid 0 (Podman runs rootful)",
        line(doctor.check_subids(f)))
    end)

    it("suggests a start past every range it would overlap", function()
      local e = doctor.parse_subids("a:100000:65536\nb:165536:65536\nc:300000:10\n")
      assert.equals(231072, doctor.free_subid_start(e))
      assert.equals(231072, doctor.free_subid_start(e, 65536))
      assert.equals(300010, doctor.free_subid_start(e, 100000))
      assert.equals(100000, doctor.free_subid_start(e, 65536, "a"))
      assert.equals(100000, doctor.free_subid_start(doctor.parse_subids("x:50000:10\n")))
    end)
  end)

  describe("XDG_RUNTIME_DIR", function()
    local function rd() return good().runtime_dir end

    it("fails when unset", function()
      local f = rd()
      f.value, f.stat = nil, nil
      assert.equals("FAIL XDG_RUNTIME_DIR is not set: set XDG_RUNTIME_DIR=/run/user/850 in "
        .. "the agent's environment (the unit's Environment=)", line(doctor.check_runtime_dir(f)))
    end)

    it("fails when missing", function()
      local f = rd()
      f.stat, f.missing = nil, true
      assert.equals("FAIL XDG_RUNTIME_DIR /run/user/850 does not exist: enable lingering "
        .. "(loginctl enable-linger mcp) so that systemd creates it, or create it: install -d "
        .. "-m 0700 -o mcp /run/user/850", line(doctor.check_runtime_dir(f)))
    end)

    it("fails when not a directory", function()
      local f = rd()
      f.stat.type = "file"
      assert.equals("FAIL XDG_RUNTIME_DIR /run/user/850 is not a directory (a file): remove "
        .. "it and create the directory: install -d -m 0700 -o mcp /run/user/850",
        line(doctor.check_runtime_dir(f)))
    end)

    it("fails when the user's own directory belongs to someone else", function()
      local f = rd()
      f.stat.uid, f.owner_name = 0, "root"
      assert.equals("FAIL XDG_RUNTIME_DIR /run/user/850 belongs to uid 0 (root), not to uid "
        .. "850 (mcp): chown mcp /run/user/850 (rootless Podman keeps its socket and state "
        .. "there)", line(doctor.check_runtime_dir(f)))
    end)

    it("fails when it points at another user's directory (sudo, su)", function()
      local f = rd()
      f.value, f.stat.uid, f.owner_name = "/run/user/0", 0, "root"
      assert.equals("FAIL XDG_RUNTIME_DIR /run/user/0 belongs to uid 0 (root), not to uid "
        .. "850 (mcp): set XDG_RUNTIME_DIR=/run/user/850, the user's own directory",
        line(doctor.check_runtime_dir(f)))
    end)

    it("fails unless its permissions are 0700 (a sticky bit does no harm)", function()
      local f = rd()
      f.stat.mode = tonumber("755", 8)
      assert.equals("FAIL XDG_RUNTIME_DIR /run/user/850 has mode 0755, not 0700: chmod 0700 "
        .. "/run/user/850", line(doctor.check_runtime_dir(f)))
      f.stat.mode = tonumber("1700", 8)
      assert.equals("ok   XDG_RUNTIME_DIR /run/user/850 is a directory of uid 850 (mcp), mode "
        .. "1700", line(doctor.check_runtime_dir(f)))
    end)

    it("fails when it cannot be examined", function()
      local f = rd()
      f.stat, f.stat_err = nil, "Permission denied"
      assert.equals("FAIL XDG_RUNTIME_DIR /run/user/850 cannot be examined (Permission "
        .. "denied): check the permissions of its parent directories",
        line(doctor.check_runtime_dir(f)))
    end)
  end)

  describe("the Podman socket", function()
    local function s() return good().socket end
    local P = "/run/user/850/podman/podman.sock"

    it("fails when missing, with the commands that start the service", function()
      local f = s()
      f.stat, f.missing, f.answered = nil, true, nil
      assert.equals("FAIL Podman socket " .. P .. " does not exist: start the Podman API "
        .. "service as mcp (systemctl --user enable --now podman.socket, or podman system "
        .. "service --time=0 unix://" .. P .. "), or correct [podman] socket",
        line(doctor.check_socket(f)))
    end)

    it("fails when something else is there", function()
      local f = s()
      f.stat.type, f.answered = "directory", nil
      assert.equals("FAIL Podman socket " .. P .. " is not a socket (a directory): correct "
        .. "[podman] socket", line(doctor.check_socket(f)))
    end)

    it("fails when nobody answers", function()
      local f = s()
      f.answered, f.ping_err = nil, "Connection refused"
      assert.equals("FAIL Podman socket " .. P .. " does not answer a ping (Connection "
        .. "refused): restart the Podman API service as mcp (systemctl --user restart "
        .. "podman.socket), and read its log", line(doctor.check_socket(f)))
    end)

    it("tells root the system-wide service", function()
      local f = s()
      f.uid, f.user, f.path = 0, "root", "/run/podman/podman.sock"
      f.stat, f.missing = nil, true
      assert.matches("as root (systemctl enable --now podman.socket, or",
        line(doctor.check_socket(f)), 1, true)
    end)
  end)

  describe("lingering", function()
    local function l() return good().linger end

    it("fails when disabled, with the command and the NixOS option", function()
      local f = l()
      f.linger = "no"
      assert.equals("FAIL lingering of mcp is disabled: loginctl enable-linger mcp (as root; "
        .. "on NixOS users.users.mcp.linger = true), so that the user's systemd, /run/user/850 "
        .. "and podman.socket start at boot and outlive logouts", line(doctor.check_linger(f)))
    end)

    it("fails when loginctl cannot tell", function()
      local f = l()
      f.linger, f.err = nil, "Failed to connect to bus"
      assert.matches("^FAIL lingering of mcp is unknown %(loginctl: Failed to connect to bus%): "
        .. "loginctl enable%-linger mcp", line(doctor.check_linger(f)))
    end)

    it("is skipped where there is no loginctl, or no systemd", function()
      local f = l()
      f.loginctl, f.linger = false, nil
      assert.equals("ok   lingering of mcp: not checked (no loginctl)",
        line(doctor.check_linger(f)))
      f.loginctl, f.systemd = true, false
      assert.equals("ok   lingering of mcp: not checked (systemd does not run this host)",
        line(doctor.check_linger(f)))
    end)

    it("is not needed for root", function()
      local f = l()
      f.uid, f.user, f.linger = 0, "root", "no"
      assert.equals("ok   lingering: not needed for uid 0", line(doctor.check_linger(f)))
    end)
  end)

  describe("writable directories", function()
    it("fails when data_dir is not writable, naming the user and the fix", function()
      local f = good().writable[1]
      f.writable, f.err = false, "Permission denied"
      assert.equals("FAIL data_dir /srv/mcp is not writable by uid 850 (mcp) (Permission "
        .. "denied): chown mcp /srv/mcp and chmod u+rwx /srv/mcp",
        line(doctor.check_writable(f)))
    end)

    it("fails when /srv is not writable, saying why the agent needs it", function()
      local f = good().writable[2]
      f.writable, f.err = false, "Read-only file system"
      assert.equals("FAIL /srv is not writable by uid 850 (mcp) (Read-only file system): "
        .. "chown mcp /srv and chmod u+rwx /srv (the agent makes /srv/<service> for each "
        .. "service's volume)", line(doctor.check_writable(f)))
    end)

    it("fails when data_dir is missing and cannot be made, with the command that makes it",
      function()
        local f = good().writable[1]
        f.writable, f.missing, f.parent, f.parent_writable = false, true, "/srv", false
        assert.equals("FAIL data_dir /srv/mcp does not exist, and uid 850 (mcp) cannot create "
          .. "it: install -d -m 0750 -o mcp /srv/mcp", line(doctor.check_writable(f)))
      end)

    it("passes when data_dir is missing but the agent can make it", function()
      local f = good().writable[1]
      f.writable, f.missing, f.parent, f.parent_writable = false, true, "/srv", true
      assert.equals("ok   data_dir /srv/mcp does not exist yet; the agent creates it (/srv is "
        .. "writable)", line(doctor.check_writable(f)))
    end)
  end)

  describe("the console socket's directory", function()
    local function c() return good().console end

    it("fails when group or others have any access", function()
      local f = c()
      f.dir, f.socket = "/srv/mcp", "/srv/mcp/console.sock"
      f.stat.mode = tonumber("750", 8)
      assert.equals("FAIL console socket directory /srv/mcp has mode 0750: group or others "
        .. "have access: chmod 0700 /srv/mcp (the console has the agent's power; only mcp may "
        .. "reach it)", line(doctor.check_console(f)))
    end)

    it("fails when another user owns it", function()
      local f = c()
      f.dir, f.socket, f.stat.uid, f.owner_name = "/tmp/x", "/tmp/x/c.sock", 0, "root"
      assert.equals("FAIL console socket directory /tmp/x belongs to uid 0 (root), not to uid "
        .. "850 (mcp): put the socket in a directory of mcp alone, as [console] socket = "
        .. "\"/run/user/850/mcp-agent.sock\"", line(doctor.check_console(f)))
    end)

    it("passes when the directory is yet to be made: the agent makes it 0700", function()
      local f = c()
      f.stat, f.missing, f.dir = nil, true, "/run/user/850/mcp"
      assert.equals("ok   console socket directory /run/user/850/mcp does not exist yet; the "
        .. "agent creates it with mode 0700", line(doctor.check_console(f)))
    end)

    it("passes when the console is disabled", function()
      local f = c()
      f.socket = ""
      assert.equals("ok   console: disabled ([console] socket is empty)",
        line(doctor.check_console(f)))
    end)
  end)
end)
