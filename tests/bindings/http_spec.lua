-- mcp.http against real local servers, no Podman: busybox httpd with a CGI
-- that echoes the request, a CGI that streams lines, a listener that never
-- answers, and a port where nothing listens.
local mcp = require("mcp.core")
local http = mcp.http

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return (out:gsub("%s+$", ""))
end

local function free_port()
  return assert(tonumber(sh("python3 -c 'import socket; s = socket.socket(); " ..
                            "s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'")))
end

local function write(path, text, mode)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  if mode then os.execute("chmod " .. mode .. " '" .. path .. "'") end
end

-- The empty run turns the loop once first, so that the deadline is armed
-- from a fresh uv_now() (see tests/integration/podman_spec.lua).
local function run(fn)
  mcp.run(function() end)
  return mcp.run({ timeout = 30 }, fn)
end

local function now()
  return mcp.timer.monotime()
end

describe("mcp.http", function()
  local dir, port, base, silent_port
  local pids = {}             -- the servers this spec started, ended by pid

  setup(function()
    dir = sh("mktemp -d /tmp/mcp-http.XXXXXX")
    os.execute("mkdir -p '" .. dir .. "/cgi-bin'")
    write(dir .. "/index.html", "hello\n")
    write(dir .. "/cgi-bin/echo", [[#!/bin/sh
body=$(head -c "${CONTENT_LENGTH:-0}")
echo "Content-Type: application/json"
echo "X-Echo: yes"
echo
printf '{"method":"%s","ct":"%s","x":"%s","query":"%s","body":%s}' \
  "$REQUEST_METHOD" "$CONTENT_TYPE" "$HTTP_X_TEST" "$QUERY_STRING" "${body:-null}"
]], "755")
    write(dir .. "/cgi-bin/lines", [[#!/bin/sh
echo "Content-Type: application/x-ndjson"
echo
for i in 1 2 3; do echo "{\"n\":$i}"; sleep 0.2; done
printf 'no newline'
]], "755")
    port = free_port()
    base = "http://127.0.0.1:" .. port
    pids[#pids + 1] = sh(("busybox httpd -f -p 127.0.0.1:%d -h '%s' >/dev/null 2>&1 & echo $!")
                         :format(port, dir))
    silent_port = free_port()
    -- after a connect, nc runs `sleep 30` on it: a server that never says a word
    pids[#pids + 1] = sh(("busybox nc -l -p %d -e sleep 30 >/dev/null 2>&1 </dev/null & echo $!")
                         :format(silent_port))
    -- wait until both listen
    for _ = 1, 50 do
      local listening = sh("ss -ltn 2>/dev/null | grep -c ':" .. port .. " \\|:" ..
                           silent_port .. " '")
      if listening == "2" then
        break
      end
      os.execute("sleep 0.05")
    end
  end)

  teardown(function()
    for _, pid in ipairs(pids) do
      if pid:match("^%d+$") then os.execute("kill " .. pid .. " 2>/dev/null") end
    end
    os.execute("rm -rf '" .. dir .. "'")
  end)

  it("gets a page: status, body, lower-case headers", function()
    run(function()
      local r = assert(http.get(base .. "/index.html", { timeout = 5 }))
      assert.equals(200, r.status)
      assert.equals("hello\n", r.body)
      assert.matches("text/html", r.headers["content-type"])
      assert.is_nil(r.json)
    end)
  end)

  it("returns an HTTP error status as a result, not as an error", function()
    run(function()
      local r, err = http.get(base .. "/missing.html")
      assert.is_nil(err)
      assert.equals(404, r.status)
    end)
  end)

  it("posts JSON, sends headers, decodes a JSON answer", function()
    run(function()
      local r = assert(http.post(base .. "/cgi-bin/echo?a=1", {
        json = { hello = "world", n = 3 }, headers = { ["X-Test"] = "42" } }))
      assert.equals(200, r.status)
      assert.equals("yes", r.headers["x-echo"])
      assert.equals("POST", r.json.method)
      assert.equals("application/json", r.json.ct)
      assert.equals("42", r.json.x)
      assert.equals("a=1", r.json.query)
      assert.same({ hello = "world", n = 3 }, r.json.body)
    end)
  end)

  it("sends any method, and a raw body, through request", function()
    run(function()
      local r = assert(http.request({ method = "POST", url = base .. "/cgi-bin/echo",
                                      body = "[1,2]",
                                      headers = { ["Content-Type"] = "text/plain" } }))
      assert.equals("POST", r.json.method)
      assert.equals("text/plain", r.json.ct)
      assert.same({ 1, 2 }, r.json.body)
      local put = assert(http.request({ method = "PUT", url = base .. "/cgi-bin/echo" }))
      assert.equals("PUT", put.json.method)
      local head = assert(http.request({ method = "HEAD", url = base .. "/index.html" }))
      assert.equals(200, head.status)
      assert.equals("", head.body)
    end)
  end)

  it("streams lines as they come, then ends", function()
    run(function()
      local s = assert(http.stream({ url = base .. "/cgi-bin/lines" }))
      assert.equals(200, s.status)
      assert.equals("application/x-ndjson", s.headers["content-type"])
      local got, t0 = {}, now()
      while true do
        local line, err = s:read(5)
        if not line then
          assert.is_nil(err)
          break
        end
        got[#got + 1] = line
      end
      assert.same({ '{"n":1}', '{"n":2}', '{"n":3}', "no newline" }, got)
      assert.is_true(now() - t0 >= 0.3)
      assert.is_nil(s:read())
      assert.is_true(s:close())
    end)
  end)

  it("times out a read of a stream, and can close it early", function()
    run(function()
      local s = assert(http.stream({ url = base .. "/cgi-bin/lines" }))
      assert.equals('{"n":1}', s:read(5))
      local line, err = s:read(0.01)
      if line then                  -- the second line may already be there
        assert.equals('{"n":2}', line)
        line, err = s:read(0.01)
      end
      assert.is_nil(line)
      assert.equals("timeout", err)
      assert.is_true(s:close())
      assert.is_nil(s:read())
    end)
  end)

  it("fails cleanly and at once on a closed port", function()
    run(function()
      local closed = free_port()
      local t0 = now()
      local r, err = http.get(("http://127.0.0.1:%d/x"):format(closed), { timeout = 2 })
      assert.is_nil(r)
      assert.matches(("^http GET http://127.0.0.1:%d/x: .*[Rr]efused"):format(closed), err)
      assert.is_true(now() - t0 < 1)
      local s, serr = http.stream({ url = ("http://127.0.0.1:%d/"):format(closed) })
      assert.is_nil(s)
      assert.matches("[Rr]efused", serr)
    end)
  end)

  it("times out a server that never answers, while the loop goes on", function()
    run(function()
      local ticks = 0
      mcp.spawn(function()
        for _ = 1, 20 do mcp.sleep(0.02); ticks = ticks + 1 end
      end)
      local t0 = now()
      local r, err = http.get(("http://127.0.0.1:%d/"):format(silent_port), { timeout = 0.5 })
      local took = now() - t0
      assert.is_nil(r)
      assert.matches("[Tt]imed? ?out", err)
      assert.is_true(took >= 0.45 and took < 1.5, "took " .. took)
      assert.is_true(ticks >= 15, "the loop stalled: " .. ticks .. " ticks")
    end)
  end)

  it("reports a bad URL as an error", function()
    run(function()
      local r, err = http.get("ftp://127.0.0.1/", { timeout = 1 })
      assert.is_nil(r)
      assert.matches("^http GET ftp://127.0.0.1/: ", err)
    end)
  end)

  it("raises on programming errors", function()
    assert.has_error(function() http.get(base) end)                    -- outside a task
    run(function()
      assert.has_error(function() http.get(base, { timout = 1 }) end)
      assert.has_error(function() http.request({ url = base, body = "x", json = {} }) end)
      assert.has_error(function() http.request({ method = "get", url = base }) end)
      assert.has_error(function() http.request({}) end)
      assert.has_error(function() http.get(base, { headers = { ["A:B"] = "x" } }) end)
    end)
  end)
end)
