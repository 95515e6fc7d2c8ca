/* commands.h: the subcommands of `mcp-agent`. main.c lists them; each
 * command that needs more than a few lines lives in its own file. */
#ifndef MCP_COMMANDS_H
#define MCP_COMMANDS_H

#include <stdio.h>

struct config;

struct command {
    const char *name, *args, *summary;
    int (*run)(const struct command *c, int argc, char **argv);
    const char *help;
};

extern const struct command commands[];

int command_help(const struct command *c, FILE *f, int rc);
/* Parses --config FILE (or MCP_AGENT_CONFIG) and loads it; exits with a
 * message on failure. *rest gets the index of the first other argument. */
struct config *command_load_config(const struct command *c, int argc, char **argv,
                                   int *rest);
/* Runs Lua `mcp.cli_agent.FN(args...)` in a runtime without servers, for
 * commands written in Lua (check-config, render, token). Returns the exit code. */
int command_run_lua(const struct command *c, struct config *cfg, const char *fn,
                    int argc, char **argv);

int cmd_check_config(const struct command *c, int argc, char **argv);
int cmd_doctor(const struct command *c, int argc, char **argv);
int cmd_render(const struct command *c, int argc, char **argv);
/* `mcp-agent console`: core/console_client.c. */
int cmd_console(const struct command *c, int argc, char **argv);
int cmd_token(const struct command *c, int argc, char **argv);

#endif
