/* bindings.h: the `mcp` namespace and the helpers every binding shares.
 *
 * Each subsystem's Lua face is one file core/l_NAME.c exporting
 * l_NAME_open(), which pushes its table; bindings.c lists them all. */
#ifndef MCP_BINDINGS_H
#define MCP_BINDINGS_H

#include <lua.h>
#include <lauxlib.h>

struct agent;

/* Builds the mcp table, stores it as the global `mcp` and as
 * package.loaded["mcp.core"]. Returns 0. */
int bindings_open(lua_State *L, struct agent *a);

/* Raises "FN: unknown option "KEY" (expected one of: a, b, c)" when the
 * table at idx has a key not in allowed (NULL-terminated). A nil or absent
 * idx passes. */
void bind_check_options(lua_State *L, int idx, const char *fn, const char *const allowed[]);

/* Field KEY of the option table at idx (which may be nil), as a duration:
 * a number of seconds or a string like "2s". Raises on a bad value. */
double bind_opt_duration(lua_State *L, int idx, const char *key, double def, const char *fn);
/* The same for a string, an integer and a boolean. */
const char *bind_opt_string(lua_State *L, int idx, const char *key, const char *def,
                            const char *fn);
lua_Integer bind_opt_integer(lua_State *L, int idx, const char *key, lua_Integer def,
                             const char *fn);
int bind_opt_bool(lua_State *L, int idx, const char *key, int def, const char *fn);
/* A size in bytes: a number or a string like "1MiB". Raises on a bad value. */
lua_Integer bind_opt_size(lua_State *L, int idx, const char *key, lua_Integer def,
                          const char *fn);

/* Pushes nil and "OP: MESSAGE" and returns 2: the operational error channel. */
int bind_fail(lua_State *L, const char *op, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

int l_log_open(lua_State *L);
int l_json_open(lua_State *L);
int l_timer_open(lua_State *L);
int l_toml_open(lua_State *L);
int l_task_open(lua_State *L);
int l_httpd_open(lua_State *L);
int l_proc_open(lua_State *L);
int l_store_open(lua_State *L);
int l_crypto_open(lua_State *L);
int l_exec_open(lua_State *L);
int l_fs_open(lua_State *L);
int l_net_open(lua_State *L);
int l_watch_open(lua_State *L);
int l_systemd_open(lua_State *L);
int l_podman_open(lua_State *L);
int l_http_open(lua_State *L);

#endif
