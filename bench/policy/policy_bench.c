/* policy_bench.c: what one call from C into a policy hook and back costs.
 *
 *   policy_bench [CALLS] [RUNS]        (built and run by bench/run.sh)
 *
 * Links the agent's core and sets up its runtime with agent_setup(): the
 * counting allocator, the count hook, the mcp bindings, the config's
 * defaults. A policy is compiled by lua/mcp/sandbox.lua as the agent
 * compiles one (its own environment, read-only shared tables, JIT off), and
 * its hook is called CALLS times (default 1000000) through runtime_pcall,
 * the protected entry with the traceback handler that the agent uses for
 * every call from C into Lua. For comparison: the same hook, compiled by a
 * plain load() with the JIT on, called with a bare lua_pcall; and the two
 * crossed, to tell the entry's share from the JIT's. Then the heavier ways
 * a hook is reached in the agent: as a task of its own with the [lua]
 * limits (task_spawn, run by the loop, as sandbox.isolate does), and the
 * whole sandbox.isolate wrapper called from a task (what the deploy
 * executor does), which waits for the hook's task by polling with
 * mcp.sleep.
 *
 * Prints one JSON object: per method, ns per call of each run and their
 * median, min and max. Nothing here asserts a time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "agent.h"
#include "config.h"
#include "log.h"
#include "runtime.h"

#define MAX_RUNS 15

/* Returns the sandboxed hook, the same hook compiled plainly (JIT on), the
 * hook wrapped by sandbox.hooks (sandbox.isolate), and a loop that calls the
 * wrapped one N times inside a task and returns the seconds it took. */
static const char setup_lua[] =
    "local sandbox = require('mcp.sandbox')\n"
    "local POLICY = [[\n"
    "-- policies/bench.lua: a small hook, as a policy's on_event or pick might be\n"
    "local bench = {}\n"
    "function bench.pick(ctx)\n"
    "  if ctx.n > 0 then return ctx.n + 1 end\n"
    "  return 0\n"
    "end\n"
    "return bench\n"
    "]]\n"
    "local env = sandbox.env('policies/bench.lua')\n"
    "local chunk = assert(sandbox.compile(POLICY, 'policies/bench.lua', env))\n"
    "local policy = chunk()\n"
    "local plain = assert(load(POLICY, '=plain'))()\n"
    "local hooks = sandbox.hooks(policy, 'policies/bench.lua', 'bench')\n"
    "local function isolated_loop(n, ctx)\n"
    "  local t0 = mcp.timer.monotime()\n"
    "  for _ = 1, n do assert(hooks.pick(ctx) == ctx.n + 1) end\n"
    "  return mcp.timer.monotime() - t0\n"
    "end\n"
    "return policy.pick, plain.pick, hooks.pick, isolated_loop\n";

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

enum entry { ENTRY_RUNTIME_PCALL, ENTRY_LUA_PCALL };

/* ns per call of `calls` calls of the function in the registry at fn_ref,
 * with the table at ctx_ref as its argument. */
static double run_direct(lua_State *L, int fn_ref, int ctx_ref, long calls, enum entry how)
{
    int top = lua_gettop(L);
    long bad = 0;
    double t0 = now();
    for (long i = 0; i < calls; i++) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
        lua_rawgeti(L, LUA_REGISTRYINDEX, ctx_ref);
        int rc = how == ENTRY_RUNTIME_PCALL ? runtime_pcall(L, 1, 1, "policy bench.pick")
                                            : lua_pcall(L, 1, 1, 0);
        if (rc != 0 || lua_tointeger(L, -1) != 42)
            bad++;
        lua_pop(L, 1);
    }
    double dt = now() - t0;
    if (bad || lua_gettop(L) != top) {
        fprintf(stderr, "policy_bench: %ld calls failed or the stack moved\n", bad);
        exit(1);
    }
    return dt / (double)calls * 1e9;
}

/* ns per call when each call is a task of its own with the [lua] limits,
 * started and finished by the loop. */
static double run_tasks(struct agent *a, int fn_ref, int ctx_ref, long calls)
{
    lua_State *L = a->rt.L;
    const struct config *c = a->config;
    struct task_limits lim = { .instructions = (uint64_t)c->task_instructions,
                               .timeout = c->task_timeout, .memory = (size_t)c->task_memory };
    int top = lua_gettop(L);
    double t0 = now();
    for (long i = 0; i < calls; i++) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
        lua_rawgeti(L, LUA_REGISTRYINDEX, ctx_ref);
        struct task *t = task_spawn(&a->rt, L, 1, "policy bench.pick", &lim, NULL, NULL);
        if (!t || task_run_until_done(&a->rt, t, L) != 0 || lua_tointeger(L, -1) != 42) {
            fprintf(stderr, "policy_bench: a task failed: %s\n", lua_tostring(L, -1));
            exit(1);
        }
        lua_settop(L, top);
    }
    return (now() - t0) / (double)calls * 1e9;
}

/* ns per call of the sandbox.isolate wrapper, called `calls` times by Lua
 * code inside a task (the loop function at loop_ref). */
static double run_isolated(struct agent *a, int loop_ref, int ctx_ref, long calls)
{
    lua_State *L = a->rt.L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, loop_ref);
    lua_pushinteger(L, calls);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx_ref);
    struct task *t = task_spawn(&a->rt, L, 2, "policy bench isolate", NULL, NULL, NULL);
    if (!t || task_run_until_done(&a->rt, t, L) != 0) {
        fprintf(stderr, "policy_bench: isolate loop failed: %s\n", lua_tostring(L, -1));
        exit(1);
    }
    double secs = lua_tonumber(L, -1);
    lua_settop(L, top);
    return secs / (double)calls * 1e9;
}

static void print_method(const char *name, const char *what, long calls, double *ns, int runs,
                         int last)
{
    double sorted[MAX_RUNS];
    memcpy(sorted, ns, (size_t)runs * sizeof *ns);
    qsort(sorted, (size_t)runs, sizeof *sorted, cmp_double);
    printf("    \"%s\": {\"what\": \"%s\", \"calls_per_run\": %ld, \"runs_ns\": [", name, what,
           calls);
    for (int i = 0; i < runs; i++)
        printf("%s%.1f", i ? ", " : "", ns[i]);
    printf("], \"median_ns\": %.1f, \"min_ns\": %.1f, \"max_ns\": %.1f}%s\n",
           sorted[runs / 2], sorted[0], sorted[runs - 1], last ? "" : ",");
}

int main(int argc, char **argv)
{
    long calls = argc > 1 ? atol(argv[1]) : 1000000;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    if (calls < 1 || runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "usage: policy_bench [CALLS] [RUNS 1-%d]\n", MAX_RUNS);
        return 2;
    }
    log_setup(LOG_WARN);
    char err[512];
    struct config *cfg = config_parse("", 0, "<defaults>", err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "policy_bench: %s\n", err);
        return 1;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct agent agent;
    if (agent_setup(&agent, cfg, &loop) != 0)
        return 1;
    lua_State *L = agent.rt.L;
    if (luaL_loadbuffer(L, setup_lua, sizeof setup_lua - 1, "=policy_bench") != 0 ||
        runtime_pcall(L, 0, 4, "policy bench setup") != 0) {
        fprintf(stderr, "policy_bench: setup failed: %s\n", lua_tostring(L, -1));
        return 1;
    }
    int loop_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    int isolated_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    int plain_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    int sandboxed_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    (void)isolated_ref;
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, 41);
    lua_setfield(L, -2, "n");
    int ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    /* Warm up: the JIT compiles what it will, caches fill. */
    run_direct(L, sandboxed_ref, ctx_ref, calls / 10 + 1, ENTRY_RUNTIME_PCALL);
    run_direct(L, plain_ref, ctx_ref, calls / 10 + 1, ENTRY_LUA_PCALL);

    long task_calls = calls / 10 > 0 ? calls / 10 : 1;
    long isolate_calls = calls / 2000 > 0 ? calls / 2000 : 1;
    double sb_rt[MAX_RUNS], plain_lua[MAX_RUNS], sb_lua[MAX_RUNS], plain_rt[MAX_RUNS],
        tasks[MAX_RUNS], isolated[MAX_RUNS];
    for (int r = 0; r < runs; r++) {
        sb_rt[r] = run_direct(L, sandboxed_ref, ctx_ref, calls, ENTRY_RUNTIME_PCALL);
        plain_lua[r] = run_direct(L, plain_ref, ctx_ref, calls, ENTRY_LUA_PCALL);
        sb_lua[r] = run_direct(L, sandboxed_ref, ctx_ref, calls, ENTRY_LUA_PCALL);
        plain_rt[r] = run_direct(L, plain_ref, ctx_ref, calls, ENTRY_RUNTIME_PCALL);
        tasks[r] = run_tasks(&agent, sandboxed_ref, ctx_ref, task_calls);
        isolated[r] = run_isolated(&agent, loop_ref, ctx_ref, isolate_calls);
    }

    printf("{\n  \"benchmark\": \"policy-call\",\n  \"runs\": %d,\n  \"methods\": {\n", runs);
    print_method("sandboxed_runtime_pcall", "sandboxed hook (JIT off) through runtime_pcall",
                 calls, sb_rt, runs, 0);
    print_method("plain_lua_pcall", "plain hook (JIT on) through a bare lua_pcall", calls,
                 plain_lua, runs, 0);
    print_method("sandboxed_lua_pcall", "sandboxed hook (JIT off) through a bare lua_pcall",
                 calls, sb_lua, runs, 0);
    print_method("plain_runtime_pcall", "plain hook (JIT on) through runtime_pcall", calls,
                 plain_rt, runs, 0);
    print_method("task_with_limits", "sandboxed hook as a task of its own with the [lua] "
                 "limits, run by the loop", task_calls, tasks, runs, 0);
    print_method("sandbox_isolate", "sandbox.isolate wrapper called from a task (the deploy "
                 "executor's path)", isolate_calls, isolated, runs, 1);
    printf("  }\n}\n");

    runtime_close(&agent.rt);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    config_free(cfg);
    return 0;
}
