-- mcp.systemd: sd_notify datagrams, received by a socket standing in for systemd.
local mcp = require("mcp.core")
local sys = require("tests.bindings.ffi_sys")

describe("mcp.systemd", function()
  local fd, name, tmp

  before_each(function()
    tmp = sys.sh("mktemp -d /tmp/mcp-sdnotify.XXXXXX")
    name = "@mcp-test-notify-" .. sys.getpid() .. "-" .. tostring(math.random(1e9))
    fd = sys.listen_dgram(name)
    sys.setenv("NOTIFY_SOCKET", name)
  end)

  after_each(function()
    mcp.systemd.watchdog_stop()
    sys.close(fd)
    sys.setenv("NOTIFY_SOCKET", nil)
    sys.setenv("WATCHDOG_USEC", nil)
    sys.setenv("WATCHDOG_PID", nil)
    os.execute("rm -rf '" .. tmp .. "'")
  end)

  describe("notify", function()
    it("sends READY=1 to an abstract-namespace socket", function()
      assert.is_true(mcp.systemd.notify("READY=1"))
      assert.same({ "READY=1" }, sys.recv_all(fd))
    end)

    it("sends several lines in one datagram", function()
      assert.is_true(mcp.systemd.notify("STATUS=deploying mcq\nRELOADING=1"))
      assert.same({ "STATUS=deploying mcq\nRELOADING=1" }, sys.recv_all(fd))
    end)

    it("sends to a socket named by a path", function()
      local path = tmp .. "/notify.sock"
      local pfd = sys.listen_dgram(path)
      sys.setenv("NOTIFY_SOCKET", path)
      assert.is_true(mcp.systemd.notify("READY=1"))
      assert.same({ "READY=1" }, sys.recv_all(pfd))
      sys.close(pfd)
    end)

    it("answers false when the agent was not started by systemd", function()
      sys.setenv("NOTIFY_SOCKET", nil)
      assert.same({ false, "not run by systemd (NOTIFY_SOCKET is not set)" },
                  { mcp.systemd.notify("READY=1") })
    end)

    it("answers false with the reason when nobody listens", function()
      sys.setenv("NOTIFY_SOCKET", "@mcp-test-nobody-" .. sys.getpid())
      local ok, why = mcp.systemd.notify("READY=1")
      assert.is_false(ok)
      assert.equal("NOTIFY_SOCKET: connection refused", why)
    end)

    it("refuses an empty message", function()
      assert.has_error(function() mcp.systemd.notify("") end)
    end)

    it("keeps the notify socket from child processes", function()
      local r = mcp.run(function()
        return mcp.exec.run{ cmd = { "sh", "-c", 'echo "${NOTIFY_SOCKET-unset}"' } }
      end)
      assert.equal("unset\n", r.stdout)
    end)
  end)

  describe("watchdog", function()
    it("pings WATCHDOG=1 at half of WATCHDOG_USEC", function()
      sys.setenv("WATCHDOG_USEC", "200000")
      sys.setenv("WATCHDOG_PID", tostring(sys.getpid()))
      assert.equal(0.1, mcp.systemd.watchdog_start())
      local at = {}
      mcp.run(function()
        local t0 = mcp.timer.monotime()
        while mcp.timer.monotime() - t0 < 0.55 do
          for _, msg in ipairs(sys.recv_all(fd)) do
            assert.equal("WATCHDOG=1", msg)
            at[#at + 1] = mcp.timer.monotime() - t0
          end
          mcp.sleep(0.005)
        end
      end)
      -- one at once, then every 100 ms
      assert.is_true(#at >= 5 and #at <= 7, #at .. " pings")
      assert.is_true(at[1] < 0.02)
      for i = 3, #at do
        local gap = at[i] - at[i - 1]
        assert.is_true(gap > 0.07 and gap < 0.14, "gap " .. gap)
      end
    end)

    it("stops pinging when stopped", function()
      sys.setenv("WATCHDOG_USEC", "100000")
      assert.equal(0.05, mcp.systemd.watchdog_start())
      mcp.systemd.watchdog_stop()
      sys.recv_all(fd)
      mcp.run(function() mcp.sleep(0.2) end)
      assert.same({}, sys.recv_all(fd))
    end)

    it("does not ping for another process, nor when no watchdog is asked for", function()
      assert.same({ false, "WATCHDOG_USEC is not set" }, { mcp.systemd.watchdog_start() })
      sys.setenv("WATCHDOG_USEC", "200000")
      sys.setenv("WATCHDOG_PID", "1")
      assert.same({ false, "WATCHDOG_PID names another process" },
                  { mcp.systemd.watchdog_start() })
      sys.setenv("WATCHDOG_PID", nil)
      sys.setenv("WATCHDOG_USEC", "soon")
      assert.same({ false, "WATCHDOG_USEC is not a positive number" },
                  { mcp.systemd.watchdog_start() })
      assert.same({}, sys.recv_all(fd))
    end)
  end)
end)
