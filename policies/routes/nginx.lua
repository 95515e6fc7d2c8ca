-- policies/routes/nginx.lua: routes as nginx server blocks.
--
-- One file per route in [routes] nginx_dir, which the operator's nginx
-- includes (`include /srv/mcp/nginx/*.conf;` inside its http block). An l7
-- route with a hostname becomes a server block for that name on
-- [routes] nginx_http_port; a route without a hostname is not published
-- (there is nothing to tell requests for it apart). nginx reloads gracefully (`nginx -s reload`):
-- old workers finish the requests they hold while new ones take the new
-- upstream, so a rolling deploy loses no request.
local nginx = {}

local function file_of(r)
  return string.format("mcp-%s-%s-%s.conf", r.service, r.component, r.route)
end

local function upstream_of(r)
  return string.format("mcp_%s_%s_%s", r.service, r.component, r.route):gsub("[^%w_]", "_")
end

function nginx.route_add(host, r)
  if r.mode == "l4" then
    mcp.log.warn("nginx provider: l4 route %s/%s/%s needs a stream block; not written",
      r.service, r.component, r.route)
    return true
  end
  local up = upstream_of(r)
  local lines = {
    "# written by mcp-agent: route " .. r.service .. "/" .. r.component .. "/" .. r.route,
    string.format("upstream %s { server 127.0.0.1:%d; keepalive 8; }", up, r.port),
  }
  local function server(listen, name)
    lines[#lines + 1] = "server {"
    lines[#lines + 1] = "    listen " .. listen .. ";"
    if name then lines[#lines + 1] = "    server_name " .. name .. ";" end
    lines[#lines + 1] = "    location / {"
    lines[#lines + 1] = "        proxy_pass http://" .. up .. ";"
    lines[#lines + 1] = "        proxy_http_version 1.1;"
    lines[#lines + 1] = "        proxy_set_header Connection \"\";"
    lines[#lines + 1] = "        proxy_set_header Host $host;"
    lines[#lines + 1] = "        proxy_next_upstream error timeout http_502;"
    lines[#lines + 1] = "    }"
    lines[#lines + 1] = "}"
  end
  -- Without a hostname there is nothing to tell the route's requests apart
  -- by: no server block (and none left from a revision that had one).
  if not r.hostname then return host.remove(file_of(r)) end
  server(tostring(mcp.config.routes.nginx_http_port), r.hostname)
  return host.write(file_of(r), table.concat(lines, "\n") .. "\n")
end

function nginx.route_remove(host, r)
  return host.remove(file_of(r))
end

function nginx.commit(host)
  return host.reload()
end

return nginx
