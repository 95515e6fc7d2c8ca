/* commands.c: subcommands whose logic is Lua, run in a runtime without
 * servers: the same bindings and library as the server, one task, then exit. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "agent.h"
#include "commands.h"
#include "config.h"
#include "log.h"
#include "subsystems.h"

int command_help(const struct command *c, FILE *f, int rc)
{
    fprintf(f, "usage: mcp-agent %s %s\n\n%s\n", c->name, c->args, c->help);
    return rc;
}

struct config *command_load_config(const struct command *c, int argc, char **argv,
                                   int *rest)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *path = getenv("MCP_AGENT_CONFIG");
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "+c:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        case 'h':
            exit(command_help(c, stdout, 0));
        default:
            exit(command_help(c, stderr, 2));
        }
    }
    if (!path) {
        fprintf(stderr, "mcp-agent %s: --config FILE is required "
                        "(or MCP_AGENT_CONFIG in the environment)\n", c->name);
        exit(2);
    }
    if (rest)
        *rest = optind;
    char err[1024];
    struct config *cfg = config_load(path, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "mcp-agent %s: %s\n", c->name, err);
        exit(1);
    }
    int level = log_level_parse(cfg->log_level);
    log_setup(level < 0 ? LOG_INFO : (enum log_level)level);
    return cfg;
}

int command_run_lua(const struct command *c, struct config *cfg, const char *fn,
                    int argc, char **argv)
{
    char who[64];
    snprintf(who, sizeof who, "mcp-agent %s", c->name);
    return agent_run_lua(cfg, who, "mcp.commands", fn, argc, argv);
}

int cmd_check_config(const struct command *c, int argc, char **argv)
{
    int rest;
    struct config *cfg = command_load_config(c, argc, argv, &rest);
    int rc = command_run_lua(c, cfg, "check_config", argc - rest, argv + rest);
    config_free(cfg);
    return rc;
}

/* `mcp-agent render SERVICE --config FILE`: SERVICE may come before or
 * after the options; the rest is command_load_config's. */
int cmd_render(const struct command *c, int argc, char **argv)
{
    const char *service = NULL;
    char **cfg_argv = calloc((size_t)argc + 1, sizeof *cfg_argv);
    if (!cfg_argv)
        return 1;
    int n = 0;
    cfg_argv[n++] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--config") == 0 || strcmp(a, "-c") == 0) {
            cfg_argv[n++] = argv[i];
            if (i + 1 < argc)
                cfg_argv[n++] = argv[++i];
        } else if (a[0] == '-' || service) {
            cfg_argv[n++] = argv[i];    /* --help, --config=F, or an error to report */
        } else {
            service = a;
        }
    }
    int rest;
    struct config *cfg = command_load_config(c, n, cfg_argv, &rest);
    if (rest < n || !service) {
        if (rest < n)
            fprintf(stderr, "mcp-agent render: unexpected argument \"%s\"\n", cfg_argv[rest]);
        else
            fprintf(stderr, "mcp-agent render: which service?\n");
        config_free(cfg);
        free(cfg_argv);
        return command_help(c, stderr, 2);
    }
    char *args[] = { (char *)service };
    int rc = command_run_lua(c, cfg, "render", 1, args);
    config_free(cfg);
    free(cfg_argv);
    return rc;
}

/* `mcp-agent token create|list|revoke --config FILE [--name NAME]`: the
 * action and --name may come anywhere; the rest is command_load_config's. */
int cmd_token(const struct command *c, int argc, char **argv)
{
    const char *action = NULL, *name = NULL;
    char **cfg_argv = calloc((size_t)argc + 1, sizeof *cfg_argv);
    if (!cfg_argv)
        return 1;
    int n = 0;
    cfg_argv[n++] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--name") == 0 || strcmp(a, "-n") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "mcp-agent token: %s needs a value\n", a);
                free(cfg_argv);
                return command_help(c, stderr, 2);
            }
            name = argv[++i];
        } else if (strncmp(a, "--name=", 7) == 0) {
            name = a + 7;
        } else if (strcmp(a, "--config") == 0 || strcmp(a, "-c") == 0) {
            cfg_argv[n++] = argv[i];
            if (i + 1 < argc)
                cfg_argv[n++] = argv[++i];
        } else if (a[0] == '-' || action) {
            cfg_argv[n++] = argv[i];    /* --help, --config=F, or an error to report */
        } else {
            action = a;
        }
    }
    if (action && strcmp(action, "create") != 0 && strcmp(action, "list") != 0 &&
        strcmp(action, "revoke") != 0) {
        fprintf(stderr, "mcp-agent token: unknown action \"%s\" (expected create, list or "
                        "revoke)\n", action);
        free(cfg_argv);
        return command_help(c, stderr, 2);
    }
    int rest;
    struct config *cfg = command_load_config(c, n, cfg_argv, &rest);
    if (rest < n || !action) {
        if (rest < n)
            fprintf(stderr, "mcp-agent token: unexpected argument \"%s\"\n", cfg_argv[rest]);
        else
            fprintf(stderr, "mcp-agent token: which action? create, list or revoke\n");
        config_free(cfg);
        free(cfg_argv);
        return command_help(c, stderr, 2);
    }
    char *args[] = { (char *)action, (char *)name };
    int rc = command_run_lua(c, cfg, "token", name ? 2 : 1, args);
    config_free(cfg);
    free(cfg_argv);
    return rc;
}

int cmd_doctor(const struct command *c, int argc, char **argv)
{
    int rest;
    struct config *cfg = command_load_config(c, argc, argv, &rest);
    if (rest < argc) {
        fprintf(stderr, "mcp-agent doctor: unexpected argument \"%s\"\n", argv[rest]);
        config_free(cfg);
        return 2;
    }
    int rc = command_run_lua(c, cfg, "doctor", 0, NULL);
    config_free(cfg);
    return rc;
}
