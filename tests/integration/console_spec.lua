-- `mcp-agent console` against a real `mcp-agent server` (no Podman needed):
-- one-shot evaluations with -e, the peer check, and the prompt driven
-- through a terminal (tmux) as an operator uses it.
local ROOT = os.getenv("MCP_ROOT") or os.getenv("PWD")
local AGENT = os.getenv("MCP_AGENT") or (ROOT .. "/build/mcp-agent")

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function now()
  local p = io.popen("date +%s.%N")
  local t = tonumber(p:read("*l"))
  p:close()
  return t
end

local function sleep(s)
  os.execute("sleep " .. s)
end

-- Runs a shell command; returns stdout, stderr, exit code (io.popen cannot
-- give the code under LuaJIT, so the command prints it last).
local function run(cmd)
  local errfile = os.tmpname()
  local p = assert(io.popen("( " .. cmd .. " ) 2>" .. q(errfile) .. "; echo \"@rc=$?\""))
  local out = p:read("*a")
  p:close()
  local err = read_file(errfile) or ""
  os.remove(errfile)
  local rc = tonumber(out:match("@rc=(%d+)\n$"))
  return (out:gsub("@rc=%d+\n$", "")), err, rc
end

local function sh(cmd)
  local out = run(cmd)
  return (out:gsub("\n$", ""))
end

local function is_root()
  return sh("id -u") == "0"
end

-- An agent in a temporary directory: its own data dir, no Podman, no API.
local Agent = {}
Agent.__index = Agent

local function start_agent(opts)
  opts = opts or {}
  local dir = sh("mktemp -d /tmp/mcp-console-test.XXXXXX")
  -- Others must be able to reach the socket's directory for the uid tests;
  -- the run directory itself is created by the agent, 0700.
  os.execute("chmod 0755 " .. q(dir))
  local self = setmetatable({ dir = dir, socket = dir .. "/run/console.sock",
    log = dir .. "/agent.log", config = dir .. "/agent.toml" }, Agent)
  write_file(self.config, table.concat({
    "[agent]",
    'node = "console-test"',
    ('data_dir = "%s/data"'):format(dir),
    ('lib_dir = "%s"'):format(ROOT),
    "[podman]",
    ('socket = "%s/no-podman.sock"'):format(dir),
    "[api]",
    "listen = []",
    "[console]",
    ('socket = "%s"'):format(self.socket),
    "[lua]",
    ('task_instructions = %d'):format(opts.instructions or 100000000),
    "",
  }, "\n"))
  os.execute("mkdir -p " .. q(dir .. "/data"))
  if opts.before then opts.before(self) end
  self.pid = sh(("%s server --config %s >%s 2>&1 & echo $!"):format(q(AGENT), q(self.config),
    q(self.log)))
  local deadline = now() + 15
  while now() < deadline do
    local _, _, rc = self:console("-e 1")
    if rc == 0 then return self end
    if not self:alive() then break end
    sleep(0.1)
  end
  local log = read_file(self.log) or ""
  self:stop()
  error("the agent did not start its console; its log:\n" .. log)
end

function Agent:alive()
  return os.execute("kill -0 " .. self.pid .. " 2>/dev/null") == 0
end

-- Runs `mcp-agent console --socket S ARGS`; returns stdout, stderr, code.
function Agent:console(args, prefix)
  return run(("%s%s console --socket %s %s"):format(prefix or "", q(AGENT), q(self.socket),
    args))
end

function Agent:eval(expr)
  return self:console("-e " .. q(expr))
end

function Agent:log_text()
  return read_file(self.log) or ""
end

function Agent:stop()
  if self.pid and self:alive() then
    os.execute("kill -TERM " .. self.pid)
    local deadline = now() + 10
    while self:alive() and now() < deadline do sleep(0.05) end
    if self:alive() then os.execute("kill -KILL " .. self.pid) end
  end
  os.execute("rm -rf " .. q(self.dir))
end

-- A terminal: the console in a tmux pane of a tmux server of its own.
local Term = {}
Term.__index = Term
local term_count = 0

local function open_term(agent, home, args)
  term_count = term_count + 1
  -- A tmux server of its own, its socket in the agent's directory (removed
  -- with it): tests never touch the user's tmux.
  local self = setmetatable({ socket = ("%s/tmux-%d.sock"):format(agent.dir, term_count) },
    Term)
  local cmd = ("env HOME=%s %s console --socket %s %s; echo EXIT=$?; sleep 60"):format(
    q(home), q(AGENT), q(agent.socket), args or "")
  os.execute(("tmux -S %s new-session -d -x 120 -y 50 %s"):format(q(self.socket), q(cmd)))
  self:wait("help for help")
  return self
end

function Term:tmux(args)
  return sh(("tmux -S %s %s"):format(q(self.socket), args))
end

function Term:screen()
  return self:tmux("capture-pane -p -J -S -100")
end

-- Waits until the screen holds text (plain); fails with the screen after 10 s.
function Term:wait(text, timeout)
  local deadline = now() + (timeout or 10)
  local screen
  repeat
    screen = self:screen()
    if screen:find(text, 1, true) then return screen end
    sleep(0.05)
  until now() > deadline
  error(("the terminal never showed %q; it shows:\n%s"):format(text, screen), 2)
end

-- Waits until the last non-empty line is exactly the prompt.
function Term:wait_prompt(prompt)
  prompt = prompt or ">"
  local deadline = now() + 10
  local last
  repeat
    local lines = {}
    for l in (self:screen() .. "\n"):gmatch("(.-)\n") do
      if l:find("%S") then lines[#lines + 1] = l end
    end
    last = lines[#lines]
    if last and last:gsub("%s+$", "") == prompt then return end
    sleep(0.05)
  until now() > deadline
  error(("no %q prompt; the last line is %q\n%s"):format(prompt, tostring(last),
    self:screen()), 2)
end

function Term:type(text)
  self:tmux("send-keys -l " .. q(text))
end

function Term:key(...)
  self:tmux("send-keys " .. table.concat({ ... }, " "))
end

function Term:line(text)
  self:type(text)
  self:key("Enter")
end

function Term:close()
  self:tmux("kill-server")
end

local function have(cmd)
  return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") == 0
end

describe("mcp-agent console -e", function()
  local agent

  setup(function()
    agent = start_agent()
  end)

  teardown(function()
    if agent then agent:stop() end
  end)

  it("prints the value of an expression and exits 0", function()
    local out, err, rc = agent:eval("1 + 1")
    assert.same({ "2\n", "", 0 }, { out, err, rc })
  end)

  it("runs a statement, printing only what it prints", function()
    local out, _, rc = agent:eval("for i = 1, 3 do print(i) end")
    assert.same({ "1\n2\n3\n", 0 }, { out, rc })
  end)

  it("exits 1 with the error's message and position", function()
    local out, err, rc = agent:eval('error("boom")')
    assert.same({ "", "console:1: boom\n", 1 }, { out, err, rc })
  end)

  it("exits 1 on input that is not complete", function()
    local _, err, rc = agent:eval("function f(")
    assert.equal(1, rc)
    assert.matches("^incomplete input: console:1: ", err)
  end)

  it("waits for a call that waits, and answers with its result", function()
    local t0 = now()
    local out, _, rc = agent:eval("mcp.sleep(0.2); return 42")
    assert.same({ "42\n", 0 }, { out, rc })
    assert.is_true(now() - t0 >= 0.2)
  end)

  it("pretty-prints tables with sorted keys and marks cycles", function()
    local out = agent:eval('local t = { b = 1, a = { 1, 2 }, "x" }; t.self = t; return t')
    assert.equal('{ "x", a = { 1, 2 }, b = 1, self = <cycle> }\n', out)
  end)

  it("sends print() to the console, not to the agent's log", function()
    local out = agent:eval('print("console-spec-marker")')
    assert.equal("console-spec-marker\n", out)
    assert.falsy(agent:log_text():find("console-spec-marker", 1, true))
  end)

  it("serves two consoles at once: a waiting one does not hold up the other", function()
    local slow = agent.dir .. "/slow.out"
    os.execute(("%s console --socket %s -e %s >%s 2>&1 &"):format(q(AGENT), q(agent.socket),
      q('mcp.sleep(1.5); return "slow"'), q(slow)))
    sleep(0.2)
    local t0 = now()
    local out, _, rc = agent:eval('"fast"')
    assert.same({ '"fast"\n', 0 }, { out, rc })
    assert.is_true(now() - t0 < 1.0, "the second console waited for the first")
    assert.equal("", read_file(slow))
    local deadline = now() + 5
    while read_file(slow) == "" and now() < deadline do sleep(0.05) end
    assert.equal('"slow"\n', read_file(slow))
  end)

  it("ends a runaway loop at its instruction budget, and the agent keeps serving", function()
    local t0 = now()
    local _, err, rc = agent:eval("while true do end")
    assert.equal(1, rc)
    assert.matches("instruction budget of 100000000 exceeded", err)
    assert.is_true(now() - t0 < 10)
    assert.same({ "3\n", "", 0 }, { agent:eval("1 + 2") })
  end)

  it("lists the helpers on :help", function()
    local out, _, rc = agent:eval(":help")
    assert.equal(0, rc)
    assert.truthy(out:find("ps()", 1, true))
    assert.truthy(out:find("health.run(name)", 1, true))
  end)

  it("keeps its socket 0600 in a directory it made 0700", function()
    local fresh = start_agent({ before = function(a)
      assert.is_false(os.execute("test -e " .. q(a.dir .. "/run")) == 0)
    end })
    local modes = sh(("stat -c %%a %s %s"):format(q(fresh.dir .. "/run"), q(fresh.socket)))
    fresh:stop()
    assert.equal("700\n600", modes)
  end)

  it("says whether the agent runs when the socket is missing", function()
    local _, err, rc = run(("%s console --socket %s -e 1"):format(q(AGENT),
      q(agent.dir .. "/nothing.sock")))
    assert.equal(1, rc)
    assert.equal(("mcp-agent console: is the agent running? socket %s/nothing.sock: "
      .. "No such file or directory\n"):format(agent.dir), err)
  end)

  it("replaces a stale socket file, but not one something answers on", function()
    local a2 = start_agent({ before = function(a)
      os.execute("mkdir -p " .. q(a.dir .. "/run"))
      -- A socket file nobody listens on, as a killed agent leaves behind.
      assert.equal(0, select(3, run(("python3 -c %s %s"):format(q(
        "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])"),
        q(a.socket)))))
    end })
    assert.truthy(a2:log_text():find("removed the stale socket", 1, true))
    local _, _, rc = run(("%s server --config %s"):format(q(AGENT), q(a2.config)))
    assert.equal(1, rc)
    local _, _, still = a2:eval("1")
    a2:stop()
    assert.equal(0, still)
  end)
end)

describe("the console's peer check", function()
  local agent, client

  setup(function()
    if not is_root() then return end
    agent = start_agent()
    -- A copy any uid may run, outside trees other users cannot enter.
    client = agent.dir .. "/mcp-agent"
    os.execute(("cp %s %s && chmod 0755 %s"):format(q(AGENT), q(client), q(client)))
  end)

  teardown(function()
    if agent then agent:stop() end
  end)

  local function as_nobody()
    return run(("setpriv --reuid=nobody --regid=nogroup --clear-groups %s console --socket %s "
      .. "-e 1"):format(q(client), q(agent.socket)))
  end

  it("keeps another uid out by the socket's modes", function()
    if not is_root() then return pending("needs root to run a client as nobody") end
    local out, err, rc = as_nobody()
    assert.same({ "", 1 }, { out, rc })
    assert.matches("Permission denied", err)
  end)

  it("refuses another uid by SO_PEERCRED when the modes let it through, and logs it",
    function()
      if not is_root() then return pending("needs root to run a client as nobody") end
      os.execute(("chmod 0755 %s && chmod 0666 %s"):format(q(agent.dir .. "/run"),
        q(agent.socket)))
      local out, err, rc = as_nobody()
      os.execute(("chmod 0700 %s && chmod 0600 %s"):format(q(agent.dir .. "/run"),
        q(agent.socket)))
      assert.same({ "", 1 }, { out, rc })
      assert.matches("^mcp%-agent console: the agent refused the connection: console: "
        .. "uid 65534 may not use this console", err)
      assert.truthy(agent:log_text():find("refused a connection from uid 65534", 1, true))
      assert.same({ "1\n", "", 0 }, { agent:eval("1") })
    end)
end)

describe("mcp-agent console in a terminal", function()
  local agent, home, terms = nil, nil, {}

  local function term(args)
    local t = open_term(agent, home, args)
    terms[#terms + 1] = t
    return t
  end

  setup(function()
    if not have("tmux") then return end
    agent = start_agent()
    home = agent.dir .. "/home"
    os.execute("mkdir -p " .. q(home))
  end)

  teardown(function()
    for _, t in ipairs(terms) do t:close() end
    if agent then agent:stop() end
  end)

  -- A test that needs tmux; pending where it is missing.
  local function it_tmux(name, fn)
    it(name, function()
      if not have("tmux") then return pending("tmux is missing (scripts/deps.sh has it)") end
      fn()
    end)
  end

  it_tmux("greets with the version and node and prints an expression's value", function()
    local t = term()
    assert.truthy(t:screen():find("mcp-agent 0.1.0 on console-test \226\128\148 :help for help",
      1, true))
    t:line("6 * 7")
    t:wait("\n42\n")
    t:wait_prompt()
    t:close()
  end)

  it_tmux("continues a multi-line function with >> and then calls it", function()
    local t = term()
    t:line("function f(x)")
    t:wait_prompt(">>")
    t:line("return x * 2")
    t:wait_prompt(">>")
    t:line("end")
    t:wait_prompt()
    t:line("f(21)")
    t:wait("> f(21)\n42\n")
    t:close()
  end)

  it_tmux("aborts a waiting evaluation on Ctrl-C; the prompt comes back, the agent serves on",
    function()
      local t = term()
      t:line("mcp.sleep(30)")
      sleep(0.3)
      local t0 = now()
      t:key("C-c")
      t:wait("interrupted")
      t:wait_prompt()
      assert.is_true(now() - t0 < 5)
      t:line('"still here"')
      t:wait('\n"still here"\n')
      assert.same({ "1\n", "", 0 }, { agent:eval("1") })
      t:close()
    end)

  it_tmux("clears the line on Ctrl-C at the prompt, and leaves on Ctrl-D", function()
    local t = term()
    t:type("abandoned(")
    sleep(0.2)
    t:key("C-c")
    t:wait("^C")
    t:wait_prompt()
    t:line("1 + 1")
    t:wait("> 1 + 1\n2\n")
    t:key("C-d")
    t:wait("EXIT=0")
    assert.falsy(t:screen():find("abandoned(1", 1, true))
    t:close()
  end)

  it_tmux("keeps the history across sessions, in ~/.mcp_agent_history", function()
    local first = term()
    first:line('"from the first session"')
    first:wait('\n"from the first session"\n')
    first:key("C-d")
    first:wait("EXIT=0")
    first:close()
    assert.equal("600", sh("stat -c %a " .. q(home .. "/.mcp_agent_history")))
    local second = term()
    second:key("Up")
    second:wait('> "from the first session"')
    second:close()
  end)

  it_tmux("completes mcp.ti to mcp.timer on Tab", function()
    local t = term()
    t:type("mcp.ti")
    t:key("Tab")
    t:wait("> mcp.timer")
    t:type(".sl")
    t:key("Tab")
    t:wait("> mcp.timer.sleep")
    t:key("C-u")
    t:type("mcp.t")
    t:key("Tab")
    t:wait("mcp.task")         -- several candidates: listed below the line
    t:close()
  end)

  it_tmux("keeps the globals of a console across its lines, and to itself", function()
    local t = term()
    t:line("console_spec_g = 20")
    t:wait_prompt()
    t:line("console_spec_g + 1")
    t:wait("\n21\n")
    assert.same({ "nil\n", "", 0 }, { agent:eval("console_spec_g") })
    t:close()
  end)

  it_tmux("ends a runaway loop at its budget with a clear error, and keeps serving", function()
    local t = term()
    t:line("while true do end")
    t:wait("instruction budget of 100000000 exceeded")
    t:wait_prompt()
    t:line("2 + 2")
    t:wait("\n4\n")
    t:close()
  end)
end)
