-- mcp.watch: real inotify watches on temporary directories, delivering to a
-- stand-in mcp.agent.on_change.
local mcp = require("mcp.core")
local sys = require("tests.bindings.ffi_sys")

local function write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data or "x")
  f:close()
end

describe("mcp.watch", function()
  local tmp, dir, calls, saved_agent

  before_each(function()
    tmp = sys.sh("mktemp -d /tmp/mcp-watch.XXXXXX")
    dir = tmp .. "/services"
    os.execute("mkdir " .. dir)
    calls = {}
    saved_agent = package.loaded["mcp.agent"]
    package.loaded["mcp.agent"] = {
      on_change = function(paths)
        calls[#calls + 1] = { at = mcp.timer.monotime(), paths = paths }
      end,
    }
  end)

  after_each(function()
    for _, w in ipairs(mcp.watch.list()) do
      mcp.watch.remove(w.path)
    end
    mcp.watch.debounce(0.2)
    package.loaded["mcp.agent"] = saved_agent
    os.execute("rm -rf '" .. tmp .. "'")
  end)

  -- Runs fn in a task, waits until a call came (at most `limit` s), then
  -- `settle` s more for calls that should not come.
  local function after(fn, limit, settle)
    mcp.run(function()
      fn()
      local t0 = mcp.timer.monotime()
      while #calls == 0 and mcp.timer.monotime() - t0 < (limit or 1.5) do
        mcp.sleep(0.01)
      end
      mcp.sleep(settle or 0.4)
    end)
  end

  it("delivers a write as one debounced call within a second", function()
    assert.same({ true, "watching" }, { mcp.watch.add(dir) })
    local wrote
    after(function()
      write(dir .. "/mcq.lua", "return {}")
      wrote = mcp.timer.monotime()
    end)
    assert.equal(1, #calls)
    assert.same({ dir .. "/mcq.lua" }, calls[1].paths)
    local delay = calls[1].at - wrote
    assert.is_true(delay >= 0.19 and delay < 1, "delay " .. delay)
  end)

  it("delivers a file renamed into the directory", function()
    mcp.watch.add(dir)
    write(tmp .. "/staged.toml")
    after(function()
      assert(os.rename(tmp .. "/staged.toml", dir .. "/mcq.toml"))
    end)
    assert.equal(1, #calls)
    assert.same({ dir .. "/mcq.toml" }, calls[1].paths)
  end)

  it("delivers an editor's save by rename (vim) as a change of the file", function()
    write(dir .. "/mcq.toml", "old")
    mcp.watch.add(dir)
    after(function()
      assert(os.rename(dir .. "/mcq.toml", dir .. "/mcq.toml~"))
      write(dir .. "/mcq.toml", "new")
      os.remove(dir .. "/mcq.toml~")
    end)
    assert.equal(1, #calls)
    assert.same({ dir .. "/mcq.toml" }, calls[1].paths)
  end)

  it("folds a burst of 50 writes into one call", function()
    mcp.watch.add(dir)
    after(function()
      for i = 1, 50 do
        write(string.format("%s/svc%02d.lua", dir, i))
        mcp.sleep(0.004)
      end
    end)
    assert.equal(1, #calls)
    assert.equal(50, #calls[1].paths)
    assert.equal(dir .. "/svc01.lua", calls[1].paths[1])      -- sorted
    assert.equal(dir .. "/svc50.lua", calls[1].paths[50])
  end)

  it("ignores editors' scratch files and hidden files", function()
    mcp.watch.add(dir)
    after(function()
      write(dir .. "/.mcq.lua.swp")
      write(dir .. "/mcq.lua~")
      write(dir .. "/4913")
      write(dir .. "/#mcq.lua#")
      write(dir .. "/.mcq.lua.1a2b3c4d.tmp")
    end, 0.6, 0)
    assert.equal(0, #calls)
  end)

  it("watches subdirectories, existing and new, and reports files made with them", function()
    os.execute("mkdir -p " .. dir .. "/a/b")
    mcp.watch.add(dir)
    assert.equal(3, mcp.watch.list()[1].dirs)
    after(function()
      write(dir .. "/a/b/deep.lua")
    end)
    assert.same({ dir .. "/a/b/deep.lua" }, calls[1].paths)
    calls = {}
    after(function()
      os.execute("mkdir -p " .. dir .. "/new/inner && echo x > " .. dir .. "/new/inner/f.lua")
    end)
    assert.equal(1, #calls)
    local seen = {}
    for _, p in ipairs(calls[1].paths) do seen[p] = true end
    assert.is_true(seen[dir .. "/new/inner/f.lua"])
    assert.equal(5, mcp.watch.list()[1].dirs)
    calls = {}
    after(function()
      write(dir .. "/new/inner/g.lua")
    end)
    assert.same({ dir .. "/new/inner/g.lua" }, calls[1].paths)
  end)

  it("waits for a directory that does not exist yet, and watches it once it appears", function()
    local later = tmp .. "/later"
    assert.same({ true, "waiting" }, { mcp.watch.add(later) })
    assert.same({ { path = later, watching = false, dirs = 0 } }, mcp.watch.list())
    after(function()
      os.execute("mkdir " .. later .. " && echo x > " .. later .. "/first.lua")
    end, 3)
    assert.equal(1, #calls)
    assert.is_true(mcp.watch.list()[1].watching)
    calls = {}
    after(function()
      write(later .. "/second.lua")
    end)
    assert.same({ later .. "/second.lua" }, calls[1].paths)
  end)

  it("reports a watched directory that is removed, and watches it again when it returns", function()
    mcp.watch.add(dir)
    after(function()
      os.execute("rm -rf " .. dir)
    end)
    assert.equal(1, #calls)
    assert.is_false(mcp.watch.list()[1].watching)
    calls = {}
    after(function()
      os.execute("mkdir " .. dir)
    end, 3)
    assert.equal(1, #calls)
    assert.is_true(mcp.watch.list()[1].watching)
  end)

  it("stops delivering once a directory is removed from the watch", function()
    mcp.watch.add(dir)
    assert.is_true(mcp.watch.remove(dir .. "/"))
    assert.is_false(mcp.watch.remove(dir))
    assert.same({}, mcp.watch.list())
    after(function()
      write(dir .. "/x.lua")
    end, 0.5, 0)
    assert.equal(0, #calls)
  end)

  it("refuses a path that is not a directory", function()
    write(tmp .. "/file")
    local ok, err = mcp.watch.add(tmp .. "/file")
    assert.is_nil(ok)
    assert.equal("watch.add: " .. tmp .. "/file: not a directory", err)
  end)

  it("does nothing when the agent has no on_change", function()
    package.loaded["mcp.agent"] = {}
    mcp.watch.add(dir)
    after(function()
      write(dir .. "/x.lua")
    end, 0.5, 0)
    assert.equal(0, #calls)
  end)

  it("holds changes made while on_change runs, then delivers them in one call", function()
    package.loaded["mcp.agent"].on_change = function(paths)
      calls[#calls + 1] = { at = mcp.timer.monotime(), paths = paths }
      mcp.sleep(0.5)          -- a slow reload
      calls[#calls].done = mcp.timer.monotime()
    end
    mcp.watch.add(dir)
    mcp.run(function()
      write(dir .. "/a.lua")
      while #calls == 0 do mcp.sleep(0.01) end
      write(dir .. "/b.lua")
      mcp.sleep(0.05)
      write(dir .. "/c.lua")
      mcp.sleep(1.2)
    end)
    assert.equal(2, #calls)
    assert.same({ dir .. "/a.lua" }, calls[1].paths)
    assert.same({ dir .. "/b.lua", dir .. "/c.lua" }, calls[2].paths)
    assert.is_true(calls[2].at >= calls[1].done)
  end)

  it("takes a debounce delay", function()
    assert.equal(0.2, mcp.watch.debounce())
    assert.equal(0.05, mcp.watch.debounce("50ms"))
    mcp.watch.add(dir)
    local wrote
    after(function()
      write(dir .. "/x.lua")
      wrote = mcp.timer.monotime()
    end)
    assert.is_true(calls[1].at - wrote < 0.15)
    assert.has_error(function() mcp.watch.debounce(0) end)
  end)
end)
