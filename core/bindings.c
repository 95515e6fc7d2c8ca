/* bindings.c: the one place that assembles the `mcp` namespace, and the
 * argument helpers every binding uses. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "bindings.h"
#include "agent.h"
#include "util.h"

static const struct {
    const char *name;
    lua_CFunction open;
} modules[] = {
    { "log", l_log_open },
    { "json", l_json_open },
    { "timer", l_timer_open },
    { "toml", l_toml_open },
    { "task", l_task_open },
    { "httpd", l_httpd_open },
    { "proc", l_proc_open },
    { "store", l_store_open },
    { "crypto", l_crypto_open },
    { "exec", l_exec_open },
    { "fs", l_fs_open },
    { "net", l_net_open },
    { "watch", l_watch_open },
    { "systemd", l_systemd_open },
    { "podman", l_podman_open },
    { "http", l_http_open },
};

int bindings_open(lua_State *L, struct agent *a)
{
    (void)a;
    lua_newtable(L);
    for (size_t i = 0; i < sizeof modules / sizeof modules[0]; i++) {
        lua_pushcfunction(L, modules[i].open);
        lua_call(L, 0, 1);
        lua_setfield(L, -2, modules[i].name);
    }
    /* The calls a policy uses most, at the top of the namespace. */
    static const char *const shortcuts[][3] = {
        { "sleep", "timer", "sleep" }, { "now", "timer", "now" },
        { "spawn", "task", "spawn" }, { "run", "task", "run" },
    };
    for (size_t i = 0; i < sizeof shortcuts / sizeof shortcuts[0]; i++) {
        lua_getfield(L, -1, shortcuts[i][1]);
        lua_getfield(L, -1, shortcuts[i][2]);
        lua_setfield(L, -3, shortcuts[i][0]);
        lua_pop(L, 1);
    }
    lua_pushliteral(L, MCP_VERSION_STRING);
    lua_setfield(L, -2, "version");
    /* State that outlives a reload of the Lua library (the registry handle,
     * the monitor's counters): modules keep it here, not in upvalues. */
    lua_newtable(L);
    lua_setfield(L, -2, "state");

    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "mcp.core");
    lua_pop(L, 2);
    lua_setglobal(L, "mcp");
    return 0;
}

void bind_check_options(lua_State *L, int idx, const char *fn, const char *const allowed[])
{
    if (lua_isnoneornil(L, idx))
        return;
    luaL_checktype(L, idx, LUA_TTABLE);
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        const char *key = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        int ok = 0;
        for (size_t i = 0; key && allowed[i]; i++)
            if (strcmp(key, allowed[i]) == 0)
                ok = 1;
        if (!ok) {
            char list[512] = "";
            size_t n = 0;
            for (size_t i = 0; allowed[i] && n < sizeof list; i++)
                n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "",
                                      allowed[i]);
            if (key)
                luaL_error(L, "%s: unknown option \"%s\" (expected one of: %s)", fn, key,
                           list);
            luaL_error(L, "%s: option keys must be strings, got %s", fn,
                       luaL_typename(L, -1));
        }
    }
}

/* Pushes field key of the option table at idx, or nil. */
static int opt_field(lua_State *L, int idx, const char *key)
{
    if (lua_isnoneornil(L, idx)) {
        lua_pushnil(L);
        return LUA_TNIL;
    }
    lua_getfield(L, idx, key);
    return lua_type(L, -1);
}

double bind_opt_duration(lua_State *L, int idx, const char *key, double def, const char *fn)
{
    double v = def;
    switch (opt_field(L, idx, key)) {
    case LUA_TNIL:
        break;
    case LUA_TNUMBER:
        v = lua_tonumber(L, -1);
        if (v < 0)
            luaL_error(L, "%s: option %s: expected a duration, got %f", fn, key, v);
        break;
    case LUA_TSTRING:
        if (util_parse_duration(lua_tostring(L, -1), &v) != 0)
            luaL_error(L, "%s: option %s: expected a duration like \"2s\" or \"500ms\", "
                          "got \"%s\"", fn, key, lua_tostring(L, -1));
        break;
    default:
        luaL_error(L, "%s: option %s: expected a duration, got %s", fn, key,
                   luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return v;
}

const char *bind_opt_string(lua_State *L, int idx, const char *key, const char *def,
                            const char *fn)
{
    const char *v = def;
    int t = opt_field(L, idx, key);
    if (t == LUA_TSTRING)
        v = lua_tostring(L, -1);    /* anchored by the option table */
    else if (t != LUA_TNIL)
        luaL_error(L, "%s: option %s: expected a string, got %s", fn, key,
                   luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}

lua_Integer bind_opt_integer(lua_State *L, int idx, const char *key, lua_Integer def,
                             const char *fn)
{
    lua_Integer v = def;
    int t = opt_field(L, idx, key);
    if (t == LUA_TNUMBER) {
        lua_Number n = lua_tonumber(L, -1);
        if (n != (lua_Number)(lua_Integer)n)
            luaL_error(L, "%s: option %s: expected an integer, got %f", fn, key, n);
        v = (lua_Integer)n;
    } else if (t != LUA_TNIL) {
        luaL_error(L, "%s: option %s: expected an integer, got %s", fn, key,
                   luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return v;
}

int bind_opt_bool(lua_State *L, int idx, const char *key, int def, const char *fn)
{
    int v = def;
    int t = opt_field(L, idx, key);
    if (t == LUA_TBOOLEAN)
        v = lua_toboolean(L, -1);
    else if (t != LUA_TNIL)
        luaL_error(L, "%s: option %s: expected a boolean, got %s", fn, key,
                   luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}

lua_Integer bind_opt_size(lua_State *L, int idx, const char *key, lua_Integer def,
                          const char *fn)
{
    lua_Integer v = def;
    uint64_t bytes;
    switch (opt_field(L, idx, key)) {
    case LUA_TNIL:
        break;
    case LUA_TNUMBER: {
        lua_Number n = lua_tonumber(L, -1);
        if (n < 0 || n != (lua_Number)(lua_Integer)n)
            luaL_error(L, "%s: option %s: expected a size in bytes, got %f", fn, key, n);
        v = (lua_Integer)n;
        break;
    }
    case LUA_TSTRING:
        if (util_parse_size(lua_tostring(L, -1), &bytes) != 0 || bytes > (1ull << 52))
            luaL_error(L, "%s: option %s: expected a size like \"64KiB\" or \"1MiB\", "
                          "got \"%s\"", fn, key, lua_tostring(L, -1));
        v = (lua_Integer)bytes;
        break;
    default:
        luaL_error(L, "%s: option %s: expected a size, got %s", fn, key,
                   luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return v;
}

int bind_fail(lua_State *L, const char *op, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", op, msg);
    return 2;
}
