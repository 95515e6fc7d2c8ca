/* l_json.c: mcp.json, JSON through jansson.
 *
 * null decodes to the sentinel mcp.json.null so that a value can be told
 * from an absent key; decoded arrays carry a metatable so that an empty one
 * encodes back as [] rather than {}. mcp.json.array(t) marks a table so. */
#include <math.h>
#include <string.h>

#include <jansson.h>

#include "bindings.h"
#include "l_json.h"

#define JSON_MAX_DEPTH 200

static char array_mt_key;

static void push_array_mt(lua_State *L)
{
    lua_pushlightuserdata(L, &array_mt_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushliteral(L, "array");
        lua_setfield(L, -2, "__jsontype");
        lua_pushlightuserdata(L, &array_mt_key);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
}

static void push_json(lua_State *L, json_t *v, int depth)
{
    luaL_checkstack(L, 4, "json: too deep");
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *val;
        lua_createtable(L, 0, (int)json_object_size(v));
        json_object_foreach(v, key, val) {
            push_json(L, val, depth + 1);
            lua_setfield(L, -2, key);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *val;
        lua_createtable(L, (int)json_array_size(v), 0);
        json_array_foreach(v, i, val) {
            push_json(L, val, depth + 1);
            lua_rawseti(L, -2, (int)i + 1);
        }
        push_array_mt(L);
        lua_setmetatable(L, -2);
        break;
    }
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        lua_pushnumber(L, (lua_Number)json_integer_value(v));
        break;
    case JSON_REAL:
        lua_pushnumber(L, json_real_value(v));
        break;
    case JSON_TRUE:
        lua_pushboolean(L, 1);
        break;
    case JSON_FALSE:
        lua_pushboolean(L, 0);
        break;
    case JSON_NULL:
        lua_pushlightuserdata(L, NULL);
        break;
    }
}

int json_push_text(lua_State *L, const char *text, size_t len, char *err, size_t err_len)
{
    json_error_t e;
    /* \u0000 in a string is allowed: encode writes it (a Lua string may hold
     * NUL bytes), and what the registry stored must read back. */
    json_t *v = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
                           &e);
    if (!v) {
        snprintf(err, err_len, "line %d column %d: %s", e.line, e.column, e.text);
        return -1;
    }
    push_json(L, v, 0);
    json_decref(v);
    return 0;
}

/* mcp.json.decode(text) -> value, or nil, "json: line L column C: what". */
static int l_json_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    char err[256];
    if (json_push_text(L, text, len, err, sizeof err) != 0)
        return bind_fail(L, "json", "%s", err);
    return 1;
}

/* Is the table at idx a sequence 1..n (n > 0), or marked as an array? */
static int table_is_array(lua_State *L, int idx, size_t *n)
{
    if (lua_getmetatable(L, idx)) {
        lua_getfield(L, -1, "__jsontype");
        const char *jt = lua_tostring(L, -1);
        int marked = jt && strcmp(jt, "array") == 0;
        int object = jt && strcmp(jt, "object") == 0;
        lua_pop(L, 2);
        if (object)
            return 0;
        if (marked) {
            *n = lua_objlen(L, idx);
            return 1;
        }
    }
    size_t len = lua_objlen(L, idx), count = 0;
    if (len == 0)
        return 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TNUMBER) {
            lua_pop(L, 1);
            return 0;
        }
        count++;
    }
    *n = len;
    return count == len;
}

/* Converts the Lua value at idx to a new jansson value; on failure writes
 * why into err (with the path to the value) and returns NULL. */
static json_t *to_json(lua_State *L, int idx, int depth, char *err, size_t err_len)
{
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    if (depth > JSON_MAX_DEPTH) {
        snprintf(err, err_len, "nested deeper than %d levels (a cycle?)", JSON_MAX_DEPTH);
        return NULL;
    }
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return json_null();
    case LUA_TBOOLEAN:
        return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER: {
        double d = lua_tonumber(L, idx);
        if (!isfinite(d)) {
            snprintf(err, err_len, "%g cannot be written in JSON", d);
            return NULL;
        }
        if (d == floor(d) && fabs(d) < 9007199254740992.0)
            return json_integer((json_int_t)d);
        return json_real(d);
    }
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        json_t *v = json_stringn(s, len);
        if (!v)
            snprintf(err, err_len, "string is not valid UTF-8");
        return v;
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL)
            return json_null();
        break;
    case LUA_TTABLE: {
        if (luaL_getmetafield(L, idx, "__tostring")) {
            lua_pop(L, 1);
            if (luaL_callmeta(L, idx, "__tostring")) {
                json_t *v = json_string(lua_tostring(L, -1));
                lua_pop(L, 1);
                return v;
            }
        }
        size_t n;
        luaL_checkstack(L, 4, "json: too deep");
        if (table_is_array(L, idx, &n)) {
            json_t *arr = json_array();
            for (size_t i = 1; i <= n; i++) {
                lua_rawgeti(L, idx, (int)i);
                json_t *v = to_json(L, -1, depth + 1, err, err_len);
                lua_pop(L, 1);
                if (!v) {
                    json_decref(arr);
                    return NULL;
                }
                json_array_append_new(arr, v);
            }
            return arr;
        }
        json_t *obj = json_object();
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            char num[64];
            const char *key;
            if (lua_type(L, -2) == LUA_TSTRING) {
                size_t klen;
                key = lua_tolstring(L, -2, &klen);
                if (strlen(key) != klen) {
                    /* jansson's keys are C strings: it would be cut short. */
                    snprintf(err, err_len, "a key with a NUL byte cannot be written in JSON");
                    lua_pop(L, 2);
                    json_decref(obj);
                    return NULL;
                }
            } else if (lua_type(L, -2) == LUA_TNUMBER) {
                snprintf(num, sizeof num, "%.17g", lua_tonumber(L, -2));
                key = num;
            } else {
                snprintf(err, err_len, "a %s key cannot be written in JSON",
                         luaL_typename(L, -2));
                lua_pop(L, 2);
                json_decref(obj);
                return NULL;
            }
            if (lua_type(L, -1) == LUA_TFUNCTION) {     /* methods are not data */
                lua_pop(L, 1);
                continue;
            }
            json_t *v = to_json(L, -1, depth + 1, err, err_len);
            if (!v) {
                lua_pop(L, 2);
                json_decref(obj);
                return NULL;
            }
            json_object_set_new(obj, key, v);
            lua_pop(L, 1);
        }
        return obj;
    }
    default:
        break;
    }
    snprintf(err, err_len, "a %s value cannot be written in JSON", luaL_typename(L, idx));
    return NULL;
}

json_t *json_from_lua(lua_State *L, int idx, char *err, size_t err_len)
{
    return to_json(L, idx, 0, err, err_len);
}

void json_push(lua_State *L, json_t *v)
{
    push_json(L, v, 0);
}

static const char *const encode_opts[] = { "pretty", "sort", NULL };

/* mcp.json.encode(value [, {pretty=, sort=}]) -> text. Raises on values JSON
 * cannot hold (functions, NaN, cycles): those are programming errors. */
static int l_json_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    bind_check_options(L, 2, "mcp.json.encode", encode_opts);
    size_t flags = JSON_ENCODE_ANY | JSON_COMPACT;
    if (bind_opt_bool(L, 2, "pretty", 0, "mcp.json.encode"))
        flags = JSON_ENCODE_ANY | JSON_INDENT(2);
    if (bind_opt_bool(L, 2, "sort", 0, "mcp.json.encode"))
        flags |= JSON_SORT_KEYS;
    char err[256];
    lua_settop(L, 1);
    json_t *v = to_json(L, 1, 0, err, sizeof err);
    if (!v)
        return luaL_error(L, "mcp.json.encode: %s", err);
    char *text = json_dumps(v, flags);
    json_decref(v);
    if (!text)
        return luaL_error(L, "mcp.json.encode: out of memory");
    lua_pushstring(L, text);
    free(text);
    return 1;
}

/* mcp.json.array(t) -> t, marked to encode as an array even when empty. */
static int l_json_array(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    push_array_mt(L);
    lua_setmetatable(L, 1);
    return 1;
}

static const luaL_Reg json_funcs[] = {
    { "decode", l_json_decode },
    { "encode", l_json_encode },
    { "array", l_json_array },
    { NULL, NULL },
};

int l_json_open(lua_State *L)
{
    lua_newtable(L);
    luaL_register(L, NULL, json_funcs);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    return 1;
}
