-- mcp.net: ports and TCP checks against real sockets on the loopback.
local mcp = require("mcp.core")
local sys = require("tests.bindings.ffi_sys")

describe("mcp.net", function()
  local held = {}

  local function hold(ip, port, backlog)
    local fd, p = sys.listen_tcp(ip, port, backlog)
    held[#held + 1] = fd
    return p
  end

  after_each(function()
    for _, fd in ipairs(held) do
      sys.close(fd)
    end
    held = {}
  end)

  describe("port_free", function()
    it("is true for a port nobody holds", function()
      local port = sys.free_port()
      assert.is_true(mcp.net.port_free(port))
      assert.is_true(mcp.net.port_free(port, "127.0.0.1"))
    end)

    it("is false, with the reason, for a port held on 127.0.0.1", function()
      local port = hold("127.0.0.1", 0)
      local free, why = mcp.net.port_free(port)
      assert.is_false(free)
      assert.equal("127.0.0.1 port " .. port .. ": address already in use", why)
      assert.is_false((mcp.net.port_free(port, "127.0.0.1")))
    end)

    it("is false for a port held on every address", function()
      local port = hold("0.0.0.0", 0)
      local free, why = mcp.net.port_free(port)
      assert.is_false(free)
      assert.matches("address already in use", why)
    end)

    it("checks only the given host when there is one", function()
      local port = hold("127.0.0.2", 0)
      assert.is_true(mcp.net.port_free(port, "127.0.0.1"))
      assert.is_false((mcp.net.port_free(port, "127.0.0.2")))
      assert.is_false((mcp.net.port_free(port)))      -- 0.0.0.0 overlaps 127.0.0.2
    end)

    it("refuses a port out of range or a host that is not an IP", function()
      assert.has_error(function() mcp.net.port_free(0) end)
      assert.has_error(function() mcp.net.port_free(65536) end)
      assert.has_error(function() mcp.net.port_free(80.5) end)
      assert.has_error(function() mcp.net.port_free(8080, "localhost") end,
                       'mcp.net.port_free: host must be an IP address, got "localhost"')
    end)
  end)

  describe("tcp_check", function()
    it("is true for a port that accepts connections", function()
      local port = hold("127.0.0.1", 0)
      assert.same({ true }, { mcp.run(function() return mcp.net.tcp_check("127.0.0.1", port) end) })
    end)

    it("resolves a host name", function()
      local port = hold("127.0.0.1", 0)
      assert.is_true(mcp.run(function() return mcp.net.tcp_check("localhost", port) end))
    end)

    it("answers nil and the reason for a closed port", function()
      local port = sys.free_port()
      local ok, err = mcp.run(function() return mcp.net.tcp_check("127.0.0.1", port) end)
      assert.is_nil(ok)
      assert.equal("tcp_check 127.0.0.1 port " .. port .. ": connection refused", err)
    end)

    it("answers nil after its timeout when nothing answers", function()
      -- A listener whose accept queue is full drops further SYNs unanswered.
      local port = hold("127.0.0.1", 0, 0)
      local fds = {}
      for i = 1, 3 do
        fds[i] = sys.connect_nb(port)
      end
      mcp.run(function() mcp.sleep(0.05) end)
      local t0 = mcp.timer.monotime()
      local ok, err = mcp.run(function()
        return mcp.net.tcp_check("127.0.0.1", port, { timeout = "300ms" })
      end)
      local took = mcp.timer.monotime() - t0
      for _, fd in ipairs(fds) do
        sys.close(fd)
      end
      assert.is_nil(ok)
      assert.equal("tcp_check 127.0.0.1 port " .. port .. ": no answer within 0.3 s", err)
      assert.is_true(took >= 0.29 and took < 1, "took " .. took)
    end)

    it("answers nil for a name that does not resolve", function()
      local ok, err = mcp.run(function()
        return mcp.net.tcp_check("no-such-host.invalid", 80, { timeout = 5 })
      end)
      assert.is_nil(ok)
      assert.matches("^tcp_check no%-such%-host%.invalid port 80: cannot resolve the name", err)
    end)

    it("can only be called inside a task, with known options", function()
      assert.has_error(function() mcp.net.tcp_check("127.0.0.1", 80) end)
      local ok, err = mcp.run(function()
        return pcall(mcp.net.tcp_check, "127.0.0.1", 80, { timout = 1 })
      end)
      assert.is_false(ok)
      assert.matches('unknown option "timout"', err)
    end)

    it("lets other tasks run while it waits", function()
      local port = hold("127.0.0.1", 0, 0)
      local fds = {}
      for i = 1, 3 do
        fds[i] = sys.connect_nb(port)
      end
      local ticks = 0
      mcp.run(function()
        mcp.spawn(function()
          for _ = 1, 4 do
            mcp.sleep(0.05)
            ticks = ticks + 1
          end
        end)
        mcp.net.tcp_check("127.0.0.1", port, { timeout = 0.3 })
      end)
      for _, fd in ipairs(fds) do
        sys.close(fd)
      end
      assert.equal(4, ticks)
    end)
  end)

  describe("hostname", function()
    it("is this host's name", function()
      assert.equal(sys.sh("hostname"), mcp.net.hostname())
    end)
  end)
end)
