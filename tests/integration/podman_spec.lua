-- mcp.podman and mcp.http against a real Podman 4.3.1: one private Podman
-- environment for the whole file (tests/env/podman-env.sh), started in
-- setup and thrown away in teardown.
local mcp = require("mcp.core")
local podman_env = require("tests.env.podman_env")

local podman, http = mcp.podman, mcp.http

-- Under `make check` LD_PRELOAD carries ASan into luajit; the Podman service
-- and the scripts this spec starts must not inherit it (Podman started with
-- it never answers). luajit has what it needs by now.
if os.getenv("LD_PRELOAD") then
  local ffi = require("ffi")
  pcall(ffi.cdef, "int unsetenv(const char *name);")
  ffi.C.unsetenv("LD_PRELOAD")
end

-- Runs fn as a task with a deadline, so that a hung call fails the test
-- instead of the suite. The empty run first turns the loop once: the
-- runtime arms a task's deadline from libuv's cached time, which is stale
-- after the loop sat idle (other spec files, blocking popen), and the
-- deadline would then fire before the task starts.
local function run(fn, secs)
  mcp.run(function() end)
  return mcp.run({ name = "spec", timeout = secs or 60 }, fn)
end

local function now()
  return mcp.timer.monotime()
end

-- A TCP port nobody listens on now.
local function free_port()
  local out = podman_env.run("python3 -c 'import socket; s = socket.socket(); " ..
                             "s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'")
  return assert(tonumber(out:match("%d+")), "no free port: " .. out)
end

-- Polls fn() every 100 ms until it returns a true value or secs pass.
local function eventually(secs, fn)
  local deadline = now() + secs
  while true do
    local v = fn()
    if v or now() > deadline then return v end
    mcp.sleep(0.1)
  end
end

describe("mcp.podman against a real Podman", function()
  local env, tmp

  setup(function()
    env = podman_env.start()
    tmp = env.dir .. "/tmp/spec"
    os.execute("mkdir -p '" .. tmp .. "'")
    podman.connect(env.socket, { timeout = 10 })
  end)

  teardown(function()
    if env then env:stop() end
  end)

  it("answers ping, info and version", function()
    run(function()
      assert.is_true(podman.ping())
      local info = assert(podman.info())
      assert.is_string(info.host.arch)
      local v = assert(podman.version())
      assert.equals("4.3.1", v.Version)
    end)
  end)

  it("runs a container through its whole life: create, start, serve, log, stop, remove",
     function()
    local port = free_port()
    local www = tmp .. "/www"
    os.execute("mkdir -p '" .. www .. "' && echo 'served from the host' > '" .. www ..
               "/index.html'")
    run(function()
      local created, err = podman.create({
        name = "life-web",
        image = env.image1,
        command = { "/bin/sh", "-c",
                    "echo \"greeting=$GREETING\"; echo oops >&2; " ..
                    "exec httpd -f -p 8080 -h /srv/www" },
        env = { GREETING = "hello" },
        labels = { ["mcp.service"] = "life", ["mcp.managed"] = "true" },
        portmappings = { { container_port = 8080, host_port = port, host_ip = "127.0.0.1" } },
        mounts = { { source = www, destination = "/srv/www", options = { "ro" } } },
        init = true,
        stop_timeout = 2,
      })
      assert.is_nil(err)
      assert.is_string(created.Id)

      local c = assert(podman.inspect("life-web"))
      assert.equals("life", c.Config.Labels["mcp.service"])
      assert.equals("created", c.State.Status)
      local has_env = false
      for _, kv in ipairs(c.Config.Env) do has_env = has_env or kv == "GREETING=hello" end
      assert.is_true(has_env)

      assert.is_true(podman.start("life-web"))
      assert.is_true(podman.start("life-web"))       -- already running: still true

      local url = ("http://127.0.0.1:%d/"):format(port)
      local r = eventually(15, function()
        local res = http.get(url, { timeout = 1 })
        return res and res.status == 200 and res
      end)
      assert.truthy(r, "no HTTP answer on the published port " .. port)
      assert.equals("served from the host\n", r.body)

      local listed = assert(podman.list({ filters = { label = { "mcp.service=life" } } }))
      assert.equals(1, #listed)
      assert.equals("life-web", listed[1].Names[1])

      local lines = assert(podman.logs("life-web"))
      local seen = {}
      for _, l in ipairs(lines) do seen[l.stream .. ":" .. l.line] = true end
      assert.is_true(seen["stdout:greeting=hello"], "stdout line missing")
      assert.is_true(seen["stderr:oops"], "stderr line missing")
      local only_err = assert(podman.logs("life-web", { stdout = false }))
      for _, l in ipairs(only_err) do assert.equals("stderr", l.stream) end

      local t0 = now()
      assert.is_true(podman.stop("life-web", { timeout = 5 }))
      assert.is_true(now() - t0 < 5, "stop waited for SIGKILL: init did not forward SIGTERM")
      assert.is_true(podman.stop("life-web"))        -- already stopped: still true
      assert.equals("exited", assert(podman.inspect("life-web")).State.Status)
      assert.is_nil(http.get(url, { timeout = 1 }))

      assert.is_true(podman.remove("life-web"))
      assert.is_false(podman.exists("life-web"))
      local gone, gerr, status = podman.inspect("life-web")
      assert.is_nil(gone)
      assert.equals(404, status)
      assert.matches('podman.inspect "life%-web": 404: .*no such container', gerr)
    end)
  end)

  it("lets a subscriber see the start and the death of a container killed with podman kill",
     function()
    run(function()
      local sub = podman.events.subscribe({ type = "container", container = "ev-kill" })
      assert.truthy(sub)
      assert.is_truthy(podman.create({ name = "ev-kill", image = env.image1,
                                       command = { "sleep", "600" } }))
      assert.is_true(podman.start("ev-kill"))
      local out, code, err = env:podman({ "kill", "ev-kill" })
      assert.equals(0, code, out .. err)
      local seen, died = {}, nil
      local deadline = now() + 15
      while not died and now() < deadline do
        local ev, nerr = sub:next(5)
        assert.truthy(ev, nerr)
        assert.equals("container", ev.Type)
        assert.equals("ev-kill", ev.Actor.Attributes.name)
        seen[ev.Action] = true
        if ev.Action == "died" then died = ev end
      end
      assert.is_true(seen.start, "no start event")
      assert.truthy(died, "no died event")
      assert.equals("137", died.Actor.Attributes.containerExitCode)
      assert.equals(env.image1, died.Actor.Attributes.image)
      assert.is_number(died.timeNano)
      -- a filter nothing matches: next times out
      local quiet = podman.events.subscribe({ container = "never-there" })
      local none, why = quiet:next(0.2)
      assert.is_nil(none)
      assert.equals("timeout", why)
      quiet:close()
      assert.is_true(sub:close())
      assert.is_nil((sub:next(0)))
      assert.is_true(podman.remove("ev-kill", { force = true }))
    end)
  end)

  describe("fails with a clear error, never a crash", function()
    it("when the image does not exist", function()
      run(function()
        local c, err, status = podman.create({ name = "err-img", image = "localhost/nope:1" })
        assert.is_nil(c)
        assert.equals(500, status)
        assert.matches('^podman.create "err%-img": 500: .*image not known', err)
      end)
    end)

    it("when the container to start does not exist", function()
      run(function()
        local ok, err, status = podman.start("no-such-container")
        assert.is_nil(ok)
        assert.equals(404, status)
        assert.matches('^podman.start "no%-such%-container": 404: .*no such container', err)
      end)
    end)

    it("when the spec is malformed, naming the field", function()
      run(function()
        local cases = {
          { { name = "bad1", image = env.image1, enviroment = { A = "1" } },
            'spec: unknown key "enviroment"' },
          { { name = "bad2" }, "spec: image is required" },
          { { name = "bad3", image = env.image1, portmappings = { { container_port = "80" } } },
            "spec.portmappings%[1%].container_port: expected an integer" },
          { { name = "bad4", image = env.image1, command = "httpd -f" },
            "spec.command: expected a list of strings" },
          { { name = "bad5", image = env.image1, mounts = { { source = "/x" } } },
            "spec.mounts%[1%]: destination is required" },
          { { name = "bad6", image = env.image1, restart_policy = "sometimes" },
            "spec.restart_policy: expected" },
          { { name = "bad7", image = env.image1, env = { A = true } },
            "spec.env.A: expected a string" },
          { { name = "bad8", image = env.image1, network = "host", netns = "none" },
            "spec.network: give network or netns, not both" },
        }
        for _, case in ipairs(cases) do
          local c, err = podman.create(case[1])
          assert.is_nil(c)
          assert.matches(case[2], err)
          assert.matches('^podman.create "' .. case[1].name .. '": ', err)
        end
        local c, err = podman.create("not a table")
        assert.is_nil(c)
        assert.matches("spec: expected a table", err)
        assert.is_false(podman.exists("bad1"))
      end)
    end)

    it("raises on programming errors: unknown options, calls outside a task", function()
      assert.has_error(function() podman.ping() end,
                       "mcp.podman.ping: can only wait inside a task (not in a coroutine of " ..
                       "its own, a metamethod or at load time)")
      run(function()
        local ok, err = pcall(podman.stop, "x", { timout = 1 })
        assert.is_false(ok)
        assert.matches('mcp.podman.stop: unknown option "timout"', err)
      end)
    end)
  end)

  it("exec returns the exit code, stdout and stderr", function()
    run(function()
      assert.truthy(podman.create({ name = "exec-box", image = env.image1, init = true,
                                    command = { "sleep", "600" } }))
      assert.is_true(podman.start("exec-box"))
      local r = assert(podman.exec("exec-box", {
        cmd = { "sh", "-c", "echo to-out; echo to-err >&2; echo \"$X\"; exit 3" },
        env = { X = "from-env" } }))
      assert.equals(3, r.exit_code)
      assert.equals("to-out\nfrom-env\n", r.stdout)
      assert.equals("to-err\n", r.stderr)
      local ok = assert(podman.exec("exec-box", { cmd = { "true" } }))
      assert.equals(0, ok.exit_code)
      assert.equals("", ok.stdout)
      local none, err, status = podman.exec("no-such-box", { cmd = { "true" } })
      assert.is_nil(none)
      assert.equals(404, status)
      assert.matches('^podman.exec "no%-such%-box": 404', err)
      assert.is_true(podman.remove("exec-box", { force = true, timeout = 0 }))
    end)
  end)

  it("follows logs as a stream until it is closed", function()
    run(function()
      assert.truthy(podman.create({ name = "chatty", image = env.image1, init = true,
        command = { "sh", "-c", "i=0; while true; do i=$((i+1)); echo line-$i; " ..
                                "echo err-$i >&2; sleep 0.1; done" } }))
      assert.is_true(podman.start("chatty"))
      local s = assert(podman.logs("chatty", { follow = true }))
      local got = {}
      while #got < 6 do
        local l, err = s:read(5)
        assert.truthy(l, err)
        got[#got + 1] = l
      end
      local streams = {}
      for _, l in ipairs(got) do streams[l.stream] = true end
      assert.is_true(streams.stdout and streams.stderr)
      assert.matches("^line%-%d+$", got[1].stream == "stdout" and got[1].line or got[2].line)
      assert.is_true(s:close())
      assert.is_nil(s:read())
      assert.is_true(podman.remove("chatty", { force = true, timeout = 0 }))
    end)
  end)

  describe("images", function()
    it("pulls a local reference with policy=missing without a registry", function()
      run(function()
        local progress = {}
        local r, err = podman.images.pull(env.image1, {
          policy = "missing",
          on_progress = function(line) progress[#progress + 1] = line end,
        })
        assert.truthy(r, err)
        assert.is_string(r.id)
        assert.is_true(#progress >= 1)
        assert.is_true(podman.images.exists(env.image1))
        assert.is_false(podman.images.exists("localhost/nope:9"))
        local list = assert(podman.images.list())
        assert.is_true(#list >= 2)
      end)
    end)

    it("fails quickly and clearly for a remote image that cannot be had", function()
      run(function()
        local t0 = now()
        local r, err = podman.images.pull("registry.invalid/nope:1")
        assert.is_nil(r)
        assert.matches('^podman.images.pull "registry.invalid/nope:1": ', err)
        assert.matches("registry.invalid", err)
        local r2, err2 = podman.images.pull("just-a-short-name")
        assert.is_nil(r2)
        assert.matches("short%-name", err2)
        assert.is_true(now() - t0 < 10, "took " .. (now() - t0) .. " s")
      end)
    end)

    it("reports an on_progress that fails or yields as the pull's error", function()
      run(function()
        local r, err = podman.images.pull(env.image1, {
          on_progress = function() mcp.sleep(0.1) end })
        assert.is_nil(r)
        assert.matches("on_progress failed: .*can only wait inside a task", err)
      end)
    end)
  end)

  it("creates, finds and removes networks", function()
    run(function()
      local n = assert(podman.networks.create({ name = "spec-net", labels = { a = "b" } }))
      assert.equals("spec-net", n.name)
      assert.is_true(podman.networks.exists("spec-net"))
      local found = false
      for _, x in ipairs(assert(podman.networks.list())) do
        found = found or x.name == "spec-net"
      end
      assert.is_true(found)
      local dup, err = podman.networks.create({ name = "spec-net" })
      assert.is_nil(dup)
      assert.matches('^podman.networks.create "spec%-net": %d+: ', err)
      assert.is_true(podman.networks.remove("spec-net"))
      assert.is_false(podman.networks.exists("spec-net"))
    end)
  end)

  it("keeps the loop responsive with 50 calls in flight at once", function()
    run(function()
      local lateness, ticking = 0, true
      mcp.spawn(function()
        while ticking do
          local t0 = now()
          mcp.sleep(0.01)
          lateness = math.max(lateness, now() - t0 - 0.01)
        end
      end)
      local started, finished, peak, failures = 0, 0, 0, {}
      local calls = {
        function() return podman.ping() end,
        function() return podman.list({ all = true }) end,
        function() return podman.images.list() end,
        function() return podman.info() end,
        function() return podman.exists("nothing-here") ~= nil end,
      }
      for i = 1, 50 do
        mcp.spawn(function()
          started = started + 1
          peak = math.max(peak, started - finished)
          local ok, err = calls[i % #calls + 1]()
          if not ok then failures[#failures + 1] = tostring(err) end
          finished = finished + 1
        end)
      end
      local done = eventually(30, function() return finished == 50 end)
      ticking = false
      assert.is_true(done, finished .. " of 50 calls finished")
      assert.same({}, failures)
      assert.equals(50, peak)
      assert.is_true(lateness < 0.2, ("a 10 ms timer was %.0f ms late"):format(lateness * 1000))
      local st = podman.stats()
      assert.is_true(st.ops.ping.count >= 10)
      local b = st.ops.ping.buckets
      assert.equals(math.huge, b[#b].le)
      assert.equals(st.ops.ping.count, b[#b].count)
    end)
  end)

  it("survives Podman going away: pending calls fail in time, then all works again",
     function()
    run(function()
      local sub = assert(podman.events.subscribe({ type = "container" }))
      assert.truthy(podman.create({ name = "outage", image = env.image1, init = true,
                                    command = { "sleep", "600" } }))
      assert.is_true(podman.start("outage"))
      local stream = assert(podman.logs("outage", { follow = true }))

      -- calls pending when the service stops: a wait that would last, a read
      local pending = {}
      mcp.spawn(function()
        local t0 = now()
        local ok, err = podman.wait("outage", { condition = "removing", timeout = 20 })
        pending.wait = { ok = ok, err = err, took = now() - t0 }
      end)
      mcp.spawn(function()
        local t0 = now()
        local l, err = stream:read(20)
        pending.read = { ok = l, err = err, took = now() - t0 }
      end)
      mcp.sleep(0.3)

      -- the service goes away in the background; the loop keeps running
      env:sh(podman_env.quote(podman_env.script) .. " stop-service " ..
             podman_env.quote(env.dir) .. " >/dev/null 2>&1 &")
      local outage_calls = {}
      local down = eventually(15, function()
        local t0 = now()
        local ok, err = podman.inspect("outage", { timeout = 3 })
        if not ok then outage_calls[#outage_calls + 1] = { err = err, took = now() - t0 } end
        return not ok
      end)
      assert.is_true(down, "the service never went away")
      assert.truthy(eventually(10, function() return pending.wait and pending.read end),
                    "pending calls did not return")
      assert.is_nil(pending.wait.ok)
      assert.matches('^podman.wait "outage": ', pending.wait.err)
      assert.is_true(pending.wait.took < 20)
      assert.is_nil(pending.read.ok)
      assert.matches('^podman.logs "outage": ', pending.read.err)

      -- while it is down every call fails at once, clearly
      for _ = 1, 3 do
        local t0 = now()
        local ok, err = podman.ping()
        assert.is_nil(ok)
        assert.matches("^podman.ping: cannot connect to Podman at .*podman.sock", err)
        assert.is_true(now() - t0 < 1)
      end
      for _, c in ipairs(outage_calls) do
        assert.matches('^podman.inspect "outage": ', c.err)
        assert.is_true(c.took < 3.5)
      end
      -- subscribing meanwhile does not wait for Podman; it hears the marker too
      local t1 = now()
      local late = assert(podman.events.subscribe({ type = "container" }))
      assert.is_true(now() - t1 < 2)

      env:sh(podman_env.quote(podman_env.script) .. " start-service " ..
             podman_env.quote(env.dir) .. " >/dev/null 2>&1 &")
      assert.truthy(eventually(30, function() return podman.ping() end), "never came back")
      assert.equals("running", assert(podman.inspect("outage")).State.Status)

      -- the events stream came back by itself and said so
      local marker
      local deadline = now() + 15
      while not marker and now() < deadline do
        local ev = sub:next(1)
        if ev and ev.type == "reconnected" then marker = ev end
      end
      assert.truthy(marker, "no reconnected marker")
      local late_marker = late:next(5)
      assert.truthy(late_marker)
      assert.equals("reconnected", late_marker.type)
      late:close()
      assert.is_true(podman.remove("outage", { force = true, timeout = 0 }))
      local died
      deadline = now() + 15
      while not died and now() < deadline do
        local ev = sub:next(1)
        if ev and ev.Action == "died" and ev.Actor.Attributes.name == "outage" then died = ev end
      end
      assert.truthy(died, "no events after the reconnect")
      sub:close()
      assert.is_true(podman.stats().events.connects >= 2)
    end, 120)
  end)

  it("reports a closed port through mcp.http as a clean error", function()
    run(function()
      local port = free_port()
      local t0 = now()
      local r, err = http.get(("http://127.0.0.1:%d/"):format(port), { timeout = 2 })
      assert.is_nil(r)
      assert.matches("^http GET http://127.0.0.1:" .. port .. "/: ", err)
      assert.matches("[Rr]efused", err)
      assert.is_true(now() - t0 < 2)
    end)
  end)

  it("speaks to Podman through mcp.http over its unix socket too", function()
    run(function()
      local r = assert(http.get("http://d/v4.0.0/libpod/_ping", { unix_socket = env.socket }))
      assert.equals(200, r.status)
      assert.equals("OK", r.body)
      local p = assert(http.post("http://d/v4.0.0/libpod/containers/create",
                                 { unix_socket = env.socket, json = { image = "nope:1" } }))
      assert.equals(500, p.status)
      assert.matches("image not known", p.json.message)
    end)
  end)
end)
