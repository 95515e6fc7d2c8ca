/* l_watch.c: mcp.watch: which directories the agent watches for changes.
 *
 * The server watches its services, policies and lua directories from the
 * start (subsystems.c); these calls add and remove others, and are how the
 * Lua module (busted) gets a watcher at all. Changes reach Lua as one call
 * of mcp.agent.on_change({path, ...}) per debounced batch (core/watch.c). */
#include "agent.h"
#include "bindings.h"
#include "watch.h"

static struct watch *l_watch_get(lua_State *L, const char *fn)
{
    struct watch *w = watch_open(agent_from_lua(L));
    if (!w)
        luaL_error(L, "%s: out of memory", fn);
    return w;
}

/* mcp.watch.add(dir) -> true, "watching" | "waiting" (dir does not exist
 * yet: it is looked for every 2 s), or nil, err. */
static int l_watch_add(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    char err[512];
    int rc = watch_add(l_watch_get(L, "mcp.watch.add"), dir, err, sizeof err);
    if (rc < 0)
        return bind_fail(L, "watch.add", "%s", err);
    lua_pushboolean(L, 1);
    lua_pushstring(L, rc ? "watching" : "waiting");
    return 2;
}

/* mcp.watch.remove(dir) -> true, or false when dir was not watched. */
static int l_watch_remove(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    struct watch *w = agent_from_lua(L)->watch;
    lua_pushboolean(L, w && watch_remove(w, dir) == 0);
    return 1;
}

/* mcp.watch.list() -> { {path =, watching = bool, dirs = n}, ... } in the
 * order added. */
static int l_watch_list(lua_State *L)
{
    struct watch *w = agent_from_lua(L)->watch;
    lua_newtable(L);
    if (!w)
        return 1;
    const char *path;
    int watching, dirs;
    for (size_t i = 0; (path = watch_root_info(w, i, &watching, &dirs)); i++) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, path);
        lua_setfield(L, -2, "path");
        lua_pushboolean(L, watching);
        lua_setfield(L, -2, "watching");
        lua_pushinteger(L, dirs);
        lua_setfield(L, -2, "dirs");
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

/* mcp.watch.debounce([seconds | "200ms"]) -> the delay in seconds, after
 * setting it when given. */
static int l_watch_debounce(lua_State *L)
{
    struct watch *w = l_watch_get(L, "mcp.watch.debounce");
    if (!lua_isnoneornil(L, 1)) {
        lua_createtable(L, 0, 1);
        lua_pushvalue(L, 1);
        lua_setfield(L, -2, "debounce");
        double s = bind_opt_duration(L, lua_gettop(L), "debounce", 0, "mcp.watch.debounce");
        if (s <= 0 || s > 60)
            return luaL_error(L, "mcp.watch.debounce: expected more than 0 and at most 60 s");
        watch_set_debounce(w, s);
    }
    lua_pushnumber(L, watch_debounce(w));
    return 1;
}

static const luaL_Reg watch_funcs[] = {
    { "add", l_watch_add },
    { "remove", l_watch_remove },
    { "list", l_watch_list },
    { "debounce", l_watch_debounce },
    { NULL, NULL },
};

int l_watch_open(lua_State *L)
{
    lua_newtable(L);
    luaL_register(L, NULL, watch_funcs);
    return 1;
}
