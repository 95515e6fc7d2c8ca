/* mcp_main.c: `mcp`, the operator CLI. The C side only sets up the same
 * runtime as the agent (loop, Lua, bindings) and runs lua/mcp/cli.lua, which
 * talks to agents over their HTTP API. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "agent.h"
#include "config.h"
#include "log.h"
#include "subsystems.h"

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int main(int argc, char **argv)
{
    char err[512];
    struct config *cfg = config_parse("", 0, "<defaults>", err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "mcp: %s\n", err);
        return 1;
    }
    log_setup(LOG_WARN);
    signal(SIGPIPE, SIG_IGN);
    struct agent agent, *a = &agent;
    uv_loop_t loop;
    uv_loop_init(&loop);
    int rc = 1;
    if (agent_setup(a, cfg, &loop) != 0)
        goto out;
    if (subsystems_open_client(a) != 0)
        goto out;
    lua_State *L = a->rt.L;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "mcp.cli");
    if (runtime_pcall(L, 1, 1, "mcp: loading the CLI") != 0)
        goto out;
    lua_getfield(L, -1, "main");
    lua_remove(L, -2);
    lua_newtable(L);
    for (int i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    int base = lua_gettop(L) - 2;
    struct task *t = task_spawn(&a->rt, L, 1, "mcp", NULL, NULL, NULL);
    if (task_run_until_done(&a->rt, t, L) != 0) {
        fprintf(stderr, "mcp: %s\n", lua_tostring(L, -1));
        goto out;
    }
    rc = lua_gettop(L) > base && lua_isnumber(L, base + 1) ? (int)lua_tointeger(L, base + 1)
                                                           : 0;
out:
    subsystems_close(a);
    runtime_close(&a->rt);
    uv_walk(&loop, close_walk, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    config_free(cfg);
    return rc;
}
