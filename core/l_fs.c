/* l_fs.c: mcp.fs: files, either confined under a root or the agent's own.
 *
 * Confined calls (read, write, stat, list, remove) take a root the agent
 * trusts and a relative path it does not (from the API's push/pull, from a
 * definition). The path is resolved INSIDE the root by the kernel:
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) where the kernel has it,
 * else a walk of one openat(O_NOFOLLOW) per component that refuses every
 * symlink. Before either, the path is checked as text: no "..", no absolute
 * path, no NUL or control bytes, no backslash, no percent-encoded ".", "/",
 * "\" or NUL (decoding is the caller's job; a path still carrying them was
 * decoded wrongly or twice), and bounded lengths.
 *
 * Unconfined calls (read_file, write_file, listdir, mtime, mkdir) are for
 * the agent's own files: definitions, policies, the nginx include dir.
 *
 * These are synchronous system calls on the loop thread, on purpose: the
 * files are small local files (definitions, policies, proxy snippets; the
 * API caps the size of what it pushes and pulls, and read caps what it
 * reads), so a call costs microseconds, less than handing it to libuv's
 * thread pool and back. Opens use O_NONBLOCK so that a FIFO planted under a
 * root cannot park the loop. Writes are atomic: a temporary file in the same
 * directory, fsync, rename over the target. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/openat2.h>

#include "agent.h"
#include "bindings.h"

#define FS_PATH_MAX 4095
#define FS_NAME_MAX 255
#define FS_DEFAULT_MAX (16 << 20)
#define FS_GUARD_MT "mcp.fs.guard"

/* Shared by every fs function as upvalue 1: how confined paths resolve. */
struct fs_conf {
    int have_openat2;           /* the kernel has it (probed once at open) */
    int use_openat2;            /* mcp.fs.resolver("openat") turns it off */
};

/* What a call holds (descriptors, a directory stream, a list of names), in
 * a userdata whose __gc releases it: a Lua error halfway through (out of
 * memory) leaks nothing. */
struct fs_guard {
    int fd[2];
    DIR *dir;
    char **names;
    size_t n, cap;
};

static void fs_guard_release(struct fs_guard *g)
{
    for (int i = 0; i < 2; i++)
        if (g->fd[i] >= 0) {
            close(g->fd[i]);
            g->fd[i] = -1;
        }
    if (g->dir) {
        closedir(g->dir);
        g->dir = NULL;
    }
    for (size_t i = 0; i < g->n; i++)
        free(g->names[i]);
    free(g->names);
    g->names = NULL;
    g->n = g->cap = 0;
}

static int fs_guard_gc(lua_State *L)
{
    fs_guard_release(luaL_checkudata(L, 1, FS_GUARD_MT));
    return 0;
}

static struct fs_guard *fs_guard_new(lua_State *L)
{
    struct fs_guard *g = lua_newuserdata(L, sizeof *g);
    memset(g, 0, sizeof *g);
    g->fd[0] = g->fd[1] = -1;
    luaL_getmetatable(L, FS_GUARD_MT);
    lua_setmetatable(L, -2);
    return g;
}

/* Releases what the call holds at once (not at the next GC: a stream of
 * refused paths must not pile up descriptors) and returns nil, "OP: MSG". */
static int fs_return_fail(lua_State *L, struct fs_guard *g, const char *op, const char *msg)
{
    fs_guard_release(g);
    return bind_fail(L, op, "%s", msg);
}

static struct fs_conf *fs_conf(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* strerror, lower-cased to sit inside a sentence. */
static const char *fs_reason(int e, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s", strerror(e));
    buf[0] = (char)tolower((unsigned char)buf[0]);
    return buf;
}

/* A path as messages show it: in quotes, bytes that would garble a log line
 * escaped, cut short when long. */
static const char *fs_show(const char *s, size_t len, char *buf, size_t cap)
{
    size_t o = 0;
    buf[o++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (o + 8 >= cap - 4) {
            o += (size_t)snprintf(buf + o, cap - o, "...");
            break;
        }
        if (ch == 0)
            o += (size_t)snprintf(buf + o, cap - o, "\\0");
        else if (ch == '"' || ch == '\\')
            o += (size_t)snprintf(buf + o, cap - o, "\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f)
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", ch);
        else
            buf[o++] = (char)ch;
    }
    buf[o++] = '"';
    buf[o] = 0;
    return buf;
}

/* One confined call: the root, the relative path, and the message. */
struct fs_ctx {
    struct fs_conf *conf;
    const char *root;
    const char *rel;
    size_t rel_len;
    int rootfd;
    int errnum;                 /* errno of the last failure, 0 when not a system error */
    char shown[200];
    char err[1024];
};

static int fs_fail(struct fs_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int fs_fail(struct fs_ctx *c, const char *fmt, ...)
{
    char why[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    snprintf(c->err, sizeof c->err, "%s: %s", c->shown, why);
    c->errnum = 0;
    return -1;
}

static int fs_fail_errno(struct fs_ctx *c, int e)
{
    char r[128];
    fs_fail(c, "%s", fs_reason(e, r, sizeof r));
    c->errnum = e;
    return -1;
}

static int fs_is_hex_escape(const char *p, const char *code)
{
    return p[0] == '%' && tolower((unsigned char)p[1]) == code[0] &&
           tolower((unsigned char)p[2]) == code[1];
}

/* The checks on the text of a relative path, before any system call. */
static int fs_check_rel(struct fs_ctx *c)
{
    const char *rel = c->rel;
    size_t len = c->rel_len;
    if (strlen(rel) != len)
        return fs_fail(c, "contains a NUL byte");
    if (len > FS_PATH_MAX)
        return fs_fail(c, "is %zu bytes long (the limit is %d)", len, FS_PATH_MAX);
    if (rel[0] == '/')
        return fs_fail(c, "escapes %s (an absolute path)", c->root);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)rel[i];
        if (ch < 0x20 || ch == 0x7f)
            return fs_fail(c, "contains a control character");
        if (ch == '\\')
            return fs_fail(c, "contains a backslash");
        if (ch == '%' &&
            (fs_is_hex_escape(rel + i, "2e") || fs_is_hex_escape(rel + i, "2f") ||
             fs_is_hex_escape(rel + i, "5c") || fs_is_hex_escape(rel + i, "00")))
            return fs_fail(c, "contains a percent-encoded \".\", \"/\", \"\\\" or NUL "
                              "(decode the path once, before passing it)");
    }
    int depth = 0, dotdot = 0;
    const char *p = rel;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n > FS_NAME_MAX)
            return fs_fail(c, "has a component of %zu bytes (the limit is %d)", n,
                           FS_NAME_MAX);
        if (n == 2 && p[0] == '.' && p[1] == '.') {
            dotdot = 1;
            if (--depth < 0)
                return fs_fail(c, "escapes %s", c->root);
        } else if (n > 0 && !(n == 1 && p[0] == '.')) {
            depth++;
        }
        p += n;
        while (*p == '/')
            p++;
    }
    if (dotdot)
        return fs_fail(c, "\"..\" is not allowed in a path under %s", c->root);
    return 0;
}

static int fs_openat2(int dirfd, const char *path, int flags, mode_t mode)
{
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (uint64_t)(flags | O_CLOEXEC);
    how.mode = (flags & O_CREAT) ? mode : 0;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    for (int i = 0; i < 4; i++) {
        long fd = syscall(SYS_openat2, dirfd, *path ? path : ".", &how, sizeof how);
        /* EAGAIN: a concurrent rename raced the lookup; the kernel asks us
         * to try again. */
        if (fd >= 0 || errno != EAGAIN)
            return (int)fd;
    }
    return -1;
}

/* Without openat2: one component at a time, never following a symlink.
 * Returns a descriptor, or -1 with the message filled. */
static int fs_walk(struct fs_ctx *c, const char *path, int flags, mode_t mode)
{
    int fd = fcntl(c->rootfd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        return fs_fail_errno(c, errno);
    const char *p = path;
    char comp[FS_NAME_MAX + 1];
    int walked = 0;
    for (;;) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        memcpy(comp, p, n);
        comp[n] = 0;
        const char *rest = p + n;
        while (*rest == '/')
            rest++;
        int last = *rest == 0;
        if (n == 1 && comp[0] == '.' && !last) {
            p = rest;
            continue;
        }
        int nfd = last ? openat(fd, comp, flags | O_NOFOLLOW | O_CLOEXEC, mode)
                       : openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (nfd < 0) {
            int err = errno;
            struct stat st;
            if ((err == ELOOP || err == ENOTDIR) &&
                fstatat(fd, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
                close(fd);
                char link[200];
                fs_show(path, (size_t)(p - path) + n, link, sizeof link);
                return fs_fail(c, "%s is a symlink, refused under %s (this kernel has no "
                                  "openat2, so symlinks under a root are not followed)",
                               link, c->root);
            }
            close(fd);
            return fs_fail_errno(c, err);
        }
        close(fd);
        fd = nfd;
        walked = 1;
        p = rest;
    }
    if (!walked) {
        int nfd = openat(fd, ".", flags | O_CLOEXEC, mode);
        int err = errno;
        close(fd);
        if (nfd < 0)
            return fs_fail_errno(c, err);
        fd = nfd;
    }
    return fd;
}

/* Opens path (the relative path or a prefix of it) beneath the root.
 * Returns a descriptor, or -1 with the message filled. */
static int fs_open_beneath(struct fs_ctx *c, const char *path, int flags, mode_t mode)
{
    if (!c->conf->use_openat2)
        return fs_walk(c, path, flags, mode);
    int fd = fs_openat2(c->rootfd, path, flags, mode);
    if (fd >= 0)
        return fd;
    if (errno == EXDEV)
        return fs_fail(c, "escapes %s through a symlink", c->root);
    if (errno == ELOOP)
        return fs_fail(c, "too many symlinks, or a symlink that may not be followed "
                          "(under %s)", c->root);
    return fs_fail_errno(c, errno);
}

/* Reads the root and relative path arguments at 1 and 2, checks the path,
 * and opens the root (into the guard). Returns 0 or -1. */
static int fs_begin(lua_State *L, struct fs_ctx *c, struct fs_guard *g)
{
    memset(c, 0, sizeof *c);
    c->conf = fs_conf(L);
    size_t root_len;
    c->root = luaL_checklstring(L, 1, &root_len);
    c->rel = luaL_checklstring(L, 2, &c->rel_len);
    c->rootfd = -1;
    fs_show(c->rel, c->rel_len, c->shown, sizeof c->shown);
    if (!*c->root || strlen(c->root) != root_len)
        return luaL_error(L, "mcp.fs: root must be a non-empty path without NUL bytes");
    if (fs_check_rel(c) != 0)
        return -1;
    c->rootfd = open(c->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (c->rootfd < 0) {
        char r[128];
        snprintf(c->err, sizeof c->err, "root \"%s\": %s", c->root,
                 fs_reason(errno, r, sizeof r));
        return -1;
    }
    g->fd[0] = c->rootfd;
    return 0;
}

/* Splits the relative path into its directory and last name, and opens
 * the directory beneath the root (creating it when mkdir). Returns a
 * descriptor (readable, so it can be fsync'ed) or -1. */
static int fs_open_parent(struct fs_ctx *c, int mkdir, mode_t dir_mode, char *dir,
                          const char **name)
{
    size_t len = c->rel_len;
    memcpy(dir, c->rel, len + 1);
    while (len > 0 && dir[len - 1] == '/')
        dir[--len] = 0;
    char *slash = strrchr(dir, '/');
    *name = slash ? slash + 1 : dir;
    if (!**name || strcmp(*name, ".") == 0)
        return fs_fail(c, "names no file under %s", c->root);
    if (slash) {
        *slash = 0;
    } else {
        dir = (char *)"";
    }
    if (mkdir && *dir) {
        /* Each missing directory is made inside its parent, which was itself
         * resolved beneath the root. */
        char prefix[FS_PATH_MAX + 1];
        size_t dlen = strlen(dir);
        for (size_t i = 1; i <= dlen; i++) {
            if (i < dlen && dir[i] != '/')
                continue;
            memcpy(prefix, dir, i);
            prefix[i] = 0;
            int fd = fs_open_beneath(c, prefix, O_PATH | O_DIRECTORY, 0);
            if (fd >= 0) {
                close(fd);
                continue;
            }
            if (c->errnum != ENOENT)
                return -1;
            char *last = strrchr(prefix, '/');
            int pfd;
            const char *leaf = prefix;
            if (last) {
                *last = 0;
                leaf = last + 1;
                pfd = fs_open_beneath(c, prefix, O_PATH | O_DIRECTORY, 0);
            } else {
                pfd = fcntl(c->rootfd, F_DUPFD_CLOEXEC, 0);
            }
            if (pfd < 0)
                return -1;
            int rc = mkdirat(pfd, leaf, dir_mode);
            int err = errno;
            close(pfd);
            if (rc != 0 && err != EEXIST)
                return fs_fail_errno(c, err);
        }
    }
    return fs_open_beneath(c, dir, O_RDONLY | O_DIRECTORY, 0);
}

/* Reads the regular file open on fd, at most max bytes, and pushes it.
 * Returns 0, or -1 with why filled. */
static int fs_read_fd(lua_State *L, int fd, lua_Integer max, char *why, size_t cap)
{
    struct stat st;
    char r[128];
    if (fstat(fd, &st) != 0) {
        snprintf(why, cap, "%s", fs_reason(errno, r, sizeof r));
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        snprintf(why, cap, "is a directory");
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, cap, "is not a regular file");
        return -1;
    }
    if (st.st_size > max) {
        snprintf(why, cap, "is %lld bytes, over the limit of %lld", (long long)st.st_size,
                 (long long)max);
        return -1;
    }
    size_t size = (size_t)st.st_size + 1;   /* one more: see a file that grew */
    char *buf = lua_newuserdata(L, size);
    size_t n = 0;
    for (;;) {
        if (n == size) {
            if ((lua_Integer)n > max) {
                snprintf(why, cap, "grew over the limit of %lld bytes while being read",
                         (long long)max);
                lua_pop(L, 1);
                return -1;
            }
            size_t nsize = size * 2 > (size_t)max + 1 ? (size_t)max + 1 : size * 2;
            char *nb = lua_newuserdata(L, nsize);
            memcpy(nb, buf, n);
            lua_remove(L, -2);
            buf = nb;
            size = nsize;
        }
        ssize_t got = read(fd, buf + n, size - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            snprintf(why, cap, "%s", fs_reason(errno, r, sizeof r));
            lua_pop(L, 1);
            return -1;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    if ((lua_Integer)n > max) {
        snprintf(why, cap, "grew over the limit of %lld bytes while being read",
                 (long long)max);
        lua_pop(L, 1);
        return -1;
    }
    lua_pushlstring(L, buf, n);
    lua_remove(L, -2);
    return 0;
}

/* Writes data as NAME in the directory dirfd, atomically: a temporary file
 * beside it, fsync, rename over NAME, fsync of the directory. Returns 0, or
 * -1 with why filled; no temporary file is left either way. */
static int fs_write_at(int dirfd, const char *name, const char *data, size_t len, mode_t mode,
                       char *why, size_t cap)
{
    char tmp[FS_NAME_MAX + 1], r[128];
    int fd = -1;
    for (unsigned attempt = 0; attempt < 16 && fd < 0; attempt++) {
        unsigned tag = (unsigned)(uv_hrtime() ^ ((uint64_t)getpid() << 16)) + attempt * 7919u;
        snprintf(tmp, sizeof tmp, ".%.200s.%08x.tmp", name, tag);
        fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        snprintf(why, cap, "cannot create a temporary file: %s",
                 fs_reason(errno, r, sizeof r));
        return -1;
    }
    int err = 0;
    if (fchmod(fd, mode) != 0)
        err = errno;
    for (size_t off = 0; !err && off < len;) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            err = errno;
        else
            off += (size_t)w;
    }
    if (!err && fsync(fd) != 0)
        err = errno;
    if (close(fd) != 0 && !err)
        err = errno;
    if (!err && renameat(dirfd, tmp, dirfd, name) != 0)
        err = errno;
    if (err) {
        unlinkat(dirfd, tmp, 0);
        snprintf(why, cap, "%s", fs_reason(err, r, sizeof r));
        return -1;
    }
    fsync(dirfd);       /* the rename itself durable; best effort */
    return 0;
}

static const char *fs_type_name(mode_t m)
{
    if (S_ISREG(m))
        return "file";
    if (S_ISDIR(m))
        return "dir";
    if (S_ISLNK(m))
        return "link";
    return "other";
}

static void fs_push_stat(lua_State *L, const struct stat *st)
{
    lua_createtable(L, 0, 4);
    lua_pushstring(L, fs_type_name(st->st_mode));
    lua_setfield(L, -2, "type");
    lua_pushnumber(L, (lua_Number)st->st_size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)(st->st_mode & 07777));
    lua_setfield(L, -2, "mode");
    lua_pushnumber(L, (lua_Number)st->st_mtim.tv_sec + (lua_Number)st->st_mtim.tv_nsec / 1e9);
    lua_setfield(L, -2, "mtime");
}

/* A file mode: a number (0644 written as tonumber("644", 8) or 420) or an
 * octal string "0644". */
static mode_t fs_opt_mode(lua_State *L, int idx, const char *key, mode_t def, const char *fn)
{
    mode_t m = def;
    if (lua_isnoneornil(L, idx))
        return m;
    lua_getfield(L, idx, key);
    if (lua_type(L, -1) == LUA_TNUMBER) {
        lua_Number n = lua_tonumber(L, -1);
        if (n < 0 || n > 07777 || n != (lua_Number)(int)n)
            luaL_error(L, "%s: option %s: expected a mode from 0 to 07777, got %f", fn, key, n);
        m = (mode_t)n;
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        const char *s = lua_tostring(L, -1);
        char *end;
        long v = strtol(s, &end, 8);
        if (!*s || *end || v < 0 || v > 07777)
            luaL_error(L, "%s: option %s: expected an octal mode like \"0644\", got \"%s\"",
                       fn, key, s);
        m = (mode_t)v;
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "%s: option %s: expected a mode, got %s", fn, key, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return m;
}

static const char *const read_opts[] = { "max", NULL };
static const char *const write_opts[] = { "mode", "mkdir", NULL };
static const char *const remove_opts[] = { "missing_ok", NULL };

/* mcp.fs.read(root, relpath [, {max = bytes}]) -> data, or nil, err. */
static int l_fs_read(lua_State *L)
{
    bind_check_options(L, 3, "mcp.fs.read", read_opts);
    lua_Integer max = bind_opt_size(L, 3, "max", FS_DEFAULT_MAX, "mcp.fs.read");
    struct fs_guard *g = fs_guard_new(L);
    struct fs_ctx c;
    if (fs_begin(L, &c, g) != 0)
        return fs_return_fail(L, g, "fs.read", c.err);
    int fd = fs_open_beneath(&c, c.rel, O_RDONLY | O_NONBLOCK, 0);
    if (fd < 0)
        return fs_return_fail(L, g, "fs.read", c.err);
    g->fd[1] = fd;
    char why[256];
    if (fs_read_fd(L, fd, max, why, sizeof why) != 0) {
        fs_guard_release(g);
        return bind_fail(L, "fs.read", "%s: %s", c.shown, why);
    }
    fs_guard_release(g);
    return 1;
}

/* mcp.fs.write(root, relpath, data [, {mode = 0644, mkdir = false}]) -> true, or nil, err. */
static int l_fs_write(lua_State *L)
{
    const char *fn = "mcp.fs.write";
    size_t len;
    const char *data = luaL_checklstring(L, 3, &len);
    bind_check_options(L, 4, fn, write_opts);
    mode_t mode = fs_opt_mode(L, 4, "mode", 0644, fn);
    int mkdir = bind_opt_bool(L, 4, "mkdir", 0, fn);
    struct fs_guard *g = fs_guard_new(L);
    struct fs_ctx c;
    if (fs_begin(L, &c, g) != 0)
        return fs_return_fail(L, g, "fs.write", c.err);
    char dir[FS_PATH_MAX + 1];
    const char *name;
    int dfd = fs_open_parent(&c, mkdir, 0755, dir, &name);
    if (dfd < 0) {
        fs_guard_release(g);
        return fs_return_fail(L, g, "fs.write", c.err);
    }
    g->fd[1] = dfd;
    char why[256];
    int rc = fs_write_at(dfd, name, data, len, mode, why, sizeof why);
    fs_guard_release(g);
    if (rc != 0)
        return bind_fail(L, "fs.write", "%s: %s", c.shown, why);
    lua_pushboolean(L, 1);
    return 1;
}

/* mcp.fs.stat(root, relpath) -> {type, size, mode, mtime}, or nil, err.
 * A symlink is reported as itself (type "link"), not followed. */
static int l_fs_stat(lua_State *L)
{
    struct fs_guard *g = fs_guard_new(L);
    struct fs_ctx c;
    if (fs_begin(L, &c, g) != 0)
        return fs_return_fail(L, g, "fs.stat", c.err);
    int fd = fs_open_beneath(&c, c.rel, O_PATH | O_NOFOLLOW, 0);
    if (fd < 0)
        return fs_return_fail(L, g, "fs.stat", c.err);
    g->fd[1] = fd;
    struct stat st;
    int rc = fstat(fd, &st), err = errno;
    fs_guard_release(g);
    if (rc != 0) {
        fs_fail_errno(&c, err);
        return fs_return_fail(L, g, "fs.stat", c.err);
    }
    fs_push_stat(L, &st);
    return 1;
}

static int fs_cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads the directory stream (owned by g) into g's sorted list of names. */
static int fs_collect_names(struct fs_guard *g)
{
    struct dirent *de;
    errno = 0;
    while ((de = readdir(g->dir))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (g->n == g->cap) {
            size_t cap = g->cap ? g->cap * 2 : 32;
            char **nv = realloc(g->names, cap * sizeof *nv);
            if (!nv)
                return ENOMEM;
            g->names = nv;
            g->cap = cap;
        }
        if (!(g->names[g->n] = strdup(de->d_name)))
            return ENOMEM;
        g->n++;
        errno = 0;
    }
    if (errno)
        return errno;
    if (g->n > 1)       /* an empty directory has no list: qsort(NULL) is undefined */
        qsort(g->names, g->n, sizeof *g->names, fs_cmp_names);
    return 0;
}

/* mcp.fs.list(root, relpath) -> { {name, type, size, mode, mtime}, ... } sorted by
 * name, or nil, err. Entries are not followed: a symlink is type "link". */
static int l_fs_list(lua_State *L)
{
    struct fs_guard *g = fs_guard_new(L);
    struct fs_ctx c;
    if (fs_begin(L, &c, g) != 0)
        return fs_return_fail(L, g, "fs.list", c.err);
    int fd = fs_open_beneath(&c, c.rel, O_RDONLY | O_DIRECTORY | O_NONBLOCK, 0);
    if (fd < 0)
        return fs_return_fail(L, g, "fs.list", c.err);
    if (!(g->dir = fdopendir(fd))) {
        int err = errno;
        close(fd);
        fs_fail_errno(&c, err);
        return fs_return_fail(L, g, "fs.list", c.err);
    }
    int err = fs_collect_names(g);
    if (err) {
        fs_fail_errno(&c, err);
        return fs_return_fail(L, g, "fs.list", c.err);
    }
    lua_createtable(L, (int)g->n, 0);
    int k = 0;
    for (size_t i = 0; i < g->n; i++) {
        struct stat st;
        if (fstatat(dirfd(g->dir), g->names[i], &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;       /* removed meanwhile */
        fs_push_stat(L, &st);
        lua_pushstring(L, g->names[i]);
        lua_setfield(L, -2, "name");
        lua_rawseti(L, -2, ++k);
    }
    fs_guard_release(g);
    return 1;
}

/* mcp.fs.remove(root, relpath [, {missing_ok = false}]) -> true, or nil, err.
 * Removes a file, a symlink (not its target) or an empty directory. */
static int l_fs_remove(lua_State *L)
{
    bind_check_options(L, 3, "mcp.fs.remove", remove_opts);
    int missing_ok = bind_opt_bool(L, 3, "missing_ok", 0, "mcp.fs.remove");
    struct fs_guard *g = fs_guard_new(L);
    struct fs_ctx c;
    if (fs_begin(L, &c, g) != 0)
        return fs_return_fail(L, g, "fs.remove", c.err);
    char dir[FS_PATH_MAX + 1];
    const char *name;
    int dfd = fs_open_parent(&c, 0, 0, dir, &name);
    if (dfd < 0) {
        fs_guard_release(g);
        if (missing_ok && c.errnum == ENOENT) {
            lua_pushboolean(L, 1);
            return 1;
        }
        return fs_return_fail(L, g, "fs.remove", c.err);
    }
    g->fd[1] = dfd;
    int rc = unlinkat(dfd, name, 0);
    if (rc != 0 && errno == EISDIR)
        rc = unlinkat(dfd, name, AT_REMOVEDIR);
    int err = errno;
    fs_guard_release(g);
    if (rc != 0 && !(missing_ok && err == ENOENT)) {
        fs_fail_errno(&c, err);
        return fs_return_fail(L, g, "fs.remove", c.err);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* The unconfined calls take a path the agent chose; they still refuse NUL. */
static const char *fs_check_path(lua_State *L, int idx, char *shown, size_t cap)
{
    size_t len;
    const char *path = luaL_checklstring(L, idx, &len);
    fs_show(path, len, shown, cap);
    if (!*path || strlen(path) != len)
        return NULL;
    return path;
}

/* mcp.fs.read_file(path [, {max = bytes}]) -> data, or nil, err. */
static int l_fs_read_file(lua_State *L)
{
    char shown[200], why[256], r[128];
    const char *path = fs_check_path(L, 1, shown, sizeof shown);
    bind_check_options(L, 2, "mcp.fs.read_file", read_opts);
    lua_Integer max = bind_opt_size(L, 2, "max", FS_DEFAULT_MAX, "mcp.fs.read_file");
    if (!path)
        return bind_fail(L, "fs.read_file", "%s: empty or contains a NUL byte", shown);
    struct fs_guard *g = fs_guard_new(L);
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return bind_fail(L, "fs.read_file", "%s: %s", shown, fs_reason(errno, r, sizeof r));
    g->fd[0] = fd;
    if (fs_read_fd(L, fd, max, why, sizeof why) != 0) {
        fs_guard_release(g);
        return bind_fail(L, "fs.read_file", "%s: %s", shown, why);
    }
    fs_guard_release(g);
    return 1;
}

/* mkdir -p: makes path and its missing parents. Returns 0 or an errno. */
static int fs_mkdir_p(const char *path, mode_t mode)
{
    char buf[FS_PATH_MAX + 1];
    size_t len = strlen(path);
    if (len > FS_PATH_MAX)
        return ENAMETOOLONG;
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (i < len && buf[i] != '/')
            continue;
        char saved = buf[i];
        buf[i] = 0;
        if (mkdir(buf, mode) != 0 && errno != EEXIST)
            return errno;
        buf[i] = saved;
    }
    struct stat st;
    if (stat(path, &st) != 0)
        return errno;
    return S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
}

/* mcp.fs.write_file(path, data [, {mode = 0644, mkdir = false}]) -> true, or nil, err. */
static int l_fs_write_file(lua_State *L)
{
    const char *fn = "mcp.fs.write_file";
    char shown[200], why[256], r[128];
    const char *path = fs_check_path(L, 1, shown, sizeof shown);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    bind_check_options(L, 3, fn, write_opts);
    mode_t mode = fs_opt_mode(L, 3, "mode", 0644, fn);
    int mkdir = bind_opt_bool(L, 3, "mkdir", 0, fn);
    if (!path)
        return bind_fail(L, "fs.write_file", "%s: empty or contains a NUL byte", shown);
    if (strlen(path) > FS_PATH_MAX)
        return bind_fail(L, "fs.write_file", "%s: path too long", shown);
    char dir[FS_PATH_MAX + 1];
    snprintf(dir, sizeof dir, "%s", path);
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dir[--dl] = 0;
    char *slash = strrchr(dir, '/');
    const char *name;
    if (!slash) {
        name = path;
        snprintf(dir, sizeof dir, ".");
    } else {
        name = path + (slash - dir) + 1;
        if (slash == dir)
            slash[1] = 0;   /* "/name": the directory is "/" */
        else
            *slash = 0;
    }
    if (!*name || strchr(name, '/'))
        return bind_fail(L, "fs.write_file", "%s: names no file", shown);
    if (mkdir) {
        int err = fs_mkdir_p(dir, 0755);
        if (err)
            return bind_fail(L, "fs.write_file", "%s: cannot make its directory: %s", shown,
                             fs_reason(err, r, sizeof r));
    }
    struct fs_guard *g = fs_guard_new(L);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return bind_fail(L, "fs.write_file", "%s: %s", shown, fs_reason(errno, r, sizeof r));
    g->fd[0] = dfd;
    int rc = fs_write_at(dfd, name, data, len, mode, why, sizeof why);
    fs_guard_release(g);
    if (rc != 0)
        return bind_fail(L, "fs.write_file", "%s: %s", shown, why);
    lua_pushboolean(L, 1);
    return 1;
}

/* mcp.fs.listdir(dir) -> { "name", ... } sorted, without "." and "..", or nil, err. */
static int l_fs_listdir(lua_State *L)
{
    char shown[200], r[128];
    const char *path = fs_check_path(L, 1, shown, sizeof shown);
    if (!path)
        return bind_fail(L, "fs.listdir", "%s: empty or contains a NUL byte", shown);
    struct fs_guard *g = fs_guard_new(L);
    if (!(g->dir = opendir(path)))
        return bind_fail(L, "fs.listdir", "%s: %s", shown, fs_reason(errno, r, sizeof r));
    int err = fs_collect_names(g);
    if (err) {
        fs_guard_release(g);
        return bind_fail(L, "fs.listdir", "%s: %s", shown, fs_reason(err, r, sizeof r));
    }
    lua_createtable(L, (int)g->n, 0);
    for (size_t i = 0; i < g->n; i++) {
        lua_pushstring(L, g->names[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
    fs_guard_release(g);
    return 1;
}

/* mcp.fs.mtime(path) -> seconds since the epoch (fractional), or nil, err. */
static int l_fs_mtime(lua_State *L)
{
    char shown[200], r[128];
    const char *path = fs_check_path(L, 1, shown, sizeof shown);
    if (!path)
        return bind_fail(L, "fs.mtime", "%s: empty or contains a NUL byte", shown);
    struct stat st;
    if (stat(path, &st) != 0)
        return bind_fail(L, "fs.mtime", "%s: %s", shown, fs_reason(errno, r, sizeof r));
    lua_pushnumber(L, (lua_Number)st.st_mtim.tv_sec + (lua_Number)st.st_mtim.tv_nsec / 1e9);
    return 1;
}

/* mcp.fs.mkdir(path [, mode = 0755]) -> true (made, or already a directory),
 * or nil, err. Makes missing parents too. */
static int l_fs_mkdir(lua_State *L)
{
    char shown[200], r[128];
    const char *path = fs_check_path(L, 1, shown, sizeof shown);
    mode_t mode = 0755;
    if (lua_type(L, 2) == LUA_TSTRING || lua_type(L, 2) == LUA_TNUMBER) {
        lua_createtable(L, 0, 1);
        lua_pushvalue(L, 2);
        lua_setfield(L, -2, "mode");
        mode = fs_opt_mode(L, lua_gettop(L), "mode", 0755, "mcp.fs.mkdir");
        lua_pop(L, 1);
    } else if (!lua_isnoneornil(L, 2)) {
        return luaL_error(L, "mcp.fs.mkdir: mode: expected a number or an octal string, "
                             "got %s", luaL_typename(L, 2));
    }
    if (!path)
        return bind_fail(L, "fs.mkdir", "%s: empty or contains a NUL byte", shown);
    int err = fs_mkdir_p(path, mode);
    if (err)
        return bind_fail(L, "fs.mkdir", "%s: %s", shown, fs_reason(err, r, sizeof r));
    lua_pushboolean(L, 1);
    return 1;
}

/* mcp.fs.resolver([name]) -> "openat2" or "openat": how confined paths are
 * resolved. Passing "openat" forces the fallback walk (for tests, or for a
 * kernel whose openat2 is distrusted); "openat2" restores it when present. */
static int l_fs_resolver(lua_State *L)
{
    struct fs_conf *conf = fs_conf(L);
    if (!lua_isnoneornil(L, 1)) {
        const char *want = luaL_checkstring(L, 1);
        if (strcmp(want, "openat") == 0)
            conf->use_openat2 = 0;
        else if (strcmp(want, "openat2") == 0 && conf->have_openat2)
            conf->use_openat2 = 1;
        else if (strcmp(want, "openat2") == 0)
            return bind_fail(L, "fs.resolver", "this kernel has no openat2");
        else
            return luaL_error(L, "mcp.fs.resolver: expected \"openat2\" or \"openat\", "
                                 "got \"%s\"", want);
    }
    lua_pushstring(L, conf->use_openat2 ? "openat2" : "openat");
    return 1;
}

static const luaL_Reg fs_funcs[] = {
    { "read", l_fs_read },
    { "write", l_fs_write },
    { "stat", l_fs_stat },
    { "list", l_fs_list },
    { "remove", l_fs_remove },
    { "mkdir", l_fs_mkdir },
    { "read_file", l_fs_read_file },
    { "write_file", l_fs_write_file },
    { "listdir", l_fs_listdir },
    { "mtime", l_fs_mtime },
    { "resolver", l_fs_resolver },
    { NULL, NULL },
};

/* Whether openat2 works here: absent before Linux 5.6, and a seccomp
 * filter (some container runtimes) may answer ENOSYS or EPERM. */
static int fs_probe_openat2(void)
{
    int fd = fs_openat2(AT_FDCWD, ".", O_PATH | O_DIRECTORY, 0);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

int l_fs_open(lua_State *L)
{
    if (luaL_newmetatable(L, FS_GUARD_MT)) {
        lua_pushcfunction(L, fs_guard_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    struct fs_conf *conf = lua_newuserdata(L, sizeof *conf);
    conf->have_openat2 = conf->use_openat2 = fs_probe_openat2();
    for (const luaL_Reg *f = fs_funcs; f->name; f++) {
        lua_pushvalue(L, -1);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -3, f->name);
    }
    lua_pop(L, 1);
    return 1;
}
