-- tests/lib/http_client.lua: HTTP requests from specs, through curl(1) and
-- other programs run in the background, while the spec drives the agent's
-- loop (the server under test may live in the same process, on mcp.core's
-- loop, so a blocking client would wait for ever).
--
--   local client = require("tests.lib.http_client")
--   local r = client.request("http://127.0.0.1:9444/v1/health")
--   assert.equal(200, r.status); print(r.body, r.headers["content-type"], r.time)
--
--   local h = client.start(url, { headers = {...} })   -- many at once
--   local r = client.wait(h)
local mcp = require("mcp.core")

local client = {}

local dir = os.getenv("MCP_TEST_TMP") or "/tmp"
local seq = 0

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
client.quote = quote

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local t = f:read("*a")
  f:close()
  return t
end
client.read = read

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- A scratch directory for this process's requests, removed by cleanup().
local scratch
local function scratch_dir()
  if not scratch then
    local p = io.popen("mktemp -d " .. dir .. "/mcp-http.XXXXXX")
    scratch = p:read("*l")
    p:close()
  end
  return scratch
end

function client.cleanup()
  if scratch then os.execute("rm -rf " .. quote(scratch)) end
  scratch = nil
end

-- Runs cmd (a shell command) in the background. Returns a handle whose
-- files receive stdout, stderr and the exit code.
function client.spawn(cmd, stdin)
  seq = seq + 1
  local base = string.format("%s/%d", scratch_dir(), seq)
  local h = { out = base .. ".out", err = base .. ".err", rc = base .. ".rc", base = base,
    t0 = mcp.timer.monotime() }
  local input = "/dev/null"
  if stdin then
    input = base .. ".in"
    local f = assert(io.open(input, "wb"))
    f:write(stdin)
    f:close()
  end
  -- Under `make check` the sanitizers are preloaded for busted's luajit;
  -- the clients must not inherit them.
  os.execute(string.format("( unset LD_PRELOAD; ( %s ) < %s > %s 2> %s; echo $? > %s.tmp; "
    .. "mv %s.tmp %s ) &",
    cmd, quote(input), quote(h.out), quote(h.err), quote(h.rc), quote(h.rc), quote(h.rc)))
  return h
end

-- Drives the loop until pred() holds or timeout seconds pass; returns pred().
function client.drive(pred, timeout)
  local deadline = mcp.timer.monotime() + (timeout or 30)
  if pred() then return true end
  mcp.run(function()
    while not pred() and mcp.timer.monotime() < deadline do mcp.sleep(0.005) end
  end)
  return pred()
end

-- Drives the loop for seconds.
function client.pump(seconds)
  mcp.run(function() mcp.sleep(seconds) end)
end

-- Waits for a handle from spawn(); returns { rc, out, err, elapsed }.
function client.wait_raw(h, timeout)
  local done = client.drive(function() return exists(h.rc) end, timeout or 60)
  if not done then error("background command did not finish: " .. h.base, 2) end
  return { rc = tonumber(read(h.rc)), out = read(h.out), err = read(h.err),
    elapsed = mcp.timer.monotime() - h.t0 }
end

-- Starts a curl request. opts: method, headers (table), body (string),
-- timeout (seconds), args (extra curl arguments), tls = {cacert=, cert=,
-- key=, max=} , no_buffer (stream to the file as it arrives).
function client.start(url, opts)
  opts = opts or {}
  local args = { "curl", "-sS", "-o", "@BODY", "-D", "@HEAD",
    "-w", "%{http_code} %{time_total} %{time_starttransfer}\\n",
    "--max-time", tostring(opts.timeout or 30) }
  if opts.method then args[#args + 1] = "-X"; args[#args + 1] = opts.method end
  for k, v in pairs(opts.headers or {}) do
    args[#args + 1] = "-H"
    args[#args + 1] = k .. ": " .. v
  end
  if opts.body then
    args[#args + 1] = "--data-binary"
    args[#args + 1] = "@-"
  end
  if opts.no_buffer then args[#args + 1] = "-N" end
  local tls = opts.tls
  if tls then
    if tls.cacert then args[#args + 1] = "--cacert"; args[#args + 1] = tls.cacert end
    if tls.cert then args[#args + 1] = "--cert"; args[#args + 1] = tls.cert end
    if tls.key then args[#args + 1] = "--key"; args[#args + 1] = tls.key end
    if tls.max then args[#args + 1] = "--tls-max"; args[#args + 1] = tls.max end
  end
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
  args[#args + 1] = url
  seq = seq + 1
  local base = string.format("%s/c%d", scratch_dir(), seq)
  local parts = {}
  for i, a in ipairs(args) do
    if a == "@BODY" then a = base .. ".body" elseif a == "@HEAD" then a = base .. ".head" end
    parts[i] = quote(a)
  end
  local h = client.spawn(table.concat(parts, " "), opts.body)
  h.body, h.head = base .. ".body", base .. ".head"
  return h
end

local function parse_headers(text)
  local headers, status = {}, nil
  -- Only the last response (after a 100 Continue, say).
  for line in (text or ""):gmatch("[^\r\n]+") do
    local code = line:match("^HTTP/%S+ (%d+)")
    if code then
      headers, status = {}, tonumber(code)
    else
      local k, v = line:match("^([^:]+):%s*(.-)%s*$")
      if k then headers[k:lower()] = v end
    end
  end
  return headers, status
end

-- Waits for a request from start(); returns { status, headers, body, json,
-- time (curl's total), ttfb, rc, err }. status is 0 when curl failed.
function client.wait(h, timeout)
  local r = client.wait_raw(h, timeout)
  local code, total, ttfb = (r.out or ""):match("(%d+) ([%d.]+) ([%d.]+)")
  local headers = parse_headers(read(h.head))
  local body = read(h.body) or ""
  local json
  if (headers["content-type"] or ""):find("json", 1, true) and body ~= "" then
    json = mcp.json.decode(body)
  end
  return { status = tonumber(code) or 0, headers = headers, body = body, json = json,
    time = tonumber(total), ttfb = tonumber(ttfb), rc = r.rc, err = r.err,
    elapsed = r.elapsed }
end

function client.request(url, opts)
  return client.wait(client.start(url, opts), (opts and opts.timeout or 30) + 5)
end

return client
