-- mcp.exec.run: real child processes, driven by the real loop.
local mcp = require("mcp.core")
local sys = require("tests.bindings.ffi_sys")

local function run(opts)
  return mcp.run(function()
    return mcp.exec.run(opts)
  end)
end

-- The message of the error fn raises inside a task. It is caught inside the
-- task so that mcp.run returns normally: Debian's LuaJIT (2.1.0-beta3, 2022)
-- can crash on a later trace exit when a C function that resumed a coroutine
-- is left by an error (LuaJIT issue #1066, fixed upstream in 2023).
local function task_error(fn)
  return mcp.run(function()
    local ok, err = pcall(fn)
    assert(not ok, "expected an error")
    return tostring(err)
  end)
end

-- Whether pid runs (a zombie whose parent is gone does not count: the
-- container's init may be slow to reap it).
local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then
    return false
  end
  local state = f:read("*a"):match("^%d+ %b() (%a)")
  f:close()
  return state ~= "Z"
end

describe("mcp.exec.run", function()
  local dir

  before_each(function()
    dir = sys.sh("mktemp -d /tmp/mcp-exec.XXXXXX")
  end)

  after_each(function()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  describe("results", function()
    it("answers exit code 0 and what the program wrote", function()
      local r = assert(run{ cmd = { "echo", "hello", "world" } })
      assert.equal(0, r.exit_code)
      assert.equal("hello world\n", r.stdout)
      assert.equal("", r.stderr)
      assert.is_false(r.timed_out)
      assert.is_false(r.truncated)
      assert.is_nil(r.signal)
    end)

    it("answers a non-zero exit code as a result, not an error", function()
      local r = assert(run{ cmd = { "sh", "-c", "exit 7" } })
      assert.equal(7, r.exit_code)
    end)

    it("keeps stdout and stderr apart", function()
      local r = assert(run{ cmd = { "sh", "-c", "echo out; echo err >&2; echo out2" } })
      assert.equal("out\nout2\n", r.stdout)
      assert.equal("err\n", r.stderr)
    end)

    it("names the signal that killed the program, with no exit code", function()
      local r = assert(run{ cmd = { "sh", "-c", "kill -KILL $$" } })
      assert.equal("SIGKILL", r.signal)
      assert.is_nil(r.exit_code)
      r = assert(run{ cmd = { "sh", "-c", "kill -USR1 $$" } })
      assert.equal("SIGUSR1", r.signal)
    end)

    it("passes numbers in cmd as their text", function()
      local r = assert(run{ cmd = { "sh", "-c", "exit $0", 3 } })
      assert.equal(3, r.exit_code)
    end)
  end)

  describe("input and environment", function()
    it("writes stdin to the program and closes it", function()
      local r = assert(run{ cmd = { "cat" }, stdin = "line one\nline two" })
      assert.equal("line one\nline two", r.stdout)
    end)

    it("streams a large stdin and a large stdout at the same time", function()
      local big = string.rep("0123456789abcdef", 65536)    -- 1 MiB
      local r = assert(run{ cmd = { "cat" }, stdin = big, max_output = "2MiB" })
      assert.equal(#big, #r.stdout)
      assert.is_true(r.stdout == big)
    end)

    it("survives a program that exits without reading its stdin", function()
      local r = assert(run{ cmd = { "true" }, stdin = string.rep("x", 4 * 1048576) })
      assert.equal(0, r.exit_code)
    end)

    it("gives /dev/null as stdin when none is given", function()
      local r = assert(run{ cmd = { "cat" } })
      assert.equal("", r.stdout)
    end)

    it("adds env to the agent's environment, and false removes a variable", function()
      local r = assert(run{
        cmd = { "sh", "-c", 'echo "$MCP_TEST_A|${HOME-unset}|${PATH:+path}"' },
        env = { MCP_TEST_A = "a value", HOME = false },
      })
      assert.equal("a value|unset|path\n", r.stdout)
    end)

    it("runs in cwd", function()
      local r = assert(run{ cmd = { "pwd" }, cwd = dir })
      assert.equal(dir .. "\n", r.stdout)
    end)

    it("answers nil and an error naming cwd when it does not exist", function()
      local r, err = run{ cmd = { "pwd" }, cwd = dir .. "/missing" }
      assert.is_nil(r)
      assert.matches('cwd "' .. dir:gsub("%p", "%%%0") .. '/missing": no such file', err)
    end)
  end)

  describe("failures", function()
    it("answers nil and an error naming the program when it cannot be run", function()
      local r, err = run{ cmd = { "mcp-no-such-program", "x" } }
      assert.is_nil(r)
      assert.equal('exec.run: cannot run "mcp-no-such-program": no such file or directory', err)
      r, err = run{ cmd = { dir } }
      assert.is_nil(r)
      assert.matches('cannot run "' .. dir:gsub("%p", "%%%0") .. '": permission denied', err)
    end)

    it("refuses a command given as a string, pointing at the list form", function()
      local err = task_error(function() mcp.exec.run{ cmd = "ls -l /" } end)
      assert.matches("cmd must be a list of arguments, not a string", err, 1, true)
      assert.matches("no shell", err, 1, true)
      err = task_error(function() mcp.exec.run("ls -l /") end)
      assert.matches("there is no shell", err, 1, true)
    end)

    it("refuses unknown options, an empty cmd and non-string arguments", function()
      assert.matches('unknown option "timout"',
                     task_error(function() mcp.exec.run{ cmd = { "true" }, timout = 1 } end))
      assert.matches("cmd is empty", task_error(function() mcp.exec.run{ cmd = {} } end))
      assert.matches("cmd%[2%] must be a string",
                     task_error(function() mcp.exec.run{ cmd = { "echo", {} } } end))
      assert.matches("env key", task_error(function()
        mcp.exec.run{ cmd = { "true" }, env = { ["A=B"] = "x" } }
      end))
    end)

    it("can only be called inside a task", function()
      assert.has_error(function() mcp.exec.run{ cmd = { "true" } } end)
    end)
  end)

  describe("deadlines", function()
    it("stops a program past its timeout with SIGTERM, within the deadline", function()
      local t0 = mcp.timer.monotime()
      local r = assert(run{ cmd = { "sleep", "100" }, timeout = 0.3 })
      local took = mcp.timer.monotime() - t0
      assert.is_true(r.timed_out)
      assert.equal("SIGTERM", r.signal)
      assert.is_true(took >= 0.29 and took < 1.0, "took " .. took)
    end)

    it("sends SIGKILL 2 s after SIGTERM to a program that ignores it", function()
      local t0 = mcp.timer.monotime()
      local r = assert(run{ cmd = { "sh", "-c", "trap '' TERM; echo ready; sleep 100; :" },
                            timeout = 0.2 })
      local took = mcp.timer.monotime() - t0
      assert.is_true(r.timed_out)
      assert.equal("SIGKILL", r.signal)
      assert.equal("ready\n", r.stdout)
      assert.is_true(took >= 2.1 and took < 3.5, "took " .. took)
    end)

    it("kills the program's whole process group", function()
      local pidfile = dir .. "/pid"
      local r = assert(run{
        cmd = { "sh", "-c", "sleep 100 & echo $! > " .. pidfile .. "; wait" },
        timeout = 0.3,
      })
      assert.is_true(r.timed_out)
      local pid = assert(io.open(pidfile)):read("*l")
      mcp.run(function() mcp.sleep(0.1) end)
      assert.is_false(alive(pid))
    end)

    it("does not wait past the deadline for a grandchild that holds the output open", function()
      local t0 = mcp.timer.monotime()
      local r = assert(run{ cmd = { "sh", "-c", "sleep 100 & echo started" }, timeout = 0.4 })
      local took = mcp.timer.monotime() - t0
      assert.equal(0, r.exit_code)
      assert.equal("started\n", r.stdout)
      assert.is_false(r.timed_out)     -- the program itself finished in time
      assert.is_true(took < 1.5, "took " .. took)
    end)

    it("kills the child when its task is aborted", function()
      local pidfile = dir .. "/pid"
      local finished = false
      mcp.run(function()
        mcp.spawn({ name = "doomed", timeout = 0.3 }, function()
          mcp.exec.run{ cmd = { "sh", "-c", "echo $$ > " .. pidfile .. "; exec sleep 100" } }
          finished = true
        end)
        mcp.sleep(0.5)      -- the task's deadline passes; the loop reaps the child
      end)
      assert.is_false(finished)
      local pid = assert(io.open(pidfile)):read("*l")
      assert.is_false(alive(pid))
    end)

    it("never blocks the loop: a timer keeps firing while a program runs", function()
      local ticks = 0
      mcp.run(function()
        local done = false
        mcp.spawn(function()
          while not done do
            mcp.sleep(0.05)
            ticks = ticks + 1
          end
        end)
        local r = assert(mcp.exec.run{ cmd = { "sleep", "0.5" } })
        done = true
        assert.equal(0, r.exit_code)
        mcp.sleep(0.06)
      end)
      assert.is_true(ticks >= 7, "ticks " .. ticks)
    end)

    it("runs several programs at once", function()
      local t0 = mcp.timer.monotime()
      local results = {}
      mcp.run(function()
        local left = 5
        for i = 1, 5 do
          mcp.spawn(function()
            results[i] = mcp.exec.run{ cmd = { "sh", "-c", "sleep 0.3; echo " .. i } }
            left = left - 1
          end)
        end
        while left > 0 do mcp.sleep(0.02) end
      end)
      for i = 1, 5 do
        assert.equal(i .. "\n", results[i].stdout)
      end
      assert.is_true(mcp.timer.monotime() - t0 < 1.2)
    end)
  end)

  describe("output limits", function()
    it("truncates output past max_output with a marker", function()
      local r = assert(run{ cmd = { "head", "-c", "100000", "/dev/zero" }, max_output = 1000 })
      assert.is_true(r.truncated)
      assert.equal(string.rep("\0", 1000), r.stdout:sub(1, 1000))
      assert.matches("%[mcp%.exec: output truncated at 1000 bytes, 99000 more bytes dropped%]",
                     r.stdout:sub(1001))
      assert.equal(0, r.exit_code)      -- the program was not stopped: it wrote everything
    end)

    it("caps each stream at 1 MiB by default", function()
      local r = assert(run{ cmd = { "sh", "-c", "head -c 3000000 /dev/zero >&2" } })
      assert.is_true(r.truncated)
      assert.equal("", r.stdout)
      assert.is_true(#r.stderr > 1048576 and #r.stderr < 1048576 + 200)
    end)

    it("takes max_output as a size string", function()
      local r = assert(run{ cmd = { "head", "-c", "5000", "/dev/zero" }, max_output = "4KiB" })
      assert.is_true(r.truncated)
      assert.equal(string.rep("\0", 4096), r.stdout:sub(1, 4096))
    end)
  end)
end)
