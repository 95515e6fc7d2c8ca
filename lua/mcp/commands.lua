-- mcp.commands: `mcp-agent` subcommands written in Lua. Each returns the
-- process exit code.
local mcp = require("mcp.core")

local commands = {}

function commands.check_config()
  print(string.format("%s: ok", mcp.config.path))
  return 0
end

return commands
