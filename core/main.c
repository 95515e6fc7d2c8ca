/* main.c: `mcp-agent`, its subcommands and their usage. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "commands.h"
#include "config.h"
#include "log.h"
#include "toml.h"

static const struct command *find_command(const char *name);

static int usage(FILE *f, int rc)
{
    fprintf(f, "usage: mcp-agent COMMAND [options]\n\ncommands:\n");
    for (const struct command *c = commands; c->name; c++)
        fprintf(f, "  %-14s %s\n", c->name, c->summary);
    fprintf(f, "\n`mcp-agent COMMAND --help` tells more about each.\n");
    return rc;
}

static const struct command *find_command(const char *name)
{
    for (const struct command *c = commands; c->name; c++)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

static int cmd_server(const struct command *c, int argc, char **argv)
{
    int rest;
    struct config *cfg = command_load_config(c, argc, argv, &rest);
    if (rest < argc) {
        fprintf(stderr, "mcp-agent server: unexpected argument \"%s\"\n", argv[rest]);
        config_free(cfg);
        return 2;
    }
    int rc = agent_server(cfg);
    config_free(cfg);
    return rc;
}

static int cmd_version(const struct command *c, int argc, char **argv)
{
    (void)c;
    (void)argc;
    (void)argv;
    printf("mcp-agent %s\n", MCP_VERSION);
    return 0;
}

static int cmd_toml_decode(const struct command *c, int argc, char **argv)
{
    if (argc > 1)
        return command_help(c, strcmp(argv[1], "--help") == 0 ? stdout : stderr,
                            strcmp(argv[1], "--help") == 0 ? 0 : 2);
    return toml_decode_cmd(stdin, stdout, stderr);
}

static int cmd_config_doc(const struct command *c, int argc, char **argv)
{
    if (argc > 1)
        return command_help(c, stdout, 0);
    (void)argv;
    config_write_doc(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr, 2);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0)
        return usage(stdout, 0);
    if (strcmp(argv[1], "--version") == 0)
        return cmd_version(NULL, 0, NULL);
    const struct command *c = find_command(argv[1]);
    if (!c) {
        fprintf(stderr, "mcp-agent: unknown command \"%s\"\n\n", argv[1]);
        return usage(stderr, 2);
    }
    return c->run(c, argc - 1, argv + 1);
}

const struct command commands[] = {
    { "server", "--config FILE", "run the agent", cmd_server,
      "Runs the agent in the foreground until SIGTERM or SIGINT; SIGHUP reloads\n"
      "policies and definitions. Logs go to stderr (the journal under systemd)." },
    { "check-config", "--config FILE", "validate the config, definitions and policies",
      cmd_check_config,
      "Loads the config, every service definition and every policy it names, as the\n"
      "server would, and reports each problem with its file and line. Exit 0 when\n"
      "everything is valid, 1 otherwise." },
    { "render", "SERVICE --config FILE", "print the podman run lines of a service",
      cmd_render,
      "Prints one `podman run` line per component of SERVICE, as an operator would\n"
      "type them to bring it back by hand (no agent needed): the revision the registry\n"
      "records as deployed, with its host ports and labels; for a service never deployed,\n"
      "its definition on free ports the agent would pick (not recorded). --restart is\n"
      "the definition's (the agent itself creates with --restart no and restarts\n"
      "containers on its own). Bind-mount sources such as /srv/SERVICE must exist.\n"
      "Notes go to stderr, so `mcp-agent render ... | sh` runs the lines. Exit 1 when\n"
      "SERVICE is unknown or the definitions do not load." },
    { "token", "create|list|revoke --config FILE [--name NAME]",
      "manage the API's bearer tokens", cmd_token,
      "create --name NAME prints a new token once on stdout (only its SHA-256 is\n"
      "kept); list prints NAME CREATED LAST_USED; revoke --name NAME removes one.\n"
      "Works beside a running agent; run it as the agent's user." },
    { "console", "[--config FILE | --socket PATH] [-e EXPR]",
      "a Lua prompt inside the running agent", cmd_console,
      "Connects to the running agent's console socket ([console] socket of FILE, of\n"
      "MCP_AGENT_CONFIG, or the default) and opens a Lua prompt inside it: expressions\n"
      "print their value, `:help` lists the helpers, Tab completes names, Ctrl-C\n"
      "aborts an evaluation that waits, Ctrl-D leaves. History: ~/.mcp_agent_history.\n"
      "With -e EXPR: evaluates EXPR once, prints the result, exits 0 (1 on error).\n"
      "Only the agent's own user and root may connect." },
    { "doctor", "--config FILE", "check that this host is ready to run the agent", cmd_doctor,
      "Checks, as the user who runs it, what the agent needs of the host, one line each:\n"
      "`ok   WHAT`, or `FAIL WHAT: HOW TO FIX`. The uid against the one recorded in\n"
      "the registry, /etc/subuid and /etc/subgid ranges, XDG_RUNTIME_DIR, the Podman\n"
      "socket, lingering, data_dir and /srv writable, the console socket's directory\n"
      "private. Run it as the agent's user (runuser -u mcp -- mcp-agent doctor ...).\n"
      "Exit 0 only when every check passed, 1 otherwise." },
    { "version", "", "print the version", cmd_version, "Prints the version." },
    { "toml-decode", "< FILE.toml", "TOML on stdin to toml-test JSON on stdout",
      cmd_toml_decode,
      "Reads TOML on stdin and prints it as the JSON of the toml-test suite (every\n"
      "leaf {\"type\": ..., \"value\": ...}). Exit 1 with the error on stderr." },
    { "config-doc", "", "print the reference of every config key (markdown)",
      cmd_config_doc, "Prints every config key, its type, default and meaning." },
    { NULL, NULL, NULL, NULL, NULL },
};
