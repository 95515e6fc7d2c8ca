/* config.h: the agent's TOML config, validated against one schema.
 *
 * The schema in config.c is the single list of every key, its type and its
 * default; docs/config.md is written from it (`mcp-agent config-doc`). */
#ifndef MCP_CONFIG_H
#define MCP_CONFIG_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <lua.h>

struct toml_value;

struct config {
    char *path;

    /* [agent] */
    char *node;
    char *data_dir;
    char *services_dir;
    char *policies_dir;
    char *lib_dir;              /* holds lua/ and policies/ shipped with the agent */
    char **volume_roots;
    double stop_timeout;

    /* [podman] */
    char *podman_socket;
    double podman_timeout;

    /* [api] */
    char **api_listen;
    char *tls_cert, *tls_key, *client_ca;
    uint64_t max_body;
    int64_t max_connections;
    double connection_timeout;

    /* [console] */
    char *console_socket;

    /* [log] */
    char *log_level;

    /* [lua] */
    int64_t task_instructions;
    double task_timeout;
    uint64_t task_memory;
    uint64_t memory;

    /* [monitor] */
    double relist_interval;
    double restart_first, restart_cap, restart_reset;
    double restart_factor, restart_jitter;
    int64_t flap_max;
    double flap_window;

    /* [routes] */
    char *route_provider;
    char *nginx_dir;
    int64_t nginx_http_port;
    char *nginx_reload;

    struct toml_value *tree;    /* the parsed file, for [[boot.sequence]] */
};

/* Loads and validates path. Returns a config the caller frees with
 * config_free(), or NULL with err filled: "FILE:LINE: [section] key: what". */
struct config *config_load(const char *path, char *err, size_t err_len);
/* The same from text in memory; config_parse("", 0, "<defaults>", ...)
 * gives every default. */
struct config *config_parse(const char *text, size_t len, const char *path, char *err,
                            size_t err_len);
void config_free(struct config *c);

/* Pushes the whole config as a Lua table (every key, defaults filled). */
void config_push(lua_State *L, const struct config *c);

/* Writes the reference of every key (markdown) to f. */
void config_write_doc(FILE *f);

#endif
