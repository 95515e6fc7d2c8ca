/* l_exec.c: mcp.exec: running a program for a health check or a hook.
 *
 * No shell: the command is a list of arguments, so nothing a definition
 * interpolates can become shell syntax. The child runs in a session (and so
 * a process group) of its own, with pipes for its output; the task waits
 * until the child has exited AND both pipes are closed, so nothing it wrote
 * is lost. At the deadline the whole group gets SIGTERM, and SIGKILL 2 s
 * later: a hung check and anything it started are gone, and the loop never
 * blocked on any of it. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "bindings.h"
#include "log.h"

extern char **environ;

#define EXEC_KILL_GRACE_MS 2000
#define EXEC_DEFAULT_TIMEOUT 30.0
#define EXEC_DEFAULT_MAX_OUTPUT (1 << 20)
#define EXEC_CHUNK 65536

/* Variables that speak for the agent to systemd: a child must not inherit
 * them, or it could notify (or be mistaken for) the service. */
static const char *const exec_env_drop[] = {
    "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
    "LISTEN_FDNAMES", NULL,
};

struct exec_op;

struct exec_stream {
    uv_pipe_t pipe;
    struct exec_op *op;
    char *buf;
    size_t len, cap;
    unsigned long long dropped;     /* bytes past max_output, counted not kept */
    int open;                       /* not yet at EOF nor closed */
};

enum exec_phase { EXEC_RUNNING, EXEC_TERM_SENT, EXEC_KILL_SENT };

struct exec_op {
    uv_process_t proc;
    uv_pipe_t in;
    struct exec_stream out, err;
    uv_timer_t timer;
    uv_write_t wreq;
    struct task *task;              /* NULL once finished or cancelled */
    char *input;
    size_t input_len;
    size_t max_output;
    int handles;                    /* initialised and not yet closed */
    int in_open, exited, finished, timed_out;
    enum exec_phase phase;
    int64_t exit_status;
    int term_signal;
    char scratch[EXEC_CHUNK];       /* reads land here, then are copied */
};

static void exec_free(struct exec_op *op)
{
    free(op->out.buf);
    free(op->err.buf);
    free(op->input);
    free(op);
}

static void exec_on_close(uv_handle_t *h)
{
    struct exec_op *op = h->data;
    if (--op->handles == 0)
        exec_free(op);
}

static void exec_close(struct exec_op *op, uv_handle_t *h)
{
    if (uv_is_closing(h))
        return;
    h->data = op;       /* the pipes pointed at their stream until now */
    uv_close(h, exec_on_close);
}

/* Signals the child's whole process group; the group outlives the child
 * while anything it started still runs. */
static void exec_kill_group(struct exec_op *op, int sig)
{
    if (op->proc.pid > 0 && kill(-op->proc.pid, sig) != 0 && errno != ESRCH)
        log_debug("exec: kill(-%d, %d): %s", op->proc.pid, sig, strerror(errno));
}

static void exec_push_output(lua_State *co, struct exec_stream *s, size_t max)
{
    if (!s->dropped) {
        lua_pushlstring(co, s->buf ? s->buf : "", s->len);
        return;
    }
    luaL_Buffer b;
    luaL_buffinit(co, &b);
    luaL_addlstring(&b, s->buf ? s->buf : "", s->len);
    lua_pushfstring(co, "\n[mcp.exec: output truncated at %d bytes, %d more bytes dropped]\n",
                    (int)max, (int)(s->dropped > 0x7fffffff ? 0x7fffffff : s->dropped));
    luaL_addvalue(&b);
    luaL_pushresult(&b);
}

/* Ends the operation once the child has exited and both pipes are done:
 * closes every handle and resumes the task with the result. */
static void exec_maybe_finish(struct exec_op *op)
{
    if (op->finished || !op->exited || op->out.open || op->err.open)
        return;
    op->finished = 1;
    uv_timer_stop(&op->timer);
    exec_close(op, (uv_handle_t *)&op->timer);
    if (op->in_open)
        exec_close(op, (uv_handle_t *)&op->in);
    exec_close(op, (uv_handle_t *)&op->out.pipe);
    exec_close(op, (uv_handle_t *)&op->err.pipe);
    struct task *t = op->task;
    op->task = NULL;
    if (t) {
        lua_State *co = task_thread(t);
        lua_createtable(co, 0, 6);
        if (op->term_signal) {
            const char *abbrev = sigabbrev_np(op->term_signal);
            if (abbrev)
                lua_pushfstring(co, "SIG%s", abbrev);
            else
                lua_pushfstring(co, "SIG%d", op->term_signal);
            lua_setfield(co, -2, "signal");
        } else {
            lua_pushinteger(co, (lua_Integer)op->exit_status);
            lua_setfield(co, -2, "exit_code");
        }
        exec_push_output(co, &op->out, op->max_output);
        lua_setfield(co, -2, "stdout");
        exec_push_output(co, &op->err, op->max_output);
        lua_setfield(co, -2, "stderr");
        lua_pushboolean(co, op->timed_out);
        lua_setfield(co, -2, "timed_out");
        lua_pushboolean(co, op->out.dropped || op->err.dropped);
        lua_setfield(co, -2, "truncated");
    }
    /* The process handle is closed last: the close callbacks free op. */
    exec_close(op, (uv_handle_t *)&op->proc);
    if (t)
        task_resume(t, 1);
}

static void exec_on_exit(uv_process_t *p, int64_t status, int term_signal)
{
    struct exec_op *op = p->data;
    op->exited = 1;
    op->exit_status = status;
    op->term_signal = term_signal;
    if (!op->task && !op->finished) {
        /* Cancelled: nothing waits for the result, only the handle. */
        op->finished = 1;
        exec_close(op, (uv_handle_t *)p);
        return;
    }
    exec_maybe_finish(op);
}

static void exec_stream_stop(struct exec_stream *s)
{
    if (!s->open)
        return;
    s->open = 0;
    uv_read_stop((uv_stream_t *)&s->pipe);
    exec_close(s->op, (uv_handle_t *)&s->pipe);
}

static void exec_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct exec_stream *s = h->data;
    *buf = uv_buf_init(s->op->scratch, sizeof s->op->scratch);
}

static void exec_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct exec_stream *s = st->data;
    struct exec_op *op = s->op;
    if (n < 0) {
        if (n != UV_EOF)
            log_debug("exec: reading the child's output: %s", uv_strerror((int)n));
        exec_stream_stop(s);
        exec_maybe_finish(op);
        return;
    }
    size_t room = op->max_output - s->len;
    size_t take = (size_t)n < room ? (size_t)n : room;
    if (take) {
        if (s->len + take > s->cap) {
            size_t cap = s->cap ? s->cap : 4096;
            while (cap < s->len + take)
                cap *= 2;
            if (cap > op->max_output)
                cap = op->max_output;
            char *nb = realloc(s->buf, cap);
            if (!nb) {
                take = 0;
            } else {
                s->buf = nb;
                s->cap = cap;
            }
        }
        memcpy(s->buf + s->len, buf->base, take);
        s->len += take;
    }
    s->dropped += (unsigned long long)((size_t)n - take);
}

static void exec_on_written(uv_write_t *req, int status)
{
    struct exec_op *op = req->data;
    /* EPIPE: the child did not read all of its input; that is its business. */
    if (status < 0 && status != UV_EPIPE && status != UV_ECANCELED)
        log_debug("exec: writing the child's input: %s", uv_strerror(status));
    if (op->in_open) {
        op->in_open = 0;
        exec_close(op, (uv_handle_t *)&op->in);
    }
}

static void exec_on_timer(uv_timer_t *h)
{
    struct exec_op *op = h->data;
    switch (op->phase) {
    case EXEC_RUNNING:
        if (op->exited) {
            /* The child is gone but something it started holds the pipes
             * open: end that too and take what was written. */
            exec_kill_group(op, SIGKILL);
            exec_stream_stop(&op->out);
            exec_stream_stop(&op->err);
            exec_maybe_finish(op);
            return;
        }
        op->timed_out = 1;
        op->phase = EXEC_TERM_SENT;
        exec_kill_group(op, SIGTERM);
        uv_timer_start(&op->timer, exec_on_timer, EXEC_KILL_GRACE_MS, 0);
        return;
    case EXEC_TERM_SENT:
        op->phase = EXEC_KILL_SENT;
        exec_kill_group(op, SIGKILL);
        /* SIGKILL ends the group; pipes handed to another session would
         * stay open for ever, so stop waiting for them now. */
        exec_stream_stop(&op->out);
        exec_stream_stop(&op->err);
        exec_maybe_finish(op);
        return;
    case EXEC_KILL_SENT:
        return;
    }
}

/* The task was aborted (its deadline, a cancel, shutdown): kill the group,
 * drop the output, and free everything once the child has been reaped. */
static void exec_cancel(void *p)
{
    struct exec_op *op = p;
    op->task = NULL;
    exec_kill_group(op, SIGKILL);
    uv_timer_stop(&op->timer);
    exec_close(op, (uv_handle_t *)&op->timer);
    exec_stream_stop(&op->out);
    exec_stream_stop(&op->err);
    if (op->in_open) {
        op->in_open = 0;
        exec_close(op, (uv_handle_t *)&op->in);
    }
    if (op->exited) {
        op->finished = 1;
        exec_close(op, (uv_handle_t *)&op->proc);
    }
    /* else exec_on_exit closes the process handle once the child is reaped */
}

/* Builds argv from the list at idx. The strings are anchored in a table
 * and the array is a userdata, both left on the stack for the GC to free
 * once uv_spawn has returned. */
static char **exec_argv(lua_State *L, int idx)
{
    int n = (int)lua_objlen(L, idx);
    if (n == 0)
        luaL_error(L, "mcp.exec.run: cmd is empty (expected {\"program\", \"arg\", ...})");
    lua_createtable(L, n, 0);
    int anchor = lua_gettop(L);
    char **argv = lua_newuserdata(L, sizeof(char *) * (size_t)(n + 1));
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "mcp.exec.run: cmd[%d] must be a string, got %s", i,
                       luaL_typename(L, -1));
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);     /* a number becomes a string */
        if (strlen(s) != len)
            luaL_error(L, "mcp.exec.run: cmd[%d] contains a NUL byte", i);
        argv[i - 1] = (char *)s;
        lua_rawseti(L, anchor, i);
    }
    argv[n] = NULL;
    return argv;
}

static int exec_env_dropped(const char *entry, size_t keylen)
{
    for (int i = 0; exec_env_drop[i]; i++)
        if (strlen(exec_env_drop[i]) == keylen && strncmp(entry, exec_env_drop[i], keylen) == 0)
            return 1;
    return 0;
}

/* The child's environment: the agent's, less the systemd variables, with
 * the entries of the map at idx added (a value of false removes one). The
 * strings live in a table left on the stack, the array in a userdata. */
static char **exec_envp(lua_State *L, int idx)
{
    lua_newtable(L);                /* anchors "K=V" strings */
    int anchor = lua_gettop(L);
    int n = 0;
    if (idx) {
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_error(L, "mcp.exec.run: env keys must be strings, got %s",
                           luaL_typename(L, -2));
            const char *k = lua_tostring(L, -2);
            if (!*k || strchr(k, '='))
                luaL_error(L, "mcp.exec.run: env key \"%s\" is not a variable name", k);
            int t = lua_type(L, -1);
            if (t == LUA_TSTRING || t == LUA_TNUMBER) {
                size_t vlen;
                const char *v = lua_tolstring(L, -1, &vlen);
                if (strlen(v) != vlen)
                    luaL_error(L, "mcp.exec.run: env %s contains a NUL byte", k);
                lua_pushfstring(L, "%s=%s", k, v);
                lua_rawseti(L, anchor, ++n);
            } else if (!(t == LUA_TBOOLEAN && !lua_toboolean(L, -1))) {
                luaL_error(L, "mcp.exec.run: env %s: expected a string or false, got %s", k,
                           luaL_typename(L, -1));
            }
            lua_pop(L, 1);
        }
    }
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        size_t keylen = eq ? (size_t)(eq - *e) : strlen(*e);
        if (exec_env_dropped(*e, keylen))
            continue;
        if (idx) {
            lua_pushlstring(L, *e, keylen);
            lua_rawget(L, idx);
            int given = !lua_isnil(L, -1);
            lua_pop(L, 1);
            if (given)
                continue;
        }
        lua_pushstring(L, *e);
        lua_rawseti(L, anchor, ++n);
    }
    char **envp = lua_newuserdata(L, sizeof(char *) * (size_t)(n + 1));
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, anchor, i);
        envp[i - 1] = (char *)lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    envp[n] = NULL;
    return envp;
}

static const char *const exec_opts[] = { "cmd", "env", "cwd", "stdin", "timeout", "max_output",
                                         NULL };

/* mcp.exec.run{cmd = {prog, args...}, env =, cwd =, stdin =, timeout =, max_output =}
 * -> {exit_code | signal, stdout, stderr, timed_out, truncated}, or nil, err. */
static int l_exec_run(lua_State *L)
{
    const char *fn = "mcp.exec.run";
    if (lua_type(L, 1) == LUA_TSTRING)
        return luaL_error(L, "%s: expected {cmd = {\"program\", \"arg\", ...}}, got a string "
                             "(there is no shell: split the arguments, or run "
                             "{\"sh\", \"-c\", script} on purpose)", fn);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_rawgeti(L, 1, 1);
    if (!lua_isnil(L, -1))
        return luaL_error(L, "%s: expected {cmd = {\"program\", \"arg\", ...}, ...}, "
                             "not the list itself", fn);
    lua_pop(L, 1);
    bind_check_options(L, 1, fn, exec_opts);
    double timeout = bind_opt_duration(L, 1, "timeout", EXEC_DEFAULT_TIMEOUT, fn);
    if (timeout <= 0)
        return luaL_error(L, "%s: option timeout: must be more than 0", fn);
    lua_Integer max_output = bind_opt_size(L, 1, "max_output", EXEC_DEFAULT_MAX_OUTPUT, fn);
    if (max_output < 1 || max_output > (1 << 30))
        return luaL_error(L, "%s: option max_output: expected 1 byte to 1GiB", fn);
    const char *cwd = bind_opt_string(L, 1, "cwd", NULL, fn);

    lua_getfield(L, 1, "cmd");
    int cmd_idx = lua_gettop(L);
    if (lua_type(L, cmd_idx) == LUA_TSTRING)
        return luaL_error(L, "%s: cmd must be a list of arguments, not a string (there is no "
                             "shell: write {\"ls\", \"-l\"}, or {\"sh\", \"-c\", script} on "
                             "purpose)", fn);
    if (!lua_istable(L, cmd_idx))
        return luaL_error(L, "%s: cmd: expected a list {\"program\", \"arg\", ...}, got %s",
                          fn, luaL_typename(L, cmd_idx));
    char **argv = exec_argv(L, cmd_idx);

    lua_getfield(L, 1, "env");
    int env_idx = lua_gettop(L);
    if (!lua_isnil(L, env_idx) && !lua_istable(L, env_idx))
        return luaL_error(L, "%s: env: expected a table of NAME = value, got %s", fn,
                          luaL_typename(L, env_idx));
    char **envp = exec_envp(L, lua_isnil(L, env_idx) ? 0 : env_idx);

    lua_getfield(L, 1, "stdin");
    size_t input_len = 0;
    const char *input = NULL;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING)
            return luaL_error(L, "%s: option stdin: expected a string, got %s", fn,
                              luaL_typename(L, -1));
        input = lua_tolstring(L, -1, &input_len);
    }

    struct task *t = task_check(L, fn);
    if (cwd) {
        struct stat st;
        if (stat(cwd, &st) != 0)
            return bind_fail(L, "exec.run", "cwd \"%s\": %s", cwd,
                             uv_strerror(uv_translate_sys_error(errno)));
        if (!S_ISDIR(st.st_mode))
            return bind_fail(L, "exec.run", "cwd \"%s\": not a directory", cwd);
    }

    struct exec_op *op = calloc(1, sizeof *op);
    if (!op)
        return luaL_error(L, "%s: out of memory", fn);
    if (input) {
        op->input = malloc(input_len ? input_len : 1);
        if (!op->input) {
            free(op);
            return luaL_error(L, "%s: out of memory", fn);
        }
        memcpy(op->input, input, input_len);
        op->input_len = input_len;
    }
    op->max_output = (size_t)max_output;
    uv_loop_t *loop = agent_from_lua(L)->loop;

    uv_stdio_container_t stdio[3];
    op->out.op = op->err.op = op;
    uv_pipe_init(loop, &op->out.pipe, 0);
    uv_pipe_init(loop, &op->err.pipe, 0);
    op->out.pipe.data = &op->out;
    op->err.pipe.data = &op->err;
    op->handles = 2;
    if (input) {
        uv_pipe_init(loop, &op->in, 0);
        op->in.data = op;
        op->handles++;
        op->in_open = 1;
        stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
        stdio[0].data.stream = (uv_stream_t *)&op->in;
    } else {
        stdio[0].flags = UV_IGNORE;     /* libuv gives the child /dev/null */
    }
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&op->out.pipe;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&op->err.pipe;

    uv_process_options_t po;
    memset(&po, 0, sizeof po);
    po.file = argv[0];
    po.args = argv;
    po.env = envp;
    po.cwd = cwd;
    po.stdio = stdio;
    po.stdio_count = 3;
    po.exit_cb = exec_on_exit;
    po.flags = UV_PROCESS_DETACHED;     /* setsid(): its own process group */
    op->proc.data = op;
    int rc = uv_spawn(loop, &op->proc, &po);
    op->handles++;                      /* the process handle, spawned or not */
    if (rc != 0) {
        /* Every handle is closed; op goes with the last close callback. */
        op->exited = op->finished = 1;
        exec_close(op, (uv_handle_t *)&op->out.pipe);
        exec_close(op, (uv_handle_t *)&op->err.pipe);
        if (input)
            exec_close(op, (uv_handle_t *)&op->in);
        exec_close(op, (uv_handle_t *)&op->proc);
        return bind_fail(L, "exec.run", "cannot run \"%s\": %s", argv[0], uv_strerror(rc));
    }
    op->task = t;
    op->out.open = op->err.open = 1;
    uv_read_start((uv_stream_t *)&op->out.pipe, exec_on_alloc, exec_on_read);
    uv_read_start((uv_stream_t *)&op->err.pipe, exec_on_alloc, exec_on_read);
    if (input) {
        uv_buf_t b = uv_buf_init(op->input, (unsigned)op->input_len);
        op->wreq.data = op;
        if (uv_write(&op->wreq, (uv_stream_t *)&op->in, &b, 1, exec_on_written) != 0) {
            op->in_open = 0;
            exec_close(op, (uv_handle_t *)&op->in);
        }
    }
    uv_timer_init(loop, &op->timer);
    op->timer.data = op;
    op->handles++;
    uv_timer_start(&op->timer, exec_on_timer, (uint64_t)(timeout * 1000 + 0.5), 0);
    return task_wait(L, t, exec_cancel, op);
}

static const luaL_Reg exec_funcs[] = {
    { "run", l_exec_run },
    { NULL, NULL },
};

int l_exec_open(lua_State *L)
{
    /* A child that exits before reading its stdin turns our write into
     * SIGPIPE, which by default ends the process. The agent ignores it at
     * start; a host that loads the Lua module (busted) may not. */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
    lua_newtable(L);
    luaL_register(L, NULL, exec_funcs);
    return 1;
}
