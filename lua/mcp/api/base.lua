-- mcp.api.base: the endpoints every agent has whatever it runs: liveness,
-- status, and the Prometheus metrics, with the families of the agent itself.
local mcp = require("mcp.core")
local api = require("mcp.api")

local base = {}

-- Seconds since the agent started (the Lua module, in tests, has no agent
-- start: the first time this module was loaded stands in).
local function uptime()
  if mcp.config and mcp.proc and mcp.proc.uptime then return mcp.proc.uptime() end
  mcp.state.started = mcp.state.started or mcp.now()
  return mcp.now() - mcp.state.started
end

api.route("GET", "/v1/health", function()
  return 200, { status = "ok" }
end, { auth = false, summary = "Liveness: answers while the loop runs." })

-- What /v1/status reports of the agent itself; other modules add fields with
-- api.status_field(name, fn).
function base.status()
  local cfg = mcp.config or {}
  local gen = mcp.state.gen
  local st = {
    version = mcp.version,
    node = cfg.agent and cfg.agent.node or nil,
    uptime_seconds = math.floor(uptime()),
    generation = gen and gen.id or nil,
    last_reload_error = mcp.state.reload_error,
    counts = { tasks = #mcp.task.list() },
  }
  local db = mcp.state.db
  if db then
    local ok, list = pcall(require("mcp.registry").service_list, db)
    if ok and type(list) == "table" then
      local active = 0
      for _, s in ipairs(list) do if s.active then active = active + 1 end end
      st.counts.services = #list
      st.counts.services_active = active
    end
  end
  local hs = mcp.httpd.stats()
  if hs then
    st.api = { connections = hs.connections, in_flight = hs.in_flight, streams = hs.streams,
      requests = hs.requests_total, addresses = hs.addresses }
  end
  local errs = api.load_errors()
  if #errs > 0 then st.api_load_errors = errs end
  for _, f in ipairs(api.status_fields()) do
    local ok, v = pcall(f.fn)
    st[f.name] = ok and v or { error = tostring(v) }
  end
  return st
end

api.route("GET", "/v1/status", function()
  return 200, base.status()
end, { summary = "The agent: version, node, uptime, generation, counts." })

api.route("GET", "/metrics", function()
  return 200, api.metrics_text(), { ["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8" }
end, { summary = "Prometheus text exposition." })

-- The agent's own families: identity, uptime, the Lua runtime, connections.
api.metrics_provider("agent", function()
  local cfg = mcp.config or {}
  local fams = {
    { name = "mcp_agent_info", type = "gauge", help = "The agent's version and node (always 1).",
      samples = { { labels = { version = mcp.version,
        node = cfg.agent and cfg.agent.node or "" }, value = 1 } } },
    { name = "mcp_agent_uptime_seconds", type = "gauge",
      help = "Seconds since the agent started.", samples = { { value = uptime() } } },
    { name = "mcp_lua_tasks", type = "gauge", help = "Lua tasks alive now.",
      samples = { { value = #mcp.task.list() } } },
    { name = "mcp_lua_memory_bytes", type = "gauge", help = "Memory of the Lua state.",
      samples = { { value = math.floor(collectgarbage("count") * 1024) } } },
  }
  local hs = mcp.httpd.stats()
  if hs then
    fams[#fams + 1] = { name = "mcp_api_connections", type = "gauge",
      help = "API connections open now.", samples = { { value = hs.connections } } }
    fams[#fams + 1] = { name = "mcp_api_connections_total", type = "counter",
      help = "API connections accepted.", samples = { { value = hs.connections_total } } }
    fams[#fams + 1] = { name = "mcp_api_in_flight", type = "gauge",
      help = "API requests whose handler runs now.", samples = { { value = hs.in_flight } } }
    local rejected = { name = "mcp_api_rejected_total", type = "counter",
      help = "Requests and connections the server ended itself, by reason.", samples = {} }
    for _, reason in ipairs({ "too_large", "forbidden", "unavailable", "task_failed",
        "deadline", "client_gone", "slow_clients", "refused" }) do
      rejected.samples[#rejected.samples + 1] = { labels = { reason = reason },
        value = hs[reason] }
    end
    fams[#fams + 1] = rejected
  end
  return fams
end)

return base
