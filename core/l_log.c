/* l_log.c: mcp.log, the agent's log from Lua.
 *
 * mcp.log.info("deployed %s on port %d", name, port): with more than one
 * argument the first is a string.format pattern. Lines written from a task
 * name the task, so an operator can tell which policy said what. */
#include "agent.h"
#include "bindings.h"
#include "log.h"

static int log_at(lua_State *L, enum log_level level)
{
    if (level < log_get_level())
        return 0;
    int n = lua_gettop(L);
    if (n > 1) {
        lua_getglobal(L, "string");
        lua_getfield(L, -1, "format");
        lua_insert(L, 1);
        lua_pop(L, 1);
        lua_call(L, n, 1);
    } else if (n == 1 && !lua_isstring(L, 1)) {
        lua_getglobal(L, "tostring");
        lua_insert(L, 1);
        lua_call(L, 1, 1);
    } else if (n == 0) {
        lua_pushliteral(L, "");
    }
    const char *msg = lua_tostring(L, -1);
    struct task *t = task_current(L);
    if (t)
        log_msg(level, "[%s] %s", task_name(t), msg ? msg : "");
    else
        log_msg(level, "%s", msg ? msg : "");
    return 0;
}

static int l_log_debug(lua_State *L) { return log_at(L, LOG_DEBUG); }
static int l_log_info(lua_State *L) { return log_at(L, LOG_INFO); }
static int l_log_warn(lua_State *L) { return log_at(L, LOG_WARN); }
static int l_log_error(lua_State *L) { return log_at(L, LOG_ERROR); }

static int l_log_level(lua_State *L)
{
    if (!lua_isnoneornil(L, 1)) {
        const char *name = luaL_checkstring(L, 1);
        int level = log_level_parse(name);
        if (level < 0)
            return luaL_error(L, "mcp.log.level: unknown level \"%s\" "
                                 "(expected debug, info, warn or error)", name);
        log_setup((enum log_level)level);
    }
    lua_pushstring(L, log_level_name(log_get_level()));
    return 1;
}

static const luaL_Reg log_funcs[] = {
    { "debug", l_log_debug },
    { "info", l_log_info },
    { "warn", l_log_warn },
    { "error", l_log_error },
    { "level", l_log_level },
    { NULL, NULL },
};

int l_log_open(lua_State *L)
{
    lua_newtable(L);
    luaL_register(L, NULL, log_funcs);
    return 1;
}
