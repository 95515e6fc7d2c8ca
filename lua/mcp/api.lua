-- mcp.api: the HTTP API's framework: routes, authentication, errors, metrics.
--
-- The C server (core/httpd.c) collects a request and runs api.handle(req) in
-- a task of its own; whatever the handler waits on (Podman, the registry,
-- mcp.sleep) suspends only that request. Endpoints live in the modules
-- listed below; each registers its routes when it loads:
--
--   local api = require("mcp.api")
--   api.route("GET", "/v1/services/{name}", function(req)
--     local svc = find(req.params.name)
--     if not svc then return api.error(404, "not_found", "no service %q", req.params.name) end
--     return 200, svc
--   end)
--
-- A handler returns status, body, headers: a table body is sent as JSON, a
-- string as it is. Every error leaves as {"error": {"code", "message"}}.
-- Counters that must outlive a reload of this file live in mcp.state.api.
local mcp = require("mcp.core")

local api = {}

-- The modules that register routes, loaded by api.load() in this order.
api.modules = {
  "mcp.api.base",
  "mcp.api.services",
  "mcp.api.monitor",
  "mcp.api.agent_metrics",
  "mcp.api.reload",
}

-- Request latency buckets (seconds) of mcp_api_request_duration_seconds.
api.BUCKETS = { 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30 }

local METHODS = { GET = true, HEAD = true, POST = true, PUT = true, DELETE = true,
  PATCH = true, OPTIONS = true }

local routes = {}           -- in registration order
local providers = {}        -- metrics providers: { name =, fn = }
local status_fields = {}    -- /v1/status contributors: { name =, fn = }
local load_errors = {}
local loaded = false

----------------------------------------------------------------------------
-- Errors
----------------------------------------------------------------------------

local error_mt = { __tostring = function(e)
  return string.format("%d %s: %s", e.status, e.code, e.message)
end }

local function format_msg(fmt, ...)
  if select("#", ...) > 0 then return string.format(fmt, ...) end
  return tostring(fmt)
end

-- api.error(status, code, fmt, ...) -> status, body: the error shape, to return.
function api.error(status, code, fmt, ...)
  return status, { error = { code = code, message = format_msg(fmt, ...) } }
end

-- api.raise(status, code, fmt, ...): the same, raised from deep inside a
-- handler; api.handle turns it into the response (it is not logged).
function api.raise(status, code, fmt, ...)
  error(setmetatable({ status = status, code = code, message = format_msg(fmt, ...) },
    error_mt), 0)
end

local function is_api_error(e)
  return getmetatable(e) == error_mt
end

----------------------------------------------------------------------------
-- Routes
----------------------------------------------------------------------------

-- Splits a path on "/" (the leading one dropped): "/a/b" -> {"a", "b"}.
local function split(path)
  local segs = {}
  for seg in (path:sub(2) .. "/"):gmatch("([^/]*)/") do segs[#segs + 1] = seg end
  return segs
end

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function parse_pattern(pattern)
  if type(pattern) ~= "string" or pattern:sub(1, 1) ~= "/" then
    error(string.format("api.route: pattern %q must start with /", tostring(pattern)), 3)
  end
  local segs, names = {}, {}
  local parts = split(pattern)
  for i, seg in ipairs(parts) do
    local name, rest = seg:match("^{([%a_][%w_]*)(%.?%.?%.?)}$")
    if name then
      if rest ~= "" and rest ~= "..." then
        error(string.format("api.route: %s: bad parameter %q", pattern, seg), 3)
      end
      if rest == "..." and i ~= #parts then
        error(string.format("api.route: %s: {%s...} must be the last segment", pattern,
          name), 3)
      end
      if names[name] then
        error(string.format("api.route: %s: parameter {%s} twice", pattern, name), 3)
      end
      names[name] = true
      segs[i] = { param = name, rest = rest == "..." }
    elseif seg:find("[{}]") then
      error(string.format("api.route: %s: bad segment %q (parameters are {name} or "
        .. "{name...})", pattern, seg), 3)
    else
      segs[i] = { literal = seg }
    end
  end
  return segs
end

local ROUTE_OPTS = { auth = true, body = true, summary = true, stream = true }

-- api.route(method, pattern, handler [, opts]): registers an endpoint.
-- pattern: literal segments and {name} (one segment, never containing "/")
-- or a last {name...} (the rest of the path, one or more segments).
-- opts: auth = false (no token needed), body = "json" (a JSON body expected:
-- decoded into req.json; other content types get 415), summary = "...".
function api.route(method, pattern, handler, opts)
  if type(method) ~= "string" or not METHODS[method] then
    error(string.format("api.route: method %q is not an HTTP method", tostring(method)), 2)
  end
  if type(handler) ~= "function" then
    error(string.format("api.route: %s %s: handler must be a function", method,
      tostring(pattern)), 2)
  end
  opts = opts or {}
  for k in pairs(opts) do
    if not ROUTE_OPTS[k] then
      error(string.format("api.route: %s %s: unknown option %q (expected auth, body, "
        .. "stream, summary)", method, pattern, tostring(k)), 2)
    end
  end
  local segs = parse_pattern(pattern)
  for _, r in ipairs(routes) do
    if r.method == method and r.pattern == pattern then
      error(string.format("api.route: %s %s is registered twice", method, pattern), 2)
    end
  end
  local literals = 0
  for _, s in ipairs(segs) do if s.literal then literals = literals + 1 end end
  routes[#routes + 1] = { method = method, pattern = pattern, handler = handler,
    opts = opts, segs = segs, literals = literals }
end

-- api.routes() -> { {method=, pattern=, auth=, summary=}, ... } in
-- registration order (for the OpenAPI check and the docs).
function api.routes()
  api.load()
  local out = {}
  for _, r in ipairs(routes) do
    out[#out + 1] = { method = r.method, pattern = r.pattern, auth = r.opts.auth ~= false,
      summary = r.opts.summary }
  end
  return out
end

-- Matches the raw path's segments against a route. Returns params or nil.
local function match(route, segs)
  local params = {}
  local rs = route.segs
  for i, s in ipairs(rs) do
    local seg = segs[i]
    if seg == nil then return nil end
    if s.literal then
      if unescape(seg) ~= s.literal then return nil end
    elseif s.rest then
      local parts = {}
      for j = i, #segs do
        if segs[j] == "" then return nil end
        parts[#parts + 1] = unescape(segs[j])
      end
      params[s.param] = table.concat(parts, "/")
      return params
    else
      local v = unescape(seg)
      if v == "" or v:find("/", 1, true) then return nil end
      params[s.param] = v
    end
  end
  if #segs ~= #rs then return nil end
  return params
end

-- Finds the route for method and raw path: route, params; or nil and the
-- methods the path allows (empty: unknown path). The route with the most
-- literal segments wins; HEAD falls back to GET.
function api.find(method, raw_path)
  local segs = split(raw_path)
  local found, allowed, seen = {}, {}, {}
  for _, r in ipairs(routes) do
    local params = match(r, segs)
    if params then
      if not seen[r.method] then
        seen[r.method] = true
        allowed[#allowed + 1] = r.method
      end
      local best = found[r.method]
      if not best or r.literals > best[1].literals then found[r.method] = { r, params } end
    end
  end
  local hit = found[method] or (method == "HEAD" and found.GET)
  if hit then return hit[1], hit[2] end
  table.sort(allowed)
  return nil, allowed
end

-- api.load(): requires every module of api.modules once (they register
-- their routes). A module that fails is logged and left out; the others
-- still serve, and the errors show in /v1/status.
function api.load()
  if loaded then return end
  loaded = true
  for _, name in ipairs(api.modules) do
    local ok, err = pcall(require, name)
    if not ok then
      load_errors[#load_errors + 1] = tostring(err)
      mcp.log.error("api: module %s does not load: %s", name, tostring(err))
    end
  end
end

function api.load_errors()
  return load_errors
end

----------------------------------------------------------------------------
-- Metrics
----------------------------------------------------------------------------

local function metrics_state()
  local s = mcp.state.api
  if not s then
    s = { requests = {}, durations = {} }
    mcp.state.api = s
  end
  return s
end

local function observe(route, method, status, seconds)
  local s = metrics_state()
  local key = route .. " " .. method .. " " .. status
  local c = s.requests[key]
  if not c then
    c = { route = route, method = method, status = tostring(status), n = 0 }
    s.requests[key] = c
  end
  c.n = c.n + 1
  local hkey = route .. " " .. method
  local h = s.durations[hkey]
  if not h then
    h = { route = route, method = method, counts = {}, sum = 0, count = 0 }
    for i = 1, #api.BUCKETS do h.counts[i] = 0 end
    s.durations[hkey] = h
  end
  for i, le in ipairs(api.BUCKETS) do
    if seconds <= le then h.counts[i] = h.counts[i] + 1 end
  end
  h.sum = h.sum + seconds
  h.count = h.count + 1
end

-- api.metrics_provider([name,] fn): fn() returns a list of metric families
-- { name =, help =, type = "counter"|"gauge"|"histogram"|"summary"|"untyped",
--   samples = { { labels = {k = v}, value = n [, suffix = "_bucket"] }, ... } }.
-- A provider registered again under the same name replaces the old one.
function api.metrics_provider(name, fn)
  if type(name) == "function" then name, fn = nil, name end
  if type(fn) ~= "function" then
    error("api.metrics_provider: expected a function", 2)
  end
  if name then
    for _, p in ipairs(providers) do
      if p.name == name then p.fn = fn return end
    end
  end
  providers[#providers + 1] = { name = name, fn = fn }
end

-- Samples of one histogram series: buckets (upper bounds), cumulative
-- counts, sum and count, with labels.
function api.histogram_samples(labels, buckets, counts, sum, count)
  local out = {}
  for i, le in ipairs(buckets) do
    local l = {}
    for k, v in pairs(labels) do l[k] = v end
    l.le = le
    out[#out + 1] = { labels = l, value = counts[i], suffix = "_bucket" }
  end
  local l = {}
  for k, v in pairs(labels) do l[k] = v end
  l.le = "+Inf"
  out[#out + 1] = { labels = l, value = count, suffix = "_bucket" }
  out[#out + 1] = { labels = labels, value = sum, suffix = "_sum" }
  out[#out + 1] = { labels = labels, value = count, suffix = "_count" }
  return out
end

-- The API's own families: requests by route, method and status, latency.
local function request_metrics()
  local s = metrics_state()
  local req = { name = "mcp_api_requests_total", type = "counter",
    help = "API requests answered, by route pattern, method and status.", samples = {} }
  local keys = {}
  for k in pairs(s.requests) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local c = s.requests[k]
    req.samples[#req.samples + 1] = { labels = { route = c.route, method = c.method,
      status = c.status }, value = c.n }
  end
  local dur = { name = "mcp_api_request_duration_seconds", type = "histogram",
    help = "Time from a request's arrival in Lua to its answer (to the start of a "
      .. "streamed answer).", samples = {} }
  keys = {}
  for k in pairs(s.durations) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local h = s.durations[k]      -- counts are cumulative already
    for _, smp in ipairs(api.histogram_samples({ route = h.route, method = h.method },
        api.BUCKETS, h.counts, h.sum, h.count)) do
      dur.samples[#dur.samples + 1] = smp
    end
  end
  return { req, dur }
end
api.metrics_provider("api", request_metrics)

local function escape_label(v)
  return (tostring(v):gsub("[\\\"\n]", { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

local function escape_help(v)
  return (tostring(v):gsub("[\\\n]", { ["\\"] = "\\\\", ["\n"] = "\\n" }))
end

local function format_value(v)
  if type(v) == "boolean" then return v and "1" or "0" end
  if type(v) ~= "number" then
    error(string.format("sample value must be a number, got %s", type(v)), 0)
  end
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return string.format("%d", v) end
  -- The shortest form that reads back the same: 0.005, not 0.0050000000000000001.
  for digits = 15, 17 do
    local text = string.format("%." .. digits .. "g", v)
    if tonumber(text) == v then return text end
  end
  return string.format("%.17g", v)
end

-- A copy of v whose strings that are not valid UTF-8 have their bytes
-- outside printable ASCII written \xNN.
local function printable_json(v, depth)
  depth = depth or 0
  if type(v) == "string" then
    if v:find("[\128-\255%z]") then
      return (v:gsub("[^\32-\126\t\n]", function(c) return string.format("\\x%02X", c:byte()) end))
    end
    return v
  end
  if type(v) ~= "table" or depth > 100 then return v end
  local out = {}
  for k, x in pairs(v) do out[printable_json(k, depth + 1)] = printable_json(x, depth + 1) end
  return setmetatable(out, getmetatable(v))
end

-- A path as it can appear in a JSON message: bytes that are not printable
-- ASCII are written \xNN (the path may hold any byte a client sent).
local function printable(s)
  return (s:gsub("[^\32-\126]", function(c) return string.format("\\x%02X", c:byte()) end))
end

local TYPES = { counter = true, gauge = true, histogram = true, summary = true,
  untyped = true }

-- Renders one family; raises with what is wrong.
local function render_family(f, out)
  if type(f) ~= "table" or type(f.name) ~= "string"
      or not f.name:match("^[%a_:][%w_:]*$") then
    error(string.format("bad metric name %q", tostring(type(f) == "table" and f.name)), 0)
  end
  local ftype = f.type or "untyped"
  if not TYPES[ftype] then
    error(string.format("%s: bad type %q", f.name, tostring(ftype)), 0)
  end
  local lines = {}
  lines[#lines + 1] = string.format("# HELP %s %s", f.name, escape_help(f.help or f.name))
  lines[#lines + 1] = string.format("# TYPE %s %s", f.name, ftype)
  for _, smp in ipairs(f.samples or {}) do
    local names = {}
    for k in pairs(smp.labels or {}) do
      if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") or k:sub(1, 2) == "__" then
        error(string.format("%s: bad label name %q", f.name, tostring(k)), 0)
      end
      names[#names + 1] = k
    end
    table.sort(names)
    local parts = {}
    for _, k in ipairs(names) do
      local v = smp.labels[k]
      if k == "le" and type(v) == "number" then v = format_value(v) end
      parts[#parts + 1] = string.format('%s="%s"', k, escape_label(v))
    end
    local suffix = smp.suffix or ""
    if suffix ~= "" and not suffix:match("^[%w_:]+$") then
      error(string.format("%s: bad suffix %q", f.name, suffix), 0)
    end
    lines[#lines + 1] = string.format("%s%s%s %s", f.name, suffix,
      #parts > 0 and "{" .. table.concat(parts, ",") .. "}" or "", format_value(smp.value))
  end
  out[#out + 1] = table.concat(lines, "\n")
end

-- api.metrics_text() -> the Prometheus text exposition of every provider.
-- A provider that fails (or returns a malformed family) is logged and left
-- out, so one broken module cannot take /metrics down.
function api.metrics_text()
  api.load()
  local out, seen = {}, {}
  for i, p in ipairs(providers) do
    local ok, fams = pcall(p.fn)
    if not ok or type(fams) ~= "table" then
      mcp.log.error("metrics provider %s failed: %s", p.name or i,
        ok and "it returned " .. type(fams) or tostring(fams))
    else
      for _, f in ipairs(fams) do
        local name = type(f) == "table" and f.name
        if name and seen[name] then
          mcp.log.error("metrics provider %s: family %s is already provided", p.name or i,
            tostring(name))
        else
          local rendered = {}
          local rok, err = pcall(render_family, f, rendered)
          if rok then
            seen[name] = true
            out[#out + 1] = rendered[1]
          else
            mcp.log.error("metrics provider %s: %s", p.name or i, tostring(err))
          end
        end
      end
    end
  end
  return table.concat(out, "\n") .. "\n"
end

----------------------------------------------------------------------------
-- /v1/status contributors
----------------------------------------------------------------------------

-- api.status_field(name, fn): /v1/status gets status[name] = fn(). An error
-- in fn shows as { error = message } in its place.
function api.status_field(name, fn)
  for _, f in ipairs(status_fields) do
    if f.name == name then f.fn = fn return end
  end
  status_fields[#status_fields + 1] = { name = name, fn = fn }
end

function api.status_fields()
  return status_fields
end

----------------------------------------------------------------------------
-- Streaming helpers
----------------------------------------------------------------------------

-- api.wants_stream(req) -> true when the client asked for progress as it
-- happens: Accept: application/x-ndjson, or ?stream=1.
function api.wants_stream(req)
  local accept = req.headers and req.headers.accept or ""
  local q = req.query and req.query.stream
  return accept:find("application/x-ndjson", 1, true) ~= nil
    or q == "1" or q == "true"
end

local ndjson_mt = { __index = {
  -- out:send(value) -> true, or false once the client is gone.
  send = function(self, v)
    return self.s:write(mcp.json.encode(v) .. "\n")
  end,
  close = function(self) self.s:close() end,
  alive = function(self) return self.s:alive() end,
} }

-- api.ndjson(req [, status [, headers]]) -> out (out:send(v), out:close()),
-- or nil, err when the client is gone: newline-delimited JSON, chunked.
function api.ndjson(req, status, headers)
  local h = { ["Content-Type"] = "application/x-ndjson" }
  for k, v in pairs(headers or {}) do h[k] = v end
  local s, err = req:stream(status or 200, h)
  if not s then return nil, err end
  return setmetatable({ s = s }, ndjson_mt)
end

----------------------------------------------------------------------------
-- Handling a request
----------------------------------------------------------------------------

local function content_type(req)
  local ct = req.headers["content-type"]
  return ct and ct:lower():match("^%s*([^;%s]+)") or nil
end

local function is_json_type(ct)
  return ct == "application/json" or (ct ~= nil and ct:match("%+json$") ~= nil)
end

-- Checks the bearer token. Returns nil, or status, body, headers to answer.
local function authenticate(req)
  local challenge = { ["WWW-Authenticate"] = 'Bearer realm="mcp-agent"' }
  local h = req.headers.authorization
  if not h or h == "" then
    local s, b = api.error(401, "unauthorized", "missing Authorization header: send "
      .. "\"Authorization: Bearer <token>\" (tokens come from `mcp-agent token create`)")
    return s, b, challenge
  end
  local token = h:match("^[Bb][Ee][Aa][Rr][Ee][Rr] +([%w%-%._~%+/]+=*) *$")
  if not token then
    local s, b = api.error(401, "unauthorized", "malformed Authorization header: expected "
      .. "\"Bearer <token>\"")
    return s, b, { ["WWW-Authenticate"] = 'Bearer realm="mcp-agent", error="invalid_request"' }
  end
  local db = mcp.state.db
  if not db then
    return api.error(503, "unavailable", "the registry is not open: tokens cannot be "
      .. "checked yet")
  end
  local ok, name = pcall(require("mcp.registry").token_verify, db, token)
  if not ok then
    mcp.log.error("api: token check failed: %s", tostring(name))
    return api.error(500, "internal", "the token could not be checked: %s", tostring(name))
  end
  if not name then
    local s, b = api.error(401, "unauthorized", "unknown or revoked token")
    return s, b, { ["WWW-Authenticate"] = 'Bearer realm="mcp-agent", error="invalid_token"' }
  end
  req.token_name = name
  return nil
end

-- Decodes a JSON body. Returns nil, or status, body to answer.
local function decode_body(req, route)
  local ct = content_type(req)
  local want = route.opts.body == "json"
  if req.body == "" then return nil end
  if is_json_type(ct) or (want and ct == nil) then
    local v, err = mcp.json.decode(req.body)
    if v == nil then
      return api.error(400, "bad_json", "the request body is not valid JSON: %s",
        (tostring(err):gsub("^json: ", "")))
    end
    req.json = v
  elseif want then
    return api.error(415, "unsupported_media_type", "expected a JSON body "
      .. "(Content-Type: application/json), got %s", ct)
  end
  return nil
end

local function traceback(e)
  if is_api_error(e) then return e end
  return debug.traceback(tostring(e), 2)
end

-- Turns a handler's results into what the C server sends: status, string, headers.
local function finish(req, label, status, body, headers)
  if type(status) ~= "number" then
    mcp.log.error("api %s %s: the handler returned %s instead of a status", req.method,
      label, type(status))
    status, body, headers = api.error(500, "internal", "the handler of %s %s returned no "
      .. "status", req.method, label)
  elseif headers ~= nil and type(headers) ~= "table" then
    status, body, headers = api.error(500, "internal", "the handler of %s %s returned "
      .. "headers as a %s", req.method, label, type(headers))
  elseif body ~= nil and type(body) ~= "string" and type(body) ~= "table" then
    status, body, headers = api.error(500, "internal", "the handler of %s %s returned a %s "
      .. "body", req.method, label, type(body))
  end
  if type(body) == "table" then
    local ok, text = pcall(mcp.json.encode, body, { sort = true })
    if not ok and tostring(text):find("UTF-8", 1, true) then
      -- A message quoting what a client sent may hold bytes JSON cannot:
      -- show them as \xNN rather than fail the answer.
      ok, text = pcall(mcp.json.encode, printable_json(body), { sort = true })
    end
    if not ok then
      mcp.log.error("api %s %s: %s", req.method, label, tostring(text))
      status, headers = 500, nil
      text = mcp.json.encode(select(2, api.error(500, "internal", "the response of %s %s "
        .. "is not JSON: %s", req.method, label, tostring(text))), { sort = true })
    end
    local h = {}
    local has_type = false
    for k, v in pairs(headers or {}) do
      h[k] = v
      if k:lower() == "content-type" then has_type = true end
    end
    if not has_type then h["Content-Type"] = "application/json" end
    return status, text .. "\n", h
  end
  return status, body, headers
end

local function dispatch(req, route, params, stream_state)
  req.params = params
  local s, b, h
  if route.opts.auth ~= false then
    s, b, h = authenticate(req)
    if s then return s, b, h end
  end
  s, b = decode_body(req, route)
  if s then return s, b end
  local res = { xpcall(route.handler, traceback, req) }
  if not res[1] then
    local e = res[2]
    if stream_state.started then
      -- The status line is gone: the error ends the stream as its last line.
      local msg = is_api_error(e) and e.message or tostring(e):match("^[^\n]*")
      if not is_api_error(e) then
        mcp.log.error("api %s %s: %s", req.method, route.pattern, tostring(e))
      end
      stream_state.s:write(mcp.json.encode({ error = { code = is_api_error(e) and e.code
        or "internal", message = msg } }) .. "\n")
      stream_state.s:close()
      return nil
    end
    if is_api_error(e) then return api.error(e.status, e.code, "%s", e.message) end
    mcp.log.error("api %s %s: %s", req.method, route.pattern, tostring(e))
    return api.error(500, "internal", "%s %s failed: %s", req.method, route.pattern,
      tostring(e):match("^[^\n]*"))
  end
  if stream_state.started then
    stream_state.s:close()      -- a handler that returns has finished its stream
    return nil
  end
  return res[2], res[3], res[4]
end

-- api.handle(req) -> status, body (string), headers: called by the C server
-- in a task per request.
function api.handle(req)
  local t0 = mcp.timer.monotime()
  api.load()
  local route, params = api.find(req.method, req.raw_path)
  local label = route and route.pattern or "unmatched"
  local status, body, headers
  local stream_state = { started = false }
  if not route then
    if #params == 0 then
      status, body = api.error(404, "not_found", "no such endpoint: %s", printable(req.path))
    else
      status, body = api.error(405, "method_not_allowed", "%s is not allowed on %s "
        .. "(allowed: %s)", printable(req.method), printable(req.path),
        table.concat(params, ", "))
      headers = { Allow = table.concat(params, ", ") }
    end
  else
    -- Record a stream's status when it starts: the handler may run for long.
    local raw_stream = req.stream
    setmetatable(req, { __index = { stream = function(self, st, h)
      local s, err = raw_stream(self, st, h)
      if s then
        stream_state.started, stream_state.s = true, s
        observe(label, req.method, st, mcp.timer.monotime() - t0)
      end
      return s, err
    end } })
    status, body, headers = dispatch(req, route, params, stream_state)
    if stream_state.started then return nil end
  end
  status, body, headers = finish(req, label, status, body, headers)
  observe(label, req.method, status, mcp.timer.monotime() - t0)
  return status, body, headers
end

return api
