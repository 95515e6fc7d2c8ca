-- mcp.api without a server: routing, authentication, bodies, errors and the
-- Prometheus text, by calling api.handle with request tables.
local mcp = require("mcp.core")

-- A request as the C server builds it (without req:stream).
local function req(method, path, opts)
  opts = opts or {}
  local raw, query = path:match("^([^?]*)%??(.*)$")
  local q = {}
  for k, v in query:gmatch("([^&=]+)=?([^&]*)") do q[k] = v end
  return { method = method, raw_path = raw, path = (raw:gsub("%%(%x%x)", function(h)
    return string.char(tonumber(h, 16)) end)), query = q, headers = opts.headers or {},
    body = opts.body or "", remote = "127.0.0.1" }
end

local function decode(status, body, headers)
  return status, body and body ~= "" and mcp.json.decode(body) or nil, headers or {}
end

describe("mcp.api", function()
  local api, verified

  before_each(function()
    package.loaded["mcp.api"] = nil
    package.loaded["mcp.api.base"] = nil
    api = require("mcp.api")
    api.modules = {}
    verified = {}
    package.loaded["mcp.registry"] = { token_verify = function(db, token)
      verified[#verified + 1] = { db = db, token = token }
      if token == "good" then return "alice" end
      return nil
    end }
    mcp.state.db = "the db"
    mcp.state.api = nil
  end)

  after_each(function()
    package.loaded["mcp.registry"] = nil
    package.loaded["mcp.api"] = nil
    mcp.state.db = nil
  end)

  describe("routes", function()
    it("matches literal segments and {name} parameters, decoded", function()
      api.route("GET", "/v1/services/{name}", function(r)
        return 200, { name = r.params.name }
      end, { auth = false })
      local s, b = decode(api.handle(req("GET", "/v1/services/my%20svc")))
      assert.equal(200, s)
      assert.same({ name = "my svc" }, b)
    end)

    it("never lets a {name} match a / even when escaped", function()
      api.route("GET", "/v1/services/{name}", function() return 200, {} end, { auth = false })
      assert.equal(404, (api.handle(req("GET", "/v1/services/a%2Fb"))))
      assert.equal(404, (api.handle(req("GET", "/v1/services/a/b"))))
      assert.equal(404, (api.handle(req("GET", "/v1/services/"))))
    end)

    it("gives {path...} the rest of the path", function()
      api.route("PUT", "/v1/services/{name}/files/{path...}", function(r)
        return 200, r.params
      end, { auth = false })
      local s, b = decode(api.handle(req("PUT", "/v1/services/web/files/a/b%2Fc/d.txt")))
      assert.equal(200, s)
      assert.same({ name = "web", path = "a/b/c/d.txt" }, b)
    end)

    it("prefers the route with more literal segments", function()
      api.route("POST", "/v1/{kind}/sync", function() return 200, { which = "param" } end,
        { auth = false })
      api.route("POST", "/v1/services/sync", function() return 200, { which = "literal" } end,
        { auth = false })
      local _, b = decode(api.handle(req("POST", "/v1/services/sync")))
      assert.equal("literal", b.which)
    end)

    it("answers 405 with the allowed methods, and HEAD like GET", function()
      api.route("GET", "/x", function() return 200, { ok = true } end, { auth = false })
      api.route("DELETE", "/x", function() return 204 end, { auth = false })
      local s, b, h = decode(api.handle(req("POST", "/x")))
      assert.equal(405, s)
      assert.equal("DELETE, GET", h.Allow)
      assert.equal("method_not_allowed", b.error.code)
      assert.equal(200, (api.handle(req("HEAD", "/x"))))
    end)

    it("rejects malformed patterns, unknown options and duplicates when registering", function()
      assert.has_error(function() api.route("GET", "v1/x", function() end) end,
        'api.route: pattern "v1/x" must start with /')
      assert.has_error(function() api.route("FETCH", "/x", function() end) end)
      assert.has_error(function() api.route("GET", "/a/{p...}/b", function() end) end,
        "api.route: /a/{p...}/b: {p...} must be the last segment")
      assert.has_error(function() api.route("GET", "/a/{x}{y}", function() end) end)
      assert.has_error(function() api.route("GET", "/x", function() end, { auht = false }) end)
      api.route("GET", "/x", function() end)
      assert.has_error(function() api.route("GET", "/x", function() end) end,
        "api.route: GET /x is registered twice")
    end)

    it("lists its routes for the OpenAPI check", function()
      api.route("GET", "/a", function() end, { auth = false, summary = "A." })
      api.route("POST", "/b/{id}", function() end)
      assert.same({ { method = "GET", pattern = "/a", auth = false, summary = "A." },
        { method = "POST", pattern = "/b/{id}", auth = true } }, api.routes())
    end)
  end)

  describe("authentication", function()
    before_each(function()
      api.route("GET", "/secret", function(r) return 200, { who = r.token_name } end)
    end)

    it("checks the bearer token against the registry in mcp.state.db", function()
      local s, b = decode(api.handle(req("GET", "/secret",
        { headers = { authorization = "Bearer good" } })))
      assert.equal(200, s)
      assert.equal("alice", b.who)
      assert.same({ { db = "the db", token = "good" } }, verified)
    end)

    it("says whether the token is missing, malformed, or unknown or revoked", function()
      local s, b, h = decode(api.handle(req("GET", "/secret")))
      assert.equal(401, s)
      assert.matches("missing Authorization header", b.error.message)
      assert.matches("^Bearer", h["WWW-Authenticate"])
      s, b = decode(api.handle(req("GET", "/secret",
        { headers = { authorization = "Token good" } })))
      assert.equal(401, s)
      assert.matches("malformed", b.error.message)
      s, b = decode(api.handle(req("GET", "/secret",
        { headers = { authorization = "Bearer bad" } })))
      assert.equal(401, s)
      assert.equal("unknown or revoked token", b.error.message)
    end)

    it("answers 503 while the registry is not open", function()
      mcp.state.db = nil
      local s, b = decode(api.handle(req("GET", "/secret",
        { headers = { authorization = "Bearer good" } })))
      assert.equal(503, s)
      assert.equal("unavailable", b.error.code)
    end)
  end)

  describe("bodies and errors", function()
    it("decodes JSON bodies into req.json, naming the position of a parse error", function()
      api.route("PUT", "/j", function(r) return 200, r.json end, { auth = false, body = "json" })
      local s, b = decode(api.handle(req("PUT", "/j", { body = '{"a":1}',
        headers = { ["content-type"] = "application/json; charset=utf-8" } })))
      assert.equal(200, s)
      assert.same({ a = 1 }, b)
      s, b = decode(api.handle(req("PUT", "/j", { body = '{"a":}' })))
      assert.equal(400, s)
      assert.equal("bad_json", b.error.code)
      assert.matches("line 1 column 6", b.error.message)
    end)

    it("leaves other content types to the handler on routes that take any body", function()
      api.route("PUT", "/any", function(r) return 200, { body = r.body, json = r.json } end,
        { auth = false })
      local s, b = decode(api.handle(req("PUT", "/any", { body = "x = 1",
        headers = { ["content-type"] = "application/toml" } })))
      assert.equal(200, s)
      assert.same({ body = "x = 1" }, b)
    end)

    it("turns errors into the error shape, with api.error, api.raise or a crash", function()
      api.route("GET", "/e1", function()
        return api.error(409, "conflict", "%s is busy", "web")
      end, { auth = false })
      api.route("GET", "/e2", function() api.raise(422, "invalid", "bad %s", "port") end,
        { auth = false })
      api.route("GET", "/e3", function() error("boom") end, { auth = false })
      api.route("GET", "/e4", function() return "oops" end, { auth = false })
      local s, b = decode(api.handle(req("GET", "/e1")))
      assert.same({ 409, { error = { code = "conflict", message = "web is busy" } } }, { s, b })
      s, b = decode(api.handle(req("GET", "/e2")))
      assert.same({ 422, { error = { code = "invalid", message = "bad port" } } }, { s, b })
      s, b = decode(api.handle(req("GET", "/e3")))
      assert.equal(500, s)
      assert.equal("internal", b.error.code)
      assert.matches("GET /e3 failed: .*boom", b.error.message)
      s, b = decode(api.handle(req("GET", "/e4")))
      assert.equal(500, s)
      assert.matches("returned no status", b.error.message)
    end)

    it("sends tables as JSON with a Content-Type, keeping the handler's headers", function()
      api.route("GET", "/h", function() return 200, { a = 1 }, { ["X-A"] = "b" } end,
        { auth = false })
      local s, body, h = api.handle(req("GET", "/h"))
      assert.equal(200, s)
      assert.equal('{"a":1}\n', body)
      assert.same({ ["X-A"] = "b", ["Content-Type"] = "application/json" }, h)
    end)

    it("leaves a module that does not load out, and reports it", function()
      api.modules = { "mcp.api.no_such_module" }
      api.route("GET", "/ok", function() return 200, {} end, { auth = false })
      assert.equal(200, (api.handle(req("GET", "/ok"))))
      assert.matches("no_such_module", api.load_errors()[1])
    end)
  end)

  describe("metrics", function()
    it("counts requests by route pattern, method and status, with latency", function()
      api.route("GET", "/v1/things/{id}", function() return 200, {} end, { auth = false })
      api.handle(req("GET", "/v1/things/1"))
      api.handle(req("GET", "/v1/things/2"))
      api.handle(req("GET", "/nowhere"))
      local text = api.metrics_text()
      assert.matches('mcp_api_requests_total{method="GET",route="/v1/things/{id}",status="200"} 2',
        text, 1, true)
      assert.matches('mcp_api_requests_total{method="GET",route="unmatched",status="404"} 1',
        text, 1, true)
      assert.matches('mcp_api_request_duration_seconds_count{method="GET",'
        .. 'route="/v1/things/{id}"} 2', text, 1, true)
      assert.matches('# TYPE mcp_api_request_duration_seconds histogram', text, 1, true)
    end)

    it("escapes label values and help text", function()
      api.metrics_provider("test", function()
        return { { name = "t_thing", type = "gauge", help = "line one\nback\\slash",
          samples = { { labels = { v = 'a"b\\c\nd' }, value = 1.5 },
            { labels = { v = "inf" }, value = math.huge } } } }
      end)
      local text = api.metrics_text()
      assert.matches("# HELP t_thing line one\\nback\\\\slash\n", text, 1, true)
      assert.matches('t_thing{v="a\\"b\\\\c\\nd"} 1.5\n', text, 1, true)
      assert.matches('t_thing{v="inf"} +Inf\n', text, 1, true)
    end)

    it("leaves out a provider that fails or a family that is malformed", function()
      api.metrics_provider("broken", function() error("nope") end)
      api.metrics_provider("bad name", function()
        return { { name = "9bad", samples = {} }, { name = "good_one", type = "gauge",
          samples = { { value = 2 } } } }
      end)
      local text = api.metrics_text()
      assert.matches("\ngood_one 2\n", text, 1, true)
      assert.is_nil(text:find("9bad", 1, true))
    end)

    it("replaces a provider registered again under the same name", function()
      api.metrics_provider("p", function()
        return { { name = "zz_first", samples = { { value = 1 } } } }
      end)
      api.metrics_provider("p", function()
        return { { name = "zz_second", samples = { { value = 1 } } } }
      end)
      local text = api.metrics_text()
      assert.is_nil(text:find("zz_first", 1, true))
      assert.matches("zz_second 1", text, 1, true)
    end)
  end)
end)
