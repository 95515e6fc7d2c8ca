/* l_json.h: conversions between Lua values and jansson, for the bindings
 * that speak JSON (podman, http, the API). */
#ifndef MCP_L_JSON_H
#define MCP_L_JSON_H

#include <stdlib.h>
#include <jansson.h>
#include <lua.h>

/* Decodes text and pushes the value; returns 0, or -1 with err filled
 * ("line L column C: what") and nothing pushed. */
int json_push_text(lua_State *L, const char *text, size_t len, char *err, size_t err_len);
/* Pushes a jansson value as Lua (null -> mcp.json.null). */
void json_push(lua_State *L, json_t *v);
/* Converts the Lua value at idx into a new reference the caller owns, or
 * NULL with err filled. */
json_t *json_from_lua(lua_State *L, int idx, char *err, size_t err_len);

#endif
