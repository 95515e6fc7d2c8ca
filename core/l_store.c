/* l_store.c: mcp.store, the Lua face of store.c: a database object with
 * exec, query, row and tx.
 *
 * Errors: a mistake in the SQL or the data (syntax, unknown column, a
 * constraint, a wrong number of parameters) raises, naming the SQL. An
 * operational failure (the lock held past the busy timeout, I/O, disk full)
 * returns nil, err outside a transaction. Inside db:tx it raises instead, so
 * that the transaction function cannot go on and commit half of its work;
 * the transaction is then doomed, and the outermost db:tx rolls it back and
 * returns nil, err. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bindings.h"
#include "store.h"

#define DB_MT "mcp.store.db"
#define DEFAULT_BUSY_MS 5000

struct l_db {
    struct store *s;            /* NULL once closed */
};

static struct l_db *check_db(lua_State *L, const char *fn)
{
    struct l_db *d = luaL_checkudata(L, 1, DB_MT);
    if (!d->s)
        luaL_error(L, "%s: the database is closed", fn);
    return d;
}

/* The SQL as an error message quotes it: blanks collapsed, cut at 200. */
static void sql_excerpt(const char *sql, char *out, size_t out_len)
{
    size_t n = 0;
    int space = 0;
    for (const char *p = sql; *p && n + 4 < out_len; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
            space = n > 0;
            continue;
        }
        if (space)
            out[n++] = ' ';
        space = 0;
        out[n++] = *p;
        if (n >= 200 && p[1]) {
            memcpy(out + n, "...", 3);
            n += 3;
            break;
        }
    }
    out[n] = '\0';
}

/* Reports an SQLite error of fn running sql: raises a programming error;
 * for an operational one returns nil, err, or inside a transaction dooms it
 * and raises. */
static int sql_error(lua_State *L, struct l_db *d, const char *fn, const char *sql, int rc)
{
    char excerpt[256];
    sql_excerpt(sql, excerpt, sizeof excerpt);
    const char *msg = rc == SQLITE_ABORT && store_tx_failed(d->s)
                          ? store_tx_failed(d->s)
                          : sqlite3_errmsg(store_db(d->s));
    if (store_operational(rc)) {
        lua_pushfstring(L, "%s: %s (%s) in: %s", fn, msg, store_path(d->s), excerpt);
        if (store_tx_depth(d->s) == 0) {
            lua_pushnil(L);
            lua_insert(L, -2);
            return 2;
        }
        store_tx_fail(d->s, lua_tostring(L, -1));
        return lua_error(L);
    }
    return luaL_error(L, "%s: %s in: %s", fn, msg, excerpt);
}

static void bind_value(lua_State *L, sqlite3_stmt *st, int i, int idx, const char *fn,
                       const char *sql)
{
    int rc = SQLITE_OK;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        rc = sqlite3_bind_null(st, i);
        break;
    case LUA_TBOOLEAN:
        rc = sqlite3_bind_int(st, i, lua_toboolean(L, idx));
        break;
    case LUA_TNUMBER: {
        lua_Number n = lua_tonumber(L, idx);
        if (isnan(n))
            luaL_error(L, "%s: parameter %d is NaN, which SQLite cannot hold", fn, i);
        /* Integral values are stored as INTEGER: the column's type then says
         * what the value is, and comparisons with integer columns hold. */
        if (n == floor(n) && n >= -9223372036854775808.0 && n < 9223372036854775808.0)
            rc = sqlite3_bind_int64(st, i, (sqlite3_int64)n);
        else
            rc = sqlite3_bind_double(st, i, n);
        break;
    }
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        rc = sqlite3_bind_text64(st, i, s, len, SQLITE_TRANSIENT, SQLITE_UTF8);
        break;
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) {   /* mcp.json.null */
            rc = sqlite3_bind_null(st, i);
            break;
        }
        /* fallthrough */
    default: {
        char excerpt[256];
        sql_excerpt(sql, excerpt, sizeof excerpt);
        luaL_error(L, "%s: parameter %d: cannot store a %s (expected nil, a boolean, a "
                      "number or a string) in: %s", fn, i, luaL_typename(L, idx), excerpt);
    }
    }
    if (rc != SQLITE_OK)
        luaL_error(L, "%s: parameter %d: %s", fn, i, sqlite3_errstr(rc));
}

/* Prepares sql (argument 2) and binds arguments 3.. to it. Returns the
 * statement, or NULL with *nret results (nil, err) pushed by sql_error.
 * *tail is set when sql holds more statements, which only a script may
 * (allow_script, and no parameters): the caller then runs the rest. */
static sqlite3_stmt *prepare(lua_State *L, struct l_db *d, const char *fn,
                             const char **tail, int allow_script, int *nret)
{
    size_t len;
    const char *sql = luaL_checklstring(L, 2, &len);
    int nargs = lua_gettop(L) - 2;
    if (store_tx_failed(d->s))
        luaL_error(L, "%s: the transaction was aborted by an earlier error: %s", fn,
                   store_tx_failed(d->s));
    sqlite3_stmt *st;
    int rc = store_stmt(d->s, sql, len, &st, tail);
    if (rc != SQLITE_OK) {
        *nret = sql_error(L, d, fn, sql, rc);
        return NULL;
    }
    if (!st)
        luaL_error(L, "%s: the SQL is empty", fn);
    if (*tail && (!allow_script || nargs > 0)) {
        store_stmt_done(d->s, st);
        char excerpt[256];
        sql_excerpt(sql, excerpt, sizeof excerpt);
        luaL_error(L, "%s: one statement at a time%s, got several in: %s", fn,
                   allow_script ? " when parameters are given" : "", excerpt);
    }
    int want = sqlite3_bind_parameter_count(st);
    if (want != nargs) {
        store_stmt_done(d->s, st);
        char excerpt[256];
        sql_excerpt(sql, excerpt, sizeof excerpt);
        luaL_error(L, "%s: the SQL has %d parameter%s, got %d value%s in: %s", fn, want,
                   want == 1 ? "" : "s", nargs, nargs == 1 ? "" : "s", excerpt);
    }
    for (int i = 1; i <= nargs; i++)
        bind_value(L, st, i, 2 + i, fn, sql);
    return st;
}

static void push_column(lua_State *L, sqlite3_stmt *st, int i)
{
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER:
        lua_pushnumber(L, (lua_Number)sqlite3_column_int64(st, i));
        break;
    case SQLITE_FLOAT:
        lua_pushnumber(L, sqlite3_column_double(st, i));
        break;
    case SQLITE_TEXT:
        lua_pushlstring(L, (const char *)sqlite3_column_text(st, i),
                        (size_t)sqlite3_column_bytes(st, i));
        break;
    case SQLITE_BLOB:
        lua_pushlstring(L, sqlite3_column_blob(st, i), (size_t)sqlite3_column_bytes(st, i));
        break;
    default:
        lua_pushnil(L);
    }
}

/* Pushes the current row as a table keyed by column name (NULLs absent). */
static void push_row(lua_State *L, sqlite3_stmt *st)
{
    int n = sqlite3_column_count(st);
    lua_createtable(L, 0, n);
    for (int i = 0; i < n; i++) {
        if (sqlite3_column_type(st, i) == SQLITE_NULL)
            continue;
        push_column(L, st, i);
        lua_setfield(L, -2, sqlite3_column_name(st, i));
    }
}

/* Runs the statements after the first of a script, without parameters. */
static int run_script(lua_State *L, struct l_db *d, const char *fn, const char *tail)
{
    while (tail && *tail) {
        sqlite3_stmt *st;
        const char *next;
        /* Not through the cache: a script's statements run once. */
        int rc = sqlite3_prepare_v2(store_db(d->s), tail, -1, &st, &next);
        if (rc != SQLITE_OK)
            return sql_error(L, d, fn, tail, rc);
        if (!st)
            break;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            ;
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return sql_error(L, d, fn, tail, rc);
        tail = next;
    }
    return 0;
}

/* db:exec(sql, ...) -> changes, last_insert_rowid. Several statements
 * (a migration) run in order when no parameters are given. */
static int l_db_exec(lua_State *L)
{
    struct l_db *d = check_db(L, "db:exec");
    const char *tail, *sql = lua_tostring(L, 2);
    int nret = 0;
    sqlite3_stmt *st = prepare(L, d, "db:exec", &tail, 1, &nret);
    if (!st)
        return nret;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    store_stmt_done(d->s, st);
    if (rc != SQLITE_DONE)
        return sql_error(L, d, "db:exec", sql, rc);
    if (tail && (nret = run_script(L, d, "db:exec", tail)) != 0)
        return nret;
    sqlite3 *db = store_db(d->s);
    lua_pushnumber(L, sqlite3_changes(db));
    lua_pushnumber(L, (lua_Number)sqlite3_last_insert_rowid(db));
    return 2;
}

/* db:query(sql, ...) -> { row, ... }, each row keyed by column name. */
static int l_db_query(lua_State *L)
{
    struct l_db *d = check_db(L, "db:query");
    const char *tail, *sql = lua_tostring(L, 2);
    int nret = 0;
    sqlite3_stmt *st = prepare(L, d, "db:query", &tail, 0, &nret);
    if (!st)
        return nret;
    lua_newtable(L);
    int rc, n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        push_row(L, st);
        lua_rawseti(L, -2, ++n);
    }
    store_stmt_done(d->s, st);
    if (rc != SQLITE_DONE)
        return sql_error(L, d, "db:query", sql, rc);
    return 1;
}

/* db:row(sql, ...) -> the first row, or nil when there is none. */
static int l_db_row(lua_State *L)
{
    struct l_db *d = check_db(L, "db:row");
    const char *tail, *sql = lua_tostring(L, 2);
    int nret = 0;
    sqlite3_stmt *st = prepare(L, d, "db:row", &tail, 0, &nret);
    if (!st)
        return nret;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        push_row(L, st);
    store_stmt_done(d->s, st);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc != SQLITE_DONE)
        return sql_error(L, d, "db:row", sql, rc);
    lua_pushnil(L);
    return 1;
}

static int is_wait_error(lua_State *L, int idx)
{
    const char *m = lua_type(L, idx) == LUA_TSTRING ? lua_tostring(L, idx) : NULL;
    return m && (strstr(m, "attempt to yield across") || strstr(m, "can only wait inside a task"));
}

static int tx_noop(lua_State *L)
{
    (void)L;
    return 0;
}

/* db:tx(fn, ...) -> what fn(...) returns (true when nothing), or nil, err
 * when the database failed. fn runs inside BEGIN IMMEDIATE ... COMMIT, or a
 * savepoint when a transaction is already open; an error in fn rolls back
 * and is raised again. fn runs to its end without waiting: it is called on
 * a thread of its own through lua_pcall, where a binding that would wait
 * raises ("can only wait inside a task") and coroutine.yield raises
 * "attempt to yield across C-call boundary". A transaction holds the write
 * lock, so waiting in one would stall every other writer. */
static int l_db_tx(lua_State *L)
{
    struct l_db *d = check_db(L, "db:tx");
    luaL_checktype(L, 2, LUA_TFUNCTION);
    int nargs = lua_gettop(L) - 2;
    struct store *s = d->s;
    if (store_tx_failed(s))
        return luaL_error(L, "db:tx: the transaction was aborted by an earlier error: %s",
                          store_tx_failed(s));
    int rc = store_tx_begin(s);
    if (rc != SQLITE_OK)
        return sql_error(L, d, "db:tx", store_tx_depth(s) ? "SAVEPOINT" : "BEGIN IMMEDIATE",
                         rc);
    int outer = store_tx_depth(s) == 1;

    lua_State *T = lua_newthread(L);
    lua_insert(L, 2);                       /* db, thread, fn, args... */
    lua_xmove(L, T, nargs + 1);
    int status = lua_pcall(T, nargs, LUA_MULTRET, 0);
    /* LuaJIT 2.1.0-beta3 (upstream issue #1066) leaves g->cur_L on T after a
     * call on another thread from C; the next trace exit then crashes. Any
     * call made from L puts it back. */
    lua_pushcfunction(L, tx_noop);
    lua_call(L, 0, 0);
    int nres = lua_gettop(T);
    /* Stack from here: db, thread (kept anchored), why the database doomed
     * the transaction or nil. */
    if (store_tx_failed(s))
        lua_pushstring(L, store_tx_failed(s));
    else
        lua_pushnil(L);
    rc = store_tx_end(s, status == 0);
    if (lua_isnil(L, 3) && rc != SQLITE_OK) {
        lua_pop(L, 1);
        if (outer || !store_tx_failed(s))
            lua_pushfstring(L, "db:tx: %s (%s) at %s", sqlite3_errmsg(store_db(s)),
                            store_path(s), outer ? "COMMIT" : "RELEASE");
        else
            lua_pushstring(L, store_tx_failed(s));
    }
    int failed = !lua_isnil(L, 3);

    if (status != 0 && !(failed && outer)) {
        /* fn's error, raised again after the rollback. */
        if (is_wait_error(T, -1))
            return luaL_error(L, "db:tx: the transaction function waited or yielded, which "
                                 "it must not: it runs synchronously while holding the "
                                 "database's write lock (%s)", lua_tostring(T, -1));
        lua_xmove(T, L, 1);
        return lua_error(L);
    }
    if (failed) {
        /* The database failed under fn (an error fn may even have caught with
         * pcall) or at COMMIT: nothing was written. Only the outermost level
         * answers nil, err; inner ones pass the failure up. */
        if (!outer) {
            store_tx_fail(s, lua_tostring(L, 3));
            return lua_error(L);
        }
        lua_pushnil(L);
        lua_insert(L, 3);
        return 2;
    }
    lua_settop(L, 2);
    if (nres == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    luaL_checkstack(L, nres, "db:tx: too many results");
    lua_xmove(T, L, nres);
    return nres;
}

/* db:close(): closes the database; later calls raise. Closing twice is fine. */
static int l_db_close(lua_State *L)
{
    struct l_db *d = luaL_checkudata(L, 1, DB_MT);
    if (d->s && store_tx_depth(d->s) > 0)
        return luaL_error(L, "db:close: a transaction is open");
    store_close(d->s);
    d->s = NULL;
    return 0;
}

static int l_db_gc(lua_State *L)
{
    struct l_db *d = luaL_checkudata(L, 1, DB_MT);
    store_close(d->s);
    d->s = NULL;
    return 0;
}

/* db:path() -> the file's path. */
static int l_db_path(lua_State *L)
{
    struct l_db *d = check_db(L, "db:path");
    lua_pushstring(L, store_path(d->s));
    return 1;
}

/* db:stats() -> { statements = N cached, hits = N, misses = N }. */
static int l_db_stats(lua_State *L)
{
    struct l_db *d = check_db(L, "db:stats");
    int size;
    unsigned long long hits, misses;
    store_cache_stats(d->s, &size, &hits, &misses);
    lua_createtable(L, 0, 3);
    lua_pushnumber(L, size);
    lua_setfield(L, -2, "statements");
    lua_pushnumber(L, (lua_Number)hits);
    lua_setfield(L, -2, "hits");
    lua_pushnumber(L, (lua_Number)misses);
    lua_setfield(L, -2, "misses");
    return 1;
}

static int l_db_tostring(lua_State *L)
{
    struct l_db *d = luaL_checkudata(L, 1, DB_MT);
    if (d->s)
        lua_pushfstring(L, "mcp.store.db: %s", store_path(d->s));
    else
        lua_pushliteral(L, "mcp.store.db: closed");
    return 1;
}

static const char *const open_opts[] = { "busy_timeout", NULL };

/* mcp.store.open(path [, {busy_timeout = "5s"}]) -> db, or nil, err. */
static int l_store_open_db(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    bind_check_options(L, 2, "mcp.store.open", open_opts);
    double busy = bind_opt_duration(L, 2, "busy_timeout", DEFAULT_BUSY_MS / 1000.0,
                                    "mcp.store.open");
    if (!*path)
        return luaL_error(L, "mcp.store.open: the path is empty");
    struct l_db *d = lua_newuserdata(L, sizeof *d);
    d->s = NULL;
    luaL_getmetatable(L, DB_MT);
    lua_setmetatable(L, -2);
    char err[1024];
    d->s = store_open(path, (int)(busy * 1000 + 0.5), err, sizeof err);
    if (!d->s)
        return bind_fail(L, "mcp.store.open", "%s", err);
    return 1;
}

static const luaL_Reg db_methods[] = {
    { "exec", l_db_exec },
    { "query", l_db_query },
    { "row", l_db_row },
    { "tx", l_db_tx },
    { "close", l_db_close },
    { "path", l_db_path },
    { "stats", l_db_stats },
    { NULL, NULL },
};

static const luaL_Reg store_funcs[] = {
    { "open", l_store_open_db },
    { NULL, NULL },
};

int l_store_open(lua_State *L)
{
    if (luaL_newmetatable(L, DB_MT)) {
        lua_newtable(L);
        luaL_register(L, NULL, db_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_db_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_db_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_register(L, NULL, store_funcs);
    return 1;
}
