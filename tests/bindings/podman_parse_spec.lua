-- The pure parts of mcp.podman, without a Podman: the logs frame decoder,
-- the events line splitter, the subscribers' event filter, and the checks
-- a container spec passes before any request is made.
local mcp = require("mcp.core")
local podman = mcp.podman

-- One frame: stream byte, three zero bytes, big-endian length, payload.
local function frame(stream, payload)
  local n = #payload
  return string.char(stream, 0, 0, 0, math.floor(n / 16777216) % 256,
                     math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256) .. payload
end

-- Cuts s into pieces of the given sizes (the last takes the rest).
local function cut(s, sizes)
  local out, pos = {}, 1
  for _, n in ipairs(sizes) do
    out[#out + 1] = s:sub(pos, pos + n - 1)
    pos = pos + n
  end
  out[#out + 1] = s:sub(pos)
  return out
end

local function lines_of(list)
  local out = {}
  for i, l in ipairs(list) do out[i] = l.stream .. ":" .. l.line end
  return out
end

describe("mcp.podman._decode_frames (the logs frame decoder)", function()
  it("splits frames into lines tagged with their stream", function()
    local data = frame(1, "out one\n") .. frame(2, "err one\n") .. frame(1, "out two\n")
    local list, err = podman._decode_frames(data)
    assert.is_nil(err)
    assert.same({ "stdout:out one", "stderr:err one", "stdout:out two" }, lines_of(list))
  end)

  it("gives the same lines however the bytes are cut", function()
    local data = frame(1, "alpha\nbeta\n") .. frame(2, "gamma\n") .. frame(1, "delta\n")
    local want = { "stdout:alpha", "stdout:beta", "stderr:gamma", "stdout:delta" }
    for i = 1, #data - 1 do
      assert.same(want, lines_of((podman._decode_frames(cut(data, { i })))), "cut at " .. i)
    end
    local bytes = {}
    for i = 1, #data do bytes[i] = data:sub(i, i) end
    assert.same(want, lines_of((podman._decode_frames(bytes))))
  end)

  it("joins a line written in several frames of one stream, apart from the other", function()
    local data = frame(1, "par") .. frame(2, "err\n") .. frame(1, "tial\n")
    assert.same({ "stderr:err", "stdout:partial" }, lines_of((podman._decode_frames(data))))
  end)

  it("keeps a last line without a newline, empty lines and \\r\\n endings", function()
    local data = frame(1, "a\r\n\nlast")
    assert.same({ "stdout:a", "stdout:", "stdout:last" }, lines_of((podman._decode_frames(data))))
  end)

  it("accepts empty frames and large ones", function()
    local big = string.rep("x", 200000)
    local data = frame(1, "") .. frame(2, big .. "\n") .. frame(1, "")
    local list = podman._decode_frames(data)
    assert.equals(1, #list)
    assert.equals(200000, #list[1].line)
  end)

  it("names a bad header instead of reading garbage", function()
    local list, err = podman._decode_frames(frame(1, "ok\n") .. "\9\0\0\0\0\0\0\1x")
    assert.equals("bad frame header", err)
    assert.same({ "stdout:ok" }, lines_of(list))
    local _, err2 = podman._decode_frames("\1\1\0\0\0\0\0\1x")
    assert.equals("bad frame header", err2)
  end)

  it("says when the stream was cut inside a frame", function()
    local data = frame(1, "complete\n") .. frame(2, "cut short\n")
    local list, err = podman._decode_frames(data:sub(1, -4))
    assert.equals("cut inside a frame", err)
    assert.same({ "stdout:complete", "stderr:cut sho" }, lines_of(list))
    local _, err2 = podman._decode_frames("\1\0\0")
    assert.equals("cut inside a frame", err2)
  end)

  it("decodes nothing from nothing", function()
    local list, err = podman._decode_frames("")
    assert.same({}, list)
    assert.is_nil(err)
  end)
end)

describe("mcp.podman._split_lines (the events line splitter)", function()
  it("splits a JSON-lines stream however it is chunked", function()
    local text = '{"a":1}\n{"b":2}\n{"c":3}\n'
    for i = 1, #text - 1 do
      assert.same({ '{"a":1}', '{"b":2}', '{"c":3}' }, podman._split_lines(cut(text, { i })))
    end
  end)

  it("drops \\r before \\n, keeps empty lines, flushes the rest", function()
    assert.same({ "one", "", "two", "tail" }, podman._split_lines({ "one\r\n\ntwo\n", "tail" }))
  end)

  it("cuts an endless line into pieces of the maximum length", function()
    assert.same({ "abcd", "efgh", "ij", "k" }, podman._split_lines({ "abcdefghij\nk" }, 4))
    assert.same({ "abcd", "x" }, podman._split_lines({ "ab", "cd", "\nx" }, 4))   -- fits
  end)
end)

describe("mcp.podman._match_event (the subscribers' filter)", function()
  local ev = {
    Type = "container", Action = "died", status = "died",
    id = "15d876267dd0e4c466276bcfff13b3f618f560a967023f291aeada2c82643d18",
    Actor = { ID = "15d876267dd0e4c466276bcfff13b3f618f560a967023f291aeada2c82643d18",
              Attributes = { name = "web-web", image = "localhost/mcp-test:1.0",
                             ["mcp.service"] = "web", containerExitCode = "137" } },
  }

  it("matches everything with no filter", function()
    assert.is_true(podman._match_event(ev, nil))
    assert.is_true(podman._match_event(ev, {}))
  end)

  it("matches type, event, container name or id, image and labels", function()
    assert.is_true(podman._match_event(ev, { type = "container" }))
    assert.is_false(podman._match_event(ev, { type = "image" }))
    assert.is_true(podman._match_event(ev, { event = "died" }))
    assert.is_true(podman._match_event(ev, { event = "die" }))      -- Docker's word
    assert.is_false(podman._match_event(ev, { event = "start" }))
    assert.is_true(podman._match_event(ev, { container = "web-web" }))
    assert.is_true(podman._match_event(ev, { container = "15d876267dd0" }))
    assert.is_false(podman._match_event(ev, { container = "15d8" }))  -- too short an id
    assert.is_false(podman._match_event(ev, { container = "web" }))
    assert.is_true(podman._match_event(ev, { image = "localhost/mcp-test:1.0" }))
    assert.is_true(podman._match_event(ev, { label = "mcp.service" }))
    assert.is_true(podman._match_event(ev, { label = "mcp.service=web" }))
    assert.is_false(podman._match_event(ev, { label = "mcp.service=db" }))
  end)

  it("ORs the values of one key and ANDs the keys", function()
    assert.is_true(podman._match_event(ev, { event = { "start", "died" } }))
    assert.is_true(podman._match_event(ev, { event = { "start", "died" }, type = "container" }))
    assert.is_false(podman._match_event(ev, { event = { "start", "died" }, type = "image" }))
  end)

  it("raises on an unknown filter key", function()
    assert.has_error(function() podman._match_event(ev, { labels = "x" }) end)
    assert.has_error(function() podman._match_event(ev, { event = { 1 } }) end)
  end)
end)

describe("mcp.podman.create checks the spec before any request", function()
  setup(function()
    podman.connect("/nonexistent/podman.sock", { timeout = 1 })
  end)

  local function create(spec)
    return mcp.run(function() return podman.create(spec) end)
  end

  it("maps a good spec and only then talks to Podman (which is absent here)", function()
    local ok, err = create({
      name = "web-web", image = "localhost/mcp-test:1.0",
      command = { "httpd", "-f" }, entrypoint = { "/bin/sh", "-c" },
      env = { PORT = 8080, A = "b" }, labels = { ["mcp.service"] = "web" },
      portmappings = { { container_port = 8080, host_port = 10001, host_ip = "127.0.0.1",
                         protocol = "tcp" } },
      mounts = { { source = "/srv/web", destination = "/srv/web", options = { "rw" } },
                 { destination = "/tmp", type = "tmpfs" } },
      user = "0:0", network = "slirp4netns", restart_policy = "on-failure",
      restart_tries = 3, init = true, stop_timeout = "5s", hostname = "web", work_dir = "/",
    })
    assert.is_nil(ok)
    assert.matches('^podman.create "web%-web": cannot connect to Podman at ' ..
                   '/nonexistent/podman.sock: No such file or directory', err)
  end)

  it("names the field and the problem", function()
    local cases = {
      { { image = "i", nmae = "x" }, 'spec: unknown key "nmae"' },
      { {}, "spec: image is required" },
      { { image = 5 }, "spec.image: expected a string, got 5" },
      { { image = "i", command = { "a", 2 } }, "spec.command%[2%]: expected a string" },
      { { image = "i", command = { "a", x = "b" } }, "spec.command: expected a list" },
      { { image = "i", env = { 1, 2 } }, "spec.env: keys must be strings" },
      { { image = "i", labels = { a = {} } }, "spec.labels.a: expected a string" },
      { { image = "i", portmappings = { { host_port = 1 } } },
        "spec.portmappings%[1%]: container_port is required" },
      { { image = "i", portmappings = { { container_port = 0 } } },
        "spec.portmappings%[1%].container_port: expected an integer from 1 to 65535" },
      { { image = "i", portmappings = { { container_port = 80, host_port = 70000 } } },
        "spec.portmappings%[1%].host_port: expected an integer" },
      { { image = "i", portmappings = { { container_port = 80, protocol = "icmp" } } },
        'spec.portmappings%[1%].protocol: expected "tcp"' },
      { { image = "i", portmappings = { { container_port = 80, hostport = 1 } } },
        'spec.portmappings%[1%]: unknown key "hostport"' },
      { { image = "i", portmappings = { 80 } }, "spec.portmappings%[1%]: expected a table" },
      { { image = "i", mounts = { { destination = "/x" } } },
        "spec.mounts%[1%]: source is required for a bind mount" },
      { { image = "i", mounts = { { source = "/a", destination = "/b", options = "ro" } } },
        "spec.mounts%[1%].options: expected a list of strings" },
      { { image = "i", init = "yes" }, "spec.init: expected a boolean" },
      { { image = "i", stop_timeout = "soon" }, "spec.stop_timeout: expected seconds" },
      { { image = "i", restart_policy = "never" }, "spec.restart_policy: expected" },
      { { image = "i", network = "weird:mode" }, nil },        -- a network name: fine
      { { image = "i", netns = "warp" }, 'spec.netns: unknown network mode "warp"' },
      { { image = "i", netns = { value = "x" } }, "spec.netns: nsmode is required" },
    }
    for _, case in ipairs(cases) do
      local ok, err = create(case[1])
      assert.is_nil(ok)
      if case[2] then
        assert.matches("^podman.create: " .. case[2], err)
      else
        assert.matches("cannot connect to Podman", err)
      end
    end
  end)

  it("raises on unknown option keys and misuse outside a task", function()
    assert.has_error(function()
      mcp.run(function() podman.create({ image = "i" }, { tmeout = 1 }) end)
    end)
    assert.has_error(function() podman.create({ image = "i" }) end)
  end)
end)
