/* l_timer.c: mcp.timer: sleep without blocking the loop, and clocks. */
#include <stdlib.h>

#include "agent.h"
#include "bindings.h"
#include "util.h"

struct sleep_op {
    uv_timer_t timer;
    struct task *task;
};

static void sleep_free(uv_handle_t *h)
{
    free(h->data);
}

static void sleep_done(uv_timer_t *h)
{
    struct sleep_op *op = h->data;
    struct task *t = op->task;
    uv_close((uv_handle_t *)&op->timer, sleep_free);
    lua_pushboolean(task_thread(t), 1);
    task_resume(t, 1);
}

static void sleep_cancel(void *p)
{
    struct sleep_op *op = p;
    uv_timer_stop(&op->timer);
    uv_close((uv_handle_t *)&op->timer, sleep_free);
}

/* mcp.sleep(seconds | "2s") -> true, after that long; other tasks run meanwhile. */
static int l_timer_sleep(lua_State *L)
{
    double secs;
    if (lua_type(L, 1) == LUA_TSTRING) {
        if (util_parse_duration(lua_tostring(L, 1), &secs) != 0)
            return luaL_error(L, "mcp.sleep: expected a duration like \"2s\", got \"%s\"",
                              lua_tostring(L, 1));
    } else {
        secs = luaL_checknumber(L, 1);
        if (secs < 0)
            return luaL_error(L, "mcp.sleep: expected a duration >= 0, got %f", secs);
    }
    struct task *t = task_check(L, "mcp.sleep");
    struct sleep_op *op = malloc(sizeof *op);
    if (!op)
        return luaL_error(L, "mcp.sleep: out of memory");
    op->task = t;
    uv_timer_init(agent_from_lua(L)->loop, &op->timer);
    op->timer.data = op;
    uv_update_time(op->timer.loop);     /* the cached time is stale after Lua ran */
    /* At least 1 ms: a 0 ms timer started from a timer callback runs again in
     * the same pass of libuv's timers, so a task sleeping 0 in a loop would
     * starve the run queue and all I/O. */
    uint64_t ms = (uint64_t)(secs * 1000 + 0.5);
    uv_timer_start(&op->timer, sleep_done, ms ? ms : 1, 0);
    return task_wait(L, t, sleep_cancel, op);
}

/* mcp.now() -> seconds since the epoch, with milliseconds. */
static int l_timer_now(lua_State *L)
{
    lua_pushnumber(L, (double)util_now_ms() / 1000.0);
    return 1;
}

/* mcp.timer.monotime() -> seconds on a clock that never jumps, for intervals. */
static int l_timer_monotime(lua_State *L)
{
    lua_pushnumber(L, (double)uv_hrtime() / 1e9);
    return 1;
}

/* mcp.timer.parse("1m30s") -> 90, or nil, err: the duration syntax of the
 * agent's config and definitions, for Lua code that takes durations. */
static int l_timer_parse(lua_State *L)
{
    if (lua_type(L, 1) == LUA_TNUMBER) {
        lua_pushnumber(L, lua_tonumber(L, 1));
        return 1;
    }
    const char *s = luaL_checkstring(L, 1);
    double v;
    if (util_parse_duration(s, &v) != 0)
        return bind_fail(L, "duration", "\"%s\" is not a duration (expected e.g. "
                                        "\"500ms\", \"2s\", \"1m30s\")", s);
    lua_pushnumber(L, v);
    return 1;
}

static const luaL_Reg timer_funcs[] = {
    { "sleep", l_timer_sleep },
    { "now", l_timer_now },
    { "monotime", l_timer_monotime },
    { "parse", l_timer_parse },
    { NULL, NULL },
};

int l_timer_open(lua_State *L)
{
    lua_newtable(L);
    luaL_register(L, NULL, timer_funcs);
    return 1;
}
