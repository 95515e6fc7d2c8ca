-- mcp.agent: the server's Lua side: what runs at start, on reload and at stop.
local mcp = require("mcp.core")

local agent = {}

function agent.start()
  mcp.log.info("agent started on node %s", mcp.config.agent.node)
end

function agent.reload(why)
  mcp.log.info("reload requested (%s)", why or "?")
end

function agent.stop()
end

return agent
