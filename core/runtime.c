/* runtime.c: the Lua state, its allocator and hook, and tasks.
 *
 * One state, owned by the loop thread. Tasks are coroutines anchored in the
 * registry; the loop resumes them, from the run queue when they start and
 * from I/O callbacks when what they wait for arrives. Limits are enforced by
 * a count hook (instructions, wall clock, memory) and, for a task that waits,
 * by a deadline timer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>
#include <luajit.h>

#include "agent.h"
#include "bindings.h"
#include "log.h"
#include "runtime.h"

/* Instructions between two hook calls: rare enough to cost nothing, often
 * enough that a runaway task is stopped within microseconds of its limit. */
#define HOOK_GRAIN 1000

enum task_state { T_QUEUED, T_RUNNING, T_WAITING, T_DONE };

struct task {
    struct runtime *rt;
    struct task *next, *prev;       /* rt->tasks */
    struct task *runq_next;
    lua_State *co;
    int co_ref;
    uint64_t id;
    char name[80];
    enum task_state state;
    int nargs;                      /* arguments waiting for the first resume */

    struct task_limits limits;
    uint64_t used;                  /* instructions counted so far */
    uint64_t deadline;              /* uv_hrtime() value; 0: none */
    long long mem;                  /* net bytes allocated while running */
    uv_timer_t *timer;              /* deadline of a waiting task */

    task_cancel_fn cancel;
    void *op;

    char abort_msg[256];            /* set once the task must end */
    int aborting;
    char *error;
    int quiet;                      /* ended by its owner: not a failure to shout about */
    int nresults;
    int keep;                       /* task_run_until_done frees it itself */

    task_done_fn done;
    void *done_ud;
};

static char agent_key;

/* The allocator: counts the whole state's memory, and the net growth of
 * the task running now, which is how a task's memory cap is measured. The
 * memory itself comes from the base allocator: libc for a state made here,
 * the state's own for one attached (busted's, whose blocks must go back to
 * the allocator that made them). */
static void *rt_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct runtime *rt = ud;
    struct task *t = rt->current;
    if (nsize == 0) {
        rt->base_alloc(rt->base_ud, ptr, osize, 0);
        if (ptr) {
            rt->mem_used -= osize;
            if (t)
                t->mem -= (long long)osize;
        }
        return NULL;
    }
    if (ptr == NULL)
        osize = 0;      /* LuaJIT passes a type tag, not a size, for new blocks */
    if (nsize > osize) {
        size_t grow = nsize - osize;
        if (rt->mem_limit && rt->mem_used + grow > rt->mem_limit)
            return NULL;
        /* Past twice its cap a task's allocations fail outright, so that one
         * huge string.rep cannot take the agent's memory before the hook runs. */
        if (t && t->limits.memory &&
            t->mem + (long long)grow > 2 * (long long)t->limits.memory)
            return NULL;
    }
    void *p = rt->base_alloc(rt->base_ud, ptr, osize, nsize);
    if (!p)
        return NULL;
    rt->mem_used += nsize - osize;
    if (t)
        t->mem += (long long)nsize - (long long)osize;
    return p;
}

static void *libc_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, nsize);
}

static int rt_panic(lua_State *L)
{
    log_error("lua: unprotected error: %s", lua_tostring(L, -1));
    abort();
}

struct agent *agent_from_lua(lua_State *L)
{
    lua_pushlightuserdata(L, &agent_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    struct agent *a = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return a;
}

static void task_set_abort(struct task *t, const char *fmt, const char *detail)
{
    if (t->aborting)
        return;
    t->aborting = 1;
    snprintf(t->abort_msg, sizeof t->abort_msg, fmt, t->name, detail);
}

static void rt_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    struct agent *a = agent_from_lua(L);
    struct runtime *rt = &a->rt;
    struct task *t = rt->current;
    if (!t)
        return;
    t->used += (uint64_t)rt->hook_count;
    if (!t->aborting) {
        char detail[64];
        if (t->limits.instructions && t->used > t->limits.instructions) {
            snprintf(detail, sizeof detail, "%llu",
                     (unsigned long long)t->limits.instructions);
            task_set_abort(t, "task %s: instruction budget of %s exceeded", detail);
        } else if (t->deadline && uv_hrtime() > t->deadline) {
            snprintf(detail, sizeof detail, "%g s", t->limits.timeout);
            task_set_abort(t, "task %s: deadline of %s exceeded", detail);
        } else if (t->limits.memory && t->mem > (long long)t->limits.memory) {
            snprintf(detail, sizeof detail, "%zu bytes", t->limits.memory);
            task_set_abort(t, "task %s: memory cap of %s exceeded", detail);
        }
    }
    if (!t->aborting)
        return;
    /* From now on every instruction raises: a pcall in the task can catch
     * one error, but not the next. */
    if (rt->hook_count != 1) {
        rt->hook_count = 1;
        lua_sethook(L, rt_hook, LUA_MASKCOUNT, 1);
    }
    luaL_error(L, "%s", t->abort_msg);
}

static void hook_restore(struct runtime *rt)
{
    if (rt->hook_count != HOOK_GRAIN) {
        rt->hook_count = HOOK_GRAIN;
        lua_sethook(rt->L, rt_hook, LUA_MASKCOUNT, HOOK_GRAIN);
    }
}

/* Converts the error value at idx to a message, calling __tostring when
 * the value has one. Leaves the stack as it was. */
static const char *error_text(lua_State *L, int idx, char *buf, size_t len)
{
    if (lua_type(L, idx) == LUA_TSTRING || lua_type(L, idx) == LUA_TNUMBER)
        return lua_tostring(L, idx);
    if (luaL_callmeta(L, idx, "__tostring")) {
        snprintf(buf, len, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
        lua_pop(L, 1);
        return buf;
    }
    snprintf(buf, len, "(error object is a %s value)", luaL_typename(L, idx));
    return buf;
}

static int traceback_handler(lua_State *L)
{
    char buf[256];
    const char *msg = error_text(L, 1, buf, sizeof buf);
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static char traceback_key;

int runtime_pcall(lua_State *L, int nargs, int nresults, const char *what)
{
    int base = lua_gettop(L) - nargs;       /* index of the function */
    /* One handler closure for the life of the state: this is the entry of
     * every call from C into Lua, and a closure per call is garbage. */
    lua_pushlightuserdata(L, &traceback_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushcfunction(L, traceback_handler);
        lua_pushlightuserdata(L, &traceback_key);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
    lua_insert(L, base);
    int rc = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    if (rc != 0) {
        log_error("%s: %s", what, lua_tostring(L, -1));
        if (nresults == 0 || nresults == LUA_MULTRET)
            lua_pop(L, 1);
        /* With fixed results the caller expects the message in their place. */
    }
    return rc;
}

static void runq_kick(uv_idle_t *h);
static void remember_yield_safe(lua_State *L);

static int runtime_setup(struct runtime *rt, struct agent *a, lua_State *L)
{
    rt->L = L;
    rt->agent = a;
    rt->next_id = 1;
    lua_pushlightuserdata(L, &agent_key);
    lua_pushlightuserdata(L, a);
    lua_rawset(L, LUA_REGISTRYINDEX);
    uv_idle_init(a->loop, &rt->runq_idle);
    rt->runq_idle.data = rt;
    uv_unref((uv_handle_t *)&rt->runq_idle);
    rt->hook_count = HOOK_GRAIN;
    lua_sethook(L, rt_hook, LUA_MASKCOUNT, HOOK_GRAIN);
    remember_yield_safe(L);
    return bindings_open(L, a);
}

int runtime_init(struct runtime *rt, struct agent *a, size_t mem_limit)
{
    memset(rt, 0, sizeof *rt);
    rt->mem_limit = mem_limit;
    rt->base_alloc = libc_alloc;
    lua_State *L = lua_newstate(rt_alloc, rt);
    if (!L) {
        log_error("lua: cannot create a state with the agent's allocator");
        return -1;
    }
    rt->own_state = 1;
    lua_atpanic(L, rt_panic);
    luaL_openlibs(L);
    return runtime_setup(rt, a, L);
}

int runtime_attach(struct runtime *rt, struct agent *a, lua_State *L)
{
    memset(rt, 0, sizeof *rt);
    /* Count through the state's own allocator, so task memory caps hold in
     * the Lua module too. */
    rt->base_alloc = lua_getallocf(L, &rt->base_ud);
    lua_setallocf(L, rt_alloc, rt);
    return runtime_setup(rt, a, L);
}

static void timer_free(uv_handle_t *h)
{
    free(h);
}

static void task_free(struct task *t)
{
    struct runtime *rt = t->rt;
    if (t->prev)
        t->prev->next = t->next;
    else
        rt->tasks = t->next;
    if (t->next)
        t->next->prev = t->prev;
    if (t->timer)
        uv_close((uv_handle_t *)t->timer, timer_free);
    luaL_unref(rt->L, LUA_REGISTRYINDEX, t->co_ref);
    free(t->error);
    free(t);
}

/* Ends a task: records its outcome, tells its owner, frees it. */
static void task_finish(struct task *t, int ok)
{
    struct runtime *rt = t->rt;
    t->state = T_DONE;
    if (t->timer)
        uv_timer_stop(t->timer);
    if (!ok && t->quiet) {
        log_info("task %s (#%llu) ended: %s", t->name, (unsigned long long)t->id,
                 t->error ? t->error : "?");
    } else if (!ok) {
        rt->tasks_failed++;
        log_error("task %s (#%llu) failed: %s", t->name, (unsigned long long)t->id,
                  t->error ? t->error : "?");
    }
    if (t->done)
        t->done(t, ok, t->done_ud);
    if (!t->keep)
        task_free(t);
}

static void task_fail(struct task *t, const char *msg)
{
    free(t->error);
    t->error = strdup(msg);
    task_finish(t, 0);
}

static void runq_remove(struct runtime *rt, struct task *t)
{
    struct task **pp = &rt->runq_head, *prev = NULL;
    while (*pp && *pp != t) {
        prev = *pp;
        pp = &(*pp)->runq_next;
    }
    if (!*pp)
        return;
    *pp = t->runq_next;
    if (rt->runq_tail == t)
        rt->runq_tail = prev;
    t->runq_next = NULL;
    rt->runq_len--;
}

static void abort_task(struct task *t, const char *err, int quiet);

static void deadline_fired(uv_timer_t *h)
{
    struct task *t = h->data;
    char msg[160];
    snprintf(msg, sizeof msg, "task %s: deadline of %g s exceeded", t->name, t->limits.timeout);
    abort_task(t, msg, 0);
}

struct task *task_spawn(struct runtime *rt, lua_State *L, int nargs, const char *name,
                        const struct task_limits *limits, task_done_fn done, void *ud)
{
    struct task *t = calloc(1, sizeof *t);
    if (!t) {
        lua_pop(L, nargs + 1);
        return NULL;
    }
    t->rt = rt;
    t->id = rt->next_id++;
    snprintf(t->name, sizeof t->name, "%s", name ? name : "task");
    t->co = lua_newthread(L);
    t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_xmove(L, t->co, nargs + 1);
    t->nargs = nargs;
    t->done = done;
    t->done_ud = ud;
    if (limits)
        t->limits = *limits;
    if (t->limits.timeout > 0) {
        t->deadline = uv_hrtime() + (uint64_t)(t->limits.timeout * 1e9);
        t->timer = malloc(sizeof *t->timer);
        uv_timer_init(rt->agent->loop, t->timer);
        t->timer->data = t;
        /* The loop's cached time is stale after Lua ran for a while (or the
         * loop idled): without this the deadline could fire early. */
        uv_update_time(rt->agent->loop);
        uv_timer_start(t->timer, deadline_fired, (uint64_t)(t->limits.timeout * 1000) + 1, 0);
    }
    t->next = rt->tasks;
    if (rt->tasks)
        rt->tasks->prev = t;
    rt->tasks = t;
    t->state = T_QUEUED;
    if (rt->runq_tail)
        rt->runq_tail->runq_next = t;
    else
        rt->runq_head = t;
    rt->runq_tail = t;
    rt->runq_len++;
    uv_idle_start(&rt->runq_idle, runq_kick);
    uv_ref((uv_handle_t *)&rt->runq_idle);
    rt->tasks_started++;
    return t;
}

static void runq_kick(uv_idle_t *h)
{
    struct runtime *rt = h->data;
    /* Only the tasks queued before this pass run now; those they spawn wait
     * for the next pass, so a task spawning in a loop cannot starve I/O. */
    size_t n = rt->runq_len;
    while (n-- > 0 && rt->runq_head) {
        struct task *t = rt->runq_head;
        rt->runq_head = t->runq_next;
        if (!rt->runq_head)
            rt->runq_tail = NULL;
        rt->runq_len--;
        t->runq_next = NULL;
        task_resume(t, t->nargs);
    }
    if (!rt->runq_head) {
        uv_idle_stop(&rt->runq_idle);
        uv_unref((uv_handle_t *)&rt->runq_idle);
    }
}

void task_resume(struct task *t, int nresults)
{
    struct runtime *rt = t->rt;
    char buf[256];
    t->cancel = NULL;
    t->op = NULL;
    t->state = T_RUNNING;
    struct task *prev = rt->current;
    rt->current = t;
    int rc = lua_resume(t->co, nresults);
    rt->current = prev;
    hook_restore(rt);

    if (rc == LUA_YIELD) {
        if (t->op) {
            t->state = T_WAITING;
            return;
        }
        task_fail(t, "coroutine.yield() called outside a coroutine of its own; "
                     "a task waits only through mcp bindings");
        return;
    }
    if (rc == 0) {
        t->nresults = lua_gettop(t->co);
        task_finish(t, 1);
        return;
    }
    const char *msg = error_text(t->co, -1, buf, sizeof buf);
    luaL_traceback(rt->L, t->co, msg, 0);
    task_fail(t, lua_tostring(rt->L, -1));
    lua_pop(rt->L, 1);
}

struct task *task_current(lua_State *L)
{
    struct agent *a = agent_from_lua(L);
    struct task *t = a ? a->rt.current : NULL;
    return t && t->co == L ? t : NULL;
}

static char yield_safe_key;

/* Records the C functions a task may wait inside: LuaJIT resumes across
 * pcall and xpcall, but not across other C functions (table.sort calling a
 * comparator, string.gsub calling a replacement, ...). */
static void remember_yield_safe(lua_State *L)
{
    lua_pushlightuserdata(L, &yield_safe_key);
    lua_newtable(L);
    static const char *const names[] = { "pcall", "xpcall", NULL };
    for (int i = 0; names[i]; i++) {
        lua_getglobal(L, names[i]);
        lua_pushboolean(L, 1);
        lua_rawset(L, -3);
    }
    lua_rawset(L, LUA_REGISTRYINDEX);
}

/* Could a binding called from L yield now? Every C frame between it and the
 * task's bottom must be one LuaJIT can resume across. Checked before the
 * binding starts its operation, so that a wait that cannot happen never
 * leaves an operation behind that would resume the task later. */
static int can_yield(lua_State *L)
{
    lua_Debug ar;
    int ok = 1;
    lua_pushlightuserdata(L, &yield_safe_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    int safe = lua_gettop(L);
    for (int level = 1; ok && lua_getstack(L, level, &ar); level++) {
        if (!lua_getinfo(L, "Sf", &ar))
            break;
        if (ar.what && strcmp(ar.what, "C") == 0) {
            lua_rawget(L, safe);        /* safe[function] */
            ok = lua_toboolean(L, -1);
        }
        lua_pop(L, 1);
    }
    lua_settop(L, safe - 1);
    return ok;
}

struct task *task_check(lua_State *L, const char *name)
{
    struct task *t = task_current(L);
    if (!t)
        luaL_error(L, "%s: can only wait inside a task (not in a coroutine of its own, "
                      "a metamethod or at load time)", name);
    if (!can_yield(L))
        luaL_error(L, "%s: cannot wait here: a C function (such as table.sort or "
                      "string.gsub) is calling this code, and a task cannot wait across it",
                   name);
    return t;
}

int task_wait(lua_State *L, struct task *t, task_cancel_fn cancel, void *op)
{
    t->cancel = cancel;
    t->op = op;
    return lua_yield(L, 0);
}

void task_abort(struct task *t, const char *err)
{
    abort_task(t, err, 1);
}

/* Ends a task from outside. quiet: its owner ended it (a client went away,
 * an operator pressed Ctrl-C, the agent stops), which is logged at info; a
 * limit's end is an error. */
static void abort_task(struct task *t, const char *err, int quiet)
{
    t->quiet = quiet;
    switch (t->state) {
    case T_DONE:
        return;
    case T_RUNNING:
        /* Only the task itself runs now: the hook will raise at once. */
        t->aborting = 1;
        snprintf(t->abort_msg, sizeof t->abort_msg, "%s", err);
        return;
    case T_QUEUED:
        runq_remove(t->rt, t);
        break;
    case T_WAITING:
        if (t->cancel)
            t->cancel(t->op);
        t->cancel = NULL;
        t->op = NULL;
        break;
    }
    task_fail(t, err);
}

lua_State *task_thread(struct task *t) { return t->co; }
uint64_t task_id(struct task *t) { return t->id; }
const char *task_name(struct task *t) { return t->name; }
const char *task_error(struct task *t) { return t->error; }
int task_nresults(struct task *t) { return t->nresults; }
int task_waiting(struct task *t) { return t->state == T_WAITING; }

struct task *task_find(struct runtime *rt, uint64_t id)
{
    for (struct task *t = rt->tasks; t; t = t->next)
        if (t->id == id)
            return t;
    return NULL;
}

struct task *task_next(struct runtime *rt, struct task *t)
{
    return t ? t->next : rt->tasks;
}

int task_run_until_done(struct runtime *rt, struct task *t, lua_State *L)
{
    t->keep = 1;
    while (t->state != T_DONE)
        uv_run(rt->agent->loop, UV_RUN_ONCE);
    int rc;
    if (t->error) {
        lua_pushstring(L, t->error);
        rc = LUA_ERRRUN;
    } else {
        lua_xmove(t->co, L, t->nresults);
        rc = 0;
    }
    task_free(t);
    return rc;
}

int runtime_busy(struct runtime *rt)
{
    int n = 0;
    for (struct task *t = rt->tasks; t; t = t->next)
        if (!t->limits.daemon && t->state != T_DONE)
            n++;
    return n;
}

void runtime_end_daemons(struct runtime *rt, const char *why)
{
    struct task *t = rt->tasks;
    while (t) {
        struct task *next = t->next;
        if (t->limits.daemon && t->state != T_DONE && t->state != T_RUNNING) {
            /* An aborted task may free others it owned: start over. */
            task_abort(t, why);
            t = rt->tasks;
            continue;
        }
        t = next;
    }
}

void runtime_jit_off(lua_State *L, int idx)
{
    luaJIT_setmode(L, idx, LUAJIT_MODE_ALLFUNC | LUAJIT_MODE_OFF);
}

void runtime_close(struct runtime *rt)
{
    if (!rt->L)
        return;
    while (rt->tasks) {
        struct task *t = rt->tasks;
        t->keep = 0;
        task_abort(t, "agent stopping");
        if (rt->tasks == t)         /* already done but kept */
            task_free(t);
    }
    uv_close((uv_handle_t *)&rt->runq_idle, NULL);
    if (rt->own_state)
        lua_close(rt->L);
    rt->L = NULL;
}
