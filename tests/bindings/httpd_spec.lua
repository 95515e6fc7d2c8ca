-- The API server (core/httpd.c and mcp.api) in this process, on mcp.core's
-- loop, spoken to over real sockets by curl and small Python clients that
-- run in the background while the spec drives the loop.
local mcp = require("mcp.core")
local api = require("mcp.api")
local registry = require("mcp.registry")
local client = require("tests.lib.http_client")
local certs = require("tests.lib.certs")

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return (out:gsub("%s+$", ""))
end

-- Runs a Python client in the background: python3 -c code args...
local function python(code, ...)
  local args = {}
  for i, a in ipairs({ ... }) do args[i] = client.quote(a) end
  return client.spawn("python3 -c " .. client.quote(code) .. " " .. table.concat(args, " "))
end

local function port_of(addr)
  return addr:match(":(%d+)$")
end

-- Test-only endpoints, beside the real ones of mcp.api.base.
local probe = {}

local function add_test_routes()
  api.route("GET", "/test/sleep", function(req)
    local s = tonumber(req.query.s or "2")
    probe.sleep_started = (probe.sleep_started or 0) + 1
    mcp.sleep(s)
    probe.sleep_finished = (probe.sleep_finished or 0) + 1
    return 200, { slept = s }
  end, { auth = false })
  api.route("GET", "/test/items/{name}", function(req)
    return 200, { name = req.params.name, path = req.path, raw_path = req.raw_path }
  end, { auth = false })
  api.route("GET", "/test/files/{name}/{path...}", function(req)
    return 200, { name = req.params.name, path = req.params.path }
  end, { auth = false })
  api.route("GET", "/test/echo", function(req)
    return 200, { query = req.query, headers = req.headers, remote = req.remote,
      method = req.method }
  end, { auth = false })
  api.route("POST", "/test/json", function(req)
    return 201, { got = req.json }, { ["X-Seen"] = "yes" }
  end, { auth = false, body = "json" })
  api.route("GET", "/test/fail", function()
    local t = nil
    return 200, t.field
  end, { auth = false })
  api.route("GET", "/test/teapot", function()
    api.raise(418, "teapot", "short and stout: %d", 42)
  end, { auth = false })
  api.route("GET", "/test/text", function()
    return 200, "plain words\n"
  end, { auth = false })
  api.route("GET", "/test/stream", function(req)
    local n = tonumber(req.query.n or "5")
    local out = assert(api.ndjson(req))
    for i = 1, n do
      out:send({ line = i })
      mcp.sleep(tonumber(req.query.every or "0.2"))
    end
    out:close()
  end, { auth = false })
  api.route("GET", "/test/bulk", function(req)
    local s = assert(req:stream(200, { ["Content-Type"] = "application/octet-stream" }))
    local chunk = string.rep("z", 32 * 1024)
    probe.max_pending = 0
    for _ = 1, tonumber(req.query.chunks or "64") do
      local t0 = mcp.timer.monotime()
      if not s:write(chunk) then break end
      if mcp.timer.monotime() - t0 > 0.01 then probe.waited = (probe.waited or 0) + 1 end
      if s:pending() > probe.max_pending then probe.max_pending = s:pending() end
    end
    s:close()
  end, { auth = false })
  api.route("GET", "/test/forever", function(req)
    local out = assert(api.ndjson(req))
    probe.forever_alive = true
    local i = 0
    while true do
      i = i + 1
      probe.forever_ticks = i
      if not out:send({ tick = i }) then probe.forever_saw_false = true break end
      mcp.sleep(0.05)
    end
  end, { auth = false })
end

describe("the API server", function()
  local dir, db, token, srv, base, pki

  setup(function()
    dir = sh("mktemp -d /tmp/mcp-httpd.XXXXXX")
    db = assert(registry.open(dir .. "/mcp.db"))
    mcp.state.db = db
    token = assert(registry.token_create(db, "tester"))
    api.load()
    add_test_routes()
    srv = assert(mcp.httpd.listen({ listen = "127.0.0.1:0", connection_timeout = 3,
      max_body = 4096 }))
    base = "http://" .. srv:addresses()[1]
    pki = certs.make(dir)
  end)

  teardown(function()
    srv:close()
    client.pump(0.05)
    mcp.state.db = nil
    db:close()
    client.cleanup()
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function auth(t)
    t = t or {}
    t.Authorization = "Bearer " .. token
    return t
  end

  describe("authentication", function()
    it("answers GET /v1/health without a token", function()
      local r = client.request(base .. "/v1/health")
      assert.equal(200, r.status)
      assert.same({ status = "ok" }, r.json)
      assert.equal("application/json", r.headers["content-type"])
    end)

    it("refuses a request without a token with 401 and says what is missing", function()
      local r = client.request(base .. "/v1/status")
      assert.equal(401, r.status)
      assert.equal("unauthorized", r.json.error.code)
      assert.matches("missing Authorization header", r.json.error.message)
      assert.matches("Bearer", r.headers["www-authenticate"])
    end)

    it("refuses a malformed Authorization header", function()
      local r = client.request(base .. "/v1/status",
        { headers = { Authorization = "Basic dXNlcjpwYXNz" } })
      assert.equal(401, r.status)
      assert.matches("malformed Authorization header", r.json.error.message)
    end)

    it("refuses an unknown token", function()
      local r = client.request(base .. "/v1/status",
        { headers = { Authorization = "Bearer mcp_" .. string.rep("0", 64) } })
      assert.equal(401, r.status)
      assert.equal("unknown or revoked token", r.json.error.message)
    end)

    it("accepts a valid token, and refuses it once revoked", function()
      local other = assert(registry.token_create(db, "short-lived"))
      local r = client.request(base .. "/v1/status",
        { headers = { Authorization = "Bearer " .. other } })
      assert.equal(200, r.status)
      assert.equal(mcp.version, r.json.version)
      assert(registry.token_revoke(db, "short-lived"))
      r = client.request(base .. "/v1/status",
        { headers = { Authorization = "Bearer " .. other } })
      assert.equal(401, r.status)
      assert.equal("unknown or revoked token", r.json.error.message)
    end)
  end)

  describe("routing", function()
    it("answers 404 for an unknown path and 405 with Allow for a wrong method", function()
      local r = client.request(base .. "/v2/nothing")
      assert.equal(404, r.status)
      assert.same({ code = "not_found", message = "no such endpoint: /v2/nothing" },
        r.json.error)
      r = client.request(base .. "/v1/health", { method = "DELETE" })
      assert.equal(405, r.status)
      assert.equal("method_not_allowed", r.json.error.code)
      assert.equal("GET", r.headers.allow)
    end)

    it("decodes path parameters per segment; a {name} never matches a /", function()
      local r = client.request(base .. "/test/items/a%20b")
      assert.equal(200, r.status)
      assert.same({ name = "a b", path = "/test/items/a b", raw_path = "/test/items/a%20b" },
        r.json)
      r = client.request(base .. "/test/items/a%2Fb")
      assert.equal(404, r.status)
      r = client.request(base .. "/test/items/a/b")
      assert.equal(404, r.status)
    end)

    it("gives a {path...} parameter the rest of the path", function()
      local r = client.request(base .. "/test/files/web/etc/conf%2ed/x.toml")
      assert.equal(200, r.status)
      assert.same({ name = "web", path = "etc/conf.d/x.toml" }, r.json)
      r = client.request(base .. "/test/files/web/")
      assert.equal(404, r.status)
    end)

    it("rejects a path with a malformed escape or %00 with 400", function()
      local r = client.request(base .. "/test/items/a%zz")
      assert.equal(400, r.status)
      assert.equal("bad_request", r.json.error.code)
      r = client.request(base .. "/test/items/a%00b")
      assert.equal(400, r.status)
    end)

    it("hands the handler the query decoded and header names in lower case", function()
      local r = client.request(base .. "/test/echo?tail=10&follow=1&q=a+b%21&empty",
        { headers = { ["X-Mixed-Case"] = "Value" } })
      assert.equal(200, r.status)
      assert.same({ tail = "10", follow = "1", q = "a b!", empty = "" }, r.json.query)
      assert.equal("Value", r.json.headers["x-mixed-case"])
      assert.equal("127.0.0.1", r.json.remote)
    end)

    it("sends a string body as it is and answers HEAD like GET without a body", function()
      local r = client.request(base .. "/test/text")
      assert.equal("plain words\n", r.body)
      assert.matches("^text/plain", r.headers["content-type"])
      -- curl -I writes the headers where the body would go: there is no body.
      r = client.request(base .. "/v1/health", { args = { "-I" } })
      assert.equal(200, r.status)
      assert.matches("^HTTP/1.1 200", r.body)
      assert.is_nil(r.body:find("status", 1, true))
    end)
  end)

  describe("request bodies", function()
    it("decodes a JSON body and sends the handler's status, body and headers", function()
      local r = client.request(base .. "/test/json", { method = "POST",
        body = '{"a":[1,2],"b":"x"}', headers = { ["Content-Type"] = "application/json" } })
      assert.equal(201, r.status)
      assert.same({ a = { 1, 2 }, b = "x" }, r.json.got)
      assert.equal("yes", r.headers["x-seen"])
    end)

    it("answers malformed JSON with 400 naming where the parse failed", function()
      local r = client.request(base .. "/test/json", { method = "POST",
        body = '{"a": 1,\n "b": }', headers = { ["Content-Type"] = "application/json" } })
      assert.equal(400, r.status)
      assert.equal("bad_json", r.json.error.code)
      assert.matches("line 2 column %d+", r.json.error.message)
    end)

    it("answers 415 when a JSON route gets another content type", function()
      local r = client.request(base .. "/test/json", { method = "POST", body = "a = 1",
        headers = { ["Content-Type"] = "application/toml" } })
      assert.equal(415, r.status)
      assert.equal("unsupported_media_type", r.json.error.code)
    end)

    it("answers 413 from C for a body over max_body, announced or chunked", function()
      local big = string.rep("x", 5000)
      local r = client.request(base .. "/test/json", { method = "POST", body = big,
        headers = { ["Content-Type"] = "application/json" } })
      assert.equal(413, r.status)
      assert.equal("too_large", r.json.error.code)
      assert.matches("max_body %(4096 bytes%)", r.json.error.message)
      r = client.request(base .. "/test/json", { method = "POST", body = big,
        headers = { ["Content-Type"] = "application/json", ["Transfer-Encoding"] = "chunked" } })
      assert.equal(413, r.status)
      assert.equal("too_large", r.json.error.code)
    end)

    it("answers 431 to request headers larger than the connection's memory", function()
      local h = python([[
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n")
print(s.recv(200).decode(errors="replace").splitlines()[0])
]], port_of(srv:addresses()[1]))
      local r = client.wait_raw(h)
      assert.matches("^HTTP/1.1 431", r.out)
    end)
  end)

  describe("errors", function()
    it("turns a handler error into 500 with its message", function()
      local r = client.request(base .. "/test/fail")
      assert.equal(500, r.status)
      assert.equal("internal", r.json.error.code)
      assert.matches("GET /test/fail failed: .*attempt to index", r.json.error.message)
    end)

    it("turns api.raise into its status and code", function()
      local r = client.request(base .. "/test/teapot")
      assert.equal(418, r.status)
      assert.same({ code = "teapot", message = "short and stout: 42" }, r.json.error)
    end)
  end)

  describe("concurrency", function()
    it("keeps answering /v1/health promptly while handlers wait", function()
      probe.sleep_started, probe.sleep_finished = 0, 0
      local t0 = mcp.timer.monotime()
      local slow = {}
      for i = 1, 3 do slow[i] = client.start(base .. "/test/sleep?s=2") end
      assert.is_true(client.drive(function() return probe.sleep_started == 3 end, 5))
      local worst = 0
      for _ = 1, 10 do
        local r = client.request(base .. "/v1/health")
        assert.equal(200, r.status)
        if r.time > worst then worst = r.time end
      end
      assert.equal(0, probe.sleep_finished)
      assert.is_true(worst < 0.25, "worst /v1/health took " .. worst .. " s")
      for i = 1, 3 do
        local r = client.wait(slow[i])
        assert.equal(200, r.status)
        assert.same({ slept = 2 }, r.json)
      end
      -- The three waited side by side, not one after another.
      assert.is_true(mcp.timer.monotime() - t0 < 4)
    end)

    it("aborts the handler's task when its client goes away", function()
      probe.sleep_started, probe.sleep_finished = 0, 0
      local before = srv:stats().client_gone
      local r = client.request(base .. "/test/sleep?s=3", { timeout = 0.5 })
      assert.equal(0, r.status)            -- curl gave up
      assert.is_true(client.drive(function()
        return srv:stats().client_gone == before + 1
      end, 3))
      assert.equal(0, srv:stats().in_flight)
      client.pump(3)
      assert.equal(1, probe.sleep_started)
      assert.equal(0, probe.sleep_finished)
    end)
  end)

  describe("streaming", function()
    it("sends NDJSON chunk by chunk as the handler writes it", function()
      local h = client.start(base .. "/test/stream?n=5&every=0.3", { no_buffer = true })
      assert.is_true(client.drive(function()
        return (client.read(h.body) or ""):find("\n") ~= nil
      end, 3))
      local early = client.read(h.body)
      local r = client.wait(h)
      assert.equal(200, r.status)
      assert.equal("chunked", r.headers["transfer-encoding"])
      assert.equal("application/x-ndjson", r.headers["content-type"])
      assert.equal('{"line":1}\n', early)
      local lines = {}
      for line in r.body:gmatch("[^\n]+") do lines[#lines + 1] = mcp.json.decode(line).line end
      assert.same({ 1, 2, 3, 4, 5 }, lines)
      assert.is_true(r.ttfb < 0.2, "first byte after " .. r.ttfb .. " s")
      assert.is_true(r.time >= 1.2)
    end)

    it("makes the writer wait while the client is slow, buffering a bounded amount", function()
      -- 16 MiB to a client that reads nothing for a second: more than the
      -- socket buffers hold, so s:write must wait for it.
      probe.max_pending, probe.waited = 0, 0
      local h = python([[
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /test/bulk?chunks=512 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
time.sleep(1)
n = 0
while True:
    d = s.recv(1 << 20)
    if not d:
        break
    n += len(d)
print(n)
]], port_of(srv:addresses()[1]))
      local r = client.wait_raw(h, 20)
      assert.is_true(tonumber(r.out) > 512 * 32 * 1024, r.out .. r.err)
      assert.is_true(probe.waited > 0, "s:write never waited")
      assert.is_true(probe.max_pending <= 288 * 1024, "buffered " .. probe.max_pending)
    end)

    it("ends a stream's task when its client goes away", function()
      probe.forever_ticks, probe.forever_saw_false = 0, nil
      local before = srv:stats().client_gone
      local r = client.request(base .. "/test/forever", { timeout = 0.5, no_buffer = true })
      assert.equal(28, r.rc)               -- curl's timeout, mid-stream
      assert.matches('{"tick":1}', r.body)
      assert.is_true(client.drive(function()
        return srv:stats().client_gone == before + 1
      end, 3))
      local ticks = probe.forever_ticks
      client.pump(0.3)
      assert.equal(ticks, probe.forever_ticks)
      assert.equal(0, srv:stats().streams)
    end)
  end)

  describe("limits", function()
    it("cuts off a client that sends its request too slowly", function()
      local s = assert(mcp.httpd.listen({ listen = "127.0.0.1:0", connection_timeout = 1 }))
      local h = python([[
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
t0 = time.time()
s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
try:
    for i in range(40):
        s.sendall(b"X-Drip: 1\r\n")
        time.sleep(0.2)
    print("never cut")
except OSError:
    print("cut %.2f" % (time.time() - t0))
]], port_of(s:addresses()[1]))
      local r = client.wait_raw(h, 15)
      local after = tonumber(r.out:match("cut ([%d.]+)"))
      assert.is_truthy(after, r.out .. r.err)
      assert.is_true(after >= 0.9 and after < 3, "cut after " .. tostring(after))
      assert.equal(1, s:stats().slow_clients)
      s:close()
    end)

    it("ends a handler past its deadline with 504, but lets a stream run on", function()
      local s = assert(mcp.httpd.listen({ listen = "127.0.0.1:0", task_timeout = 0.5 }))
      local b = "http://" .. s:addresses()[1]
      local r = client.request(b .. "/test/sleep?s=2")
      assert.equal(504, r.status)
      assert.equal("deadline_exceeded", r.json.error.code)
      r = client.request(b .. "/test/stream?n=4&every=0.3")
      assert.equal(200, r.status)
      assert.equal(4, select(2, r.body:gsub("\n", "")))
      s:close()
    end)

    it("refuses connections past max_connections", function()
      local s = assert(mcp.httpd.listen({ listen = "127.0.0.1:0", max_connections = 2 }))
      local port = port_of(s:addresses()[1])
      local holders = python([[
import socket, sys, time
a = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
b = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
time.sleep(1.5)
]], port)
      assert.is_true(client.drive(function() return s:stats().connections == 2 end, 3))
      local r = client.request("http://" .. s:addresses()[1] .. "/v1/health")
      assert.equal(0, r.status)
      assert.is_true(s:stats().refused >= 1)
      client.wait_raw(holders)
      assert.is_true(client.drive(function() return s:stats().connections == 0 end, 3))
      r = client.request("http://" .. s:addresses()[1] .. "/v1/health")
      assert.equal(200, r.status)
      s:close()
    end)

    it("stops accepting: requests in flight finish, streams end, new connections fail",
      function()
        local s = assert(mcp.httpd.listen({ listen = "127.0.0.1:0" }))
        local b = "http://" .. s:addresses()[1]
        local slow = client.start(b .. "/test/sleep?s=1")
        local stream = client.start(b .. "/test/forever", { no_buffer = true })
        assert.is_true(client.drive(function()
          return s:stats().in_flight == 2 and s:stats().streams == 1
        end, 3))
        s:stop_accepting()
        local r = client.request(b .. "/v1/health")
        assert.equal(0, r.status)
        r = client.wait(slow)
        assert.equal(200, r.status)
        r = client.wait(stream)
        assert.matches('{"tick":1}', r.body)
        assert.matches("transfer closed", r.err)    -- cut, not a clean end
        s:close()
      end)
  end)

  describe("TLS", function()
    it("speaks TLS 1.3 and refuses older versions", function()
      local s = assert(mcp.httpd.listen({ listen = "127.0.0.1:0", tls_cert = pki.server_cert,
        tls_key = pki.server_key }))
      local b = "https://" .. s:addresses()[1]
      local r = client.request(b .. "/v1/health", { tls = { cacert = pki.ca },
        args = { "-v" } })
      assert.equal(200, r.status)
      assert.matches("TLSv1%.3", r.err)
      r = client.request(b .. "/v1/health", { tls = { cacert = pki.ca, max = "1.2" } })
      assert.equal(0, r.status)
      s:close()
    end)

    it("requires a client certificate signed by client_ca", function()
      local s = assert(mcp.httpd.listen({ listen = "127.0.0.1:0", tls_cert = pki.server_cert,
        tls_key = pki.server_key, client_ca = pki.ca }))
      local b = "https://" .. s:addresses()[1]
      local r = client.request(b .. "/test/echo", { tls = { cacert = pki.ca } })
      assert.equal(403, r.status)
      assert.equal("a client certificate is required", r.json.error.message)
      r = client.request(b .. "/test/echo", { tls = { cacert = pki.ca, cert = pki.other_cert,
        key = pki.other_key } })
      assert.equal(403, r.status)
      assert.matches("not trusted by client_ca", r.json.error.message)
      r = client.request(b .. "/v1/status", { headers = auth(),
        tls = { cacert = pki.ca, cert = pki.client_cert, key = pki.client_key } })
      assert.equal(200, r.status)
      api.route("GET", "/test/whoami", function(req) return 200, { tls = req.tls } end,
        { auth = false })
      r = client.request(b .. "/test/whoami", { tls = { cacert = pki.ca,
        cert = pki.client_cert, key = pki.client_key } })
      assert.equal(200, r.status)
      assert.matches("CN=operator", r.json.tls)
      s:close()
    end)

    it("says which file is wrong when the certificate cannot be read", function()
      local s, err = mcp.httpd.listen({ listen = "127.0.0.1:0",
        tls_cert = dir .. "/missing.crt", tls_key = pki.server_key })
      assert.is_nil(s)
      assert.matches("tls_cert .*missing%.crt", err)
    end)
  end)

  describe("listening", function()
    it("listens on IPv6 addresses in brackets", function()
      local s, err = mcp.httpd.listen({ listen = { "[::1]:0" } })
      if not s then
        pending("no IPv6 loopback here: " .. tostring(err))
        return
      end
      local r = client.request("http://" .. s:addresses()[1] .. "/v1/health")
      assert.equal(200, r.status)
      s:close()
    end)

    it("says what is wrong with a listen address", function()
      local s, err = mcp.httpd.listen({ listen = "::1:9444" })
      assert.is_nil(s)
      assert.matches("IPv6 addresses in brackets", err)
      s, err = mcp.httpd.listen({ listen = "127.0.0.1:99999" })
      assert.is_nil(s)
      assert.matches("bad port", err)
      local port = port_of(srv:addresses()[1])
      s, err = mcp.httpd.listen({ listen = "127.0.0.1:" .. port })
      assert.is_nil(s)
      assert.matches("in use", err)
    end)
  end)

  describe("/metrics", function()
    it("passes promtool check metrics and counts requests by route, method and status",
      function()
        client.request(base .. "/v1/health")
        client.request(base .. "/test/items/x")
        local r = client.request(base .. "/metrics", { headers = auth() })
        assert.equal(200, r.status)
        assert.matches("^text/plain; version=0%.0%.4", r.headers["content-type"])
        local f = assert(io.open(dir .. "/metrics.txt", "w"))
        f:write(r.body)
        f:close()
        local out = sh("promtool check metrics < '" .. dir .. "/metrics.txt' 2>&1; echo rc=$?")
        assert.matches("rc=0$", out)
        assert.matches('mcp_api_requests_total{method="GET",route="/v1/health",status="200"} %d+',
          r.body)
        assert.matches('mcp_api_requests_total{method="GET",route="/test/items/{name}",'
          .. 'status="200"} %d+', r.body)
        assert.matches('mcp_api_request_duration_seconds_bucket{le="%+Inf",method="GET",'
          .. 'route="/v1/health"} %d+', r.body)
        assert.matches("mcp_api_connections %d+", r.body)
      end)
  end)
end)
