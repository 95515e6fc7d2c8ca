-- policies/recreate.lua: stop the old revision, then start the new one.
--
-- The simplest policy, and the default. There is a gap in service between
-- the stop and the start; in exchange, the new revision gets the same ports
-- and nothing runs twice (a service that holds a lock file or a database
-- must not run twice). Use `rolling` when the gap matters.
local recreate = {}

recreate.health_timeout = "60s"

function recreate.deploy(ctx)
  local ok, err = ctx:stop(ctx.old)
  if not ok then return ctx:fail("could not stop the old revision: " .. err) end
  ctx:remove(ctx.old)

  local new
  new, err = ctx:start_new()
  if not new then return ctx:fail("could not start the new revision: " .. err) end

  -- The old revision is gone, so there is nothing to roll back to: wait for
  -- health to report it, not to decide.
  ok, err = ctx:wait_healthy(new, { timeout = recreate.health_timeout })
  if not ok then return ctx:fail("new revision never became healthy: " .. err) end

  -- The new revision serves either way; a proxy that could not be told is
  -- reported (a routes_failed event) and fixed by the next switch.
  ok, err = ctx:switch_routes(new)
  if not ok then ctx:log("routes not switched: %s", err) end
end

return recreate
