-- fuzz/lua/api.lua: the driver of api_fuzz.c. The input is one HTTP request
-- in a plain text form (what a seed in fuzz/corpus/api looks like):
--
--   METHOD /path?query
--   Header-Name: value
--   ...
--   <empty line>
--   body
--
-- It becomes the req table core/httpd.c builds (method, raw_path, path,
-- raw_query, query, headers with lower-case names, body, a req:stream) and
-- goes through mcp.api.handle in the run's task, as a request does in the
-- agent. The valid bearer token is sent unless the input has its own
-- Authorization header (or "X-Fuzz-Auth: none").
--
-- Only routes that do not reach Podman run (the others are answered by the
-- router alone: 404, 405 and their errors still run). A reload that a
-- handler asks for is stood in for, and what a handler wrote (definitions,
-- files under /srv/fuzzsvc) is undone after each input, so every input
-- starts from the same agent.
--
-- Checked: handle answers a status in 100..599 with a string body (or
-- streams and closes its stream); an error is JSON {"error": {"code",
-- "message"}}; a 500 "internal" (a handler raised) is a finding; a file PUT
-- that succeeded wrote inside /srv/fuzzsvc.
local mcp = require("mcp.core")
local registry = require("mcp.registry")

local driver = {}

local SVC = "fuzzsvc"
local SRV = "/srv/" .. SVC
local DEFINITION = [==[
name = "fuzzsvc"
node = "fuzz"
[[components]]
name = "web"
image = "localhost/mcp-test:1.0"
cmd = ["httpd", "-f", "-p", "8080", "-h", "/www"]
[[components.routes]]
port = 8080
]==]

-- Routes whose handler talks to Podman: the router still matches them.
local PODMAN = {
  ["GET /v1/status"] = true, ["GET /v1/ps"] = true,
  ["GET /v1/services/{name}"] = true, ["DELETE /v1/services/{name}"] = true,
  ["POST /v1/services/{name}/deploy"] = true, ["POST /v1/services/{name}/stop"] = true,
  ["POST /v1/services/{name}/start"] = true, ["POST /v1/services/{name}/restart"] = true,
  ["POST /v1/adopt"] = true, ["POST /v1/purge"] = true, ["POST /v1/recover"] = true,
  ["GET /v1/services/{name}/logs"] = true,
}

local token, services_dir, gen

function driver.setup(dir)
  local s = mcp.state
  s.metrics, s.locks, s.started = s.metrics or {}, s.locks or {}, s.started or mcp.now()
  local db = assert(registry.open(dir .. "/data/mcp.db"))
  s.db = db
  token = assert(registry.token_create(db, "fuzz"))
  services_dir = mcp.config.agent.services_dir
  assert(mcp.fs.write(services_dir, SVC .. ".toml", DEFINITION))
  -- The files routes write under /srv/fuzzsvc (emptied after each input);
  -- without the right to create it they only answer errors.
  mcp.fs.mkdir(SRV, 448)
  gen = assert(require("mcp.reload").run("fuzz"))
  -- The definition is in the registry too, as after a deploy.
  local def = gen.definitions[SVC]
  registry.service_put(db, def, "fuzz", require("mcp.planner").spec_hash(def))
  -- Reloads stand in: the generation stays the one built here.
  local agent = require("mcp.agent")
  agent.reload = function()
    return { generation = gen.id, previous = gen.id, files = gen.files, took_ms = 0 }
  end
end

-- The request table, as core/httpd.c's push_req builds it.
local function unescape(s, plus)
  if plus then s = s:gsub("%+", " ") end
  local bad = false
  s = s:gsub("%%(..)", function(h)
    local n = tonumber(h, 16)
    if not n or not h:match("^%x%x$") or n == 0 then bad = true return "" end
    return string.char(n)
  end)
  if bad or s:find("%%") then return nil end
  return s
end

local function parse(input)
  local head, body = input:match("^(.-)\r?\n\r?\n(.*)$")
  if not head then head, body = input, "" end
  if head:find("%z") then return nil end    -- the URI and headers are C strings
  local lines = {}
  for l in (head .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = (l:gsub("\r$", "")) end
  local method, uri = (lines[1] or ""):match("^(%S+) (%S+)")
  if not method or uri:sub(1, 1) ~= "/" then return nil end
  local raw_path, raw_query = uri:match("^([^?]*)%??(.*)$")
  local path = unescape(raw_path, false)
  if not path then return nil end           -- httpd answers 400 itself
  local query = {}
  for part in raw_query:gmatch("[^&]+") do
    local k, v = part:match("^([^=]*)=?(.*)$")
    k, v = unescape(k, true), unescape(v, true)
    if k == nil or v == nil then return nil end
    if k ~= "" then query[k] = v end
  end
  local headers = {}
  for i = 2, #lines do
    local k, v = lines[i]:match("^([^:]+):%s*(.-)%s*$")
    if k and #k < 256 then
      k = k:lower()
      headers[k] = headers[k] and (headers[k] .. ", " .. v) or v
    end
  end
  if headers["x-fuzz-auth"] == "none" then
    headers["x-fuzz-auth"] = nil
  elseif not headers.authorization then
    headers.authorization = "Bearer " .. token
  end
  return { method = method, raw_path = raw_path, path = path, raw_query = raw_query,
    query = query, headers = headers, body = body, remote = "127.0.0.1", remote_port = 1,
    scheme = "http" }
end

-- A stream whose client reads three writes, or is asked once whether it is
-- still there, and then goes away: a handler that follows
-- (events?follow=1) must notice and end.
local function stream_for(req, st)
  setmetatable(req, { __index = { stream = function(_, status, headers)
    if st.started then error("req:stream called twice", 2) end
    if type(status) ~= "number" or (headers ~= nil and type(headers) ~= "table") then
      error("req:stream(status, headers): bad arguments", 2)
    end
    st.started = true
    local s = {}
    function s.write(_, data)
      if st.closed then error("write after close", 2) end
      if type(data) ~= "string" then error("write of a " .. type(data), 2) end
      st.writes = st.writes + 1
      return st.writes <= 3
    end
    function s.close() st.closed = true end
    function s.alive()
      st.polls = st.polls + 1
      return not st.closed and st.writes < 3 and st.polls < 2
    end
    return s
  end } })
end

local function fail(fmt, ...) return false, string.format(fmt, ...) end

local function check_error_body(status, body)
  if status < 400 then return true end
  local j = type(body) == "string" and mcp.json.decode(body)
  if type(j) ~= "table" or type(j.error) ~= "table" or type(j.error.code) ~= "string"
      or type(j.error.message) ~= "string" then
    return fail("a %d whose body is not {error: {code, message}}: %s", status,
      tostring(body):sub(1, 300))
  end
  if status == 500 and j.error.code == "internal" then
    return fail("500 internal: %s", j.error.message)
  end
  return true
end

-- Puts back what a handler changed: definition files and /srv/fuzzsvc.
local function undo(req)
  local names = mcp.fs.listdir(services_dir) or {}
  for _, n in ipairs(names) do
    if n ~= SVC .. ".toml" then mcp.fs.remove(services_dir, n, { missing_ok = true }) end
  end
  if mcp.fs.read(services_dir, SVC .. ".toml") ~= DEFINITION then
    mcp.fs.write(services_dir, SVC .. ".toml", DEFINITION)
  end
  if req.method == "PUT" and req.path:find("/files/", 1, true) then
    -- Without a fork: forking a sanitized process costs more than a run.
    local function empty(rel)
      for _, e in ipairs(mcp.fs.list(SRV, rel) or {}) do
        local p = rel == "." and e.name or rel .. "/" .. e.name
        if e.type == "dir" then empty(p) end
        mcp.fs.remove(SRV, p, { missing_ok = true })
      end
    end
    empty(".")
  end
  mcp.state.gen = gen
end

local function check_file_put(req, status)
  if status ~= 200 then return true end
  local rel = req.path:match("^/v1/services/" .. SVC .. "/files/(.+)$")
  if not rel then return true end
  local norm = require("mcp.definition").normalize_path(SRV .. "/" .. rel)
  if norm:sub(1, #SRV + 1) ~= SRV .. "/" then
    return fail("PUT %s answered 200 for a path outside %s", req.path, SRV)
  end
  local data = mcp.fs.read_file(norm)
  if data ~= req.body then
    return fail("PUT %s answered 200 but %s does not hold the body", req.path, norm)
  end
  return true
end

function driver.run(input)
  local req = parse(input)
  if not req then return true end
  -- Looked up as core/httpd.c does: a reload installs a new generation of
  -- the library, with its own mcp.api.
  local api = require("mcp.api")
  local route = api.find(req.method, req.raw_path)
  if route and PODMAN[req.method .. " " .. route.pattern] then return true end
  local st = { started = false, closed = false, writes = 0, polls = 0 }
  stream_for(req, st)
  local status, body, headers = api.handle(req)
  if os.getenv("MCP_FUZZ_DEBUG") then      -- what each input got, to stderr
    io.stderr:write(("%s %s -> %s %s\n"):format(req.method, req.raw_path, tostring(status),
      tostring(body):sub(1, 200)))
  end
  local ok, err = true, nil
  if status == nil then
    if not st.started then ok, err = fail("no status and no stream")
    elseif not st.closed then ok, err = fail("a stream left open") end
  elseif type(status) ~= "number" or status < 100 or status > 599 or status % 1 ~= 0 then
    ok, err = fail("status %s", tostring(status))
  elseif body ~= nil and type(body) ~= "string" then
    ok, err = fail("a %s body", type(body))
  elseif headers ~= nil and type(headers) ~= "table" then
    ok, err = fail("headers as a %s", type(headers))
  else
    ok, err = check_error_body(status, body)
    if ok then ok, err = check_file_put(req, status) end
  end
  undo(req)
  if not ok then return false, string.format("%s %s: %s", req.method, req.raw_path, err) end
  return true
end

return driver
