/* console.c: the agent's side of `mcp-agent console`.
 *
 * A uv_pipe server on [console] socket. Each accepted client is a session:
 * its peer uid is checked (the agent's own uid and root only), it gets a Lua
 * session table from mcp.console.session() (its own environment, kept across
 * lines), and each EVAL runs mcp.console.eval(session, text) as a task with
 * the [lua] task limits, so a line may wait on Podman or a timer while the
 * agent goes on. INTERRUPT and a disconnect abort that task. print() called
 * by the task goes to its console as OUTPUT frames.
 *
 * What no console can do: stop Lua that computes without waiting. The loop
 * thread runs that code, so the INTERRUPT is read only once it ends; the
 * instruction budget and the deadline of the task are what end it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <lauxlib.h>

#include "agent.h"
#include "console.h"
#include "log.h"

/* Output waiting for a slow client beyond this is dropped, with a note. */
#define CONSOLE_OUTPUT_BACKLOG (8u << 20)
#define CONSOLE_READ_CHUNK 65536

struct console;

struct session {
    struct console *c;
    struct session *next, *prev;    /* c->sessions; unlinked once closing */
    uv_pipe_t pipe;
    uv_shutdown_t shutdown;
    uint64_t id;
    unsigned uid;
    int pid;
    int ref;                        /* the Lua session table, or LUA_NOREF */
    struct task *task;              /* the evaluation in flight */
    char *rbuf;
    size_t rlen, rcap;
    int ending;                     /* no more requests: shutting down */
    int closing;                    /* uv_close called */
    int closed;                     /* the close callback ran */
    int dropped;                    /* output of this evaluation was dropped */
};

struct console {
    struct agent *a;
    uv_pipe_t server;
    char *path;
    dev_t dev;
    ino_t ino;
    int listening;
    struct session *sessions;
    uint64_t next_id;
    int handles;                    /* open handles; freed at 0 once detached */
    int detached;                   /* a->console no longer points here */
};

struct write_req {
    uv_write_t req;
    char *buf;
};

/* The frame codec, shared with console_client.c. */

char *console_frame_encode(int type, const char *data, size_t len, size_t *out_len)
{
    char head[32];
    int h = snprintf(head, sizeof head, "%c %zu\n", type, len);
    char *buf = malloc((size_t)h + len + 1);
    if (!buf)
        return NULL;
    memcpy(buf, head, (size_t)h);
    if (len)
        memcpy(buf + h, data, len);
    buf[(size_t)h + len] = '\n';
    *out_len = (size_t)h + len + 1;
    return buf;
}

long console_frame_parse(const char *buf, size_t len, size_t max, int *type,
                         const char **data, size_t *dlen, const char **err)
{
    /* "T " + up to 10 digits + "\n" */
    const char *nl = memchr(buf, '\n', len < 14 ? len : 14);
    if (!nl) {
        if (len < 14)
            return 0;
        *err = "frame header too long (expected \"T LEN\\n\")";
        return -1;
    }
    if (nl - buf < 3 || buf[1] != ' ' || buf[0] < 'A' || buf[0] > 'Z') {
        *err = "bad frame header (expected \"T LEN\\n\", T a capital letter)";
        return -1;
    }
    size_t n = 0;
    for (const char *p = buf + 2; p < nl; p++) {
        if (*p < '0' || *p > '9') {
            *err = "bad frame length (expected decimal digits)";
            return -1;
        }
        n = n * 10 + (size_t)(*p - '0');
    }
    if (n > max) {
        *err = "frame too large";
        return -1;
    }
    size_t head = (size_t)(nl - buf) + 1;
    if (len < head + n + 1)
        return 0;
    if (buf[head + n] != '\n') {
        *err = "frame payload not followed by \"\\n\"";
        return -1;
    }
    *type = buf[0];
    *data = buf + head;
    *dlen = n;
    return (long)(head + n + 1);
}

/* Handles and their lifetime. */

/* Frees c once it is detached from the agent and its last handle closed,
 * in whichever order those happen. */
static void console_maybe_free(struct console *c)
{
    if (c->handles == 0 && c->detached) {
        free(c->path);
        free(c);
    }
}

static void console_release(struct console *c)
{
    c->handles--;
    console_maybe_free(c);
}

static void session_free(struct session *s)
{
    struct console *c = s->c;
    free(s->rbuf);
    free(s);
    console_release(c);
}

static void on_session_closed(uv_handle_t *h)
{
    struct session *s = h->data;
    s->closed = 1;
    if (!s->task)       /* else eval_done frees it once the task has ended */
        session_free(s);
}

static lua_State *console_lua(struct console *c)
{
    return c->a ? c->a->rt.L : NULL;
}

/* Closes a session now: its evaluation is aborted, its Lua table released. */
static void session_close(struct session *s, const char *why)
{
    if (s->closing)
        return;
    s->closing = 1;
    s->ending = 1;
    struct console *c = s->c;
    if (s->prev)
        s->prev->next = s->next;
    else if (c->sessions == s)
        c->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
    if (s->task)
        task_abort(s->task, "console disconnected");
    lua_State *L = console_lua(c);
    if (L && s->ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, s->ref);
    s->ref = LUA_NOREF;
    if (s->uid != (unsigned)-1 && why)
        log_info("console #%llu (uid %u): %s", (unsigned long long)s->id, s->uid, why);
    uv_close((uv_handle_t *)&s->pipe, on_session_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    struct session *s = req->data;
    session_close(s, NULL);
}

/* Closes a session once what was written to it has gone out. */
static void session_end(struct session *s)
{
    if (s->ending)
        return;
    s->ending = 1;
    uv_read_stop((uv_stream_t *)&s->pipe);
    s->shutdown.data = s;
    if (uv_shutdown(&s->shutdown, (uv_stream_t *)&s->pipe, on_shutdown) != 0)
        session_close(s, NULL);
}

/* Writing frames. */

static void on_written(uv_write_t *req, int status)
{
    (void)status;
    struct write_req *w = (struct write_req *)req;
    free(w->buf);
    free(w);
}

static void session_send(struct session *s, int type, const char *data, size_t len)
{
    if (s->closing)
        return;
    char *cut = NULL;
    if (len > CONSOLE_MAX_REPLY) {
        /* A result this long is a mistake (a huge string): keep its head. */
        size_t keep = CONSOLE_MAX_REPLY - 64;
        cut = malloc(CONSOLE_MAX_REPLY);
        if (cut) {
            memcpy(cut, data, keep);
            len = keep + (size_t)snprintf(cut + keep, 64, "\n[... %zu bytes more not shown]",
                                          len - keep);
            data = cut;
        }
    }
    struct write_req *w = malloc(sizeof *w);
    size_t n = 0;
    char *buf = w && (cut || len <= CONSOLE_MAX_REPLY)
                    ? console_frame_encode(type, data, len, &n) : NULL;
    free(cut);
    if (!buf) {
        free(w);
        log_error("console #%llu: out of memory", (unsigned long long)s->id);
        session_close(s, "closed: out of memory");
        return;
    }
    w->buf = buf;
    uv_buf_t b = uv_buf_init(buf, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&s->pipe, &b, 1, on_written) != 0) {
        free(buf);
        free(w);
        session_close(s, "closed: write failed");
    }
}

static void session_send_str(struct session *s, int type, const char *text)
{
    session_send(s, type, text, strlen(text));
}

static struct session *session_of_task(struct console *c, struct task *t)
{
    if (!c || !t)
        return NULL;
    for (struct session *s = c->sessions; s; s = s->next)
        if (s->task == t)
            return s;
    return NULL;
}

/* The Lua side. */

/* Pushes mcp.console[fn]. Returns 0, or -1 with an error message pushed. */
static int push_console_fn(lua_State *L, const char *fn)
{
    lua_getglobal(L, "require");
    lua_pushliteral(L, "mcp.console");
    if (runtime_pcall(L, 1, 1, "console: require mcp.console") != 0)
        return -1;
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_pushliteral(L, "mcp.console did not return a table");
        return -1;
    }
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        lua_pushfstring(L, "mcp.console.%s is missing", fn);
        return -1;
    }
    return 0;
}

/* The first line of a task's error (the rest is its traceback), with a hint
 * when a limit ended it. */
static void error_line(const char *err, char *out, size_t len)
{
    if (!err)
        err = "evaluation failed";
    size_t n = strcspn(err, "\n");
    const char *hint = "";
    if (strstr(err, "instruction budget"))
        hint = " (console code runs under [lua] task_instructions)";
    else if (strstr(err, "deadline of"))
        hint = " (console code runs under [lua] task_timeout)";
    else if (strstr(err, "memory cap"))
        hint = " (console code runs under [lua] task_memory)";
    snprintf(out, len, "%.*s%s", (int)n, err, hint);
}

static void eval_done(struct task *t, int ok, void *ud)
{
    struct session *s = ud;
    s->task = NULL;
    if (s->closing) {
        if (s->closed)
            session_free(s);
        return;
    }
    if (!ok) {
        char msg[512];
        error_line(task_error(t), msg, sizeof msg);
        session_send_str(s, CONSOLE_ERROR, msg);
        return;
    }
    lua_State *co = task_thread(t);
    int n = task_nresults(t);
    const char *kind = n >= 1 ? lua_tostring(co, 1) : NULL;
    size_t len = 0;
    const char *text = n >= 2 ? lua_tolstring(co, 2, &len) : NULL;
    if (!text)
        text = "";
    int type = CONSOLE_ERROR;
    if (kind && strcmp(kind, "result") == 0)
        type = CONSOLE_RESULT;
    else if (kind && strcmp(kind, "continue") == 0)
        type = CONSOLE_MORE;
    else if (!kind || strcmp(kind, "error") != 0) {
        text = "console: mcp.console.eval returned neither result, continue nor error";
        len = strlen(text);
    }
    session_send(s, type, text, len);
}

static void handle_eval(struct session *s, const char *text, size_t len)
{
    struct agent *a = s->c->a;
    if (s->task) {
        /* The client sends one chunk at a time; this one is a protocol slip. */
        session_send_str(s, CONSOLE_ERROR, "console: an evaluation is already running");
        return;
    }
    lua_State *L = a->rt.L;
    int top = lua_gettop(L);
    if (push_console_fn(L, "eval") != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "console: %s", lua_tostring(L, -1));
        session_send_str(s, CONSOLE_ERROR, msg);
        lua_settop(L, top);
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
    lua_pushlstring(L, text, len);
    struct task_limits lim = { 0 };
    if (a->config) {
        lim.instructions = a->config->task_instructions > 0
                               ? (uint64_t)a->config->task_instructions : 0;
        lim.timeout = a->config->task_timeout;
        lim.memory = (size_t)a->config->task_memory;
    }
    char name[48];
    snprintf(name, sizeof name, "console#%llu", (unsigned long long)s->id);
    s->dropped = 0;
    log_debug("console #%llu: eval %.*s", (unsigned long long)s->id,
              (int)(len > 200 ? 200 : len), text);
    s->task = task_spawn(&a->rt, L, 2, name, &lim, eval_done, s);
    lua_settop(L, top);
    if (!s->task)
        session_send_str(s, CONSOLE_ERROR, "console: cannot start a task (out of memory)");
}

static void handle_complete(struct session *s, const char *text, size_t len)
{
    lua_State *L = s->c->a->rt.L;
    int top = lua_gettop(L);
    luaL_Buffer b;
    if (push_console_fn(L, "complete") != 0) {
        log_warn("console: completion: %s", lua_tostring(L, -1));
        lua_settop(L, top);
        session_send(s, CONSOLE_COMPLETIONS, "", 0);
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
    lua_pushlstring(L, text, len);
    /* Completion reads tables without calling into them: no task needed. */
    if (runtime_pcall(L, 2, 1, "console: completion") != 0 || !lua_istable(L, -1)) {
        lua_settop(L, top);
        session_send(s, CONSOLE_COMPLETIONS, "", 0);
        return;
    }
    int list = lua_gettop(L);
    luaL_buffinit(L, &b);
    for (int i = 1;; i++) {
        lua_rawgeti(L, list, i);
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 1);
            break;
        }
        if (i > 1)
            luaL_addchar(&b, '\n');
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    size_t n;
    const char *out = lua_tolstring(L, -1, &n);
    session_send(s, CONSOLE_COMPLETIONS, out, n);
    lua_settop(L, top);
}

static void handle_frame(struct session *s, int type, const char *data, size_t len)
{
    switch (type) {
    case CONSOLE_EVAL:
        handle_eval(s, data, len);
        break;
    case CONSOLE_COMPLETE:
        handle_complete(s, data, len);
        break;
    case CONSOLE_INTERRUPT:
        /* Nothing in flight: the evaluation ended before the INTERRUPT came. */
        if (s->task)
            task_abort(s->task, "interrupted");
        break;
    default: {
        char msg[96];
        snprintf(msg, sizeof msg, "console: unknown request type '%c'", type);
        session_send_str(s, CONSOLE_ERROR, msg);
        break;
    }
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct session *s = h->data;
    if (s->rcap - s->rlen < CONSOLE_READ_CHUNK) {
        size_t cap = s->rlen + CONSOLE_READ_CHUNK;
        char *p = realloc(s->rbuf, cap);
        if (!p) {
            *buf = uv_buf_init(NULL, 0);
            return;
        }
        s->rbuf = p;
        s->rcap = cap;
    }
    *buf = uv_buf_init(s->rbuf + s->rlen, (unsigned)(s->rcap - s->rlen));
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    struct session *s = st->data;
    if (nread == UV_EOF) {
        session_close(s, "disconnected");
        return;
    }
    if (nread < 0) {
        char why[128];
        snprintf(why, sizeof why, "closed: %s", uv_strerror((int)nread));
        session_close(s, why);
        return;
    }
    s->rlen += (size_t)nread;
    size_t off = 0;
    while (!s->ending) {
        int type;
        const char *data, *err = NULL;
        size_t dlen;
        long used = console_frame_parse(s->rbuf + off, s->rlen - off, CONSOLE_MAX_REQUEST,
                                        &type, &data, &dlen, &err);
        if (used == 0)
            break;
        if (used < 0) {
            char msg[160];
            snprintf(msg, sizeof msg, "console: protocol error: %s", err);
            session_send_str(s, CONSOLE_ERROR, msg);
            log_warn("console #%llu (uid %u): %s; closing", (unsigned long long)s->id,
                     s->uid, msg + 9);
            session_end(s);
            return;
        }
        handle_frame(s, type, data, dlen);
        off += (size_t)used;
    }
    if (s->closing)
        return;
    memmove(s->rbuf, s->rbuf + off, s->rlen - off);
    s->rlen -= off;
    /* A large request may have grown the buffer: give the memory back. */
    if (s->rcap > 4 * CONSOLE_READ_CHUNK && s->rlen < CONSOLE_READ_CHUNK) {
        char *p = realloc(s->rbuf, CONSOLE_READ_CHUNK);
        if (p) {
            s->rbuf = p;
            s->rcap = CONSOLE_READ_CHUNK;
        }
    }
}

/* Creates the Lua session table. Returns 0, or -1 with a message in err. */
static int session_lua(struct session *s, char *err, size_t len)
{
    lua_State *L = s->c->a->rt.L;
    int top = lua_gettop(L);
    if (push_console_fn(L, "session") != 0) {
        snprintf(err, len, "console: %s", lua_tostring(L, -1));
        lua_settop(L, top);
        return -1;
    }
    lua_createtable(L, 0, 3);
    lua_pushnumber(L, (lua_Number)s->id);
    lua_setfield(L, -2, "id");
    lua_pushnumber(L, s->uid);
    lua_setfield(L, -2, "uid");
    lua_pushnumber(L, s->pid);
    lua_setfield(L, -2, "pid");
    if (runtime_pcall(L, 1, 1, "console: mcp.console.session") != 0 ||
        !lua_istable(L, -1)) {
        snprintf(err, len, "console: cannot create a session: %s",
                 lua_isstring(L, -1) ? lua_tostring(L, -1) : "not a table");
        lua_settop(L, top);
        return -1;
    }
    s->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, top);
    return 0;
}

static void on_connection(uv_stream_t *server, int status)
{
    struct console *c = server->data;
    if (status < 0) {
        log_warn("console: accept: %s", uv_strerror(status));
        return;
    }
    struct session *s = calloc(1, sizeof *s);
    if (!s) {
        log_error("console: out of memory accepting a client");
        return;
    }
    s->c = c;
    s->ref = LUA_NOREF;
    s->uid = (unsigned)-1;
    s->id = ++c->next_id;
    uv_pipe_init(c->a->loop, &s->pipe, 0);
    s->pipe.data = s;
    c->handles++;
    /* Listed from the start, refused ones too, so that console_close finds
     * every open handle. */
    s->next = c->sessions;
    if (c->sessions)
        c->sessions->prev = s;
    c->sessions = s;
    if (uv_accept(server, (uv_stream_t *)&s->pipe) != 0) {
        session_close(s, NULL);
        return;
    }
    uv_os_fd_t fd;
    struct ucred cred;
    socklen_t clen = sizeof cred;
    if (uv_fileno((uv_handle_t *)&s->pipe, &fd) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0) {
        log_warn("console: cannot read the peer's credentials (%s); closing",
                 strerror(errno));
        session_close(s, NULL);
        return;
    }
    uid_t own = geteuid();
    if (cred.uid != own && cred.uid != 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "console: uid %u may not use this console (only the "
                 "agent's own uid %u and root may)", (unsigned)cred.uid, (unsigned)own);
        log_warn("console: refused a connection from uid %u (pid %d): only uid %u and root "
                 "may connect", (unsigned)cred.uid, (int)cred.pid, (unsigned)own);
        session_send_str(s, CONSOLE_ERROR, msg);
        session_end(s);
        return;
    }
    s->uid = (unsigned)cred.uid;
    s->pid = (int)cred.pid;
    char err[512];
    if (session_lua(s, err, sizeof err) != 0) {
        log_error("%s", err);
        session_send_str(s, CONSOLE_ERROR, err);
        session_end(s);
        return;
    }
    char hello[256];
    struct config *cfg = c->a->config;
    snprintf(hello, sizeof hello, "mcp-agent %s on %s", MCP_VERSION,
             cfg && cfg->node ? cfg->node : "?");
    session_send_str(s, CONSOLE_HELLO, hello);
    log_info("console #%llu: uid %u (pid %d) connected", (unsigned long long)s->id, s->uid,
             s->pid);
    uv_read_start((uv_stream_t *)&s->pipe, on_alloc, on_read);
}

/* print() while a console evaluation runs goes to that console; any other
 * print goes where it always went (upvalue 1). */
static int l_console_print(lua_State *L)
{
    struct agent *a = agent_from_lua(L);
    struct session *s = a ? session_of_task(a->console, a->rt.current) : NULL;
    int n = lua_gettop(L);
    if (!s) {
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_insert(L, 1);
        lua_call(L, n, 0);
        return 0;
    }
    lua_getglobal(L, "tostring");
    int tostr = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        lua_pushvalue(L, tostr);
        lua_pushvalue(L, i);
        lua_call(L, 1, 1);
        if (!lua_isstring(L, -1))
            return luaL_error(L, "'tostring' must return a string to 'print'");
        if (i < n)
            lua_pushliteral(L, "\t");
    }
    lua_pushliteral(L, "\n");
    lua_concat(L, lua_gettop(L) - tostr);
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    if (s->dropped)
        return 0;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&s->pipe) > CONSOLE_OUTPUT_BACKLOG) {
        s->dropped = 1;
        session_send_str(s, CONSOLE_OUTPUT, "[console: output dropped: the client does "
                                            "not read it fast enough]\n");
        return 0;
    }
    session_send(s, CONSOLE_OUTPUT, text, len);
    return 0;
}

static void install_print(lua_State *L)
{
    lua_getglobal(L, "print");
    lua_pushcclosure(L, l_console_print, 1);
    lua_setglobal(L, "print");
}

/* The socket file. */

/* Creates dir and its missing parents, mode 0700. Returns 0 or -1 (errno). */
static int make_dirs(const char *dir)
{
    char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char saved = *p;
            *p = 0;
            if (mkdir(path, 0700) != 0 && errno != EEXIST)
                return -1;
            *p = saved;
            if (saved == 0)
                break;
        }
    }
    return 0;
}

/* Makes path free for bind: removes a stale socket nobody answers on.
 * Returns 0, or -1 with the reason logged. */
static int clear_stale(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT)
            return 0;
        log_error("console: socket %s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISSOCK(st.st_mode)) {
        log_error("console: %s exists and is not a socket; remove it or set another "
                  "[console] socket", path);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_error("console: socket: %s", strerror(errno));
        return -1;
    }
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    int e = errno;
    close(fd);
    if (rc == 0) {
        log_error("console: something answers on %s already (another agent with this "
                  "config?); not replacing it", path);
        return -1;
    }
    if (e != ECONNREFUSED) {
        log_error("console: cannot tell whether %s is in use: %s", path, strerror(e));
        return -1;
    }
    if (unlink(path) != 0 && errno != ENOENT) {
        log_error("console: cannot remove the stale socket %s: %s", path, strerror(errno));
        return -1;
    }
    log_info("console: removed the stale socket %s", path);
    return 0;
}

static void on_server_closed(uv_handle_t *h)
{
    console_release(h->data);
}

int console_open(struct agent *a)
{
    const char *path = a->config ? a->config->console_socket : NULL;
    if (!path || !*path) {
        log_info("console: disabled ([console] socket is empty)");
        return 0;
    }
    struct sockaddr_un sa;
    if (strlen(path) >= sizeof sa.sun_path) {
        log_error("console: socket path %s is too long (at most %zu bytes)", path,
                  sizeof sa.sun_path - 1);
        return -1;
    }
    char dir[sizeof sa.sun_path];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        if (make_dirs(dir) != 0) {
            log_error("console: cannot create the socket directory %s: %s", dir,
                      strerror(errno));
            return -1;
        }
    }
    if (clear_stale(path) != 0)
        return -1;

    struct console *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->a = a;
    c->path = strdup(path);
    uv_pipe_init(a->loop, &c->server, 0);
    c->server.data = c;
    c->handles = 1;
    a->console = c;
    /* The socket is born 0600: no moment where another user could connect. */
    mode_t old = umask(0177);
    int rc = uv_pipe_bind(&c->server, path);
    umask(old);
    if (rc == 0 && chmod(path, 0600) != 0)
        rc = uv_translate_sys_error(errno);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&c->server, 16, on_connection);
    if (rc != 0) {
        log_error("console: cannot listen on %s: %s", path, uv_strerror(rc));
        return -1;
    }
    struct stat st;
    if (stat(path, &st) == 0) {
        c->dev = st.st_dev;
        c->ino = st.st_ino;
    }
    c->listening = 1;
    install_print(a->rt.L);
    log_info("console: listening on %s", path);
    return 0;
}

/* Closes the listening socket and removes its file, if it is still ours. */
static void stop_listening(struct console *c)
{
    if (!c->listening)
        return;
    c->listening = 0;
    struct stat st;
    if (stat(c->path, &st) == 0 && st.st_dev == c->dev && st.st_ino == c->ino)
        unlink(c->path);
}

void console_stop(struct agent *a)
{
    struct console *c = a->console;
    if (!c)
        return;
    stop_listening(c);
    if (!uv_is_closing((uv_handle_t *)&c->server))
        uv_close((uv_handle_t *)&c->server, on_server_closed);
    for (struct session *s = c->sessions, *next; s; s = next) {
        next = s->next;
        if (s->task)
            task_abort(s->task, "agent stopping");
        session_end(s);
    }
}

void console_close(struct agent *a)
{
    struct console *c = a->console;
    if (!c)
        return;
    stop_listening(c);
    if (!uv_is_closing((uv_handle_t *)&c->server))
        uv_close((uv_handle_t *)&c->server, on_server_closed);
    while (c->sessions)
        session_close(c->sessions, NULL);
    c->detached = 1;
    c->a = NULL;
    a->console = NULL;
    console_maybe_free(c);
}
