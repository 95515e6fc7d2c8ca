-- mcp.routes: telling the node's proxy where each route's traffic goes.
--
-- The agent carries no client traffic. A route provider (policies/routes/,
-- chosen by [routes] provider) is told route_add when a revision's ports
-- should receive a route and route_remove when the route goes away, then
-- commit() once per switch. Providers are operator-editable and sandboxed;
-- what they may touch is handed to them explicitly: `host.write(file, text)`
-- and `host.remove(file)` inside [routes] nginx_dir, and `host.reload()`,
-- which runs [routes] nginx_reload.
local mcp = require("mcp.core")

local routes = {}

local function provider()
  local name = mcp.config.routes.provider
  if name == "none" then return nil end
  local gen = mcp.state.gen
  local p = gen and gen.route_providers and gen.route_providers[name]
  if not p then
    return nil, string.format("route provider %q is not loaded (policies/routes/%s.lua)",
      name, name)
  end
  return p
end

-- The capabilities a provider gets; confined to its directory and command.
function routes.host()
  local cfg = mcp.config.routes
  local function check(file)
    if type(file) ~= "string" or not file:match("^[%w][%w._-]*$") then
      error("route provider: file name " .. tostring(file) .. " is not a plain name", 3)
    end
  end
  return {
    dir = cfg.nginx_dir,
    write = function(file, text)
      check(file)
      mcp.fs.mkdir(cfg.nginx_dir, 493)
      return mcp.fs.write(cfg.nginx_dir, file, text)
    end,
    remove = function(file)
      check(file)
      return mcp.fs.remove(cfg.nginx_dir, file)
    end,
    reload = function()
      local argv = {}
      for w in cfg.nginx_reload:gmatch("%S+") do argv[#argv + 1] = w end
      local r, err = mcp.exec.run({ cmd = argv, timeout = 10 })
      if not r then return nil, err end
      if r.exit_code ~= 0 then
        return nil, string.format("%s: exit %d: %s", cfg.nginx_reload, r.exit_code, r.stderr)
      end
      return true
    end,
  }
end

local function each_route(def, fn)
  for _, comp in ipairs(def.components) do
    for _, r in ipairs(comp.routes) do fn(comp, r) end
  end
end

-- Points every route of def at the ports in `ports` (component -> route key
-- -> host port). Returns true or nil, err.
function routes.switch(def, ports)
  local p, err = provider()
  if not p then return err == nil, err end
  local host = routes.host()
  local failure
  each_route(def, function(comp, r)
    local port = ports[comp.name] and ports[comp.name][r.key]
    if port and not failure then
      local ok, rerr = p.route_add(host, { service = def.name, component = comp.name,
        route = r.key, hostname = r.hostname, mode = r.mode, port = port,
        public = r.public })
      if ok == nil and rerr then failure = rerr end
    end
  end)
  if failure then return nil, failure end
  if p.commit then return p.commit(host) end
  return true
end

-- Takes every route of def away from the proxy (undeploy).
function routes.remove(def)
  local p, err = provider()
  if not p then return err == nil, err end
  local host = routes.host()
  each_route(def, function(comp, r)
    p.route_remove(host, { service = def.name, component = comp.name, route = r.key,
      hostname = r.hostname })
  end)
  if p.commit then return p.commit(host) end
  return true
end

return routes
