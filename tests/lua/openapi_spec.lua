-- docs/openapi.yaml and its checker (tests/lib/openapi.lua): the document
-- reads, describes exactly the routes the agent registers, and answers of
-- the framework match their schemas. Against a running agent, the
-- integration suite checks every answer it sees with the same checker.
local mcp = require("mcp.core")
local openapi = require("tests.lib.openapi")

local ROOT = os.getenv("MCP_ROOT") or "."
local SPEC = ROOT .. "/docs/openapi.yaml"

-- mcp.api and its route modules, loaded afresh (route modules register
-- into the mcp.api they required when they loaded).
local function fresh_api()
  for name in pairs(package.loaded) do
    if name == "mcp.api" or name:match("^mcp%.api%.") then package.loaded[name] = nil end
  end
  return require("mcp.api")
end

describe("the YAML subset reader", function()
  it("reads mappings, sequences, scalars, flow lists and block scalars", function()
    local v = openapi.parse_yaml([[
# a comment
a: 1
b: "two # not a comment"  # a comment
c: 'it''s'
d: [x, "y, z", 3]
e:
  - one
  - k: v
    k2: [ ]
  -
    nested: true
f: |
  line 1
  line 2
g: >
  folded
  text
h: {}
"quoted key": null
]])
    assert.equal(1, v.a)
    assert.equal("two # not a comment", v.b)
    assert.equal("it's", v.c)
    assert.same({ "x", "y, z", 3 }, v.d)
    assert.equal("one", v.e[1])
    assert.same({ k = "v", k2 = {} }, v.e[2])
    assert.same({ nested = true }, v.e[3])
    assert.equal("line 1\nline 2\n", v.f)
    assert.equal("folded text\n", v.g)
    assert.same({}, v.h)
    assert.equal(openapi.null, v["quoted key"])
  end)

  it("names the line of what it does not read", function()
    local function err(text)
      local ok, e = pcall(openapi.parse_yaml, text, "x.yaml")
      assert.is_false(ok)
      return e
    end
    assert.equal("x.yaml:2: unexpected indentation", err("a: 1\n  b: 2\n"))
    assert.equal("x.yaml:1: unsupported YAML: &anchor 1", err("a: &anchor 1\n"))
    assert.equal('x.yaml:2: key "a" twice', err("a: 1\na: 2\n"))
  end)
end)

describe("docs/openapi.yaml", function()
  local spec

  setup(function()
    spec = openapi.load(SPEC)
  end)

  it("is OpenAPI 3 with an error response on every operation", function()
    assert.matches("^3%.", spec.openapi)
    local ops = openapi.operations(spec)
    assert.is_true(#ops >= 20)
    for _, o in ipairs(ops) do
      assert.is_table(o.op.responses, o.method .. " " .. o.path)
      local err = openapi.resolve(spec, o.op.responses.default)
      assert.is_table(err, o.method .. " " .. o.path .. " has no default error")
      assert.equal(spec.components.schemas.Error,
        openapi.resolve(spec, err.content["application/json"].schema))
    end
  end)

  it("declares every path parameter and resolves every $ref", function()
    local function walk(node, where)
      if type(node) ~= "table" then return end
      if node["$ref"] then
        local ok, err = pcall(openapi.resolve, spec, node)
        assert.is_true(ok, where .. ": " .. tostring(err))
      end
      for k, v in pairs(node) do walk(v, where .. "/" .. tostring(k)) end
    end
    walk(spec, "#")
    for template, item in pairs(spec.paths) do
      local declared = {}
      for _, p in ipairs(item.parameters or {}) do
        p = openapi.resolve(spec, p)
        if p["in"] == "path" then declared[p.name] = true end
      end
      for name in template:gmatch("{([%w_]+)}") do
        assert.is_true(declared[name] == true, template .. ": {" .. name .. "} not declared")
      end
    end
  end)

  it("documents exactly the routes the agent registers", function()
    local api = fresh_api()
    api.load()
    assert.same({}, api.load_errors())
    local routes, missing, registered = api.routes(), {}, {}
    for _, r in ipairs(routes) do
      local op, template = openapi.find(spec, r.method, r.pattern)
      if not op then
        missing[#missing + 1] = r.method .. " " .. r.pattern
      else
        registered[r.method .. " " .. template] = true
        -- Documented security agrees with the route's auth option.
        local open = op.security and #op.security == 0
        assert.equal(not r.auth, open == true, r.method .. " " .. r.pattern)
      end
    end
    assert.same({}, missing)
    local extra = {}
    for _, o in ipairs(openapi.operations(spec)) do
      if not registered[o.method .. " " .. o.path] then
        extra[#extra + 1] = o.method .. " " .. o.path
      end
    end
    assert.same({}, extra)
  end)
end)

describe("openapi.check_response", function()
  local spec

  setup(function()
    spec = openapi.load(SPEC)
  end)

  it("accepts answers that match and says where one does not", function()
    assert.is_true(openapi.check_response(spec, "GET", "/v1/health", 200,
      "application/json", '{"status":"ok"}'))
    local ok, why = openapi.check_response(spec, "GET", "/v1/health", 200,
      "application/json", '{"status":"fine"}')
    assert.is_nil(ok)
    assert.equal('GET /v1/health -> 200: $.status: "fine" is not one of "ok"', why)
    ok, why = openapi.check_response(spec, "GET", "/v1/ps", 200, "application/json",
      '{"containers":[{"container":"a-b","state":"running","uptime":"long"}]}')
    assert.is_nil(ok)
    assert.equal("GET /v1/ps -> 200: $.containers[1].uptime: expected integer, got string", why)
  end)

  it("checks errors against the error shape, on any path", function()
    assert.is_true(openapi.check_response(spec, "DELETE", "/v1/services/web", 404,
      "application/json", '{"error":{"code":"not_found","message":"no service"}}'))
    assert.is_true(openapi.check_response(spec, "GET", "/v2/nothing", 404,
      "application/json", '{"error":{"code":"not_found","message":"no such endpoint"}}'))
    local ok, why = openapi.check_response(spec, "GET", "/v1/status", 401,
      "application/json", '{"error":{"message":"x"}}')
    assert.is_nil(ok)
    assert.matches("%$%.error: code is required", why)
    ok, why = openapi.check_response(spec, "GET", "/v2/nothing", 200, "application/json", "{}")
    assert.is_nil(ok)
    assert.equal("GET /v2/nothing is not documented", why)
  end)

  it("checks each NDJSON line, and a rest parameter spanning segments", function()
    assert.is_true(openapi.check_response(spec, "GET", "/v1/services/web/logs", 200,
      "application/x-ndjson", '{"container":"web-web","stream":"stdout","line":"hi"}\n'))
    local ok, why = openapi.check_response(spec, "GET", "/v1/services/web/logs", 200,
      "application/x-ndjson", '{"container":"web-web","line":"a"}\n{"container":1,"line":"b"}\n')
    assert.is_nil(ok)
    assert.matches("line 2%.container: expected string", why)
    assert.is_true(openapi.check_response(spec, "GET", "/v1/services/web/files/etc/a/b.toml",
      200, "application/octet-stream", "bytes"))
    ok, why = openapi.check_response(spec, "GET", "/v1/services/web/files/a.toml", 200,
      "text/html", "<p>")
    assert.is_nil(ok)
    assert.matches('content type "text/html" is not documented', why)
  end)

  it("passes the framework's own answers", function()
    package.loaded["mcp.registry"] = { token_verify = function(_, t)
      return t == "good" and "tester" or nil
    end }
    mcp.state.db = "stub"
    local api = fresh_api()
    api.modules = { "mcp.api.base" }
    local function check(method, path, headers)
      local status, body, h = api.handle({ method = method, path = path, raw_path = path,
        query = {}, headers = headers or {}, body = "" })
      local ok, why = openapi.check_response(spec, method, path, status,
        (h or {})["Content-Type"], body)
      assert.is_true(ok, why)
      return status
    end
    assert.equal(200, check("GET", "/v1/health"))
    assert.equal(401, check("GET", "/v1/status"))
    assert.equal(200, check("GET", "/v1/status", { authorization = "Bearer good" }))
    assert.equal(200, check("GET", "/metrics", { authorization = "Bearer good" }))
    assert.equal(405, check("POST", "/v1/health"))
    assert.equal(404, check("GET", "/nothing"))
    package.loaded["mcp.registry"] = nil
    fresh_api()
    mcp.state.db = nil
  end)
end)
