/* lmodule.c: the bindings as a Lua C module, `require("mcp.core")`, so that
 * busted under LuaJIT tests lua/ against the real C code. The module owns an
 * agent on libuv's default loop; mcp.run(fn) drives it until fn's task ends. */
#include <dlfcn.h>
#include <stdlib.h>

#include <lauxlib.h>

#include "agent.h"
#include "bindings.h"

int luaopen_mcp_core(lua_State *L);

int luaopen_mcp_core(lua_State *L)
{
    /* The state's allocator becomes ours (runtime_attach), so this library
     * must stay mapped until the very last free, after lua_close has already
     * unloaded the C modules: pin it. */
    Dl_info info;
    if (dladdr((void *)luaopen_mcp_core, &info) && info.dli_fname)
        dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
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
