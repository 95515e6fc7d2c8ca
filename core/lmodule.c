/* lmodule.c: the bindings as a Lua C module, `require("mcp.core")`, so that
 * busted under LuaJIT tests lua/ against the real C code. The module owns an
 * agent on libuv's default loop; mcp.run(fn) drives it until fn's task ends. */
#include <stdlib.h>

#include <lauxlib.h>

#include "agent.h"
#include "bindings.h"

int luaopen_mcp_core(lua_State *L);

int luaopen_mcp_core(lua_State *L)
{
    struct agent *a = calloc(1, sizeof *a);
    if (!a)
        return luaL_error(L, "mcp.core: out of memory");
    a->loop = uv_default_loop();
    a->loop->data = a;
    if (runtime_attach(&a->rt, a, L) != 0)
        return luaL_error(L, "mcp.core: cannot set up the runtime");
    lua_getglobal(L, "mcp");
    return 1;
}
