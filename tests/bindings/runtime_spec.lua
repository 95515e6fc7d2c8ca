-- The task runtime through the C module: the limits of mcp.spawn / mcp.run
-- ({instructions, timeout, memory}), errors and their tracebacks, pcall
-- against an abort, and tasks that wait beside each other.
--
-- LuaJIT's count hook does not fire inside compiled traces, so every
-- function here that loops runs with the JIT off, as sandboxed code does.
local mcp = require("mcp.core")

local function interpreted(fn)
  jit.off(fn, true)
  return fn
end

local spin = interpreted(function()
  local n = 0
  while true do n = n + 1 end
end)

-- mcp.run's error, or nil when fn returned.
local function run_error(opts, fn, ...)
  local ok, err = pcall(mcp.run, opts, fn, ...)
  if ok then return nil end
  return tostring(err)
end

local function elapsed(fn)
  local t0 = mcp.timer.monotime()
  local a, b = fn()
  return mcp.timer.monotime() - t0, a, b
end

describe("a task's instruction budget", function()
  it("ends a task that loops, with an error naming the task and the budget", function()
    local err = run_error({ name = "spinner", instructions = 1000000 }, spin)
    assert.matches("^task spinner: instruction budget of 1000000 exceeded", err)
  end)

  it("lets a task under its budget finish", function()
    local sum = mcp.run({ instructions = 1000000 }, interpreted(function()
      local s = 0
      for i = 1, 10000 do s = s + i end
      return s
    end))
    assert.equal(50005000, sum)
  end)

  it("counts per task: the budget of one is not spent by another", function()
    local work = interpreted(function()
      local s = 0
      for i = 1, 60000 do s = s + i end
      return s
    end)
    -- Each uses about 60% of its budget; together they would exceed one.
    for _ = 1, 3 do
      assert.equal(1800030000, mcp.run({ instructions = 200000 }, work))
    end
  end)

  it("cannot be caught by pcall inside the task: the hook raises again", function()
    local reached = false
    local err = run_error({ name = "catcher", instructions = 500000 }, interpreted(function()
      for _ = 1, 100 do
        local ok = pcall(spin)
        assert(not ok)
      end
      reached = true
      return "survived"
    end))
    assert.matches("task catcher: instruction budget of 500000 exceeded", err)
    assert.is_false(reached)
  end)

  it("cannot be caught by xpcall, a coroutine of the task's own, or error handlers",
      function()
    local handled = 0
    local err = run_error({ name = "evader", instructions = 500000 }, interpreted(function()
      for _ = 1, 10 do
        xpcall(spin, function(e) handled = handled + 1 return e end)
        local co = coroutine.create(spin)
        coroutine.resume(co)
        pcall(coroutine.wrap(spin))
      end
      return "survived"
    end))
    assert.matches("task evader: instruction budget of 500000 exceeded", err)
  end)

  it("ends only the task past it: the one that spawned it goes on", function()
    local result = mcp.run({ name = "parent" }, function()
      local id = mcp.spawn({ name = "child", instructions = 100000 }, spin)
      for _ = 1, 100 do
        local alive = false
        for _, t in ipairs(mcp.task.list()) do
          if t.id == id then alive = true end
        end
        if not alive then return "the parent goes on" end
        mcp.sleep(0.005)
      end
      return "the child never ended"
    end)
    assert.equal("the parent goes on", result)
  end)
end)

describe("a task's deadline", function()
  it("ends a task that runs past it, naming the deadline", function()
    local took, err = elapsed(function()
      return run_error({ name = "runner", timeout = 0.2 }, spin)
    end)
    assert.matches("^task runner: deadline of 0.2 s exceeded", err)
    assert.is_true(took >= 0.19 and took < 1, "ended after " .. took)
  end)

  it("ends a task that waits past it in mcp.sleep, at the deadline", function()
    local took, err = elapsed(function()
      return run_error({ name = "sleeper", timeout = "300ms" }, function()
        mcp.sleep(10)
        return "woke up"
      end)
    end)
    assert.matches("^task sleeper: deadline of 0.3 s exceeded", err)
    assert.is_true(took >= 0.29 and took < 1, "ended after " .. took)
  end)

  it("counts waits: many short sleeps add up to the deadline", function()
    local naps = 0
    local err = run_error({ name = "napper", timeout = 0.25 }, function()
      while true do
        mcp.sleep(0.02)
        naps = naps + 1
      end
    end)
    assert.matches("task napper: deadline of 0.25 s exceeded", err)
    assert.is_true(naps >= 5 and naps <= 13, "naps " .. naps)
  end)

  it("accepts durations as text and rejects unknown options", function()
    assert.equal("done", mcp.run({ timeout = "2s" }, function() return "done" end))
    local ok, err = pcall(mcp.spawn, { timeot = 1 }, function() end)
    assert.is_false(ok)
    assert.matches('mcp.spawn: unknown option "timeot"', err)
    ok, err = pcall(mcp.run, { timeout = "soon" }, function() end)
    assert.is_false(ok)
    assert.matches("timeout", err)
  end)
end)

describe("a task's memory cap", function()
  -- The cap is measured by the runtime's counting allocator; in this Lua C
  -- module the state is busted's, so runtime_attach must put that allocator
  -- in front of the state's own (lua_getallocf / lua_setallocf).
  local WHY = "the task was not stopped: is the counting allocator installed on an "
    .. "attached state (core/runtime.c, runtime_attach)?"

  it("ends a task that keeps allocating, naming the cap", function()
    local err = run_error({ name = "hoarder", memory = 2000000 }, interpreted(function()
      local hoard = {}
      for i = 1, 1e7 do hoard[i] = { i } end
      return #hoard
    end))
    assert.is_string(err, WHY)
    assert.matches("task hoarder: memory cap of 2000000 bytes exceeded", err)
  end)

  it("refuses one allocation far past the cap before it happens", function()
    local err = run_error({ name = "glutton", memory = 1000000 }, function()
      local s = ("x"):rep(64 * 1024 * 1024)
      return #s
    end)
    assert.is_string(err, WHY)
    assert.matches("not enough memory", err)
  end)

  it("lets a task within its cap allocate and free as it goes", function()
    local n = mcp.run({ memory = 4000000 }, interpreted(function()
      local total = 0
      for _ = 1, 200 do
        local t = {}
        for i = 1, 1000 do t[i] = i end
        total = total + #t
      end
      return total
    end))
    assert.equal(200000, n)
  end)
end)

describe("a task's error", function()
  it("says where it was raised, with the traceback of the task", function()
    local err = run_error({ name = "failing" }, function()
      local function inner() error("the disk is full") end
      local function outer() inner() end
      outer()
    end)
    assert.matches("runtime_spec.lua:%d+: the disk is full", err)
    assert.matches("stack traceback:", err, 1, true)
    assert.matches("in function 'inner'", err, 1, true)
    assert.matches("in function 'outer'", err, 1, true)
  end)

  it("ends that task only; the next one runs", function()
    assert.is_truthy(run_error({}, function() error("first") end))
    assert.equal("second", mcp.run(function() return "second" end))
  end)

  it("can be a non-string value, shown by its __tostring", function()
    local err = run_error({}, function()
      error(setmetatable({}, { __tostring = function() return "a table that explains" end }))
    end)
    assert.matches("a table that explains", err)
  end)
end)

describe("tasks that wait", function()
  it("do not block each other: a short sleep ends before a long one", function()
    local order = {}
    local t0 = mcp.timer.monotime()
    mcp.run(function()
      mcp.spawn({ name = "long" }, function()
        mcp.sleep(0.5)
        order[#order + 1] = { "long", mcp.timer.monotime() - t0 }
      end)
      mcp.spawn({ name = "short" }, function()
        mcp.sleep(0.05)
        order[#order + 1] = { "short", mcp.timer.monotime() - t0 }
      end)
      mcp.sleep(0.7)
    end)
    assert.equal("short", order[1][1])
    assert.is_true(order[1][2] < 0.3, "the short one woke at " .. order[1][2])
    assert.equal("long", order[2][1])
  end)

  it("leave the timers of others on time while one sleeps long", function()
    local ticks = {}
    local t0 = mcp.timer.monotime()
    mcp.run(function()
      mcp.spawn({ name = "sleeper" }, function() mcp.sleep(0.6) end)
      for _ = 1, 5 do
        mcp.sleep(0.05)
        ticks[#ticks + 1] = mcp.timer.monotime() - t0
      end
    end)
    assert.equal(5, #ticks)
    assert.is_true(ticks[5] < 0.45, "five ticks of 50 ms took " .. ticks[5])
  end)

  it("can be cancelled while they wait, with the reason", function()
    local err = run_error({ name = "waiting" }, function()
      local me = mcp.task.current()
      mcp.spawn(function()
        mcp.sleep(0.05)
        mcp.task.cancel(me, "no longer needed")
      end)
      mcp.sleep(5)
    end)
    assert.matches("task waiting: no longer needed", err)
  end)

  it("may not wait outside a task, or in a coroutine of their own", function()
    local ok, err = pcall(mcp.sleep, 0.01)
    assert.is_false(ok)
    assert.matches("mcp.sleep: can only wait inside a task", err)
    err = run_error({}, function()
      local co = coroutine.create(function() mcp.sleep(0.01) end)
      local rok, rerr = coroutine.resume(co)
      assert(not rok)
      error(rerr, 0)
    end)
    assert.matches("can only wait inside a task", err)
  end)

  it("refuse mcp.run inside a task", function()
    local err = run_error({}, function() mcp.run(function() end) end)
    assert.matches("mcp.run: cannot be called from inside a task", err)
  end)
end)
