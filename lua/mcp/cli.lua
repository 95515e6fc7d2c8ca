-- mcp.cli: the `mcp` operator CLI.
local cli = {}

function cli.main(args)
  io.stderr:write("mcp: usage: mcp COMMAND [args]\n")
  return 2
end

return cli
