-- mcp.sandbox with the real C module: the environment of operator code (what
-- it can reach, what it cannot, what it shares), its compiler, the plain
-- copy of what a definition returns, and hooks that run in tasks of their own
-- under the [lua] limits.
local mcp = require("mcp.core")
local sandbox = require("mcp.sandbox")

-- Runs `text` as the file `name` in a fresh environment: what it returns, or
-- nil and the error.
local function load(text, name)
  return sandbox.load_file(name or "/srv/mcp/policies/test.lua", text)
end

local function refused(text)
  local v, err = load(text)
  assert.is_nil(v, "expected an error from: " .. text)
  return err
end

describe("the sandbox's environment", function()
  it("has the safe standard library and the mcp API", function()
    local v = assert(load([[
      return { string.format("%d", 7), table.concat({ "a", "b" }, ","), math.floor(2.5),
        type(os.time()), type(mcp.log.info), type(mcp.json.encode), mcp.version,
        select("#", 1, 2), tostring(pcall(error, "x")), ("abc"):upper(),
        type(coroutine.wrap), type(mcp.podman.create), type(mcp.sleep) }
    ]]))
    assert.same({ "7", "a,b", 2, "number", "function", "function", mcp.version, 2, "false",
      "ABC", "function", "function", "function" }, v)
  end)

  it("gives each file globals of its own", function()
    local _, _, env_a = load("shared = 'from a'; return true", "/p/a.lua")
    local b = assert(load("return tostring(shared)", "/p/b.lua"))
    assert.equal("from a", env_a.shared)
    assert.equal("nil", b)
    assert.is_nil(rawget(_G, "shared"))
  end)

  local missing = {
    { "io.open('/etc/passwd')", "io is not available to policies and definitions" },
    { "require('ffi')", "require is not available" },
    { "debug.getinfo(1)", "debug is not available" },
    { "jit.on()", "jit is not available" },
    { "dofile('/etc/passwd')", "dofile is not available" },
    { "loadfile('/etc/passwd')", "loadfile is not available" },
    { "getfenv(1)", "getfenv is not available" },
    { "setfenv(1, {})", "setfenv is not available" },
    { "rawset(string, 'x', 1)", "rawset is not available" },
    { "collectgarbage()", "collectgarbage is not available" },
    { "package.loaded['x'] = 1", "package is not available" },
    { "os.execute('true')", "os.execute is not available to policies and definitions: they "
      .. "cannot run commands" },
    { "os.getenv('HOME')", "os.getenv is not available" },
    { "os.remove('/tmp/x')", "os.remove is not available" },
    { "os.exit(1)", "os.exit is not available" },
    { "string.dump(print)", "string.dump is not available" },
    { "('').dump(print)", "string.dump is not available" },
    { "math.randomseed(1)", "math.randomseed is not available" },
    { "mcp.exec.run({ cmd = { 'id' } })", "mcp.exec is not available" },
    { "mcp.fs.read('/etc', 'passwd')", "mcp.fs is not available" },
    { "mcp.store.open('/tmp/x.db')", "mcp.store is not available" },
    { "mcp.task.list()", "mcp.task is not available" },
    { "mcp.spawn(print)", "mcp.spawn is not available" },
    { "mcp.state.db = nil", "mcp.state is not available" },
  }
  for _, case in ipairs(missing) do
    it("refuses " .. case[1] .. ", naming it, the file and the line", function()
      local err = refused("local x = 1\n" .. case[1] .. "\nreturn x")
      assert.matches("^/srv/mcp/policies/test%.lua:2: ", err)
      assert.matches(case[2], err, 1, true)
    end)
  end

  local shared = {
    { "string.upper = string.lower", "string is read-only in the sandbox (tried to set "
      .. "string.upper)" },
    { "string.brand_new = 1", "string is read-only" },
    { "table.insert = nil", "table is read-only" },
    { "math.pi = 3", "math is read-only" },
    { "os.time = nil", "os is read-only" },
    { "coroutine.wrap = nil", "coroutine is read-only" },
    { "mcp.log = nil", "mcp is read-only in the sandbox (tried to set mcp.log)" },
    { "mcp.log.info = print", "mcp.log is read-only in the sandbox (tried to set "
      .. "mcp.log.info)" },
    { "mcp.podman.images.pull = print", "mcp.podman.images is read-only" },
  }
  for _, case in ipairs(shared) do
    it("refuses a write to a shared table: " .. case[1], function()
      local err = refused("\n" .. case[1] .. "\nreturn true")
      assert.matches("^/srv/mcp/policies/test%.lua:2: ", err)
      assert.matches(case[2], err, 1, true)
    end)
  end

  it("lets a file read shared tables as usual: pairs, next, ipairs, rawget", function()
    local v = assert(load([[
      local n = 0
      for k, f in pairs(string) do n = n + 1 end
      local first = next(math)
      return { n, first ~= nil, rawget(string, "format") == string.format,
        rawget(string, "dump") }
    ]]))
    assert.is_true(v[1] >= 13, "string has " .. v[1] .. " functions")
    assert.is_true(v[2])
    assert.is_true(v[3])
    assert.is_nil(v[4])
  end)

  it("gives each file its own copy of mcp.config", function()
    local saved = mcp.config
    mcp.config = { agent = { node = "rift", volume_roots = { "/srv" } } }
    local ok, err = pcall(function()
      local a = assert(load("mcp.config.agent.node = 'mine'; return mcp.config.agent.node"))
      local b = assert(load("return { mcp.config.agent.node, #mcp.config.agent.volume_roots }"))
      assert.equal("mine", a)
      assert.same({ "rift", 1 }, b)
      assert.equal("rift", mcp.config.agent.node)
    end)
    mcp.config = saved
    assert(ok, err)
  end)

  it("shows a file the metatables it set, and no other", function()
    local v = assert(load([[
      local mt = { __index = function() return 42 end }
      local t = setmetatable({}, mt)
      return { getmetatable(t) == mt, t.anything, getmetatable("") == nil,
        getmetatable(string) == nil, getmetatable(_G) == nil }
    ]]))
    assert.same({ true, 42, true, true, true }, v)
    local agents = setmetatable({}, { __index = { secret = true } })
    local _, _, env = load("return true")
    local fn = sandbox.compile("local t = ...; local mt = getmetatable(t); "
      .. "return mt == nil, pcall(setmetatable, t, {})", "/p/peek.lua", env)
    local hidden, set_ok, set_err = fn(agents)
    assert.is_true(hidden)
    assert.is_false(set_ok)
    assert.matches("cannot change the metatable of a table the agent owns", set_err)
  end)

  it("loads source text only: load refuses bytecode and readers", function()
    assert.equal(6, assert(load("return load('return 1 + 5')()")))
    assert.matches("binary chunks %(bytecode%) are not allowed",
      refused("return load('\\27LJ\\2\\0')"))
    assert.matches("only strings of Lua source", refused("return load(function() end)"))
    local fn, err = sandbox.compile("\27LJ\2\0", "/p/bin.lua", sandbox.env("/p/bin.lua"))
    assert.is_nil(fn)
    assert.matches("/p/bin.lua: binary chunks", err)
  end)

  it("compiles with file and line in syntax errors, and runs errors back as text", function()
    local v, err = load("return {\n  deploy = function(ctx)\n    if then end\n  end }\n")
    assert.is_nil(v)
    assert.matches("^/srv/mcp/policies/test%.lua:3: ", err)
    v, err = load("error({ code = 1 })")
    assert.is_nil(v)
    assert.matches("raised a table value", err)
  end)

  it("runs operator code with the JIT off, so that a budget stops its loops", function()
    local fn = sandbox.compile("local n = 0\nwhile true do n = n + 1 end", "/p/spin.lua",
      sandbox.env("/p/spin.lua"))
    local ok, err = pcall(mcp.run, { name = "spin", instructions = 2000000 }, fn)
    assert.is_false(ok)
    assert.matches("instruction budget of 2000000 exceeded", err)
    -- and functions it defines, and code it loads
    fn = sandbox.compile("return function() local n = 0 while true do n = n + 1 end end, "
      .. "load('local n = 0 while true do n = n + 1 end')", "/p/spin2.lua",
      sandbox.env("/p/spin2.lua"))
    local inner, loaded = fn()
    for _, f in ipairs({ inner, loaded }) do
      ok, err = pcall(mcp.run, { instructions = 2000000 }, f)
      assert.matches("instruction budget of 2000000 exceeded", err)
    end
  end)
end)

describe("sandbox.plain", function()
  it("copies a definition as plain data: metatables dropped, functions kept", function()
    local fn = function() end
    local ran = false
    local src = setmetatable({ name = "web", list = { 1, 2, { x = fn } } },
      { __index = function() ran = true end, __pairs = function() ran = true end })
    local copy = sandbox.plain(src, "/s/web.lua")
    assert.same({ name = "web", list = { 1, 2, { x = fn } } }, copy)
    assert.is_nil(getmetatable(copy))
    assert.equal(fn, copy.list[3].x)
    assert.is_false(ran)
  end)

  it("refuses a table that contains itself, naming the field", function()
    local d = { name = "loop", components = {} }
    d.components[1] = { name = "web", parent = d }
    local ok, err = pcall(sandbox.plain, d, "/s/loop.lua")
    assert.is_false(ok)
    assert.matches("^/s/loop.lua: components%[1%]%.parent: a table that contains itself", err)
  end)

  it("keeps a table that appears twice, as two copies", function()
    local env = { A = "1" }
    local copy = sandbox.plain({ a = env, b = env }, "/s/x.lua")
    assert.same({ a = { A = "1" }, b = { A = "1" } }, copy)
  end)

  it("refuses nesting deeper than 32 levels", function()
    local t = {}
    local cur = t
    for _ = 1, 40 do cur.next = {} cur = cur.next end
    local ok, err = pcall(sandbox.plain, t, "/s/deep.lua")
    assert.is_false(ok)
    assert.matches("nested deeper than 32 levels", err)
  end)
end)

describe("a policy's hooks (sandbox.hooks)", function()
  local saved

  before_each(function()
    saved = mcp.config
    mcp.config = { lua = { task_instructions = 2000000, task_timeout = 1,
      task_memory = 8 * 1024 * 1024 } }
  end)

  after_each(function()
    mcp.config = saved
  end)

  local function policy(text)
    local p = assert(load(text, "/srv/mcp/policies/p.lua"))
    return sandbox.hooks(p, "/srv/mcp/policies/p.lua")
  end

  it("run in a task of their own, named after the policy and the hook", function()
    local p = policy("return { deploy = function(ctx) return ctx.n * 2, mcp.now() > 0 end }")
    local a, b = mcp.run(function() return p.deploy({ n = 21 }) end)
    assert.equal(42, a)
    assert.is_true(b)
    local _, _, env = load("return true")
    local named = sandbox.hooks({ who = function() return mcp.task.current() end },
      "/srv/mcp/policies/p.lua")
    assert.is_table(env)
    -- mcp.task is not the policy's, but the agent's code can see the name:
    local id, name = mcp.run(function() return named.who() end)
    assert.is_number(id)
    assert.equal("policy p.who", name)
  end)

  it("may wait (their task is a task) and return what they return", function()
    local p = policy("return { slow = function() mcp.sleep(0.05) return 'rested', nil, 3 end }")
    local r = { mcp.run(function() return p.slow() end) }
    assert.same({ "rested", nil, 3 }, r)
  end)

  it("raise what the hook raised, unchanged", function()
    local p = policy("return { bad = function() error({ code = 'nope' }) end, "
      .. "worse = function() error('broken on purpose') end }")
    local err = mcp.run(function()
      local _, e = pcall(p.bad)
      return e
    end)
    assert.same({ code = "nope" }, err)
    err = mcp.run(function() return select(2, pcall(p.worse)) end)
    assert.matches("^/srv/mcp/policies/p%.lua:1: broken on purpose", err)
  end)

  it("end at a limit with an ordinary error naming the file, the hook and the limit: the "
      .. "caller goes on", function()
    local p = policy(table.concat({
      "local p = {}",
      "function p.spin() while true do end end",
      "function p.stubborn()",
      "  while true do pcall(function() while true do end end) end",
      "end",
      "function p.hoard() local t = {} while true do t[#t + 1] = ('x'):rep(1000) .. #t end end",
      "function p.oversleep() mcp.sleep(30) end",
      "return p" }, "\n"))
    local results = mcp.run({ name = "caller", instructions = 10000000 }, function()
      local out = {}
      for _, hook in ipairs({ "spin", "stubborn", "hoard", "oversleep" }) do
        local ok, err = pcall(p[hook])
        out[hook] = { ok, err }
      end
      out.after = "the caller went on"
      return out
    end)
    assert.equal("the caller went on", results.after)
    assert.same({ false, "/srv/mcp/policies/p.lua: spin: instruction budget of 2000000 "
      .. "exceeded ([lua] task_instructions)" }, results.spin)
    assert.same({ false, "/srv/mcp/policies/p.lua: stubborn: instruction budget of 2000000 "
      .. "exceeded ([lua] task_instructions)" }, results.stubborn)
    assert.is_false(results.hoard[1])
    assert.matches("^/srv/mcp/policies/p%.lua: hoard: ", results.hoard[2])
    assert.is_false(results.oversleep[1])
    assert.equal("/srv/mcp/policies/p.lua: oversleep: deadline of 1 s exceeded ([lua] "
      .. "task_timeout)", results.oversleep[2])
  end)

  it("are called directly outside a task", function()
    local p = policy("return { twice = function(x) return x * 2 end }")
    assert.equal(10, p.twice(5))
  end)

  it("keep the non-function fields of the policy, read without metamethods", function()
    local src = setmetatable({ timeout = "60s", deploy = function() end },
      { __index = function() error("a metamethod ran") end })
    local p = sandbox.hooks(src, "/p/x.lua")
    assert.equal("60s", p.timeout)
    assert.is_function(p.deploy)
    assert.is_nil(getmetatable(p))
  end)
end)

describe("sandbox.limit_text", function()
  it("names the setting behind each limit's message", function()
    assert.equal("instruction budget of 5 exceeded ([lua] task_instructions)",
      sandbox.limit_text("task x: instruction budget of 5 exceeded"))
    assert.equal("deadline of 2 s exceeded ([lua] task_timeout)",
      sandbox.limit_text("task x: deadline of 2 s exceeded"))
    assert.equal("memory cap of 10 bytes exceeded ([lua] task_memory)",
      sandbox.limit_text("task x: memory cap of 10 bytes exceeded"))
    assert.matches("memory cap of %d+ bytes exceeded %(%[lua%] task_memory%): an allocation "
      .. "failed", sandbox.limit_text("not enough memory"))
    assert.is_nil(sandbox.limit_text("attempt to call a nil value"))
  end)
end)
