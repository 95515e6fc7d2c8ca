-- mcp.doctor: `mcp-agent doctor`: is this host ready to run the agent, as
-- the user who runs it?
--
-- Each check is a pure function from facts (the uid, parsed /etc/subuid
-- text, stat results, the environment) to one result {ok, what, fix};
-- doctor.line prints it as `ok   <what>` or `FAIL <what>: <how to fix>`.
-- doctor.gather is the one impure part: it collects the facts on the real
-- machine. The specs feed the checks hand-made facts (tests/lua/doctor_spec.lua)
-- and run the command for real (tests/integration/doctor_spec.lua, and as the
-- rootless user in tests/rootless/rootless_spec.lua).
--
-- For tests, MCP_DOCTOR_SUBUID_FILE and MCP_DOCTOR_SUBGID_FILE name other
-- files to read instead of /etc/subuid and /etc/subgid (a test breaks a copy,
-- never the host's); the lines then name the file that was read.
local doctor = {}

-- What a new range should be: where useradd starts, and the 65536 ids an
-- image needs for files owned by ids up to 65535 (nobody is 65534).
doctor.SUBID_START, doctor.SUBID_COUNT = 100000, 65536

-- The spelling of the uid risk, shared by both uid failures.
doctor.UID_RISK = "the uid must never change: rootless Podman's storage, subuid mappings "
  .. "and user session belong to the uid, so under another uid the agent drives a "
  .. "different, empty Podman, and changing the user's uid destroys all container state"

local function pass(what) return { ok = true, what = what } end
local function fail(what, fix) return { ok = false, what = what, fix = fix } end

-- "uid 850 (mcp)", or "uid 850" for a uid without a name.
local function who(uid, name)
  if name then return string.format("uid %d (%s)", uid, name) end
  return string.format("uid %d", uid)
end
doctor.who = who

-- The name to put in a command or a subuid line: the user's, else the uid.
local function handle(f) return f.user or tostring(f.uid) end

-- The result as the one line the operator reads.
function doctor.line(r)
  if r.ok then return "ok   " .. r.what end
  return "FAIL " .. r.what .. ": " .. r.fix
end

----------------------------------------------------------------------------
-- The uid and the registry
----------------------------------------------------------------------------

-- f: uid, user, config (the config file), registry (its path), owner (uid
-- owning the file; nil when there is none), owner_name, read_err (it could
-- not be read), recorded (the uid recorded in it, or nil), recorded_name.
function doctor.check_uid(f)
  local reg = f.registry
  if f.read_err then
    return fail(string.format("registry %s cannot be read (%s)", reg, f.read_err),
      string.format("it must belong to the agent's user with mode 0600; run doctor as "
        .. "that user"))
  end
  if f.owner == nil then
    return pass(string.format("%s: no registry yet at %s; the agent records its uid "
      .. "there at first start", who(f.uid, f.user), reg))
  end
  if f.owner ~= f.uid then
    local how = f.owner_name and string.format(" (runuser -u %s -- mcp-agent doctor "
      .. "--config %s)", f.owner_name, f.config or "FILE") or ""
    return fail(string.format("uid: running as %s, but the registry %s belongs to %s",
      who(f.uid, f.user), reg, who(f.owner, f.owner_name)),
      string.format("run the agent and doctor as %s%s; %s", who(f.owner, f.owner_name), how,
        doctor.UID_RISK))
  end
  if f.recorded == nil then
    return pass(string.format("%s: the registry %s records no uid yet; the agent records "
      .. "it at its next start", who(f.uid, f.user), reg))
  end
  if f.recorded ~= f.uid then
    return fail(string.format("uid: running as %s, but the registry %s was recorded by %s",
      who(f.uid, f.user), reg, who(f.recorded, f.recorded_name)),
      string.format("run the agent as %s again, and if the user's uid was changed, change "
        .. "it back; %s", who(f.recorded, f.recorded_name), doctor.UID_RISK))
  end
  return pass(string.format("%s is the uid recorded in %s", who(f.uid, f.user), reg))
end

-- f: registry, problems (nil: not checked; false: none; a string: what
-- SQLite's checks found). Returns nil when there is nothing to say.
function doctor.check_registry(f)
  if f.problems == nil then return nil end
  if not f.problems then
    return pass(string.format("registry %s passes SQLite's integrity and foreign key checks",
      f.registry))
  end
  return fail(string.format("registry %s is damaged (%s)", f.registry, f.problems),
    "stop the agent and restore it from a backup (docs/operations.md, Backups)")
end

----------------------------------------------------------------------------
-- /etc/subuid and /etc/subgid
----------------------------------------------------------------------------

-- The entries of a subuid or subgid file: { {owner, start, count}, ... }, in
-- file order. Blank lines, comments and malformed lines are left out, as
-- shadow's own parser does.
function doctor.parse_subids(text)
  local out = {}
  for line in (text or ""):gmatch("[^\n]+") do
    local owner, start, count = line:match("^%s*([^:#%s][^:]*):(%d+):(%d+)%s*$")
    if owner then
      out[#out + 1] = { owner = owner, start = tonumber(start), count = tonumber(count) }
    end
  end
  return out
end

-- The first start at or past SUBID_START where COUNT ids overlap nobody's
-- range: what to suggest, so that the suggested line is right as it stands.
-- skip: an owner whose entries do not count (the user being fixed).
function doctor.free_subid_start(entries, count, skip)
  count = count or doctor.SUBID_COUNT
  local start = doctor.SUBID_START
  local moved = true
  while moved do
    moved = false
    for _, e in ipairs(entries) do
      if e.owner ~= skip and e.start < start + count and start < e.start + e.count then
        start = e.start + e.count
        moved = true
      end
    end
  end
  return start
end

-- f: file ("/etc/subuid"), text (its content; nil when it could not be
-- read), err (why), uid, user.
function doctor.check_subids(f)
  if f.uid == 0 then
    return pass(string.format("%s: not needed for uid 0 (Podman runs rootful)", f.file))
  end
  local entries = doctor.parse_subids(f.text)
  local name, uidtext = handle(f), tostring(f.uid)
  local total, ranges = 0, {}
  for _, e in ipairs(entries) do
    if e.owner == name or e.owner == uidtext then
      total = total + e.count
      ranges[#ranges + 1] = e
    end
  end
  local id = who(f.uid, f.user)
  if #ranges == 0 or total < doctor.SUBID_COUNT then
    local line = string.format("%s:%d:%d", name,
      doctor.free_subid_start(entries, doctor.SUBID_COUNT, #ranges > 0 and name or nil),
      doctor.SUBID_COUNT)
    if #ranges == 0 then
      local why = f.text == nil and string.format(" (%s)", f.err or "cannot be read") or ""
      return fail(string.format("%s has no range for %s%s", f.file, id, why),
        string.format("add the line \"%s\" to %s", line, f.file))
    end
    return fail(string.format("%s gives %s only %d ids", f.file, id, total),
      string.format("images need %d: replace %s's line%s in %s with \"%s\"",
        doctor.SUBID_COUNT, name, #ranges > 1 and "s" or "", f.file, line))
  end
  if #ranges == 1 then
    return pass(string.format("%s: %s has %d ids from %d", f.file, id, total, ranges[1].start))
  end
  return pass(string.format("%s: %s has %d ids in %d ranges", f.file, id, total, #ranges))
end

----------------------------------------------------------------------------
-- XDG_RUNTIME_DIR, the Podman socket, lingering
----------------------------------------------------------------------------

-- f: value (the variable; nil when unset), stat ({type, uid, mode}), missing,
-- stat_err, uid, user.
function doctor.check_runtime_dir(f)
  local own = string.format("/run/user/%d", f.uid)
  local v = f.value
  if v == nil or v == "" then
    return fail("XDG_RUNTIME_DIR is not set",
      string.format("set XDG_RUNTIME_DIR=%s in the agent's environment (the unit's "
        .. "Environment=)", own))
  end
  local make = string.format("install -d -m 0700 -o %s %s", handle(f), v)
  if f.missing then
    return fail(string.format("XDG_RUNTIME_DIR %s does not exist", v),
      string.format("enable lingering (loginctl enable-linger %s) so that systemd creates it, "
        .. "or create it: %s", handle(f), make))
  end
  if f.stat_err then
    return fail(string.format("XDG_RUNTIME_DIR %s cannot be examined (%s)", v, f.stat_err),
      "check the permissions of its parent directories")
  end
  local st = f.stat
  if st.type ~= "directory" then
    return fail(string.format("XDG_RUNTIME_DIR %s is not a directory (a %s)", v, st.type),
      string.format("remove it and create the directory: %s", make))
  end
  if st.uid ~= f.uid then
    local fix
    if v == own then
      fix = string.format("chown %s %s (rootless Podman keeps its socket and state there)",
        handle(f), v)
    else
      fix = string.format("set XDG_RUNTIME_DIR=%s, the user's own directory", own)
    end
    return fail(string.format("XDG_RUNTIME_DIR %s belongs to %s, not to %s", v,
      who(st.uid, f.owner_name), who(f.uid, f.user)), fix)
  end
  if st.mode % 512 ~= 448 then   -- the permission bits; a sticky bit does no harm
    return fail(string.format("XDG_RUNTIME_DIR %s has mode %04o, not 0700", v, st.mode),
      string.format("chmod 0700 %s", v))
  end
  return pass(string.format("XDG_RUNTIME_DIR %s is a directory of %s, mode %04o", v,
    who(f.uid, f.user), st.mode))
end

-- f: path ([podman] socket), stat, missing, stat_err, answered (true when
-- it answered a ping), ping_err, uid, user.
function doctor.check_socket(f)
  local p = f.path
  local start = f.uid == 0 and "systemctl enable --now podman.socket"
    or "systemctl --user enable --now podman.socket"
  if f.missing then
    return fail(string.format("Podman socket %s does not exist", p),
      string.format("start the Podman API service as %s (%s, or podman system service "
        .. "--time=0 unix://%s), or correct [podman] socket", handle(f), start, p))
  end
  if f.stat_err then
    return fail(string.format("Podman socket %s cannot be examined (%s)", p, f.stat_err),
      "check the permissions of its directory")
  end
  if f.stat.type ~= "socket" then
    return fail(string.format("Podman socket %s is not a socket (a %s)", p, f.stat.type),
      "correct [podman] socket")
  end
  if not f.answered then
    return fail(string.format("Podman socket %s does not answer a ping (%s)", p,
      f.ping_err or "no answer"),
      string.format("restart the Podman API service as %s (%s), and read its log",
        handle(f), (start:gsub("enable %-%-now", "restart"))))
  end
  return pass(string.format("Podman socket %s answers a ping", p))
end

-- f: uid, user, loginctl (it is on PATH), systemd (systemd runs this host),
-- linger ("yes", "no"; nil when unknown), err (loginctl's complaint).
function doctor.check_linger(f)
  if f.uid == 0 then return pass("lingering: not needed for uid 0") end
  local name = handle(f)
  if not f.loginctl then
    return pass(string.format("lingering of %s: not checked (no loginctl)", name))
  end
  if not f.systemd then
    return pass(string.format("lingering of %s: not checked (systemd does not run this host)",
      name))
  end
  if f.linger == "yes" then return pass(string.format("lingering of %s is enabled", name)) end
  local fix = string.format("loginctl enable-linger %s (as root; on NixOS users.users.%s.linger "
    .. "= true), so that the user's systemd, /run/user/%d and podman.socket start at boot and "
    .. "outlive logouts", name, name, f.uid)
  if f.linger == "no" then
    return fail(string.format("lingering of %s is disabled", name), fix)
  end
  return fail(string.format("lingering of %s is unknown (loginctl: %s)", name,
    f.err or "no answer"), fix)
end

----------------------------------------------------------------------------
-- Writable directories, the console
----------------------------------------------------------------------------

-- f: label ("data_dir"; nil for a plain path), path, writable, missing, err
-- (why a file could not be made there), why (what the agent writes there),
-- parent (when missing: the nearest directory that exists), parent_writable,
-- shared_group (a directory others use too, such as /srv: the group to give
-- it, as the other way to let the user write there), uid, user.
function doctor.check_writable(f)
  local what = (f.label and f.label .. " " or "") .. f.path
  if f.writable then return pass(what .. " is writable") end
  local why = f.why and " (" .. f.why .. ")" or ""
  if f.missing then
    if f.parent_writable then
      return pass(string.format("%s does not exist yet; the agent creates it (%s is writable)",
        what, f.parent))
    end
    return fail(string.format("%s does not exist, and %s cannot create it", what,
      who(f.uid, f.user)),
      string.format("install -d -m 0750 -o %s %s%s", handle(f), f.path, why))
  end
  local shared = ""
  if f.shared_group then
    shared = string.format(", or, where %s is shared: chgrp %s %s and chmod g+rwx %s",
      f.path, f.shared_group, f.path, f.path)
  end
  return fail(string.format("%s is not writable by %s (%s)", what, who(f.uid, f.user),
    f.err or "no reason given"),
    string.format("chown %s %s and chmod u+rwx %s%s%s", handle(f), f.path, f.path, shared, why))
end

-- f: socket ([console] socket; "" when disabled), dir (its directory), stat,
-- missing, stat_err, owner_name, uid, user.
--
-- Private means the agent's user owns it and nobody else has any access
-- (mode & 077 == 0), as the agent makes it when it creates it: the console
-- has the agent's full power, and a directory others can write lets them
-- replace the socket and catch an operator's session.
function doctor.check_console(f)
  if f.socket == nil or f.socket == "" then
    return pass("console: disabled ([console] socket is empty)")
  end
  local d = f.dir
  if f.missing then
    return pass(string.format("console socket directory %s does not exist yet; the agent "
      .. "creates it with mode 0700", d))
  end
  if f.stat_err then
    return fail(string.format("console socket directory %s cannot be examined (%s)", d,
      f.stat_err), "check the permissions of its parent directories")
  end
  local st = f.stat
  if st.type ~= "directory" then
    return fail(string.format("console socket directory %s is not a directory (a %s)", d,
      st.type), "correct [console] socket")
  end
  if st.uid ~= f.uid then
    return fail(string.format("console socket directory %s belongs to %s, not to %s", d,
      who(st.uid, f.owner_name), who(f.uid, f.user)),
      string.format("put the socket in a directory of %s alone, as [console] socket = "
        .. "\"/run/user/%d/mcp-agent.sock\"", handle(f), f.uid))
  end
  if st.mode % 64 ~= 0 then
    return fail(string.format("console socket directory %s has mode %04o: group or others "
      .. "have access", d, st.mode),
      string.format("chmod 0700 %s (the console has the agent's power; only %s may reach it)",
        d, handle(f)))
  end
  return pass(string.format("console socket directory %s is private (mode %04o)", d, st.mode))
end

----------------------------------------------------------------------------
-- All of them
----------------------------------------------------------------------------

-- facts: as doctor.gather returns them. Returns the results in the order an
-- operator fixes things: who runs, their ids, their session, Podman, disks.
function doctor.checks(facts)
  local out = {}
  local function add(r) if r then out[#out + 1] = r end end
  add(doctor.check_uid(facts.uid))
  add(doctor.check_registry(facts.registry))
  add(doctor.check_subids(facts.subuid))
  add(doctor.check_subids(facts.subgid))
  add(doctor.check_runtime_dir(facts.runtime_dir))
  add(doctor.check_socket(facts.socket))
  add(doctor.check_linger(facts.linger))
  for _, w in ipairs(facts.writable) do add(doctor.check_writable(w)) end
  add(doctor.check_console(facts.console))
  return out
end

-- results -> the lines, and whether every check passed.
function doctor.report(results)
  local lines, all = {}, true
  for i, r in ipairs(results) do
    lines[i] = doctor.line(r)
    all = all and r.ok
  end
  return lines, all
end

----------------------------------------------------------------------------
-- Gathering the facts (the only part that touches the machine)
----------------------------------------------------------------------------

local TYPES = { ["directory"] = "directory", ["regular file"] = "file",
  ["regular empty file"] = "file", ["socket"] = "socket", ["symbolic link"] = "symlink",
  ["fifo"] = "fifo", ["character special file"] = "character device",
  ["block special file"] = "block device" }

-- Runs a program; returns its result, or nil, err.
local function run(mcp, cmd)
  return mcp.exec.run({ cmd = cmd, env = { LC_ALL = "C" }, timeout = 10 })
end

local function first_line(s)
  return ((s or ""):match("^%s*([^\n]-)%s*\n") or (s or ""):match("^%s*(.-)%s*$"))
end

-- {type, uid, mode} of path (following symlinks), or nil, err, missing.
-- mcp.fs.stat reports neither the owner nor paths outside a root, so this
-- asks stat(1), which every host has.
local function stat(mcp, path)
  local r, err = run(mcp, { "stat", "-L", "-c", "%u %a %F", path })
  if not r then return nil, err end
  if r.exit_code ~= 0 then
    local msg = first_line(r.stderr)
    local reason = msg:match(": ([^:]+)$") or msg
    return nil, reason, reason == "No such file or directory"
  end
  local uid, mode, kind = r.stdout:match("^(%d+) (%d+) ([^\n]+)")
  if not uid then return nil, "stat(1) said: " .. first_line(r.stdout) end
  return { uid = tonumber(uid), mode = tonumber(mode, 8), type = TYPES[kind] or kind }
end

-- The name of uid, from the passwd database (getent, so LDAP users count
-- too), or nil.
local function user_name(mcp, uid)
  if uid == nil then return nil end
  local r = run(mcp, { "getent", "passwd", tostring(uid) })
  if r and r.exit_code == 0 then return r.stdout:match("^([^:\n]+):") end
  local fh = io.open("/etc/passwd", "r")
  if not fh then return nil end
  for line in fh:lines() do
    local name, id = line:match("^([^:]+):[^:]*:(%d+):")
    if name and tonumber(id) == uid then
      fh:close()
      return name
    end
  end
  fh:close()
  return nil
end

local function read_file(path)
  local fh, err = io.open(path, "r")
  if not fh then return nil, (err or ""):match(": ([^:]+)$") or err end
  local s = fh:read("*a")
  fh:close()
  return s
end

local function on_path(prog)
  for dir in (os.getenv("PATH") or "/usr/bin:/bin"):gmatch("[^:]+") do
    local fh = io.open(dir .. "/" .. prog, "r")
    if fh then
      fh:close()
      return true
    end
  end
  return false
end

-- Whether a file can be made in dir: makes one and removes it.
local function try_write(mcp, dir)
  local path = string.format("%s/.mcp-doctor.%d", dir, mcp.proc.pid())
  local fh, err = io.open(path, "w")
  if not fh then
    local reason = (err or ""):match(": ([^:]+)$") or err
    return false, reason, reason == "No such file or directory"
  end
  fh:close()
  os.remove(path)
  return true
end

local function gather_registry(mcp, cfg, base)
  local registry = require("mcp.registry")
  local path = cfg.agent.data_dir .. "/" .. registry.FILE
  local f = { registry = path, config = cfg.path }
  for k, v in pairs(base) do f[k] = v end
  local reg = { registry = path }
  local st, err, missing = stat(mcp, path)
  if not st then
    if not missing then f.read_err = err end
    return f, reg
  end
  f.owner, f.owner_name = st.uid, user_name(mcp, st.uid)
  -- Only the owner opens it: run as anyone else, the uid check fails
  -- already, and opening is a write (WAL mode) to someone else's file.
  if st.uid ~= base.uid then return f, reg end
  local db, oerr = mcp.store.open(path)
  if not db then
    f.read_err = oerr
    return f, reg
  end
  local ok, value = pcall(registry.meta_get, db, "uid")
  if not ok then
    f.read_err = tostring(value)
  else
    f.recorded = tonumber(value)
    f.recorded_name = f.recorded and user_name(mcp, f.recorded)
    local cok, good, problems = pcall(registry.check, db)
    if cok then
      reg.problems = not good and tostring(problems):gsub("^registry [^:]+: ", "") or false
    end
  end
  db:close()
  return f, reg
end

local function with(base, t)
  for k, v in pairs(base) do if t[k] == nil then t[k] = v end end
  return t
end

-- Pings the Podman service on path: through mcp.podman where the agent has
-- it, else a GET of /_ping with curl. Returns true, or nil, err.
local function ping(mcp, path)
  if mcp.podman and mcp.podman.ping then
    local ok, res, err = pcall(mcp.podman.ping)
    if ok and res then return true end
    if ok then return nil, tostring(err) end
  end
  local r, err = run(mcp, { "curl", "-sS", "--max-time", "5", "--unix-socket", path,
    "http://d/_ping" })
  if not r then return nil, err end
  if r.exit_code ~= 0 then return nil, first_line(r.stderr) end
  if first_line(r.stdout) ~= "OK" then return nil, "answered " .. first_line(r.stdout) end
  return true
end

-- The facts of every check, from the machine, as the user running this.
function doctor.gather(cfg)
  local mcp = require("mcp.core")
  local uid = mcp.proc.uid()
  local base = { uid = uid, user = user_name(mcp, uid) }
  local facts = {}
  facts.uid, facts.registry = gather_registry(mcp, cfg, base)

  for _, kind in ipairs({ "subuid", "subgid" }) do
    local file = os.getenv("MCP_DOCTOR_" .. kind:upper() .. "_FILE") or ("/etc/" .. kind)
    local text, err = read_file(file)
    facts[kind] = with(base, { file = file, text = text, err = err })
  end

  local xdg = os.getenv("XDG_RUNTIME_DIR")
  local rd = with(base, { value = xdg })
  if xdg and xdg ~= "" then
    local st, err, missing = stat(mcp, xdg)
    rd.stat, rd.missing = st, missing
    rd.stat_err = not st and not missing and err or nil
    rd.owner_name = st and st.uid ~= uid and user_name(mcp, st.uid) or nil
  end
  facts.runtime_dir = rd

  local sock = with(base, { path = cfg.podman.socket })
  do
    local st, err, missing = stat(mcp, sock.path)
    sock.stat, sock.missing = st, missing
    sock.stat_err = not st and not missing and err or nil
    if st and st.type == "socket" then sock.answered, sock.ping_err = ping(mcp, sock.path) end
  end
  facts.socket = sock

  local lg = with(base, { loginctl = on_path("loginctl"),
    systemd = mcp.fs.mtime("/run/systemd/system") ~= nil })
  if uid ~= 0 and lg.loginctl and lg.systemd then
    local r, err = run(mcp, { "loginctl", "show-user", handle(base), "-p", "Linger" })
    if r and r.exit_code == 0 then
      lg.linger = r.stdout:match("Linger=(%a+)")
    elseif r and r.stderr:find("not logged in or lingering", 1, true) then
      lg.linger = "no"
    else
      lg.err = r and first_line(r.stderr) or err
    end
  end
  facts.linger = lg

  -- The user's group, for the shared-/srv fix (docs/operations.md, section 1).
  local group
  do
    local r = run(mcp, { "id", "-gn" })
    group = r and r.exit_code == 0 and first_line(r.stdout) or nil
    if group == "" then group = nil end
  end
  facts.writable = {}
  for _, w in ipairs({ { label = "data_dir", path = cfg.agent.data_dir },
      { path = "/srv", why = "the agent makes /srv/<service> for each service's volume",
        shared_group = uid ~= 0 and group or nil } }) do
    w.writable, w.err, w.missing = try_write(mcp, w.path)
    if w.missing then
      local dir = w.path
      repeat
        dir = dir:match("^(.*)/[^/]*$") or ""
        if dir == "" then dir = "/" end
        local st = stat(mcp, dir)
      until (st and st.type == "directory") or dir == "/"
      w.parent = dir
      w.parent_writable = try_write(mcp, dir)
    end
    facts.writable[#facts.writable + 1] = with(base, w)
  end

  local csock = cfg.console and cfg.console.socket or ""
  local con = with(base, { socket = csock })
  if csock ~= "" then
    con.dir = csock:match("^(.*)/[^/]*$")
    if con.dir == "" then con.dir = "/" end
    local st, err, missing = stat(mcp, con.dir)
    con.stat, con.missing = st, missing
    con.stat_err = not st and not missing and err or nil
    con.owner_name = st and st.uid ~= uid and user_name(mcp, st.uid) or nil
  end
  facts.console = con
  return facts
end

-- Gathers, checks, prints. Returns the exit code: 0 when every check passed.
function doctor.run(cfg, out)
  out = out or print
  local lines, all = doctor.report(doctor.checks(doctor.gather(cfg)))
  for _, l in ipairs(lines) do out(l) end
  return all and 0 or 1
end

return doctor
