/* store.h: the agent's SQLite database: opening it the one right way, a
 * cache of prepared statements, and transactions that nest as savepoints.
 *
 * SQLite runs synchronously on the loop thread, on purpose: the file is on
 * local disk, in WAL mode with synchronous=NORMAL a commit does not fsync,
 * and the registry's statements take microseconds (docs/registry.md has the
 * measured figures). A thread pool would cost more than it saves.
 *
 * Error codes split in two, as the bindings' two channels do:
 * store_operational() says whether a code is an operational failure (the disk,
 * the lock, the file) as opposed to a mistake in the SQL or the data. */
#ifndef MCP_STORE_H
#define MCP_STORE_H

#include <stddef.h>
#include <sqlite3.h>

/* How many prepared statements a database keeps, least recently used first
 * out. The registry uses a few dozen distinct statements. */
#define STORE_CACHE_MAX 128

struct store;

/* Opens (creating it, mode 0600, and its missing directories, mode 0700) the
 * database at path: WAL, synchronous=NORMAL, foreign_keys=ON, and a busy
 * timeout of busy_ms for the lock another process (an `mcp-agent token`
 * command) may hold. An existing file readable by others is made 0600.
 * Returns a store the caller closes with store_close(), or NULL with err
 * filled ("PATH: what"). */
struct store *store_open(const char *path, int busy_ms, char *err, size_t err_len);
/* Finalizes every statement and closes the database. Rolls back a
 * transaction left open. NULL is fine. */
void store_close(struct store *s);

sqlite3 *store_db(struct store *s);
const char *store_path(struct store *s);

/* The statement for the first SQL statement in sql[0..len), from the cache or
 * newly prepared (and cached), reset with its bindings cleared. *tail is set
 * to the text after it when that is more than blanks and comments, else to
 * NULL; a statement with a tail is not cached. Either way the caller hands
 * it back with store_stmt_done(). Returns an SQLite code: SQLITE_OK, or an
 * error whose message is in sqlite3_errmsg(store_db(s)). Blank sql gives
 * SQLITE_OK and *out NULL. */
int store_stmt(struct store *s, const char *sql, size_t len, sqlite3_stmt **out,
               const char **tail);
/* Hands a statement back after use: cached ones are reset, the others
 * finalized. */
void store_stmt_done(struct store *s, sqlite3_stmt *stmt);

/* Runs one statement without parameters and without rows (BEGIN, PRAGMA
 * x=y). Returns an SQLite code. */
int store_exec(struct store *s, const char *sql);

/* Transactions. store_tx_begin() opens one (BEGIN IMMEDIATE, taking the
 * write lock at once so that a transaction never fails half-way on a busy
 * lock) or, inside one, a savepoint. store_tx_end() commits or releases it
 * when commit is set and nothing failed in it, else rolls it back. Both
 * return an SQLite code, and leave the depth consistent whatever happened. */
int store_tx_begin(struct store *s);
int store_tx_end(struct store *s, int commit);
/* How deep the transactions nest now: 0 outside any. */
int store_tx_depth(struct store *s);

/* Marks the open transaction as doomed by an operational error: whatever
 * the code inside does next, the outermost transaction rolls back. msg is
 * kept (the first one wins) for store_tx_failed(). */
void store_tx_fail(struct store *s, const char *msg);
/* The message of the failure that doomed the open transaction, or NULL. */
const char *store_tx_failed(struct store *s);

/* Is code (a primary or extended SQLite result code) an operational failure:
 * busy or locked, I/O, disk full, read-only, corrupt, out of memory? The
 * others (syntax, constraint, misuse, mismatch) are programming errors. */
int store_operational(int code);

/* Counters of the statement cache, for metrics and tests. */
void store_cache_stats(struct store *s, int *size, unsigned long long *hits,
                       unsigned long long *misses);

#endif
