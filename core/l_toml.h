/* l_toml.h: TOML values as Lua values, for the config loader too. */
#ifndef MCP_L_TOML_H
#define MCP_L_TOML_H

#include <lua.h>

struct toml_value;

/* Pushes v as a Lua value (tables, numbers, tagged date-times). */
void toml_push(lua_State *L, const struct toml_value *v);

#endif
