-- mcp.api.agent_metrics: the /metrics families of what the agent manages:
-- services and containers by state, deploys and their outcomes, reloads and
-- their failures, and the latency of the agent's requests to Podman.
--
-- A scrape does no Podman request: containers are counted as the monitor
-- last saw them (its event stream and re-lists keep that current), and the
-- counters come from mcp.state.metrics, which events.lua and reload.lua
-- keep. Counters count since the agent started, as Prometheus expects.
local mcp = require("mcp.core")
local api = require("mcp.api")

local function sorted_keys(t)
  local out = {}
  for k in pairs(t or {}) do out[#out + 1] = k end
  table.sort(out)
  return out
end

local function metrics() return mcp.state.metrics or {} end

-- Services by state: active (deployed and meant to run), stopped (deployed,
-- stopped by an operator), defined (a definition here, never deployed).
local function services_family()
  local counts = { active = 0, stopped = 0, defined = 0 }
  local seen = {}
  local db = mcp.state.db
  if db then
    for _, s in ipairs(require("mcp.registry").service_list(db)) do
      seen[s.name] = true
      local st = s.active and "active" or "stopped"
      counts[st] = counts[st] + 1
    end
  end
  local gen = mcp.state.gen
  for name in pairs(gen and gen.definitions or {}) do
    if not seen[name] then counts.defined = counts.defined + 1 end
  end
  local f = { name = "mcp_services", type = "gauge",
    help = "Services by state: active, stopped (by an operator), defined (never deployed).",
    samples = {} }
  for _, st in ipairs(sorted_keys(counts)) do
    f.samples[#f.samples + 1] = { labels = { state = st }, value = counts[st] }
  end
  return f
end

-- Managed containers by Podman state, as the monitor last saw them.
local function containers_family()
  local counts = { running = 0, exited = 0 }
  local s = mcp.state
  for _, c in pairs(s.containers or {}) do
    local st = type(c.state) == "string" and c.state ~= "" and c.state or "unknown"
    counts[st] = (counts[st] or 0) + 1
  end
  local f = { name = "mcp_containers", type = "gauge",
    help = "Managed containers by state, as the monitor last saw them.", samples = {} }
  for _, st in ipairs(sorted_keys(counts)) do
    f.samples[#f.samples + 1] = { labels = { state = st }, value = counts[st] }
  end
  return f
end

local function deploy_families()
  local ev = metrics().events or {}
  local total = { name = "mcp_deploys_total", type = "counter",
    help = "Deploys finished since the agent started, by result.", samples = {
      { labels = { result = "deployed" }, value = ev.deployed or 0 },
      { labels = { result = "failed" }, value = ev.deploy_failed or 0 } } }
  local running = 0
  local alive = {}
  for _, t in ipairs(mcp.task.list()) do alive[t.id] = true end
  for _, l in pairs(mcp.state.locks or {}) do
    if l.op == "deploy" and alive[l.task] then running = running + 1 end
  end
  local in_progress = { name = "mcp_deploys_in_progress", type = "gauge",
    help = "Deploys running now.", samples = { { value = running } } }
  -- The current revision of each deployed service: its outcome and how long
  -- its deploy took, from the registry (so they survive a restart).
  local info = { name = "mcp_service_revision", type = "gauge",
    help = "1 for each deployed service's current revision, with its status.", samples = {} }
  local took = { name = "mcp_service_deploy_duration_seconds", type = "gauge",
    help = "How long the deploy of each service's current revision took.", samples = {} }
  local db = mcp.state.db
  if db then
    local registry = require("mcp.registry")
    for _, s in ipairs(registry.service_list(db)) do
      local rev = registry.revision_current(db, s.name)
      if rev then
        info.samples[#info.samples + 1] = { labels = { service = s.name,
          revision = rev.id, status = rev.status or "" }, value = 1 }
        if rev.created and rev.finished then
          took.samples[#took.samples + 1] = { labels = { service = s.name },
            value = math.max(0, rev.finished - rev.created) }
        end
      end
    end
  end
  return { total, in_progress, info, took }
end

local function reload_families()
  local m = metrics()
  local gen = mcp.state.gen
  return {
    { name = "mcp_reloads_total", type = "counter",
      help = "Reloads of the library, policies and definitions, by result.", samples = {
        { labels = { result = "ok" }, value = m.reloads_total or 0 },
        { labels = { result = "failed" }, value = m.reload_failures_total or 0 } } },
    { name = "mcp_reload_generation", type = "gauge",
      help = "The generation of Lua code and definitions running now.",
      samples = { { value = gen and gen.id or 0 } } },
    { name = "mcp_reload_failed", type = "gauge",
      help = "1 while the last reload failed (the previous generation keeps running).",
      samples = { { value = mcp.state.reload_error and 1 or 0 } } },
    { name = "mcp_reload_duration_seconds", type = "gauge",
      help = "How long building the running generation took.",
      samples = { { value = gen and gen.took_ms and gen.took_ms / 1000 or 0 } } },
  }
end

-- The Podman client's own counts (mcp.podman.stats()): latency per
-- operation as a histogram, errors, the event stream.
local function podman_families()
  local st = mcp.podman.stats and mcp.podman.stats()
  if not st then return {} end
  local dur = { name = "mcp_podman_request_duration_seconds", type = "histogram",
    help = "Latency of the agent's requests to the Podman API, by operation.", samples = {} }
  local errs = { name = "mcp_podman_request_errors_total", type = "counter",
    help = "Requests to the Podman API that failed, by operation.", samples = {} }
  for _, op in ipairs(sorted_keys(st.ops)) do
    local o = st.ops[op]
    for _, b in ipairs(o.buckets or {}) do
      local le = b.le == math.huge and "+Inf" or string.format("%g", b.le)
      dur.samples[#dur.samples + 1] = { labels = { op = op, le = le }, value = b.count,
        suffix = "_bucket" }
    end
    dur.samples[#dur.samples + 1] = { labels = { op = op }, value = o.sum or 0,
      suffix = "_sum" }
    dur.samples[#dur.samples + 1] = { labels = { op = op }, value = o.count or 0,
      suffix = "_count" }
    errs.samples[#errs.samples + 1] = { labels = { op = op }, value = o.errors or 0 }
  end
  local ev = st.events or {}
  return {
    dur, errs,
    { name = "mcp_podman_requests_in_flight", type = "gauge",
      help = "Requests to the Podman API waiting for an answer now.",
      samples = { { value = st.in_flight or 0 } } },
    { name = "mcp_podman_events_connected", type = "gauge",
      help = "1 while the Podman event stream is connected.",
      samples = { { value = ev.connected and 1 or 0 } } },
    { name = "mcp_podman_event_stream_connects_total", type = "counter",
      help = "Connections of the Podman event stream (the first, and each reconnect).",
      samples = { { value = ev.connects or 0 } } },
    { name = "mcp_podman_events_received_total", type = "counter",
      help = "Podman events received.", samples = { { value = ev.events or 0 } } },
    { name = "mcp_podman_event_bad_lines_total", type = "counter",
      help = "Lines of the Podman event stream that could not be parsed.",
      samples = { { value = ev.bad_lines or 0 } } },
  }
end

api.metrics_provider("agent_metrics", function()
  local out = { services_family(), containers_family() }
  for _, group in ipairs({ deploy_families(), reload_families(), podman_families() }) do
    for _, f in ipairs(group) do out[#out + 1] = f end
  end
  return out
end)

return {}
