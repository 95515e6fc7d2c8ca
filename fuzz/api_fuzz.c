/* api_fuzz.c: libFuzzer harness for the HTTP API's request handling: a
 * fuzzed method, path, query, headers and body go through mcp.api.handle
 * (routing, authentication, JSON bodies, the handlers) in a task, as
 * core/httpd.c runs them, with the agent's runtime, a registry in a temp dir
 * and one service defined. Only routes that do not reach Podman run;
 * fuzz/lua/api.lua says what is checked.
 *
 *   sh fuzz/run.sh 60 api               (builds build/fuzz/api_fuzz)
 *   build/fuzz/api_fuzz -max_total_time=180 fuzz/corpus/api */
#include "fuzz_lua.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct fuzz_lua *f;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* The API's own limits, lower: a fuzzed Lua definition may loop. */
    f = fuzz_lua_init("api", "[lua]\ntask_instructions = 2000000\ntask_timeout = \"5s\"\n"
                             "task_memory = \"64MiB\"", NULL);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_lua_run(f, data, size);
    return 0;
}
