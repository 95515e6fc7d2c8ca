/* l_http.c: mcp.http, an HTTP client for tasks: health checks, webhooks, the
 * CLI against agents. Requests go through the agent's curl multi (curlm.c),
 * so a slow server never stalls the loop.
 *
 * A response of any status is a result; only a failed exchange (refused,
 * timed out, TLS, malformed URL) is nil, "http METHOD URL: what failed". */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agent.h"
#include "bindings.h"
#include "curlm.h"
#include "l_json.h"
#include "podman_parse.h"

#define STREAM_MT "mcp.http.stream"
#define DEFAULT_TIMEOUT 30.0
#define DEFAULT_MAX_BODY ((size_t)16 << 20)
#define LINE_MAX_LEN ((size_t)4 << 20)
#define QUEUE_HIGH ((size_t)1 << 20)
#define QUEUE_LOW ((size_t)256 << 10)

static const char *const request_opts[] = {
    "method", "url", "headers", "body", "json", "timeout", "unix_socket", "cacert", "insecure",
    "follow", "max_body", NULL,
};

/* What a request needs, read from its option table before anything is made. */
struct hopts {
    const char *method;
    const char *url;
    const char *body;
    size_t body_len;
    char *json_body;            /* encoded from opts.json; freed by the caller */
    double timeout;
    const char *unix_socket, *cacert;
    int insecure, follow;
    size_t max_body;
};

/* Reads the option table at idx, raising on bad options; its strings stay
 * anchored by the table. o->json_body is allocated last: the caller frees it. */
static void read_opts(lua_State *L, int idx, const char *fn, const char *method,
                      struct hopts *o)
{
    memset(o, 0, sizeof *o);
    bind_check_options(L, idx, fn, request_opts);
    o->method = bind_opt_string(L, idx, "method", method, fn);
    o->url = bind_opt_string(L, idx, "url", NULL, fn);
    o->timeout = bind_opt_duration(L, idx, "timeout", DEFAULT_TIMEOUT, fn);
    o->unix_socket = bind_opt_string(L, idx, "unix_socket", NULL, fn);
    o->cacert = bind_opt_string(L, idx, "cacert", NULL, fn);
    o->insecure = bind_opt_bool(L, idx, "insecure", 0, fn);
    o->follow = bind_opt_bool(L, idx, "follow", 0, fn);
    lua_Integer mb = bind_opt_integer(L, idx, "max_body", (lua_Integer)DEFAULT_MAX_BODY, fn);
    if (mb <= 0)
        luaL_error(L, "%s: option max_body: expected a positive number of bytes", fn);
    o->max_body = (size_t)mb;
    for (const char *m = o->method; *m; m++)
        if (!isupper((unsigned char)*m))
            luaL_error(L, "%s: option method: expected an upper-case HTTP method like "
                          "\"GET\", got \"%s\"", fn, o->method);
    if (lua_isnoneornil(L, idx))
        return;
    lua_getfield(L, idx, "body");
    if (lua_type(L, -1) == LUA_TSTRING)
        o->body = lua_tolstring(L, -1, &o->body_len);
    else if (!lua_isnil(L, -1))
        luaL_error(L, "%s: option body: expected a string, got %s (use json = for tables)",
                   fn, luaL_typename(L, -1));
    lua_pop(L, 1);
    lua_getfield(L, idx, "headers");
    if (!lua_isnil(L, -1) && !lua_istable(L, -1))
        luaL_error(L, "%s: option headers: expected a table of name = value, got %s", fn,
                   luaL_typename(L, -1));
    lua_pop(L, 1);
    lua_getfield(L, idx, "json");
    if (!lua_isnil(L, -1)) {
        if (o->body)
            luaL_error(L, "%s: give body or json, not both", fn);
        char err[256];
        json_t *v = json_from_lua(L, lua_gettop(L), err, sizeof err);
        if (!v)
            luaL_error(L, "%s: option json: %s", fn, err);
        o->json_body = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(v);
        if (!o->json_body)
            luaL_error(L, "%s: option json: cannot encode", fn);
        o->body = o->json_body;
        o->body_len = strlen(o->body);
    }
    lua_pop(L, 1);
}

/* The header list from opts.headers (at idx), plus ours. Raises on a bad
 * one; json_body is freed first so that nothing leaks. */
static struct curl_slist *make_headers(lua_State *L, int idx, struct hopts *o, const char *fn)
{
    struct curl_slist *h = curl_slist_append(NULL, "Expect:");
    int has_ct = 0;
    if (!lua_isnoneornil(L, idx)) {
        lua_getfield(L, idx, "headers");
        if (lua_istable(L, -1)) {
            lua_pushnil(L);
            while (lua_next(L, -2)) {
                if (lua_type(L, -2) != LUA_TSTRING ||
                    (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)) {
                    curl_slist_free_all(h);
                    free(o->json_body);
                    o->json_body = NULL;
                    luaL_error(L, "%s: option headers: expected name = string value", fn);
                }
                const char *name = lua_tostring(L, -2);
                const char *val = lua_tostring(L, -1);
                if (strchr(name, ':') || strpbrk(name, "\r\n") || strpbrk(val, "\r\n")) {
                    curl_slist_free_all(h);
                    free(o->json_body);
                    o->json_body = NULL;
                    luaL_error(L, "%s: option headers: \"%s\" has a ':' or a line break", fn,
                               name);
                }
                if (strcasecmp(name, "content-type") == 0)
                    has_ct = 1;
                char *line = NULL;
                if (asprintf(&line, "%s: %s", name, val) > 0)
                    h = curl_slist_append(h, line);
                free(line);
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    if (o->json_body && !has_ct)
        h = curl_slist_append(h, "Content-Type: application/json");
    return h;
}

static CURL *make_easy(struct hopts *o, int stream)
{
    CURL *e = curl_easy_init();
    if (!e)
        return NULL;
    curl_easy_setopt(e, CURLOPT_URL, o->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    if (!stream && o->timeout > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(o->timeout * 1000 + 0.5));
    if (o->timeout > 0)
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(o->timeout * 1000 + 0.5));
    if (o->unix_socket)
        curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, o->unix_socket);
    if (o->cacert)
        curl_easy_setopt(e, CURLOPT_CAINFO, o->cacert);
    if (o->insecure) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (o->follow) {
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(e, CURLOPT_MAXREDIRS, 5L);
    }
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    if (strcmp(o->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(o->method, "GET") != 0 || o->body) {
        if (strcmp(o->method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, o->method);
        if (o->body || strcmp(o->method, "POST") == 0) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)o->body_len);
            curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, o->body ? o->body : "");
        }
    }
    return e;
}

/* Pushes the response headers as {lower-case name = value}; repeated
 * headers are joined with ", ". */
static void push_headers(lua_State *L, const char *raw, size_t len)
{
    lua_newtable(L);
    const char *p = raw, *end = raw + len;
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    p = nl ? nl + 1 : end;                          /* skip the status line */
    while (p < end) {
        nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon && colon > p) {
            char name[128];
            size_t nlen = (size_t)(colon - p);
            if (nlen < sizeof name) {
                for (size_t i = 0; i < nlen; i++)
                    name[i] = (char)tolower((unsigned char)p[i]);
                name[nlen] = 0;
                const char *v = colon + 1, *ve = le;
                while (v < ve && (*v == ' ' || *v == '\t'))
                    v++;
                while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                    ve--;
                lua_getfield(L, -1, name);
                if (lua_isstring(L, -1)) {
                    lua_pushliteral(L, ", ");
                    lua_pushlstring(L, v, (size_t)(ve - v));
                    lua_concat(L, 3);
                } else {
                    lua_pop(L, 1);
                    lua_pushlstring(L, v, (size_t)(ve - v));
                }
                lua_setfield(L, -2, name);
            }
        }
        p = nl ? nl + 1 : end;
    }
}

static int is_json_type(lua_State *L, int headers_idx)
{
    lua_getfield(L, headers_idx, "content-type");
    const char *ct = lua_tostring(L, -1);
    int json = ct && (strstr(ct, "/json") || strstr(ct, "+json"));
    lua_pop(L, 1);
    return json;
}

/* ---- one request ---- */

struct hreq {
    struct task *task;
    struct curlm_req *req;
    char what[300];
};

static void hreq_done(void *ud, const struct curlm_result *r)
{
    struct hreq *h = ud;
    struct task *t = h->task;
    lua_State *T = task_thread(t);
    int n = 1;
    if (r->code != CURLE_OK) {
        char why[400];
        lua_pushnil(T);
        lua_pushfstring(T, "%s: %s", h->what, curlm_describe(r, why, sizeof why));
        n = 2;
    } else {
        lua_createtable(T, 0, 4);
        lua_pushnumber(T, (lua_Number)r->status);
        lua_setfield(T, -2, "status");
        push_headers(T, r->headers, r->headers_len);
        int hidx = lua_gettop(T);
        lua_pushlstring(T, r->body, r->body_len);
        lua_setfield(T, -3, "body");
        if (r->body_len && is_json_type(T, hidx)) {
            char err[200];
            if (json_push_text(T, r->body, r->body_len, err, sizeof err) == 0)
                lua_setfield(T, -3, "json");
        }
        lua_setfield(T, -2, "headers");
    }
    free(h);
    task_resume(t, n);
}

static void hreq_cancel(void *ud)
{
    struct hreq *h = ud;
    curlm_cancel(h->req);
    free(h);
}

static void describe_target(char *out, size_t len, const struct hopts *o)
{
    snprintf(out, len, "http %s %s", o->method, o->url);
}

/* The shared body of request/get/post: opts at idx. */
static int do_request(lua_State *L, int idx, const char *fn, const struct hopts *o_in)
{
    struct hopts o = *o_in;
    if (!o.url) {
        free(o.json_body);
        return luaL_error(L, "%s: option url is required", fn);
    }
    struct task *t = task_current(L);
    if (!t) {
        free(o.json_body);
        task_check(L, fn);
    }
    struct curlm *m = curlm_of(agent_from_lua(L));
    struct curl_slist *hdrs = make_headers(L, idx, &o, fn);
    struct hreq *h = calloc(1, sizeof *h);
    CURL *e = m && h ? make_easy(&o, 0) : NULL;
    free(o.json_body);                  /* COPYPOSTFIELDS copied it */
    char what[300];
    describe_target(what, sizeof what, &o);
    if (!e) {
        free(h);
        curl_slist_free_all(hdrs);
        return bind_fail(L, what, "cannot set up the request (out of memory?)");
    }
    snprintf(h->what, sizeof h->what, "%s", what);
    h->task = t;
    static const struct curlm_callbacks cb = { NULL, NULL, hreq_done };
    h->req = curlm_start(m, e, hdrs, &cb, h, "http.request", o.max_body);
    if (!h->req) {
        free(h);
        return bind_fail(L, what, "cannot start the request");
    }
    return task_wait(L, t, hreq_cancel, h);
}

/* mcp.http.request{method, url, headers, body, json, timeout, unix_socket,
 * cacert, insecure, follow, max_body} -> {status=, headers=, body=, json=} */
static int l_http_request(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    struct hopts o;
    read_opts(L, 1, "mcp.http.request", "GET", &o);
    return do_request(L, 1, "mcp.http.request", &o);
}

/* get(url [, opts]) and post(url [, opts]): opts without url. */
static int shortcut(lua_State *L, const char *fn, const char *method)
{
    const char *url = luaL_checkstring(L, 1);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    /* A copy of opts with url set, so that one reader serves all three. */
    lua_newtable(L);
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "url");
        if (!lua_isnil(L, -1))
            return luaL_error(L, "%s: give the url as the first argument only", fn);
        lua_pop(L, 1);
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, 3);
        }
    }
    lua_pushstring(L, url);
    lua_setfield(L, 3, "url");
    lua_getfield(L, 3, "method");
    if (!lua_isnil(L, -1))
        return luaL_error(L, "%s: option method: not for this shortcut (use "
                             "mcp.http.request)", fn);
    lua_pop(L, 1);
    struct hopts o;
    read_opts(L, 3, fn, method, &o);
    return do_request(L, 3, fn, &o);
}

/* mcp.http.get(url [, opts]) */
static int l_http_get(lua_State *L) { return shortcut(L, "mcp.http.get", "GET"); }
/* mcp.http.post(url [, opts]) */
static int l_http_post(lua_State *L) { return shortcut(L, "mcp.http.post", "POST"); }

/* ---- streams ---- */

struct sline {
    struct sline *next;
    size_t len;
    char data[];
};

struct hstream {
    struct agent *a;
    struct curlm_req *req;
    struct pp_lines split;
    struct sline *head, *tail;
    size_t bytes;
    int paused, ended;
    char *error;
    long status;
    struct task *opener, *waiter;
    int ref;
    uv_timer_t *timer;
    char what[300];
};

static int hs_line(void *ud, const char *line, size_t len)
{
    struct hstream *s = ud;
    struct sline *l = malloc(sizeof *l + len);
    if (!l)
        return 1;
    l->next = NULL;
    l->len = len;
    memcpy(l->data, line, len);
    if (s->tail)
        s->tail->next = l;
    else
        s->head = l;
    s->tail = l;
    s->bytes += len;
    return 0;
}

/* Pushes the next line onto L, or returns 0. */
static int hs_pop(struct hstream *s, lua_State *L)
{
    struct sline *l = s->head;
    if (!l)
        return 0;
    s->head = l->next;
    if (!s->head)
        s->tail = NULL;
    s->bytes -= l->len;
    lua_pushlstring(L, l->data, l->len);
    free(l);
    if (s->paused && s->bytes < QUEUE_LOW && s->req) {
        s->paused = 0;
        curlm_resume(s->req);
    }
    return 1;
}

static void hs_clear(struct hstream *s)
{
    while (s->head) {
        struct sline *l = s->head;
        s->head = l->next;
        free(l);
    }
    s->tail = NULL;
    s->bytes = 0;
}

/* Inside curl: split and keep, or ask curl to hold the bytes while the
 * reader is behind. */
static int hs_data(void *ud, const char *data, size_t len)
{
    struct hstream *s = ud;
    if (s->bytes > QUEUE_HIGH) {
        s->paused = 1;
        return CURLM_DATA_PAUSE;
    }
    return pp_lines_feed(&s->split, data, len, hs_line, s) ? CURLM_DATA_ABORT : CURLM_DATA_OK;
}

static void hs_open_resume(struct hstream *s)
{
    struct task *t = s->opener;
    s->opener = NULL;
    uv_timer_stop(s->timer);
    lua_State *T = task_thread(t);
    int n = 1;
    if (s->error && !s->status) {
        lua_pushnil(T);
        lua_pushstring(T, s->error);
        n = 2;
    } else {
        lua_rawgeti(T, LUA_REGISTRYINDEX, s->ref);
        /* status and headers live in the userdata's environment */
        lua_getfenv(T, -1);
        lua_pushnumber(T, (lua_Number)s->status);
        lua_setfield(T, -2, "status");
        size_t hl = 0;
        const char *raw = s->req ? curlm_headers(s->req, &hl) : "";
        push_headers(T, raw, hl);
        lua_setfield(T, -2, "headers");
        lua_pop(T, 1);
    }
    luaL_unref(T, LUA_REGISTRYINDEX, s->ref);
    s->ref = LUA_NOREF;
    task_resume(t, n);
}

static void hs_feed_waiter(struct hstream *s)
{
    struct task *t = s->waiter;
    if (!t)
        return;
    lua_State *T = task_thread(t);
    int n = 1;
    if (!hs_pop(s, T)) {
        if (!s->ended)
            return;
        lua_pushnil(T);
        if (s->error) {
            lua_pushstring(T, s->error);
            n = 2;
        }
    }
    s->waiter = NULL;
    uv_timer_stop(s->timer);
    task_resume(t, n);
}

static void hs_wake(void *ud)
{
    struct hstream *s = ud;
    long status;
    if (s->opener) {
        if (!curlm_headers_done(s->req, &status))
            return;
        s->status = status;
        hs_open_resume(s);
        return;
    }
    hs_feed_waiter(s);
}

static void hs_done(void *ud, const struct curlm_result *r)
{
    struct hstream *s = ud;
    s->ended = 1;
    if (r->code == CURLE_OK) {
        pp_lines_flush(&s->split, hs_line, s);
    } else {
        char why[400], msg[800];
        snprintf(msg, sizeof msg, "%s: %s", s->what, curlm_describe(r, why, sizeof why));
        s->error = strdup(msg);
    }
    if (s->opener) {
        s->status = r->status;
        hs_open_resume(s);          /* req is still valid for its headers */
        s->req = NULL;
        return;
    }
    s->req = NULL;
    hs_feed_waiter(s);
}

static void hs_open_cancel(void *ud)
{
    struct hstream *s = ud;
    s->opener = NULL;
    uv_timer_stop(s->timer);
    if (s->req)
        curlm_cancel(s->req);
    s->req = NULL;
    s->ended = 1;
    luaL_unref(s->a->rt.L, LUA_REGISTRYINDEX, s->ref);
    s->ref = LUA_NOREF;
}

static void hs_open_timeout(uv_timer_t *h)
{
    struct hstream *s = h->data;
    if (!s->opener)
        return;
    if (s->req)
        curlm_cancel(s->req);
    s->req = NULL;
    s->ended = 1;
    char msg[400];
    snprintf(msg, sizeof msg, "%s: no response headers in time", s->what);
    free(s->error);
    s->error = strdup(msg);
    s->status = 0;
    hs_open_resume(s);
}

static void hs_read_cancel(void *ud)
{
    struct hstream *s = ud;
    s->waiter = NULL;
    uv_timer_stop(s->timer);
}

static void hs_read_timeout(uv_timer_t *h)
{
    struct hstream *s = h->data;
    struct task *t = s->waiter;
    if (!t)
        return;
    s->waiter = NULL;
    lua_pushnil(task_thread(t));
    lua_pushliteral(task_thread(t), "timeout");
    task_resume(t, 2);
}

/* Arms a timer from the real time: uv_now() is only refreshed when the
 * loop turns, and Lua may have run (or the loop idled in a test) long
 * enough since for a timeout to fire at once. */
static void timer_arm(uv_timer_t *t, uv_timer_cb cb, uint64_t ms)
{
    uv_update_time(t->loop);
    uv_timer_start(t, cb, ms, 0);
}

static void timer_free_cb(uv_handle_t *h)
{
    free(h);
}

/* mcp.http.stream(opts) -> stream with .status, .headers, :read([timeout]),
 * :close(); waits for the response headers (opts.timeout bounds that wait). */
static int l_http_stream(lua_State *L)
{
    const char *fn = "mcp.http.stream";
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    struct hopts o;
    read_opts(L, 1, fn, "GET", &o);
    if (!o.url) {
        free(o.json_body);
        return luaL_error(L, "%s: option url is required", fn);
    }
    struct task *t = task_current(L);
    if (!t) {
        free(o.json_body);
        task_check(L, fn);
    }
    struct agent *a = agent_from_lua(L);
    struct curlm *m = curlm_of(a);
    struct curl_slist *hdrs = make_headers(L, 1, &o, fn);
    CURL *e = m ? make_easy(&o, 1) : NULL;
    free(o.json_body);
    char what[300];
    describe_target(what, sizeof what, &o);
    struct hstream *s = lua_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    s->a = a;
    s->ref = LUA_NOREF;
    pp_lines_init(&s->split, LINE_MAX_LEN);
    snprintf(s->what, sizeof s->what, "%s", what);
    luaL_getmetatable(L, STREAM_MT);
    lua_setmetatable(L, -2);
    lua_newtable(L);
    lua_setfenv(L, -2);
    s->timer = malloc(sizeof *s->timer);
    if (s->timer) {
        uv_timer_init(a->loop, s->timer);
        s->timer->data = s;
    }
    if (!e || !s->timer) {
        curl_easy_cleanup(e);
        curl_slist_free_all(hdrs);
        return bind_fail(L, what, "cannot set up the request (out of memory?)");
    }
    static const struct curlm_callbacks cb = { hs_data, hs_wake, hs_done };
    s->req = curlm_start(m, e, hdrs, &cb, s, NULL, 0);
    if (!s->req)
        return bind_fail(L, what, "cannot start the request");
    s->opener = t;
    lua_pushvalue(L, -1);
    s->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (o.timeout > 0)
        timer_arm(s->timer, hs_open_timeout, (uint64_t)(o.timeout * 1000 + 0.5));
    return task_wait(L, t, hs_open_cancel, s);
}

static struct hstream *hs_check(lua_State *L)
{
    return luaL_checkudata(L, 1, STREAM_MT);
}

/* stream:read([timeout]) -> line; nil at the end; nil, err; nil, "timeout" */
static int l_stream_read(lua_State *L)
{
    struct hstream *s = hs_check(L);
    double timeout = -1;
    if (!lua_isnoneornil(L, 2)) {
        lua_settop(L, 2);
        lua_newtable(L);
        lua_pushvalue(L, 2);
        lua_setfield(L, -2, "timeout");
        timeout = bind_opt_duration(L, 3, "timeout", -1, "stream:read");
        lua_settop(L, 1);
    }
    if (hs_pop(s, L))
        return 1;
    if (s->ended) {
        lua_pushnil(L);
        if (s->error) {
            lua_pushstring(L, s->error);
            return 2;
        }
        return 1;
    }
    if (s->waiter)
        return luaL_error(L, "stream:read: another task is already reading this stream");
    struct task *t = task_check(L, "stream:read");
    s->waiter = t;
    if (timeout >= 0)
        timer_arm(s->timer, hs_read_timeout, (uint64_t)(timeout * 1000 + 0.5));
    return task_wait(L, t, hs_read_cancel, s);
}

/* stream:close() -> true */
static int l_stream_close(lua_State *L)
{
    struct hstream *s = hs_check(L);
    if (s->req)
        curlm_cancel(s->req);
    s->req = NULL;
    s->ended = 1;
    hs_clear(s);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_stream_gc(lua_State *L)
{
    struct hstream *s = hs_check(L);
    if (s->req)
        curlm_cancel(s->req);
    s->req = NULL;
    hs_clear(s);
    pp_lines_free(&s->split);
    free(s->error);
    s->error = NULL;
    if (s->timer) {
        uv_timer_stop(s->timer);
        uv_close((uv_handle_t *)s->timer, timer_free_cb);
        s->timer = NULL;
    }
    return 0;
}

/* Methods first, then .status and .headers from the environment. */
static int l_stream_index(lua_State *L)
{
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "methods");
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    if (!lua_isnil(L, -1))
        return 1;
    lua_getfenv(L, 1);
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

static const luaL_Reg http_funcs[] = {
    { "request", l_http_request },
    { "get", l_http_get },
    { "post", l_http_post },
    { "stream", l_http_stream },
    { NULL, NULL },
};

static const luaL_Reg stream_methods[] = {
    { "read", l_stream_read },
    { "close", l_stream_close },
    { NULL, NULL },
};

int l_http_open(lua_State *L)
{
    if (luaL_newmetatable(L, STREAM_MT)) {
        lua_newtable(L);
        luaL_register(L, NULL, stream_methods);
        lua_setfield(L, -2, "methods");
        lua_pushcfunction(L, l_stream_index);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_stream_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_register(L, NULL, http_funcs);
    return 1;
}
