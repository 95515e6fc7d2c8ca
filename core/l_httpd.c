/* l_httpd.c: mcp.httpd, the Lua face of the HTTP API server.
 *
 * mcp.httpd.listen{...} starts a server on the running agent (tests, and
 * the Lua module); the agent's own server is started from its config by
 * core/subsystems.c. mcp.httpd.stats() describes the agent's server.
 * req:stream(status, headers) turns a request into a chunked response,
 * written with s:write(chunk) and ended with s:close(). */
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "bindings.h"
#include "config.h"
#include "httpd.h"
#include "log.h"

#define STREAM_MT "mcp.httpd.stream"
#define SERVER_MT "mcp.httpd.server"

struct l_server {
    struct httpd *h;
};

static struct httpd_box *check_box(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, STREAM_MT);
}

/* req:stream(status [, headers]) -> s, or nil, err when the client is gone. */
int l_httpd_req_stream(lua_State *L)
{
    struct httpd_box *box = lua_touserdata(L, lua_upvalueindex(1));
    int status = (int)luaL_checkinteger(L, 2);
    if (!lua_isnoneornil(L, 3))
        luaL_checktype(L, 3, LUA_TTABLE);
    char err[256];
    int rc = httpd_stream_start(box->r, L, status, lua_isnoneornil(L, 3) ? 0 : 3, err,
                                sizeof err);
    if (rc == -2)
        return luaL_error(L, "req:stream: %s", err);
    if (rc != 0)
        return bind_fail(L, "req:stream", "%s", err);
    lua_pushvalue(L, lua_upvalueindex(1));
    return 1;
}

/* s:write(chunk) -> true, or false once the client is gone. Waits (in a task)
 * while the client is slow to take what was written before. */
static int l_stream_write(lua_State *L)
{
    struct httpd_box *box = check_box(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    int must_wait;
    int rc = httpd_stream_write(box->r, data, len, &must_wait);
    if (rc < 0)
        return luaL_error(L, "s:write: the stream has not started (call req:stream first)");
    if (rc == 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    struct task *t = must_wait ? task_current(L) : NULL;
    if (t)
        return httpd_stream_wait(L, t, box->r);
    lua_pushboolean(L, 1);
    return 1;
}

/* s:close(): ends the response once what was written is sent. */
static int l_stream_close(lua_State *L)
{
    struct httpd_box *box = check_box(L, 1);
    httpd_stream_close(box->r);
    return 0;
}

/* s:alive() -> whether writing still reaches the client. */
static int l_stream_alive(lua_State *L)
{
    struct httpd_box *box = check_box(L, 1);
    lua_pushboolean(L, httpd_stream_alive(box->r));
    return 1;
}

/* s:pending() -> bytes written but not yet taken by the connection. */
static int l_stream_pending(lua_State *L)
{
    struct httpd_box *box = check_box(L, 1);
    lua_pushnumber(L, (lua_Number)httpd_stream_pending(box->r));
    return 1;
}

static const luaL_Reg stream_methods[] = {
    { "write", l_stream_write },
    { "close", l_stream_close },
    { "alive", l_stream_alive },
    { "pending", l_stream_pending },
    { NULL, NULL },
};

static const char *const listen_opts[] = {
    "listen", "tls_cert", "tls_key", "client_ca", "max_body", "max_connections",
    "connection_timeout", "task_instructions", "task_timeout", "task_memory", "handler",
    NULL,
};

static void push_addresses(lua_State *L, struct httpd *h)
{
    size_t n;
    const char *const *addrs = httpd_addresses(h, &n);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, addrs[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
}

/* mcp.httpd.listen{listen = {"127.0.0.1:0"}, tls_cert=, tls_key=, client_ca=,
 *   max_body=, max_connections=, connection_timeout=, task_instructions=,
 *   task_timeout=, task_memory=, handler=fn} -> server, or nil, err.
 * Unset options come from the agent's config, or its defaults. The server
 * answers with handler(req), or require("mcp.api").handle(req). */
static int l_httpd_listen(lua_State *L)
{
    const char *fn = "mcp.httpd.listen";
    luaL_checktype(L, 1, LUA_TTABLE);
    bind_check_options(L, 1, fn, listen_opts);
    struct agent *a = agent_from_lua(L);
    char err[512];
    struct config *defaults = NULL;
    const struct config *cfg = a->config;
    if (!cfg) {
        defaults = config_parse("", 0, "<defaults>", err, sizeof err);
        if (!defaults)
            return luaL_error(L, "%s: %s", fn, err);
        cfg = defaults;
    }
    struct httpd_options o;
    httpd_options_from_config(&o, cfg);

    lua_getfield(L, 1, "listen");
    const char *addrs[17] = { NULL };
    if (lua_type(L, -1) == LUA_TSTRING) {
        addrs[0] = lua_tostring(L, -1);
    } else if (lua_type(L, -1) == LUA_TTABLE) {
        for (int i = 0; i < 16; i++) {
            lua_rawgeti(L, -1, i + 1);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                break;
            }
            if (lua_type(L, -1) != LUA_TSTRING) {
                config_free(defaults);
                return luaL_error(L, "%s: listen: expected strings", fn);
            }
            addrs[i] = lua_tostring(L, -1);     /* anchored by the option table */
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        config_free(defaults);
        return luaL_error(L, "%s: listen: expected a string or a list of strings", fn);
    }
    lua_pop(L, 1);
    if (addrs[0])
        o.listen = addrs;
    o.tls_cert = bind_opt_string(L, 1, "tls_cert", o.tls_cert, fn);
    o.tls_key = bind_opt_string(L, 1, "tls_key", o.tls_key, fn);
    o.client_ca = bind_opt_string(L, 1, "client_ca", o.client_ca, fn);
    o.max_body = (uint64_t)bind_opt_integer(L, 1, "max_body", (lua_Integer)o.max_body, fn);
    o.max_connections = (unsigned)bind_opt_integer(L, 1, "max_connections",
                                                   o.max_connections, fn);
    o.connection_timeout = bind_opt_duration(L, 1, "connection_timeout",
                                             o.connection_timeout, fn);
    o.limits.instructions = (uint64_t)bind_opt_integer(
        L, 1, "task_instructions", (lua_Integer)o.limits.instructions, fn);
    o.limits.timeout = bind_opt_duration(L, 1, "task_timeout", o.limits.timeout, fn);
    o.limits.memory = (size_t)bind_opt_integer(L, 1, "task_memory",
                                               (lua_Integer)o.limits.memory, fn);
    lua_getfield(L, 1, "handler");
    if (lua_isfunction(L, -1)) {
        o.handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
        if (!lua_isnil(L, -1)) {
            config_free(defaults);
            return luaL_error(L, "%s: handler: expected a function", fn);
        }
        lua_pop(L, 1);
    }

    struct httpd *h = httpd_start(a, &o, err, sizeof err);
    config_free(defaults);
    if (!h) {
        if (o.handler_ref != LUA_NOREF)
            luaL_unref(L, LUA_REGISTRYINDEX, o.handler_ref);
        return bind_fail(L, "mcp.httpd.listen", "%s", err);
    }
    struct l_server *s = lua_newuserdata(L, sizeof *s);
    s->h = h;
    luaL_getmetatable(L, SERVER_MT);
    lua_setmetatable(L, -2);
    if (!a->httpd)
        a->httpd = h;
    return 1;
}

static struct l_server *check_server(lua_State *L)
{
    struct l_server *s = luaL_checkudata(L, 1, SERVER_MT);
    if (!s->h)
        luaL_error(L, "server: already closed");
    return s;
}

static int l_server_addresses(lua_State *L)
{
    push_addresses(L, check_server(L)->h);
    return 1;
}

static void push_stats(lua_State *L, struct httpd *h)
{
    struct httpd_stats st;
    httpd_get_stats(h, &st);
    lua_createtable(L, 0, 16);
#define F(name) (lua_pushnumber(L, (lua_Number)st.name), lua_setfield(L, -2, #name))
    F(connections);
    F(connections_total);
    F(requests_total);
    F(in_flight);
    F(streams);
    F(too_large);
    F(forbidden);
    F(unavailable);
    F(task_failed);
    F(deadline);
    F(client_gone);
    F(slow_clients);
    F(refused);
#undef F
    push_addresses(L, h);
    lua_setfield(L, -2, "addresses");
}

static int l_server_stats(lua_State *L)
{
    push_stats(L, check_server(L)->h);
    return 1;
}

static int l_server_stop_accepting(lua_State *L)
{
    httpd_stop_accepting(check_server(L)->h);
    return 0;
}

/* server:close(): ends every request and closes the server. */
static int l_server_close(lua_State *L)
{
    struct l_server *s = luaL_checkudata(L, 1, SERVER_MT);
    if (!s->h)
        return 0;
    struct agent *a = agent_from_lua(L);
    if (a->httpd == s->h)
        a->httpd = NULL;
    httpd_close(s->h);
    s->h = NULL;
    return 0;
}

/* mcp.httpd.stats() -> counters of the agent's API server, or nil. */
static int l_httpd_stats(lua_State *L)
{
    struct agent *a = agent_from_lua(L);
    if (!a || !a->httpd)
        return 0;
    push_stats(L, a->httpd);
    return 1;
}

static const luaL_Reg server_methods[] = {
    { "addresses", l_server_addresses },
    { "stats", l_server_stats },
    { "stop_accepting", l_server_stop_accepting },
    { "close", l_server_close },
    { NULL, NULL },
};

static const luaL_Reg httpd_funcs[] = {
    { "listen", l_httpd_listen },
    { "stats", l_httpd_stats },
    { NULL, NULL },
};

int l_httpd_open(lua_State *L)
{
    luaL_newmetatable(L, STREAM_MT);
    lua_newtable(L);
    luaL_register(L, NULL, stream_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newmetatable(L, SERVER_MT);
    lua_newtable(L);
    luaL_register(L, NULL, server_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_register(L, NULL, httpd_funcs);
    return 1;
}
