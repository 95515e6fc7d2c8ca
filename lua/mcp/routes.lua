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

-- The configuration test that goes with a reload command: `nginx ... -s
-- reload` becomes `nginx ... -t -q`; nil for a command of another form.
function routes.test_argv(argv)
  local out, found = {}, false
  local i = 1
  while i <= #argv do
    if argv[i] == "-s" and argv[i + 1] == "reload" then
      found = true
      i = i + 2
    else
      out[#out + 1] = argv[i]
      i = i + 1
    end
  end
  if not found or not (out[1] or ""):match("nginx$") then return nil end
  out[#out + 1] = "-t"
  out[#out + 1] = "-q"
  return out
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
      return mcp.fs.remove(cfg.nginx_dir, file, { missing_ok = true })
    end,
    reload = function()
      local argv = {}
      for w in cfg.nginx_reload:gmatch("%S+") do argv[#argv + 1] = w end
      -- `nginx -s reload` only signals the master, which then reads the new
      -- files on its own: a broken file would be logged there and the old
      -- configuration kept, while the deploy went on as if switched. So
      -- the same command with -t instead of -s reload checks them first.
      local test = routes.test_argv(argv)
      if test then
        local r, err = mcp.exec.run({ cmd = test, timeout = 10 })
        if not r then return nil, err end
        if r.exit_code ~= 0 then
          return nil, string.format("%s: exit %s: %s", table.concat(test, " "),
            tostring(r.exit_code), (r.stderr or ""):gsub("%s+$", ""))
        end
      end
      local r, err = mcp.exec.run({ cmd = argv, timeout = 10 })
      if not r then return nil, err end
      if r.exit_code ~= 0 then
        return nil, string.format("%s: exit %s: %s", cfg.nginx_reload, tostring(r.exit_code),
          (r.stderr or ""):gsub("%s+$", ""))
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

local function route_of(def, comp, r, port)
  return { service = def.name, component = comp.name, route = r.key, hostname = r.hostname,
    mode = r.mode, port = port, public = r.public }
end

-- Points every route of def at the ports in `ports` (component -> route key
-- -> host port), takes away the routes of `previous` (the definition the
-- routes were last switched for) that def no longer has, and commits once.
-- def may be nil: then every route of previous goes (a first deploy rolled
-- back). Returns true or nil, err.
function routes.switch(def, ports, previous)
  local p, err = provider()
  if not p then return err == nil, err end
  local host = routes.host()
  local failure
  local keep = {}
  if def then
    each_route(def, function(comp, r)
      keep[comp.name .. "/" .. r.key] = true
      local port = ports and ports[comp.name] and ports[comp.name][r.key]
      if port and not failure then
        local ok, rerr = p.route_add(host, route_of(def, comp, r, port))
        if not ok then failure = rerr or "route_add failed" end
      end
    end)
  end
  if previous and not failure then
    each_route(previous, function(comp, r)
      if not keep[comp.name .. "/" .. r.key] and not failure then
        local ok, rerr = p.route_remove(host, route_of(previous, comp, r, nil))
        if not ok then failure = rerr or "route_remove failed" end
      end
    end)
  end
  if failure then return nil, failure end
  if p.commit then return p.commit(host) end
  return true
end

-- Takes every route of def away from the proxy (undeploy).
function routes.remove(def)
  local p, err = provider()
  if not p then return err == nil, err end
  local host = routes.host()
  local failure
  each_route(def, function(comp, r)
    local ok, rerr = p.route_remove(host, route_of(def, comp, r, nil))
    if not ok and not failure then failure = rerr or "route_remove failed" end
  end)
  if p.commit then
    local ok, cerr = p.commit(host)
    if not ok then return nil, cerr end
  end
  if failure then return nil, failure end
  return true
end

return routes
