-- tests/env/agent_env.lua: a real `mcp-agent server` for integration specs,
-- on a private data dir, against a real Podman from tests/env/podman_env.lua.
--
--   local podman_env = require("tests.env.podman_env")
--   local agent_env = require("tests.env.agent_env")
--   setup(function()
--     env = podman_env.start()
--     agent = agent_env.start({ podman = env, services = { hello = HELLO_TOML } })
--   end)
--   teardown(function() agent:stop(); env:stop() end)
--   it("deploys", function()
--     local status, body = agent:api("POST", "/v1/services/hello/deploy")
--     assert.equal(200, status, agent:log_tail())
--   end)
--
-- The agent is the built binary ($MCP_AGENT, build/mcp-agent by default),
-- reached over real HTTP with curl and a token made by `mcp-agent token
-- create`; the CLI is $MCP_CLI. Needs only io/os (and mcp.core for JSON).
--
-- opts.user = 850 runs the agent as production does, as that user (the
-- tests run as root): the binary, lua/ and policies/ copied into the agent's
-- directory under /srv/mcp (its home), the data_dir beside them, both owned
-- by the user, and every agent process (server, token) started with
-- `setpriv --reuid --regid --init-groups --reset-env`, HOME=/srv/mcp and
-- XDG_RUNTIME_DIR=/run/user/UID (or the Podman environment's runtime_dir).
local mcp = require("mcp.core")

local agent_env = {}
local ROOT = os.getenv("MCP_ROOT") or "."
local AGENT = os.getenv("MCP_AGENT") or (ROOT .. "/build/mcp-agent")
local CLI = os.getenv("MCP_CLI") or (ROOT .. "/build/mcp")
agent_env.AGENT, agent_env.CLI, agent_env.ROOT = AGENT, CLI, ROOT

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
agent_env.quote = q

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end
agent_env.read_file = read_file

local function write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end
agent_env.write_file = write_file

-- Runs a shell command: stdout, exit code, stderr. LD_PRELOAD is dropped
-- (see tests/helper.lua).
local function run(cmd)
  local errf = os.tmpname()
  local p = assert(io.popen("unset LD_PRELOAD; ( " .. cmd .. " ) 2>" .. q(errf)
    .. "; rc=$?; echo; echo \"__rc=$rc\""))
  local out = p:read("*a")
  p:close()
  local err = read_file(errf) or ""
  os.remove(errf)
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  out = out:gsub("\n__rc=%d+%s*$", ""):gsub("\n$", "")
  return out, rc, err
end
agent_env.run = run

local function now()
  local p = io.popen("date +%s.%N")
  local t = tonumber(p:read("*a"))
  p:close()
  return t
end
agent_env.now = now

function agent_env.sleep(s) os.execute("sleep " .. s) end

-- A free TCP port on 127.0.0.1, from the kernel.
function agent_env.free_port()
  local out = run([[python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])']])
  return tonumber(out)
end

-- Polls fn() until it returns a truthy value or timeout seconds pass.
function agent_env.wait_for(fn, timeout, what)
  local deadline = now() + (timeout or 30)
  while true do
    local v = fn()
    if v then return v end
    if now() > deadline then error("timed out waiting for " .. (what or "a condition"), 2) end
    os.execute("sleep 0.2")
  end
end

local Agent = {}
Agent.__index = Agent

-- The words that run a command as the agent's user (opts.user), with the
-- environment the unit gives the agent; "" for an agent of the current user.
-- The sanitizers' settings pass through (`make check` runs the agent too).
local function as_user(self)
  if not self.user then return "" end
  local vars = { "HOME=" .. q(self.home), "XDG_RUNTIME_DIR=" .. q(self.runtime_dir),
    "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" }
  for _, k in ipairs({ "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS" }) do
    local v = os.getenv(k)
    if v then vars[#vars + 1] = k .. "=" .. q(v) end
  end
  return ("setpriv --reuid=%d --regid=%d --init-groups --reset-env env %s "):format(
    self.user, self.gid, table.concat(vars, " "))
end

-- Runs a shell command as the agent's user (the current user when the agent
-- has no opts.user), with the agent's environment: stdout, exit code, stderr.
function Agent:run_as(cmd)
  if not self.user then return run(cmd) end
  return run(as_user(self) .. "sh -c " .. q(cmd))
end

local function config_text(self, opts)
  local lines = {
    "[agent]",
    ('node = "%s"'):format(self.node),
    ('data_dir = "%s"'):format(self.data_dir),
    ('services_dir = "%s"'):format(self.services_dir),
    ('policies_dir = "%s"'):format(self.policies_dir),
    ('lib_dir = "%s"'):format(self.lib_dir),
    opts.agent_config or "",
    "[podman]",
    ('socket = "%s"'):format(self.podman_socket),
    "[api]",
    ('listen = ["127.0.0.1:%d"]'):format(self.port),
    "[console]",
    ('socket = "%s/console.sock"'):format(self.dir),
    "[log]",
    ('level = "%s"'):format(opts.log_level or "debug"),
  }
  if opts.config then lines[#lines + 1] = opts.config end
  return table.concat(lines, "\n") .. "\n"
end

-- agent_env.start{podman = env, node = "test", services = {name = text or
-- {ext = "lua", text = ...}}, policies = {name = text}, config = "extra TOML
-- sections", agent_config = "more keys of [agent]", log_level = "debug", user =
-- uid} -> agent. The agent answers /v1/health when this returns.
-- MCP_AGENT_WRAPPER, when set, prefixes the server's command line (e.g.
-- "valgrind --leak-check=full --log-file=/tmp/vg.%p"; docs/reliability.md).
function agent_env.start(opts)
  opts = opts or {}
  local self = setmetatable({ node = opts.node or "test", podman = opts.podman,
    port = opts.port or agent_env.free_port() }, Agent)
  local dir
  if opts.user then
    local uid = tonumber(opts.user)
    local pw = run("getent passwd " .. q(uid))
    local gid, home = pw:match("^[^:]*:[^:]*:%d+:(%d+):[^:]*:([^:]*):")
    if not gid then error("agent_env: no user with uid " .. tostring(opts.user)) end
    if run("id -u") ~= "0" then error("agent_env: user = " .. uid .. " needs root") end
    self.user, self.gid, self.home = uid, tonumber(gid), home
    self.runtime_dir = opts.podman and opts.podman.rootless and opts.podman.runtime_dir
      or ("/run/user/" .. uid)
    -- A directory of its own under the user's home, as production's /srv/mcp.
    dir = run("mktemp -d " .. q(home .. "/agent-test.XXXXXX"))
    if not dir:match("^/.*/agent%-test%.%w+$") then error("agent_env: mktemp failed: " .. dir) end
    self.lib_dir = dir .. "/lib"
    -- The code as production installs it: root's, readable by the user,
    -- whatever the permissions of the checkout.
    local _, rc, err = run(("mkdir -p %s && cp %s %s/mcp-agent && cp -r %s/lua %s/policies %s/"
      .. " && chmod -R a+rX %s"):format(q(self.lib_dir), q(AGENT), q(self.lib_dir), q(ROOT),
      q(ROOT), q(self.lib_dir), q(self.lib_dir)))
    if rc ~= 0 then
      run("rm -rf " .. q(dir))
      error("agent_env: copying the agent to " .. self.lib_dir .. " failed: " .. err)
    end
    self.agent = self.lib_dir .. "/mcp-agent"
  else
    dir = run("mktemp -d /tmp/mcp-agent-test.XXXXXX")
    self.lib_dir, self.agent = ROOT, AGENT
  end
  self.dir, self.data_dir = dir, dir .. "/data"
  self.services_dir, self.policies_dir = dir .. "/services", dir .. "/policies"
  self.podman_socket = opts.podman and opts.podman.socket or (dir .. "/no-podman.sock")
  self.log, self.config_path = dir .. "/agent.log", dir .. "/agent.toml"
  self.url = "http://127.0.0.1:" .. self.port
  os.execute("mkdir -p " .. q(self.data_dir) .. " " .. q(self.services_dir) .. " "
    .. q(self.policies_dir))
  write_file(self.config_path, config_text(self, opts))
  for name, def in pairs(opts.services or {}) do self:write_service(name, def) end
  for name, text in pairs(opts.policies or {}) do
    write_file(self.policies_dir .. "/" .. name .. ".lua", text)
  end
  if self.user then
    -- Everything but the code is the user's; the directory is private (0700),
    -- like /srv/mcp, which also keeps the console socket's directory private.
    local _, rc, err = run(("touch %s && chown %d:%d %s && chmod 0700 %s && "
      .. "chown -R %d:%d %s %s %s %s %s"):format(q(self.log), self.user, self.gid, q(dir),
      q(dir), self.user, self.gid, q(self.data_dir), q(self.services_dir),
      q(self.policies_dir), q(self.config_path), q(self.log)))
    if rc ~= 0 then
      run("rm -rf " .. q(dir))
      error("agent_env: giving " .. dir .. " to uid " .. self.user .. " failed: " .. err)
    end
  end
  local function boot()
    local token, rc, err = self:run_as(q(self.agent) .. " token create --config "
      .. q(self.config_path) .. " --name tests")
    if rc ~= 0 then error("token create failed: " .. err .. token) end
    self.token = token:match("(mcp_%x+)")
    self:start()
  end
  if not self.user then
    boot()
    return self
  end
  -- Under the user's home nothing may stay behind: on failure the agent goes
  -- with its directory (the error carries the log's tail).
  local ok, err = pcall(boot)
  if not ok then
    self:stop()
    error(err, 0)
  end
  return self
end

-- Starts (or starts again) the server process and waits for /v1/health.
function Agent:start()
  local wrapper = os.getenv("MCP_AGENT_WRAPPER")
  self.pid = run(("%s%s%s server --config %s >>%s 2>&1 & echo $!"):format(as_user(self),
    wrapper and wrapper ~= "" and wrapper .. " " or "", q(self.agent), q(self.config_path),
    q(self.log)))
  local deadline = now() + (wrapper and 120 or 20)
  while now() < deadline do
    local status = self:api("GET", "/v1/health", { timeout = 2 })
    if status == 200 then return self end
    if not self:alive() then break end
    os.execute("sleep 0.1")
  end
  error("the agent did not come up; its log:\n" .. self:log_tail(60))
end

function Agent:alive()
  return self.pid and os.execute("kill -0 " .. self.pid .. " 2>/dev/null") == 0
end

-- Writes a definition into the services dir: text (TOML) or {ext=, text=}.
function Agent:write_service(name, def)
  local ext, text = "toml", def
  if type(def) == "table" then ext, text = def.ext, def.text end
  write_file(self.services_dir .. "/" .. name .. "." .. ext, text)
end

-- agent:api(method, path, {json=, body=, headers=, timeout=, token=}) ->
-- status, decoded body (JSON) or text, raw text.
function Agent:api(method, path, opts)
  opts = opts or {}
  local args = { "curl", "-s", "-S", "-o", "-", "-w", "'\n%{http_code}'", "-X", method,
    "--max-time", tostring(opts.timeout or 120) }
  local token = opts.token
  if token == nil then token = self.token end
  if token then args[#args + 1] = "-H " .. q("Authorization: Bearer " .. token) end
  for k, v in pairs(opts.headers or {}) do args[#args + 1] = "-H " .. q(k .. ": " .. v) end
  local body = opts.body
  if opts.json ~= nil then
    body = mcp.json.encode(opts.json)
    args[#args + 1] = "-H 'Content-Type: application/json'"
  end
  local bodyf
  if body then
    bodyf = os.tmpname()
    write_file(bodyf, body)
    args[#args + 1] = "--data-binary @" .. q(bodyf)
  end
  args[#args + 1] = q(self.url .. path)
  local out = run(table.concat(args, " "))
  if bodyf then os.remove(bodyf) end
  local text, code = out:match("^(.*)\n(%d+)$")
  local status = tonumber(code) or 0
  local decoded = text and mcp.json.decode(text)
  return status, decoded or text, text
end

-- Runs the `mcp` CLI against this agent: stdout, exit code, stderr.
function Agent:cli(args, env)
  return run(("env MCP_AGENT_URL=%s MCP_TOKEN=%s MCP_NODE=%s HOME=%s %s %s %s"):format(
    q(self.url), q(self.token), q(self.node), q(self.dir), env or "", q(CLI), args))
end

-- Runs `mcp-agent console -e EXPR` against this agent.
function Agent:eval(expr)
  return run(("%s console --socket %s -e %s"):format(q(self.agent),
    q(self.dir .. "/console.sock"), q(expr)))
end

function Agent:log_text() return read_file(self.log) or "" end

function Agent:log_tail(n)
  local lines = {}
  for l in self:log_text():gmatch("[^\n]*") do lines[#lines + 1] = l end
  return table.concat(lines, "\n", math.max(1, #lines - (n or 40)))
end

-- Stops the server (SIGTERM, then SIGKILL after 10 s); keeps the data.
function Agent:halt(signal)
  if self:alive() then
    os.execute("kill -" .. (signal or "TERM") .. " " .. self.pid)
    local deadline = now() + 10
    while self:alive() and now() < deadline do os.execute("sleep 0.05") end
    if self:alive() then os.execute("kill -KILL " .. self.pid) end
  end
end

-- Stops the server and removes its directory (containers stay in Podman:
-- the Podman environment's stop removes them).
function Agent:stop()
  self:halt()
  -- Under `make check` a sanitizer's report in the agent's log would go with
  -- its directory, and the spec would only see a dead agent: the log is kept
  -- in $MCP_SAN_REPORTS, which the check target shows and fails on.
  local reports = os.getenv("MCP_SAN_REPORTS")
  if reports and reports ~= "" then
    local text = self:log_text()
    if text:find("ERROR: AddressSanitizer", 1, true) or text:find("runtime error:", 1, true)
        or text:find("ERROR: LeakSanitizer", 1, true) then
      os.execute(("mkdir -p %s && cp %s %s/agent-%s.log"):format(q(reports), q(self.log),
        q(reports), tostring(self.pid)))
    end
  end
  os.execute("rm -rf " .. q(self.dir))
end

return agent_env
