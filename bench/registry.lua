-- bench/registry.lua: what the registry costs the loop thread.
--
--   luajit bench/registry.lua [N] [DIR]     (from the repository root, after `make`)
--
-- Runs the registry's typical operations N times (default 2000) against a
-- file in DIR (default a fresh directory under /tmp) and prints, per
-- operation, the mean, median, 99th percentile and maximum in microseconds.
-- docs/registry.md quotes the figures.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = (os.getenv("MCP_BUILD") or "build") .. "/lua/?.so;" .. package.cpath
local mcp = require("mcp.core")
local registry = require("mcp.registry")

local N = tonumber(arg[1]) or 2000
local dir = arg[2]
if not dir then
  local p = io.popen("mktemp -d /tmp/mcp-bench.XXXXXX")
  dir = p:read("*l")
  p:close()
end
local db = assert(registry.open(dir .. "/mcp.db"))
local clock = mcp.timer.monotime

local function measure(name, n, fn)
  local t = {}
  for i = 1, n do
    local t0 = clock()
    fn(i)
    t[i] = (clock() - t0) * 1e6
  end
  table.sort(t)
  local sum = 0
  for _, v in ipairs(t) do sum = sum + v end
  print(string.format("%-44s %6d  mean %7.1f  p50 %7.1f  p99 %7.1f  max %8.1f", name, n,
    sum / n, t[math.ceil(n * 0.5)], t[math.ceil(n * 0.99)], t[n]))
end

local function def(name)
  return { name = name, node = "rift", policy = "rolling", active = true,
    components = { { name = name, image = "mcr.example:8443/" .. name .. ":v0.3.2",
      cmd = { "server", "--config", "/srv/" .. name .. "/" .. name .. ".toml" },
      volumes = { { source = "/srv/" .. name, destination = "/srv/" .. name } },
      routes = { { name = "default", port = 8443, mode = "l7" } },
      health = { kind = "http", path = "/v1/health", interval = 10, timeout = 2 } } } }
end

for i = 1, 50 do registry.service_put(db, def("svc" .. i), "api", "h") end
local free = function() return true end
local token = registry.token_create(db, "bench")

print(string.format("registry bench: %s, N = %d, SQLite %s", dir, N,
  db:row("SELECT sqlite_version() AS v").v))

measure("service_get (read, JSON decode)", N, function(i)
  registry.service_get(db, "svc" .. (i % 50 + 1))
end)
measure("event_add (one tx: insert + retention)", N, function(i)
  registry.event_add(db, { kind = "health", service = "svc1", message = "ok",
    data = { i = i } })
end)
measure("service_put (changed definition)", N, function(i)
  registry.service_put(db, def("svc" .. (i % 50 + 1)), "api", "h" .. i)
end)
measure("deploy record (port+revision+status+event)", N, function(i)
  local name = "svc" .. (i % 50 + 1)
  db:tx(function()
    local port = registry.port_assign(db, name, name, "default", free)
    local id = registry.revision_new(db, name, { definition = def(name),
      components = { [name] = { image = "mcr.example:8443/x:v1", ports = { default = port } } } })
    registry.revision_set_status(db, name, id, "deployed")
    registry.event_add(db, { kind = "deployed", service = name, data = { revision = id } })
  end)
end)
measure("token_verify", N, function()
  assert(registry.token_verify(db, token) == "bench")
end)
measure("raw: db:exec INSERT (autocommit)", N, function(i)
  db:exec("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
    .. "SET value = excluded.value", "k" .. (i % 100), i)
end)
measure("raw: db:row SELECT by key", N, function(i)
  db:row("SELECT value FROM meta WHERE key = ?", "k" .. (i % 100))
end)

local s = db:stats()
print(string.format("statement cache: %d statements, %d hits, %d misses", s.statements,
  s.hits, s.misses))
db:close()
if not arg[2] then os.execute("rm -rf '" .. dir .. "'") end
