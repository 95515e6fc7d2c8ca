-- mcp.api.monitor: what the monitor knows, for /metrics and /v1/status:
-- health checks and states, automatic restarts, flapping, re-lists, boot,
-- and the events of every kind.
local mcp = require("mcp.core")
local api = require("mcp.api")

local function split(key, n)
  local parts = {}
  for p in (key .. "|"):gmatch("([^|]*)|") do parts[#parts + 1] = p end
  for i = #parts + 1, n do parts[i] = "" end
  return parts
end

local function sorted_keys(t)
  local out = {}
  for k in pairs(t or {}) do out[#out + 1] = k end
  table.sort(out)
  return out
end

api.metrics_provider("monitor", function()
  local monitor = require("mcp.monitor")
  local s = monitor.state()
  local m = s.metrics.monitor
  local checks = { name = "mcp_health_checks_total", type = "counter",
    help = "Health checks run by the monitor, by kind and result (pass, fail, error: "
      .. "could not tell).", samples = {} }
  for _, k in ipairs(sorted_keys(m.checks)) do
    local p = split(k, 2)
    checks.samples[#checks.samples + 1] = { labels = { kind = p[1], result = p[2] },
      value = m.checks[k] }
  end
  local secs = { name = "mcp_health_check_seconds", type = "summary",
    help = "Time the monitor's health checks took.", samples = {
      { value = m.check_seconds, suffix = "_sum" },
      { value = m.check_count, suffix = "_count" } } }
  local states = { name = "mcp_health_status", type = "gauge",
    help = "1 for the health state each checked container is in.", samples = {} }
  for _, name in ipairs(sorted_keys(s.health)) do
    local h = s.health[name]
    states.samples[#states.samples + 1] = { labels = { service = h.service,
      component = h.component, container = name, state = h.state }, value = 1 }
  end
  local restarts = { name = "mcp_restarts_total", type = "counter",
    help = "Automatic restarts done by the monitor, by service, component and cause.",
    samples = {} }
  for _, k in ipairs(sorted_keys(m.restarts)) do
    local p = split(k, 2)
    local svc, comp = p[1]:match("^([^/]*)/(.*)$")
    restarts.samples[#restarts.samples + 1] = { labels = { service = svc or p[1],
      component = comp or "", cause = p[2] }, value = m.restarts[k] }
  end
  local flapping = { name = "mcp_flapping", type = "gauge",
    help = "1 for a component the monitor stopped restarting because it flaps.",
    samples = {} }
  local delay = { name = "mcp_restart_delay_seconds", type = "gauge",
    help = "The last restart delay chosen for a component.", samples = {} }
  for _, key in ipairs(sorted_keys(s.restarts)) do
    local r = s.restarts[key]
    local svc, comp = key:match("^([^/]*)/(.*)$")
    local labels = { service = svc, component = comp }
    if r.flap:is_flapping() then
      flapping.samples[#flapping.samples + 1] = { labels = labels, value = 1 }
    end
    if r.last_delay then
      delay.samples[#delay.samples + 1] = { labels = labels, value = r.last_delay }
    end
  end
  local relists = { name = "mcp_monitor_relists_total", type = "counter",
    help = "Full re-lists of Podman's containers, by result.", samples = {
      { labels = { result = "ok" }, value = m.relists },
      { labels = { result = "error" }, value = m.relist_errors } } }
  local reachable = { name = "mcp_podman_reachable", type = "gauge",
    help = "1 while the monitor's last contact with Podman succeeded.",
    samples = { { value = s.podman_seen_ok and 1 or 0 } } }
  local evs = { name = "mcp_events_total", type = "counter",
    help = "Events emitted, by kind.", samples = {} }
  for _, k in ipairs(sorted_keys(s.metrics.events)) do
    evs.samples[#evs.samples + 1] = { labels = { kind = k }, value = s.metrics.events[k] }
  end
  return { checks, secs, states, restarts, flapping, delay, relists, reachable, evs }
end)

api.status_field("monitor", function()
  return require("mcp.monitor").status()
end)

return {}
