/* httpd.c: the HTTP API server: libmicrohttpd on the agent's loop.
 *
 * MHD runs without a thread of its own (MHD_USE_EPOLL, external polling):
 * one uv_poll per listening address watches MHD's epoll descriptor and a
 * uv_timer follows MHD_get_timeout. A request is collected here (headers,
 * body up to max_body), then handed to Lua as a task running
 * require("mcp.api").handle(req) while its connection is suspended; the
 * task's results become the response and the connection is resumed.
 *
 * What MHD does not do for us:
 * - a suspended connection is invisible to MHD, so a uv_poll on its socket
 *   (UV_DISCONNECT) notices a client that goes away and aborts the task;
 * - MHD's timeout counts idle time only, so a sweep cuts off a client that
 *   takes longer than connection_timeout to send one whole request;
 * - client certificates are requested by MHD but verified here.
 *
 * Lifetimes: a request (struct httpd_req) lives until MHD has completed it,
 * its task has ended, MHD has released its streaming response and no task
 * waits on its stream. Lua holds it through a box that is emptied when it is
 * freed. A connection (struct httpd_conn) lives from MHD's STARTED to CLOSED
 * notification. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <jansson.h>
#include <lauxlib.h>
#include <microhttpd.h>

#include "agent.h"
#include "config.h"
#include "httpd.h"
#include "l_json.h"
#include "log.h"
#include "util.h"

/* Per-connection memory of MHD: the request line and headers must fit. */
#define HTTPD_POOL_SIZE (64 * 1024)
/* Bytes a stream buffers before s:write makes its task wait for the client,
 * and the level under which the task goes on. */
#define STREAM_HIGH (256 * 1024)
#define STREAM_LOW (64 * 1024)
#define STREAM_BLOCK (16 * 1024)
/* TLS 1.3 only, with GnuTLS's default choice of everything else. */
#define TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3"

struct httpd_listener {
    struct httpd *h;
    struct MHD_Daemon *d;
    uv_poll_t poll;
    int fd;                     /* listening socket, -1 once closed */
    char addr[INET6_ADDRSTRLEN + 16];
};

struct httpd_conn {
    struct httpd *h;
    struct httpd_conn *next, *prev;
    struct MHD_Connection *mc;
    int fd;
    uint64_t since;             /* ms: receiving a request since; 0: not receiving */
    uv_poll_t *watch;           /* while a request of it is suspended */
    struct httpd_req *suspended;
    int tls_checked, tls_ok;
    char *tls_subject;          /* verified client certificate's subject */
    char tls_why[200];          /* why not verified */
};

struct httpd_req {
    struct httpd *h;
    struct httpd_req *next, *prev;
    struct httpd_conn *conn;    /* NULL once completed */
    struct MHD_Connection *mc;  /* NULL once completed */
    char *uri;                  /* as the client sent it */
    char method[16];
    uint64_t t0;

    char *body;
    size_t body_len, body_cap;
    int started, too_large, dispatched, queued, completed, suspended, gone, in_abort;
    int freeing;

    struct task *task;
    uv_timer_t *deadline;

    struct MHD_Response *resp;  /* ready to queue when the connection resumes */
    unsigned status;
    int resp_alive;             /* MHD still holds the streaming response */

    int streaming, seof, sfail;
    char *sbuf;
    size_t soff, slen, scap;
    struct task *writer;        /* waits in s:write */
    int writer_wake;            /* 1: resume it with true, 2: with false */

    struct httpd_box *box;
    int box_ref;
};

struct httpd {
    struct agent *a;
    struct httpd_listener *ls;
    size_t nls;
    char **addrs;
    uv_timer_t timer;           /* MHD's timeouts, and kicks */
    uv_timer_t sweep;           /* slow clients */
    int pending_closes;
    int in_run, kick_pending;
    int accepting, closing;

    char *cert, *key, *ca;
    uint64_t max_body;
    unsigned max_connections;
    double timeout;
    struct task_limits limits;
    int handler_ref;

    struct httpd_conn *conns;
    struct httpd_req *reqs;
    struct httpd_stats st;
};

static void httpd_kick(struct httpd *h);
static void req_maybe_free(struct httpd_req *r);

/* ---- helpers ---------------------------------------------------------- */

static uint64_t now_ms(struct httpd *h)
{
    return uv_now(h->a->loop);
}

static lua_State *main_L(struct httpd *h)
{
    return h->a->rt.L;
}

/* {"error": {"code": CODE, "message": MSG}} as a new MHD response. */
static struct MHD_Response *error_body(const char *code, const char *msg)
{
    json_t *v = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
    char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    size_t len = text ? strlen(text) : 0;
    char *buf = malloc(len + 2);
    if (buf) {
        memcpy(buf, text ? text : "", len);
        buf[len++] = '\n';
    }
    free(text);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(buf ? len : 0, buf, MHD_RESPMEM_MUST_FREE);
    if (resp)
        MHD_add_response_header(resp, "Content-Type", "application/json");
    return resp;
}

/* Sets r's response to an error; it is queued when the connection resumes. */
static void req_set_error(struct httpd_req *r, unsigned status, const char *code,
                          const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void req_set_error(struct httpd_req *r, unsigned status, const char *code,
                          const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->resp)
        MHD_destroy_response(r->resp);
    r->resp = error_body(code, msg);
    r->status = status;
}

static enum MHD_Result req_queue(struct httpd_req *r)
{
    if (!r->resp)
        return MHD_NO;
    enum MHD_Result rc = MHD_queue_response(r->mc, r->status, r->resp);
    MHD_destroy_response(r->resp);
    r->resp = NULL;
    r->queued = 1;
    if (r->conn)
        r->conn->since = 0;
    return rc;
}

/* The first line of a (traceback-laden) error message, into buf. */
static const char *first_line(const char *msg, char *buf, size_t len)
{
    if (!msg)
        return "?";
    size_t n = strcspn(msg, "\n");
    if (n >= len)
        n = len - 1;
    memcpy(buf, msg, n);
    buf[n] = 0;
    return buf;
}

/* ---- the peer going away while its request is suspended ---------------- */

static void watch_free(uv_handle_t *hd)
{
    free(hd);
}

static void req_gone(struct httpd_req *r, const char *why);

static void watch_fired(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    struct httpd_conn *c = p->data;
    uv_poll_stop(p);
    if (c->suspended) {
        if (c->suspended->task)
            c->h->st.client_gone++;
        req_gone(c->suspended, "the client went away");
    }
}

/* UV_DISCONNECT (EPOLLRDHUP, or an error or hang-up): a client that shuts
 * down its sending side counts as gone, as it does for nginx; HTTP clients
 * keep both sides open while they wait for an answer. */
static void watch_start(struct httpd_conn *c, struct httpd_req *r)
{
    c->suspended = r;
    if (!c->watch) {
        c->watch = malloc(sizeof *c->watch);
        if (!c->watch || uv_poll_init_socket(c->h->a->loop, c->watch, c->fd) != 0) {
            free(c->watch);
            c->watch = NULL;
            return;
        }
        c->watch->data = c;
    }
    uv_poll_start(c->watch, UV_DISCONNECT, watch_fired);
}

static void watch_stop(struct httpd_conn *c)
{
    c->suspended = NULL;
    if (c->watch)
        uv_poll_stop(c->watch);
}

static void req_suspend(struct httpd_req *r)
{
    if (r->suspended || !r->mc)
        return;
    MHD_suspend_connection(r->mc);
    r->suspended = 1;
    if (r->conn)
        watch_start(r->conn, r);
}

static void req_resume(struct httpd_req *r)
{
    if (!r->suspended)
        return;
    r->suspended = 0;
    if (r->conn)
        watch_stop(r->conn);
    MHD_resume_connection(r->mc);
    httpd_kick(r->h);
}

/* The client is gone (or the server is closing): the task is aborted and
 * the connection, resumed, is closed by MHD. */
static void req_gone(struct httpd_req *r, const char *why)
{
    if (r->gone)
        return;
    r->gone = 1;
    if (r->task) {
        char msg[300];
        snprintf(msg, sizeof msg, "api %s %.200s: %s", r->method, r->uri, why);
        r->in_abort = 1;
        task_abort(r->task, msg);
        r->in_abort = 0;
    }
    if (r->writer) {
        r->writer_wake = 2;
        httpd_kick(r->h);
    }
    req_resume(r);
}

/* ---- the request's task ------------------------------------------------ */

static void timer_free(uv_handle_t *hd)
{
    free(hd);
}

static void deadline_stop(struct httpd_req *r)
{
    if (r->deadline) {
        uv_timer_stop(r->deadline);
        uv_close((uv_handle_t *)r->deadline, timer_free);
        r->deadline = NULL;
    }
}

static void deadline_fired(uv_timer_t *tm)
{
    struct httpd_req *r = tm->data;
    deadline_stop(r);
    if (!r->task || r->streaming)
        return;
    char msg[300];
    snprintf(msg, sizeof msg, "api %s %.200s: deadline of %g s exceeded", r->method, r->uri,
             r->h->limits.timeout);
    r->h->st.deadline++;
    r->in_abort = 1;
    task_abort(r->task, msg);
    r->in_abort = 0;
    req_set_error(r, 504, "deadline_exceeded", "%s", msg);
    req_resume(r);
}

/* A header name: an HTTP token. */
static int header_name_ok(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (*s <= 32 || *s >= 127 || strchr("()<>@,;:\\\"/[]?={}", *s))
            return 0;
    return 1;
}

static int header_value_ok(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == 0)
            return 0;
    return 1;
}

/* Adds the header table at idx of L to resp. Returns 0, or -1 with err. */
static int add_headers(struct MHD_Response *resp, lua_State *L, int idx, int *has_type,
                       char *err, size_t err_len)
{
    *has_type = 0;
    if (lua_isnoneornil(L, idx))
        return 0;
    if (lua_type(L, idx) != LUA_TTABLE) {
        snprintf(err, err_len, "headers must be a table, got %s", luaL_typename(L, idx));
        return -1;
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING ||
            (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)) {
            snprintf(err, err_len, "headers: expected string names and string values, got "
                     "%s = %s", luaL_typename(L, -2), luaL_typename(L, -1));
            lua_pop(L, 2);
            return -1;
        }
        const char *name = lua_tostring(L, -2);
        size_t vlen;
        lua_pushvalue(L, -1);       /* tostring on a copy: keys must stay as they are */
        const char *value = lua_tolstring(L, -1, &vlen);
        if (!header_name_ok(name) || !header_value_ok(value, vlen)) {
            snprintf(err, err_len, "headers: invalid header %.100s", name);
            lua_pop(L, 3);
            return -1;
        }
        if (strcasecmp(name, "Content-Type") == 0)
            *has_type = 1;
        if (strcasecmp(name, "Content-Length") != 0 &&
            strcasecmp(name, "Transfer-Encoding") != 0 &&
            MHD_add_response_header(resp, name, value) != MHD_YES) {
            snprintf(err, err_len, "headers: cannot add %.100s", name);
            lua_pop(L, 3);
            return -1;
        }
        lua_pop(L, 2);
    }
    return 0;
}

/* The response from the handler's results: status, body, headers. */
static int build_response(struct httpd_req *r, lua_State *co, int n, char *err,
                          size_t err_len)
{
    if (n < 1 || lua_type(co, 1) != LUA_TNUMBER) {
        snprintf(err, err_len, "the handler returned %s instead of a status code",
                 n < 1 ? "nothing" : luaL_typename(co, 1));
        return -1;
    }
    double st = lua_tonumber(co, 1);
    if (st < 100 || st > 599 || st != floor(st)) {
        snprintf(err, err_len, "the handler returned the status %g (expected 100..599)", st);
        return -1;
    }
    const char *data = "";
    size_t len = 0;
    char *json = NULL;
    const char *type = "text/plain; charset=utf-8";
    int bt = n >= 2 ? lua_type(co, 2) : LUA_TNIL;
    if (bt == LUA_TSTRING) {
        data = lua_tolstring(co, 2, &len);
    } else if (bt == LUA_TTABLE) {
        char jerr[256];
        json_t *v = json_from_lua(co, 2, jerr, sizeof jerr);
        if (!v) {
            snprintf(err, err_len, "the response body cannot be JSON: %s", jerr);
            return -1;
        }
        json = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(v);
        if (!json) {
            snprintf(err, err_len, "the response body cannot be JSON");
            return -1;
        }
        len = strlen(json);
        char *nl = realloc(json, len + 2);
        if (nl) {
            json = nl;
            json[len++] = '\n';
            json[len] = 0;
        }
        data = json;
        type = "application/json";
    } else if (bt != LUA_TNIL) {
        snprintf(err, err_len, "the response body must be a string or a table, got %s",
                 luaL_typename(co, 2));
        return -1;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    free(json);
    if (!resp) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    int has_type;
    if (add_headers(resp, co, n >= 3 ? 3 : 0, &has_type, err, err_len) != 0) {
        MHD_destroy_response(resp);
        return -1;
    }
    if (!has_type && bt != LUA_TNIL)
        MHD_add_response_header(resp, "Content-Type", type);
    if (r->resp)
        MHD_destroy_response(r->resp);
    r->resp = resp;
    r->status = (unsigned)st;
    return 0;
}

static void req_task_done(struct task *t, int ok, void *ud)
{
    struct httpd_req *r = ud;
    struct httpd *h = r->h;
    r->task = NULL;
    deadline_stop(r);
    if (r->writer == t)
        r->writer = NULL;
    if (r->in_abort)
        return;                 /* whoever aborted it deals with the request */
    if (r->completed || r->gone) {
        req_maybe_free(r);
        return;
    }
    char err[512], line[400];
    if (r->streaming) {
        if (ok) {
            r->seof = 1;
        } else {
            r->sfail = 1;
            h->st.task_failed++;
        }
        req_resume(r);
        return;
    }
    if (!ok) {
        h->st.task_failed++;
        req_set_error(r, 500, "internal", "%s", first_line(task_error(t), line, sizeof line));
    } else if (build_response(r, task_thread(t), task_nresults(t), err, sizeof err) != 0) {
        h->st.task_failed++;
        log_error("api %s %s: %s", r->method, r->uri, err);
        req_set_error(r, 500, "internal", "api %s %.200s: %s", r->method, r->uri, err);
    }
    req_resume(r);
}

/* ---- the req table ------------------------------------------------------ */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..len) (and '+' into ' ' when plus) into a new Lua
 * string. Returns 0, or -1 when an escape is malformed or decodes to NUL
 * and nul_ok is not set (nothing pushed then). */
static int push_decoded(lua_State *L, const char *s, size_t len, int plus, int nul_ok)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            int hi = i + 1 < len ? hexval((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < len ? hexval((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (!nul_ok && hi == 0 && lo == 0)) {
                luaL_pushresult(&b);
                lua_pop(L, 1);
                return -1;
            }
            luaL_addchar(&b, (char)(hi * 16 + lo));
            i += 2;
        } else if (plus && s[i] == '+') {
            luaL_addchar(&b, ' ');
        } else {
            luaL_addchar(&b, s[i]);
        }
    }
    luaL_pushresult(&b);
    return 0;
}

static enum MHD_Result header_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    (void)kind;
    lua_State *L = cls;
    char name[256];
    size_t n = strlen(key);
    if (n >= sizeof name)
        return MHD_YES;
    for (size_t i = 0; i <= n; i++)
        name[i] = (char)((key[i] >= 'A' && key[i] <= 'Z') ? key[i] + 32 : key[i]);
    lua_getfield(L, -1, name);
    if (lua_isstring(L, -1)) {
        /* A repeated header: its values joined as RFC 9110 allows. */
        lua_pushliteral(L, ", ");
        lua_pushstring(L, value ? value : "");
        lua_concat(L, 3);
    } else {
        lua_pop(L, 1);
        lua_pushstring(L, value ? value : "");
    }
    lua_setfield(L, -2, name);
    return MHD_YES;
}

/* Pushes the req table of r. Returns 0, or -1 with err (a 400). */
static int push_req(lua_State *L, struct httpd_req *r, char *err, size_t err_len)
{
    int top = lua_gettop(L);
    const char *uri = r->uri;
    const char *q = strchr(uri, '?');
    size_t plen = q ? (size_t)(q - uri) : strlen(uri);

    lua_createtable(L, 0, 14);
    lua_pushstring(L, r->method);
    lua_setfield(L, -2, "method");
    lua_pushlstring(L, uri, plen);
    lua_setfield(L, -2, "raw_path");
    if (push_decoded(L, uri, plen, 0, 0) != 0) {
        snprintf(err, err_len, "the path has a malformed percent-escape or a %%00");
        lua_settop(L, top);
        return -1;
    }
    lua_setfield(L, -2, "path");
    lua_pushstring(L, q ? q + 1 : "");
    lua_setfield(L, -2, "raw_query");

    lua_newtable(L);
    for (const char *p = q ? q + 1 : NULL; p && *p;) {
        size_t n = strcspn(p, "&");
        const char *eq = memchr(p, '=', n);
        size_t klen = eq ? (size_t)(eq - p) : n;
        if (klen > 0) {
            if (push_decoded(L, p, klen, 1, 1) != 0 ||
                (eq ? push_decoded(L, eq + 1, n - klen - 1, 1, 1)
                    : (lua_pushliteral(L, ""), 0)) != 0) {
                snprintf(err, err_len, "the query has a malformed percent-escape");
                lua_settop(L, top);
                return -1;
            }
            lua_settable(L, -3);
        }
        p += n;
        if (*p == '&')
            p++;
    }
    lua_setfield(L, -2, "query");

    lua_newtable(L);
    MHD_get_connection_values(r->mc, MHD_HEADER_KIND, header_iter, L);
    lua_setfield(L, -2, "headers");

    lua_pushlstring(L, r->body ? r->body : "", r->body_len);
    lua_setfield(L, -2, "body");

    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        char ip[INET6_ADDRSTRLEN] = "?";
        int port = 0;
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET) {
            const struct sockaddr_in *in = (const void *)sa;
            inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
            port = ntohs(in->sin_port);
        } else if (sa->sa_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const void *)sa;
            inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
            port = ntohs(in6->sin6_port);
        }
        lua_pushstring(L, ip);
        lua_setfield(L, -2, "remote");
        lua_pushinteger(L, port);
        lua_setfield(L, -2, "remote_port");
    }
    lua_pushstring(L, r->h->cert ? "https" : "http");
    lua_setfield(L, -2, "scheme");
    if (r->conn && r->conn->tls_subject) {
        lua_pushstring(L, r->conn->tls_subject);
        lua_setfield(L, -2, "tls");
    }

    /* req:stream(...) through a per-request metatable, so that the fields
     * stay plain data (a handler may encode req.query as JSON). */
    r->box = lua_newuserdata(L, sizeof *r->box);
    r->box->r = r;
    luaL_getmetatable(L, "mcp.httpd.stream");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    r->box_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_createtable(L, 0, 1);           /* metatable */
    lua_createtable(L, 0, 1);           /* __index */
    lua_pushvalue(L, -3);
    lua_pushcclosure(L, l_httpd_req_stream, 1);
    lua_setfield(L, -2, "stream");
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -3);
    lua_pop(L, 1);                      /* the box */
    return 0;
}

/* Hands the complete request to Lua. */
static enum MHD_Result dispatch(struct httpd_req *r)
{
    struct httpd *h = r->h;
    lua_State *L = main_L(h);
    int top = lua_gettop(L);
    char err[512], line[400];
    r->dispatched = 1;
    if (h->handler_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->handler_ref);
    } else {
        lua_getglobal(L, "require");
        lua_pushliteral(L, "mcp.api");
        if (runtime_pcall(L, 1, 1, "api: require(\"mcp.api\")") != 0) {
            req_set_error(r, 500, "internal", "api: cannot load mcp.api: %s",
                          first_line(lua_tostring(L, -1), line, sizeof line));
            lua_settop(L, top);
            return req_queue(r);
        }
        lua_getfield(L, -1, "handle");
        lua_remove(L, -2);
    }
    if (!lua_isfunction(L, -1)) {
        lua_settop(L, top);
        req_set_error(r, 500, "internal", "api: mcp.api.handle is not a function");
        return req_queue(r);
    }
    if (push_req(L, r, err, sizeof err) != 0) {
        lua_settop(L, top);
        req_set_error(r, 400, "bad_request", "%s", err);
        return req_queue(r);
    }
    char name[80];
    int plen = (int)strcspn(r->uri, "?");
    snprintf(name, sizeof name, "api %.15s %.*s", r->method, plen > 58 ? 58 : plen, r->uri);
    struct task_limits lim = h->limits;
    lim.timeout = 0;            /* ours below: lifted once the handler streams */
    r->task = task_spawn(&h->a->rt, L, 1, name, &lim, req_task_done, r);
    lua_settop(L, top);
    if (!r->task) {
        req_set_error(r, 503, "unavailable", "api: cannot start a task (out of memory)");
        return req_queue(r);
    }
    if (h->limits.timeout > 0) {
        r->deadline = malloc(sizeof *r->deadline);
        if (r->deadline) {
            uv_timer_init(h->a->loop, r->deadline);
            r->deadline->data = r;
            uv_timer_start(r->deadline, deadline_fired,
                           (uint64_t)(h->limits.timeout * 1000) + 1, 0);
        }
    }
    req_suspend(r);
    return MHD_YES;
}

/* ---- MHD callbacks ------------------------------------------------------ */

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *mc)
{
    (void)mc;
    struct httpd_listener *l = cls;
    struct httpd_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->h = l->h;
    r->uri = util_strdup(uri);
    r->box_ref = LUA_NOREF;
    r->t0 = now_ms(l->h);
    r->next = l->h->reqs;
    if (r->next)
        r->next->prev = r;
    l->h->reqs = r;
    return r;
}

/* Verifies the peer's certificate once per connection. */
static int conn_client_ok(struct httpd *h, struct httpd_conn *c, struct MHD_Connection *mc)
{
    if (!h->ca)
        return 1;
    if (c->tls_checked)
        return c->tls_ok;
    c->tls_checked = 1;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    gnutls_session_t s = ci ? (gnutls_session_t)ci->tls_session : NULL;
    unsigned status = 0;
    int rc = s ? gnutls_certificate_verify_peers2(s, &status) : GNUTLS_E_INTERNAL_ERROR;
    if (rc == GNUTLS_E_NO_CERTIFICATE_FOUND) {
        snprintf(c->tls_why, sizeof c->tls_why, "a client certificate is required");
        return 0;
    }
    if (rc != 0) {
        snprintf(c->tls_why, sizeof c->tls_why, "the client certificate cannot be "
                 "verified: %s", gnutls_strerror(rc));
        return 0;
    }
    if (status != 0) {
        gnutls_datum_t out = { NULL, 0 };
        gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0);
        snprintf(c->tls_why, sizeof c->tls_why, "the client certificate is not trusted "
                 "by client_ca: %s", out.data ? (char *)out.data : "?");
        gnutls_free(out.data);
        return 0;
    }
    unsigned n = 0;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(s, &n);
    gnutls_x509_crt_t crt;
    if (n > 0 && gnutls_x509_crt_init(&crt) == 0) {
        gnutls_datum_t dn = { NULL, 0 };
        if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) == 0 &&
            gnutls_x509_crt_get_dn3(crt, &dn, 0) == 0) {
            c->tls_subject = util_strdup((char *)dn.data);
            gnutls_free(dn.data);
        }
        gnutls_x509_crt_deinit(crt);
    }
    if (!c->tls_subject)
        c->tls_subject = util_strdup("");
    c->tls_ok = 1;
    return 1;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *mc, const char *url,
                                 const char *method, const char *version,
                                 const char *upload, size_t *upload_size, void **req_cls)
{
    (void)url;
    (void)version;
    struct httpd_listener *l = cls;
    struct httpd *h = l->h;
    struct httpd_req *r = *req_cls;
    if (!r)
        return MHD_NO;          /* out of memory in on_uri */

    if (!r->started) {
        r->started = 1;
        r->mc = mc;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        r->conn = ci ? ci->socket_context : NULL;
        snprintf(r->method, sizeof r->method, "%s", method);
        h->st.requests_total++;
        if (!h->accepting) {
            h->st.unavailable++;
            req_set_error(r, 503, "unavailable", "the agent is stopping");
            return req_queue(r);
        }
        if (r->conn && !conn_client_ok(h, r->conn, mc)) {
            h->st.forbidden++;
            req_set_error(r, 403, "forbidden", "%s", r->conn->tls_why);
            return req_queue(r);
        }
        const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > h->max_body) {
            r->too_large = 1;
            h->st.too_large++;
            req_set_error(r, 413, "too_large", "the request body of %s bytes is larger "
                          "than [api] max_body (%llu bytes)", cl,
                          (unsigned long long)h->max_body);
            return req_queue(r);
        }
        return MHD_YES;
    }
    if (r->queued) {
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (r->too_large)
            return MHD_YES;
        if (r->body_len + n > h->max_body) {
            r->too_large = 1;
            h->st.too_large++;
            free(r->body);
            r->body = NULL;
            r->body_len = r->body_cap = 0;
            req_set_error(r, 413, "too_large", "the request body is larger than [api] "
                          "max_body (%llu bytes)", (unsigned long long)h->max_body);
            /* Answer at once where MHD allows it; else after the rest is read
             * (and dropped). */
            if (MHD_queue_response(mc, r->status, r->resp) == MHD_YES) {
                MHD_destroy_response(r->resp);
                r->resp = NULL;
                r->queued = 1;
            }
            return MHD_YES;
        }
        if (r->body_len + n + 1 > r->body_cap) {
            size_t cap = r->body_cap ? r->body_cap : 4096;
            while (cap < r->body_len + n + 1)
                cap *= 2;
            char *b = realloc(r->body, cap);
            if (!b)
                return MHD_NO;
            r->body = b;
            r->body_cap = cap;
        }
        memcpy(r->body + r->body_len, upload, n);
        r->body_len += n;
        return MHD_YES;
    }
    /* The whole request is here (or the connection was resumed). */
    if (r->conn)
        r->conn->since = 0;
    if (r->gone)
        return MHD_NO;
    if (r->resp)
        return req_queue(r);
    if (r->dispatched) {
        /* Resumed for a stream that has no data yet: wait again. */
        req_suspend(r);
        return MHD_YES;
    }
    return dispatch(r);
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)mc;
    struct httpd *h = cls;
    struct httpd_req *r = *req_cls;
    if (!r)
        return;
    *req_cls = NULL;
    r->completed = 1;
    if (r->conn) {
        r->conn->since = now_ms(h);
        if (r->conn->suspended == r)
            watch_stop(r->conn);
    }
    r->conn = NULL;
    r->mc = NULL;
    r->suspended = 0;
    /* A handler may go on after closing its stream; otherwise the client
     * is gone and so is the reason to run it. */
    if ((r->task || r->writer) && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED)
            h->st.slow_clients++;
        else if (toe != MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN)
            h->st.client_gone++;
        req_gone(r, toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN ? "the server is closing"
                    : toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED ? "the client timed out"
                    : "the client went away");
    }
    req_maybe_free(r);
}

static void on_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct httpd_listener *l = cls;
    struct httpd *h = l->h;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        struct httpd_conn *c = calloc(1, sizeof *c);
        if (!c)
            return;
        c->h = h;
        c->mc = mc;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
        c->fd = ci ? ci->connect_fd : -1;
        c->since = now_ms(h);
        c->next = h->conns;
        if (c->next)
            c->next->prev = c;
        h->conns = c;
        h->st.connections++;
        h->st.connections_total++;
        *socket_context = c;
        return;
    }
    struct httpd_conn *c = *socket_context;
    if (!c)
        return;
    *socket_context = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    h->st.connections--;
    if (c->suspended)
        c->suspended->conn = NULL;
    if (c->watch)               /* before MHD closes the descriptor */
        uv_close((uv_handle_t *)c->watch, watch_free);
    free(c->tls_subject);
    free(c);
}

static enum MHD_Result accept_policy(void *cls, const struct sockaddr *addr, socklen_t len)
{
    (void)addr;
    (void)len;
    struct httpd *h = cls;
    if (h->max_connections && (unsigned)h->st.connections >= h->max_connections) {
        h->st.refused++;
        return MHD_NO;
    }
    return MHD_YES;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    buf[strcspn(buf, "\n")] = 0;
    log_debug("api: %s", buf);
}

/* ---- streaming ------------------------------------------------------------ */

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct httpd_req *r = cls;
    size_t pending = r->slen - r->soff;
    if (pending > 0) {
        size_t n = pending < max ? pending : max;
        memcpy(buf, r->sbuf + r->soff, n);
        r->soff += n;
        if (r->soff == r->slen)
            r->soff = r->slen = 0;
        if (r->writer && !r->writer_wake && r->slen - r->soff < STREAM_LOW) {
            r->writer_wake = 1;
            httpd_kick(r->h);
        }
        return (ssize_t)n;
    }
    if (r->sfail || r->gone)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (r->seof)
        return MHD_CONTENT_READER_END_OF_STREAM;
    req_suspend(r);
    return 0;
}

static void stream_free(void *cls)
{
    struct httpd_req *r = cls;
    r->resp_alive = 0;
    r->h->st.streams--;
    if (!r->freeing)
        req_maybe_free(r);
}

int httpd_stream_start(struct httpd_req *r, lua_State *L, int status, int headers_idx,
                       char *err, size_t err_len)
{
    if (!r || r->gone || r->completed) {
        snprintf(err, err_len, "the client has gone away");
        return -1;
    }
    if (r->streaming || r->resp || r->queued) {
        snprintf(err, err_len, "the response has already started");
        return -2;
    }
    if (status < 100 || status > 599) {
        snprintf(err, err_len, "status %d is not a status code (100..599)", status);
        return -2;
    }
    struct MHD_Response *resp = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, STREAM_BLOCK, stream_read, r, stream_free);
    if (!resp) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    int has_type;
    if (add_headers(resp, L, headers_idx, &has_type, err, err_len) != 0) {
        MHD_destroy_response(resp);
        return -2;
    }
    if (!has_type)
        MHD_add_response_header(resp, "Content-Type", "application/x-ndjson");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    /* A proxy in front (nginx) passes each chunk on at once. */
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    r->resp = resp;
    r->status = (unsigned)status;
    r->resp_alive = 1;
    r->streaming = 1;
    r->h->st.streams++;
    deadline_stop(r);
    req_resume(r);
    return 0;
}

int httpd_stream_write(struct httpd_req *r, const char *data, size_t len, int *must_wait)
{
    *must_wait = 0;
    if (!r || r->gone || r->completed || r->sfail)
        return 0;
    if (!r->streaming)
        return -1;
    if (r->seof)
        return 0;
    if (len == 0)
        return 1;
    if (r->soff > 0 && r->slen + len > r->scap) {
        memmove(r->sbuf, r->sbuf + r->soff, r->slen - r->soff);
        r->slen -= r->soff;
        r->soff = 0;
    }
    if (r->slen + len > r->scap) {
        size_t cap = r->scap ? r->scap : 4096;
        while (cap < r->slen + len)
            cap *= 2;
        char *b = realloc(r->sbuf, cap);
        if (!b)
            return 0;
        r->sbuf = b;
        r->scap = cap;
    }
    memcpy(r->sbuf + r->slen, data, len);
    r->slen += len;
    req_resume(r);
    if (r->slen - r->soff > STREAM_HIGH && !r->writer)
        *must_wait = 1;
    return 1;
}

static void writer_cancel(void *op)
{
    struct httpd_req *r = op;
    r->writer = NULL;
    r->writer_wake = 0;
}

int httpd_stream_wait(lua_State *L, struct task *t, struct httpd_req *r)
{
    r->writer = t;
    r->writer_wake = 0;
    return task_wait(L, t, writer_cancel, r);
}

void httpd_stream_close(struct httpd_req *r)
{
    if (!r || !r->streaming || r->seof)
        return;
    r->seof = 1;
    req_resume(r);
}

int httpd_stream_alive(struct httpd_req *r)
{
    return r && r->streaming && !r->gone && !r->completed && !r->sfail && !r->seof;
}

size_t httpd_stream_pending(struct httpd_req *r)
{
    return r ? r->slen - r->soff : 0;
}

/* Resumes tasks waiting in s:write. Each resume runs Lua, which may end any
 * request: the scan starts over after each. */
static void wake_writers(struct httpd *h)
{
again:
    for (struct httpd_req *r = h->reqs; r; r = r->next) {
        if (!r->writer || !r->writer_wake)
            continue;
        struct task *w = r->writer;
        int ok = r->writer_wake == 1;
        r->writer = NULL;
        r->writer_wake = 0;
        lua_pushboolean(task_thread(w), ok);
        task_resume(w, 1);
        goto again;
    }
    for (struct httpd_req *r = h->reqs, *next; r; r = next) {
        next = r->next;
        if (r->completed)
            req_maybe_free(r);
    }
}

/* ---- the loop --------------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

static void schedule(struct httpd *h)
{
    if (h->closing)
        return;
    uint64_t best = UINT64_MAX;
    for (size_t i = 0; i < h->nls; i++) {
        MHD_UNSIGNED_LONG_LONG to;
        if (h->ls[i].d && MHD_get_timeout(h->ls[i].d, &to) == MHD_YES && to < best)
            best = to;
    }
    if (h->kick_pending)
        best = 0;
    h->kick_pending = 0;
    if (best == UINT64_MAX)
        uv_timer_stop(&h->timer);
    else
        uv_timer_start(&h->timer, on_timer, best, 0);
}

static void httpd_run(struct httpd *h)
{
    wake_writers(h);
    h->in_run = 1;
    for (size_t i = 0; i < h->nls; i++)
        if (h->ls[i].d)
            MHD_run(h->ls[i].d);
    h->in_run = 0;
    schedule(h);
}

static void on_timer(uv_timer_t *t)
{
    httpd_run(t->data);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    struct httpd_listener *l = p->data;
    httpd_run(l->h);
}

static void httpd_kick(struct httpd *h)
{
    if (h->closing)
        return;
    if (h->in_run)
        h->kick_pending = 1;
    else
        uv_timer_start(&h->timer, on_timer, 0, 0);
}

/* Cuts off connections that take too long to send a request: MHD counts
 * only idle time, so a client trickling a byte a second would stay. */
static void on_sweep(uv_timer_t *t)
{
    struct httpd *h = t->data;
    uint64_t now = now_ms(h), limit = (uint64_t)(h->timeout * 1000);
    int cut = 0;
    for (struct httpd_conn *c = h->conns; c; c = c->next) {
        if (c->since && now - c->since > limit && c->fd >= 0) {
            c->since = 0;
            h->st.slow_clients++;
            log_debug("api: cutting off a connection that sent no whole request in %g s",
                      h->timeout);
            shutdown(c->fd, SHUT_RDWR);
            cut = 1;
        }
    }
    if (cut)
        httpd_kick(h);
}

static void req_free(struct httpd_req *r)
{
    struct httpd *h = r->h;
    if (r->prev)
        r->prev->next = r->next;
    else
        h->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    if (r->box) {
        r->box->r = NULL;
        if (main_L(h))
            luaL_unref(main_L(h), LUA_REGISTRYINDEX, r->box_ref);
    }
    deadline_stop(r);
    r->freeing = 1;
    if (r->resp)
        MHD_destroy_response(r->resp);
    free(r->uri);
    free(r->body);
    free(r->sbuf);
    free(r);
}

static void req_maybe_free(struct httpd_req *r)
{
    if (r->completed && !r->task && !r->resp_alive && !r->writer && !r->in_abort &&
        !r->freeing)
        req_free(r);
}

/* ---- start and stop ----------------------------------------------------------- */

void httpd_options_from_config(struct httpd_options *o, const struct config *cfg)
{
    memset(o, 0, sizeof *o);
    o->listen = (const char *const *)cfg->api_listen;
    o->tls_cert = cfg->tls_cert;
    o->tls_key = cfg->tls_key;
    o->client_ca = cfg->client_ca;
    o->max_body = cfg->max_body;
    o->max_connections = (unsigned)cfg->max_connections;
    o->connection_timeout = cfg->connection_timeout;
    o->limits.instructions = (uint64_t)cfg->task_instructions;
    o->limits.timeout = cfg->task_timeout;
    o->limits.memory = (size_t)cfg->task_memory;
    o->handler_ref = LUA_NOREF;
}

/* Binds and listens on spec ("host:port", "[v6]:port"). Returns the socket,
 * or -1 with err filled. The bound address goes to bound. */
static int listen_on(const char *spec, char *bound, size_t bound_len, char *err,
                     size_t err_len)
{
    char host[256], port[16];
    const char *colon;
    if (spec[0] == '[') {
        const char *end = strchr(spec, ']');
        if (!end || end[1] != ':') {
            snprintf(err, err_len, "api: listen \"%s\": expected [v6-address]:port", spec);
            return -1;
        }
        snprintf(host, sizeof host, "%.*s", (int)(end - spec - 1), spec + 1);
        colon = end + 1;
    } else {
        colon = strrchr(spec, ':');
        if (!colon || memchr(spec, ':', (size_t)(colon - spec))) {
            snprintf(err, err_len, "api: listen \"%s\": expected host:port (IPv6 addresses "
                     "in brackets: [::1]:9444)", spec);
            return -1;
        }
        snprintf(host, sizeof host, "%.*s", (int)(colon - spec), spec);
    }
    snprintf(port, sizeof port, "%s", colon + 1);
    char *end;
    long pn = strtol(port, &end, 10);
    if (!port[0] || *end || pn < 0 || pn > 65535) {
        snprintf(err, err_len, "api: listen \"%s\": bad port \"%s\"", spec, port);
        return -1;
    }
    struct addrinfo hints = { 0 }, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
    if (rc != 0 || !ai) {
        snprintf(err, err_len, "api: listen \"%s\": %s", spec, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0) {
        snprintf(err, err_len, "api: listen \"%s\": %s", spec, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "?";
    int p = 0;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (void *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        p = ntohs(in6->sin6_port);
        snprintf(bound, bound_len, "[%s]:%d", ip, p);
    } else {
        struct sockaddr_in *in = (void *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        p = ntohs(in->sin_port);
        snprintf(bound, bound_len, "%s:%d", ip, p);
    }
    return fd;
}

static char *read_pem(const char *what, const char *path, char *err, size_t err_len)
{
    size_t len;
    char *text = util_read_file(path, &len);
    if (!text)
        snprintf(err, err_len, "api: %s %s: %s", what, path, strerror(errno));
    return text;
}

static void handle_closed(uv_handle_t *hd)
{
    struct httpd *h = hd->data;
    if (--h->pending_closes > 0)
        return;
    for (size_t i = 0; i < h->nls; i++)
        free(h->addrs[i]);
    free(h->addrs);
    free(h->ls);
    free(h->cert);
    free(h->key);
    free(h->ca);
    free(h);
}

static int start_listener(struct httpd *h, struct httpd_listener *l, const char *spec,
                          char *err, size_t err_len)
{
    l->h = h;
    l->fd = listen_on(spec, l->addr, sizeof l->addr, err, err_len);
    if (l->fd < 0)
        return -1;
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (h->cert)
        flags |= MHD_USE_TLS;
    unsigned secs = h->timeout > 0 ? (unsigned)ceil(h->timeout) : 0;
    struct MHD_OptionItem tls[] = {
        { MHD_OPTION_HTTPS_MEM_CERT, 0, h->cert },
        { MHD_OPTION_HTTPS_MEM_KEY, 0, h->key },
        { MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)TLS_PRIORITIES },
        { h->ca ? MHD_OPTION_HTTPS_MEM_TRUST : MHD_OPTION_END, 0, h->ca },
        { MHD_OPTION_END, 0, NULL },
    };
    l->d = MHD_start_daemon(
        flags, 0, accept_policy, h, on_access, l,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
        MHD_OPTION_LISTEN_SOCKET, l->fd,
        /* Above ours: at its own limit MHD stops accepting and clients hang in
         * the backlog; accept_policy refuses them at once instead. */
        MHD_OPTION_CONNECTION_LIMIT, h->max_connections ? h->max_connections + 1 : 4096u,
        MHD_OPTION_CONNECTION_TIMEOUT, secs,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTPD_POOL_SIZE,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, l,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, l,
        MHD_OPTION_ARRAY, h->cert ? tls : tls + 4,
        MHD_OPTION_END);
    if (!l->d) {
        snprintf(err, err_len, "api: listen %s: libmicrohttpd would not start%s", spec,
                 h->cert ? " (check tls_cert, tls_key and client_ca)" : "");
        close(l->fd);
        l->fd = -1;
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(l->d, MHD_DAEMON_INFO_EPOLL_FD);
    if (!di || uv_poll_init(h->a->loop, &l->poll, di->epoll_fd) != 0) {
        snprintf(err, err_len, "api: listen %s: cannot watch libmicrohttpd's epoll", spec);
        MHD_stop_daemon(l->d);
        l->d = NULL;
        close(l->fd);
        l->fd = -1;
        return -1;
    }
    l->poll.data = l;
    uv_poll_start(&l->poll, UV_READABLE, on_poll);
    return 0;
}

struct httpd *httpd_start(struct agent *a, const struct httpd_options *o, char *err,
                          size_t err_len)
{
    size_t n = 0;
    while (o->listen && o->listen[n])
        n++;
    if (n == 0) {
        snprintf(err, err_len, "api: no listen address");
        return NULL;
    }
    struct httpd *h = calloc(1, sizeof *h);
    h->a = a;
    h->max_body = o->max_body;
    h->max_connections = o->max_connections;
    h->timeout = o->connection_timeout;
    h->limits = o->limits;
    h->handler_ref = o->handler_ref;
    h->accepting = 1;
    if ((o->tls_cert == NULL) != (o->tls_key == NULL)) {
        snprintf(err, err_len, "api: tls_cert and tls_key go together: set both or neither");
        goto fail;
    }
    if (o->client_ca && !o->tls_cert) {
        snprintf(err, err_len, "api: client_ca needs tls_cert and tls_key");
        goto fail;
    }
    if (o->tls_cert) {
        if (!(h->cert = read_pem("tls_cert", o->tls_cert, err, err_len)) ||
            !(h->key = read_pem("tls_key", o->tls_key, err, err_len)))
            goto fail;
        if (o->client_ca && !(h->ca = read_pem("client_ca", o->client_ca, err, err_len)))
            goto fail;
    }
    h->ls = calloc(n, sizeof *h->ls);
    h->addrs = calloc(n + 1, sizeof *h->addrs);
    for (size_t i = 0; i < n; i++) {
        if (start_listener(h, &h->ls[i], o->listen[i], err, err_len) != 0)
            goto fail_listeners;
        h->addrs[i] = util_strdup(h->ls[i].addr);
        h->nls = i + 1;
    }
    uv_timer_init(a->loop, &h->timer);
    h->timer.data = h;
    uv_timer_init(a->loop, &h->sweep);
    h->sweep.data = h;
    if (h->timeout > 0) {
        uint64_t every = (uint64_t)(h->timeout * 250);
        every = every < 50 ? 50 : every > 1000 ? 1000 : every;
        uv_timer_start(&h->sweep, on_sweep, every, every);
        /* The sweep alone must not keep a loop alive that has nothing else. */
        uv_unref((uv_handle_t *)&h->sweep);
    }
    for (size_t i = 0; i < h->nls; i++)
        log_info("api: listening on %s%s", h->ls[i].addr,
                 h->cert ? (h->ca ? " (TLS 1.3, client certificates required)"
                                  : " (TLS 1.3)") : "");
    schedule(h);
    return h;

fail_listeners:
    for (size_t i = 0; i < h->nls; i++) {
        uv_poll_stop(&h->ls[i].poll);
        MHD_stop_daemon(h->ls[i].d);
        close(h->ls[i].fd);
        h->ls[i].poll.data = h;
        h->pending_closes++;
        uv_close((uv_handle_t *)&h->ls[i].poll, handle_closed);
        free(h->addrs[i]);
        h->addrs[i] = NULL;
    }
    h->nls = 0;
    if (h->pending_closes)
        return NULL;            /* freed by the close callbacks */
fail:
    free(h->addrs);
    free(h->ls);
    free(h->cert);
    free(h->key);
    free(h->ca);
    free(h);
    return NULL;
}

int httpd_agent_open(struct agent *a)
{
    if (!a->config || !a->config->api_listen || !a->config->api_listen[0])
        return 0;
    struct httpd_options o;
    char err[512];
    httpd_options_from_config(&o, a->config);
    a->httpd = httpd_start(a, &o, err, sizeof err);
    if (!a->httpd) {
        log_error("%s", err);
        return -1;
    }
    return 0;
}

void httpd_agent_stop_accepting(struct agent *a)
{
    httpd_stop_accepting(a->httpd);
}

void httpd_agent_close(struct agent *a)
{
    httpd_close(a->httpd);
    a->httpd = NULL;
}

void httpd_stop_accepting(struct httpd *h)
{
    if (!h || !h->accepting)
        return;
    h->accepting = 0;
    for (size_t i = 0; i < h->nls; i++) {
        struct httpd_listener *l = &h->ls[i];
        if (l->d && l->fd >= 0) {
            MHD_quiesce_daemon(l->d);
            close(l->fd);
            l->fd = -1;
        }
    }
    /* Streams (logs and events that follow) would hold the stop until its
     * deadline: they end now, visibly truncated. */
    for (;;) {
        struct httpd_req *r = h->reqs;
        while (r && !(r->streaming && !r->completed && !r->gone && r->task))
            r = r->next;
        if (!r)
            break;
        r->sfail = 1;
        req_gone(r, "the agent is stopping");   /* may run Lua: scan again */
    }
    log_info("api: no longer accepting connections");
}

void httpd_close(struct httpd *h)
{
    if (!h || h->closing)
        return;
    httpd_stop_accepting(h);
    /* Every suspended connection must be resumed before MHD_stop_daemon. */
    for (;;) {
        struct httpd_req *r = h->reqs;
        while (r && (r->gone || r->completed) && !r->writer)
            r = r->next;
        if (!r)
            break;
        r->sfail = 1;
        if (r->writer)          /* a task other than the handler's, waiting */
            task_abort(r->writer, "api: the server is closing");
        req_gone(r, "the server is closing");
    }
    for (size_t i = 0; i < h->nls; i++)
        if (h->ls[i].d)
            MHD_run(h->ls[i].d);
    h->closing = 1;
    for (size_t i = 0; i < h->nls; i++) {
        struct httpd_listener *l = &h->ls[i];
        uv_poll_stop(&l->poll);
        MHD_stop_daemon(l->d);
        l->d = NULL;
        l->poll.data = h;
        h->pending_closes++;
        uv_close((uv_handle_t *)&l->poll, handle_closed);
    }
    /* Requests MHD has let go of but Lua still held are freed as they end;
     * what remains now has no connection left. */
    while (h->reqs) {
        struct httpd_req *r = h->reqs;
        r->completed = 1;
        r->resp_alive = 0;
        r->writer = NULL;
        if (r->task) {
            r->in_abort = 1;
            task_abort(r->task, "api: the server is closing");
            r->in_abort = 0;
        }
        req_free(r);
    }
    if (h->handler_ref != LUA_NOREF && main_L(h))
        luaL_unref(main_L(h), LUA_REGISTRYINDEX, h->handler_ref);
    h->handler_ref = LUA_NOREF;
    uv_timer_stop(&h->timer);
    uv_timer_stop(&h->sweep);
    h->pending_closes += 2;
    uv_close((uv_handle_t *)&h->timer, handle_closed);
    uv_close((uv_handle_t *)&h->sweep, handle_closed);
}

const char *const *httpd_addresses(struct httpd *h, size_t *n)
{
    *n = h->nls;
    return (const char *const *)h->addrs;
}

void httpd_get_stats(struct httpd *h, struct httpd_stats *s)
{
    *s = h->st;
    s->in_flight = 0;
    for (struct httpd_req *r = h->reqs; r; r = r->next)
        if (r->task)
            s->in_flight++;
}
