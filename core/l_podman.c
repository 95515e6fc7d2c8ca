/* l_podman.c: mcp.podman, the Lua face of core/podman.c.
 *
 * Every call yields the calling task and resumes it with the result, or with
 * nil, "podman.OP \"TARGET\": STATUS: Podman's message", STATUS (for an HTTP
 * error) or nil, "podman.OP \"TARGET\": what failed" (transport, timeout).
 * Bad arguments and unknown option keys raise; a malformed container spec is
 * data, not code, and comes back as nil, err with the path of the bad field.
 *
 * Streams (logs with follow, event subscriptions) are userdata that own
 * their queue; the request behind one is cancelled when it is closed or
 * collected. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "bindings.h"
#include "curlm.h"
#include "l_json.h"
#include "log.h"
#include "podman.h"
#include "podman_parse.h"
#include "util.h"

#define LOGSTREAM_MT "mcp.podman.logs"
#define SUB_MT "mcp.podman.subscription"
#define LOGS_MAX_BYTES ((size_t)64 << 20)   /* non-follow logs kept in memory */
#define EXEC_MAX_BYTES ((size_t)16 << 20)   /* per stream */
#define QUEUE_HIGH ((size_t)1 << 20)        /* a follow stream stops reading above */
#define QUEUE_LOW ((size_t)256 << 10)       /* and reads again below */
#define SUB_QUEUE_MAX 4096                  /* events kept for a slow subscriber */
#define PULL_TIMEOUT 600.0
#define FOLLOW_GRACE_MS 500

/* ---- small helpers ---- */

static struct podman *client(lua_State *L, const char *fn)
{
    struct podman *p = podman_of(agent_from_lua(L));
    if (!p)
        luaL_error(L, "%s: no Podman socket configured (the agent's [podman] socket, or "
                      "mcp.podman.connect(path) first)", fn);
    return p;
}

/* A query string, values percent-encoded. */
struct qs {
    char buf[3072];
    size_t len;
    int bad;
};

static void qs_add(struct qs *q, const char *key, const char *val)
{
    char *e = podman_escape(val);
    if (!e) {
        q->bad = 1;
        return;
    }
    int n = snprintf(q->buf + q->len, sizeof q->buf - q->len, "%c%s=%s", q->len ? '&' : '?',
                     key, e);
    curl_free(e);
    if (n < 0 || (size_t)n >= sizeof q->buf - q->len)
        q->bad = 1;
    else
        q->len += (size_t)n;
}

static void qs_bool(struct qs *q, const char *key, int v)
{
    qs_add(q, key, v ? "true" : "false");
}

static void qs_int(struct qs *q, const char *key, long long v)
{
    char n[32];
    snprintf(n, sizeof n, "%lld", v);
    qs_add(q, key, n);
}

/* "/PRE/<escaped name>/POST" + query into out. Returns 0 or -1. */
static int make_path(char *out, size_t len, const char *pre, const char *name,
                     const char *post, const struct qs *q)
{
    char *e = NULL;
    if (name && !(e = podman_escape(name)))
        return -1;
    int n = snprintf(out, len, "%s%s%s%s%s", pre, e ? "/" : "", e ? e : "", post ? post : "",
                     q ? q->buf : "");
    curl_free(e);
    return n < 0 || (size_t)n >= len || (q && q->bad) ? -1 : 0;
}

/* Converts the "filters" option (a table of string or list of strings) to
 * the JSON Podman reads; raises on a malformed one. Caller frees. */
static char *filters_json(lua_State *L, int idx, const char *fn)
{
    if (lua_isnoneornil(L, idx))
        return NULL;
    if (lua_type(L, idx) != LUA_TTABLE)
        luaL_error(L, "%s: option filters: expected a table like {label = {\"k=v\"}}, got %s",
                   fn, luaL_typename(L, idx));
    json_t *obj = json_object();
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            json_decref(obj);
            luaL_error(L, "%s: option filters: keys must be strings", fn);
        }
        const char *key = lua_tostring(L, -2);
        json_t *arr = json_array();
        if (lua_type(L, -1) == LUA_TSTRING) {
            json_array_append_new(arr, json_string(lua_tostring(L, -1)));
        } else if (lua_type(L, -1) == LUA_TTABLE) {
            size_t n = lua_objlen(L, -1);
            for (size_t i = 1; i <= n; i++) {
                lua_rawgeti(L, -1, (int)i);
                if (lua_type(L, -1) != LUA_TSTRING) {
                    json_decref(arr);
                    json_decref(obj);
                    luaL_error(L, "%s: option filters.%s[%d]: expected a string, got %s", fn,
                               key, (int)i, luaL_typename(L, -1));
                }
                json_array_append_new(arr, json_string(lua_tostring(L, -1)));
                lua_pop(L, 1);
            }
        } else {
            json_decref(arr);
            json_decref(obj);
            luaL_error(L, "%s: option filters.%s: expected a string or a list of strings, "
                          "got %s", fn, key, luaL_typename(L, -1));
        }
        json_object_set_new(obj, key, arr);
        lua_pop(L, 1);
    }
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    return s;
}

/* Pushes nil, "WHAT: [STATUS: ]MSG"[, STATUS]; returns how many. */
static int push_error(lua_State *T, const char *what, long status, const char *msg)
{
    lua_pushnil(T);
    if (status >= 400) {
        lua_pushfstring(T, "%s: %d: %s", what, (int)status, msg);
        lua_pushnumber(T, (lua_Number)status);
        return 3;
    }
    lua_pushfstring(T, "%s: %s", what, msg);
    return 2;
}

/* Frames split into lines, per stream; emit gets each complete line. */
struct framelines;
struct fl_ctx {
    struct framelines *fl;
    int stream;
};
struct framelines {
    struct pp_lines split[4];
    struct fl_ctx ctx[4];
    int (*emit)(void *ud, int stream, const char *line, size_t len);
    void *ud;
};

static int fl_line(void *ud, const char *line, size_t len)
{
    struct fl_ctx *c = ud;
    return c->fl->emit(c->fl->ud, c->stream, line, len);
}

static void fl_init(struct framelines *fl, int (*emit)(void *, int, const char *, size_t),
                    void *ud)
{
    for (int i = 0; i < 4; i++) {
        pp_lines_init(&fl->split[i], (size_t)1 << 20);
        fl->ctx[i].fl = fl;
        fl->ctx[i].stream = i;
    }
    fl->emit = emit;
    fl->ud = ud;
}

static int fl_feed(struct framelines *fl, int stream, const char *data, size_t len)
{
    stream &= 3;
    return pp_lines_feed(&fl->split[stream], data, len, fl_line, &fl->ctx[stream]);
}

static int fl_flush(struct framelines *fl)
{
    for (int i = 0; i < 4; i++) {
        int rc = pp_lines_flush(&fl->split[i], fl_line, &fl->ctx[i]);
        if (rc)
            return rc;
    }
    return 0;
}

static void fl_free(struct framelines *fl)
{
    for (int i = 0; i < 4; i++)
        pp_lines_free(&fl->split[i]);
}

/* A queue of lines tagged with their stream. */
struct lq_item {
    struct lq_item *next;
    int stream;
    size_t len;
    char data[];
};

struct lq {
    struct lq_item *head, *tail;
    size_t bytes, count;
};

static int lq_push(struct lq *q, int stream, const char *data, size_t len)
{
    struct lq_item *it = malloc(sizeof *it + len);
    if (!it)
        return -1;
    it->next = NULL;
    it->stream = stream;
    it->len = len;
    memcpy(it->data, data, len);
    if (q->tail)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    q->bytes += len;
    q->count++;
    return 0;
}

static struct lq_item *lq_pop(struct lq *q)
{
    struct lq_item *it = q->head;
    if (!it)
        return NULL;
    q->head = it->next;
    if (!q->head)
        q->tail = NULL;
    q->bytes -= it->len;
    q->count--;
    return it;
}

static void lq_clear(struct lq *q)
{
    struct lq_item *it;
    while ((it = lq_pop(q)))
        free(it);
}

static void push_line_item(lua_State *L, const struct lq_item *it)
{
    lua_createtable(L, 0, 2);
    lua_pushstring(L, pp_stream_name(it->stream));
    lua_setfield(L, -2, "stream");
    lua_pushlstring(L, it->data, it->len);
    lua_setfield(L, -2, "line");
}

static void handle_free(uv_handle_t *h)
{
    free(h);
}

static uv_timer_t *timer_new(struct agent *a, void *data)
{
    uv_timer_t *t = malloc(sizeof *t);
    if (!t)
        return NULL;
    uv_timer_init(a->loop, t);
    t->data = data;
    return t;
}

/* Arms a timer from the real time: uv_now() is only refreshed when the
 * loop turns, and Lua may have run (or the loop idled in a test) long
 * enough since for a timeout to fire at once. */
static void timer_arm(uv_timer_t *t, uv_timer_cb cb, uint64_t ms)
{
    uv_update_time(t->loop);
    uv_timer_start(t, cb, ms, 0);
}

static void timer_drop(uv_timer_t *t)
{
    if (t) {
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, handle_free);
    }
}

/* ---- one-shot operations ---- */

enum op_kind {
    K_TRUE,         /* any status below 400: true */
    K_JSON,         /* the decoded body */
    K_EXISTS,       /* 204: true, 404: false */
    K_NUMBER,       /* the body as a number (wait) */
    K_CREMOVE,      /* container remove report */
    K_LOGS,         /* frames to a list of lines */
    K_PULL,         /* JSON lines, progress, final result */
    K_EXEC,         /* create, start (frames), inspect */
};

struct op {
    enum op_kind kind;
    struct agent *a;
    struct podman *p;
    struct task *task;
    struct podman_call *call;
    char what[300];
    char stat[48];
    uint64_t t0;
    double timeout;

    /* K_LOGS */
    struct framelines fl;
    struct lq lines;
    int too_big;

    /* K_PULL */
    lua_State *cbL;             /* thread holding on_progress at index 1 */
    int cb_ref;
    int in_cb;                  /* on_progress runs now: a cancel only marks */
    int cancelled;
    json_t *pull_result;
    char *pull_error;

    /* K_EXEC */
    int step;
    char exec_id[80];
    char *out[2];
    size_t out_len[2], out_cap[2];
    int truncated;
    double deadline;            /* uv_hrtime seconds */
    uv_timer_t *retry;
};

static void op_free(struct op *op)
{
    if (op->kind == K_LOGS) {
        fl_free(&op->fl);
        lq_clear(&op->lines);
    }
    if (op->cbL)
        luaL_unref(op->a->rt.L, LUA_REGISTRYINDEX, op->cb_ref);
    json_decref(op->pull_result);
    free(op->pull_error);
    free(op->out[0]);
    free(op->out[1]);
    timer_drop(op->retry);
    free(op);
}

static void op_cancel(void *ud)
{
    struct op *op = ud;
    podman_call_cancel(op->call);
    op->call = NULL;
    if (op->in_cb) {
        op->cancelled = 1;      /* on_progress cancelled its own task: freed after it */
        return;
    }
    op_free(op);
}

static struct op *op_new(lua_State *L, enum op_kind kind, const char *name, const char *target)
{
    struct op *op = calloc(1, sizeof *op);
    if (!op)
        luaL_error(L, "mcp.podman.%s: out of memory", name);
    op->kind = kind;
    op->a = agent_from_lua(L);
    op->t0 = uv_hrtime();
    if (target)
        snprintf(op->what, sizeof op->what, "podman.%s \"%s\"", name, target);
    else
        snprintf(op->what, sizeof op->what, "podman.%s", name);
    snprintf(op->stat, sizeof op->stat, "podman.%s", name);
    return op;
}

/* Pushes the op's outcome on its task, frees it, resumes the task. */
static void op_resume(struct op *op, int nres, int ok)
{
    struct task *t = op->task;
    curlm_stat_record(podman_curlm(op->p), op->stat, (double)(uv_hrtime() - op->t0) / 1e9,
                      ok);
    op_free(op);
    task_resume(t, nres);
}

static void op_fail(struct op *op, long status, const char *msg)
{
    int n = push_error(task_thread(op->task), op->what, status, msg);
    op_resume(op, n, 0);
}

static int cremove_report(lua_State *T, json_t *v, char *err, size_t err_len)
{
    (void)T;
    size_t i;
    json_t *e;
    if (!json_is_array(v))
        return 0;
    json_array_foreach(v, i, e) {
        json_t *m = json_object_get(e, "Err");
        if (json_is_string(m) && json_string_length(m) > 0) {
            snprintf(err, err_len, "%s", json_string_value(m));
            return -1;
        }
    }
    return 0;
}

static void op_done(void *ud, const struct podman_reply *r)
{
    struct op *op = ud;
    op->call = NULL;
    lua_State *T = task_thread(op->task);
    if (r->error && !(op->kind == K_EXISTS && r->status == 404)) {
        op_fail(op, r->status, r->error);
        return;
    }
    char err[300];
    switch (op->kind) {
    case K_TRUE:
        lua_pushboolean(T, 1);
        break;
    case K_EXISTS:
        lua_pushboolean(T, r->status == 204 || r->status == 200);
        break;
    case K_JSON:
        if (r->len == 0) {
            lua_pushboolean(T, 1);
            break;
        }
        if (json_push_text(T, r->body, r->len, err, sizeof err) != 0) {
            char msg[400];
            snprintf(msg, sizeof msg, "Podman answered bad JSON: %s", err);
            op_fail(op, 0, msg);
            return;
        }
        break;
    case K_NUMBER: {
        char *end;
        double v = strtod(r->body, &end);
        while (*end == '\n' || *end == ' ' || *end == '\r')
            end++;
        if (end == r->body || *end) {
            op_fail(op, 0, "Podman answered something that is not a number");
            return;
        }
        lua_pushnumber(T, v);
        break;
    }
    case K_CREMOVE: {
        json_t *v = r->len ? json_loadb(r->body, r->len, 0, NULL) : NULL;
        int bad = cremove_report(T, v, err, sizeof err);
        json_decref(v);
        if (bad) {
            op_fail(op, 0, err);
            return;
        }
        lua_pushboolean(T, 1);
        break;
    }
    case K_LOGS: {
        if (op->too_big) {
            op_fail(op, 0, "more than 64 MiB of logs: use tail, since or follow");
            return;
        }
        fl_flush(&op->fl);
        lua_createtable(T, (int)op->lines.count, 0);
        int i = 1;
        struct lq_item *it;
        while ((it = lq_pop(&op->lines))) {
            push_line_item(T, it);
            lua_rawseti(T, -2, i++);
            free(it);
        }
        break;
    }
    default:
        lua_pushboolean(T, 1);
    }
    op_resume(op, 1, 1);
}

static const struct podman_handlers op_handlers = { NULL, NULL, NULL, op_done };

/* Starts the op's request and yields; on a refused start returns nil, err. */
static int op_start(lua_State *L, struct op *op, const char *method, const char *path,
                    const char *body, double timeout, enum podman_mode mode,
                    const struct podman_handlers *h)
{
    op->timeout = timeout;
    op->call = podman_call(op->p, method, path, body, timeout, mode, h ? h : &op_handlers, op);
    if (!op->call) {
        int n = push_error(L, op->what, 0, "cannot start a request (shutting down?)");
        op_free(op);
        return n;
    }
    return task_wait(L, op->task, op_cancel, op);
}

/* The common shape: NAME(target, opts) -> one request whose reply kind says
 * what to return. path is built by the caller. */
static int simple_op(lua_State *L, struct podman *p, struct task *t, enum op_kind kind,
                     const char *name, const char *target, const char *method,
                     const char *path, const char *body, double timeout)
{
    struct op *op = op_new(L, kind, name, target);
    op->p = p;
    op->task = t;
    return op_start(L, op, method, path, body, timeout, PODMAN_BODY, NULL);
}

static int path_error(lua_State *L, const char *op, const char *target)
{
    lua_pushnil(L);
    lua_pushfstring(L, "podman.%s \"%s\": name or options too long", op, target ? target : "");
    return 2;
}

/* ---- system ---- */

static const char *const timeout_opts[] = { "timeout", NULL };

/* mcp.podman.connect(socket_path [, {timeout}]) -> true */
static int l_podman_connect(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    static const char *const opts[] = { "timeout", NULL };
    bind_check_options(L, 2, "mcp.podman.connect", opts);
    double timeout = bind_opt_duration(L, 2, "timeout", 30, "mcp.podman.connect");
    struct agent *a = agent_from_lua(L);
    if (a->podman) {
        if (podman_set(a->podman, path, timeout) != 0)
            return luaL_error(L, "mcp.podman.connect: out of memory");
    } else {
        struct curlm *m = curlm_of(a);
        a->podman = m ? podman_new(m, a->loop, path, timeout) : NULL;
        if (!a->podman)
            return luaL_error(L, "mcp.podman.connect: cannot set up the client");
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* mcp.podman.socket() -> the socket path in use, or nil */
static int l_podman_socket(lua_State *L)
{
    struct podman *p = podman_of(agent_from_lua(L));
    if (!p)
        return 0;
    lua_pushstring(L, podman_socket(p));
    return 1;
}

static int sys_op(lua_State *L, const char *name, enum op_kind kind, const char *path)
{
    char fn[48];
    snprintf(fn, sizeof fn, "mcp.podman.%s", name);
    bind_check_options(L, 1, fn, timeout_opts);
    struct podman *p = client(L, fn);
    double timeout = bind_opt_duration(L, 1, "timeout", podman_timeout(p), fn);
    struct task *t = task_check(L, fn);
    return simple_op(L, p, t, kind, name, NULL, "GET", path, NULL, timeout);
}

/* mcp.podman.ping([{timeout}]) -> true */
static int l_podman_ping(lua_State *L) { return sys_op(L, "ping", K_TRUE, "/_ping"); }
/* mcp.podman.info([{timeout}]) -> table */
static int l_podman_info(lua_State *L) { return sys_op(L, "info", K_JSON, "/info"); }
/* mcp.podman.version([{timeout}]) -> table */
static int l_podman_version(lua_State *L) { return sys_op(L, "version", K_JSON, "/version"); }

/* ---- the container spec ---- */

struct conv {
    char *err;
    size_t err_len;
};

static json_t *conv_fail(struct conv *cv, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static json_t *conv_fail(struct conv *cv, const char *path, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(cv->err, cv->err_len, "%s: %s", path, msg);
    return NULL;
}

static const char *lua_shown(lua_State *L, int idx, char *buf, size_t len)
{
    if (lua_type(L, idx) == LUA_TSTRING)
        snprintf(buf, len, "\"%.60s\"", lua_tostring(L, idx));
    else if (lua_type(L, idx) == LUA_TNUMBER)
        snprintf(buf, len, "%.14g", lua_tonumber(L, idx));
    else
        snprintf(buf, len, "a %s", luaL_typename(L, idx));
    return buf;
}

/* Unknown keys of the table at idx are an error naming them and the
 * expected ones. Returns 0 or -1. */
static int conv_keys(lua_State *L, int idx, const char *const allowed[], const char *path,
                     struct conv *cv)
{
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        const char *key = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        int ok = 0;
        for (size_t i = 0; key && allowed[i]; i++)
            ok |= strcmp(key, allowed[i]) == 0;
        if (!ok) {
            char list[600] = "";
            size_t n = 0;
            for (size_t i = 0; allowed[i] && n < sizeof list; i++)
                n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "",
                                      allowed[i]);
            char shown[80];
            conv_fail(cv, path, "unknown key %s (expected one of: %s)",
                      lua_shown(L, -1, shown, sizeof shown), list);
            lua_pop(L, 1);
            return -1;
        }
    }
    return 0;
}

static json_t *conv_string(lua_State *L, int idx, const char *path, struct conv *cv)
{
    char shown[80];
    if (lua_type(L, idx) == LUA_TSTRING)
        return json_string(lua_tostring(L, idx));
    return conv_fail(cv, path, "expected a string, got %s", lua_shown(L, idx, shown,
                                                                      sizeof shown));
}

/* A string, or a number written as one (env values, labels). */
static json_t *conv_scalar(lua_State *L, int idx, const char *path, struct conv *cv)
{
    if (lua_type(L, idx) == LUA_TNUMBER) {
        char n[64];
        snprintf(n, sizeof n, "%.14g", lua_tonumber(L, idx));
        return json_string(n);
    }
    return conv_string(L, idx, path, cv);
}

static json_t *conv_int(lua_State *L, int idx, const char *path, long long lo, long long hi,
                        struct conv *cv)
{
    char shown[80];
    if (lua_type(L, idx) == LUA_TNUMBER) {
        double d = lua_tonumber(L, idx);
        if (d == (double)(long long)d && d >= (double)lo && d <= (double)hi)
            return json_integer((json_int_t)d);
    }
    return conv_fail(cv, path, "expected an integer from %lld to %lld, got %s", lo, hi,
                     lua_shown(L, idx, shown, sizeof shown));
}

static json_t *conv_string_list(lua_State *L, int idx, const char *path, struct conv *cv)
{
    char shown[80], sub[200];
    if (lua_type(L, idx) != LUA_TTABLE)
        return conv_fail(cv, path, "expected a list of strings, got %s",
                         lua_shown(L, idx, shown, sizeof shown));
    size_t n = lua_objlen(L, idx);
    size_t count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        count++;
    }
    if (count != n)
        return conv_fail(cv, path, "expected a list of strings, got a table with other keys");
    json_t *arr = json_array();
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, (int)i);
        snprintf(sub, sizeof sub, "%s[%d]", path, (int)i);
        json_t *v = conv_string(L, lua_gettop(L), sub, cv);
        lua_pop(L, 1);
        if (!v) {
            json_decref(arr);
            return NULL;
        }
        json_array_append_new(arr, v);
    }
    return arr;
}

static json_t *conv_string_map(lua_State *L, int idx, const char *path, struct conv *cv)
{
    char shown[80], sub[300];
    if (lua_type(L, idx) != LUA_TTABLE)
        return conv_fail(cv, path, "expected a table of strings by name, got %s",
                         lua_shown(L, idx, shown, sizeof shown));
    json_t *obj = json_object();
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_pop(L, 2);
            json_decref(obj);
            return conv_fail(cv, path, "keys must be strings");
        }
        snprintf(sub, sizeof sub, "%s.%s", path, lua_tostring(L, -2));
        json_t *v = conv_scalar(L, lua_gettop(L), sub, cv);
        if (!v) {
            lua_pop(L, 2);
            json_decref(obj);
            return NULL;
        }
        json_object_set_new(obj, lua_tostring(L, -2), v);
        lua_pop(L, 1);
    }
    return obj;
}

/* A list whose items are tables, each converted by item(). */
static json_t *conv_table_list(lua_State *L, int idx, const char *path, struct conv *cv,
                               json_t *(*item)(lua_State *, int, const char *, struct conv *))
{
    char shown[80], sub[200];
    if (lua_type(L, idx) != LUA_TTABLE)
        return conv_fail(cv, path, "expected a list of tables, got %s",
                         lua_shown(L, idx, shown, sizeof shown));
    json_t *arr = json_array();
    size_t n = lua_objlen(L, idx);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, (int)i);
        snprintf(sub, sizeof sub, "%s[%d]", path, (int)i);
        json_t *v = NULL;
        if (lua_type(L, -1) != LUA_TTABLE)
            conv_fail(cv, sub, "expected a table, got %s",
                      lua_shown(L, -1, shown, sizeof shown));
        else
            v = item(L, lua_gettop(L), sub, cv);
        lua_pop(L, 1);
        if (!v) {
            json_decref(arr);
            return NULL;
        }
        json_array_append_new(arr, v);
    }
    return arr;
}

/* Sets key of obj from field name of the table at idx through conv; absent
 * fields are skipped. Returns 0 or -1. */
typedef json_t *(*conv_fn)(lua_State *, int, const char *, struct conv *);

static int conv_field(lua_State *L, int idx, const char *name, const char *path, json_t *obj,
                      const char *key, conv_fn fn, struct conv *cv)
{
    char sub[300];
    lua_getfield(L, idx, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    snprintf(sub, sizeof sub, "%s.%s", path, name);
    json_t *v = fn(L, lua_gettop(L), sub, cv);
    lua_pop(L, 1);
    if (!v)
        return -1;
    json_object_set_new(obj, key, v);
    return 0;
}

static json_t *conv_port_num(lua_State *L, int idx, const char *path, struct conv *cv)
{
    return conv_int(L, idx, path, 0, 65535, cv);
}

static json_t *conv_cport(lua_State *L, int idx, const char *path, struct conv *cv)
{
    return conv_int(L, idx, path, 1, 65535, cv);
}

static json_t *conv_protocol(lua_State *L, int idx, const char *path, struct conv *cv)
{
    json_t *v = conv_string(L, idx, path, cv);
    const char *s = v ? json_string_value(v) : NULL;
    if (s && strcmp(s, "tcp") && strcmp(s, "udp") && strcmp(s, "sctp") &&
        strcmp(s, "tcp,udp") && strcmp(s, "udp,tcp")) {
        conv_fail(cv, path, "expected \"tcp\", \"udp\" or \"sctp\", got \"%s\"", s);
        json_decref(v);
        return NULL;
    }
    return v;
}

static json_t *conv_portmapping(lua_State *L, int idx, const char *path, struct conv *cv)
{
    static const char *const keys[] = { "container_port", "host_port", "host_ip", "protocol",
                                        "range", NULL };
    if (conv_keys(L, idx, keys, path, cv))
        return NULL;
    json_t *o = json_object();
    lua_getfield(L, idx, "container_port");
    int missing = lua_isnil(L, -1);
    lua_pop(L, 1);
    if (missing) {
        json_decref(o);
        return conv_fail(cv, path, "container_port is required");
    }
    if (conv_field(L, idx, "container_port", path, o, "container_port", conv_cport, cv) ||
        conv_field(L, idx, "host_port", path, o, "host_port", conv_port_num, cv) ||
        conv_field(L, idx, "host_ip", path, o, "host_ip", conv_string, cv) ||
        conv_field(L, idx, "protocol", path, o, "protocol", conv_protocol, cv) ||
        conv_field(L, idx, "range", path, o, "range", conv_port_num, cv)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *conv_mount(lua_State *L, int idx, const char *path, struct conv *cv)
{
    static const char *const keys[] = { "source", "destination", "options", "type", NULL };
    if (conv_keys(L, idx, keys, path, cv))
        return NULL;
    json_t *o = json_object();
    if (conv_field(L, idx, "destination", path, o, "destination", conv_string, cv) ||
        conv_field(L, idx, "source", path, o, "source", conv_string, cv) ||
        conv_field(L, idx, "options", path, o, "options", conv_string_list, cv) ||
        conv_field(L, idx, "type", path, o, "type", conv_string, cv)) {
        json_decref(o);
        return NULL;
    }
    if (!json_object_get(o, "destination")) {
        json_decref(o);
        return conv_fail(cv, path, "destination is required");
    }
    if (!json_object_get(o, "type"))
        json_object_set_new(o, "type", json_string("bind"));
    const char *type = json_string_value(json_object_get(o, "type"));
    if (strcmp(type, "bind") == 0 && !json_object_get(o, "source")) {
        json_decref(o);
        return conv_fail(cv, path, "source is required for a bind mount");
    }
    return o;
}

static json_t *conv_bool(lua_State *L, int idx, const char *path, struct conv *cv)
{
    char shown[80];
    if (lua_type(L, idx) == LUA_TBOOLEAN)
        return json_boolean(lua_toboolean(L, idx));
    return conv_fail(cv, path, "expected a boolean, got %s", lua_shown(L, idx, shown,
                                                                       sizeof shown));
}

static json_t *conv_user(lua_State *L, int idx, const char *path, struct conv *cv)
{
    return conv_scalar(L, idx, path, cv);
}

static json_t *conv_restart(lua_State *L, int idx, const char *path, struct conv *cv)
{
    json_t *v = conv_string(L, idx, path, cv);
    const char *s = v ? json_string_value(v) : NULL;
    if (s && strcmp(s, "no") && strcmp(s, "always") && strcmp(s, "on-failure") &&
        strcmp(s, "unless-stopped")) {
        conv_fail(cv, path, "expected \"no\", \"always\", \"on-failure\" or "
                            "\"unless-stopped\", got \"%s\"", s);
        json_decref(v);
        return NULL;
    }
    return v;
}

/* Seconds, as a number or a duration string; SpecGenerator wants whole seconds. */
static json_t *conv_seconds(lua_State *L, int idx, const char *path, struct conv *cv)
{
    char shown[80];
    double v = -1;
    if (lua_type(L, idx) == LUA_TNUMBER)
        v = lua_tonumber(L, idx);
    else if (lua_type(L, idx) == LUA_TSTRING && util_parse_duration(lua_tostring(L, idx), &v))
        v = -1;
    if (v < 0 || v > 1e9)
        return conv_fail(cv, path, "expected seconds (a number or a duration like \"10s\"), "
                                   "got %s", lua_shown(L, idx, shown, sizeof shown));
    return json_integer((json_int_t)(v + 0.999));
}

static int is_ns_mode(const char *s)
{
    static const char *const modes[] = { "host", "none", "bridge", "slirp4netns", "private",
                                         "pasta", "default", NULL };
    for (size_t i = 0; modes[i]; i++)
        if (strcmp(s, modes[i]) == 0)
            return 1;
    return 0;
}

/* netns as "mode", "ns:PATH", "container:ID" or {nsmode=, value=}. */
static json_t *conv_netns(lua_State *L, int idx, const char *path, struct conv *cv)
{
    char shown[80];
    if (lua_type(L, idx) == LUA_TTABLE) {
        static const char *const keys[] = { "nsmode", "value", NULL };
        if (conv_keys(L, idx, keys, path, cv))
            return NULL;
        json_t *o = json_object();
        if (conv_field(L, idx, "nsmode", path, o, "nsmode", conv_string, cv) ||
            conv_field(L, idx, "value", path, o, "value", conv_string, cv)) {
            json_decref(o);
            return NULL;
        }
        if (!json_object_get(o, "nsmode")) {
            json_decref(o);
            return conv_fail(cv, path, "nsmode is required");
        }
        return o;
    }
    if (lua_type(L, idx) != LUA_TSTRING)
        return conv_fail(cv, path, "expected a mode like \"host\" or a table {nsmode=, "
                                   "value=}, got %s", lua_shown(L, idx, shown, sizeof shown));
    const char *s = lua_tostring(L, idx);
    if (strncmp(s, "ns:", 3) == 0)
        return json_pack("{s:s, s:s}", "nsmode", "path", "value", s + 3);
    if (strncmp(s, "container:", 10) == 0)
        return json_pack("{s:s, s:s}", "nsmode", "container", "value", s + 10);
    if (!is_ns_mode(s))
        return conv_fail(cv, path, "unknown network mode \"%s\" (host, none, bridge, "
                                   "slirp4netns, private, ns:PATH, container:ID)", s);
    return json_pack("{s:s}", "nsmode", s);
}

static const char *const spec_keys[] = {
    "name", "image", "command", "entrypoint", "env", "portmappings", "mounts", "labels",
    "user", "network", "netns", "restart_policy", "restart_tries", "init", "stop_timeout",
    "hostname", "work_dir", NULL,
};

static json_t *conv_restart_tries(lua_State *L, int idx, const char *path, struct conv *cv)
{
    return conv_int(L, idx, path, 0, 1000000, cv);
}

/* The Lua spec at idx as a SpecGenerator, or NULL with err. */
static json_t *spec_to_json(lua_State *L, int idx, char *err, size_t err_len)
{
    struct conv cv = { err, err_len };
    const char *path = "spec";
    if (lua_type(L, idx) != LUA_TTABLE)
        return conv_fail(&cv, path, "expected a table, got %s", luaL_typename(L, idx));
    if (conv_keys(L, idx, spec_keys, path, &cv))
        return NULL;
    json_t *o = json_object();
    lua_getfield(L, idx, "image");
    int no_image = lua_isnil(L, -1);
    lua_pop(L, 1);
    if (no_image) {
        json_decref(o);
        return conv_fail(&cv, path, "image is required");
    }
    if (conv_field(L, idx, "name", path, o, "name", conv_string, &cv) ||
        conv_field(L, idx, "image", path, o, "image", conv_string, &cv) ||
        conv_field(L, idx, "command", path, o, "command", conv_string_list, &cv) ||
        conv_field(L, idx, "entrypoint", path, o, "entrypoint", conv_string_list, &cv) ||
        conv_field(L, idx, "env", path, o, "env", conv_string_map, &cv) ||
        conv_field(L, idx, "labels", path, o, "labels", conv_string_map, &cv) ||
        conv_field(L, idx, "user", path, o, "user", conv_user, &cv) ||
        conv_field(L, idx, "restart_policy", path, o, "restart_policy", conv_restart, &cv) ||
        conv_field(L, idx, "restart_tries", path, o, "restart_tries", conv_restart_tries,
                   &cv) ||
        conv_field(L, idx, "init", path, o, "init", conv_bool, &cv) ||
        conv_field(L, idx, "stop_timeout", path, o, "stop_timeout", conv_seconds, &cv) ||
        conv_field(L, idx, "hostname", path, o, "hostname", conv_string, &cv) ||
        conv_field(L, idx, "work_dir", path, o, "work_dir", conv_string, &cv) ||
        conv_field(L, idx, "netns", path, o, "netns", conv_netns, &cv)) {
        json_decref(o);
        return NULL;
    }
    char sub[64];
    lua_getfield(L, idx, "portmappings");
    if (!lua_isnil(L, -1)) {
        json_t *v = conv_table_list(L, lua_gettop(L), "spec.portmappings", &cv,
                                    conv_portmapping);
        if (!v) {
            lua_pop(L, 1);
            json_decref(o);
            return NULL;
        }
        json_object_set_new(o, "portmappings", v);
    }
    lua_pop(L, 1);
    lua_getfield(L, idx, "mounts");
    if (!lua_isnil(L, -1)) {
        json_t *v = conv_table_list(L, lua_gettop(L), "spec.mounts", &cv, conv_mount);
        if (!v) {
            lua_pop(L, 1);
            json_decref(o);
            return NULL;
        }
        json_object_set_new(o, "mounts", v);
    }
    lua_pop(L, 1);
    lua_getfield(L, idx, "network");
    if (!lua_isnil(L, -1)) {
        snprintf(sub, sizeof sub, "spec.network");
        if (json_object_get(o, "netns")) {
            lua_pop(L, 1);
            json_decref(o);
            return conv_fail(&cv, sub, "give network or netns, not both");
        }
        if (lua_type(L, -1) != LUA_TSTRING) {
            char shown[80];
            conv_fail(&cv, sub, "expected a network name or mode, got %s",
                      lua_shown(L, -1, shown, sizeof shown));
            lua_pop(L, 1);
            json_decref(o);
            return NULL;
        }
        const char *net = lua_tostring(L, -1);
        if (is_ns_mode(net) || strncmp(net, "ns:", 3) == 0 ||
            strncmp(net, "container:", 10) == 0) {
            json_t *ns = conv_netns(L, lua_gettop(L), sub, &cv);
            if (!ns) {
                lua_pop(L, 1);
                json_decref(o);
                return NULL;
            }
            json_object_set_new(o, "netns", ns);
        } else {
            json_object_set_new(o, "netns", json_pack("{s:s}", "nsmode", "bridge"));
            json_object_set_new(o, "Networks", json_pack("{s:{}}", net));
        }
    }
    lua_pop(L, 1);
    return o;
}

/* ---- containers ---- */

/* mcp.podman.create(spec [, {timeout}]) -> {Id=, Warnings=} */
static int l_podman_create(lua_State *L)
{
    bind_check_options(L, 2, "mcp.podman.create", timeout_opts);
    struct podman *p = client(L, "mcp.podman.create");
    double timeout = bind_opt_duration(L, 2, "timeout", podman_timeout(p), "mcp.podman.create");
    struct task *t = task_check(L, "mcp.podman.create");
    const char *name = NULL;
    if (lua_type(L, 1) == LUA_TTABLE) {
        lua_getfield(L, 1, "name");
        name = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        lua_pop(L, 1);                  /* anchored by the spec */
    }
    char err[700];
    char what[200];
    if (name)
        snprintf(what, sizeof what, "podman.create \"%s\"", name);
    else
        snprintf(what, sizeof what, "podman.create");
    json_t *spec = spec_to_json(L, 1, err, sizeof err);
    if (!spec)
        return push_error(L, what, 0, err);
    char *body = json_dumps(spec, JSON_COMPACT);
    json_decref(spec);
    if (!body)
        return push_error(L, what, 0, "out of memory");
    int n = simple_op(L, p, t, K_JSON, "create", name, "POST", "/containers/create", body,
                      timeout);
    free(body);
    return n;
}

/* Reads (name, opts) for a container operation: checks and the client. */
static struct podman *target_args(lua_State *L, const char *fn, const char *const opts[],
                                  const char **name)
{
    *name = luaL_checkstring(L, 1);
    if (!**name)
        luaL_argerror(L, 1, "empty name");
    bind_check_options(L, 2, fn, opts);
    return client(L, fn);
}

/* mcp.podman.start(name [, {timeout}]) -> true (also when already running) */
static int l_podman_start(lua_State *L)
{
    const char *name;
    struct podman *p = target_args(L, "mcp.podman.start", timeout_opts, &name);
    double timeout = bind_opt_duration(L, 2, "timeout", podman_timeout(p), "mcp.podman.start");
    struct task *t = task_check(L, "mcp.podman.start");
    char path[1024];
    if (make_path(path, sizeof path, "/containers", name, "/start", NULL))
        return path_error(L, "start", name);
    return simple_op(L, p, t, K_TRUE, "start", name, "POST", path, NULL, timeout);
}

/* mcp.podman.stop(name [, {timeout = stop seconds, ignore}]) -> true */
static int l_podman_stop(lua_State *L)
{
    static const char *const opts[] = { "timeout", "ignore", NULL };
    const char *name;
    struct podman *p = target_args(L, "mcp.podman.stop", opts, &name);
    double secs = bind_opt_duration(L, 2, "timeout", -1, "mcp.podman.stop");
    int ignore = bind_opt_bool(L, 2, "ignore", 0, "mcp.podman.stop");
    struct task *t = task_check(L, "mcp.podman.stop");
    struct qs q = { .len = 0 };
    if (secs >= 0)
        qs_int(&q, "timeout", (long long)(secs + 0.999));
    if (ignore)
        qs_bool(&q, "ignore", 1);
    char path[1024];
    if (make_path(path, sizeof path, "/containers", name, "/stop", &q))
        return path_error(L, "stop", name);
    double wait = (secs >= 0 ? secs : 10) + podman_timeout(p);
    return simple_op(L, p, t, K_TRUE, "stop", name, "POST", path, NULL, wait);
}

/* mcp.podman.restart(name [, {timeout = stop seconds}]) -> true */
static int l_podman_restart(lua_State *L)
{
    const char *name;
    struct podman *p = target_args(L, "mcp.podman.restart", timeout_opts, &name);
    double secs = bind_opt_duration(L, 2, "timeout", -1, "mcp.podman.restart");
    struct task *t = task_check(L, "mcp.podman.restart");
    struct qs q = { .len = 0 };
    if (secs >= 0)
        qs_int(&q, "t", (long long)(secs + 0.999));
    char path[1024];
    if (make_path(path, sizeof path, "/containers", name, "/restart", &q))
        return path_error(L, "restart", name);
    double wait = (secs >= 0 ? secs : 10) + podman_timeout(p);
    return simple_op(L, p, t, K_TRUE, "restart", name, "POST", path, NULL, wait);
}

/* mcp.podman.rename(name, new_name [, {timeout}]) -> true. A rolling deploy
 * starts the new revision under a temporary name and gives it the canonical
 * one once the old container is gone. */
static int l_podman_rename(lua_State *L)
{
    const char *name;
    char new_name[256];
    size_t n;
    const char *arg = luaL_checklstring(L, 2, &n);
    if (n == 0 || n >= sizeof new_name)
        return luaL_error(L, "mcp.podman.rename: the new name must be 1 to 255 bytes");
    memcpy(new_name, arg, n + 1);
    lua_remove(L, 2);
    struct podman *p = target_args(L, "mcp.podman.rename", timeout_opts, &name);
    double secs = bind_opt_duration(L, 2, "timeout", podman_timeout(p), "mcp.podman.rename");
    struct task *t = task_check(L, "mcp.podman.rename");
    struct qs q = { .len = 0 };
    qs_add(&q, "name", new_name);
    char path[1024];
    if (make_path(path, sizeof path, "/containers", name, "/rename", &q))
        return path_error(L, "rename", name);
    return simple_op(L, p, t, K_TRUE, "rename", name, "POST", path, NULL, secs);
}

/* mcp.podman.kill(name [, {signal = "SIGTERM", timeout}]) -> true */
static int l_podman_kill(lua_State *L)
{
    static const char *const opts[] = { "signal", "timeout", NULL };
    const char *name;
    struct podman *p = target_args(L, "mcp.podman.kill", opts, &name);
    const char *sig = NULL;
    char num[16];
    if (lua_istable(L, 2))
        lua_getfield(L, 2, "signal");
    else
        lua_pushnil(L);
    if (lua_type(L, -1) == LUA_TNUMBER) {
        snprintf(num, sizeof num, "%d", (int)lua_tonumber(L, -1));
        sig = num;
    }
    lua_pop(L, 1);
    if (!sig)
        sig = bind_opt_string(L, 2, "signal", "SIGKILL", "mcp.podman.kill");
    double timeout = bind_opt_duration(L, 2, "timeout", podman_timeout(p), "mcp.podman.kill");
    struct task *t = task_check(L, "mcp.podman.kill");
    struct qs q = { .len = 0 };
    qs_add(&q, "signal", sig);
    char path[1024];
    if (make_path(path, sizeof path, "/containers", name, "/kill", &q))
        return path_error(L, "kill", name);
    return simple_op(L, p, t, K_TRUE, "kill", name, "POST", path, NULL, timeout);
}

/* mcp.podman.remove(name [, {force, volumes, timeout = stop seconds, ignore}]) -> true */
static int l_podman_remove(lua_State *L)
{
    static const char *const opts[] = { "force", "volumes", "timeout", "ignore", NULL };
    const char *name;
    struct podman *p = target_args(L, "mcp.podman.remove", opts, &name);
    int force = bind_opt_bool(L, 2, "force", 0, "mcp.podman.remove");
    int volumes = bind_opt_bool(L, 2, "volumes", 0, "mcp.podman.remove");
    int ignore = bind_opt_bool(L, 2, "ignore", 0, "mcp.podman.remove");
    double secs = bind_opt_duration(L, 2, "timeout", -1, "mcp.podman.remove");
    struct task *t = task_check(L, "mcp.podman.remove");
    struct qs q = { .len = 0 };
    if (force)
        qs_bool(&q, "force", 1);
    if (volumes)
        qs_bool(&q, "v", 1);
    if (ignore)
        qs_bool(&q, "ignore", 1);
    if (secs >= 0)
        qs_int(&q, "timeout", (long long)(secs + 0.999));
    char path[1024];
    if (make_path(path, sizeof path, "/containers", name, NULL, &q))
        return path_error(L, "remove", name);
    double wait = (secs >= 0 ? secs : 10) + podman_timeout(p);
    return simple_op(L, p, t, K_CREMOVE, "remove", name, "DELETE", path, NULL, wait);
}

/* mcp.podman.inspect(name [, {timeout}]) -> table; nil, err, 404 when missing */
static int l_podman_inspect(lua_State *L)
{
    const char *name;
    struct podman *p = target_args(L, "mcp.podman.inspect", timeout_opts, &name);
    double timeout = bind_opt_duration(L, 2, "timeout", podman_timeout(p),
                                       "mcp.podman.inspect");
    struct task *t = task_check(L, "mcp.podman.inspect");
    char path[1024];
    if (make_path(path, sizeof path, "/containers", name, "/json", NULL))
        return path_error(L, "inspect", name);
    return simple_op(L, p, t, K_JSON, "inspect", name, "GET", path, NULL, timeout);
}

/* mcp.podman.exists(name [, {timeout}]) -> boolean */
static int l_podman_exists(lua_State *L)
{
    const char *name;
    struct podman *p = target_args(L, "mcp.podman.exists", timeout_opts, &name);
    double timeout = bind_opt_duration(L, 2, "timeout", podman_timeout(p), "mcp.podman.exists");
    struct task *t = task_check(L, "mcp.podman.exists");
    char path[1024];
    if (make_path(path, sizeof path, "/containers", name, "/exists", NULL))
        return path_error(L, "exists", name);
    return simple_op(L, p, t, K_EXISTS, "exists", name, "GET", path, NULL, timeout);
}

/* mcp.podman.list([{all, filters, timeout}]) -> list of containers */
static int l_podman_list(lua_State *L)
{
    static const char *const opts[] = { "all", "filters", "timeout", NULL };
    bind_check_options(L, 1, "mcp.podman.list", opts);
    struct podman *p = client(L, "mcp.podman.list");
    int all = bind_opt_bool(L, 1, "all", 0, "mcp.podman.list");
    double timeout = bind_opt_duration(L, 1, "timeout", podman_timeout(p), "mcp.podman.list");
    struct task *t = task_check(L, "mcp.podman.list");
    if (!lua_isnoneornil(L, 1))
        lua_getfield(L, 1, "filters");
    else
        lua_pushnil(L);
    char *filters = filters_json(L, lua_gettop(L), "mcp.podman.list");
    struct qs q = { .len = 0 };
    if (all)
        qs_bool(&q, "all", 1);
    if (filters)
        qs_add(&q, "filters", filters);
    free(filters);
    char path[4096];
    if (make_path(path, sizeof path, "/containers/json", NULL, NULL, &q))
        return path_error(L, "list", NULL);
    return simple_op(L, p, t, K_JSON, "list", NULL, "GET", path, NULL, timeout);
}

/* mcp.podman.wait(name [, {condition, timeout}]) -> exit code */
static int l_podman_wait(lua_State *L)
{
    static const char *const opts[] = { "condition", "timeout", "interval", NULL };
    const char *name;
    struct podman *p = target_args(L, "mcp.podman.wait", opts, &name);
    double timeout = bind_opt_duration(L, 2, "timeout", 0, "mcp.podman.wait");
    double interval = bind_opt_duration(L, 2, "interval", 0.1, "mcp.podman.wait");
    struct qs q = { .len = 0 };
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "condition");
        if (lua_type(L, -1) == LUA_TSTRING) {
            qs_add(&q, "condition", lua_tostring(L, -1));
        } else if (lua_type(L, -1) == LUA_TTABLE) {
            size_t n = lua_objlen(L, -1);
            for (size_t i = 1; i <= n; i++) {
                lua_rawgeti(L, -1, (int)i);
                if (lua_type(L, -1) != LUA_TSTRING)
                    return luaL_error(L, "mcp.podman.wait: option condition[%d]: expected a "
                                         "string", (int)i);
                qs_add(&q, "condition", lua_tostring(L, -1));
                lua_pop(L, 1);
            }
        } else if (!lua_isnil(L, -1)) {
            return luaL_error(L, "mcp.podman.wait: option condition: expected a string or a "
                                 "list of strings, got %s", luaL_typename(L, -1));
        }
        lua_pop(L, 1);
    }
    char iv[32];
    snprintf(iv, sizeof iv, "%dms", (int)(interval * 1000 + 0.5));
    qs_add(&q, "interval", iv);
    struct task *t = task_check(L, "mcp.podman.wait");
    char path[4096];
    if (make_path(path, sizeof path, "/containers", name, "/wait", &q))
        return path_error(L, "wait", name);
    return simple_op(L, p, t, K_NUMBER, "wait", name, "POST", path, NULL, timeout);
}

/* ---- logs ---- */

static int logs_line(void *ud, int stream, const char *line, size_t len)
{
    struct op *op = ud;
    if (op->lines.bytes + len > LOGS_MAX_BYTES) {
        op->too_big = 1;
        return 1;
    }
    return lq_push(&op->lines, stream, line, len) ? 1 : 0;
}

static int logs_frame(void *ud, int stream, const char *data, size_t len)
{
    struct op *op = ud;
    return fl_feed(&op->fl, stream, data, len) ? 1 : 0;
}

/* A follow stream: lines queue up as Podman sends them; :read() takes them. */
struct logstream {
    struct agent *a;
    struct podman *p;
    struct podman_call *call;
    struct framelines fl;
    struct lq q;
    struct task *waiter;
    uv_timer_t *timer;
    struct task *opener;        /* the task in logs() until the headers come */
    int ref;                    /* anchors the userdata while opening */
    int ended, held;
    char *error;
    long status;
    char what[300];
};

static int ls_line(void *ud, int stream, const char *line, size_t len)
{
    struct logstream *s = ud;
    if (lq_push(&s->q, stream, line, len))
        return 1;
    if (s->q.bytes > QUEUE_HIGH && !s->held && s->call) {
        s->held = 1;
        podman_call_hold(s->call, 1);
    }
    return 0;
}

/* Hands the waiting reader what there is: a line, the end, or nothing yet. */
static void ls_feed_waiter(struct logstream *s)
{
    struct task *t = s->waiter;
    if (!t || (!s->q.head && !s->ended))
        return;
    s->waiter = NULL;
    uv_timer_stop(s->timer);
    lua_State *T = task_thread(t);
    struct lq_item *it = lq_pop(&s->q);
    int n = 1;
    if (it) {
        push_line_item(T, it);
        free(it);
    } else if (s->error) {
        lua_pushnil(T);
        lua_pushstring(T, s->error);
        n = 2;
    } else {
        lua_pushnil(T);
    }
    if (s->held && s->q.bytes < QUEUE_LOW && s->call) {
        s->held = 0;
        podman_call_hold(s->call, 0);
    }
    task_resume(t, n);
}

static void ls_open_resume(struct logstream *s, int ok)
{
    struct task *t = s->opener;
    s->opener = NULL;
    lua_State *T = task_thread(t);
    int n = 1;
    if (ok) {
        lua_rawgeti(T, LUA_REGISTRYINDEX, s->ref);
    } else {
        lua_pushnil(T);
        lua_pushstring(T, s->error ? s->error : "failed");
        n = 2;
        if (s->status >= 400) {
            lua_pushnumber(T, (lua_Number)s->status);
            n = 3;
        }
    }
    luaL_unref(T, LUA_REGISTRYINDEX, s->ref);
    s->ref = LUA_NOREF;
    task_resume(t, n);
}

static void ls_headers(void *ud, long status)
{
    struct logstream *s = ud;
    s->status = status;
    if (status < 400 && s->opener) {
        uv_timer_stop(s->timer);
        ls_open_resume(s, 1);
    }
}

static int ls_frame(void *ud, int stream, const char *data, size_t len)
{
    struct logstream *s = ud;
    int rc = fl_feed(&s->fl, stream, data, len) ? 1 : 0;
    ls_feed_waiter(s);
    return rc;
}

static void ls_done(void *ud, const struct podman_reply *r)
{
    struct logstream *s = ud;
    s->call = NULL;
    s->ended = 1;
    fl_flush(&s->fl);
    if (r->error) {
        char msg[900];
        if (r->status >= 400)
            snprintf(msg, sizeof msg, "%s: %ld: %s", s->what, r->status, r->error);
        else
            snprintf(msg, sizeof msg, "%s: %s", s->what, r->error);
        s->error = strdup(msg);
        s->status = r->status;
    }
    if (s->opener) {
        uv_timer_stop(s->timer);
        ls_open_resume(s, r->error == NULL);
        return;
    }
    ls_feed_waiter(s);
}

static void ls_open_cancel(void *ud)
{
    struct logstream *s = ud;
    s->opener = NULL;
    uv_timer_stop(s->timer);
    if (s->call) {
        podman_call_cancel(s->call);
        s->call = NULL;
    }
    s->ended = 1;
    luaL_unref(s->a->rt.L, LUA_REGISTRYINDEX, s->ref);
    s->ref = LUA_NOREF;
}

/* Podman holds back the headers of a follow stream until the container
 * writes its first line: after a grace period the stream is handed over
 * anyway, and a later failure comes out of :read(). */
static void ls_open_grace(uv_timer_t *h)
{
    struct logstream *s = h->data;
    if (s->opener)
        ls_open_resume(s, 1);
}

static void ls_read_cancel(void *ud)
{
    struct logstream *s = ud;
    s->waiter = NULL;
    uv_timer_stop(s->timer);
}

static void ls_read_timeout(uv_timer_t *h)
{
    struct logstream *s = h->data;
    struct task *t = s->waiter;
    if (!t)
        return;
    s->waiter = NULL;
    lua_pushnil(task_thread(t));
    lua_pushliteral(task_thread(t), "timeout");
    task_resume(t, 2);
}

static struct logstream *ls_check(lua_State *L)
{
    return luaL_checkudata(L, 1, LOGSTREAM_MT);
}

/* stream:read([timeout]) -> {stream=, line=}; nil at the end; nil, err;
 * nil, "timeout" */
static int l_logstream_read(lua_State *L)
{
    struct logstream *s = ls_check(L);
    double timeout = -1;
    if (!lua_isnoneornil(L, 2)) {
        lua_settop(L, 2);
        lua_newtable(L);
        lua_pushvalue(L, 2);
        lua_setfield(L, -2, "timeout");
        timeout = bind_opt_duration(L, 3, "timeout", -1, "logs:read");
        lua_settop(L, 1);
    }
    struct lq_item *it = lq_pop(&s->q);
    if (it) {
        push_line_item(L, it);
        free(it);
        if (s->held && s->q.bytes < QUEUE_LOW && s->call) {
            s->held = 0;
            podman_call_hold(s->call, 0);
        }
        return 1;
    }
    if (s->ended) {
        lua_pushnil(L);
        if (s->error) {
            lua_pushstring(L, s->error);
            return 2;
        }
        return 1;
    }
    if (s->waiter)
        return luaL_error(L, "logs:read: another task is already reading this stream");
    struct task *t = task_check(L, "logs:read");
    s->waiter = t;
    if (timeout >= 0)
        timer_arm(s->timer, ls_read_timeout, (uint64_t)(timeout * 1000 + 0.5));
    return task_wait(L, t, ls_read_cancel, s);
}

/* stream:close() -> true: stops the request; further reads return nil. */
static int l_logstream_close(lua_State *L)
{
    struct logstream *s = ls_check(L);
    if (s->call) {
        podman_call_cancel(s->call);
        s->call = NULL;
    }
    s->ended = 1;
    lq_clear(&s->q);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_logstream_gc(lua_State *L)
{
    struct logstream *s = ls_check(L);
    if (s->call)
        podman_call_cancel(s->call);
    s->call = NULL;
    lq_clear(&s->q);
    fl_free(&s->fl);
    free(s->error);
    s->error = NULL;
    timer_drop(s->timer);
    s->timer = NULL;
    return 0;
}

static int logs_follow(lua_State *L, struct podman *p, struct task *t, const char *name,
                       const char *path)
{
    struct agent *a = agent_from_lua(L);
    struct logstream *s = lua_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    s->ref = LUA_NOREF;
    s->a = a;
    s->p = p;
    fl_init(&s->fl, ls_line, s);
    luaL_getmetatable(L, LOGSTREAM_MT);
    lua_setmetatable(L, -2);
    snprintf(s->what, sizeof s->what, "podman.logs \"%s\"", name);
    s->timer = timer_new(a, s);
    if (!s->timer)
        return luaL_error(L, "mcp.podman.logs: out of memory");
    static const struct podman_handlers h = { ls_headers, NULL, ls_frame, ls_done };
    s->call = podman_call(p, "GET", path, NULL, 0, PODMAN_FRAMES, &h, s);
    if (!s->call)
        return push_error(L, s->what, 0, "cannot start a request");
    s->opener = t;
    lua_pushvalue(L, -1);
    s->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    timer_arm(s->timer, ls_open_grace, FOLLOW_GRACE_MS);
    return task_wait(L, t, ls_open_cancel, s);
}

/* mcp.podman.logs(name [, {tail, since, until, follow, stdout, stderr,
 * timestamps, timeout}]) -> list of {stream=, line=}, or with follow a
 * stream object (:read([timeout]), :close()) */
static int l_podman_logs(lua_State *L)
{
    static const char *const opts[] = { "tail", "since", "until", "follow", "stdout",
                                        "stderr", "timestamps", "timeout", NULL };
    const char *name;
    struct podman *p = target_args(L, "mcp.podman.logs", opts, &name);
    const char *fn = "mcp.podman.logs";
    int follow = bind_opt_bool(L, 2, "follow", 0, fn);
    int out = bind_opt_bool(L, 2, "stdout", 1, fn);
    int err = bind_opt_bool(L, 2, "stderr", 1, fn);
    int ts = bind_opt_bool(L, 2, "timestamps", 0, fn);
    double timeout = bind_opt_duration(L, 2, "timeout", podman_timeout(p), fn);
    if (!out && !err)
        return luaL_error(L, "%s: stdout and stderr are both false: nothing to read", fn);
    struct qs q = { .len = 0 };
    qs_bool(&q, "stdout", out);
    qs_bool(&q, "stderr", err);
    if (follow)
        qs_bool(&q, "follow", 1);
    if (ts)
        qs_bool(&q, "timestamps", 1);
    static const char *const strkeys[] = { "tail", "since", "until" };
    for (int i = 0; i < 3; i++) {
        if (lua_istable(L, 2))
            lua_getfield(L, 2, strkeys[i]);
        else
            lua_pushnil(L);
        if (lua_type(L, -1) == LUA_TNUMBER) {
            char n[32];
            snprintf(n, sizeof n, "%.0f", lua_tonumber(L, -1));
            qs_add(&q, strkeys[i], n);
        } else if (lua_type(L, -1) == LUA_TSTRING) {
            qs_add(&q, strkeys[i], lua_tostring(L, -1));
        } else if (!lua_isnil(L, -1)) {
            return luaL_error(L, "%s: option %s: expected a number or a string, got %s", fn,
                              strkeys[i], luaL_typename(L, -1));
        }
        lua_pop(L, 1);
    }
    struct task *t = task_check(L, fn);
    char path[4096];
    if (make_path(path, sizeof path, "/containers", name, "/logs", &q))
        return path_error(L, "logs", name);
    if (follow)
        return logs_follow(L, p, t, name, path);
    struct op *op = op_new(L, K_LOGS, "logs", name);
    op->p = p;
    op->task = t;
    fl_init(&op->fl, logs_line, op);
    static const struct podman_handlers h = { NULL, NULL, logs_frame, op_done };
    return op_start(L, op, "GET", path, NULL, timeout, PODMAN_FRAMES, &h);
}

/* ---- exec ---- */

static void exec_step(struct op *op);

static double remaining(struct op *op)
{
    double left = op->deadline - (double)uv_hrtime() / 1e9;
    return left > 0.001 ? left : 0.001;
}

static int exec_frame(void *ud, int stream, const char *data, size_t len)
{
    struct op *op = ud;
    int i = stream == PP_STDERR ? 1 : 0;
    if (op->out_len[i] + len > EXEC_MAX_BYTES) {
        op->truncated = 1;
        len = EXEC_MAX_BYTES - op->out_len[i];
    }
    if (op->out_len[i] + len + 1 > op->out_cap[i]) {
        size_t cap = op->out_cap[i] ? op->out_cap[i] : 1024;
        while (cap < op->out_len[i] + len + 1)
            cap *= 2;
        char *b = realloc(op->out[i], cap);
        if (!b)
            return 1;
        op->out[i] = b;
        op->out_cap[i] = cap;
    }
    memcpy(op->out[i] + op->out_len[i], data, len);
    op->out_len[i] += len;
    return 0;
}

static void exec_retry(uv_timer_t *h)
{
    exec_step(h->data);
}

static void exec_done(void *ud, const struct podman_reply *r)
{
    struct op *op = ud;
    op->call = NULL;
    if (r->error) {
        op_fail(op, r->status, r->error);
        return;
    }
    json_t *v = NULL;
    if (op->step != 1) {
        v = json_loadb(r->body, r->len, 0, NULL);
        if (!json_is_object(v)) {
            json_decref(v);
            op_fail(op, 0, "Podman answered bad JSON");
            return;
        }
    }
    switch (op->step) {
    case 0: {
        const char *id = json_string_value(json_object_get(v, "Id"));
        if (!id || strlen(id) >= sizeof op->exec_id) {
            json_decref(v);
            op_fail(op, 0, "Podman answered no exec session id");
            return;
        }
        snprintf(op->exec_id, sizeof op->exec_id, "%s", id);
        json_decref(v);
        op->step = 1;
        exec_step(op);
        return;
    }
    case 1:
        op->step = 2;
        exec_step(op);
        return;
    default: {
        json_t *running = json_object_get(v, "Running");
        json_t *code = json_object_get(v, "ExitCode");
        if (json_is_true(running) || !json_is_integer(code)) {
            json_decref(v);
            /* The stream ends a moment before Podman records the exit. */
            if (!op->retry)
                op->retry = timer_new(op->a, op);
            if (!op->retry || remaining(op) <= 0.001) {
                op_fail(op, 0, "the command's exit code never came");
                return;
            }
            timer_arm(op->retry, exec_retry, 20);
            return;
        }
        lua_State *T = task_thread(op->task);
        lua_createtable(T, 0, 4);
        lua_pushnumber(T, (lua_Number)json_integer_value(code));
        lua_setfield(T, -2, "exit_code");
        lua_pushlstring(T, op->out[0] ? op->out[0] : "", op->out_len[0]);
        lua_setfield(T, -2, "stdout");
        lua_pushlstring(T, op->out[1] ? op->out[1] : "", op->out_len[1]);
        lua_setfield(T, -2, "stderr");
        if (op->truncated) {
            lua_pushboolean(T, 1);
            lua_setfield(T, -2, "truncated");
        }
        json_decref(v);
        op_resume(op, 1, 1);
    }
    }
}

static void exec_step(struct op *op)
{
    static const struct podman_handlers body_h = { NULL, NULL, NULL, exec_done };
    static const struct podman_handlers frames_h = { NULL, NULL, exec_frame, exec_done };
    char path[512];
    if (op->step == 1) {
        snprintf(path, sizeof path, "/exec/%s/start", op->exec_id);
        op->call = podman_call(op->p, "POST", path, "{}", remaining(op), PODMAN_FRAMES,
                               &frames_h, op);
    } else {
        snprintf(path, sizeof path, "/exec/%s/json", op->exec_id);
        op->call = podman_call(op->p, "GET", path, NULL, remaining(op), PODMAN_BODY, &body_h,
                               op);
    }
    if (!op->call)
        op_fail(op, 0, "cannot start a request");
}

/* mcp.podman.exec(name, {cmd = {...}, env, user, workdir, timeout})
 *   -> {exit_code=, stdout=, stderr=[, truncated=true]} */
static int l_podman_exec(lua_State *L)
{
    static const char *const opts[] = { "cmd", "env", "user", "workdir", "timeout", NULL };
    const char *fn = "mcp.podman.exec";
    const char *name;
    struct podman *p = target_args(L, fn, opts, &name);
    luaL_checktype(L, 2, LUA_TTABLE);
    double timeout = bind_opt_duration(L, 2, "timeout", podman_timeout(p), fn);
    const char *user = bind_opt_string(L, 2, "user", NULL, fn);
    const char *workdir = bind_opt_string(L, 2, "workdir", NULL, fn);
    struct task *t = task_check(L, fn);
    char err[600];
    struct conv cv = { err, sizeof err };
    lua_getfield(L, 2, "cmd");
    if (lua_isnil(L, -1))
        return luaL_error(L, "%s: option cmd is required (a list of strings)", fn);
    json_t *cmd = conv_string_list(L, lua_gettop(L), "cmd", &cv);
    if (!cmd)
        return luaL_error(L, "%s: option %s", fn, err);
    if (json_array_size(cmd) == 0) {
        json_decref(cmd);
        return luaL_error(L, "%s: option cmd: empty command", fn);
    }
    lua_pop(L, 1);
    json_t *env = NULL;
    lua_getfield(L, 2, "env");
    if (!lua_isnil(L, -1)) {
        json_t *m = conv_string_map(L, lua_gettop(L), "env", &cv);
        if (!m) {
            json_decref(cmd);
            return luaL_error(L, "%s: option %s", fn, err);
        }
        env = json_array();
        const char *k;
        json_t *v;
        json_object_foreach(m, k, v) {
            char *kv = NULL;
            if (asprintf(&kv, "%s=%s", k, json_string_value(v)) > 0)
                json_array_append_new(env, json_string(kv));
            free(kv);
        }
        json_decref(m);
    }
    lua_pop(L, 1);
    json_t *req = json_pack("{s:b, s:b, s:o}", "AttachStdout", 1, "AttachStderr", 1, "Cmd",
                            cmd);
    if (env)
        json_object_set_new(req, "Env", env);
    if (user)
        json_object_set_new(req, "User", json_string(user));
    if (workdir)
        json_object_set_new(req, "WorkingDir", json_string(workdir));
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    char path[1024];
    struct op *op = NULL;
    if (!body || make_path(path, sizeof path, "/containers", name, "/exec", NULL)) {
        free(body);
        return path_error(L, "exec", name);
    }
    op = calloc(1, sizeof *op);
    if (!op) {
        free(body);
        return push_error(L, "podman.exec", 0, "out of memory");
    }
    op->kind = K_EXEC;
    op->a = agent_from_lua(L);
    op->t0 = uv_hrtime();
    snprintf(op->what, sizeof op->what, "podman.exec \"%s\"", name);
    snprintf(op->stat, sizeof op->stat, "podman.exec");
    op->p = p;
    op->task = t;
    op->deadline = (double)uv_hrtime() / 1e9 + timeout;
    static const struct podman_handlers h = { NULL, NULL, NULL, exec_done };
    int n = op_start(L, op, "POST", path, body, timeout, PODMAN_BODY, &h);
    free(body);
    return n;
}

/* ---- images ---- */

/* mcp.podman.images.exists(ref [, {timeout}]) -> boolean */
static int l_images_exists(lua_State *L)
{
    const char *ref;
    struct podman *p = target_args(L, "mcp.podman.images.exists", timeout_opts, &ref);
    double timeout = bind_opt_duration(L, 2, "timeout", podman_timeout(p),
                                       "mcp.podman.images.exists");
    struct task *t = task_check(L, "mcp.podman.images.exists");
    char path[1024];
    if (make_path(path, sizeof path, "/images", ref, "/exists", NULL))
        return path_error(L, "images.exists", ref);
    return simple_op(L, p, t, K_EXISTS, "images.exists", ref, "GET", path, NULL, timeout);
}

/* mcp.podman.images.list([{all, filters, timeout}]) -> list */
static int l_images_list(lua_State *L)
{
    static const char *const opts[] = { "all", "filters", "timeout", NULL };
    const char *fn = "mcp.podman.images.list";
    bind_check_options(L, 1, fn, opts);
    struct podman *p = client(L, fn);
    int all = bind_opt_bool(L, 1, "all", 0, fn);
    double timeout = bind_opt_duration(L, 1, "timeout", podman_timeout(p), fn);
    struct task *t = task_check(L, fn);
    if (!lua_isnoneornil(L, 1))
        lua_getfield(L, 1, "filters");
    else
        lua_pushnil(L);
    char *filters = filters_json(L, lua_gettop(L), fn);
    struct qs q = { .len = 0 };
    if (all)
        qs_bool(&q, "all", 1);
    if (filters)
        qs_add(&q, "filters", filters);
    free(filters);
    char path[4096];
    if (make_path(path, sizeof path, "/images/json", NULL, NULL, &q))
        return path_error(L, "images.list", NULL);
    return simple_op(L, p, t, K_JSON, "images.list", NULL, "GET", path, NULL, timeout);
}

/* mcp.podman.images.remove(ref [, {force, timeout}]) -> report table */
static int l_images_remove(lua_State *L)
{
    static const char *const opts[] = { "force", "timeout", NULL };
    const char *ref;
    struct podman *p = target_args(L, "mcp.podman.images.remove", opts, &ref);
    int force = bind_opt_bool(L, 2, "force", 0, "mcp.podman.images.remove");
    double timeout = bind_opt_duration(L, 2, "timeout", podman_timeout(p),
                                       "mcp.podman.images.remove");
    struct task *t = task_check(L, "mcp.podman.images.remove");
    struct qs q = { .len = 0 };
    if (force)
        qs_bool(&q, "force", 1);
    char path[1024];
    if (make_path(path, sizeof path, "/images", ref, NULL, &q))
        return path_error(L, "images.remove", ref);
    return simple_op(L, p, t, K_JSON, "images.remove", ref, "DELETE", path, NULL, timeout);
}

static int pull_line(void *ud, const char *line, size_t len)
{
    struct op *op = ud;
    if (len == 0)
        return 0;
    json_t *v = json_loadb(line, len, 0, NULL);
    if (!json_is_object(v)) {
        json_decref(v);
        log_warn("%s: skipping a line Podman sent that is not a JSON object", op->what);
        return 0;
    }
    json_t *e = json_object_get(v, "error");
    if (json_is_string(e) && !op->pull_error)
        op->pull_error = strdup(json_string_value(e));
    if (json_object_get(v, "images") || json_object_get(v, "id")) {
        json_decref(op->pull_result);
        op->pull_result = json_incref(v);
    }
    int rc = 0;
    if (op->cbL) {
        lua_State *C = op->cbL;
        lua_pushvalue(C, 1);
        json_push(C, v);
        op->in_cb = 1;
        int failed = runtime_pcall(C, 1, 1, "mcp.podman.images.pull: on_progress");
        op->in_cb = 0;
        if (op->cancelled) {
            json_decref(v);
            op_free(op);
            return 1;
        }
        if (failed) {
            const char *msg = lua_tostring(C, -1);
            if (!op->pull_error) {
                char buf[600];
                snprintf(buf, sizeof buf, "on_progress failed: %s", msg ? msg : "?");
                op->pull_error = strdup(buf);
            }
            rc = 1;
        }
        lua_settop(C, 1);
    }
    json_decref(v);
    return rc;
}

static void pull_done(void *ud, const struct podman_reply *r)
{
    struct op *op = ud;
    op->call = NULL;
    if (op->pull_error) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", op->pull_error);
        op_fail(op, 0, msg);
        return;
    }
    if (r->error) {
        op_fail(op, r->status, r->error);
        return;
    }
    if (!op->pull_result) {
        op_fail(op, 0, "Podman's answer ended without the pulled image");
        return;
    }
    json_push(task_thread(op->task), op->pull_result);
    op_resume(op, 1, 1);
}

/* mcp.podman.images.pull(ref [, {policy = "missing", tls_verify, on_progress,
 * timeout}]) -> {id=, images={...}} */
static int l_images_pull(lua_State *L)
{
    static const char *const opts[] = { "policy", "tls_verify", "on_progress", "timeout",
                                        NULL };
    const char *fn = "mcp.podman.images.pull";
    const char *ref;
    struct podman *p = target_args(L, fn, opts, &ref);
    const char *policy = bind_opt_string(L, 2, "policy", "missing", fn);
    if (strcmp(policy, "missing") && strcmp(policy, "always") && strcmp(policy, "newer") &&
        strcmp(policy, "never"))
        return luaL_error(L, "%s: option policy: expected \"missing\", \"always\", \"newer\" or "
                             "\"never\", got \"%s\"", fn, policy);
    int tls = bind_opt_bool(L, 2, "tls_verify", 1, fn);
    double timeout = bind_opt_duration(L, 2, "timeout", PULL_TIMEOUT, fn);
    int has_cb = 0;
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "on_progress");
        if (!lua_isnil(L, -1) && !lua_isfunction(L, -1))
            return luaL_error(L, "%s: option on_progress: expected a function, got %s", fn,
                              luaL_typename(L, -1));
        has_cb = lua_isfunction(L, -1);
        lua_pop(L, 1);
    }
    struct task *t = task_check(L, fn);
    struct qs q = { .len = 0 };
    qs_add(&q, "reference", ref);
    qs_add(&q, "policy", policy);
    if (!tls)
        qs_bool(&q, "tlsVerify", 0);
    char path[2048];
    if (make_path(path, sizeof path, "/images/pull", NULL, NULL, &q))
        return path_error(L, "images.pull", ref);
    struct op *op = op_new(L, K_PULL, "images.pull", ref);
    op->p = p;
    op->task = t;
    if (has_cb) {
        /* A thread of its own: the task is suspended while progress comes. */
        op->cbL = lua_newthread(L);
        op->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        lua_getfield(L, 2, "on_progress");
        lua_xmove(L, op->cbL, 1);
    }
    static const struct podman_handlers h = { NULL, pull_line, NULL, pull_done };
    return op_start(L, op, "POST", path, NULL, timeout, PODMAN_LINES, &h);
}

/* ---- networks ---- */

static json_t *conv_subnet(lua_State *L, int idx, const char *path, struct conv *cv)
{
    static const char *const keys[] = { "subnet", "gateway", NULL };
    if (conv_keys(L, idx, keys, path, cv))
        return NULL;
    json_t *o = json_object();
    if (conv_field(L, idx, "subnet", path, o, "subnet", conv_string, cv) ||
        conv_field(L, idx, "gateway", path, o, "gateway", conv_string, cv)) {
        json_decref(o);
        return NULL;
    }
    if (!json_object_get(o, "subnet")) {
        json_decref(o);
        return conv_fail(cv, path, "subnet is required");
    }
    return o;
}

static json_t *conv_subnets(lua_State *L, int idx, const char *path, struct conv *cv)
{
    return conv_table_list(L, idx, path, cv, conv_subnet);
}

/* mcp.podman.networks.create({name, driver, internal, dns_enabled, ipv6_enabled,
 * labels, options, subnets = {{subnet, gateway}}} [, {timeout}]) -> table */
static int l_networks_create(lua_State *L)
{
    static const char *const keys[] = { "name", "driver", "internal", "dns_enabled",
                                        "ipv6_enabled", "labels", "options", "subnets", NULL };
    const char *fn = "mcp.podman.networks.create";
    luaL_checktype(L, 1, LUA_TTABLE);
    bind_check_options(L, 2, fn, timeout_opts);
    struct podman *p = client(L, fn);
    double timeout = bind_opt_duration(L, 2, "timeout", podman_timeout(p), fn);
    struct task *t = task_check(L, fn);
    char err[700];
    struct conv cv = { err, sizeof err };
    lua_getfield(L, 1, "name");
    const char *name = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);
    char what[200];
    snprintf(what, sizeof what, "podman.networks.create \"%s\"", name ? name : "");
    if (!name)
        return push_error(L, what, 0, "network.name: required");
    json_t *o = NULL;
    if (conv_keys(L, 1, keys, "network", &cv) == 0) {
        o = json_object();
        if (conv_field(L, 1, "name", "network", o, "name", conv_string, &cv) ||
            conv_field(L, 1, "driver", "network", o, "driver", conv_string, &cv) ||
            conv_field(L, 1, "internal", "network", o, "internal", conv_bool, &cv) ||
            conv_field(L, 1, "dns_enabled", "network", o, "dns_enabled", conv_bool, &cv) ||
            conv_field(L, 1, "ipv6_enabled", "network", o, "ipv6_enabled", conv_bool, &cv) ||
            conv_field(L, 1, "labels", "network", o, "labels", conv_string_map, &cv) ||
            conv_field(L, 1, "options", "network", o, "options", conv_string_map, &cv) ||
            conv_field(L, 1, "subnets", "network", o, "subnets", conv_subnets, &cv)) {
            json_decref(o);
            o = NULL;
        }
    }
    if (!o)
        return push_error(L, what, 0, err);
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!body)
        return push_error(L, what, 0, "out of memory");
    int n = simple_op(L, p, t, K_JSON, "networks.create", name, "POST", "/networks/create",
                      body, timeout);
    free(body);
    return n;
}

/* mcp.podman.networks.exists(name [, {timeout}]) -> boolean */
static int l_networks_exists(lua_State *L)
{
    const char *name;
    const char *fn = "mcp.podman.networks.exists";
    struct podman *p = target_args(L, fn, timeout_opts, &name);
    double timeout = bind_opt_duration(L, 2, "timeout", podman_timeout(p), fn);
    struct task *t = task_check(L, fn);
    char path[1024];
    if (make_path(path, sizeof path, "/networks", name, "/exists", NULL))
        return path_error(L, "networks.exists", name);
    return simple_op(L, p, t, K_EXISTS, "networks.exists", name, "GET", path, NULL, timeout);
}

/* mcp.podman.networks.list([{filters, timeout}]) -> list */
static int l_networks_list(lua_State *L)
{
    static const char *const opts[] = { "filters", "timeout", NULL };
    const char *fn = "mcp.podman.networks.list";
    bind_check_options(L, 1, fn, opts);
    struct podman *p = client(L, fn);
    double timeout = bind_opt_duration(L, 1, "timeout", podman_timeout(p), fn);
    struct task *t = task_check(L, fn);
    if (!lua_isnoneornil(L, 1))
        lua_getfield(L, 1, "filters");
    else
        lua_pushnil(L);
    char *filters = filters_json(L, lua_gettop(L), fn);
    struct qs q = { .len = 0 };
    if (filters)
        qs_add(&q, "filters", filters);
    free(filters);
    char path[4096];
    if (make_path(path, sizeof path, "/networks/json", NULL, NULL, &q))
        return path_error(L, "networks.list", NULL);
    return simple_op(L, p, t, K_JSON, "networks.list", NULL, "GET", path, NULL, timeout);
}

/* mcp.podman.networks.remove(name [, {force, timeout}]) -> true */
static int l_networks_remove(lua_State *L)
{
    static const char *const opts[] = { "force", "timeout", NULL };
    const char *name;
    const char *fn = "mcp.podman.networks.remove";
    struct podman *p = target_args(L, fn, opts, &name);
    int force = bind_opt_bool(L, 2, "force", 0, fn);
    double timeout = bind_opt_duration(L, 2, "timeout", podman_timeout(p), fn);
    struct task *t = task_check(L, fn);
    struct qs q = { .len = 0 };
    if (force)
        qs_bool(&q, "force", 1);
    char path[1024];
    if (make_path(path, sizeof path, "/networks", name, NULL, &q))
        return path_error(L, "networks.remove", name);
    return simple_op(L, p, t, K_CREMOVE, "networks.remove", name, "DELETE", path, NULL,
                     timeout);
}

/* ---- events ---- */

enum { ITEM_EVENT, ITEM_RECONNECTED, ITEM_OVERFLOW };

struct sub_item {
    int kind;
    json_t *ev;
    size_t dropped;
};

struct evsub {
    struct agent *a;
    struct podman_sub *sub;     /* NULL once closed */
    struct pp_filter filter;
    struct sub_item *items;     /* ring */
    size_t head, count, cap;
    size_t dropped;             /* events lost to a full queue, not yet told */
    struct task *waiter;
    uv_timer_t *timer;
    struct task *opener;
    int ref;
    int closed;
    char *close_reason;
};

static void sq_push(struct evsub *s, int kind, json_t *ev)
{
    if (s->count == s->cap) {
        s->dropped++;
        json_decref(ev);
        return;
    }
    if (s->dropped) {
        /* Tell what was lost where it was lost, once there is room. */
        if (s->count + 1 == s->cap) {
            s->dropped++;
            json_decref(ev);
            return;
        }
        struct sub_item *it = &s->items[(s->head + s->count++) % s->cap];
        it->kind = ITEM_OVERFLOW;
        it->ev = NULL;
        it->dropped = s->dropped;
        s->dropped = 0;
    }
    struct sub_item *it = &s->items[(s->head + s->count++) % s->cap];
    it->kind = kind;
    it->ev = ev;
    it->dropped = 0;
}

/* Pushes the next item onto L; returns 0 when the queue is empty. */
static int sq_pop_push(struct evsub *s, lua_State *L)
{
    if (s->count == 0)
        return 0;
    struct sub_item it = s->items[s->head];
    s->head = (s->head + 1) % s->cap;
    s->count--;
    switch (it.kind) {
    case ITEM_EVENT:
        json_push(L, it.ev);
        json_decref(it.ev);
        break;
    case ITEM_RECONNECTED:
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "reconnected");
        lua_setfield(L, -2, "type");
        break;
    default:
        lua_createtable(L, 0, 2);
        lua_pushliteral(L, "overflow");
        lua_setfield(L, -2, "type");
        lua_pushnumber(L, (lua_Number)it.dropped);
        lua_setfield(L, -2, "dropped");
    }
    return 1;
}

static void sq_clear(struct evsub *s)
{
    while (s->count) {
        struct sub_item *it = &s->items[s->head];
        json_decref(it->ev);
        s->head = (s->head + 1) % s->cap;
        s->count--;
    }
}

static void sub_feed_waiter(struct evsub *s)
{
    struct task *t = s->waiter;
    if (!t)
        return;
    lua_State *T = task_thread(t);
    int n;
    if (sq_pop_push(s, T)) {
        n = 1;
    } else if (s->closed) {
        lua_pushnil(T);
        lua_pushstring(T, s->close_reason ? s->close_reason : "closed");
        n = 2;
    } else {
        return;
    }
    s->waiter = NULL;
    uv_timer_stop(s->timer);
    task_resume(t, n);
}

static void sub_open_resume(struct evsub *s)
{
    struct task *t = s->opener;
    s->opener = NULL;
    uv_timer_stop(s->timer);
    lua_State *T = task_thread(t);
    int n = 1;
    if (s->closed) {
        lua_pushnil(T);
        lua_pushfstring(T, "podman.events.subscribe: %s",
                        s->close_reason ? s->close_reason : "closed");
        n = 2;
    } else {
        lua_rawgeti(T, LUA_REGISTRYINDEX, s->ref);
    }
    luaL_unref(T, LUA_REGISTRYINDEX, s->ref);
    s->ref = LUA_NOREF;
    task_resume(t, n);
}

static void sub_event(void *ud, enum podman_ev kind, json_t *ev, const char *err)
{
    struct evsub *s = ud;
    switch (kind) {
    case PODMAN_EV_EVENT:
        if (!pp_event_match(ev, &s->filter))
            return;
        sq_push(s, ITEM_EVENT, json_incref(ev));
        break;
    case PODMAN_EV_CONNECTED:
        if (s->opener) {
            sub_open_resume(s);
            return;
        }
        sq_push(s, ITEM_RECONNECTED, NULL);
        break;
    case PODMAN_EV_FAILED:
        log_debug("podman.events.subscribe: stream not up yet (%s); it reconnects",
                  err ? err : "?");
        if (s->opener) {
            sub_open_resume(s);
            return;
        }
        break;
    case PODMAN_EV_RECONNECTED:
        sq_push(s, ITEM_RECONNECTED, NULL);
        break;
    case PODMAN_EV_CLOSED:
        s->sub = NULL;
        s->closed = 1;
        free(s->close_reason);
        s->close_reason = err ? strdup(err) : NULL;
        if (s->opener) {
            sub_open_resume(s);
            return;
        }
        break;
    }
    sub_feed_waiter(s);
}

static void sub_open_cancel(void *ud)
{
    struct evsub *s = ud;
    s->opener = NULL;
    uv_timer_stop(s->timer);
    luaL_unref(s->a->rt.L, LUA_REGISTRYINDEX, s->ref);
    s->ref = LUA_NOREF;
}

static void sub_open_timeout(uv_timer_t *h)
{
    struct evsub *s = h->data;
    if (s->opener)
        sub_open_resume(s);
}

static void sub_next_cancel(void *ud)
{
    struct evsub *s = ud;
    s->waiter = NULL;
    uv_timer_stop(s->timer);
}

static void sub_next_timeout(uv_timer_t *h)
{
    struct evsub *s = h->data;
    struct task *t = s->waiter;
    if (!t)
        return;
    s->waiter = NULL;
    lua_pushnil(task_thread(t));
    lua_pushliteral(task_thread(t), "timeout");
    task_resume(t, 2);
}

/* Reads {type=, event=, container=, image=, label=} (each a string or a
 * list of strings) into f; raises on anything else. */
static void filter_from_lua(lua_State *L, int idx, struct pp_filter *f, const char *fn)
{
    if (lua_isnoneornil(L, idx))
        return;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int key = -1;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (int k = 0; k < PP_F_N; k++)
                if (strcmp(lua_tostring(L, -2), pp_filter_keys[k]) == 0)
                    key = k;
        if (key < 0) {
            pp_filter_free(f);
            luaL_error(L, "%s: unknown filter %s (expected one of: type, event, container, "
                          "image, label)", fn, lua_type(L, -2) == LUA_TSTRING
                                                   ? lua_tostring(L, -2) : "key");
        }
        if (lua_type(L, -1) == LUA_TSTRING) {
            pp_filter_add(f, (enum pp_filter_key)key, lua_tostring(L, -1));
        } else if (lua_type(L, -1) == LUA_TTABLE) {
            size_t n = lua_objlen(L, -1);
            for (size_t i = 1; i <= n; i++) {
                lua_rawgeti(L, -1, (int)i);
                if (lua_type(L, -1) != LUA_TSTRING) {
                    pp_filter_free(f);
                    luaL_error(L, "%s: filter %s[%d]: expected a string", fn,
                               pp_filter_keys[key], (int)i);
                }
                pp_filter_add(f, (enum pp_filter_key)key, lua_tostring(L, -1));
                lua_pop(L, 1);
            }
        } else {
            pp_filter_free(f);
            luaL_error(L, "%s: filter %s: expected a string or a list of strings, got %s", fn,
                       pp_filter_keys[key], luaL_typename(L, -1));
        }
        lua_pop(L, 1);
    }
}

/* mcp.podman.events.subscribe([filters]) -> subscription; waits until the
 * stream is up (or its first attempt failed: it keeps retrying, and the
 * subscriber then hears {type="reconnected"} once it is up). */
static int l_events_subscribe(lua_State *L)
{
    const char *fn = "mcp.podman.events.subscribe";
    lua_settop(L, 1);
    struct podman *p = client(L, fn);
    struct task *t = task_check(L, fn);
    struct agent *a = agent_from_lua(L);
    struct evsub *s = lua_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    s->ref = LUA_NOREF;
    s->a = a;
    luaL_getmetatable(L, SUB_MT);
    lua_setmetatable(L, -2);
    filter_from_lua(L, 1, &s->filter, fn);
    s->cap = SUB_QUEUE_MAX;
    s->items = calloc(s->cap, sizeof *s->items);
    s->timer = timer_new(a, s);
    if (!s->items || !s->timer)
        return luaL_error(L, "%s: out of memory", fn);
    enum podman_ev_state state;
    s->sub = podman_events_subscribe(p, sub_event, s, &state);
    if (!s->sub)
        return luaL_error(L, "%s: out of memory", fn);
    if (state != PODMAN_EVS_CONNECTING)
        return 1;
    s->opener = t;
    lua_pushvalue(L, -1);
    s->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    timer_arm(s->timer, sub_open_timeout, (uint64_t)(podman_timeout(p) * 1000 + 0.5));
    return task_wait(L, t, sub_open_cancel, s);
}

static struct evsub *sub_check(lua_State *L)
{
    return luaL_checkudata(L, 1, SUB_MT);
}

/* sub:next([timeout]) -> event table | {type="reconnected"} |
 * {type="overflow", dropped=n} | nil, "timeout" | nil, "closed" */
static int l_sub_next(lua_State *L)
{
    struct evsub *s = sub_check(L);
    double timeout = -1;
    if (!lua_isnoneornil(L, 2)) {
        lua_settop(L, 2);
        lua_newtable(L);
        lua_pushvalue(L, 2);
        lua_setfield(L, -2, "timeout");
        timeout = bind_opt_duration(L, 3, "timeout", -1, "subscription:next");
        lua_settop(L, 1);
    }
    if (sq_pop_push(s, L))
        return 1;
    if (s->closed) {
        lua_pushnil(L);
        lua_pushstring(L, s->close_reason ? s->close_reason : "closed");
        return 2;
    }
    if (s->waiter)
        return luaL_error(L, "subscription:next: another task is already waiting on it");
    struct task *t = task_check(L, "subscription:next");
    s->waiter = t;
    if (timeout >= 0)
        timer_arm(s->timer, sub_next_timeout, (uint64_t)(timeout * 1000 + 0.5));
    return task_wait(L, t, sub_next_cancel, s);
}

static void sub_release(struct evsub *s)
{
    if (s->sub)
        podman_events_unsubscribe(s->sub);
    s->sub = NULL;
    s->closed = 1;
    sq_clear(s);
}

/* sub:close() -> true; the last subscriber's close ends the stream. */
static int l_sub_close(lua_State *L)
{
    struct evsub *s = sub_check(L);
    sub_release(s);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_sub_gc(lua_State *L)
{
    struct evsub *s = sub_check(L);
    sub_release(s);
    free(s->items);
    s->items = NULL;
    s->cap = 0;
    pp_filter_free(&s->filter);
    free(s->close_reason);
    s->close_reason = NULL;
    timer_drop(s->timer);
    s->timer = NULL;
    return 0;
}

/* ---- stats and test hooks ---- */

/* mcp.podman.stats() -> {in_flight=, events={...}, ops={NAME={count=, errors=,
 * sum=, buckets={{le=, count=} cumulative..., {le=math.huge, count=}}}}} */
static int l_podman_stats(lua_State *L)
{
    struct agent *a = agent_from_lua(L);
    struct curlm *m = a->curl;
    lua_newtable(L);
    lua_pushnumber(L, m ? (lua_Number)curlm_in_flight(m) : 0);
    lua_setfield(L, -2, "in_flight");
    struct podman_events_stats es = { 0 };
    if (a->podman)
        podman_events_stats(a->podman, &es);
    lua_createtable(L, 0, 5);
    lua_pushnumber(L, es.subscribers);
    lua_setfield(L, -2, "subscribers");
    lua_pushboolean(L, es.connected);
    lua_setfield(L, -2, "connected");
    lua_pushnumber(L, (lua_Number)es.connects);
    lua_setfield(L, -2, "connects");
    lua_pushnumber(L, (lua_Number)es.events);
    lua_setfield(L, -2, "events");
    lua_pushnumber(L, (lua_Number)es.bad_lines);
    lua_setfield(L, -2, "bad_lines");
    lua_setfield(L, -2, "events");
    lua_newtable(L);
    size_t n = 0;
    const struct curlm_stat *st = m ? curlm_stats(m, &n) : NULL;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(st[i].name, "podman.", 7) != 0)
            continue;
        lua_createtable(L, 0, 4);
        lua_pushnumber(L, (lua_Number)st[i].count);
        lua_setfield(L, -2, "count");
        lua_pushnumber(L, (lua_Number)st[i].errors);
        lua_setfield(L, -2, "errors");
        lua_pushnumber(L, st[i].sum);
        lua_setfield(L, -2, "sum");
        lua_createtable(L, CURLM_NBUCKETS + 1, 0);
        uint64_t cum = 0;
        for (int b = 0; b <= CURLM_NBUCKETS; b++) {
            cum += st[i].buckets[b];
            lua_createtable(L, 0, 2);
            lua_pushnumber(L, b < CURLM_NBUCKETS ? curlm_bucket_le[b] : HUGE_VAL);
            lua_setfield(L, -2, "le");
            lua_pushnumber(L, (lua_Number)cum);
            lua_setfield(L, -2, "count");
            lua_rawseti(L, -2, b + 1);
        }
        lua_setfield(L, -2, "buckets");
        lua_setfield(L, -2, st[i].name + 7);
    }
    lua_setfield(L, -2, "ops");
    return 1;
}

struct decode_ctx {
    lua_State *L;
    int n;
};

static int decode_emit(void *ud, int stream, const char *line, size_t len)
{
    struct decode_ctx *c = ud;
    struct lq_item *it = malloc(sizeof *it + len);
    if (!it)
        return 1;
    it->stream = stream;
    it->len = len;
    memcpy(it->data, line, len);
    push_line_item(c->L, it);
    free(it);
    lua_rawseti(c->L, -2, ++c->n);
    return 0;
}

static int decode_frame(void *ud, int stream, const char *data, size_t len)
{
    return fl_feed(ud, stream, data, len) ? 1 : 0;
}

/* mcp.podman._decode_frames(bytes | {chunk, ...}) -> list of {stream=, line=},
 * err ("bad frame header", "cut inside a frame") or nil: the logs decoder,
 * for tests. */
static int l_podman_decode_frames(lua_State *L)
{
    int chunks = lua_istable(L, 1);
    if (!chunks)
        luaL_checkstring(L, 1);
    lua_settop(L, 1);
    lua_newtable(L);
    struct decode_ctx ctx = { L, 0 };
    struct framelines fl;
    struct pp_frames fr;
    fl_init(&fl, decode_emit, &ctx);
    pp_frames_init(&fr);
    int rc = 0;
    size_t n = chunks ? lua_objlen(L, 1) : 1;
    for (size_t i = 1; i <= n && rc == 0; i++) {
        size_t len;
        const char *data;
        if (chunks) {
            lua_rawgeti(L, 1, (int)i);
            data = lua_tolstring(L, -1, &len);
            lua_pop(L, 1);                          /* anchored by the table */
            if (!data)
                continue;
        } else {
            data = lua_tolstring(L, 1, &len);
        }
        rc = pp_frames_feed(&fr, data, len, decode_frame, &fl);
    }
    if (rc == 0)
        fl_flush(&fl);
    fl_free(&fl);
    if (rc == PP_EFRAME)
        lua_pushliteral(L, "bad frame header");
    else if (rc == 0 && pp_frames_partial(&fr))
        lua_pushliteral(L, "cut inside a frame");
    else if (rc)
        lua_pushliteral(L, "out of memory");
    else
        lua_pushnil(L);
    return 2;
}

static int split_emit(void *ud, const char *line, size_t len)
{
    struct decode_ctx *c = ud;
    lua_pushlstring(c->L, line, len);
    lua_rawseti(c->L, -2, ++c->n);
    return 0;
}

/* mcp.podman._split_lines({chunk, ...} [, max]) -> list of lines: the events
 * line splitter, for tests. */
static int l_podman_split_lines(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer max = luaL_optinteger(L, 2, 1 << 20);
    lua_settop(L, 1);
    lua_newtable(L);
    struct decode_ctx ctx = { L, 0 };
    struct pp_lines s;
    pp_lines_init(&s, (size_t)(max > 0 ? max : 1));
    size_t n = lua_objlen(L, 1);
    for (size_t i = 1; i <= n; i++) {
        size_t len;
        lua_rawgeti(L, 1, (int)i);
        const char *data = lua_tolstring(L, -1, &len);
        lua_pop(L, 1);
        if (data)
            pp_lines_feed(&s, data, len, split_emit, &ctx);
    }
    pp_lines_flush(&s, split_emit, &ctx);
    pp_lines_free(&s);
    return 1;
}

/* mcp.podman._match_event(event, filters) -> boolean: the subscribers'
 * filter, for tests. */
static int l_podman_match_event(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    struct pp_filter f = { { 0 }, { 0 } };
    filter_from_lua(L, 2, &f, "mcp.podman._match_event");     /* frees f when it raises */
    char err[256];
    json_t *ev = json_from_lua(L, 1, err, sizeof err);
    if (!ev) {
        pp_filter_free(&f);
        return luaL_error(L, "mcp.podman._match_event: %s", err);
    }
    int m = pp_event_match(ev, &f);
    pp_filter_free(&f);
    json_decref(ev);
    lua_pushboolean(L, m);
    return 1;
}

static const luaL_Reg podman_funcs[] = {
    { "connect", l_podman_connect },
    { "socket", l_podman_socket },
    { "ping", l_podman_ping },
    { "info", l_podman_info },
    { "version", l_podman_version },
    { "create", l_podman_create },
    { "start", l_podman_start },
    { "stop", l_podman_stop },
    { "restart", l_podman_restart },
    { "kill", l_podman_kill },
    { "rename", l_podman_rename },
    { "remove", l_podman_remove },
    { "inspect", l_podman_inspect },
    { "exists", l_podman_exists },
    { "list", l_podman_list },
    { "wait", l_podman_wait },
    { "logs", l_podman_logs },
    { "exec", l_podman_exec },
    { "stats", l_podman_stats },
    { "_decode_frames", l_podman_decode_frames },
    { "_split_lines", l_podman_split_lines },
    { "_match_event", l_podman_match_event },
    { NULL, NULL },
};

static const luaL_Reg images_funcs[] = {
    { "exists", l_images_exists },
    { "list", l_images_list },
    { "pull", l_images_pull },
    { "remove", l_images_remove },
    { NULL, NULL },
};

static const luaL_Reg networks_funcs[] = {
    { "create", l_networks_create },
    { "exists", l_networks_exists },
    { "list", l_networks_list },
    { "remove", l_networks_remove },
    { NULL, NULL },
};

static const luaL_Reg events_funcs[] = {
    { "subscribe", l_events_subscribe },
    { NULL, NULL },
};

static const luaL_Reg logstream_methods[] = {
    { "read", l_logstream_read },
    { "close", l_logstream_close },
    { NULL, NULL },
};

static const luaL_Reg sub_methods[] = {
    { "next", l_sub_next },
    { "close", l_sub_close },
    { NULL, NULL },
};

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods,
                      lua_CFunction gc)
{
    if (luaL_newmetatable(L, name)) {
        lua_newtable(L);
        luaL_register(L, NULL, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__gc");
        lua_pushstring(L, name);
        lua_setfield(L, -2, "__name");
    }
    lua_pop(L, 1);
}

int l_podman_open(lua_State *L)
{
    new_class(L, LOGSTREAM_MT, logstream_methods, l_logstream_gc);
    new_class(L, SUB_MT, sub_methods, l_sub_gc);
    lua_newtable(L);
    luaL_register(L, NULL, podman_funcs);
    lua_newtable(L);
    luaL_register(L, NULL, images_funcs);
    lua_setfield(L, -2, "images");
    lua_newtable(L);
    luaL_register(L, NULL, networks_funcs);
    lua_setfield(L, -2, "networks");
    lua_newtable(L);
    luaL_register(L, NULL, events_funcs);
    lua_setfield(L, -2, "events");
    return 1;
}
