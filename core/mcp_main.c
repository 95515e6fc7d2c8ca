/* mcp_main.c: `mcp`, the operator CLI. The C side only sets up the same
 * runtime as the agent (loop, Lua, bindings) and runs lua/mcp/cli.lua, which
 * talks to agents over their HTTP API. */
#include <stdio.h>

#include "agent.h"
#include "config.h"
#include "log.h"

int main(int argc, char **argv)
{
    char err[512];
    struct config *cfg = config_parse("", 0, "<defaults>", err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "mcp: %s\n", err);
        return 1;
    }
    log_setup(LOG_WARN);
    int rc = agent_run_lua(cfg, "mcp", "mcp.cli", "main", argc - 1, argv + 1);
    config_free(cfg);
    return rc;
}
