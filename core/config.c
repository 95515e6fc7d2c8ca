/* config.c: loading and validating the agent's config file.
 *
 * One table, `schema`, says every key: where it is stored, its type, its
 * default and what it means. Validation, defaults, the Lua view of the
 * config and docs/config.md all come from it, so they cannot disagree. */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "config.h"
#include "l_toml.h"
#include "log.h"
#include "toml.h"
#include "util.h"

#ifndef MCP_LIB_DIR
#define MCP_LIB_DIR "."
#endif

enum ctype { CT_STRING, CT_PATH, CT_STRINGS, CT_INT, CT_FLOAT, CT_BOOL, CT_DURATION,
             CT_SIZE, CT_ENUM };

struct key {
    const char *section, *name;
    enum ctype type;
    size_t offset;
    const char *def;            /* parsed like a value; NULL: unset */
    const char *doc;
    const char *choices;        /* CT_ENUM: "a|b|c" */
};

#define OFF(f) offsetof(struct config, f)

static const struct key schema[] = {
    { "agent", "node", CT_STRING, OFF(node), "{hostname}",
      "This host's node name; services whose `node` differs are not run here.", NULL },
    { "agent", "data_dir", CT_PATH, OFF(data_dir), "/srv/mcp",
      "State directory: the registry `mcp.db` and other state.", NULL },
    { "agent", "services_dir", CT_PATH, OFF(services_dir), "{data_dir}/services",
      "Service definitions (`*.toml`, `*.lua`), watched and hot-reloaded.", NULL },
    { "agent", "policies_dir", CT_PATH, OFF(policies_dir), "{data_dir}/policies",
      "Operator deploy policies (`NAME.lua`); one here overrides a shipped one.", NULL },
    { "agent", "lib_dir", CT_PATH, OFF(lib_dir), "{lib_dir}",
      "Where the agent's own `lua/` library and shipped `policies/` are; defaults to "
      "the directory of the binary when it holds `lua/mcp/agent.lua`, else the source "
      "tree it was built from.", NULL },
    { "agent", "volume_roots", CT_STRINGS, OFF(volume_roots), "",
      "Host directories, besides `/srv/<service>`, that definitions may mount.", NULL },
    { "agent", "stop_timeout", CT_DURATION, OFF(stop_timeout), "1.5s",
      "On SIGTERM, how long running tasks get to finish before they are abandoned.",
      NULL },
    { "podman", "socket", CT_PATH, OFF(podman_socket), "{runtime_dir}/podman/podman.sock",
      "The libpod API socket of the user's Podman service.", NULL },
    { "podman", "timeout", CT_DURATION, OFF(podman_timeout), "30s",
      "Default timeout of one Podman API request (pulls and waits set their own).", NULL },
    { "api", "listen", CT_STRINGS, OFF(api_listen), "127.0.0.1:9444",
      "Addresses the HTTP API listens on (`host:port`, `[v6]:port`); empty: no API.",
      NULL },
    { "api", "tls_cert", CT_PATH, OFF(tls_cert), NULL,
      "PEM certificate; with `tls_key`, the API speaks TLS 1.3 only.", NULL },
    { "api", "tls_key", CT_PATH, OFF(tls_key), NULL, "PEM private key of `tls_cert`.", NULL },
    { "api", "client_ca", CT_PATH, OFF(client_ca), NULL,
      "PEM CA bundle; when set, clients must present a certificate it signed.", NULL },
    { "api", "max_body", CT_SIZE, OFF(max_body), "1MiB",
      "Largest request body accepted; larger ones get 413.", NULL },
    { "api", "max_connections", CT_INT, OFF(max_connections), "256",
      "Concurrent connections accepted.", NULL },
    { "api", "connection_timeout", CT_DURATION, OFF(connection_timeout), "30s",
      "A connection idle (or sending too slowly) this long is closed.", NULL },
    { "console", "socket", CT_PATH, OFF(console_socket), "{runtime_dir}/mcp-agent.sock",
      "Unix socket of `mcp-agent console` (mode 0600, own uid and root only).", NULL },
    { "log", "level", CT_ENUM, OFF(log_level), "info",
      "Least severe level written.", "debug|info|warn|error" },
    { "lua", "task_instructions", CT_INT, OFF(task_instructions), "100000000",
      "Instruction budget of a policy, definition, API or console task (JIT off "
      "for sandboxed code, so the budget holds).", NULL },
    { "lua", "task_timeout", CT_DURATION, OFF(task_timeout), "10m",
      "Wall-clock deadline of such a task, waits included.", NULL },
    { "lua", "task_memory", CT_SIZE, OFF(task_memory), "64MiB",
      "Net memory such a task may allocate.", NULL },
    { "lua", "memory", CT_SIZE, OFF(memory), "1GiB",
      "Cap of the whole Lua state.", NULL },
    { "monitor", "relist_interval", CT_DURATION, OFF(relist_interval), "30s",
      "Full re-list of Podman's containers, besides the event stream.", NULL },
    { "monitor", "restart_first", CT_DURATION, OFF(restart_first), "1s",
      "Delay before the first automatic restart.", NULL },
    { "monitor", "restart_factor", CT_FLOAT, OFF(restart_factor), "2",
      "Each further restart waits this many times longer.", NULL },
    { "monitor", "restart_cap", CT_DURATION, OFF(restart_cap), "5m",
      "Longest restart delay.", NULL },
    { "monitor", "restart_jitter", CT_FLOAT, OFF(restart_jitter), "0.1",
      "Up to this fraction of each delay is taken off at random, so that components "
      "that failed together do not restart together.", NULL },
    { "monitor", "restart_reset", CT_DURATION, OFF(restart_reset), "10m",
      "Healthy this long, a component's restart delay starts over.", NULL },
    { "monitor", "flap_max", CT_INT, OFF(flap_max), "5",
      "More restarts than this within `flap_window` marks a component flapping.", NULL },
    { "monitor", "flap_window", CT_DURATION, OFF(flap_window), "5m",
      "The window of `flap_max`.", NULL },
    { "routes", "provider", CT_ENUM, OFF(route_provider), "none",
      "Who is told where a route's traffic goes.", "none|nginx" },
    { "routes", "nginx_dir", CT_PATH, OFF(nginx_dir), "{data_dir}/nginx",
      "Directory nginx includes; one file per route is written there.", NULL },
    { "routes", "nginx_http_port", CT_INT, OFF(nginx_http_port), "80",
      "Port of the nginx server blocks written for l7 routes with a hostname.", NULL },
    { "routes", "nginx_reload", CT_STRING, OFF(nginx_reload), "nginx -s reload",
      "Command that reloads nginx gracefully.", NULL },
};

#define NKEYS (sizeof schema / sizeof schema[0])

static const char *const sections[] = { "agent", "podman", "api", "console", "log", "lua",
                                        "monitor", "routes", "boot", NULL };

static void *field(struct config *c, const struct key *k)
{
    return (char *)c + k->offset;
}

/* Levenshtein distance, for "did you mean" hints on unknown keys. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40)
        return 99;
    size_t d[41][41];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
            d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
    return d[la][lb];
}

static void suggest(char *buf, size_t len, const char *name, const char *section)
{
    const char *best = NULL;
    size_t best_d = 3;
    for (size_t i = 0; i < NKEYS; i++) {
        if (section && strcmp(schema[i].section, section) != 0)
            continue;
        const char *cand = section ? schema[i].name : schema[i].section;
        size_t d = edit_distance(name, cand);
        if (d < best_d) {
            best_d = d;
            best = cand;
        }
    }
    if (!section)
        for (size_t i = 0; sections[i]; i++)
            if (edit_distance(name, sections[i]) < best_d) {
                best_d = edit_distance(name, sections[i]);
                best = sections[i];
            }
    if (best)
        snprintf(buf, len, " (did you mean \"%s\"?)", best);
    else
        buf[0] = 0;
}

static char *expand(const char *def, const struct config *c)
{
    char out[PATH_MAX];
    size_t n = 0;
    for (const char *p = def; *p && n < sizeof out - 1;) {
        const char *val = NULL;
        char tmp[PATH_MAX];
        size_t skip = 0;
        if (strncmp(p, "{data_dir}", 10) == 0) {
            val = c->data_dir;
            skip = 10;
        } else if (strncmp(p, "{runtime_dir}", 13) == 0) {
            val = getenv("XDG_RUNTIME_DIR");
            if (!val || !*val) {
                snprintf(tmp, sizeof tmp, "/run/user/%u", (unsigned)getuid());
                val = tmp;
            }
            skip = 13;
        } else if (strncmp(p, "{hostname}", 10) == 0) {
            if (gethostname(tmp, sizeof tmp) != 0)
                snprintf(tmp, sizeof tmp, "localhost");
            tmp[sizeof tmp - 1] = 0;
            val = tmp;
            skip = 10;
        } else if (strncmp(p, "{lib_dir}", 9) == 0) {
            char exe[PATH_MAX], probe[PATH_MAX + 32];
            ssize_t r = readlink("/proc/self/exe", exe, sizeof exe - 1);
            val = MCP_LIB_DIR;
            if (r > 0) {
                exe[r] = 0;
                char *slash = strrchr(exe, '/');
                if (slash)
                    *slash = 0;
                snprintf(probe, sizeof probe, "%s/lua/mcp/agent.lua", exe);
                if (access(probe, R_OK) == 0) {
                    snprintf(tmp, sizeof tmp, "%s", exe);
                    val = tmp;
                }
            }
            skip = 9;
        }
        if (val) {
            n += (size_t)snprintf(out + n, sizeof out - n, "%s", val);
            if (n >= sizeof out)
                n = sizeof out - 1;
            p += skip;
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = 0;
    return util_strdup(out);
}

static const char *type_doc(const struct key *k)
{
    switch (k->type) {
    case CT_STRING: return "a string";
    case CT_PATH: return "an absolute path";
    case CT_STRINGS: return "a list of strings";
    case CT_INT: return "an integer";
    case CT_FLOAT: return "a number";
    case CT_BOOL: return "a boolean";
    case CT_DURATION: return "a duration (\"500ms\", \"30s\", \"5m\")";
    case CT_SIZE: return "a size (bytes, \"64MiB\", \"1GiB\")";
    case CT_ENUM: return "one of";
    }
    return "?";
}

static void free_strings(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* Stores the text form of a value (a default, or a string from the file).
 * Returns NULL, or what was wrong. */
static const char *set_text(struct config *c, const struct key *k, const char *text,
                            char *why, size_t why_len)
{
    void *f = field(c, k);
    switch (k->type) {
    case CT_PATH:
    case CT_STRING: {
        char *v = expand(text, c);
        if (k->type == CT_PATH && v[0] != '/') {
            snprintf(why, why_len, "expected an absolute path, got \"%s\"", text);
            free(v);
            return why;
        }
        free(*(char **)f);
        *(char **)f = v;
        return NULL;
    }
    case CT_ENUM: {
        size_t n = strlen(text);
        const char *p = k->choices;
        while (p) {
            const char *bar = strchr(p, '|');
            size_t len = bar ? (size_t)(bar - p) : strlen(p);
            if (len == n && strncmp(p, text, n) == 0) {
                free(*(char **)f);
                *(char **)f = util_strdup(text);
                return NULL;
            }
            p = bar ? bar + 1 : NULL;
        }
        snprintf(why, why_len, "\"%s\" is not one of %s", text, k->choices);
        return why;
    }
    case CT_DURATION:
        if (util_parse_duration(text, (double *)f) != 0) {
            snprintf(why, why_len, "expected a duration like \"30s\", got \"%s\"", text);
            return why;
        }
        return NULL;
    case CT_SIZE:
        if (util_parse_size(text, (uint64_t *)f) != 0) {
            snprintf(why, why_len, "expected a size like \"64MiB\", got \"%s\"", text);
            return why;
        }
        return NULL;
    case CT_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (*end || errno || v < 0) {
            snprintf(why, why_len, "expected a non-negative integer, got \"%s\"", text);
            return why;
        }
        *(int64_t *)f = v;
        return NULL;
    }
    case CT_FLOAT: {
        char *end;
        double v = strtod(text, &end);
        if (*end || v < 0) {
            snprintf(why, why_len, "expected a non-negative number, got \"%s\"", text);
            return why;
        }
        *(double *)f = v;
        return NULL;
    }
    case CT_BOOL:
        *(int *)f = strcmp(text, "true") == 0;
        return NULL;
    case CT_STRINGS: {
        free_strings(*(char ***)f);
        char **v = calloc(2, sizeof *v);
        if (*text)
            v[0] = util_strdup(text);
        *(char ***)f = v;
        return NULL;
    }
    }
    return NULL;
}

/* Stores a value from the file, checking its TOML type. */
static const char *set_value(struct config *c, const struct key *k,
                             const struct toml_value *v, char *why, size_t why_len)
{
    char num[64];
    switch (k->type) {
    case CT_STRINGS: {
        if (v->type != TOML_ARRAY)
            break;
        char **list = calloc(v->u.array.len + 1, sizeof *list);
        for (size_t i = 0; i < v->u.array.len; i++) {
            const struct toml_value *e = v->u.array.items[i];
            if (e->type != TOML_STRING) {
                free_strings(list);
                snprintf(why, why_len, "item %zu: expected a string, got %s", i + 1,
                         toml_type_name(e->type));
                return why;
            }
            list[i] = util_strdup(e->u.str.ptr);
        }
        free_strings(*(char ***)field(c, k));
        *(char ***)field(c, k) = list;
        return NULL;
    }
    case CT_INT:
        if (v->type != TOML_INTEGER)
            break;
        snprintf(num, sizeof num, "%lld", (long long)v->u.integer);
        return set_text(c, k, num, why, why_len);
    case CT_FLOAT:
        if (v->type != TOML_INTEGER && v->type != TOML_FLOAT)
            break;
        snprintf(num, sizeof num, "%.17g",
                 v->type == TOML_INTEGER ? (double)v->u.integer : v->u.fp);
        return set_text(c, k, num, why, why_len);
    case CT_DURATION:
    case CT_SIZE:
        if (v->type == TOML_INTEGER || v->type == TOML_FLOAT) {
            snprintf(num, sizeof num, "%.17g",
                     v->type == TOML_INTEGER ? (double)v->u.integer : v->u.fp);
            return set_text(c, k, num, why, why_len);
        }
        if (v->type != TOML_STRING)
            break;
        return set_text(c, k, v->u.str.ptr, why, why_len);
    case CT_BOOL:
        if (v->type != TOML_BOOL)
            break;
        *(int *)field(c, k) = v->u.boolean;
        return NULL;
    case CT_STRING:
    case CT_PATH:
    case CT_ENUM:
        if (v->type != TOML_STRING)
            break;
        return set_text(c, k, v->u.str.ptr, why, why_len);
    }
    snprintf(why, why_len, "expected %s%s%s, got %s", type_doc(k),
             k->type == CT_ENUM ? " " : "", k->type == CT_ENUM ? k->choices : "",
             toml_type_name(v->type));
    return why;
}

static int check_boot(const struct toml_value *boot, const char *path, char *err,
                      size_t err_len)
{
    for (size_t i = 0; i < boot->u.table.len; i++) {
        const struct toml_kv *kv = &boot->u.table.items[i];
        if (strcmp(kv->key, "sequence") != 0) {
            snprintf(err, err_len, "%s:%d: [boot] unknown key \"%s\" (expected [[boot.sequence]])",
                     path, kv->value->line, kv->key);
            return -1;
        }
        if (kv->value->type != TOML_ARRAY) {
            snprintf(err, err_len, "%s:%d: [boot] sequence: expected an array of tables "
                     "([[boot.sequence]]), got %s", path, kv->value->line,
                     toml_type_name(kv->value->type));
            return -1;
        }
        for (size_t s = 0; s < kv->value->u.array.len; s++) {
            const struct toml_value *st = kv->value->u.array.items[s];
            if (st->type != TOML_TABLE) {
                snprintf(err, err_len, "%s:%d: boot.sequence[%zu]: expected a table, got %s",
                         path, st->line, s + 1, toml_type_name(st->type));
                return -1;
            }
            if (!toml_get(st, "name") || toml_get(st, "name")->type != TOML_STRING ||
                !toml_get(st, "services") || toml_get(st, "services")->type != TOML_ARRAY) {
                snprintf(err, err_len, "%s:%d: boot.sequence[%zu]: needs name (a string) and "
                         "services (a list of service names)", path, st->line, s + 1);
                return -1;
            }
            for (size_t j = 0; j < st->u.table.len; j++) {
                const struct toml_kv *f = &st->u.table.items[j];
                const struct toml_value *fv = f->value;
                int ok;
                double d;
                if (strcmp(f->key, "name") == 0)
                    ok = fv->type == TOML_STRING;
                else if (strcmp(f->key, "blocking") == 0)
                    ok = fv->type == TOML_BOOL;
                else if (strcmp(f->key, "timeout") == 0)
                    ok = (fv->type == TOML_STRING &&
                          util_parse_duration(fv->u.str.ptr, &d) == 0) ||
                         fv->type == TOML_INTEGER;
                else if (strcmp(f->key, "services") == 0) {
                    ok = 1;
                    for (size_t n = 0; n < fv->u.array.len; n++)
                        ok = ok && fv->u.array.items[n]->type == TOML_STRING;
                } else {
                    snprintf(err, err_len, "%s:%d: boot.sequence[%zu]: unknown key \"%s\" "
                             "(expected name, services, timeout, blocking)", path, fv->line,
                             s + 1, f->key);
                    return -1;
                }
                if (!ok) {
                    snprintf(err, err_len, "%s:%d: boot.sequence[%zu].%s: wrong type %s "
                             "(name: string, services: list of strings, timeout: duration, "
                             "blocking: boolean)", path, fv->line, s + 1, f->key,
                             toml_type_name(fv->type));
                    return -1;
                }
            }
        }
    }
    return 0;
}

struct config *config_load(const char *path, char *err, size_t err_len)
{
    size_t len;
    char *text = util_read_file(path, &len);
    if (!text) {
        snprintf(err, err_len, "%s: cannot read the config: %s", path, strerror(errno));
        return NULL;
    }
    struct config *c = config_parse(text, len, path, err, err_len);
    free(text);
    return c;
}

struct config *config_parse(const char *text, size_t len, const char *path, char *err,
                            size_t err_len)
{
    struct toml_value *root = toml_parse(text, len, path, err, err_len);
    if (!root)
        return NULL;

    struct config *c = calloc(1, sizeof *c);
    c->path = util_strdup(path);
    c->tree = root;
    char why[512], hint[64];

    for (size_t i = 0; i < root->u.table.len; i++) {
        const struct toml_kv *kv = &root->u.table.items[i];
        size_t s;
        for (s = 0; sections[s]; s++)
            if (strcmp(kv->key, sections[s]) == 0)
                break;
        if (!sections[s]) {
            suggest(hint, sizeof hint, kv->key, NULL);
            snprintf(err, err_len, "%s:%d: unknown %s \"%s\"%s", path, kv->value->line,
                     kv->value->type == TOML_TABLE ? "section" : "key", kv->key, hint);
            goto fail;
        }
        if (kv->value->type != TOML_TABLE) {
            snprintf(err, err_len, "%s:%d: \"%s\" must be a section ([%s]), got %s", path,
                     kv->value->line, kv->key, kv->key, toml_type_name(kv->value->type));
            goto fail;
        }
        if (strcmp(kv->key, "boot") == 0) {
            if (check_boot(kv->value, path, err, err_len))
                goto fail;
            continue;
        }
    }
    for (size_t i = 0; i < root->u.table.len; i++) {
        const struct toml_kv *sec = &root->u.table.items[i];
        if (strcmp(sec->key, "boot") == 0)
            continue;
        for (size_t j = 0; j < sec->value->u.table.len; j++) {
            const struct toml_kv *kv = &sec->value->u.table.items[j];
            size_t k;
            for (k = 0; k < NKEYS; k++)
                if (strcmp(schema[k].section, sec->key) == 0 &&
                    strcmp(schema[k].name, kv->key) == 0)
                    break;
            if (k == NKEYS) {
                suggest(hint, sizeof hint, kv->key, sec->key);
                snprintf(err, err_len, "%s:%d: [%s] unknown key \"%s\"%s", path,
                         kv->value->line, sec->key, kv->key, hint);
                goto fail;
            }
        }
    }
    /* Values in schema order, so that {data_dir} in later values is known. */
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &schema[i];
        const struct toml_value *sec = toml_get(root, k->section);
        const struct toml_value *v = sec ? toml_get(sec, k->name) : NULL;
        if (v && set_value(c, k, v, why, sizeof why)) {
            snprintf(err, err_len, "%s:%d: [%s] %s: %s", path, v->line, k->section, k->name,
                     why);
            goto fail;
        }
        if (!v && k->def && set_text(c, k, k->def, why, sizeof why)) {
            snprintf(err, err_len, "%s: default of [%s] %s: %s", path, k->section, k->name,
                     why);
            goto fail;
        }
    }
    if ((c->tls_cert == NULL) != (c->tls_key == NULL)) {
        snprintf(err, err_len, "%s: [api] tls_cert and tls_key go together: set both or "
                 "neither", path);
        goto fail;
    }
    if (c->client_ca && !c->tls_cert) {
        snprintf(err, err_len, "%s: [api] client_ca needs tls_cert and tls_key", path);
        goto fail;
    }
    return c;
fail:
    config_free(c);
    return NULL;
}

void config_free(struct config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < NKEYS; i++) {
        void *f = field(c, &schema[i]);
        switch (schema[i].type) {
        case CT_STRING:
        case CT_PATH:
        case CT_ENUM:
            free(*(char **)f);
            break;
        case CT_STRINGS:
            free_strings(*(char ***)f);
            break;
        default:
            break;
        }
    }
    toml_free(c->tree);
    free(c->path);
    free(c);
}

void config_push(lua_State *L, const struct config *c)
{
    lua_newtable(L);
    lua_pushstring(L, c->path);
    lua_setfield(L, -2, "path");
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &schema[i];
        lua_getfield(L, -1, k->section);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_newtable(L);
            lua_pushvalue(L, -1);
            lua_setfield(L, -3, k->section);
        }
        void *f = field((struct config *)c, k);
        switch (k->type) {
        case CT_STRING:
        case CT_PATH:
        case CT_ENUM:
            if (*(char **)f)
                lua_pushstring(L, *(char **)f);
            else
                lua_pushnil(L);
            break;
        case CT_STRINGS: {
            char **v = *(char ***)f;
            lua_newtable(L);
            for (int n = 0; v && v[n]; n++) {
                lua_pushstring(L, v[n]);
                lua_rawseti(L, -2, n + 1);
            }
            break;
        }
        case CT_INT:
            lua_pushnumber(L, (lua_Number) * (int64_t *)f);
            break;
        case CT_SIZE:
            lua_pushnumber(L, (lua_Number) * (uint64_t *)f);
            break;
        case CT_FLOAT:
        case CT_DURATION:
            lua_pushnumber(L, *(double *)f);
            break;
        case CT_BOOL:
            lua_pushboolean(L, *(int *)f);
            break;
        }
        lua_setfield(L, -2, k->name);
        lua_pop(L, 1);
    }
    /* [[boot.sequence]], already checked, with its defaults. */
    lua_newtable(L);
    const struct toml_value *boot = toml_get(c->tree, "boot");
    const struct toml_value *seq = boot ? toml_get(boot, "sequence") : NULL;
    for (size_t i = 0; seq && i < seq->u.array.len; i++) {
        const struct toml_value *st = seq->u.array.items[i];
        toml_push(L, st);
        lua_getfield(L, -1, "blocking");
        if (lua_isnil(L, -1)) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -3, "blocking");
        }
        lua_pop(L, 1);
        const struct toml_value *to = toml_get(st, "timeout");
        double d = 300;
        if (to && to->type == TOML_STRING)
            util_parse_duration(to->u.str.ptr, &d);
        else if (to && to->type == TOML_INTEGER)
            d = (double)to->u.integer;
        lua_pushnumber(L, d);
        lua_setfield(L, -2, "timeout");
        lua_rawseti(L, -2, (int)i + 1);
    }
    lua_newtable(L);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "sequence");
    lua_setfield(L, -3, "boot");
    lua_pop(L, 1);
}

void config_write_doc(FILE *f)
{
    const char *section = "";
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &schema[i];
        if (strcmp(section, k->section) != 0) {
            section = k->section;
            fprintf(f, "\n## [%s]\n\n| key | type | default | meaning |\n|---|---|---|---|\n",
                    section);
        }
        fprintf(f, "| `%s` | %s%s%s | %s%s%s | %s |\n", k->name, type_doc(k),
                k->choices ? " " : "", k->choices ? k->choices : "",
                k->def ? "`" : "", k->def ? (*k->def ? k->def : "(empty)") : "(unset)",
                k->def ? "`" : "", k->doc);
    }
}
