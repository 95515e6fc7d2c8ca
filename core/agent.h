/* agent.h: the one structure the loop owns.
 *
 * Everything mutable that outlives a single call lives here or hangs off it:
 * the loop, the Lua runtime, and one pointer per subsystem. Subsystems that a
 * program does not use (the `mcp` CLI has no HTTP server) stay NULL. */
#ifndef MCP_AGENT_H
#define MCP_AGENT_H

#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "runtime.h"

#define MCP_VERSION "0.1.0"
#define MCP_VERSION_STRING MCP_VERSION

struct curlm;           /* core/curlm.c: libcurl multi on the loop */
struct podman;          /* core/podman.c */
struct store;           /* core/store.c */
struct httpd;           /* core/httpd.c */
struct console;         /* core/console.c */
struct watch;           /* core/watch.c */

struct agent {
    uv_loop_t *loop;
    struct config *config;      /* NULL in the Lua module used by busted */
    struct runtime rt;
    uint64_t started_ms;        /* wall clock at start, for uptime */

    struct curlm *curl;
    struct podman *podman;
    struct store *store;
    struct httpd *httpd;
    struct console *console;
    struct watch *watch;

    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t stop_timer;
    uint64_t stop_started;
    int stopping;
    int exit_code;
};

/* Returns the agent that owns L's runtime. */
struct agent *agent_from_lua(lua_State *L);

/* Begins a clean stop: Lua is told, servers close, the loop ends once the
 * running tasks finish or the stop deadline passes. Safe to call twice. */
void agent_stop(struct agent *a, int exit_code);

/* Prepares a (not yet running) agent on loop: runtime, mcp.config, paths. */
int agent_setup(struct agent *a, struct config *cfg, uv_loop_t *loop);
/* `mcp-agent server`: runs until stopped; returns the exit code. */
int agent_server(struct config *cfg);
/* Runs require(module)[fn](argv...) as one task in a runtime without
 * servers (curl only) and returns the exit code it returns (0 when it
 * returns no number, 1 when it fails). For `mcp` and `mcp-agent COMMAND`. */
int agent_run_lua(struct config *cfg, const char *who, const char *module, const char *fn,
                  int argc, char **argv);
/* Runs mcp.agent.FN(arg) as a task. Returns 0 when it was started. */
int agent_call_lua(struct agent *a, const char *fn, const char *arg);

#endif
