/* l_task.c: mcp.task: spawning, listing and ending tasks from Lua. */
#include <stdio.h>
#include <string.h>

#include "agent.h"
#include "bindings.h"
#include "util.h"

static const char *const spawn_opts[] = { "name", "timeout", "instructions", "memory",
                                           "daemon", NULL };

/* Reads spawn(opts, fn, ...) or spawn(fn, ...); leaves fn and its args on
 * top and returns how many args follow fn. */
static int spawn_args(lua_State *L, const char *fn, char *name, size_t name_len,
                      struct task_limits *lim)
{
    memset(lim, 0, sizeof *lim);
    snprintf(name, name_len, "lua");
    int first = 1;
    if (lua_type(L, 1) == LUA_TTABLE) {
        bind_check_options(L, 1, fn, spawn_opts);
        snprintf(name, name_len, "%s", bind_opt_string(L, 1, "name", "lua", fn));
        lim->timeout = bind_opt_duration(L, 1, "timeout", 0, fn);
        lim->instructions = (uint64_t)bind_opt_integer(L, 1, "instructions", 0, fn);
        lim->memory = (size_t)bind_opt_integer(L, 1, "memory", 0, fn);
        lim->daemon = bind_opt_bool(L, 1, "daemon", 0, fn);
        first = 2;
    }
    luaL_checktype(L, first, LUA_TFUNCTION);
    return lua_gettop(L) - first;
}

/* mcp.spawn([opts,] fn, ...) -> id: runs fn(...) as a task of its own. */
static int l_task_spawn(lua_State *L)
{
    char name[80];
    struct task_limits lim;
    int nargs = spawn_args(L, "mcp.spawn", name, sizeof name, &lim);
    struct task *t = task_spawn(&agent_from_lua(L)->rt, L, nargs, name, &lim, NULL, NULL);
    if (!t)
        return luaL_error(L, "mcp.spawn: out of memory");
    lua_pushnumber(L, (lua_Number)task_id(t));
    return 1;
}

static int l_task_noop(lua_State *L)
{
    (void)L;
    return 0;
}

/* mcp.run([opts,] fn, ...) -> fn's results: runs fn as a task and drives the
 * loop until it ends. Only outside tasks: in tests and in the CLI. */
static int l_task_run(lua_State *L)
{
    if (agent_from_lua(L)->rt.current)
        return luaL_error(L, "mcp.run: cannot be called from inside a task "
                             "(use mcp.spawn)");
    char name[80];
    struct task_limits lim;
    int nargs = spawn_args(L, "mcp.run", name, sizeof name, &lim);
    struct runtime *rt = &agent_from_lua(L)->rt;
    int base = lua_gettop(L) - nargs - 1;
    struct task *t = task_spawn(rt, L, nargs, name, &lim, NULL, NULL);
    if (!t)
        return luaL_error(L, "mcp.run: out of memory");
    if (task_run_until_done(rt, t, L) != 0) {
        /* LuaJIT 2.1.0-beta3 (upstream issue #1066): raising from a C function
         * that resumed a coroutine can leave g->cur_L on that coroutine and
         * crash at the next trace exit. A call from L puts it back first. */
        lua_pushcfunction(L, l_task_noop);
        lua_call(L, 0, 0);
        return lua_error(L);
    }
    return lua_gettop(L) - base;
}

/* mcp.task.list() -> { {id=, name=, waiting=}, ... }, newest first. */
static int l_task_list(lua_State *L)
{
    struct runtime *rt = &agent_from_lua(L)->rt;
    lua_newtable(L);
    int i = 1;
    for (struct task *t = task_next(rt, NULL); t; t = task_next(rt, t)) {
        uint64_t id = task_id(t);
        lua_newtable(L);
        lua_pushnumber(L, (lua_Number)id);
        lua_setfield(L, -2, "id");
        lua_pushstring(L, task_name(t));
        lua_setfield(L, -2, "name");
        lua_pushboolean(L, task_waiting(t));
        lua_setfield(L, -2, "waiting");
        lua_rawseti(L, -2, i++);
    }
    return 1;
}

/* mcp.task.cancel(id [, reason]) -> true, or false when no such task. */
static int l_task_cancel(lua_State *L)
{
    uint64_t id = (uint64_t)luaL_checknumber(L, 1);
    const char *reason = luaL_optstring(L, 2, "cancelled");
    struct task *t = task_find(&agent_from_lua(L)->rt, id);
    if (!t) {
        lua_pushboolean(L, 0);
        return 1;
    }
    char msg[256];
    snprintf(msg, sizeof msg, "task %s: %s", task_name(t), reason);
    task_abort(t, msg);
    lua_pushboolean(L, 1);
    return 1;
}

/* mcp.task.current() -> id, name of the running task, or nil. */
static int l_task_current(lua_State *L)
{
    struct task *t = agent_from_lua(L)->rt.current;
    if (!t)
        return 0;
    lua_pushnumber(L, (lua_Number)task_id(t));
    lua_pushstring(L, task_name(t));
    return 2;
}

static const luaL_Reg task_funcs[] = {
    { "spawn", l_task_spawn },
    { "run", l_task_run },
    { "list", l_task_list },
    { "cancel", l_task_cancel },
    { "current", l_task_current },
    { NULL, NULL },
};

int l_task_open(lua_State *L)
{
    lua_newtable(L);
    luaL_register(L, NULL, task_funcs);
    return 1;
}
