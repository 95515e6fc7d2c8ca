/* l_toml.c: mcp.toml.decode, TOML text to Lua tables.
 *
 * Integers and floats become numbers; date-times become tagged tables
 * ({kind = "datetime", year = ..., text = "1979-05-27T07:32:00Z"}) that print
 * back as RFC 3339 through __tostring, so no date is ever turned into a
 * lossy number. Arrays carry mcp.json's array mark so they re-encode as []. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bindings.h"
#include "l_toml.h"
#include "toml.h"
#include "util.h"

static char datetime_mt_key;

static int datetime_tostring(lua_State *L)
{
    lua_getfield(L, 1, "text");
    return 1;
}

static void push_datetime_mt(lua_State *L)
{
    lua_pushlightuserdata(L, &datetime_mt_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushcfunction(L, datetime_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushlightuserdata(L, &datetime_mt_key);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
}

static void set_int(lua_State *L, const char *key, int v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, key);
}

void toml_push(lua_State *L, const struct toml_value *v)
{
    luaL_checkstack(L, 4, "toml: too deep");
    switch (v->type) {
    case TOML_TABLE:
        lua_createtable(L, 0, (int)v->u.table.len);
        for (size_t i = 0; i < v->u.table.len; i++) {
            lua_pushlstring(L, v->u.table.items[i].key, v->u.table.items[i].key_len);
            toml_push(L, v->u.table.items[i].value);
            lua_rawset(L, -3);
        }
        break;
    case TOML_ARRAY:
        lua_createtable(L, (int)v->u.array.len, 0);
        for (size_t i = 0; i < v->u.array.len; i++) {
            toml_push(L, v->u.array.items[i]);
            lua_rawseti(L, -2, (int)i + 1);
        }
        /* Mark as an array for mcp.json, sharing its metatable. */
        lua_getglobal(L, "mcp");
        if (lua_istable(L, -1)) {
            lua_getfield(L, -1, "json");
            lua_getfield(L, -1, "array");
            lua_pushvalue(L, -4);
            lua_call(L, 1, 0);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        break;
    case TOML_STRING:
        lua_pushlstring(L, v->u.str.ptr, v->u.str.len);
        break;
    case TOML_INTEGER:
        lua_pushnumber(L, (lua_Number)v->u.integer);
        break;
    case TOML_FLOAT:
        lua_pushnumber(L, v->u.fp);
        break;
    case TOML_BOOL:
        lua_pushboolean(L, v->u.boolean);
        break;
    case TOML_DATETIME:
    case TOML_DATETIME_LOCAL:
    case TOML_DATE_LOCAL:
    case TOML_TIME_LOCAL: {
        static const char *const kinds[] = { "datetime", "datetime-local", "date-local",
                                             "time-local" };
        char text[64];
        toml_datetime_format(v, text, sizeof text);
        lua_createtable(L, 0, 10);
        lua_pushstring(L, kinds[v->type - TOML_DATETIME]);
        lua_setfield(L, -2, "kind");
        lua_pushstring(L, text);
        lua_setfield(L, -2, "text");
        const struct toml_datetime *dt = &v->u.dt;
        if (v->type != TOML_TIME_LOCAL) {
            set_int(L, "year", dt->year);
            set_int(L, "month", dt->month);
            set_int(L, "day", dt->day);
        }
        if (v->type != TOML_DATE_LOCAL) {
            set_int(L, "hour", dt->hour);
            set_int(L, "minute", dt->minute);
            set_int(L, "second", dt->second);
            set_int(L, "nanosecond", dt->nanosecond);
        }
        if (v->type == TOML_DATETIME)
            set_int(L, "offset", dt->offset_minutes);
        push_datetime_mt(L);
        lua_setmetatable(L, -2);
        break;
    }
    }
}

/* mcp.toml.decode(text [, name]) -> table, or nil, "NAME:LINE:COL: what". */
static int l_toml_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    const char *name = luaL_optstring(L, 2, "<string>");
    char err[512];
    struct toml_value *root = toml_parse(text, len, name, err, sizeof err);
    if (!root) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    toml_push(L, root);
    toml_free(root);
    return 1;
}

/* mcp.toml.decode_file(path) -> table, or nil, err naming the file. */
static int l_toml_decode_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    char *text = util_read_file(path, &len);
    if (!text)
        return bind_fail(L, path, "%s", strerror(errno));
    char err[512];
    struct toml_value *root = toml_parse(text, len, path, err, sizeof err);
    free(text);
    if (!root) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    toml_push(L, root);
    toml_free(root);
    return 1;
}

static const luaL_Reg toml_funcs[] = {
    { "decode", l_toml_decode },
    { "decode_file", l_toml_decode_file },
    { NULL, NULL },
};

int l_toml_open(lua_State *L)
{
    lua_newtable(L);
    luaL_register(L, NULL, toml_funcs);
    return 1;
}
