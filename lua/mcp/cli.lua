-- mcp.cli: `mcp`, the operator's command line.
--
-- One client of the agents' HTTP API among others. Nodes and credentials
-- come from ~/.config/mcp/mcp.toml ([[nodes]] name, address; token_file);
-- MCP_AGENT_URL and MCP_TOKEN stand in for it with one agent. Service
-- definitions are read, as operators of the existing MCP keep them, from
-- ~/.config/mcp/services/<service>.toml (or .lua); a definition's `node`
-- picks the agent it goes to. Exit codes: 0 ok, 1 failed, 2 usage.
local mcp = require("mcp.core")
local duration = require("mcp.duration")

local cli = {}

local USAGE = [==[
usage: mcp [--json] [--node NAME] [--config FILE] COMMAND [args]

  deploy SERVICE            send SERVICE's definition and deploy it (shows its steps)
  stop|start|restart SERVICE
  undeploy SERVICE          remove its containers, ports and registry entry
  ps                        every managed container on every node
  status [SERVICE]          agents' status, or one service in detail
  logs SERVICE [-f] [-n N]  a service's logs (-f follows)
  sync                      send every definition; deploy those that changed
  adopt SERVICE             take existing SERVICE-* containers under management
  purge [--dry-run]         drop registry entries whose containers are gone
  recover                   recreate every deployed service after Podman lost them
  push SERVICE FILE [PATH]  copy FILE to /srv/SERVICE/PATH on its node
  pull SERVICE PATH [FILE]  copy /srv/SERVICE/PATH to FILE (- for stdout)
  events [-f] [SERVICE]     the event log (-f follows)
  reload                    reload definitions and policies on the agents
  node list                 the configured nodes and whether they answer
  render SERVICE            the podman run lines SERVICE's definition means

config: ~/.config/mcp/mcp.toml ([[nodes]] name, address; token_file), or
MCP_AGENT_URL and MCP_TOKEN for one agent. Definitions: ~/.config/mcp/services/.
]==]

local Usage = {}   -- raised for usage errors: exit 2

local function usage_error(fmt, ...)
  error(setmetatable({ msg = string.format(fmt, ...) }, Usage), 0)
end

-- Checks a command's arguments: between min and max of them, none an
-- option the command does not know.
local function want(args, min, max, usage)
  for _, a in ipairs(args) do
    if a:sub(1, 1) == "-" and a ~= "-" then
      usage_error("unknown option %q; usage: %s", a, usage)
    end
  end
  if #args < min or #args > max then usage_error("usage: %s", usage) end
end

local function expand(path)
  if path and path:sub(1, 2) == "~/" then return (os.getenv("HOME") or "") .. path:sub(2) end
  return path
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- The nodes and their credentials.
local function load_config(opts)
  local path = expand(opts.config or "~/.config/mcp/mcp.toml")
  local cfg = { nodes = {}, services_dir = expand("~/.config/mcp/services") }
  local env_url, env_token = os.getenv("MCP_AGENT_URL"), os.getenv("MCP_TOKEN")
  if env_url == "" then env_url = nil end          -- MCP_AGENT_URL= unsets it
  local text = read_file(path)
  local t = {}
  if text then
    local err
    t, err = mcp.toml.decode(text, path)
    if not t then error(err, 0) end
  elseif opts.config then
    error(path .. ": cannot read", 0)
  end
  cfg.services_dir = expand(t.services_dir) or cfg.services_dir
  local default_token_file = expand(t.token_file or "~/.config/mcp/token")
  for i, n in ipairs(t.nodes or {}) do
    if type(n.name) ~= "string" or type(n.address) ~= "string" then
      error(string.format("%s: nodes[%d]: needs name and address (strings)", path, i), 0)
    end
    local token = n.token
    local tf = expand(n.token_file) or default_token_file
    if not token and tf then token = read_file(tf) end
    cfg.nodes[#cfg.nodes + 1] = { name = n.name, address = n.address:gsub("/+$", ""),
      token = token and trim(token), ca_cert = expand(n.ca_cert) }
  end
  if env_url then
    local token = env_token or (read_file(default_token_file) or "")
    cfg.nodes = { { name = os.getenv("MCP_NODE") or "default", address = env_url:gsub("/+$", ""),
      token = trim(token) } }
  end
  if #cfg.nodes == 0 then
    error(string.format("no agent configured: write %s ([[nodes]] name, address) or set "
      .. "MCP_AGENT_URL and MCP_TOKEN", path), 0)
  end
  return cfg
end

local function node_by_name(cfg, name)
  for _, n in ipairs(cfg.nodes) do
    if n.name == name then return n end
  end
  if #cfg.nodes == 1 and cfg.nodes[1].name == "default" then return cfg.nodes[1] end
  local names = {}
  for _, n in ipairs(cfg.nodes) do names[#names + 1] = n.name end
  error(string.format("node %q is not configured (known: %s)", name,
    table.concat(names, ", ")), 0)
end

-- One request to one agent. Returns the decoded body, or raises a message
-- naming the node, the request and the agent's error.
local function call(node, method, path, opts)
  opts = opts or {}
  local headers = { ["Authorization"] = "Bearer " .. (node.token or "") }
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  local body = opts.body
  if opts.json ~= nil then
    body = mcp.json.encode(opts.json)
    headers["Content-Type"] = "application/json"
  end
  local r, err = mcp.http.request({ method = method, url = node.address .. path,
    headers = headers, body = body, timeout = opts.timeout or 300, cacert = node.ca_cert })
  if not r then
    return nil, string.format("%s (%s): %s %s: %s", node.name, node.address, method, path, err)
  end
  if r.status >= 400 then
    local msg = r.json and type(r.json.error) == "table" and r.json.error.message
    if type(msg) ~= "string" then
      -- Not an agent's error: say what answered, briefly.
      msg = trim(r.body or ""):sub(1, 200)
      msg = msg == "" and "(an answer without a message: is this an mcp-agent?)" or msg
    end
    return nil, string.format("%s: %s %s: %d %s", node.name, method, path, r.status, msg), r
  end
  if opts.raw then return r end
  return r.json or r.body
end

-- How long a view (ps, status, node list) waits for one node: a node that
-- does not answer must not hold up the table of the others.
local VIEW_TIMEOUT = 15

-- Asks every node at once: fn(node) in a task per node. Returns the
-- results {r, err} in the order of cfg.nodes.
local function gather(nodes, fn)
  local results, left = {}, #nodes
  for i, n in ipairs(nodes) do
    mcp.spawn({ name = "mcp " .. n.name }, function()
      local ok, r, err = pcall(fn, n)
      results[i] = ok and { r, err } or { nil, tostring(r) }
      left = left - 1
    end)
  end
  while left > 0 do mcp.sleep(0.01) end
  return results
end

local function must(v, err)
  if v == nil then error(err, 0) end
  return v
end

-- Prints rows as aligned columns under a header.
local function table_print(header, rows)
  local widths = {}
  for i, h in ipairs(header) do widths[i] = #h end
  for _, row in ipairs(rows) do
    for i = 1, #header do
      row[i] = row[i] == nil and "-" or tostring(row[i])
      widths[i] = math.max(widths[i], #row[i])
    end
  end
  local function line(cells)
    local parts = {}
    for i = 1, #header do
      parts[i] = i < #header and (cells[i] .. string.rep(" ", widths[i] - #cells[i]))
        or cells[i]
    end
    io.write(table.concat(parts, "  "), "\n")
  end
  line(header)
  for _, row in ipairs(rows) do line(row) end
end

local function print_json(v)
  io.write(mcp.json.encode(v, { pretty = true }), "\n")
end

-- Finds SERVICE's definition file: its text, format, node.
local function definition_file(cfg, service)
  for _, ext in ipairs({ "toml", "lua", "json" }) do
    local path = cfg.services_dir .. "/" .. service .. "." .. ext
    local text = read_file(path)
    if text then
      local node
      if ext == "toml" then
        local t, err = mcp.toml.decode(text, path)
        if not t then error(err, 0) end
        node = t.node
      elseif ext == "json" then
        local t = mcp.json.decode(text)
        node = t and t.node
      else
        -- Evaluated with nothing in reach, only to read `node`; the agent
        -- validates the definition for real.
        local fn, err = loadstring(text, "@" .. path)
        if not fn then error(err, 0) end
        setfenv(fn, { mcp = setmetatable({}, { __index = function() return {} end }) })
        local ok, t = pcall(fn)
        node = ok and type(t) == "table" and t.node or nil
      end
      return { path = path, text = text, ext = ext, node = node }
    end
  end
  return nil
end

-- A path inside /srv/SERVICE as a URL path: each segment percent-encoded,
-- and "." and ".." segments too, so that no HTTP client resolves them away:
-- the agent sees the path as typed and says what is wrong with it (a
-- leading "/" goes as %2F for the same reason).
local function encode_path(path)
  local out = {}
  for seg in (path .. "/"):gmatch("([^/]*)/") do
    out[#out + 1] = seg:gsub("[^%w%-_~]", function(c)
      if c == "." and seg ~= "." and seg ~= ".." then return c end
      return string.format("%%%02X", c:byte())
    end)
  end
  return (table.concat(out, "/"):gsub("^/", "%%2F"))
end
cli.encode_path = encode_path

local CONTENT_TYPE = { toml = "application/toml", lua = "text/x-lua",
  json = "application/json" }

-- The node a service lives on: its definition's, else the only node, else
-- the one that knows it.
local function node_of(cfg, service, file)
  if file and file.node then return node_by_name(cfg, file.node) end
  if #cfg.nodes == 1 then return cfg.nodes[1] end
  for _, n in ipairs(cfg.nodes) do
    if call(n, "GET", "/v1/services/" .. service) then return n end
  end
  error(string.format("service %q: no definition in %s and no node knows it", service,
    cfg.services_dir), 0)
end

local function print_step(ev)
  if ev.step == "pull" and ev.progress then
    local p = ev.progress
    if type(p) == "table" then p = p.stream or p.status or mcp.json.encode(p) end
    io.write("  pull ", ev.image or "", ": ", trim(tostring(p)), "\n")
  elseif ev.step == "log" then
    io.write("  ", ev.message or "", "\n")
  elseif ev.step == "deploy" then
    io.write(string.format("deploy %s: revision %s, policy %s\n", ev.service, ev.revision,
      ev.policy))
  elseif ev.step ~= "done" then
    io.write("  ", ev.step, ev.container and (" " .. ev.container)
      or (ev.service and (" " .. ev.service)) or "",
      ev.timeout and string.format(" (up to %gs)", ev.timeout) or "", "\n")
  end
  io.flush()
end

-- POST with an NDJSON progress stream; returns the final result.
local function streamed(node, path, opts, json_out)
  local s, err = mcp.http.stream({ method = "POST", url = node.address .. path,
    headers = { ["Authorization"] = "Bearer " .. (node.token or ""),
      ["Accept"] = "application/x-ndjson", ["Content-Type"] = "application/json" },
    body = mcp.json.encode(opts or {}), timeout = 3600, cacert = node.ca_cert })
  if not s then return nil, string.format("%s: POST %s: %s", node.name, path, err) end
  local result, failure
  while true do
    local line, rerr = s:read()
    if not line then
      if rerr then failure = failure or rerr end
      break
    end
    local ev = mcp.json.decode(line)
    if type(ev) == "table" then
      if ev.error then failure = type(ev.error) == "table" and ev.error.message or ev.error
      elseif ev.result then result = ev.result
      elseif not json_out then print_step(ev) end
    end
  end
  s:close()
  if s.status and s.status >= 400 and not failure then
    failure = string.format("HTTP %d", s.status)
  end
  if failure then return nil, string.format("%s: %s", node.name, failure) end
  return result
end

local commands = {}

function commands.deploy(cfg, args, o)
  want(args, 1, 1, "mcp deploy SERVICE")
  local service = args[1]
  local file = definition_file(cfg, service)
  local node = node_of(cfg, service, file)
  if file then
    must(call(node, "PUT", "/v1/services/" .. service, { body = file.text,
      headers = { ["Content-Type"] = CONTENT_TYPE[file.ext] } }))
  end
  local r = must(streamed(node, "/v1/services/" .. service .. "/deploy", {}, o.json))
  if o.json then return print_json(r) end
  io.write(string.format("%s: revision %s deployed on %s\n", service, r.revision, node.name))
  for _, c in ipairs(r.containers or {}) do
    local ports = {}
    for route, port in pairs(c.ports or {}) do ports[#ports + 1] = route .. "=" .. port end
    table.sort(ports)
    io.write(string.format("  %s  %s\n", c.name, table.concat(ports, " ")))
  end
end

local function simple(verb, method, suffix)
  return function(cfg, args, o)
    want(args, 1, 1, "mcp " .. verb .. " SERVICE")
    local service = args[1]
    local node = node_of(cfg, service, definition_file(cfg, service))
    local r = must(call(node, method, "/v1/services/" .. service .. (suffix or "")))
    if o.json then return print_json(r) end
    io.write(string.format("%s: %s on %s\n", service, verb == "undeploy" and "undeployed"
      or (r.state or verb), node.name))
  end
end
commands.stop = simple("stop", "POST", "/stop")
commands.start = simple("start", "POST", "/start")
commands.restart = simple("restart", "POST", "/restart")
commands.undeploy = simple("undeploy", "DELETE")

function commands.ps(cfg, args, o)
  want(args, 0, 0, "mcp ps")
  local rows, all, failed = {}, {}, false
  local answers = gather(cfg.nodes, function(n)
    return call(n, "GET", "/v1/ps", { timeout = VIEW_TIMEOUT })
  end)
  for i, n in ipairs(cfg.nodes) do
    local r, err = answers[i][1], answers[i][2]
    if not r then
      io.stderr:write("mcp: ", err, "\n")
      failed = true
    else
      for _, c in ipairs(r.containers or {}) do
        all[#all + 1] = c
        rows[#rows + 1] = { c.service, c.component, n.name, c.state, c.version,
          c.uptime and duration.format(c.uptime) or nil, c.health,
          c.ports and table.concat(c.ports, ",") or nil }
      end
    end
  end
  if o.json then print_json(mcp.json.array(all))
  else
    table_print({ "SERVICE", "COMPONENT", "NODE", "STATE", "VERSION", "UPTIME", "HEALTH",
      "PORTS" }, rows)
  end
  return failed and 1 or 0
end

-- The first line of an agent's last reload error, from /v1/status.
local function reload_problem(st)
  local e = st.reload and st.reload.error
  if type(e) ~= "string" then
    e = type(st.last_reload_error) == "table" and st.last_reload_error.message or nil
  end
  if type(e) ~= "string" then return nil end
  return "reload failed: " .. e:match("^[^\n]*")
end

function commands.status(cfg, args, o)
  want(args, 0, 1, "mcp status [SERVICE]")
  if args[1] then
    local node = node_of(cfg, args[1], definition_file(cfg, args[1]))
    local r = must(call(node, "GET", "/v1/services/" .. args[1]))
    if o.json then return print_json(r) end
    local rev = r.revision or {}
    io.write(string.format("%s on %s: %s, revision %s (%s)\n", r.name, node.name,
      r.active and "active" or "stopped", rev.id or "-", rev.status or "never deployed"))
    local last = r.last_deploy
    if last and last.id ~= rev.id then
      io.write(string.format("  last deploy: revision %s %s%s\n", last.id, last.status,
        last.error and (": " .. last.error) or ""))
    elseif rev.error then
      io.write("  last error: ", rev.error, "\n")
    end
    local rows = {}
    for _, c in ipairs(r.containers or {}) do
      rows[#rows + 1] = { c.container, c.state, c.version, c.health,
        c.ports and table.concat(c.ports, ",") or nil }
    end
    table_print({ "CONTAINER", "STATE", "VERSION", "HEALTH", "PORTS" }, rows)
    if r.events and #r.events > 0 then
      io.write("recent events:\n")
      for _, e in ipairs(r.events) do
        io.write(string.format("  %s  %s  %s\n", os.date("!%Y-%m-%d %H:%M:%S", e.time),
          e.kind, e.message or ""))
      end
    end
    return
  end
  local rows, all, failed = {}, {}, false
  local answers = gather(cfg.nodes, function(n)
    return call(n, "GET", "/v1/status", { timeout = VIEW_TIMEOUT })
  end)
  for i, n in ipairs(cfg.nodes) do
    local r, err = answers[i][1], answers[i][2]
    if not r then
      rows[#rows + 1] = { n.name, "unreachable", nil, nil, nil, err }
      failed = true
    else
      all[#all + 1] = r
      rows[#rows + 1] = { n.name, r.podman and r.podman.reachable and "ok" or "podman down",
        r.version, r.uptime_seconds and duration.format(r.uptime_seconds), r.generation,
        reload_problem(r) }
    end
  end
  if o.json then print_json(mcp.json.array(all))
  else table_print({ "NODE", "STATE", "VERSION", "UPTIME", "GENERATION", "PROBLEM" }, rows) end
  return failed and 1 or 0
end

local function follow_lines(node, path, handle)
  local s, err = mcp.http.stream({ method = "GET", url = node.address .. path,
    headers = { ["Authorization"] = "Bearer " .. (node.token or ""),
      ["Accept"] = "application/x-ndjson" }, timeout = 0,
    cacert = node.ca_cert })
  if not s then error(string.format("%s: GET %s: %s", node.name, path, err), 0) end
  if s.status and s.status >= 400 then
    -- An error answers with one JSON document, not a stream.
    local parts = {}
    while true do
      local line = s:read()
      if not line then break end
      parts[#parts + 1] = line
    end
    s:close()
    local body = table.concat(parts, "\n")
    local j = mcp.json.decode(body)
    local msg = type(j) == "table" and type(j.error) == "table" and j.error.message
      or trim(body)
    error(string.format("%s: GET %s: %d %s", node.name, path, s.status, msg), 0)
  end
  while true do
    local line, rerr = s:read()
    if not line then
      s:close()
      if rerr then error(string.format("%s: %s", node.name, rerr), 0) end
      return
    end
    local j = mcp.json.decode(line)
    -- A stream that fails midway ends with an {"error": ...} line.
    if type(j) == "table" and type(j.error) == "table" then
      s:close()
      error(string.format("%s: GET %s: %s", node.name, path, tostring(j.error.message)), 0)
    end
    handle(line)
  end
end

function commands.logs(cfg, args, o)
  local service, follow, n
  local i = 1
  while args[i] do
    local a = args[i]
    if a == "-f" or a == "--follow" then follow = true
    elseif a == "-n" or a == "--tail" then
      i = i + 1
      n = args[i] and args[i]:match("^%d+$") and tonumber(args[i])
        or usage_error("logs: -n needs a whole number, got %q; usage: mcp logs SERVICE [-f] "
          .. "[-n N]", tostring(args[i]))
    elseif a:sub(1, 1) == "-" then
      usage_error("logs: unknown option %q; usage: mcp logs SERVICE [-f] [-n N]", a)
    elseif not service then service = a
    else usage_error("logs: unexpected argument %q; usage: mcp logs SERVICE [-f] [-n N]", a) end
    i = i + 1
  end
  service = service or usage_error("usage: mcp logs SERVICE [-f] [-n N]")
  local node = node_of(cfg, service, definition_file(cfg, service))
  local q = "?tail=" .. (n or 100) .. (follow and "&follow=1" or "")
  follow_lines(node, "/v1/services/" .. service .. "/logs" .. q, function(line)
    if o.json then io.write(line, "\n") return io.flush() end
    local ev = mcp.json.decode(line)
    if type(ev) == "table" then
      local out = ev.stream == "stderr" and io.stderr or io.stdout
      out:write(ev.line or "", "\n")
      out:flush()
    end
  end)
end

function commands.events(cfg, args, o)
  local follow, service
  for _, a in ipairs(args) do
    if a == "-f" or a == "--follow" then follow = true
    elseif a:sub(1, 1) == "-" or service then
      usage_error("events: unexpected %q; usage: mcp events [-f] [SERVICE]", a)
    else service = a end
  end
  local node = service and node_of(cfg, service, definition_file(cfg, service))
    or cfg.nodes[1]
  local q = "?limit=50" .. (follow and "&follow=1" or "") ..
    (service and ("&service=" .. service) or "")
  follow_lines(node, "/v1/events" .. q, function(line)
    if o.json then io.write(line, "\n") return io.flush() end
    local e = mcp.json.decode(line)
    if type(e) == "table" and e.kind then
      io.write(string.format("%s  %-18s %-20s %s\n", os.date("!%Y-%m-%d %H:%M:%S", e.time),
        e.kind, (e.service or "") .. (e.component and ("/" .. e.component) or ""),
        e.message or ""))
      io.flush()
    end
  end)
end

function commands.sync(cfg, args, o)
  want(args, 0, 0, "mcp sync")
  local per_node = {}
  for _, name in ipairs(mcp.fs.listdir(cfg.services_dir) or {}) do
    local service, ext = name:match("^(.+)%.(%w+)$")
    if service and CONTENT_TYPE[ext] then
      local file = definition_file(cfg, service)
      local node = node_of(cfg, service, file)
      per_node[node] = per_node[node] or {}
      table.insert(per_node[node], { name = service, format = file.ext, text = file.text })
    end
  end
  local rows, failed, all = {}, false, {}
  for node, defs in pairs(per_node) do
    local r, err = call(node, "POST", "/v1/sync", { json = { definitions = defs } })
    if not r then
      io.stderr:write("mcp: ", err, "\n")
      failed = true
    else
      for _, s in ipairs(r.services or {}) do
        all[#all + 1] = s
        if s.error then failed = true end
        rows[#rows + 1] = { s.name, node.name, s.result, s.deployed and s.revision or "-",
          s.error }
      end
    end
  end
  if o.json then print_json(mcp.json.array(all))
  else table_print({ "SERVICE", "NODE", "DEFINITION", "DEPLOYED", "ERROR" }, rows) end
  return failed and 1 or 0
end

function commands.adopt(cfg, args, o)
  want(args, 1, 1, "mcp adopt SERVICE")
  local service = args[1]
  local node = node_of(cfg, service, definition_file(cfg, service))
  local r = must(call(node, "POST", "/v1/adopt", { json = { service = service } }))
  if o.json then return print_json(r) end
  io.write(string.format("%s: adopted %s\n", service, table.concat(r.containers or {}, ", ")))
end

function commands.purge(cfg, args, o)
  local dry = args[1] == "--dry-run"
  if dry then table.remove(args, 1) end
  want(args, 0, 0, "mcp purge [--dry-run]")
  local failed = false
  for _, n in ipairs(cfg.nodes) do
    local r, err = call(n, "POST", "/v1/purge", { json = { dry_run = dry } })
    if not r then io.stderr:write("mcp: ", err, "\n") failed = true
    elseif o.json then print_json(r)
    else
      for _, s in ipairs(r.purged or {}) do
        io.write(string.format("%s: %s %s\n", n.name, dry and "would purge" or "purged", s))
      end
      for _, k in ipairs(r.kept or {}) do
        io.write(string.format("%s: kept %s (%s)\n", n.name, k.service, k.reason))
      end
    end
  end
  return failed and 1 or 0
end

function commands.recover(cfg, args, o)
  want(args, 0, 0, "mcp recover")
  local failed = false
  for _, n in ipairs(cfg.nodes) do
    local r, err = streamed(n, "/v1/recover", {}, o.json)
    if not r then io.stderr:write("mcp: ", err, "\n") failed = true
    elseif o.json then print_json(r)
    else
      for _, s in ipairs(r.services or {}) do
        io.write(string.format("%s: %s %s\n", n.name, s.service,
          s.ok and "recovered" or ("FAILED: " .. tostring(s.error))))
        if not s.ok then failed = true end
      end
    end
  end
  return failed and 1 or 0
end

function commands.push(cfg, args, o)
  want(args, 2, 3, "mcp push SERVICE FILE [PATH]")
  local service, file = args[1], args[2]
  local data = must(read_file(file))
  local path = args[3] or file:match("([^/]+)$")
  local node = node_of(cfg, service, definition_file(cfg, service))
  local url = "/v1/services/" .. service .. "/files/" .. encode_path(path)
  local r = must(call(node, "PUT", url,
    { body = data, headers = { ["Content-Type"] = "application/octet-stream" } }))
  if o.json then return print_json(r) end
  io.write(string.format("%s -> %s:/srv/%s/%s (%d bytes)\n", file, node.name, service, path,
    #data))
end

function commands.pull(cfg, args)
  want(args, 2, 3, "mcp pull SERVICE PATH [FILE]")
  local service, path = args[1], args[2]
  local node = node_of(cfg, service, definition_file(cfg, service))
  local url = "/v1/services/" .. service .. "/files/" .. encode_path(path)
  local r = must(call(node, "GET", url,
    { raw = true }))
  local out = args[3] or path:match("([^/]+)$")
  if out == "-" then io.write(r.body) return end
  local f = must(io.open(out, "wb"))
  f:write(r.body)
  f:close()
  io.stderr:write(string.format("%s:/srv/%s/%s -> %s (%d bytes)\n", node.name, service, path,
    out, #r.body))
end

function commands.reload(cfg, args, o)
  want(args, 0, 0, "mcp reload")
  local failed = false
  for _, n in ipairs(cfg.nodes) do
    local r, err = call(n, "POST", "/v1/reload")
    if not r then io.stderr:write("mcp: ", err, "\n") failed = true
    elseif o.json then print_json(r)
    else
      io.write(string.format("%s: generation %s → %s: %d files, %.0f ms\n", n.name,
        tostring(r.previous or "-"), tostring(r.generation), r.files or 0, r.took_ms or 0))
    end
  end
  return failed and 1 or 0
end

function commands.node(cfg, args, o)
  if args[1] ~= "list" or #args > 1 then usage_error("usage: mcp node list") end
  local rows, all = {}, {}
  local answers = gather(cfg.nodes, function(n)
    return call(n, "GET", "/v1/status", { timeout = 5 })
  end)
  for i, n in ipairs(cfg.nodes) do
    local r, err = answers[i][1], answers[i][2]
    all[#all + 1] = { name = n.name, address = n.address, reachable = r ~= nil,
      status = r, error = err }
    rows[#rows + 1] = { n.name, n.address, r and "yes" or "no", r and r.version,
      r and r.uptime_seconds and duration.format(r.uptime_seconds),
      r and r.counts and r.counts.services,
      not r and err or nil }
  end
  if o.json then return print_json(mcp.json.array(all)) end
  table_print({ "NODE", "ADDRESS", "UP", "VERSION", "UPTIME", "SERVICES", "ERROR" }, rows)
end

function commands.render(cfg, args, o)
  want(args, 1, 1, "mcp render SERVICE")
  local service = args[1]
  local file = definition_file(cfg, service)
  local node = node_of(cfg, service, file)
  local r
  if file then
    r = must(call(node, "POST", "/v1/render", { body = file.text,
      headers = { ["Content-Type"] = CONTENT_TYPE[file.ext] } }))
  else
    r = must(call(node, "GET", "/v1/services/" .. service .. "/render"))
  end
  if o.json then return print_json(r) end
  for _, line in ipairs(r.lines or {}) do io.write(line, "\n") end
end

-- Parses the global options, then runs the command. Returns the exit code.
function cli.main(...)
  local argv = type((...)) == "table" and (...) or { ... }
  local o, args = {}, {}
  local i = 1
  while argv[i] do
    local a = argv[i]
    if #args == 0 and (a == "-h" or a == "--help" or a == "help") then
      io.write(USAGE)
      return 0
    elseif a == "--json" then o.json = true
    elseif #args == 0 and a == "--node" then i = i + 1; o.node = argv[i]
    elseif #args == 0 and a == "--config" then i = i + 1; o.config = argv[i]
    else args[#args + 1] = a end
    i = i + 1
  end
  local name = table.remove(args, 1)
  if not name then
    io.stderr:write(USAGE)
    return 2
  end
  local cmd = commands[name]
  if not cmd then
    io.stderr:write(string.format("mcp: unknown command %q\n\n%s", name, USAGE))
    return 2
  end
  local ok, res = pcall(function()
    local cfg = load_config(o)
    if o.node then cfg.nodes = { node_by_name(cfg, o.node) } end
    return cmd(cfg, args, o)
  end)
  if not ok then
    if type(res) == "table" and getmetatable(res) == Usage then
      io.stderr:write("mcp: ", res.msg, "\n")
      return 2
    end
    io.stderr:write("mcp: ", tostring(res), "\n")
    return 1
  end
  return type(res) == "number" and res or 0
end

return cli
