-- Malformed and hostile requests against a real agent: each gets the right
-- 4xx with a message, and changes nothing: the registry (GET /v1/services),
-- the services directory, /srv/<service> and Podman's containers are the
-- same after it as before. A table of cases, most sent with curl, the rest
-- (garbage on the wire, slow clients) with a raw socket.
local podman_env = require("tests.env.podman_env")
local agent_env = require("tests.env.agent_env")
local mcp = require("mcp.core")

local run, q, now = agent_env.run, agent_env.quote, agent_env.now
local read_file, write_file = agent_env.read_file, agent_env.write_file

local env, agent, tmp
local MAX_BODY = 64 * 1024
local CANARY = "mcp-hostile-canary"

local VICTIM = table.concat({
  'name = "victim"', 'node = "test"', "[[components]]", 'name = "web"',
  'image = "localhost/mcp-test:1.0"', 'cmd = ["httpd", "-f", "-p", "8080", "-h", "/www"]',
  "[[components.routes]]", "port = 8080" }, "\n") .. "\n"

-- A JSON definition of victim, changed by fn(def) first.
local function jdef(fn)
  local d = { name = "victim", node = "test", components = { { name = "web",
    image = "localhost/mcp-test:1.0", cmd = { "httpd", "-f", "-p", "8080", "-h", "/www" },
    routes = { { port = 8080 } } } } }
  if fn then fn(d, d.components[1]) end
  return mcp.json.encode(d)
end

local function vol(v) return jdef(function(_, c) c.volumes = { v } end) end

local RAW_CLIENT = [[
import socket, sys, time
host, port, path, delay = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
fast = int(sys.argv[5]) if len(sys.argv) > 5 else 0
data = open(path, 'rb').read()
s = socket.create_connection((host, port), timeout=30)
t0 = time.time()
out = b''
try:
    s.sendall(data[:fast])
    if delay > 0:
        for i in range(fast, len(data)):
            s.sendall(data[i:i + 1])
            time.sleep(delay)
    else:
        s.sendall(data[fast:])
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
except (BrokenPipeError, ConnectionResetError, socket.timeout):
    pass
status = out.split(b' ', 2)[1].decode() if out.startswith(b'HTTP/') else '0'
sys.stdout.write('%s %.3f\n' % (status, time.time() - t0))
sys.stdout.flush()
sys.stdout.buffer.write(out.split(b'\r\n\r\n', 1)[-1] if out else b'')
]]

-- Sends the bytes of data on a raw connection: the first `fast` at once,
-- the rest delay seconds apart. Returns {status (0: closed without an
-- answer), time, body}.
local function raw(data, delay, fast)
  write_file(tmp .. "/raw.req", data)
  local out = run(("python3 %s 127.0.0.1 %d %s %s %d"):format(q(tmp .. "/raw.py"), agent.port,
    q(tmp .. "/raw.req"), tostring(delay or 0), fast or 0))
  local status, t, body = out:match("^(%d+) ([%d.]+)\n?(.*)$")
  return { status = tonumber(status) or -1, time = tonumber(t), body = body or out }
end

-- One request through curl. c: method, path, body, ct (Content-Type),
-- headers, many_headers (a count), raw_path, token (false: none), chunked.
local function request(c)
  local hdr, out = tmp .. "/h", tmp .. "/b"
  os.remove(hdr); os.remove(out)
  local args = { "curl -s -S -X", q(c.method), "--max-time 30 -D", q(hdr), "-o", q(out),
    "-w", q("%{http_code}") }
  if c.raw_path then args[#args + 1] = "--path-as-is" end
  local token = c.token
  if token == nil then token = agent.token end
  if token then args[#args + 1] = "-H " .. q("Authorization: Bearer " .. token) end
  if c.ct then args[#args + 1] = "-H " .. q("Content-Type: " .. c.ct) end
  for _, h in ipairs(c.headers or {}) do args[#args + 1] = "-H " .. q(h) end
  if c.many_headers then
    local lines = {}
    for i = 1, c.many_headers do lines[i] = ("X-H%d: %d"):format(i, i) end
    write_file(tmp .. "/headers", table.concat(lines, "\n") .. "\n")
    args[#args + 1] = "-H @" .. q(tmp .. "/headers")
  end
  if c.chunked then args[#args + 1] = "-H 'Transfer-Encoding: chunked'" end
  if c.body then
    write_file(tmp .. "/req", c.body)
    args[#args + 1] = "--data-binary @" .. q(tmp .. "/req")
  end
  args[#args + 1] = q(agent.url .. c.path)
  local status = run(table.concat(args, " "))
  local r = { status = tonumber(status:match("(%d+)%s*$")) or 0, body = read_file(out) or "",
    headers = {} }
  for line in (read_file(hdr) or ""):gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:]+):%s*(.*)$")
    if k then r.headers[k:lower()] = v end
  end
  r.json = mcp.json.decode(r.body)
  return r
end

-- What must not change: the registry's view, the definition files, the
-- service's data directory and Podman's containers.
local function snapshot()
  local status, body = agent:api("GET", "/v1/services")
  assert(status == 200, "GET /v1/services: " .. tostring(status))
  local services = mcp.json.encode(body, { sort = true })
  local files = run("cd " .. q(agent.services_dir) .. " && md5sum * 2>/dev/null")
  local data = run("cd /srv/victim && find . -printf '%p %s %y\\n' | sort")
  local list, pstatus = env:api("GET", "/v4.0.0/libpod/containers/json?all=true")
  assert(pstatus == 200, "podman: " .. tostring(pstatus))
  local ps = {}
  for _, c in ipairs(mcp.json.decode(list)) do
    ps[#ps + 1] = table.concat({ c.Id, c.Names[1], c.State, tostring(c.StartedAt), c.Image,
      mcp.json.encode(c.Labels, { sort = true }) }, " ")
  end
  table.sort(ps)
  return table.concat({ services, files, data, table.concat(ps, "\n") }, "\n--\n")
end

local function repeat_str(s, n) return string.rep(s, n) end

-- The cases: what is sent, the status, and the error code or a pattern the
-- message must hold (plain text).
local cases = {
  -- Bad JSON
  { "a definition that is not JSON", "PUT", "/v1/services/victim", body = "{bad",
    ct = "application/json", status = 400, code = "bad_json", msg = "not valid JSON" },
  { "a truncated sync body", "POST", "/v1/sync", body = '{"definitions": [',
    ct = "application/json", status = 400, code = "bad_json" },
  { "a truncated adopt body", "POST", "/v1/adopt", body = '{"service": "victim"',
    ct = "application/json", status = 400, code = "bad_json" },
  { "JSON with a trailing comma", "POST", "/v1/purge", body = '{"dry_run": true,}',
    ct = "application/json", status = 400, code = "bad_json" },
  { "two JSON documents in one body", "POST", "/v1/adopt",
    body = '{"service": "a"}{"service": "b"}', ct = "application/json", status = 400,
    code = "bad_json" },
  { "an empty JSON body for a definition", "PUT", "/v1/services/victim", body = "",
    ct = "application/json", status = 400, code = "invalid_definition" },
  { "a JSON array as a definition", "PUT", "/v1/services/victim", body = "[]",
    ct = "application/json", status = 400, code = "invalid_definition",
    msg = "a definition is a JSON object, got an array" },
  { "a JSON string as a definition", "PUT", "/v1/services/victim", body = '"victim"',
    ct = "application/json", status = 400, code = "invalid_definition" },
  { "JSON null as a definition", "PUT", "/v1/services/victim", body = "null",
    ct = "application/json", status = 400, code = "invalid_definition" },
  { "an empty object as a definition", "PUT", "/v1/services/victim", body = "{}",
    ct = "application/json", status = 400, code = "invalid_definition",
    msg = "name: missing" },
  -- Wrong types
  { "a number as the name", "PUT", "/v1/services/victim", ct = "application/json",
    body = jdef(function(d) d.name = 5 end), status = 400, code = "invalid_definition",
    msg = "name" },
  { "components as a string", "PUT", "/v1/services/victim", ct = "application/json",
    body = jdef(function(d) d.components = "web" end), status = 400,
    code = "invalid_definition", msg = "components" },
  { "a port as a string", "PUT", "/v1/services/victim", ct = "application/json",
    body = jdef(function(_, c) c.routes[1].port = "8080" end), status = 400,
    code = "invalid_definition", msg = "routes[1].port" },
  { "env as a number", "PUT", "/v1/services/victim", ct = "application/json",
    body = jdef(function(_, c) c.env = 7 end), status = 400, code = "invalid_definition",
    msg = "env" },
  { "active as a string", "PUT", "/v1/services/victim", ct = "application/json",
    body = jdef(function(d) d.active = "yes" end), status = 400, code = "invalid_definition",
    msg = "active" },
  { "adopt with a number", "POST", "/v1/adopt", body = '{"service": 123}',
    ct = "application/json", status = 400, msg = 'expected {"service": "NAME"}' },
  { "adopt with a list", "POST", "/v1/adopt", body = '{"service": ["victim"]}',
    ct = "application/json", status = 400, msg = 'expected {"service": "NAME"}' },
  { "adopt with a JSON array body", "POST", "/v1/adopt", body = '["victim"]',
    ct = "application/json", status = 400 },
  { "purge with a string dry_run", "POST", "/v1/purge", body = '{"dry_run": "yes"}',
    ct = "application/json", status = 400, msg = "dry_run: expected a boolean" },
  { "sync with definitions as a string", "POST", "/v1/sync", body = '{"definitions": "all"}',
    ct = "application/json", status = 400, code = "bad_request" },
  { "sync with definitions as an object", "POST", "/v1/sync",
    body = '{"definitions": {"victim": 1}}', ct = "application/json", status = 400,
    code = "bad_request" },
  { "sync with an unknown format", "POST", "/v1/sync", ct = "application/json",
    body = '{"definitions": [{"name": "victim", "format": "yaml", "text": "x"}]}',
    status = 400, code = "invalid_definition", msg = "format (toml, lua, json)" },
  { "sync with numbers for strings", "POST", "/v1/sync", ct = "application/json",
    body = '{"definitions": [{"name": 1, "format": "toml", "text": 2}]}', status = 400,
    code = "invalid_definition" },
  -- Huge numbers
  { "a port beyond 64 bits", "PUT", "/v1/services/victim", ct = "application/json",
    body = jdef():gsub('"port":8080', '"port":99999999999999999999'), status = 400,
    code = "bad_json", msg = "too big integer" },
  { "a port of 1e308", "PUT", "/v1/services/victim", ct = "application/json",
    body = jdef():gsub('"port":8080', '"port":1e308'), status = 400,
    code = "invalid_definition", msg = "routes[1].port" },
  { "a number that overflows a double", "PUT", "/v1/services/victim", ct = "application/json",
    body = jdef():gsub('"port":8080', '"port":1e400'), status = 400, code = "bad_json" },
  { "a negative port", "PUT", "/v1/services/victim", ct = "application/json",
    body = jdef(function(_, c) c.routes[1].port = -1 end), status = 400,
    code = "invalid_definition" },
  { "a stop_timeout of 1e300 seconds", "PUT", "/v1/services/victim", ct = "application/json",
    body = jdef(function(_, c) c.stop_timeout = 1e300 end), status = 400,
    code = "invalid_definition", msg = "stop_timeout" },
  { "an event limit beyond 64 bits", "GET", "/v1/events?limit=99999999999999999999",
    status = 400, msg = "limit: expected a whole number" },
  { "a log tail of a billion", "GET", "/v1/services/victim/logs?tail=1000000000",
    status = 400, msg = "tail: expected a whole number from 0 to 1000000" },
  { "a negative since", "GET", "/v1/events?since=-1", status = 400, msg = "since" },
  { "a hexadecimal limit", "GET", "/v1/events?limit=0x10", status = 400, msg = "limit" },
  { "an infinite limit", "GET", "/v1/events?limit=inf", status = 400, msg = "limit" },
  { "a NaN tail", "GET", "/v1/services/victim/logs?tail=nan", status = 400, msg = "tail" },
  -- Deep nesting
  { "JSON nested 20000 deep", "POST", "/v1/sync", ct = "application/json",
    body = repeat_str("[", 20000) .. repeat_str("]", 20000), status = 400, code = "bad_json",
    msg = "maximum parsing depth" },
  { "TOML nested 10000 deep", "PUT", "/v1/services/victim", ct = "application/toml",
    body = 'name = "victim"\na = ' .. repeat_str("[", 10000) .. repeat_str("]", 10000),
    status = 400, code = "invalid_definition", msg = "nested deeper than" },
  { "a TOML key of 5000 parts", "PUT", "/v1/services/victim", ct = "application/toml",
    body = repeat_str("a.", 5000) .. "b = 1", status = 400, code = "invalid_definition",
    msg = "parts" },
  { "Lua nested 5000 deep", "PUT", "/v1/services/victim", ct = "text/x-lua",
    body = "return " .. repeat_str("{", 5000) .. repeat_str("}", 5000), status = 400,
    code = "invalid_definition", msg = "too many syntax levels" },
  -- Invalid UTF-8
  { "invalid UTF-8 in JSON", "PUT", "/v1/services/victim", ct = "application/json",
    body = '{"name": "vic\255\254tim"}', status = 400, code = "bad_json" },
  { "invalid UTF-8 in TOML", "PUT", "/v1/services/victim", ct = "application/toml",
    body = VICTIM:gsub('name = "web"', 'name = "w\192\175b"'), status = 400,
    code = "invalid_definition" },
  { "invalid UTF-8 in the service name", "GET", "/v1/services/%ff%fe", status = 400,
    code = "invalid_name" },
  { "an overlong UTF-8 slash in a name", "GET", "/v1/services/a%c0%afb", status = 400,
    code = "invalid_name", msg = "a\\xC0\\xAFb" },
  { "invalid UTF-8 in a query parameter", "GET", "/v1/events?limit=%ff", status = 400,
    code = "bad_request", msg = "\\xFF" },
  { "invalid UTF-8 in a file name", "GET", "/v1/services/victim/files/%ff", status = 404,
    code = "not_found" },
  { "invalid UTF-8 in an unknown path", "GET", "/v1/nothing%ff", status = 404,
    code = "not_found" },
  { "invalid UTF-8 in a Lua definition's name", "PUT", "/v1/services/victim", ct = "text/x-lua",
    body = 'return { name = "vic\255tim", node = "test", components = {} }', status = 400,
    code = "invalid_definition", msg = "vic\\xFFtim" },
  { "invalid UTF-8 in a Lua definition's env", "PUT", "/v1/services/victim", ct = "text/x-lua",
    body = 'return { name = "victim", node = "test", components = { { name = "web", '
      .. 'image = "localhost/mcp-test:1.0", env = { A = "\255" } } } }', status = 400,
    code = "invalid_definition", msg = "env" },
  -- Names with /, .., NUL and shell metacharacters
  { "a name with an escaped slash", "GET", "/v1/services/victim%2f..%2fx", status = 404,
    code = "not_found" },
  { "a name that is ..", "PUT", "/v1/services/%2e%2e", ct = "application/toml", body = VICTIM,
    status = 400, code = "invalid_name" },
  { "a name that is .. on the wire", "GET", "/v1/services/..", raw_path = true,
    status = 400, code = "invalid_name" },
  { "a NUL in the path", "GET", "/v1/services/vic%00tim", status = 400, code = "bad_request",
    msg = "%00" },
  { "a command substitution as a name", "PUT", "/v1/services/%24%28reboot%29",
    ct = "application/toml", body = VICTIM, status = 400, code = "invalid_name" },
  { "a name with ; and spaces", "POST", "/v1/services/victim%3b%20reboot/deploy",
    status = 400, code = "invalid_name" },
  { "a backquoted name in a definition", "PUT", "/v1/services/victim", ct = "application/json",
    body = jdef(function(d) d.name = "`id`" end), status = 400, code = "invalid_definition" },
  { "adopt of ../../etc", "POST", "/v1/adopt", body = '{"service": "../../etc"}',
    ct = "application/json", status = 400, msg = "not a valid service name" },
  -- \u0000 is valid JSON (the registry writes and reads it back): the name
  -- it makes is what is refused.
  { "a NUL in a JSON string", "POST", "/v1/adopt", body = '{"service": "vic\\u0000tim"}',
    ct = "application/json", status = 400, msg = "not a valid service name" },
  { "events of a service named $(id)", "GET", "/v1/events?service=%24%28id%29", status = 400,
    code = "invalid_name" },
  { "a component named web;id", "PUT", "/v1/services/victim", ct = "application/json",
    body = jdef(function(_, c) c.name = "web;id" end), status = 400,
    code = "invalid_definition", msg = "components[1].name" },
  { "an image with a shell command", "PUT", "/v1/services/victim", ct = "application/json",
    body = jdef(function(_, c) c.image = "localhost/mcp-test:1.0;reboot" end), status = 400,
    code = "invalid_definition", msg = "image" },
  { "an env key with a space", "PUT", "/v1/services/victim", ct = "application/json",
    body = jdef(function(_, c) c.env = { "A B=1" } end), status = 400,
    code = "invalid_definition", msg = "env" },
  { "a Lua definition that runs a command", "PUT", "/v1/services/victim", ct = "text/x-lua",
    body = ('os.execute("touch /tmp/%s") return {}'):format(CANARY), status = 400,
    code = "invalid_definition", msg = "os.execute is not available" },
  { "a Lua definition that opens a file", "PUT", "/v1/services/victim", ct = "text/x-lua",
    body = ('io.open("/tmp/%s", "w") return {}'):format(CANARY), status = 400,
    code = "invalid_definition" },
  { "a Lua definition that never ends", "PUT", "/v1/services/victim", ct = "text/x-lua",
    body = "while true do end", status = 400, code = "invalid_definition",
    msg = "instruction budget" },
  { "a Lua definition that eats memory", "PUT", "/v1/services/victim", ct = "text/x-lua",
    body = 'local t = {} for i = 1, 1e8 do t[i] = string.rep("x", 100) .. i end return t',
    status = 400, code = "invalid_definition", msg = "memory" },
  -- Volumes outside /srv/<service>
  { "a volume of /etc", "PUT", "/v1/services/victim", ct = "application/json",
    body = vol("/etc:/etc"), status = 400, code = "invalid_definition",
    msg = 'host path "/etc" is outside the allowed roots: /srv/victim' },
  { "a volume that climbs out with ..", "PUT", "/v1/services/victim", ct = "application/json",
    body = vol("/srv/victim/../../etc:/x"), status = 400, code = "invalid_definition",
    msg = "(that is /etc)" },
  { "a volume on a prefix of the name", "PUT", "/v1/services/victim",
    ct = "application/json", body = vol("/srv/victimx:/x"), status = 400,
    code = "invalid_definition", msg = "outside the allowed roots" },
  { "another service's volume", "PUT", "/v1/services/victim", ct = "application/json",
    body = vol("/srv/other:/x"), status = 400, code = "invalid_definition",
    msg = "outside the allowed roots" },
  { "a relative volume", "PUT", "/v1/services/victim", ct = "application/json",
    body = vol("data:/x"), status = 400, code = "invalid_definition", msg = "not absolute" },
  { "the host's root as a volume", "PUT", "/v1/services/victim", ct = "application/json",
    body = vol("/:/host"), status = 400, code = "invalid_definition",
    msg = "outside the allowed roots" },
  { "a volume table with source / in Lua", "PUT", "/v1/services/victim", ct = "text/x-lua",
    body = 'return { name = "victim", node = "test", components = { { name = "web", '
      .. 'image = "localhost/mcp-test:1.0", volumes = { { source = "/", destination = "/h" } '
      .. '} } } }', status = 400, code = "invalid_definition", msg = "outside the allowed" },
  { "the podman socket as a volume", "PUT", "/v1/services/victim", ct = "application/toml",
    body = VICTIM:gsub('cmd =', 'volumes = ["/run/podman/podman.sock:/sock"]\ncmd ='),
    status = 400, code = "invalid_definition", msg = "outside the allowed roots" },
  -- Files out of /srv/<service>
  { "a file path with ..", "GET", "/v1/services/victim/files/%2e%2e/%2e%2e/etc/passwd",
    status = 400, code = "bad_path", msg = "escapes /srv/victim" },
  { "a file write with ..", "PUT", "/v1/services/victim/files/..%2f..%2ftmp%2f" .. CANARY,
    body = "x", status = 400, code = "bad_path", msg = "escapes /srv/victim" },
  { "an absolute file path", "PUT", "/v1/services/victim/files/%2ftmp%2f" .. CANARY,
    body = "x", status = 400, code = "bad_path", msg = "absolute" },
  { "a file path with a NUL", "PUT", "/v1/services/victim/files/a%00b", body = "x",
    status = 400, code = "bad_request" },
  -- Oversized bodies and headers
  { "a body over max_body", "PUT", "/v1/services/victim", ct = "application/toml",
    body = repeat_str("#", MAX_BODY + 1), status = 413, code = "too_large",
    msg = "max_body (65536 bytes)" },
  { "a chunked body over max_body", "PUT", "/v1/services/victim/files/big", chunked = true,
    body = repeat_str("x", MAX_BODY * 2), status = 413, code = "too_large" },
  { "a 70 KB header", "GET", "/v1/services",
    headers = { "X-Big: " .. repeat_str("a", 70000) }, status = 431, msg = "too big" },
  { "a 70 KB URL", "GET", "/v1/services/" .. repeat_str("a", 70000), status_range = true },
  { "5000 headers", "GET", "/v1/services", many_headers = 5000, status = 431 },
  { "a 10 KB token", "GET", "/v1/services", token = repeat_str("a", 10000), status = 401,
    code = "unauthorized" },
  -- Absurd query parameters
  { "follow=maybe", "GET", "/v1/events?follow=maybe", status = 400, msg = "follow" },
  { "a NUL in the tail", "GET", "/v1/services/victim/logs?tail=%00", status = 400,
    msg = "tail" },
  { "a malformed percent-escape in the query", "GET", "/v1/events?limit=%zz", status = 400,
    code = "bad_request" },
  { "limit=0", "GET", "/v1/events?limit=0", status = 400, msg = "limit" },
  -- Unknown methods
  { "BREW", "BREW", "/v1/services", status = 405, code = "method_not_allowed",
    msg = "allowed: GET" },
  { "PATCH on a service", "PATCH", "/v1/services/victim", status = 405,
    code = "method_not_allowed", msg = "allowed: DELETE, GET, PUT" },
  { "DELETE on the service list", "DELETE", "/v1/services", status = 405,
    code = "method_not_allowed" },
  { "TRACE on health", "TRACE", "/v1/health", status = 405, token = false },
  { "an unknown endpoint", "GET", "/v1/nothing/here", status = 404, code = "not_found",
    msg = "no such endpoint" },
  -- Content-Type lies
  { "TOML sent as JSON", "PUT", "/v1/services/victim", ct = "application/json", body = VICTIM,
    status = 400, code = "bad_json" },
  { "JSON sent as TOML", "PUT", "/v1/services/victim", ct = "application/toml", body = jdef(),
    status = 400, code = "invalid_definition" },
  { "TOML sent as Lua", "PUT", "/v1/services/victim", ct = "text/x-lua", body = VICTIM,
    status = 400, code = "invalid_definition" },
  { "a definition as an image", "PUT", "/v1/services/victim", ct = "image/png", body = VICTIM,
    status = 415, code = "unsupported_media_type", msg = "got image/png" },
  { "TOML without a Content-Type (taken as JSON)", "PUT", "/v1/services/victim",
    body = VICTIM, status = 400, code = "invalid_definition", msg = "json",
    headers = { "Content-Type:" } },
  { "adopt as text/plain", "POST", "/v1/adopt", ct = "text/plain",
    body = '{"service": "victim"}', status = 415, code = "unsupported_media_type" },
  { "sync as a form", "POST", "/v1/sync", ct = "application/x-www-form-urlencoded",
    body = "definitions=x", status = 415, code = "unsupported_media_type" },
  -- Authentication
  { "no token", "POST", "/v1/services/victim/stop", token = false, status = 401,
    code = "unauthorized" },
  { "Basic instead of Bearer", "DELETE", "/v1/services/victim", token = false,
    headers = { "Authorization: Basic dmljdGltOng=" }, status = 401, code = "unauthorized" },
  { "a token with a NUL escape", "DELETE", "/v1/services/victim",
    token = "mcp_%00" .. repeat_str("0", 60), status = 401, code = "unauthorized" },
}

setup(function()
  tmp = run("mktemp -d /tmp/mcp-hostile-spec.XXXXXX")
  write_file(tmp .. "/raw.py", RAW_CLIENT)
  env = podman_env.start()
  agent = agent_env.start({ podman = env, node = "test", log_level = "info",
    services = { victim = VICTIM } })
  -- Small limits make the big cases cheap: rewrite [api] and start again.
  agent:halt()
  local cfg = read_file(agent.config_path):gsub("%[api%]\n",
    '[api]\nmax_body = "64KiB"\nconnection_timeout = "2s"\n')
  write_file(agent.config_path, cfg)
  agent:start()
  local status, body = agent:api("POST", "/v1/services/victim/deploy")
  assert(status == 200, agent_env.quote(mcp.json.encode(body)))
  write_file("/srv/victim/data.txt", "the victim's data\n")
end)

teardown(function()
  if agent then agent:stop() end
  if env then env:stop() end
  os.execute("rm -rf /srv/victim")
  if tmp then os.execute("rm -rf " .. q(tmp)) end
  os.remove("/tmp/" .. CANARY)
end)

describe("a hostile request", function()
  it("comes in at least fifty kinds", function()
    assert.is_true(#cases >= 50, #cases .. " cases")
  end)

  for _, c in ipairs(cases) do
    it("gets a 4xx with a message and changes nothing: " .. c[1], function()
      local before = snapshot()
      c.method, c.path = c[2], c[3]
      local r = request(c)
      if c.status_range then
        assert.is_true(r.status >= 400 and r.status < 500, r.status .. " " .. r.body)
      else
        assert.equal(c.status, r.status, r.body:sub(1, 500))
      end
      assert.is_true(#r.body > 0, "an answer without a message")
      if c.code then
        assert.is_table(r.json, r.body:sub(1, 300))
        assert.equal(c.code, r.json.error.code, r.body:sub(1, 500))
        assert.is_string(r.json.error.message)
      end
      if c.msg then
        local text = type(r.json) == "table" and type(r.json.error) == "table"
          and r.json.error.message or r.body
        assert.truthy(text:find(c.msg, 1, true), "«" .. c.msg .. "» not in " .. text:sub(1, 500))
      end
      assert.is_nil(read_file("/tmp/" .. CANARY))
      assert.equal(before, snapshot())
    end)
  end

  it("gets a 400 for garbage on the wire, and the agent goes on", function()
    local before_ = snapshot()
    for _, data in ipairs({
      "GARBAGE\r\n\r\n",
      "GET /v1/health HTTP/9.9\r\nHost: x\r\n\r\n",
      "GET /v1/services HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
      "GET /v1/services HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
      "GET /v1/services HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n",
      "PUT /v1/services/victim HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        .. "zz\r\nxx\r\n0\r\n\r\n",
    }) do
      local r = raw(data)
      assert.is_true(r.status == 0 or (r.status >= 400 and r.status < 600),
        ("%q -> %d"):format(data:sub(1, 40), r.status))
      assert.is_true(r.status ~= 500, r.body)
    end
    assert.equal(200, (agent:api("GET", "/v1/health")))
    assert.equal(before_, snapshot())
  end)

  it("is cut off when it sends too slowly, while others are served", function()
    local before_ = snapshot()
    local function rejected()
      local _, text = agent:api("GET", "/metrics")
      return tonumber(text:match('mcp_api_rejected_total{reason="slow_clients"} (%d+)')) or 0
    end
    local cut = rejected()
    -- Headers at one byte per 100 ms: 300 bytes would take 30 s; the
    -- connection timeout is 2 s.
    local request_text = "GET /v1/services HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
      .. agent.token .. "\r\nX-Pad: " .. repeat_str("p", 150) .. "\r\n\r\n"
    local pid_file = tmp .. "/slow.out"
    write_file(tmp .. "/slow.req", request_text)
    local pid = run(("python3 %s 127.0.0.1 %d %s 0.1 >%s 2>&1 & echo $!"):format(
      q(tmp .. "/raw.py"), agent.port, q(tmp .. "/slow.req"), q(pid_file)))
    run("sleep 0.5")
    local t0 = now()
    local status = agent:api("GET", "/v1/health")
    assert.equal(200, status)
    assert.is_true(now() - t0 < 1, "health waited on the slow client")
    agent_env.wait_for(function()
      return run("kill -0 " .. pid .. " 2>/dev/null; echo $?") ~= "0"
    end, 15, "the slow client to be cut off")
    local out = read_file(pid_file) or ""
    local st, took = out:match("^(%d+) ([%d.]+)")
    assert.is_true(tonumber(took) < 8, out)
    assert.is_true(tonumber(st) == 0 or tonumber(st) == 408, out)
    assert.is_true(rejected() > cut)
    -- A body trickled after whole headers is cut off too.
    local body_req = "PUT /v1/services/victim/files/slow HTTP/1.1\r\nHost: x\r\n"
      .. "Authorization: Bearer " .. agent.token .. "\r\nContent-Length: 200\r\n\r\n"
      .. repeat_str("s", 200)
    local t1 = now()
    local r = raw(body_req, 0.1, #body_req - 200)
    assert.is_true(now() - t1 < 8, "a trickled body was not cut off")
    assert.is_true(r.status == 0 or r.status == 408, r.status .. " " .. r.body)
    assert.is_nil(read_file("/srv/victim/slow"))
    assert.equal(before_, snapshot())
  end)
end)
