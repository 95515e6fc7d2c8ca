/* fuzz_lua.h: the agent's runtime inside a libFuzzer harness, for the
 * harnesses whose target is Lua (api_fuzz.c, definition_fuzz.c,
 * console_fuzz.c).
 *
 * fuzz_lua_init() builds what `mcp-agent server` builds before it opens its
 * servers: a config from config_parse() (a private temp dir for data,
 * services and policies; no Podman socket, no console, no API listener), the
 * runtime with its allocator and bindings (agent_setup), then loads a driver,
 * fuzz/lua/NAME.lua, which returns { setup = fn(dir), run = fn(input) }.
 * setup runs once in a task; run runs in a task per input, with the [lua]
 * task limits an API request gets, and returns true, or false and what is
 * wrong (the harness then aborts: a finding). A task that ends by one of its
 * limits (fuzzed Lua code may loop) is not a finding; any other error that
 * escapes the driver is.
 *
 * libFuzzer sees the coverage of C only, and the code under test here is
 * mostly Lua: a line hook feeds the Lua lines run (as edges between
 * consecutive lines) to libFuzzer as extra counters, so inputs that reach new
 * Lua code are kept. The JIT is off (the hook does not fire in traces).
 *
 * MCP_FUZZ_KNOWN="TEXT;TEXT..." lets a run look past findings already
 * reported: a failure whose message holds one of the texts is not fatal.
 *
 * Header-only, one harness per program. */
#ifndef MCP_FUZZ_LUA_H
#define MCP_FUZZ_LUA_H

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <luajit.h>

#include "../core/agent.h"
#include "../core/config.h"
#include "../core/log.h"
#include "../core/runtime.h"

struct fuzz_lua {
    uv_loop_t loop;
    struct agent a;
    struct config *cfg;
    int run_ref;
    char dir[64];
};

static struct fuzz_lua fuzz_lua_state;

/* Lua line coverage, read by libFuzzer like its own edge counters. */
__attribute__((used, section("__libfuzzer_extra_counters")))
static uint8_t fuzz_lua_cov[1 << 16];
static uintptr_t fuzz_lua_prev;
static lua_Hook fuzz_lua_rt_hook;       /* the runtime's: limits */

static void fuzz_lua_hook(lua_State *L, lua_Debug *ar)
{
    if (ar->event != LUA_HOOKLINE) {
        fuzz_lua_rt_hook(L, ar);
        return;
    }
    if (!lua_getinfo(L, "S", ar))
        return;
    uintptr_t loc = (uintptr_t)ar->source * 31u ^ (uintptr_t)ar->currentline * 2654435761u;
    size_t i = (size_t)((loc ^ (fuzz_lua_prev >> 1)) & (sizeof fuzz_lua_cov - 1));
    if (fuzz_lua_cov[i] < 255)
        fuzz_lua_cov[i]++;
    fuzz_lua_prev = loc;
}

/* (Re)installs the coverage hook around the runtime's: a task that hit a
 * limit leaves the runtime's own hook in place. */
static void fuzz_lua_hook_on(lua_State *L)
{
    /* MCP_FUZZ_NO_LUA_COV=1: C coverage only (fuzz/run.sh merges the kept
     * corpus so: Lua line edges would keep thousands of inputs). */
    static int off = -1;
    if (off < 0)
        off = getenv("MCP_FUZZ_NO_LUA_COV") != NULL;
    if (off)
        return;
    lua_Hook h = lua_gethook(L);
    if (h != fuzz_lua_hook) {
        fuzz_lua_rt_hook = h;
        lua_sethook(L, fuzz_lua_hook, LUA_MASKCOUNT | LUA_MASKLINE, lua_gethookcount(L));
    }
}

/* Is msg a finding already known (MCP_FUZZ_KNOWN)? */
static int fuzz_lua_known(const char *msg)
{
    const char *known = getenv("MCP_FUZZ_KNOWN");
    if (!known || !msg)
        return 0;
    while (*known) {
        size_t n = strcspn(known, ";");
        if (n > 0) {
            char pat[256];
            snprintf(pat, sizeof pat, "%.*s", (int)(n < 255 ? n : 255), known);
            if (strstr(msg, pat))
                return 1;
        }
        known += n;
        if (*known == ';')
            known++;
    }
    return 0;
}

static void fuzz_lua_die(const char *what, const char *msg)
{
    fprintf(stderr, "fuzz: %s: ", what);
    /* Shown escaped: a message may quote the input, bytes and all. */
    for (const char *p = msg ? msg : "?"; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '\n' || c == '\t' || (c >= 32 && c < 127))
            fputc(c, stderr);
        else
            fprintf(stderr, "\\x%02x", c);
    }
    fputc('\n', stderr);
    abort();
}

/* A task's error that a limit caused: fuzzed code may loop or allocate. */
static int fuzz_lua_limit_error(const char *msg)
{
    return msg && (strstr(msg, "instruction budget of") || strstr(msg, "deadline of") ||
                   strstr(msg, "memory cap of") || strstr(msg, "not enough memory"));
}

/* Runs the function below nargs arguments on L in a task, to its end.
 * Returns 0 with the results on L, or non-zero with the error on L. */
static int fuzz_lua_task(struct fuzz_lua *f, int nargs, const char *name,
                         const struct task_limits *lim)
{
    lua_State *L = f->a.rt.L;
    struct task *t = task_spawn(&f->a.rt, L, nargs, name, lim, NULL, NULL);
    if (!t)
        fuzz_lua_die(name, "cannot start a task");
    return task_run_until_done(&f->a.rt, t, L);
}

static int fuzz_lua_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);                       /* best effort: go on */
    return 0;
}

/* The temp dir goes when the process ends normally (libFuzzer's -runs,
 * -max_total_time, a merge); after a crash it stays, with what the input
 * left in it. */
static void fuzz_lua_cleanup(void)
{
    if (fuzz_lua_state.dir[0])
        nftw(fuzz_lua_state.dir, fuzz_lua_rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* extra_config: TOML appended to the generated config, after its [lua]
 * section (NULL: none). lua_section replaces that section (NULL: limits of
 * 20 million instructions, 5 s and 64 MiB per run). */
static struct fuzz_lua *fuzz_lua_init(const char *driver, const char *lua_section,
                                      const char *extra_config)
{
    struct fuzz_lua *f = &fuzz_lua_state;
    const char *quiet = getenv("MCP_FUZZ_LOG");
    int level = quiet ? log_level_parse(quiet) : LOG_ERROR;
    log_setup(level < 0 ? LOG_ERROR : (enum log_level)level);

    snprintf(f->dir, sizeof f->dir, "/tmp/mcp-fuzz-XXXXXX");
    if (!mkdtemp(f->dir))
        fuzz_lua_die("mkdtemp", "cannot create /tmp/mcp-fuzz-XXXXXX");
    atexit(fuzz_lua_cleanup);
    char path[128];
    const char *subdirs[] = { "data", "services", "policies", NULL };
    for (int i = 0; subdirs[i]; i++) {
        snprintf(path, sizeof path, "%s/%s", f->dir, subdirs[i]);
        mkdir(path, 0700);
    }

    char text[2048], err[512];
    snprintf(text, sizeof text,
             "[agent]\nnode = \"fuzz\"\ndata_dir = \"%s/data\"\n"
             "services_dir = \"%s/services\"\npolicies_dir = \"%s/policies\"\n"
             "[podman]\nsocket = \"%s/no-podman.sock\"\ntimeout = \"1s\"\n"
             "[api]\nlisten = []\n[console]\nsocket = \"%s/console.sock\"\n"
             "%s\n%s\n",
             f->dir, f->dir, f->dir, f->dir, f->dir,
             lua_section ? lua_section
                         : "[lua]\ntask_instructions = 20000000\ntask_timeout = \"5s\"\n"
                           "task_memory = \"64MiB\"",
             extra_config ? extra_config : "");
    f->cfg = config_parse(text, strlen(text), "<fuzz>", err, sizeof err);
    if (!f->cfg)
        fuzz_lua_die("config_parse", err);

    uv_loop_init(&f->loop);
    if (agent_setup(&f->a, f->cfg, &f->loop) != 0)
        fuzz_lua_die("agent_setup", "cannot set up the runtime");
    lua_State *L = f->a.rt.L;
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);

    snprintf(path, sizeof path, "%s/fuzz/lua/%s.lua", f->cfg->lib_dir, driver);
    if (luaL_loadfile(L, path) != 0)
        fuzz_lua_die(path, lua_tostring(L, -1));
    if (runtime_pcall(L, 0, 1, path) != 0 || !lua_istable(L, -1))
        fuzz_lua_die(path, "the driver did not return a table");
    lua_getfield(L, -1, "run");
    f->run_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "setup");
    lua_remove(L, -2);
    lua_pushstring(L, f->dir);
    if (fuzz_lua_task(f, 1, "fuzz.setup", NULL) != 0)
        fuzz_lua_die("setup", lua_tostring(L, -1));
    lua_settop(L, 0);
    return f;
}

/* Runs the driver's run(...) with the API's task limits; aborts on a
 * finding. push() pushes its arguments and returns how many. */
static void fuzz_lua_call(struct fuzz_lua *f, int (*push)(lua_State *L, void *ud), void *ud)
{
    lua_State *L = f->a.rt.L;
    int top = lua_gettop(L);
    struct task_limits lim = {
        .instructions = (uint64_t)f->cfg->task_instructions,
        .timeout = f->cfg->task_timeout,
        .memory = (size_t)f->cfg->task_memory,
    };
    fuzz_lua_hook_on(L);
    fuzz_lua_prev = 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, f->run_ref);
    int nargs = push(L, ud);
    if (fuzz_lua_task(f, nargs, "fuzz.run", &lim) != 0) {
        const char *msg = lua_tostring(L, -1);
        if (!fuzz_lua_limit_error(msg) && !fuzz_lua_known(msg))
            fuzz_lua_die("an error escaped", msg);
    } else if (lua_gettop(L) > top && !lua_toboolean(L, top + 1) &&
               !fuzz_lua_known(lua_tostring(L, top + 2))) {
        fuzz_lua_die("check failed", lua_tostring(L, top + 2));
    }
    lua_settop(L, top);
    /* What the input left behind (a table, a closure) goes now, so that a
     * leak shows as growth across runs rather than hiding in garbage. */
    lua_gc(L, LUA_GCCOLLECT, 0);
}

struct fuzz_lua_bytes {
    const uint8_t *data;
    size_t size;
};

static int fuzz_lua_push_bytes(lua_State *L, void *ud)
{
    struct fuzz_lua_bytes *b = ud;
    lua_pushlstring(L, (const char *)b->data, b->size);
    return 1;
}

/* run(input) with the input as one string. */
static void fuzz_lua_run(struct fuzz_lua *f, const uint8_t *data, size_t size)
{
    struct fuzz_lua_bytes b = { data, size };
    fuzz_lua_call(f, fuzz_lua_push_bytes, &b);
}

#endif
