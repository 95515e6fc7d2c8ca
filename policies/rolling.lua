-- policies/rolling.lua: start the new revision beside the old, switch when
-- healthy.
--
-- The new revision starts on ports of its own while the old one keeps
-- serving. Only once every new container passes its health check are the
-- routes switched to it; then the old revision drains and goes. If the new
-- revision never gets healthy, or the proxy cannot be switched to it, it is
-- removed and the old one never stopped serving: an automatic rollback.
local rolling = {}

-- How long the new revision may take to become healthy, and how long the
-- old one keeps answering requests already sent to it after the switch.
rolling.health_timeout = "60s"
rolling.drain = "2s"

function rolling.deploy(ctx)
  local new, err = ctx:start_new()
  if not new then return ctx:fail("could not start the new revision: " .. err) end

  local ok
  ok, err = ctx:wait_healthy(new, { timeout = rolling.health_timeout })
  if not ok then
    ctx:remove(new)                        -- the old revision never stopped serving
    return ctx:fail("new revision never became healthy: " .. err)
  end

  ok, err = ctx:switch_routes(new)         -- the route provider points at the new ports
  if not ok then
    ctx:switch_routes(ctx.old)             -- whatever was half done goes back
    ctx:remove(new)
    return ctx:fail("could not switch the routes to the new revision: " .. err)
  end
  ctx:stop(ctx.old, { drain = rolling.drain })
  ctx:remove(ctx.old)
end

return rolling
