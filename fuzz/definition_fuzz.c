/* definition_fuzz.c: libFuzzer harness for service-definition validation:
 * fuzzed TOML through mcp.toml.decode and definition.validate, then what a
 * deploy does with a definition that passes (fuzz/lua/definition.lua says
 * what is checked). Runs the agent's real runtime and Lua library.
 *
 *   sh fuzz/run.sh 60 definition        (builds build/fuzz/definition_fuzz)
 *   build/fuzz/definition_fuzz -max_total_time=180 fuzz/corpus/definition */
#include "fuzz_lua.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct fuzz_lua *f;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    f = fuzz_lua_init("definition", NULL, NULL);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_lua_run(f, data, size);
    return 0;
}
