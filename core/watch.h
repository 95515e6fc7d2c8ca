/* watch.h: file-change watches on the agent's directories, debounced.
 *
 * Each watched directory is a root: it and its subdirectories (made later
 * too) each get a uv_fs_event. Changes gather for `debounce` seconds after
 * the last one (200 ms by default, 2 s at most after the first), then go
 * to Lua in one call, mcp.agent.on_change({path, ...}), run as a task; the
 * next call waits until that task has ended. A root that does not exist
 * yet is looked for again every 2 s. */
#ifndef MCP_WATCH_H
#define MCP_WATCH_H

#include <stddef.h>

struct agent;
struct watch;

/* Makes a->watch, the agent's watcher, when there is none yet. Returns it,
 * or NULL when out of memory. */
struct watch *watch_open(struct agent *a);
/* The server's watches: services_dir, policies_dir, lib_dir/lua and
 * lib_dir/policies from the config. A directory that cannot be watched is
 * logged, not fatal. Returns 0, or -1 when out of memory. */
int watch_agent_open(struct agent *a);
/* Closes every watch; the memory goes once the loop has closed the handles.
 * Changes not yet delivered are dropped. a->watch is NULL afterwards. */
void watch_close(struct agent *a);

/* Watches dir and everything under it. Returns 1 when watching now, 0 when
 * dir does not exist yet (it is looked for every 2 s), -1 with err filled
 * when it cannot be watched (not a directory, the inotify limit). */
int watch_add(struct watch *w, const char *dir, char *err, size_t err_len);
/* Stops watching dir. Returns 0, or -1 when it was not watched. */
int watch_remove(struct watch *w, const char *dir);
/* The i-th root (0-based, in the order added), or NULL past the end;
 * watching says whether it exists now, dirs how many directories are
 * watched under it. */
const char *watch_root_info(struct watch *w, size_t i, int *watching, int *dirs);
/* Sets the debounce delay in seconds. */
void watch_set_debounce(struct watch *w, double seconds);
double watch_debounce(struct watch *w);

#endif
