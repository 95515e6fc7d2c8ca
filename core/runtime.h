/* runtime.h: the LuaJIT state and the tasks that run in it.
 *
 * Lua code runs as tasks: coroutines that the loop resumes. A binding that
 * waits (sleep, Podman, HTTP, exec) calls task_wait(), which yields the
 * task; when the result arrives, C pushes it onto the task's thread and calls
 * task_resume(). Each task may carry limits (instructions, wall clock,
 * memory); a task past a limit is ended with an error that pcall inside the
 * task cannot swallow, because the hook keeps raising until the task is gone. */
#ifndef MCP_RUNTIME_H
#define MCP_RUNTIME_H

#include <stddef.h>
#include <stdint.h>
#include <lua.h>
#include <uv.h>

struct agent;
struct task;

/* Cancels a task's pending operation: stops the I/O and frees the operation.
 * After it returns, the operation must never resume the task. */
typedef void (*task_cancel_fn)(void *op);

/* Called once when a task ends. When ok, the task's results are on
 * task_thread(t) at indexes 1..task_nresults(t); otherwise task_error(t)
 * says what happened. The task is freed after the callback returns. */
typedef void (*task_done_fn)(struct task *t, int ok, void *ud);

struct task_limits {
    uint64_t instructions;      /* 0: no budget */
    double timeout;             /* seconds of wall clock; 0: none */
    size_t memory;              /* bytes of net growth; 0: no cap */
    int daemon;                 /* a background loop: ended at once on stop */
};

struct runtime {
    lua_State *L;
    struct agent *agent;
    int own_state;              /* created here (with our allocator) vs. attached */
    struct task *current;       /* the task whose code runs now, or NULL */
    struct task *tasks;         /* every live task, for listing and shutdown */
    struct task *runq_head, *runq_tail;
    size_t runq_len;
    uv_idle_t runq_idle;
    uint64_t next_id;
    size_t mem_used, mem_limit; /* whole state; limit 0: none */
    lua_Alloc base_alloc;       /* where the memory comes from */
    void *base_ud;
    int hook_count;
    uint64_t tasks_started, tasks_failed;
};

/* Creates a fresh Lua state with the counting allocator, the standard
 * libraries and the mcp bindings. Returns 0, or -1 with a message logged. */
int runtime_init(struct runtime *rt, struct agent *a, size_t mem_limit);
/* Adopts a state created elsewhere (busted's, in the Lua C module). */
int runtime_attach(struct runtime *rt, struct agent *a, lua_State *L);
/* Ends every task and closes the state when the runtime made it. */
void runtime_close(struct runtime *rt);

/* Calls the function below nargs arguments on L's stack in protected mode
 * with a traceback handler. On error logs "what: message" with the traceback
 * and returns non-zero; the stack is left as it was found (results dropped
 * unless nresults is not 0, in which case they stay on success). */
int runtime_pcall(lua_State *L, int nargs, int nresults, const char *what);

/* Creates a task running the function below nargs arguments on L's stack
 * (both are popped). The task starts from the loop, never inside this call.
 * limits may be NULL. Returns the task, owned by the runtime. */
struct task *task_spawn(struct runtime *rt, lua_State *L, int nargs, const char *name,
                        const struct task_limits *limits, task_done_fn done, void *ud);

/* The task whose coroutine is L and which may wait now, or NULL. */
struct task *task_current(lua_State *L);
/* Like task_current, but raises "NAME: can only wait inside a task" when
 * L may not yield. For bindings, at their top. */
struct task *task_check(lua_State *L, const char *name);

/* Yields the running task until the operation completes. To be used as
 * `return task_wait(L, t, cancel, op);` from a binding. */
int task_wait(lua_State *L, struct task *t, task_cancel_fn cancel, void *op);

/* Resumes a waiting task with nresults values already pushed onto its thread.
 * Must be called from a loop callback, never from inside Lua. */
void task_resume(struct task *t, int nresults);

/* Ends a task from outside (console Ctrl-C, a client gone, shutdown): its
 * pending operation is cancelled and it finishes with err as its error,
 * logged at info (its owner asked for it). */
void task_abort(struct task *t, const char *err);

lua_State *task_thread(struct task *t);
uint64_t task_id(struct task *t);
const char *task_name(struct task *t);
const char *task_error(struct task *t);
int task_nresults(struct task *t);
int task_waiting(struct task *t);
struct task *task_find(struct runtime *rt, uint64_t id);
/* Iterates the live tasks, newest first: task_next(rt, NULL) is the first. */
struct task *task_next(struct runtime *rt, struct task *t);

/* How many live tasks are not daemons (work a clean stop waits for). */
int runtime_busy(struct runtime *rt);
/* Aborts every daemon task (on stop). */
void runtime_end_daemons(struct runtime *rt, const char *why);

/* Runs the loop until t has ended (for mcp.run in the Lua module and the CLI).
 * Returns like lua_pcall: 0 with results moved onto L, or non-zero with the
 * error message on L. */
int task_run_until_done(struct runtime *rt, struct task *t, lua_State *L);

/* Switches the JIT off for the function at idx and everything it defines,
 * so the instruction budget holds for it (LuaJIT's hook does not fire in
 * compiled traces). */
void runtime_jit_off(lua_State *L, int idx);

#endif
