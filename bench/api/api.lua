-- bench/api/api.lua: GET /v1/ps on the agent against Podman's own list of
-- the same containers, with nginx serving the same JSON as a ceiling. Used
-- by bench/deploy/bench.lua once 100 services run.
--
-- Podman is measured on the request with which the agent asks it for the
-- managed containers (GET /v4.0.0/libpod/containers/json?all=true&filters=
-- {"label":["mcp.managed=true"]}), so both answer about the same containers
-- (whether the agent asks Podman per request or keeps a cache is the
-- agent's business; see ops.ps). Podman listens on a unix socket only,
-- which wrk cannot reach, so every target is measured by one client,
-- bench/api/loadgen.c (keep-alive, fixed concurrency, one thread), over the
-- socket for Podman and over TCP for the agent and nginx; wrk measures the
-- agent and nginx as well. nginx runs one worker (the agent has one
-- thread; Podman uses every core) from a private config in the run's
-- directory, on a free port, without access log.
local agent_env = require("tests.env.agent_env")
local mcp = require("mcp.core")

local api = {}
local run, q = agent_env.run, agent_env.quote

api.PODMAN_PATH = "/v4.0.0/libpod/containers/json?all=true&filters="
  .. "%7B%22label%22%3A%5B%22mcp.managed%3Dtrue%22%5D%7D"

local NGINX_CONF = [[
worker_processes 1;
pid %s/nginx.pid;
error_log %s/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  client_body_temp_path %s/tmp;
  proxy_temp_path %s/tmp;
  fastcgi_temp_path %s/tmp;
  uwsgi_temp_path %s/tmp;
  scgi_temp_path %s/tmp;
  server {
    listen 127.0.0.1:%d;
    root %s;
    default_type application/json;
    location = /v1/ps { try_files /ps.json =404; }
  }
}
]]

-- Starts nginx serving body at /v1/ps; returns { port, pid, url, stop }.
-- on_pid(pid) is told the pid at once (for the runner's cleanup).
function api.nginx_start(dir, body, on_pid)
  local ndir = dir .. "/nginx"
  local _, rc, err = run(("mkdir -p %s/tmp && chmod 755 %s %s"):format(q(ndir), q(dir), q(ndir)))
  assert(rc == 0, "nginx dir: " .. err)
  agent_env.write_file(ndir .. "/ps.json", body)
  local port = agent_env.free_port()
  local conf = NGINX_CONF:format(ndir, ndir, ndir, ndir, ndir, ndir, ndir, port, ndir)
  agent_env.write_file(ndir .. "/nginx.conf", conf)
  -- Workers run as nobody: the file and its directories must be readable.
  run("chmod 644 " .. q(ndir .. "/ps.json"))
  local pid = run(("nginx -e %s -p %s -c %s -g 'daemon off;' >%s 2>&1 & echo $!"):format(
    q(ndir .. "/error.log"), q(ndir), q(ndir .. "/nginx.conf"), q(ndir .. "/nginx.out")))
  pid = tonumber(pid)
  if on_pid then on_pid(pid) end
  local url = "http://127.0.0.1:" .. port
  local self = { port = port, pid = pid, url = url }
  function self.stop()
    os.execute("kill -QUIT " .. pid .. " 2>/dev/null")
    agent_env.wait_for(function()
      return os.execute("kill -0 " .. pid .. " 2>/dev/null") ~= 0
    end, 10, "nginx to stop")
  end
  local ok = pcall(agent_env.wait_for, function()
    local out = run("curl -s -o /dev/null -w '%{http_code}' " .. q(url .. "/v1/ps"))
    return out == "200"
  end, 10, "nginx to answer")
  if not ok then
    self.stop()
    error("nginx did not start: " .. (agent_env.read_file(ndir .. "/error.log") or "")
      .. (agent_env.read_file(ndir .. "/nginx.out") or ""))
  end
  return self
end

-- One loadgen measurement: target = "--unix PATH" or "--tcp HOST:PORT".
-- m: { connections, seconds, min_requests, max_seconds } of this measurement.
function api.loadgen(o, m, target, path, headers)
  local h = {}
  for _, v in ipairs(headers or {}) do h[#h + 1] = "-H " .. q(v) end
  local out, rc, err = run(("%s %s -c %d -d %g -w %g -n %d -m %g %s %s"):format(q(o.loadgen),
    target, m.connections, m.seconds, o.warmup, m.min_requests or 0,
    m.max_seconds or m.seconds, table.concat(h, " "), q(path)))
  assert(rc == 0, "loadgen " .. target .. " " .. path .. ": " .. err .. out)
  return assert(mcp.json.decode(out), "loadgen printed: " .. out)
end

local WRK_SCRIPT = [[
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %.3f %.3f %.3f %.3f %d %d %d %d %d\n",
    summary.requests, summary.duration, latency:percentile(50) / 1000,
    latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    e.connect, e.read, e.write, e.status, e.timeout))
end
]]

-- One wrk measurement (one thread, m.connections connections).
function api.wrk(o, m, url, headers)
  local script = o.dir .. "/wrk-report.lua"
  agent_env.write_file(script, WRK_SCRIPT)
  local h = {}
  for _, v in ipairs(headers or {}) do h[#h + 1] = "-H " .. q(v) end
  local out, rc, err = run(("wrk -t1 -c%d -d%gs --timeout 10s -s %s %s %s"):format(
    m.connections, m.seconds, q(script), table.concat(h, " "), q(url)))
  assert(rc == 0, "wrk " .. url .. ": " .. err .. out)
  local n, us, p50, p90, p99, max, c, r, w, s, t = out:match(
    "BENCH (%d+) (%d+) (%S+) (%S+) (%S+) (%S+) (%d+) (%d+) (%d+) (%d+) (%d+)")
  assert(n, "wrk printed: " .. out)
  local secs = tonumber(us) / 1e6
  return { client = "wrk", transport = "tcp", connections = m.connections, seconds = secs,
    requests = tonumber(n), rps = tonumber(n) / secs,
    latency_ms = { p50 = tonumber(p50), p90 = tonumber(p90), p99 = tonumber(p99),
      max = tonumber(max) },
    errors = tonumber(c) + tonumber(r) + tonumber(w) + tonumber(t), non_2xx = tonumber(s) }
end

-- o: { agent, env, loadgen, dir, rounds, seconds, max_seconds, min_requests,
-- ceiling_seconds, warmup, connections, on_pid }. Each round measures, in
-- this order: Podman and the agent at o.connections (loadgen; wrk for the
-- agent), both again on one connection (the agent's own cost per request,
-- without queueing in Podman), and nginx for o.ceiling_seconds (it answers
-- ~10^4 times faster). Podman's list of 100 containers takes long enough on
-- a busy machine that loadgen's window grows, up to o.max_seconds, until it
-- has o.min_requests answers (half of them on one connection).
-- Returns the raw measurements: { series = { name = { run, ... } }, ... }.
function api.run(o)
  local agent, env = o.agent, o.env
  local auth = { "Authorization: Bearer " .. agent.token }
  local status, rows, ps_text = agent:api("GET", "/v1/ps")
  assert(status == 200, "GET /v1/ps: " .. tostring(status))
  local podman_text = env:api("GET", api.PODMAN_PATH)
  local result = {
    connections = o.connections, seconds = o.seconds, ceiling_seconds = o.ceiling_seconds,
    max_seconds = o.max_seconds, min_requests = o.min_requests, warmup = o.warmup,
    rounds = o.rounds,
    containers = #rows.containers,
    podman_containers = #(mcp.json.decode(podman_text) or {}),
    bytes = { agent = #ps_text, podman = #podman_text, nginx = #ps_text },
    podman_request = "GET " .. api.PODMAN_PATH,
    series = {},
  }
  local nginx = api.nginx_start(o.dir, ps_text, o.on_pid)
  local ok, err = pcall(function()
    local tcp = "--tcp 127.0.0.1:" .. agent.port
    local unix = "--unix " .. q(env.socket)
    local full = { connections = o.connections, seconds = o.seconds,
      min_requests = o.min_requests, max_seconds = o.max_seconds }
    local one = { connections = 1, seconds = o.seconds,
      min_requests = math.ceil(o.min_requests / 2), max_seconds = o.max_seconds }
    local ceiling = { connections = o.connections, seconds = o.ceiling_seconds }
    local steps = {
      { "podman_loadgen", function() return api.loadgen(o, full, unix, api.PODMAN_PATH) end },
      { "agent_loadgen", function() return api.loadgen(o, full, tcp, "/v1/ps", auth) end },
      { "agent_wrk", function() return api.wrk(o, full, agent.url .. "/v1/ps", auth) end },
      { "podman_loadgen_1", function() return api.loadgen(o, one, unix, api.PODMAN_PATH) end },
      { "agent_loadgen_1", function() return api.loadgen(o, one, tcp, "/v1/ps", auth) end },
      { "nginx_loadgen", function()
        return api.loadgen(o, ceiling, "--tcp 127.0.0.1:" .. nginx.port, "/v1/ps", auth) end },
      { "nginx_wrk", function() return api.wrk(o, ceiling, nginx.url .. "/v1/ps", auth) end },
    }
    for round = 1, o.rounds do
      for _, s in ipairs(steps) do
        io.stderr:write(("  api round %d: %s\n"):format(round, s[1]))
        local r = s[2]()
        result.series[s[1]] = result.series[s[1]] or {}
        table.insert(result.series[s[1]], r)
      end
    end
  end)
  nginx.stop()
  if not ok then error(err, 0) end
  return result
end

return api
