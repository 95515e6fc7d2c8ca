-- tests/integration/deploy_spec.lua: deploying services with a real agent
-- against a real Podman, and switching traffic through a real nginx.
--
-- One Podman environment, one nginx and one agent for the whole file. The
-- agent's config routes through nginx ([routes] provider = "nginx"): nginx
-- includes the directory the agent writes one file per route into, and the
-- agent reloads it with `nginx -c <conf> -s reload`.
local podman_env = require("tests.env.podman_env")
local agent_env = require("tests.env.agent_env")
local mcp = require("mcp.core")

local run, q, read_file, write_file = agent_env.run, agent_env.quote, agent_env.read_file,
  agent_env.write_file
local ROOT = agent_env.ROOT

-- One HTTP GET with curl: status (0 when nothing answered), body.
local function http_get(url, host)
  local out = run(("curl -s --max-time 5 %s -w '\\n%%{http_code}' %s"):format(
    host and ("-H " .. q("Host: " .. host)) or "", q(url)))
  local body, code = out:match("^(.*)\n(%d+)$")
  return tonumber(code) or 0, body or out
end

-- A private nginx listening on `port`, including `dir/conf.d/*.conf`.
local function start_nginx(dir, port)
  os.execute("mkdir -p " .. q(dir .. "/conf.d") .. " " .. q(dir .. "/tmp"))
  local conf = dir .. "/nginx.conf"
  write_file(conf, table.concat({
    "worker_processes 1;",
    "pid " .. dir .. "/nginx.pid;",
    "error_log " .. dir .. "/error.log info;",
    "events { worker_connections 512; }",
    "http {",
    "    access_log " .. dir .. "/access.log;",
    "    client_body_temp_path " .. dir .. "/tmp/body;",
    "    proxy_temp_path " .. dir .. "/tmp/proxy;",
    "    fastcgi_temp_path " .. dir .. "/tmp/fastcgi;",
    "    uwsgi_temp_path " .. dir .. "/tmp/uwsgi;",
    "    scgi_temp_path " .. dir .. "/tmp/scgi;",
    -- Requests for a hostname no route serves get 421: never a 200 by mistake.
    -- It listens as the provider's blocks do (all addresses), or the
    -- reload that adds them could not bind.
    ("    server { listen %d default_server; return 421; }"):format(port),
    "    include " .. dir .. "/conf.d/*.conf;",
    "}",
  }, "\n") .. "\n")
  local ngx = { dir = dir, conf = dir .. "/nginx.conf", port = port, confd = dir .. "/conf.d",
    cmd = "nginx -c " .. conf .. " -e " .. dir .. "/error.log" }
  local out, rc, err = run(ngx.cmd)
  assert(rc == 0, "nginx did not start: " .. out .. err)
  agent_env.wait_for(function() return http_get("http://127.0.0.1:" .. port .. "/") == 421 end,
    10, "nginx to answer")
  function ngx.stop()
    local pid = (read_file(dir .. "/nginx.pid") or ""):match("%d+")
    if pid then
      os.execute("kill -TERM " .. pid .. " 2>/dev/null")
      for _ = 1, 50 do
        if os.execute("kill -0 " .. pid .. " 2>/dev/null") ~= 0 then break end
        os.execute("sleep 0.1")
      end
    end
  end
  return ngx
end

-- Requests sent in a loop through nginx while something happens: `loops`
-- curl loops in the background, each writing "VERSION STATUS" per request.
local function start_traffic(dir, url, host, loops)
  local stop = dir .. "/traffic.stop"
  os.remove(stop)
  local files = {}
  for i = 1, loops do
    local file = ("%s/traffic.%d"):format(dir, i)
    write_file(file, "")
    files[i] = file
    os.execute(("sh -c %s >/dev/null 2>&1 &"):format(q(([[
while [ ! -e %s ]; do
  r=$(curl -s --max-time 5 -H %s -w ' %%{http_code}' %s | tr -d '\n')
  echo "$r" >> %s
done]]):format(q(stop), q("Host: " .. host), q(url .. "/version"), q(file)))))
  end
  local t = {}
  function t.count()
    local n = 0
    for _, f in ipairs(files) do
      for _ in (read_file(f) or ""):gmatch("[^\n]+") do n = n + 1 end
    end
    return n
  end
  -- Stops the loops; returns the counts per "VERSION STATUS" and the total.
  function t.stop()
    write_file(stop, "")
    os.execute("sleep 0.5")
    local seen, total, failures = {}, 0, {}
    for _, f in ipairs(files) do
      for line in (read_file(f) or ""):gmatch("[^\n]+") do
        total = total + 1
        local version, code = line:match("^(%S+) (%d+)$")
        if code == "200" then
          seen[version] = (seen[version] or 0) + 1
        else
          failures[#failures + 1] = line
        end
      end
    end
    return { seen = seen, total = total, failures = failures }
  end
  return t
end

local function inspect(env, name)
  local out, rc, err = env:podman({ "inspect", name })
  if rc ~= 0 then return nil, err end
  return mcp.json.decode(out)[1]
end

local function env_of(info)
  local out = {}
  for _, e in ipairs(info.Config.Env or {}) do
    local k, v = e:match("^([^=]+)=(.*)$")
    out[k] = v
  end
  return out
end

-- The containers Podman has of a service: "NAME STATE REVISION" each.
local function containers(env, service)
  local out = env:podman({ "ps", "-a", "--filter", "label=mcp.service=" .. service,
    "--format", "json" })
  local list = {}
  for _, c in ipairs(mcp.json.decode(out) or {}) do
    list[#list + 1] = ("%s %s %s"):format(c.Names[1], c.State, c.Labels["mcp.revision"])
  end
  table.sort(list)
  return list
end

local function toml(name, opts)
  opts = opts or {}
  return table.concat({
    ('name = "%s"'):format(name),
    'node = "test"',
    ('policy = "%s"'):format(opts.policy or "recreate"),
    "[[components]]",
    'name = "web"',
    ('image = "%s"'):format(opts.image or podman_env.image1),
    ('cmd = [%s]'):format(opts.cmd or '"httpd", "-f", "-p", "8080", "-h", "/www"'),
    "[[components.routes]]",
    "port = 8080",
    -- http, not the default tcp check: Podman's port forwarder accepts a
    -- connection on the host port whether or not the container listens.
    opts.http and "[components.health]\nkind = \"http\"\ninterval = \"2s\"" or "",
  }, "\n") .. "\n"
end

describe("deploying services", function()
  local env, agent, ngx, dir
  local made_srv = {}

  local function put(name, text)
    local status, body = agent:api("PUT", "/v1/services/" .. name,
      { body = text, headers = { ["Content-Type"] = "application/toml" } })
    assert.is_true(status == 200 or status == 201, tostring(status) .. ": "
      .. mcp.json.encode(body))
  end

  local function deploy(name)
    local t0 = agent_env.now()
    local status, body = agent:api("POST", "/v1/services/" .. name .. "/deploy")
    return status, body, agent_env.now() - t0
  end

  local function show(name)
    local status, body = agent:api("GET", "/v1/services/" .. name)
    assert.equal(200, status)
    return body
  end

  setup(function()
    for _, s in ipairs({ "hello", "recreated", "sad", "fresh" }) do
      if os.execute("test -e /srv/" .. s) ~= 0 then made_srv[#made_srv + 1] = "/srv/" .. s end
    end
    dir = run("mktemp -d /tmp/mcp-deploy-test.XXXXXX")
    env = podman_env.start()
    ngx = start_nginx(dir .. "/nginx", agent_env.free_port())
    -- An operator's policy: rolling, with a short health timeout, so that
    -- the rollback test does not wait a whole minute.
    local rolling = read_file(ROOT .. "/policies/rolling.lua")
    local fast, n = rolling:gsub('rolling.health_timeout = "60s"',
      'rolling.health_timeout = "5s"')
    assert.equal(1, n)
    -- The example, on this agent's node.
    local hello = read_file(ROOT .. "/examples/services/hello.toml"):gsub('node = "demo"',
      'node = "test"')
    agent = agent_env.start({ podman = env, node = "test",
      services = { hello = hello },
      policies = { ["rolling-fast"] = fast },
      config = table.concat({
        "[routes]",
        'provider = "nginx"',
        ('nginx_dir = "%s"'):format(ngx.confd),
        ("nginx_http_port = %d"):format(ngx.port),
        ('nginx_reload = "%s -s reload"'):format(ngx.cmd),
      }, "\n") })
  end)

  teardown(function()
    for _, d in ipairs(made_srv) do os.execute("rm -rf " .. q(d)) end
    if agent then pcall(agent.stop, agent) end
    if ngx then pcall(ngx.stop) end
    if dir then os.execute("rm -rf " .. q(dir)) end
    if env then env:stop() end
  end)

  it("deploys the example: it serves on its assigned port, and Podman shows the labels "
    .. "and $PORT", function()
    local status, body, took = deploy("hello")
    assert.equal(200, status, agent:log_tail())
    io.stderr:write(("\n# measured: deploy of examples/services/hello.toml (first, rolling): "
      .. "%.2f s\n"):format(took))
    assert.equal("r1", body.revision)
    local c = body.containers[1]
    assert.equal("hello-web", c.name)
    local port = c.ports.default
    assert.is_true(port >= 10000 and port <= 60000)

    local code, page = http_get("http://127.0.0.1:" .. port .. "/")
    assert.equal(200, code)
    assert.equal("hello from mcp-test 1.0\n", page)

    local info = assert(inspect(env, "hello-web"))
    local labels = info.Config.Labels
    assert.equal("true", labels["mcp.managed"])
    assert.equal("hello", labels["mcp.service"])
    assert.equal("web", labels["mcp.component"])
    assert.equal("r1", labels["mcp.revision"])
    assert.equal(tostring(port), env_of(info).PORT)
    assert.equal("localhost/mcp-test:1.0", info.ImageName)
    assert.is_true(info.State.Running)
    local bind = info.HostConfig.PortBindings["8080/tcp"][1]
    assert.same({ "127.0.0.1", tostring(port) }, { bind.HostIp, bind.HostPort })

    -- The registry agrees, and the route reached nginx under its hostname.
    local s = show("hello")
    assert.equal("r1", s.revision.id)
    assert.equal("deployed", s.revision.status)
    assert.same({ { component = "web", route = "default", port = port } }, s.ports)
    -- `nginx -s reload` returns before nginx has swapped: give it a moment.
    agent_env.wait_for(function()
      return http_get("http://127.0.0.1:" .. ngx.port .. "/", "hello.localhost") == 200
    end, 5, "nginx to route hello.localhost")
    assert.equal("hello from mcp-test 1.0\n",
      select(2, http_get("http://127.0.0.1:" .. ngx.port .. "/", "hello.localhost")))
  end)

  it("redeploys with a new image under recreate: the same port, one container, "
    .. "the new revision", function()
    put("recreated", toml("recreated"))
    local status, body = deploy("recreated")
    assert.equal(200, status, agent:log_tail())
    local port = body.containers[1].ports.default
    assert.equal("1.0\n", select(2, http_get("http://127.0.0.1:" .. port .. "/version")))

    put("recreated", toml("recreated", { image = podman_env.image2 }))
    assert.is_true(show("recreated").outdated)
    local took
    status, body, took = deploy("recreated")
    assert.equal(200, status, agent:log_tail())
    io.stderr:write(("# measured: recreate redeploy 1.0 -> 2.0: %.2f s\n"):format(took))
    assert.equal("r2", body.revision)
    local new_port = body.containers[1].ports.default
    if new_port ~= port then
      -- Only when another program took the port in the moment it was free
      -- (other agents' tests run on this host and pick ports from 10000 up).
      local listeners = run("ss -ltnH 'sport = :" .. port .. "'")
      io.stderr:write(("# recreate: port %d was taken meanwhile (%s); the route moved to %d\n")
        :format(port, listeners, new_port))
      assert.is_true(listeners ~= "", "the route left port " .. port .. ", which is free")
      port = new_port
    end
    assert.equal("2.0\n", select(2, http_get("http://127.0.0.1:" .. port .. "/version")))
    local info = assert(inspect(env, "recreated-web"))
    assert.equal("localhost/mcp-test:2.0", info.ImageName)
    assert.equal("r2", info.Config.Labels["mcp.revision"])
    assert.equal(1, #containers(env, "recreated"))
    local s = show("recreated")
    assert.equal("r2", s.revision.id)
    assert.is_false(s.outdated)
  end)

  it("redeploys with a new image under rolling: every request sent through nginx during "
    .. "the switch succeeds", function()
    if show("hello").revision == nil then assert.equal(200, (deploy("hello"))) end
    local before = show("hello")
    local old_port = before.ports[1].port
    local hello2 = read_file(ROOT .. "/examples/services/hello.toml"):gsub('node = "demo"',
      'node = "test"'):gsub("mcp%-test:1%.0", "mcp-test:2.0")
    put("hello", hello2)

    local traffic = start_traffic(dir, "http://127.0.0.1:" .. ngx.port, "hello.localhost", 2)
    agent_env.wait_for(function() return traffic.count() >= 20 end, 10, "traffic to flow")
    local status, body, took = deploy("hello")
    os.execute("sleep 1")
    local result = traffic.stop()
    io.stderr:write(("# measured: rolling switch 1.0 -> 2.0 through nginx: deploy %.2f s, "
      .. "%d requests (1.0: %d, 2.0: %d), %d failed\n"):format(took, result.total,
      result.seen["1.0"] or 0, result.seen["2.0"] or 0, #result.failures))
    assert.equal(200, status, agent:log_tail())
    assert.same({}, result.failures)
    assert.is_true((result.seen["1.0"] or 0) > 0, "no request reached 1.0")
    assert.is_true((result.seen["2.0"] or 0) > 0, "no request reached 2.0")

    -- The new revision runs under the canonical name on a port of its own;
    -- the old one is gone, and nginx's file names the new port.
    local new_port = body.containers[1].ports.default
    assert.are_not.equal(old_port, new_port)
    assert.equal("hello-web", body.containers[1].name)
    local list = containers(env, "hello")
    assert.equal(1, #list, table.concat(list, "\n"))
    assert.equal("hello-web running " .. body.revision, list[1])
    local file = read_file(ngx.confd .. "/mcp-hello-web-default.conf")
    assert.matches("server 127.0.0.1:" .. new_port .. ";", file, 1, true)
    assert.matches("server_name hello.localhost;", file, 1, true)
    local info = assert(inspect(env, "hello-web"))
    assert.equal(tostring(new_port), info.HostConfig.PortBindings["8080/tcp"][1].HostPort)
    assert.same({ { component = "web", route = "default", port = new_port } },
      show("hello").ports)
  end)

  it("renders the podman run lines of a deployed service, and they bring it back by hand "
    .. "on a clean Podman", function()
    local s = show("recreated")
    if not s.revision then
      put("recreated", toml("recreated"))
      assert.equal(200, (deploy("recreated")))
      s = show("recreated")
    end
    local rev, port = s.revision.id, s.ports[1].port
    local out, rc, err = run(q(agent_env.AGENT) .. " render recreated --config "
      .. q(agent.config_path))
    assert.equal(0, rc, err)
    assert.matches("revision " .. rev, err, 1, true)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    local info = assert(inspect(env, "recreated-web"))
    assert.same({ table.concat({ "podman run -d --name recreated-web",
      "--label mcp.managed=true --label mcp.service=recreated --label mcp.component=web",
      "--label mcp.revision=" .. rev,
      "--user 0:0 --restart unless-stopped --init --stop-timeout 10",
      "-v /srv/recreated:/srv/recreated",
      ("-e PORT=%d -p 127.0.0.1:%d:8080"):format(port, port),
      info.ImageName, "httpd -f -p 8080 -h /www" }, " ") }, lines)

    -- By hand: the agent's container stopped (so its port is free), a clean
    -- Podman, the line as printed.
    assert.equal(200, (agent:api("POST", "/v1/services/recreated/stop")))
    local clean = podman_env.start()
    local ok, perr = pcall(function()
      local hout, hrc, herr = clean:sh(lines[1])
      assert.equal(0, hrc, hout .. herr)
      agent_env.wait_for(function()
        return http_get("http://127.0.0.1:" .. port .. "/version") == 200
      end, 10, "the hand-made container to serve")
      assert.equal(info.ImageName:match(":(.*)$") .. "\n",
        select(2, http_get("http://127.0.0.1:" .. port .. "/version")))
      local made = mcp.json.decode(clean:podman({ "inspect", "recreated-web" }))[1]
      assert.same(info.Config.Labels, made.Config.Labels)
      assert.equal(tostring(port), env_of(made).PORT)
    end)
    clean:stop()
    assert.equal(200, (agent:api("POST", "/v1/services/recreated/start")))
    assert(ok, perr)

    -- A service never deployed: its definition, on ports picked now.
    put("fresh", toml("fresh"))
    out, rc, err = run(q(agent_env.AGENT) .. " render fresh --config " .. q(agent.config_path))
    assert.equal(0, rc, err)
    assert.matches("fresh is not deployed", err, 1, true)
    assert.matches("^podman run %-d %-%-name fresh%-web .*%-%-label mcp.revision=r0 .*"
      .. "%-e PORT=(%d+) %-p 127%.0%.0%.1:%d+:8080 localhost/mcp%-test:1%.0 httpd", out)
    out, rc, err = run(q(agent_env.AGENT) .. " render nosuch --config " .. q(agent.config_path))
    assert.equal(1, rc)
    assert.equal("", out)
    assert.matches('no service "nosuch"', err, 1, true)
  end)

  it("takes a route out of nginx when its service is undeployed", function()
    if show("hello").revision == nil then assert.equal(200, (deploy("hello"))) end
    local file = ngx.confd .. "/mcp-hello-web-default.conf"
    assert.is_string(read_file(file))
    local status, body = agent:api("DELETE", "/v1/services/hello")
    assert.equal(200, status, mcp.json.encode(body))
    assert.is_nil(read_file(file))
    agent_env.wait_for(function()
      return http_get("http://127.0.0.1:" .. ngx.port .. "/", "hello.localhost") == 421
    end, 5, "nginx to drop hello.localhost")
    assert.same({}, containers(env, "hello"))
  end)

  it("keeps the old revision serving when a rolling deploy's new revision never gets "
    .. "healthy, and records the failed revision", function()
    put("sad", toml("sad", { policy = "rolling-fast", http = true }))
    local status, body = deploy("sad")
    assert.equal(200, status, agent:log_tail())
    local port = body.containers[1].ports.default

    -- 2.0 with a cmd that never listens: its tcp check cannot pass.
    put("sad", toml("sad", { policy = "rolling-fast", image = podman_env.image2,
      cmd = '"sleep", "3600"', http = true }))
    local stop = dir .. "/sad.stop"
    os.execute(("sh -c %s >/dev/null 2>&1 &"):format(q(([[
while [ ! -e %s ]; do
  curl -s -o /dev/null --max-time 5 -w '%%{http_code}\n' %s >> %s
done]]):format(q(stop), q("http://127.0.0.1:" .. port .. "/version"), q(dir .. "/sad.codes")))))
    local took
    status, body, took = deploy("sad")
    write_file(stop, "")
    os.execute("sleep 0.3")
    assert.equal(422, status)
    assert.equal("deploy_failed", body.error.code)
    assert.matches("new revision never became healthy: sad%-web%-r2: ", body.error.message)
    assert.is_true(took >= 5 and took < 15, "took " .. took)

    -- Nothing of r2 is left; r1 served throughout and still does.
    local list = containers(env, "sad")
    assert.equal(1, #list, table.concat(list, "\n"))
    assert.equal("sad-web running r1", list[1])
    local n, bad = 0, {}
    for code in (read_file(dir .. "/sad.codes") or ""):gmatch("[^\n]+") do
      n = n + 1
      if code ~= "200" then bad[#bad + 1] = code end
    end
    assert.is_true(n > 0)
    assert.same({}, bad)
    assert.equal("1.0\n", select(2, http_get("http://127.0.0.1:" .. port .. "/version")))

    -- The registry: r1 stays current; r2 is recorded as failed, with why.
    local s = show("sad")
    assert.equal("r1", s.revision.id)
    assert.equal("deployed", s.revision.status)
    local failed
    for _, e in ipairs(s.events) do
      if e.kind == "deploy_failed" then failed = e end
    end
    assert.is_table(failed, "no deploy_failed event in GET /v1/services/sad")
    assert.matches("^revision r2: new revision never became healthy", failed.message)
    local out, rc = agent:eval('(function() local r = require("mcp.registry").revision_get('
      .. 'mcp.state.db, "sad", "r2") return r.status .. "|" .. r.error end)()')
    assert.equal(0, rc, out)
    assert.matches("failed|new revision never became healthy: sad-web-r2: ", out, 1, true)
  end)
end)
