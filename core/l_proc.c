/* l_proc.c: mcp.proc: the agent process itself: who it runs as, stopping. */
#include <unistd.h>

#include "agent.h"
#include "bindings.h"
#include "util.h"

/* mcp.proc.uid() -> the real uid the agent runs as. */
static int l_proc_uid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getuid());
    return 1;
}

static int l_proc_pid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

/* mcp.proc.stop([exit_code]): begins a clean stop of the agent, as SIGTERM
 * does. In the Lua module (busted) there is nothing to stop: returns false. */
static int l_proc_stop(lua_State *L)
{
    struct agent *a = agent_from_lua(L);
    int code = (int)luaL_optinteger(L, 1, 0);
    if (!a->config) {
        lua_pushboolean(L, 0);
        return 1;
    }
    agent_stop(a, code);
    lua_pushboolean(L, 1);
    return 1;
}

/* mcp.proc.uptime() -> seconds since the agent started. */
static int l_proc_uptime(lua_State *L)
{
    struct agent *a = agent_from_lua(L);
    lua_pushnumber(L, (double)(util_now_ms() - a->started_ms) / 1000.0);
    return 1;
}

static const luaL_Reg proc_funcs[] = {
    { "uid", l_proc_uid },
    { "pid", l_proc_pid },
    { "stop", l_proc_stop },
    { "uptime", l_proc_uptime },
    { NULL, NULL },
};

int l_proc_open(lua_State *L)
{
    lua_newtable(L);
    luaL_register(L, NULL, proc_funcs);
    return 1;
}
