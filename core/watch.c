/* watch.c: uv_fs_event watches on the agent's directories, debounced into
 * one call of mcp.agent.on_change.
 *
 * inotify watches one directory, not a tree, so each root's subdirectories
 * get a watch of their own: made when the root is added, and when a new
 * subdirectory appears (its files are reported too, since they may have
 * been written before its watch existed). Editors that save by renaming a
 * new file over the old one (vim) produce a rename event for the name,
 * which is reported like a write. Names an editor or the agent uses for
 * scratch files (".name", "name~", "#name#", vim's "4913") are ignored, and
 * so are hidden directories. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>

#include "agent.h"
#include "log.h"
#include "watch.h"

#define WATCH_RETRY_MS 2000
#define WATCH_DEFAULT_DEBOUNCE_MS 200
#define WATCH_MAX_DEPTH 16
#define WATCH_MAX_DIRS 4096         /* per root: inotify watches are a per-user limit */
#define WATCH_MAX_PENDING 1024      /* more changes than this in one batch are one reload anyway */

struct watch;
struct watch_root;

struct watch_dir {
    uv_fs_event_t ev;
    struct watch *w;
    struct watch_root *root;        /* valid while the watch is open */
    struct watch_dir *next;         /* in its root's list */
    int depth;
    char path[];
};

struct watch_root {
    struct watch_root *next;
    struct watch_dir *dirs;
    int ndirs;
    int present;                    /* exists and is watched */
    char path[];
};

struct watch {
    struct agent *agent;
    uv_timer_t debounce, retry;
    struct watch_root *roots;
    char **pending;
    size_t npending, cap;
    uint64_t first_ms;              /* when the oldest pending change came */
    uint64_t debounce_ms;
    struct task *running;           /* the on_change task in flight, if any */
    int handles;                    /* open handles; the struct goes with the last */
    int closing;
};

static void watch_maybe_free(struct watch *w)
{
    if (w->closing && w->handles == 0)
        free(w);
}

static void watch_timer_closed(uv_handle_t *h)
{
    struct watch *w = h->data;
    w->handles--;
    watch_maybe_free(w);
}

static void watch_dir_closed(uv_handle_t *h)
{
    struct watch_dir *d = h->data;
    struct watch *w = d->w;
    free(d);
    w->handles--;
    watch_maybe_free(w);
}

/* Scratch names of editors and of mcp.fs's atomic writes. */
static int watch_ignored(const char *name)
{
    size_t n = strlen(name);
    return name[0] == '.' || name[n - 1] == '~' || (name[0] == '#' && name[n - 1] == '#') ||
           strcmp(name, "4913") == 0;
}

static void watch_clear_pending(struct watch *w)
{
    for (size_t i = 0; i < w->npending; i++)
        free(w->pending[i]);
    w->npending = 0;
}

static void watch_on_debounce(uv_timer_t *h);

/* Arms the debounce timer: `debounce` after the last change, but no later
 * than ten debounces after the first, so a steady trickle still lands. */
static void watch_schedule(struct watch *w)
{
    if (w->closing || w->running || !w->npending)
        return;
    uint64_t now = uv_now(w->debounce.loop);
    uint64_t due = now + w->debounce_ms;
    uint64_t latest = w->first_ms + 10 * w->debounce_ms;
    if (due > latest)
        due = latest > now ? latest : now;
    uv_timer_start(&w->debounce, watch_on_debounce, due - now, 0);
}

static void watch_note(struct watch *w, const char *path)
{
    if (w->closing)
        return;
    size_t i;
    for (i = 0; i < w->npending; i++)
        if (strcmp(w->pending[i], path) == 0)
            break;
    if (i == w->npending && w->npending < WATCH_MAX_PENDING) {
        if (w->npending == w->cap) {
            size_t cap = w->cap ? w->cap * 2 : 16;
            char **np = realloc(w->pending, cap * sizeof *np);
            if (!np)
                return;
            w->pending = np;
            w->cap = cap;
        }
        char *copy = strdup(path);
        if (!copy)
            return;
        if (w->npending == 0)
            w->first_ms = uv_now(w->debounce.loop);
        w->pending[w->npending++] = copy;
    }
    watch_schedule(w);
}

static void watch_on_event(uv_fs_event_t *h, const char *filename, int events, int status);

static int watch_is_watched(struct watch_root *r, const char *path)
{
    for (struct watch_dir *d = r->dirs; d; d = d->next)
        if (strcmp(d->path, path) == 0)
            return 1;
    return 0;
}

/* Starts a watch on one directory of root r. Returns 0 or a libuv error. */
static int watch_start_dir(struct watch *w, struct watch_root *r, const char *path, int depth)
{
    if (watch_is_watched(r, path))
        return 0;
    if (r->ndirs >= WATCH_MAX_DIRS) {
        log_warn("watch %s: more than %d directories; %s and others are not watched", r->path,
                 WATCH_MAX_DIRS, path);
        return 0;
    }
    size_t len = strlen(path);
    struct watch_dir *d = malloc(sizeof *d + len + 1);
    if (!d)
        return UV_ENOMEM;
    memcpy(d->path, path, len + 1);
    d->w = w;
    d->root = r;
    d->depth = depth;
    uv_fs_event_init(w->agent->loop, &d->ev);
    d->ev.data = d;
    w->handles++;
    int rc = uv_fs_event_start(&d->ev, watch_on_event, path, 0);
    if (rc != 0) {
        uv_close((uv_handle_t *)&d->ev, watch_dir_closed);
        return rc;
    }
    /* A watch alone does not keep the loop running. */
    uv_unref((uv_handle_t *)&d->ev);
    d->next = r->dirs;
    r->dirs = d;
    r->ndirs++;
    return 0;
}

/* Watches path and the directories under it; with report, notes every
 * file found (they may predate the watch). Returns 0 or a libuv error for
 * path itself; failures below are logged. */
static int watch_scan(struct watch *w, struct watch_root *r, const char *path, int depth,
                      int report)
{
    int rc = watch_start_dir(w, r, path, depth);
    if (rc != 0)
        return rc;
    DIR *dp = opendir(path);
    if (!dp)
        return 0;
    struct dirent *de;
    while ((de = readdir(dp))) {
        if (watch_ignored(de->d_name))
            continue;       /* also ".", ".." and hidden directories */
        char child[PATH_MAX];
        if ((size_t)snprintf(child, sizeof child, "%s/%s", path, de->d_name) >= sizeof child)
            continue;
        int is_dir = de->d_type == DT_DIR;
        if (de->d_type == DT_UNKNOWN) {
            struct stat st;
            is_dir = lstat(child, &st) == 0 && S_ISDIR(st.st_mode);
        }
        if (is_dir && depth < WATCH_MAX_DEPTH) {
            if (!watch_is_watched(r, child)) {
                int crc = watch_scan(w, r, child, depth + 1, report);
                if (crc != 0)
                    log_warn("watch %s: %s", child, uv_strerror(crc));
            }
        } else if (!is_dir && report) {
            watch_note(w, child);
        }
    }
    closedir(dp);
    return 0;
}

static void watch_on_retry(uv_timer_t *h);

static void watch_want_retry(struct watch *w)
{
    if (!w->closing && !uv_is_active((uv_handle_t *)&w->retry))
        uv_timer_start(&w->retry, watch_on_retry, WATCH_RETRY_MS, WATCH_RETRY_MS);
}

/* Stops the watches on path and everything under it (a directory deleted
 * or moved away). When that is the root, the root waits to reappear. */
static void watch_drop_tree(struct watch *w, struct watch_root *r, const char *path)
{
    size_t len = strlen(path);
    struct watch_dir **pp = &r->dirs;
    while (*pp) {
        struct watch_dir *d = *pp;
        if (strncmp(d->path, path, len) == 0 && (d->path[len] == 0 || d->path[len] == '/')) {
            *pp = d->next;
            r->ndirs--;
            uv_close((uv_handle_t *)&d->ev, watch_dir_closed);
        } else {
            pp = &d->next;
        }
    }
    if (strcmp(path, r->path) == 0 || r->ndirs == 0) {
        r->present = 0;
        watch_want_retry(w);
    }
}

static void watch_on_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    (void)events;
    struct watch_dir *d = h->data;
    struct watch *w = d->w;
    if (w->closing)
        return;
    struct watch_root *r = d->root;
    if (status < 0) {
        log_warn("watch %s: %s", d->path, uv_strerror(status));
        return;
    }
    struct stat st;
    if (stat(d->path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        /* This directory itself was deleted or moved away. */
        char gone[PATH_MAX];
        snprintf(gone, sizeof gone, "%s", d->path);
        watch_note(w, gone);
        watch_drop_tree(w, r, gone);
        return;
    }
    if (!filename || !*filename) {
        watch_note(w, d->path);
        return;
    }
    if (watch_ignored(filename))
        return;
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", d->path, filename) >= sizeof path)
        return;
    struct stat cst;
    if (lstat(path, &cst) == 0) {
        if (S_ISDIR(cst.st_mode) && d->depth < WATCH_MAX_DEPTH && !watch_is_watched(r, path)) {
            int rc = watch_scan(w, r, path, d->depth + 1, 1);
            if (rc != 0)
                log_warn("watch %s: %s", path, uv_strerror(rc));
        }
    } else {
        /* An event on the directory itself carries its own name (libuv
         * passes the basename of the watched path): report the directory. */
        const char *base = strrchr(d->path, '/');
        base = base ? base + 1 : d->path;
        if (strcmp(base, filename) == 0) {
            watch_note(w, d->path);
            return;
        }
        watch_drop_tree(w, r, path);    /* a subdirectory deleted or moved away */
    }
    watch_note(w, path);
}

static void watch_on_retry(uv_timer_t *h)
{
    struct watch *w = h->data;
    int missing = 0;
    for (struct watch_root *r = w->roots; r; r = r->next) {
        if (r->present)
            continue;
        struct stat st;
        if (stat(r->path, &st) != 0 || !S_ISDIR(st.st_mode)) {
            missing++;
            continue;
        }
        int rc = watch_scan(w, r, r->path, 0, 1);
        if (rc != 0) {
            log_warn("watch %s: %s", r->path, uv_strerror(rc));
            missing++;
            continue;
        }
        r->present = 1;
        log_info("watch %s: the directory appeared; watching it", r->path);
        watch_note(w, r->path);
    }
    if (!missing)
        uv_timer_stop(h);
}

static void watch_task_done(struct task *t, int ok, void *ud)
{
    (void)ok;
    struct agent *a = ud;
    struct watch *w = a->watch;
    if (!w || w->running != t)
        return;         /* the watcher it belonged to is closed */
    w->running = NULL;
    if (w->npending) {
        /* Changes that came while it ran: a full debounce from now. */
        w->first_ms = uv_now(w->debounce.loop);
        watch_schedule(w);
    }
}

static int watch_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* In a protected call (require, a metatable or memory may raise): spawns
 * mcp.agent.on_change(paths) as a task. Returns whether there was one. */
static int watch_deliver(lua_State *L)
{
    struct watch *w = lua_touserdata(L, 1);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "mcp.agent");
    lua_call(L, 1, 1);
    if (lua_istable(L, -1))
        lua_getfield(L, -1, "on_change");
    else
        lua_pushnil(L);
    if (!lua_isfunction(L, -1)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    lua_createtable(L, (int)w->npending, 0);
    for (size_t i = 0; i < w->npending; i++) {
        lua_pushstring(L, w->pending[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
    w->running = task_spawn(&w->agent->rt, L, 1, "agent.on_change", NULL, watch_task_done,
                            w->agent);
    lua_pushboolean(L, 1);
    return 1;
}

/* Delivers the pending changes: mcp.agent.on_change(sorted paths), as a task. */
static void watch_flush(struct watch *w)
{
    lua_State *L = w->agent->rt.L;
    if (!w->npending || w->running || w->closing)
        return;
    if (!L || !lua_checkstack(L, 8)) {
        watch_clear_pending(w);
        return;
    }
    qsort(w->pending, w->npending, sizeof *w->pending, watch_cmp);
    log_debug("watch: %zu change(s), first %s", w->npending, w->pending[0]);
    int top = lua_gettop(L);
    lua_pushcfunction(L, watch_deliver);
    lua_pushlightuserdata(L, w);
    if (runtime_pcall(L, 1, 1, "watch: mcp.agent.on_change") != 0)
        log_warn("watch: %zu change(s) not delivered", w->npending);
    else if (!lua_toboolean(L, -1))
        log_debug("watch: mcp.agent has no on_change; %zu change(s) dropped", w->npending);
    watch_clear_pending(w);
    lua_settop(L, top);
}

static void watch_on_debounce(uv_timer_t *h)
{
    watch_flush(h->data);
}

struct watch *watch_open(struct agent *a)
{
    if (a->watch)
        return a->watch;
    struct watch *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->agent = a;
    w->debounce_ms = WATCH_DEFAULT_DEBOUNCE_MS;
    uv_timer_init(a->loop, &w->debounce);
    uv_timer_init(a->loop, &w->retry);
    w->debounce.data = w->retry.data = w;
    uv_unref((uv_handle_t *)&w->retry);
    w->handles = 2;
    a->watch = w;
    return w;
}

int watch_agent_open(struct agent *a)
{
    if (!a->config)
        return 0;
    struct watch *w = watch_open(a);
    if (!w)
        return -1;
    char lua_dir[PATH_MAX], shipped[PATH_MAX];
    snprintf(lua_dir, sizeof lua_dir, "%s/lua", a->config->lib_dir);
    snprintf(shipped, sizeof shipped, "%s/policies", a->config->lib_dir);
    const char *dirs[] = { a->config->services_dir, a->config->policies_dir, lua_dir, shipped };
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        char err[512];
        if (!dirs[i] || !*dirs[i])
            continue;
        int rc = watch_add(w, dirs[i], err, sizeof err);
        if (rc < 0)
            log_warn("watch %s (changes there need a SIGHUP or POST /v1/reload)", err);
        else if (rc == 0)
            log_info("watch %s: does not exist yet; looking for it every %d s", dirs[i],
                     WATCH_RETRY_MS / 1000);
    }
    return 0;
}

static void watch_root_free(struct watch *w, struct watch_root *r)
{
    while (r->dirs) {
        struct watch_dir *d = r->dirs;
        r->dirs = d->next;
        uv_close((uv_handle_t *)&d->ev, watch_dir_closed);
    }
    (void)w;
    free(r);
}

void watch_close(struct agent *a)
{
    struct watch *w = a->watch;
    if (!w)
        return;
    a->watch = NULL;
    w->closing = 1;
    uv_close((uv_handle_t *)&w->debounce, watch_timer_closed);
    uv_close((uv_handle_t *)&w->retry, watch_timer_closed);
    while (w->roots) {
        struct watch_root *r = w->roots;
        w->roots = r->next;
        watch_root_free(w, r);
    }
    watch_clear_pending(w);
    free(w->pending);
    w->pending = NULL;
}

/* dir without trailing slashes ("/" stays "/"), into buf. */
static int watch_normalize(const char *dir, char *buf, size_t cap)
{
    size_t len = strlen(dir);
    if (len == 0 || len >= cap)
        return -1;
    memcpy(buf, dir, len + 1);
    while (len > 1 && buf[len - 1] == '/')
        buf[--len] = 0;
    return 0;
}

int watch_add(struct watch *w, const char *dir, char *err, size_t err_len)
{
    char path[PATH_MAX];
    if (watch_normalize(dir, path, sizeof path) != 0) {
        snprintf(err, err_len, "\"%s\": not a usable directory path", dir);
        return -1;
    }
    for (struct watch_root *r = w->roots; r; r = r->next)
        if (strcmp(r->path, path) == 0)
            return r->present;
    struct stat st;
    int exists = stat(path, &st) == 0;
    if (!exists && errno != ENOENT) {
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (exists && !S_ISDIR(st.st_mode)) {
        snprintf(err, err_len, "%s: not a directory", path);
        return -1;
    }
    size_t len = strlen(path);
    struct watch_root *r = calloc(1, sizeof *r + len + 1);
    if (!r) {
        snprintf(err, err_len, "%s: out of memory", path);
        return -1;
    }
    memcpy(r->path, path, len + 1);
    if (exists) {
        int rc = watch_scan(w, r, path, 0, 0);
        if (rc != 0) {
            if (rc == UV_ENOSPC)
                snprintf(err, err_len, "%s: the inotify watch limit is reached "
                                       "(sysctl fs.inotify.max_user_watches)", path);
            else
                snprintf(err, err_len, "%s: %s", path, uv_strerror(rc));
            watch_root_free(w, r);
            return -1;
        }
        r->present = 1;
    }
    struct watch_root **pp = &w->roots;
    while (*pp)
        pp = &(*pp)->next;
    *pp = r;
    if (!exists)
        watch_want_retry(w);
    return r->present;
}

int watch_remove(struct watch *w, const char *dir)
{
    char path[PATH_MAX];
    if (watch_normalize(dir, path, sizeof path) != 0)
        return -1;
    for (struct watch_root **pp = &w->roots; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->path, path) == 0) {
            struct watch_root *r = *pp;
            *pp = r->next;
            watch_root_free(w, r);
            return 0;
        }
    }
    return -1;
}

const char *watch_root_info(struct watch *w, size_t i, int *watching, int *dirs)
{
    struct watch_root *r = w->roots;
    while (r && i--)
        r = r->next;
    if (!r)
        return NULL;
    *watching = r->present;
    *dirs = r->ndirs;
    return r->path;
}

void watch_set_debounce(struct watch *w, double seconds)
{
    w->debounce_ms = (uint64_t)(seconds * 1000 + 0.5);
}

double watch_debounce(struct watch *w)
{
    return (double)w->debounce_ms / 1000.0;
}
