/* store.c: the agent's SQLite database (see store.h): opening, the statement
 * cache, transactions and savepoints. No Lua here; l_store.c is its face. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "store.h"

struct stmt_entry {
    char *sql;
    size_t len;
    unsigned hash;
    sqlite3_stmt *stmt;
    unsigned long long used;    /* tick of the last use, for LRU */
};

struct store {
    sqlite3 *db;
    char *path;
    struct stmt_entry cache[STORE_CACHE_MAX];
    int ncache;
    unsigned long long tick, hits, misses;
    int depth;                  /* 0: no transaction; 1: BEGIN; n > 1: savepoints */
    char *failed;               /* why the open transaction is doomed, or NULL */
};

static unsigned hash_text(const char *s, size_t len)
{
    unsigned h = 2166136261u;   /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

/* Creates the missing directories of path's parent, mode 0700. */
static int mkdir_parents(const char *path, char *err, size_t err_len)
{
    char *dir = strdup(path);
    if (!dir) {
        snprintf(err, err_len, "%s: out of memory", path);
        return -1;
    }
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) {
        free(dir);
        return 0;
    }
    *slash = '\0';
    for (char *p = dir + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            snprintf(err, err_len, "%s: cannot create the directory %s: %s", path, dir,
                     strerror(errno));
            free(dir);
            return -1;
        }
        *p = c;
        if (c == '\0')
            break;
    }
    free(dir);
    return 0;
}

/* Creates the file 0600 before SQLite sees it: SQLite would create it with
 * the umask's mode, and gives the -wal and -shm files the mode of the main
 * file. The registry holds token hashes: others have no business reading it. */
static int create_private(const char *path, char *err, size_t err_len)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && (st.st_mode & 077) && fchmod(fd, 0600) != 0)
        log_warn("%s: is readable by others and cannot be made 0600: %s", path,
                 strerror(errno));
    close(fd);
    return 0;
}

/* Runs a pragma that answers with one value and copies it into out. */
static int pragma_value(sqlite3 *db, const char *sql, char *out, size_t out_len)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *v = sqlite3_column_text(st, 0);
        snprintf(out, out_len, "%s", v ? (const char *)v : "");
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        out[0] = '\0';
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

struct store *store_open(const char *path, int busy_ms, char *err, size_t err_len)
{
    if (mkdir_parents(path, err, err_len) != 0 || create_private(path, err, err_len) != 0)
        return NULL;
    struct store *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        snprintf(err, err_len, "%s: out of memory", path);
        return NULL;
    }
    /* One connection per store, used by the loop thread only. */
    int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, err_len, "%s: %s", path,
                 s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, busy_ms);
    char mode[32];
    rc = pragma_value(s->db, "PRAGMA journal_mode=WAL", mode, sizeof mode);
    if (rc != SQLITE_OK) {
        snprintf(err, err_len, "%s: %s", path, sqlite3_errmsg(s->db));
        goto fail;
    }
    if (strcmp(mode, "wal") != 0) {
        snprintf(err, err_len, "%s: cannot switch to WAL mode (the journal stays %s; "
                 "is the file on a network filesystem?)", path, mode);
        goto fail;
    }
    /* journal_size_limit: after a large transaction the -wal file shrinks
     * back to 64 MiB at the next checkpoint instead of staying at its peak. */
    static const char *const pragmas[] = {
        "PRAGMA synchronous=NORMAL",
        "PRAGMA foreign_keys=ON",
        "PRAGMA journal_size_limit=67108864",
    };
    for (size_t i = 0; i < sizeof pragmas / sizeof pragmas[0]; i++) {
        if (sqlite3_exec(s->db, pragmas[i], NULL, NULL, NULL) != SQLITE_OK) {
            snprintf(err, err_len, "%s: %s: %s", path, pragmas[i], sqlite3_errmsg(s->db));
            goto fail;
        }
    }
    return s;
fail:
    sqlite3_close_v2(s->db);
    free(s->path);
    free(s);
    return NULL;
}

void store_close(struct store *s)
{
    if (!s)
        return;
    if (s->depth > 0 && !sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    for (int i = 0; i < s->ncache; i++) {
        sqlite3_finalize(s->cache[i].stmt);
        free(s->cache[i].sql);
    }
    int rc = sqlite3_close_v2(s->db);
    if (rc != SQLITE_OK)
        log_warn("%s: closing: %s", s->path, sqlite3_errstr(rc));
    free(s->failed);
    free(s->path);
    free(s);
}

sqlite3 *store_db(struct store *s) { return s->db; }
const char *store_path(struct store *s) { return s->path; }
int store_tx_depth(struct store *s) { return s->depth; }
const char *store_tx_failed(struct store *s) { return s->failed; }

/* Is the rest of a statement's text only blanks, semicolons and comments? */
static int blank(const char *p, const char *end)
{
    while (p < end) {
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ';') {
            p++;
        } else if (end - p >= 2 && p[0] == '-' && p[1] == '-') {
            while (p < end && *p != '\n')
                p++;
        } else if (end - p >= 2 && p[0] == '/' && p[1] == '*') {
            p += 2;
            while (p < end && !(end - p >= 2 && p[0] == '*' && p[1] == '/'))
                p++;
            p = p < end ? p + 2 : end;
        } else {
            return 0;
        }
    }
    return 1;
}

static void cache_add(struct store *s, const char *sql, size_t len, unsigned h,
                      sqlite3_stmt *stmt)
{
    struct stmt_entry *e;
    if (s->ncache < STORE_CACHE_MAX) {
        e = &s->cache[s->ncache++];
    } else {
        e = &s->cache[0];
        for (int i = 1; i < s->ncache; i++)
            if (s->cache[i].used < e->used)
                e = &s->cache[i];
        sqlite3_finalize(e->stmt);
        free(e->sql);
    }
    e->sql = malloc(len + 1);
    if (!e->sql) {      /* not cached after all: the caller's statement lives on */
        *e = s->cache[--s->ncache];
        return;
    }
    memcpy(e->sql, sql, len);
    e->sql[len] = '\0';
    e->len = len;
    e->hash = h;
    e->stmt = stmt;
    e->used = ++s->tick;
}

static int cached(struct store *s, sqlite3_stmt *stmt)
{
    for (int i = 0; i < s->ncache; i++)
        if (s->cache[i].stmt == stmt)
            return 1;
    return 0;
}

int store_stmt(struct store *s, const char *sql, size_t len, sqlite3_stmt **out,
               const char **tail)
{
    unsigned h = hash_text(sql, len);
    *out = NULL;
    *tail = NULL;
    for (int i = 0; i < s->ncache; i++) {
        struct stmt_entry *e = &s->cache[i];
        if (e->hash == h && e->len == len && memcmp(e->sql, sql, len) == 0) {
            e->used = ++s->tick;
            s->hits++;
            sqlite3_reset(e->stmt);
            sqlite3_clear_bindings(e->stmt);
            *out = e->stmt;
            return SQLITE_OK;
        }
    }
    s->misses++;
    const char *rest = NULL;
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v3(s->db, sql, (int)len, SQLITE_PREPARE_PERSISTENT, &stmt, &rest);
    if (rc != SQLITE_OK)
        return rc;
    if (!stmt)
        return SQLITE_OK;
    if (rest && !blank(rest, sql + len))
        *tail = rest;
    else
        cache_add(s, sql, len, h, stmt);
    *out = stmt;
    return SQLITE_OK;
}

void store_stmt_done(struct store *s, sqlite3_stmt *stmt)
{
    if (!stmt)
        return;
    if (cached(s, stmt))
        sqlite3_reset(stmt);
    else
        sqlite3_finalize(stmt);
}

int store_exec(struct store *s, const char *sql)
{
    sqlite3_stmt *st;
    const char *tail;
    int rc = store_stmt(s, sql, strlen(sql), &st, &tail);
    if (rc != SQLITE_OK || !st)
        return rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    store_stmt_done(s, st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

void store_tx_fail(struct store *s, const char *msg)
{
    if (s->depth > 0 && !s->failed)
        s->failed = strdup(msg ? msg : "failed");
}

static void tx_clear(struct store *s)
{
    s->depth = 0;
    free(s->failed);
    s->failed = NULL;
}

int store_tx_begin(struct store *s)
{
    if (s->depth == 0) {
        int rc = store_exec(s, "BEGIN IMMEDIATE");
        if (rc == SQLITE_OK)
            s->depth = 1;
        return rc;
    }
    if (s->failed)
        return SQLITE_ABORT;
    char sql[32];
    snprintf(sql, sizeof sql, "SAVEPOINT mcp_tx%d", s->depth + 1);
    int rc = store_exec(s, sql);
    if (rc == SQLITE_OK)
        s->depth++;
    else if (store_operational(rc))
        store_tx_fail(s, sqlite3_errmsg(s->db));
    return rc;
}

int store_tx_end(struct store *s, int commit)
{
    if (s->depth == 0)
        return SQLITE_MISUSE;
    /* After some errors (I/O, disk full) SQLite rolls the whole transaction
     * back by itself: whatever the code above believed, it is gone. */
    if (sqlite3_get_autocommit(s->db) && !s->failed)
        store_tx_fail(s, "the transaction was rolled back by SQLite after an error");
    int rc = SQLITE_OK;
    if (s->depth > 1) {
        char sql[64];
        if (!s->failed) {
            if (!commit) {
                snprintf(sql, sizeof sql, "ROLLBACK TO mcp_tx%d", s->depth);
                rc = store_exec(s, sql);
            }
            if (rc == SQLITE_OK) {
                snprintf(sql, sizeof sql, "RELEASE mcp_tx%d", s->depth);
                rc = store_exec(s, sql);
            }
            if (rc != SQLITE_OK)
                store_tx_fail(s, sqlite3_errmsg(s->db));
        }
        /* A doomed transaction keeps its savepoints: the outermost level's
         * ROLLBACK discards them all. */
        s->depth--;
        return rc;
    }
    if (commit && !s->failed) {
        rc = store_exec(s, "COMMIT");
        if (rc != SQLITE_OK && !sqlite3_get_autocommit(s->db))
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    } else if (!sqlite3_get_autocommit(s->db)) {
        rc = store_exec(s, "ROLLBACK");
    }
    tx_clear(s);
    return rc;
}

int store_operational(int code)
{
    switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_NOMEM:
    case SQLITE_PROTOCOL:
    case SQLITE_PERM:
    case SQLITE_NOLFS:
    case SQLITE_ABORT:
        return 1;
    default:
        return 0;
    }
}

void store_cache_stats(struct store *s, int *size, unsigned long long *hits,
                       unsigned long long *misses)
{
    *size = s->ncache;
    *hits = s->hits;
    *misses = s->misses;
}
