-- tests/env/podman_env.lua: the real-Podman test environment for busted
-- specs, a thin face on tests/env/podman-env.sh (which owns all the logic).
--
--   local podman_env = require("tests.env.podman_env")
--   describe("deploying a service", function()
--     local env
--     setup(function() env = podman_env.start() end)       -- ~1.5 s with images
--     teardown(function() if env then env:stop() end end)  -- runs when tests fail too
--     it("serves", function()
--       local out, code = env:podman({ "run", "-d", "--name", "w", "--init",
--                                      "-p", "127.0.0.1:18080:8080", env.image1 })
--       assert.equals(0, code, out)
--     end)
--   end)
--
-- Works under Lua 5.1 and LuaJIT (busted --lua=luajit); needs only io/os.
local podman_env = {}
local unpack = unpack or table.unpack

local function script_dir()
    local src = debug.getinfo(1, "S").source
    local dir = src:sub(1, 1) == "@" and src:sub(2):match("^(.*)/[^/]*$") or nil
    return dir or "tests/env"
end

podman_env.script = script_dir() .. "/podman-env.sh"
podman_env.rootless_script = script_dir() .. "/podman-env-rootless.sh"
podman_env.image1 = "localhost/mcp-test:1.0"
podman_env.image2 = "localhost/mcp-test:2.0"

-- Quote one word for /bin/sh.
local function q(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
podman_env.quote = q

local function words(args)
    if type(args) == "string" then return args end  -- already shell syntax
    local out = {}
    for i, a in ipairs(args) do out[i] = q(a) end
    return table.concat(out, " ")
end

local function read_file(path)
    local f = io.open(path, "rb")
    if not f then return "" end
    local s = f:read("*a")
    f:close()
    return s
end

-- Runs a shell command; returns stdout, exit code, stderr. io.popen cannot
-- give the exit code under Lua 5.1/LuaJIT, so the command prints it last.
-- LD_PRELOAD is dropped: `make check` preloads ASan into busted, and curl
-- with ASan preloaded hangs (binaries built with sanitizers need no preload).
local function run(cmd)
    local errfile = os.tmpname()
    local p = assert(io.popen("unset LD_PRELOAD; ( " .. cmd .. " ) 2>" .. q(errfile) ..
                              "; rc=$?; echo; echo \"__podman_env_rc=$rc\""))
    local out = p:read("*a")
    p:close()
    local err = read_file(errfile)
    os.remove(errfile)
    local body, rc = out:match("^(.*)\n__podman_env_rc=(%d+)\n$")
    if not body then return out, -1, err end
    return body, tonumber(rc), err
end
podman_env.run = run

local Env = {}
Env.__index = Env

-- The podman CLI against this environment's storage (the same containers
-- the API service sees). args: a list of words, or one shell string.
-- Returns stdout (trailing newline kept), exit code, stderr.
function Env:podman(args)
    return self:sh("podman " .. words(args))
end

-- Any shell command with the environment's variables set, run as the
-- environment's owner (root, or mcp for a rootless one).
function Env:sh(cmd)
    local inner = ". " .. q(self.dir .. "/env.sh") .. " && " .. cmd
    if self.rootless then
        return run("setpriv --reuid=850 --regid=850 --init-groups --reset-env " ..
                   "env PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin bash -c " .. q(inner))
    end
    return run(inner)
end

-- One request to the libpod API on the environment's socket. Returns the
-- body, the HTTP status (0 when nothing answered). path: "/v4.0.0/libpod/...".
function Env:api(method, path, body)
    local cmd = "curl -s --max-time 30 -o - -w '\\n%{http_code}' --unix-socket " ..
        q(self.socket) .. " -X " .. q(method)
    if body then
        cmd = cmd .. " -H 'Content-Type: application/json' --data-binary " .. q(body)
    end
    local out = run(cmd .. " " .. q("http://d" .. path))
    local resp, status = out:match("^(.*)\n(%d+)$")
    return resp or out, tonumber(status) or 0
end

local function script(cmd, dir, rootless)
    local path = rootless and podman_env.rootless_script or podman_env.script
    local out, code, err = run(q(path) .. " " .. cmd .. " " .. q(dir))
    if code ~= 0 then
        return nil, ("podman-env.sh %s %s failed (exit %d):\n%s%s"):format(cmd, dir, code, out, err)
    end
    return true
end

-- Stop only the API service (containers keep running), and start it again:
-- for tests of an agent that loses Podman and gets it back.
function Env:stop_service() return assert(script("stop-service", self.dir, self.rootless)) end
function Env:start_service() return assert(script("start-service", self.dir, self.rootless)) end

local started = {}

-- Remove every container, the service, the mounts and the directory.
-- Safe to call twice, and after anything a test did.
function Env:stop()
    if self.stopped then return true end
    self.stopped = true
    started[self.dir] = nil
    return assert(script("stop", self.dir, self.rootless))
end

-- Starts a fresh environment in /tmp/mcp-test-XXXXXX and builds the test
-- images (opts.images = false skips them). opts.rootless = true runs Podman
-- as user mcp (uid 850) with its socket in /run/user/850, one at a time.
-- Raises with the service's log when it cannot start, after cleaning up
-- what it made.
function podman_env.start(opts)
    opts = opts or {}
    local rootless = opts.rootless and true or false
    local dir = run("mktemp -d /tmp/mcp-test-XXXXXX"):gsub("%s+$", "")
    assert(dir:match("^/tmp/mcp%-test%-%w+$"), "mktemp failed: " .. dir)
    local ok, err = script("start", dir, rootless)
    if ok and opts.images ~= false then ok, err = script("images", dir, rootless) end
    if not ok then
        script("stop", dir, rootless)
        error(err, 2)
    end
    -- An agent given XDG_RUNTIME_DIR=runtime_dir finds the socket where
    -- production has it: $XDG_RUNTIME_DIR/podman/podman.sock.
    local runtime_dir = rootless and "/run/user/850" or dir .. "/run"
    local socket = rootless and runtime_dir .. "/podman/podman.sock" or dir .. "/run/podman.sock"
    local env = setmetatable({
        dir = dir,
        rootless = rootless,
        socket = socket,
        url = "unix://" .. socket,
        runtime_dir = runtime_dir,
        image1 = podman_env.image1,
        image2 = podman_env.image2,
    }, Env)
    started[dir] = env
    return env
end

-- Stop every environment this process started and did not stop: a last
-- resort for a suite whose teardown could not run.
function podman_env.stop_all()
    for _, env in pairs(started) do pcall(Env.stop, env) end
end

-- Run fn(env) in a fresh environment and always stop it; returns what fn
-- returned, or raises fn's error after stopping.
function podman_env.with(fn, opts)
    local env = podman_env.start(opts)
    local res = { pcall(fn, env) }
    env:stop()
    if not res[1] then error(res[2], 0) end
    return unpack(res, 2)
end

return podman_env
