/* agent.c: the server's life: start the subsystems, run the loop, stop.
 *
 * Start order: runtime (Lua state and bindings), then the subsystems, then
 * the Lua side (`mcp.agent.start`, as a task), then signals. Stop order is
 * the reverse: servers stop accepting, Lua is told, work in flight gets
 * [agent] stop_timeout to finish, the rest is abandoned, the loop ends. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "agent.h"
#include "bindings.h"
#include "log.h"
#include "subsystems.h"
#include "util.h"

static void on_signal(uv_signal_t *h, int signum)
{
    struct agent *a = h->data;
    if (signum == SIGHUP) {
        log_info("SIGHUP: reloading");
        agent_call_lua(a, "reload", "SIGHUP");
        return;
    }
    log_info("%s: stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    agent_stop(a, 0);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Polls until the work in flight is done or the deadline passes. */
static void stop_tick(uv_timer_t *h)
{
    struct agent *a = h->data;
    uint64_t waited = uv_now(a->loop) - a->stop_started;
    int busy = runtime_busy(&a->rt);
    if (busy && waited < (uint64_t)(a->config->stop_timeout * 1000))
        return;
    if (busy)
        log_warn("stop: abandoning %d task(s) still running after %g s", busy,
                 a->config->stop_timeout);
    uv_timer_stop(h);
    subsystems_close(a);
    runtime_close(&a->rt);
    uv_walk(a->loop, close_walk, NULL);
}

void agent_stop(struct agent *a, int exit_code)
{
    if (a->stopping)
        return;
    a->stopping = 1;
    a->exit_code = exit_code;
    a->stop_started = uv_now(a->loop);
    subsystems_stop_accepting(a);
    agent_call_lua(a, "stop", NULL);
    runtime_end_daemons(&a->rt, "agent stopping");
    uv_signal_stop(&a->sig_hup);
    uv_timer_init(a->loop, &a->stop_timer);
    a->stop_timer.data = a;
    uv_timer_start(&a->stop_timer, stop_tick, 0, 20);
}

int agent_call_lua(struct agent *a, const char *fn, const char *arg)
{
    lua_State *L = a->rt.L;
    if (!L)
        return -1;
    int top = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "mcp.agent");
    if (runtime_pcall(L, 1, 1, "require mcp.agent") != 0) {
        lua_settop(L, top);
        return -1;
    }
    lua_getfield(L, -1, fn);
    if (!lua_isfunction(L, -1)) {
        lua_settop(L, top);
        return -1;
    }
    char name[64];
    snprintf(name, sizeof name, "agent.%s", fn);
    int nargs = 0;
    if (arg) {
        lua_pushstring(L, arg);
        nargs = 1;
    }
    /* Through a task, so that what it calls may wait. A reload runs operator
     * code (policies, definitions), so it gets the [lua] limits of such code:
     * a policy that loops at load time cannot hang the agent. start and stop
     * stay unlimited: they start the daemons and wait for work in flight. */
    struct task_limits lim = { 0 };
    const struct task_limits *limits = NULL;
    if (a->config && (strcmp(fn, "reload") == 0 || strcmp(fn, "on_change") == 0)) {
        lim.instructions = a->config->task_instructions > 0
                               ? (uint64_t)a->config->task_instructions : 0;
        lim.timeout = a->config->task_timeout;
        lim.memory = (size_t)a->config->task_memory;
        limits = &lim;
    }
    struct task *t = task_spawn(&a->rt, L, nargs, name, limits, NULL, NULL);
    lua_settop(L, top);
    return t ? 0 : -1;
}

static int set_package_path(lua_State *L, const char *lib_dir)
{
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua", lib_dir, lib_dir);
    lua_setfield(L, -2, "path");
    lua_pushliteral(L, "");
    lua_setfield(L, -2, "cpath");   /* the agent loads no C modules from disk */
    lua_pop(L, 1);
    return 0;
}

int agent_setup(struct agent *a, struct config *cfg, uv_loop_t *loop)
{
    memset(a, 0, sizeof *a);
    a->loop = loop;
    loop->data = a;
    a->config = cfg;
    a->started_ms = util_now_ms();
    if (runtime_init(&a->rt, a, (size_t)cfg->memory) != 0)
        return -1;
    lua_State *L = a->rt.L;
    set_package_path(L, cfg->lib_dir);
    lua_getglobal(L, "mcp");
    config_push(L, cfg);
    lua_setfield(L, -2, "config");
    lua_pop(L, 1);
    return 0;
}

int agent_run_lua(struct config *cfg, const char *who, const char *module, const char *fn,
                  int argc, char **argv)
{
    struct agent agent, *a = &agent;
    uv_loop_t loop;
    uv_loop_init(&loop);
    signal(SIGPIPE, SIG_IGN);
    int rc = 1;
    if (agent_setup(a, cfg, &loop) != 0 || subsystems_open_client(a) != 0)
        goto out;
    lua_State *L = a->rt.L;
    lua_getglobal(L, "require");
    lua_pushstring(L, module);
    if (runtime_pcall(L, 1, 1, who) != 0)
        goto out;
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    if (!lua_isfunction(L, -1)) {
        log_error("%s: %s.%s is missing", who, module, fn);
        goto out;
    }
    for (int i = 0; i < argc; i++)
        lua_pushstring(L, argv[i]);
    int base = lua_gettop(L) - argc - 1;
    struct task *t = task_spawn(&a->rt, L, argc, who, NULL, NULL, NULL);
    if (task_run_until_done(&a->rt, t, L) != 0) {
        fprintf(stderr, "%s: %s\n", who, lua_tostring(L, -1));
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
    return rc;
}

int agent_server(struct config *cfg)
{
    struct agent agent, *a = &agent;
    uv_loop_t loop;
    uv_loop_init(&loop);
    signal(SIGPIPE, SIG_IGN);
    if (agent_setup(a, cfg, &loop) != 0)
        return 1;
    if (subsystems_open(a) != 0) {
        subsystems_close(a);
        runtime_close(&a->rt);
        uv_walk(&loop, close_walk, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        return 1;
    }
    uv_signal_init(&loop, &a->sig_term);
    uv_signal_init(&loop, &a->sig_int);
    uv_signal_init(&loop, &a->sig_hup);
    a->sig_term.data = a->sig_int.data = a->sig_hup.data = a;
    uv_signal_start(&a->sig_term, on_signal, SIGTERM);
    uv_signal_start(&a->sig_int, on_signal, SIGINT);
    uv_signal_start(&a->sig_hup, on_signal, SIGHUP);

    log_info("mcp-agent %s on %s: config %s, lib %s", MCP_VERSION, cfg->node, cfg->path,
             cfg->lib_dir);
    if (agent_call_lua(a, "start", NULL) != 0) {
        log_error("cannot start the agent's Lua library from %s/lua", cfg->lib_dir);
        agent_stop(a, 1);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&loop);
    if (rc != 0)
        log_debug("loop closed with handles left: %s", uv_strerror(rc));
    log_info("stopped");
    return a->exit_code;
}
