/* l_systemd.c: mcp.systemd: notifications to the service manager from Lua
 * (core/sdnotify.c does the work; the server sends READY=1 itself). */
#include <string.h>

#include "agent.h"
#include "bindings.h"
#include "sdnotify.h"

/* mcp.systemd.notify(text) -> true when sent, or false, reason (not run by
 * systemd, or the socket refused it). text is "KEY=value" lines:
 * "STATUS=deploying mcq", "RELOADING=1", ... */
static int l_systemd_notify(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    if (strlen(text) != len || len == 0)
        return luaL_error(L, "mcp.systemd.notify: expected \"KEY=value\" lines without NUL "
                             "bytes");
    int rc = sdnotify_send(text);
    if (rc == 1) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushboolean(L, 0);
    if (rc == 0)
        lua_pushliteral(L, "not run by systemd (NOTIFY_SOCKET is not set)");
    else
        lua_pushfstring(L, "NOTIFY_SOCKET: %s", uv_strerror(uv_translate_sys_error(-rc)));
    return 2;
}

/* mcp.systemd.watchdog_start() -> the ping interval in seconds, or false,
 * reason (no watchdog asked for). The server starts it by itself. */
static int l_systemd_watchdog_start(lua_State *L)
{
    const char *why = NULL;
    double s = sdnotify_watchdog_start(agent_from_lua(L)->loop, &why);
    if (s > 0) {
        lua_pushnumber(L, s);
        return 1;
    }
    lua_pushboolean(L, 0);
    lua_pushstring(L, why ? why : "no watchdog");
    return 2;
}

/* mcp.systemd.watchdog_stop(): no more pings. */
static int l_systemd_watchdog_stop(lua_State *L)
{
    (void)L;
    sdnotify_watchdog_stop();
    return 0;
}

static const luaL_Reg systemd_funcs[] = {
    { "notify", l_systemd_notify },
    { "watchdog_start", l_systemd_watchdog_start },
    { "watchdog_stop", l_systemd_watchdog_stop },
    { NULL, NULL },
};

int l_systemd_open(lua_State *L)
{
    lua_newtable(L);
    luaL_register(L, NULL, systemd_funcs);
    return 1;
}
