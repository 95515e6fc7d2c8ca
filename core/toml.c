/* toml.c: a strict TOML 1.0.0 parser (interface in toml.h).
 *
 * One pass over the bytes by a hand-written recursive-descent parser; no
 * regular expressions, no tokeniser pass, no copy of the input. UTF-8 is
 * validated where non-ASCII bytes may appear (strings and comments), since
 * everywhere else any non-ASCII byte is a syntax error anyway.
 *
 * Every value is a struct node whose first member is the public toml_value,
 * so the tree handed out is made of toml_values while the parser keeps the
 * bookkeeping it needs for the redefinition rules (and a hash index for large
 * tables, which toml_get keeps using after the parse).
 *
 * All of a document's memory (nodes, keys, strings, item arrays, indexes)
 * comes from one arena owned by the root, so a parse costs a few mallocs
 * instead of one per value, and toml_free is a walk over a chunk list.
 * Growing an array copies it within the arena; the old copy is left behind,
 * which costs at most as much again as the final arrays.
 *
 * The redefinition rules follow TOML 1.0.0 as toml-test reads it:
 * - a [header] defines its table once; tables it only passes through are
 *   implicit and may be defined later by their own header;
 * - tables made by dotted keys belong to the section that made them: later
 *   key/value pairs of that section may add to them, a later header or a
 *   dotted key in a later section may not (a header may still add a
 *   sub-table below them);
 * - a dotted key may not add to a table defined by a header;
 * - inline tables and arrays written as values are complete once written:
 *   nothing can be added to them, and [[x]] only extends arrays that [[x]]
 *   made. */
#include "toml.h"

#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define TOML_MAX_DEPTH 1000     /* nesting cap, so recursion stays far from the stack's end */
#define INDEX_MIN 8             /* tables with this many keys get a hash index */
#define CHUNK_MIN 8192          /* arena chunks double from this size ... */
#define CHUNK_MAX (1 << 20)     /* ... up to this one */
#define ARENA_ALIGN 8           /* enough for every type the tree stores */
#define NOT_FOUND ((size_t)-1)

#ifdef __GNUC__
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

enum {
    NODE_HEADER = 1,            /* table defined by [x], or an element made by [[x]] */
    NODE_INLINE = 2,            /* inline table: closed once written */
    NODE_AOT = 4,               /* array made by [[x]]; other arrays are static */
    NODE_ROOT = 8,              /* the root: a struct doc, owner of the arena */
};

struct chunk {
    struct chunk *next;
    size_t size, used;
    max_align_t data[];
};

struct slot {
    uint32_t hash;
    size_t idx;                 /* index into the table's items, plus one; 0 is empty */
};

struct table_index {
    size_t mask;                /* slots - 1; slots is a power of two */
    struct slot slots[];
};

struct node {
    struct toml_value v;        /* first, so a toml_value * of the tree is a node * */
    struct table_index *index;  /* tables with INDEX_MIN keys or more; in the arena */
    unsigned flags;
    int depth;                  /* root table is 0 */
    size_t dotted_sec;          /* section whose dotted keys made or reached it; 0 none */
};

/* The root table and the memory of the whole tree. */
struct doc {
    struct node root;
    struct chunk *chunks;       /* owned; the first one is the one being filled */
};

struct buf {
    char *p;
    size_t len, cap;
};

struct pos {
    int line, col;
};

struct keypart {
    size_t off, len;            /* decoded bytes in keypath.text */
    const char *raw, *raw_end;  /* as written, for messages */
    struct pos at;
};

struct keypath {
    struct buf text;
    struct keypart *parts;
    size_t n, cap;
};

struct parser {
    const char *p, *end;
    const char *name;
    char *err;
    size_t err_len;
    int failed;
    int line;
    const char *line_start;
    size_t line_cont;           /* UTF-8 continuation bytes passed on this line (columns) */
    size_t sec;                 /* current section: 1 before the first header */
    char decimal_point;         /* the locale's, which strtod expects */
    struct doc *doc;
    struct node *root, *cur;    /* cur: the table key/value pairs go to */
    struct buf sbuf;            /* scratch for string and float text */
    struct keypath key;         /* the key being parsed */
};

static int parse_value(struct parser *ps, int depth, struct node **out);

/* Small helpers. */

static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_ws(int c) { return c == ' ' || c == '\t'; }

static int is_bare(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c)
        || c == '_' || c == '-';
}

static int is_hex(int c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int hex_val(int c)
{
    if (is_digit(c))
        return c - '0';
    return (c | 0x20) - 'a' + 10;
}

static int buf_reserve(struct buf *b, size_t extra)
{
    if (b->cap - b->len > extra)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len <= extra) {
        if (cap > (size_t)-1 / 2)
            return -1;
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_put(struct buf *b, const char *s, size_t n)
{
    if (buf_reserve(b, n))
        return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

/* n bytes from the document's arena, or NULL. */
static void *arena_alloc(struct doc *d, size_t n)
{
    n = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    struct chunk *c = d->chunks;
    if (c && c->size - c->used >= n) {
        void *p = (char *)c->data + c->used;
        c->used += n;
        return p;
    }
    size_t size = c ? c->size * 2 : CHUNK_MIN;
    if (size > CHUNK_MAX)
        size = CHUNK_MAX;
    if (n > size / 4) {
        /* a big block gets a chunk of its own, behind the one being filled */
        struct chunk *big = malloc(sizeof *big + n);
        if (!big)
            return NULL;
        big->size = big->used = n;
        if (c) {
            big->next = c->next;
            c->next = big;
        } else {
            big->next = NULL;
            d->chunks = big;
        }
        return big->data;
    }
    struct chunk *fresh = malloc(sizeof *fresh + size);
    if (!fresh)
        return NULL;
    fresh->size = size;
    fresh->used = n;
    fresh->next = c;
    d->chunks = fresh;
    return fresh->data;
}

/* A NUL-terminated copy of n bytes in the arena, or NULL. */
static char *dup_bytes(struct parser *ps, const char *s, size_t n)
{
    char *d = arena_alloc(ps->doc, n + 1);
    if (d) {
        if (n)
            memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* Length of the well-formed UTF-8 sequence at s (a byte >= 0x80), or 0 when
 * it is ill-formed: overlong, a surrogate, beyond U+10FFFF, cut short. */
static int utf8_len(const unsigned char *s, const unsigned char *end)
{
    unsigned c = s[0], lo = 0x80, hi = 0xBF;
    int n;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (end - s < n || s[1] < lo || s[1] > hi)
        return 0;
    for (int i = 2; i < n; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return n;
}

/* Why the bytes at s are not UTF-8, for the message. */
static const char *utf8_problem(const unsigned char *s, const unsigned char *end)
{
    unsigned c = s[0];
    int n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
    if (c < 0xC0)
        return "a continuation byte without a lead byte";
    if (c == 0xC0 || c == 0xC1 || (c == 0xE0 && end - s > 1 && s[1] < 0xA0)
        || (c == 0xF0 && end - s > 1 && s[1] < 0x90))
        return "an overlong encoding";
    if (c > 0xF4)
        return "a byte that never occurs in UTF-8";
    for (int i = 1; i < n; i++)
        if (end - s <= i || (s[i] & 0xC0) != 0x80)
            return "a sequence cut short";
    if (c == 0xED)
        return "an encoded surrogate (U+D800 to U+DFFF)";
    return "a code point beyond U+10FFFF";
}

static uint32_t utf8_decode(const unsigned char *s, int n)
{
    if (n == 2)
        return (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F);
    if (n == 3)
        return (uint32_t)(s[0] & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
    return (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12
        | (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
}

static int utf8_put(struct buf *b, uint32_t cp)
{
    char s[4];
    size_t n;
    if (cp < 0x80) {
        s[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        s[0] = (char)(0xC0 | cp >> 6);
        s[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        s[0] = (char)(0xE0 | cp >> 12);
        s[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        s[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        s[0] = (char)(0xF0 | cp >> 18);
        s[1] = (char)(0x80 | (cp >> 12 & 0x3F));
        s[2] = (char)(0x80 | (cp >> 6 & 0x3F));
        s[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return buf_put(b, s, n);
}

/* Positions and errors. */

/* Position of the cursor; columns count characters, not bytes (and stop
 * counting at INT_MAX rather than overflow on absurd lines). */
static struct pos here(const struct parser *ps)
{
    size_t col = (size_t)(ps->p - ps->line_start) - ps->line_cont + 1;
    struct pos at = { ps->line, col > INT_MAX ? INT_MAX : (int)col };
    return at;
}

/* Position of q on the current line, counted afresh (errors only). */
static struct pos pos_of(const struct parser *ps, const char *q)
{
    struct pos at = { ps->line, 1 };
    for (const char *s = ps->line_start; s < q && at.col < INT_MAX; s++)
        if ((*s & 0xC0) != 0x80)
            at.col++;
    return at;
}

static void new_line(struct parser *ps, const char *after)
{
    if (ps->line < INT_MAX)
        ps->line++;
    ps->line_start = after;
    ps->line_cont = 0;
    ps->p = after;
}

PRINTF_LIKE(3, 4)
static int fail_at(struct parser *ps, struct pos at, const char *fmt, ...)
{
    if (ps->failed)
        return -1;
    ps->failed = 1;
    if (!ps->err || !ps->err_len)
        return -1;
    int n = snprintf(ps->err, ps->err_len, "%s:%d:%d: ", ps->name, at.line, at.col);
    if (n >= 0 && (size_t)n < ps->err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ps->err + n, ps->err_len - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int fail_oom(struct parser *ps)
{
    return fail_at(ps, here(ps), "out of memory");
}

/* Describes the character at q for "unexpected X" messages. */
static const char *describe(const struct parser *ps, const char *q, char *buf, size_t n)
{
    if (q >= ps->end)
        return "end of file";
    unsigned char c = (unsigned char)*q;
    if (c == '\n')
        return "end of line";
    if (c == '\r')
        return "carriage return";
    if (c == '\t')
        return "tab";
    if (c >= 0x20 && c < 0x7F)
        snprintf(buf, n, "'%c'", c);
    else if (c < 0x80)
        snprintf(buf, n, "control character U+%04X", c);
    else {
        const unsigned char *s = (const unsigned char *)q;
        const unsigned char *end = (const unsigned char *)ps->end;
        int len = utf8_len(s, end);
        if (len)
            snprintf(buf, n, "'%.*s' (U+%04X)", len, q, (unsigned)utf8_decode(s, len));
        else
            snprintf(buf, n, "invalid UTF-8 (%s)", utf8_problem(s, end));
    }
    return buf;
}

static int fail_utf8(struct parser *ps, const char *q)
{
    const unsigned char *s = (const unsigned char *)q;
    return fail_at(ps, pos_of(ps, q), "invalid UTF-8 at byte 0x%02X: %s; TOML text must be UTF-8",
                   s[0], utf8_problem(s, (const unsigned char *)ps->end));
}

/* "unexpected X; expected ..." at q; bytes that are not UTF-8 get the
 * encoding message instead, since that is the problem to fix. */
static int fail_unexpected(struct parser *ps, const char *q, const char *expected)
{
    char buf[64];
    if (q < ps->end && (unsigned char)*q >= 0x80
        && !utf8_len((const unsigned char *)q, (const unsigned char *)ps->end))
        return fail_utf8(ps, q);
    return fail_at(ps, pos_of(ps, q), "unexpected %s; expected %s",
                   describe(ps, q, buf, sizeof buf), expected);
}

/* The key parts [0, upto] as written, for messages: sets *s and returns the
 * length, cut to a readable size. */
static int key_raw(const struct parser *ps, size_t upto, const char **s)
{
    *s = ps->key.parts[0].raw;
    size_t len = (size_t)(ps->key.parts[upto].raw_end - *s);
    if (len > 80) {
        len = 80;
        while (len > 0 && ((*s)[len] & 0xC0) == 0x80)
            len--;
    }
    return (int)len;
}

/* The key parts [0, upto] for a message, in buf: quoted unless the key
 * already shows quotes of its own. */
static const char *key_quoted(const struct parser *ps, size_t upto, char *buf, size_t n)
{
    const char *s;
    int len = key_raw(ps, upto, &s);
    if (memchr(s, '"', (size_t)len) || memchr(s, '\'', (size_t)len))
        snprintf(buf, n, "%.*s", len, s);
    else
        snprintf(buf, n, "\"%.*s\"", len, s);
    return buf;
}

/* What a value is, for messages that say why it cannot be changed. */
static const char *node_kind(const struct node *n)
{
    switch (n->v.type) {
    case TOML_TABLE: return n->flags & NODE_INLINE ? "an inline table" : "a table";
    case TOML_ARRAY: return n->flags & NODE_AOT ? "an array of tables" : "an array";
    case TOML_INTEGER: return "an integer";
    case TOML_DATETIME: return "an offset date-time";
    case TOML_DATETIME_LOCAL: return "a local date-time";
    case TOML_STRING: return "a string";
    case TOML_FLOAT: return "a float";
    case TOML_BOOL: return "a boolean";
    case TOML_DATE_LOCAL: return "a local date";
    case TOML_TIME_LOCAL: return "a local time";
    }
    return "a value";
}

/* Nodes and tables. */

static struct node *node_new(struct parser *ps, enum toml_type type, struct pos at, int depth)
{
    struct node *n = arena_alloc(ps->doc, sizeof *n);
    if (!n) {
        fail_oom(ps);
        return NULL;
    }
    memset(n, 0, sizeof *n);
    n->v.type = type;
    n->v.line = at.line;
    n->v.col = at.col;
    n->depth = depth;
    return n;
}

static uint32_t key_hash(const char *k, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 16777619u;
    return h;
}

/* Index of key k (n bytes) in table t, or NOT_FOUND. */
static size_t table_find(const struct node *t, const char *k, size_t n)
{
    const struct toml_kv *items = t->v.u.table.items;
    if (!t->index) {
        for (size_t i = 0; i < t->v.u.table.len; i++)
            if (items[i].key_len == n && memcmp(items[i].key, k, n) == 0)
                return i;
        return NOT_FOUND;
    }
    uint32_t h = key_hash(k, n);
    size_t mask = t->index->mask;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const struct slot *s = &t->index->slots[i];
        if (!s->idx)
            return NOT_FOUND;
        const struct toml_kv *kv = &items[s->idx - 1];
        if (s->hash == h && kv->key_len == n && memcmp(kv->key, k, n) == 0)
            return s->idx - 1;
    }
}

static void index_insert(struct table_index *ix, uint32_t h, size_t idx)
{
    size_t i = h & ix->mask;
    while (ix->slots[i].idx)
        i = (i + 1) & ix->mask;
    ix->slots[i].hash = h;
    ix->slots[i].idx = idx + 1;
}

/* A copy of items (len of size bytes each) with room for cap, or NULL. */
static void *grow_items(struct parser *ps, const void *items, size_t len, size_t cap,
                        size_t size)
{
    if (cap > (size_t)-1 / 2 / size)
        return NULL;
    void *p = arena_alloc(ps->doc, cap * size);
    if (p && len)
        memcpy(p, items, len * size);
    return p;
}

/* Makes room for one more key (items and index); on failure nothing changed. */
static int table_reserve(struct parser *ps, struct node *t)
{
    struct toml_value *v = &t->v;
    size_t len = v->u.table.len;
    if (len == v->u.table.cap) {
        size_t cap = v->u.table.cap ? v->u.table.cap * 2 : 4;
        struct toml_kv *items = grow_items(ps, v->u.table.items, len, cap, sizeof *items);
        if (!items)
            return -1;
        v->u.table.items = items;
        v->u.table.cap = cap;
    }
    if (len + 1 < INDEX_MIN || (t->index && (len + 1) * 2 <= t->index->mask + 1))
        return 0;
    size_t slots = t->index ? (t->index->mask + 1) * 2 : 4 * INDEX_MIN;
    size_t bytes = sizeof(struct table_index) + slots * sizeof(struct slot);
    struct table_index *ix = arena_alloc(ps->doc, bytes);
    if (!ix)
        return -1;
    memset(ix, 0, bytes);
    ix->mask = slots - 1;
    for (size_t i = 0; i < len; i++) {
        const struct toml_kv *kv = &v->u.table.items[i];
        index_insert(ix, key_hash(kv->key, kv->key_len), i);
    }
    t->index = ix;
    return 0;
}

/* Adds key (NUL-terminated, in the arena) -> val to t. */
static int table_add(struct parser *ps, struct node *t, char *key, size_t key_len,
                     struct node *val)
{
    if (table_reserve(ps, t))
        return fail_oom(ps);
    size_t i = t->v.u.table.len++;
    t->v.u.table.items[i].key = key;
    t->v.u.table.items[i].key_len = key_len;
    t->v.u.table.items[i].value = &val->v;
    if (t->index)
        index_insert(t->index, key_hash(key, key_len), i);
    return 0;
}

static int array_push(struct parser *ps, struct node *a, struct node *val)
{
    struct toml_value *v = &a->v;
    if (v->u.array.len == v->u.array.cap) {
        size_t cap = v->u.array.cap ? v->u.array.cap * 2 : 4;
        struct toml_value **items = grow_items(ps, v->u.array.items, v->u.array.len, cap,
                                               sizeof *items);
        if (!items)
            return fail_oom(ps);
        v->u.array.items = items;
        v->u.array.cap = cap;
    }
    v->u.array.items[v->u.array.len++] = &val->v;
    return 0;
}

static struct node *kv_node(const struct node *t, size_t i)
{
    return (struct node *)t->v.u.table.items[i].value;
}

/* Adds an empty table under key part i of the current key path. */
static struct node *add_table(struct parser *ps, struct node *t, size_t i)
{
    const struct keypart *kp = &ps->key.parts[i];
    if (t->depth + 1 > TOML_MAX_DEPTH) {
        fail_at(ps, kp->at, "tables are nested deeper than %d levels", TOML_MAX_DEPTH);
        return NULL;
    }
    struct node *child = node_new(ps, TOML_TABLE, kp->at, t->depth + 1);
    char *k = child ? dup_bytes(ps, ps->key.text.p + kp->off, kp->len) : NULL;
    if (!k) {
        fail_oom(ps);
        return NULL;
    }
    if (table_add(ps, t, k, kp->len, child))
        return NULL;
    return child;
}

/* Whitespace, comments, ends of lines. */

static void skip_ws(struct parser *ps)
{
    const char *p = ps->p;
    while (p < ps->end && is_ws(*p))
        p++;
    ps->p = p;
}

/* From '#' to the end of the line (left unconsumed). */
static int skip_comment(struct parser *ps)
{
    const unsigned char *p = (const unsigned char *)ps->p + 1;
    const unsigned char *end = (const unsigned char *)ps->end;
    for (;;) {
        while (p < end && ((*p >= 0x20 && *p < 0x7F) || *p == '\t'))
            p++;
        if (p >= end || *p == '\n' || (*p == '\r' && p + 1 < end && p[1] == '\n'))
            break;
        if (*p >= 0x80) {
            int n = utf8_len(p, end);
            if (!n)
                return fail_utf8(ps, (const char *)p);
            ps->line_cont += (size_t)n - 1;
            p += n;
            continue;
        }
        char buf[64];
        return fail_at(ps, pos_of(ps, (const char *)p), "%s is not allowed in a comment",
                       describe(ps, (const char *)p, buf, sizeof buf));
    }
    ps->p = (const char *)p;
    return 0;
}

/* Consumes a newline at the cursor if there is one; 1 if it did. */
static int eat_newline(struct parser *ps)
{
    const char *p = ps->p;
    if (p < ps->end && *p == '\n') {
        new_line(ps, p + 1);
        return 1;
    }
    if (p + 1 < ps->end && p[0] == '\r' && p[1] == '\n') {
        new_line(ps, p + 2);
        return 1;
    }
    return 0;
}

/* Whitespace, newlines and comments, as allowed inside arrays. */
static int skip_blank(struct parser *ps)
{
    for (;;) {
        skip_ws(ps);
        if (ps->p >= ps->end)
            return 0;
        if (*ps->p == '#') {
            if (skip_comment(ps))
                return -1;
        } else if (!eat_newline(ps)) {
            return 0;
        }
    }
}

/* What must follow a key/value pair or a header: a comment, then a newline. */
static int end_line(struct parser *ps, const char *after)
{
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '#' && skip_comment(ps))
        return -1;
    if (ps->p >= ps->end || eat_newline(ps))
        return 0;
    char what[160];
    snprintf(what, sizeof what, "a newline after %s", after);
    if (*ps->p == '\r')
        return fail_at(ps, pos_of(ps, ps->p), "carriage return without a line feed");
    return fail_unexpected(ps, ps->p, what);
}

/* Strings. */

static int basic_plain(unsigned char c)
{
    return (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') || c == '\t';
}

static int literal_plain(unsigned char c)
{
    return (c >= 0x20 && c < 0x7F && c != '\'') || c == '\t';
}

/* A backslash escape at the cursor, appended to out. */
static int scan_escape(struct parser *ps, struct buf *out)
{
    const char *p = ps->p;
    char c = p + 1 < ps->end ? p[1] : 0, r;
    switch (c) {
    case 'b': r = '\b'; break;
    case 't': r = '\t'; break;
    case 'n': r = '\n'; break;
    case 'f': r = '\f'; break;
    case 'r': r = '\r'; break;
    case '"': r = '"'; break;
    case '\\': r = '\\'; break;
    case 'u':
    case 'U': {
        int n = c == 'u' ? 4 : 8;
        uint32_t cp = 0;
        for (int i = 0; i < n; i++) {
            if (p + 2 + i >= ps->end || !is_hex(p[2 + i]))
                return fail_at(ps, pos_of(ps, p), "escape \\%c needs exactly %d hex digits",
                               c, n);
            cp = cp << 4 | (uint32_t)hex_val(p[2 + i]);
        }
        if (cp >= 0xD800 && cp <= 0xDFFF)
            return fail_at(ps, pos_of(ps, p), "escape \\%c%.*s is a surrogate code point, "
                           "not a Unicode scalar value", c, n, p + 2);
        if (cp > 0x10FFFF)
            return fail_at(ps, pos_of(ps, p), "escape \\%c%.*s is beyond U+10FFFF, "
                           "the last Unicode code point", c, n, p + 2);
        if (utf8_put(out, cp))
            return fail_oom(ps);
        ps->p = p + 2 + n;
        return 0;
    }
    default: {
        char buf[64];
        return fail_at(ps, pos_of(ps, p), "invalid escape: backslash followed by %s; expected "
                       "one of \\b \\t \\n \\f \\r \\\" \\\\ \\uXXXX \\UXXXXXXXX",
                       describe(ps, p + 1, buf, sizeof buf));
    }
    }
    if (buf_put(out, &r, 1))
        return fail_oom(ps);
    ps->p = p + 2;
    return 0;
}

/* Non-ASCII or control character at p inside a string: validates and
 * appends it, or fails. Returns its length. */
static int string_special(struct parser *ps, const char *p, struct buf *out)
{
    unsigned char c = (unsigned char)*p;
    if (c >= 0x80) {
        int n = utf8_len((const unsigned char *)p, (const unsigned char *)ps->end);
        if (!n)
            return fail_utf8(ps, p);
        if (buf_put(out, p, (size_t)n))
            return fail_oom(ps);
        ps->line_cont += (size_t)n - 1;
        return n;
    }
    if (c == '\r')
        return fail_at(ps, pos_of(ps, p), "carriage return without a line feed in a string");
    return fail_at(ps, pos_of(ps, p), "control character U+%04X is not allowed in a string; "
                   "write it as \\u%04X", c, c);
}

/* A single-line string; the cursor is after the opening quote. */
static int scan_string(struct parser *ps, struct buf *out, struct pos open, int literal)
{
    const char *p = ps->p, *end = ps->end;
    char quote = literal ? '\'' : '"';
    for (;;) {
        const char *run = p;
        if (literal)
            while (p < end && literal_plain((unsigned char)*p))
                p++;
        else
            while (p < end && basic_plain((unsigned char)*p))
                p++;
        if (p > run && buf_put(out, run, (size_t)(p - run)))
            return fail_oom(ps);
        if (p >= end || *p == '\n' || (*p == '\r' && p + 1 < end && p[1] == '\n'))
            return fail_at(ps, open, "unterminated string; expected %c before the end of the "
                           "%s (multi-line strings use %c%c%c)", quote,
                           p >= end ? "file" : "line", quote, quote, quote);
        if (*p == quote) {
            ps->p = p + 1;
            return 0;
        }
        if (*p == '\\') {
            ps->p = p;
            if (scan_escape(ps, out))
                return -1;
            p = ps->p;
            continue;
        }
        int n = string_special(ps, p, out);
        if (n < 0)
            return -1;
        p += n;
    }
}

/* A multi-line string; the cursor is after the opening delimiter. */
static int scan_ml_string(struct parser *ps, struct buf *out, struct pos open, int literal)
{
    char quote = literal ? '\'' : '"';
    eat_newline(ps);            /* a newline right after the delimiter is not content */
    const char *p = ps->p, *end = ps->end;
    for (;;) {
        const char *run = p;
        if (literal)
            while (p < end && literal_plain((unsigned char)*p))
                p++;
        else
            while (p < end && basic_plain((unsigned char)*p))
                p++;
        if (p > run && buf_put(out, run, (size_t)(p - run)))
            return fail_oom(ps);
        if (p >= end)
            return fail_at(ps, open, "unterminated multi-line string; expected %c%c%c",
                           quote, quote, quote);
        char c = *p;
        if (c == quote) {
            size_t q = 1;
            while (p + q < end && p[q] == quote)
                q++;
            if (q < 3) {
                if (buf_put(out, p, q))
                    return fail_oom(ps);
                p += q;
                continue;
            }
            if (q > 5)
                return fail_at(ps, pos_of(ps, p), "too many %c in a row: a multi-line string "
                               "may end with at most two before its closing %c%c%c",
                               quote, quote, quote, quote);
            if (buf_put(out, p, q - 3))
                return fail_oom(ps);
            ps->p = p + q;
            return 0;
        }
        if (c == '\n' || (c == '\r' && p + 1 < end && p[1] == '\n')) {
            /* CRLF is stored as LF, so values do not depend on the editor */
            if (buf_put(out, "\n", 1))
                return fail_oom(ps);
            ps->p = p;
            eat_newline(ps);
            p = ps->p;
            continue;
        }
        if (c == '\\') {
            const char *q = p + 1;
            while (q < end && is_ws(*q))
                q++;
            ps->p = q;
            if (q < end && (*q == '\n' || *q == '\r') && eat_newline(ps)) {
                /* line-ending backslash: drop whitespace and newlines up to the next text */
                for (;;) {
                    skip_ws(ps);
                    if (!eat_newline(ps))
                        break;
                }
                p = ps->p;
                continue;
            }
            if (q > p + 1)
                return fail_at(ps, pos_of(ps, p), "a backslash followed by whitespace must "
                               "end the line in a multi-line string");
            ps->p = p;
            if (scan_escape(ps, out))
                return -1;
            p = ps->p;
            continue;
        }
        int n = string_special(ps, p, out);
        if (n < 0)
            return -1;
        p += n;
    }
}

/* Any string at the cursor (on a quote), decoded into out. */
static int scan_any_string(struct parser *ps, struct buf *out, int *multiline)
{
    struct pos open = here(ps);
    const char *p = ps->p;
    int literal = *p == '\'';
    *multiline = ps->end - p >= 3 && p[1] == *p && p[2] == *p;
    ps->p = p + (*multiline ? 3 : 1);
    if (*multiline)
        return scan_ml_string(ps, out, open, literal);
    return scan_string(ps, out, open, literal);
}

/* Keys. */

/* A dotted key into ps->key; what names it for messages ("a key"). */
static int parse_key(struct parser *ps, const char *what)
{
    struct keypath *k = &ps->key;
    k->n = 0;
    k->text.len = 0;
    for (;;) {
        if (k->n == k->cap) {
            size_t cap = k->cap ? k->cap * 2 : 8;
            struct keypart *parts = realloc(k->parts, cap * sizeof *parts);
            if (!parts)
                return fail_oom(ps);
            k->parts = parts;
            k->cap = cap;
        }
        if (k->n >= TOML_MAX_DEPTH)
            return fail_at(ps, here(ps), "key has more than %d parts", TOML_MAX_DEPTH);
        struct keypart *kp = &k->parts[k->n];
        kp->raw = ps->p;
        kp->at = here(ps);
        kp->off = k->text.len;
        const char *p = ps->p;
        char c = p < ps->end ? *p : 0;
        if (p < ps->end && is_bare(c)) {
            while (p < ps->end && is_bare(*p))
                p++;
            if (buf_put(&k->text, ps->p, (size_t)(p - ps->p)))
                return fail_oom(ps);
            ps->p = p;
        } else if (p < ps->end && (c == '"' || c == '\'')) {
            int ml;
            const char *open = p;
            if (scan_any_string(ps, &k->text, &ml))
                return -1;
            if (ml)
                return fail_at(ps, pos_of(ps, open), "a key cannot be a multi-line string");
        } else if (k->n > 0) {
            return fail_unexpected(ps, p, "a key after '.'");
        } else {
            return fail_unexpected(ps, p, what);
        }
        kp->len = k->text.len - kp->off;
        kp->raw_end = ps->p;
        k->n++;
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != '.')
            return 0;
        ps->p++;
        skip_ws(ps);
    }
}

/* After a key: a character stuck to it that cannot follow a key is most
 * likely meant to be part of it (ké = 1), so say what bare keys may hold. */
static int check_key_end(struct parser *ps)
{
    const char *p = ps->p;
    if (p >= ps->end || p != ps->key.parts[ps->key.n - 1].raw_end)
        return 0;
    char c = *p;
    if (is_ws(c) || c == '=' || c == ']' || c == '\n' || c == '\r' || c == '#')
        return 0;
    if ((unsigned char)c >= 0x80 && !utf8_len((const unsigned char *)p,
                                              (const unsigned char *)ps->end))
        return fail_utf8(ps, p);
    char buf[64], kb[100];
    return fail_at(ps, pos_of(ps, p), "unexpected %s in key %s; bare keys may only contain "
                   "A-Z a-z 0-9 _ and -, other keys must be quoted",
                   describe(ps, p, buf, sizeof buf), key_quoted(ps, ps->key.n - 1, kb, sizeof kb));
}

/* Walks the parts of a dotted key but the last from table t, making the
 * missing tables; *t becomes the table the last part goes into. */
static int descend_dotted(struct parser *ps, struct node **t)
{
    char kb[100];
    for (size_t i = 0; i + 1 < ps->key.n; i++) {
        const struct keypart *kp = &ps->key.parts[i];
        size_t at = table_find(*t, ps->key.text.p + kp->off, kp->len);
        if (at == NOT_FOUND) {
            struct node *child = add_table(ps, *t, i);
            if (!child)
                return -1;
            child->dotted_sec = ps->sec;
            *t = child;
            continue;
        }
        struct node *n = kv_node(*t, at);
        if (n->v.type != TOML_TABLE || (n->flags & NODE_INLINE))
            return fail_at(ps, kp->at, "cannot add keys to %s: it is %s (defined at line %d), "
                           "which cannot be extended", key_quoted(ps, i, kb, sizeof kb),
                           node_kind(n), n->v.line);
        if (n->flags & NODE_HEADER)
            return fail_at(ps, kp->at, "cannot add keys to table %s with dotted keys: it was "
                           "defined by a header at line %d; add them under that header",
                           key_quoted(ps, i, kb, sizeof kb), n->v.line);
        if (n->dotted_sec && n->dotted_sec != ps->sec)
            return fail_at(ps, kp->at, "cannot add keys to table %s here: it was defined with "
                           "dotted keys at line %d, in another section",
                           key_quoted(ps, i, kb, sizeof kb), n->v.line);
        if (!n->dotted_sec) {
            /* a table a header only passed through is defined here */
            n->v.line = kp->at.line;
            n->v.col = kp->at.col;
        }
        n->dotted_sec = ps->sec;
        *t = n;
    }
    return 0;
}

/* key = value, into table base (the current section, or an inline table). */
static int parse_keyval(struct parser *ps, struct node *base)
{
    char kb[100];
    if (parse_key(ps, "a key") || check_key_end(ps))
        return -1;
    if (ps->p >= ps->end || *ps->p != '=')
        return fail_at(ps, pos_of(ps, ps->p), "expected '=' after key %s",
                       key_quoted(ps, ps->key.n - 1, kb, sizeof kb));
    ps->p++;
    skip_ws(ps);
    struct node *t = base;
    if (descend_dotted(ps, &t))
        return -1;
    const struct keypart *last = &ps->key.parts[ps->key.n - 1];
    const char *k = ps->key.text.p + last->off;
    size_t at = table_find(t, k, last->len);
    if (at != NOT_FOUND) {
        struct node *n = kv_node(t, at);
        if (n->v.type == TOML_TABLE && !(n->flags & NODE_INLINE))
            return fail_at(ps, last->at, "key %s is already defined as a table (line %d)",
                           key_quoted(ps, ps->key.n - 1, kb, sizeof kb), n->v.line);
        return fail_at(ps, last->at, "duplicate key %s (first defined at line %d)",
                       key_quoted(ps, ps->key.n - 1, kb, sizeof kb), n->v.line);
    }
    /* the value's own keys will reuse ps->key, so the last part is copied now */
    char *key = dup_bytes(ps, k, last->len);
    size_t key_len = last->len;
    if (!key)
        return fail_oom(ps);
    struct node *v;
    if (parse_value(ps, t->depth + 1, &v))
        return -1;
    return table_add(ps, t, key, key_len, v);
}

/* Numbers. */

/* Digits of a base with single underscores between them, from *pp. */
static int scan_digits(struct parser *ps, const char **pp, int base, const char *what)
{
    const char *p = *pp;
    for (;;) {
        int c = p < ps->end ? *p : 0;
        int ok = base == 16 ? is_hex(c) : c >= '0' && c < '0' + base;
        if (!ok) {
            char buf[64];
            if (p > *pp && p[-1] == '_')
                return fail_at(ps, pos_of(ps, p - 1), "'_' in a number must be between "
                               "two digits");
            return fail_at(ps, pos_of(ps, p), "unexpected %s; expected %s",
                           describe(ps, p, buf, sizeof buf), what);
        }
        while (p < ps->end && (base == 16 ? is_hex(*p) : *p >= '0' && *p < '0' + base))
            p++;
        if (p < ps->end && *p == '_') {
            p++;
            continue;
        }
        *pp = p;
        return 0;
    }
}

/* The text of a number token from start, for messages. */
static int token_len(const struct parser *ps, const char *start)
{
    const char *p = start;
    while (p < ps->end && p - start < 60 && (is_bare(*p) || *p == '.' || *p == '+'))
        p++;
    return (int)(p - start);
}

/* Values must end at whitespace, a comment, a separator or the end of line. */
static int check_end(struct parser *ps, const char *start, const char *what)
{
    const char *p = ps->p;
    if (p >= ps->end)
        return 0;
    char c = *p;
    if (is_ws(c) || c == '\n' || c == '\r' || c == '#' || c == ',' || c == ']' || c == '}')
        return 0;
    char buf[64];
    if ((unsigned char)c >= 0x80 && !utf8_len((const unsigned char *)p,
                                              (const unsigned char *)ps->end))
        return fail_utf8(ps, p);
    return fail_at(ps, pos_of(ps, p), "unexpected %s after %s %.*s",
                   describe(ps, p, buf, sizeof buf), what, token_len(ps, start), start);
}

/* Integer of a base 2, 8 or 16 after its 0x/0o/0b prefix. */
static int parse_prefixed(struct parser *ps, const char *start, struct node *n)
{
    static const char *const what[] = {
        [2] = "binary digits after 0b", [8] = "octal digits after 0o",
        [16] = "hexadecimal digits after 0x",
    };
    char c = start[1];
    int base = c == 'x' ? 16 : c == 'o' ? 8 : 2;
    const char *p = start + 2;
    if (scan_digits(ps, &p, base, what[base]))
        return -1;
    uint64_t v = 0;
    for (const char *q = start + 2; q < p; q++) {
        if (*q == '_')
            continue;
        unsigned d = (unsigned)hex_val(*q);
        if (v > ((uint64_t)INT64_MAX - d) / (uint64_t)base)
            return fail_at(ps, pos_of(ps, start), "integer %.*s does not fit in 64 bits",
                           token_len(ps, start), start);
        v = v * (uint64_t)base + d;
    }
    n->v.u.integer = (int64_t)v;
    ps->p = p;
    return check_end(ps, start, "integer");
}

/* Decimal integers and floats, inf and nan. */
static int parse_number(struct parser *ps, struct node *n)
{
    const char *start = ps->p, *p = start, *end = ps->end;
    int neg = 0;
    if (*p == '+' || *p == '-') {
        neg = *p == '-';
        p++;
    }
    if (end - p >= 3 && (memcmp(p, "inf", 3) == 0 || memcmp(p, "nan", 3) == 0)) {
        n->v.type = TOML_FLOAT;
        n->v.u.fp = p[0] == 'i' ? (neg ? -INFINITY : INFINITY) : (neg ? -NAN : NAN);
        ps->p = p + 3;
        return check_end(ps, start, "float");
    }
    if (p < end && *p == '0' && p + 1 < end && (p[1] == 'x' || p[1] == 'o' || p[1] == 'b')) {
        if (p != start)
            return fail_at(ps, pos_of(ps, start), "%s integers cannot have a sign",
                           p[1] == 'x' ? "hexadecimal" : p[1] == 'o' ? "octal" : "binary");
        n->v.type = TOML_INTEGER;
        return parse_prefixed(ps, start, n);
    }
    if (p < end && *p == '0' && p + 1 < end && (is_digit(p[1]) || p[1] == '_'))
        return fail_at(ps, pos_of(ps, start), "leading zeros are not allowed in %.*s",
                       token_len(ps, start), start);
    if (scan_digits(ps, &p, 10, "a digit"))
        return -1;
    int is_float = 0;
    if (p < end && *p == '.') {
        is_float = 1;
        p++;
        if (scan_digits(ps, &p, 10, "a digit after the decimal point"))
            return -1;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        is_float = 1;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (scan_digits(ps, &p, 10, "a digit in the exponent"))
            return -1;
    }
    ps->p = p;
    if (!is_float) {
        uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        for (const char *q = start + (start[0] == '+' || start[0] == '-'); q < p; q++) {
            if (*q == '_')
                continue;
            unsigned d = (unsigned)(*q - '0');
            if (v > (limit - d) / 10)
                return fail_at(ps, pos_of(ps, start), "integer %.*s does not fit in 64 bits",
                               token_len(ps, start), start);
            v = v * 10 + d;
        }
        n->v.type = TOML_INTEGER;
        n->v.u.integer = !neg ? (int64_t)v : v > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)v;
        return check_end(ps, start, "integer");
    }
    /* strtod wants the text without underscores, and the locale's decimal point */
    struct buf *b = &ps->sbuf;
    b->len = 0;
    if (buf_reserve(b, (size_t)(p - start) + 8))
        return fail_oom(ps);
    char dp = ps->decimal_point;
    for (const char *q = start; q < p; q++)
        if (*q != '_')
            b->p[b->len++] = *q == '.' ? dp : *q;
    b->p[b->len] = '\0';
    n->v.type = TOML_FLOAT;
    n->v.u.fp = strtod(b->p, NULL);
    if (isinf(n->v.u.fp))
        return fail_at(ps, pos_of(ps, start), "float %.*s is too large for 64 bits "
                       "(write inf if that is meant)", token_len(ps, start), start);
    return check_end(ps, start, "float");
}

/* Dates and times. */

static int two_digits(const char *p, const char *end, int *out)
{
    if (end - p < 2 || !is_digit(p[0]) || !is_digit(p[1]))
        return -1;
    *out = (p[0] - '0') * 10 + (p[1] - '0');
    return 0;
}

static int days_in_month(int y, int m)
{
    static const int days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    if (m == 2 && (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
        return 29;
    return days[m - 1];
}

/* HH:MM:SS[.frac] at *pp into dt. */
static int parse_time(struct parser *ps, const char **pp, struct toml_datetime *dt)
{
    const char *p = *pp, *end = ps->end;
    if (token_len(ps, p) == 0)
        return fail_at(ps, pos_of(ps, p), "expected a time HH:MM:SS after the date");
    if (two_digits(p, end, &dt->hour) || end - p < 3 || p[2] != ':'
        || two_digits(p + 3, end, &dt->minute) || end - p < 6 || p[5] != ':'
        || two_digits(p + 6, end, &dt->second))
        return fail_at(ps, pos_of(ps, p), "invalid time %.*s; expected HH:MM:SS "
                       "(seconds are required)", token_len(ps, p), p);
    if (dt->hour > 23 || dt->minute > 59 || dt->second > 60)
        return fail_at(ps, pos_of(ps, p), "invalid time %.8s: %s", p,
                       dt->hour > 23 ? "hour must be 00 to 23"
                       : dt->minute > 59 ? "minute must be 00 to 59"
                       : "second must be 00 to 60");
    p += 8;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !is_digit(*p))
            return fail_at(ps, pos_of(ps, p), "expected a digit after '.' in a time");
        int digits = 0, ns = 0;
        for (; p < end && is_digit(*p); p++, digits++)
            if (digits < 9)     /* extra precision is truncated, as the spec asks */
                ns = ns * 10 + (*p - '0');
        dt->frac_digits = digits;
        for (int i = digits; i < 9; i++)
            ns *= 10;
        dt->nanosecond = ns;
    }
    *pp = p;
    return 0;
}

static int parse_datetime(struct parser *ps, struct node *n)
{
    const char *start = ps->p, *p = start, *end = ps->end;
    struct toml_datetime *dt = &n->v.u.dt;
    if (end - p >= 5 && p[4] == '-') {
        int yh, yl;
        if (two_digits(p, end, &yh) || two_digits(p + 2, end, &yl) || p[4] != '-'
            || two_digits(p + 5, end, &dt->month) || end - p < 8 || p[7] != '-'
            || two_digits(p + 8, end, &dt->day))
            return fail_at(ps, pos_of(ps, start), "invalid date %.*s; expected YYYY-MM-DD",
                           token_len(ps, start), start);
        dt->year = yh * 100 + yl;
        if (dt->month < 1 || dt->month > 12)
            return fail_at(ps, pos_of(ps, start), "invalid date %.10s: month must be "
                           "01 to 12", start);
        int dim = days_in_month(dt->year, dt->month);
        if (dt->day < 1 || dt->day > dim)
            return fail_at(ps, pos_of(ps, start), "invalid date %.10s: day must be 01 to %d "
                           "in that month", start, dim);
        p += 10;
        n->v.type = TOML_DATE_LOCAL;
        int t = p < end && (*p == 'T' || *p == 't');
        if (!t && end - p >= 4 && *p == ' ' && is_digit(p[1]) && is_digit(p[2]) && p[3] == ':')
            t = 1;
        if (!t) {
            ps->p = p;
            return check_end(ps, start, "date");
        }
        p++;
        if (parse_time(ps, &p, dt))
            return -1;
        n->v.type = TOML_DATETIME_LOCAL;
        if (p < end && (*p == 'Z' || *p == 'z')) {
            n->v.type = TOML_DATETIME;
            dt->offset_z = 1;
            p++;
        } else if (p < end && (*p == '+' || *p == '-')) {
            int oh, om;
            if (two_digits(p + 1, end, &oh) || end - p < 4 || p[3] != ':'
                || two_digits(p + 4, end, &om))
                return fail_at(ps, pos_of(ps, p), "invalid time offset %.*s; expected "
                               "+HH:MM or -HH:MM", token_len(ps, p), p);
            if (oh > 23 || om > 59)
                return fail_at(ps, pos_of(ps, p), "invalid time offset %.6s: %s", p,
                               oh > 23 ? "hours must be 00 to 23" : "minutes must be 00 to 59");
            n->v.type = TOML_DATETIME;
            dt->offset_minutes = (*p == '-' ? -1 : 1) * (oh * 60 + om);
            p += 6;
        }
        ps->p = p;
        return check_end(ps, start, "date-time");
    }
    if (parse_time(ps, &p, dt))
        return -1;
    n->v.type = TOML_TIME_LOCAL;
    ps->p = p;
    return check_end(ps, start, "time");
}

/* Values. */

static int parse_array(struct parser *ps, struct node *a)
{
    struct pos open = here(ps);
    ps->p++;
    for (;;) {
        if (skip_blank(ps))
            return -1;
        if (ps->p >= ps->end)
            return fail_at(ps, open, "unterminated array; expected ']'");
        if (*ps->p == ']')
            break;
        struct node *v;
        if (parse_value(ps, a->depth + 1, &v))
            return -1;
        if (array_push(ps, a, v))
            return -1;
        if (skip_blank(ps))
            return -1;
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == ']')
            break;
        if (ps->p >= ps->end)
            return fail_at(ps, open, "unterminated array; expected ']'");
        return fail_unexpected(ps, ps->p, "',' or ']' after an array element");
    }
    ps->p++;
    return 0;
}

static int parse_inline_table(struct parser *ps, struct node *t)
{
    struct pos open = here(ps);
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        t->flags |= NODE_INLINE;
        return 0;
    }
    for (;;) {
        if (ps->p < ps->end && (*ps->p == '\n' || *ps->p == '\r'))
            return fail_at(ps, pos_of(ps, ps->p), "an inline table must be on one line; "
                           "expected a key");
        if (ps->p < ps->end && *ps->p == '}')
            return fail_at(ps, pos_of(ps, ps->p), "trailing comma in an inline table; "
                           "expected a key");
        if (parse_keyval(ps, t))
            return -1;
        skip_ws(ps);
        if (ps->p >= ps->end)
            return fail_at(ps, open, "unterminated inline table; expected '}'");
        if (*ps->p == ',') {
            ps->p++;
            skip_ws(ps);
            continue;
        }
        if (*ps->p == '}')
            break;
        if (*ps->p == '\n' || *ps->p == '\r')
            return fail_at(ps, pos_of(ps, ps->p), "an inline table must be on one line; "
                           "expected ',' or '}'");
        return fail_unexpected(ps, ps->p, "',' or '}' in an inline table");
    }
    ps->p++;
    t->flags |= NODE_INLINE;
    return 0;
}

static int match_word(const struct parser *ps, const char *w, size_t n)
{
    return (size_t)(ps->end - ps->p) >= n && memcmp(ps->p, w, n) == 0;
}

/* A value at the cursor; depth is the depth it will have in the tree. */
static int parse_value(struct parser *ps, int depth, struct node **out)
{
    struct pos at = here(ps);
    const char *p = ps->p;
    char c = p < ps->end ? *p : 0;
    struct node *n;
    int rc;
    if (p < ps->end && (c == '[' || c == '{') && depth > TOML_MAX_DEPTH)
        return fail_at(ps, at, "values are nested deeper than %d levels", TOML_MAX_DEPTH);
    if (p >= ps->end || !(c == '"' || c == '\'' || c == '[' || c == '{' || c == 't'
                          || c == 'f' || c == 'i' || c == 'n' || c == '+' || c == '-'
                          || is_digit(c))) {
        if (p < ps->end && is_bare(c))
            return fail_at(ps, at, "invalid value %.*s; expected a string (in quotes), number, "
                           "boolean, date-time, array or inline table", token_len(ps, p), p);
        return fail_unexpected(ps, p, "a value");
    }
    /* a scalar type until the branch knows better, so toml_free on an error
     * path never reads the union as something it is not */
    n = node_new(ps, TOML_INTEGER, at, depth);
    if (!n)
        return -1;
    if (c == '"' || c == '\'') {
        int ml;
        n->v.type = TOML_STRING;
        ps->sbuf.len = 0;
        rc = scan_any_string(ps, &ps->sbuf, &ml);
        if (!rc) {
            n->v.u.str.ptr = dup_bytes(ps, ps->sbuf.p, ps->sbuf.len);
            n->v.u.str.len = ps->sbuf.len;
            if (!n->v.u.str.ptr)
                rc = fail_oom(ps);
        }
    } else if (c == '[') {
        n->v.type = TOML_ARRAY;
        rc = parse_array(ps, n);
    } else if (c == '{') {
        n->v.type = TOML_TABLE;
        rc = parse_inline_table(ps, n);
    } else if (c == 't' || c == 'f') {
        n->v.type = TOML_BOOL;
        n->v.u.boolean = c == 't';
        size_t len = c == 't' ? 4 : 5;
        if (match_word(ps, c == 't' ? "true" : "false", len)
            && (ps->end - p == (ptrdiff_t)len || !is_bare(p[len]))) {
            ps->p += len;
            rc = check_end(ps, p, "boolean");
        } else {
            rc = fail_at(ps, at, "invalid value %.*s; expected true or false (lower case), "
                         "or a string in quotes", token_len(ps, p), p);
        }
    } else if (is_digit(c) && ps->end - p >= 3
               && ((ps->end - p >= 5 && is_digit(p[1]) && is_digit(p[2]) && is_digit(p[3])
                    && p[4] == '-')
                   || (is_digit(p[1]) && p[2] == ':'))) {
        rc = parse_datetime(ps, n);
    } else if ((c == 'i' && !match_word(ps, "inf", 3))
               || (c == 'n' && !match_word(ps, "nan", 3))) {
        rc = fail_at(ps, at, "invalid value %.*s; expected a string (in quotes), number, "
                     "boolean, date-time, array or inline table", token_len(ps, p), p);
    } else {
        rc = parse_number(ps, n);
    }
    if (rc)
        return -1;      /* n stays in the arena, which goes with the document */
    *out = n;
    return 0;
}

/* Headers and the document. */

/* [a.b.c] or [[a.b.c]] (aot): finds or makes the table and makes it current. */
static int open_table(struct parser *ps, int aot, struct pos at)
{
    char kb[100];
    const char *raw;
    int raw_len = key_raw(ps, ps->key.n - 1, &raw);
    const char *open = aot ? "[[" : "[", *close = aot ? "]]" : "]";
    struct node *t = ps->root;
    for (size_t i = 0; i + 1 < ps->key.n; i++) {
        const struct keypart *kp = &ps->key.parts[i];
        size_t idx = table_find(t, ps->key.text.p + kp->off, kp->len);
        if (idx == NOT_FOUND) {
            if (!(t = add_table(ps, t, i)))
                return -1;
            continue;
        }
        struct node *n = kv_node(t, idx);
        if (n->v.type == TOML_ARRAY && (n->flags & NODE_AOT)) {
            /* a header below an array of tables goes into its last element */
            t = (struct node *)n->v.u.array.items[n->v.u.array.len - 1];
            continue;
        }
        if (n->v.type != TOML_TABLE || (n->flags & NODE_INLINE))
            return fail_at(ps, at, "cannot define %s%.*s%s: %s is %s (defined at line %d), "
                           "which cannot be extended", open, raw_len, raw, close,
                           key_quoted(ps, i, kb, sizeof kb), node_kind(n), n->v.line);
        t = n;
    }
    const struct keypart *kp = &ps->key.parts[ps->key.n - 1];
    size_t idx = table_find(t, ps->key.text.p + kp->off, kp->len);
    struct node *n = idx == NOT_FOUND ? NULL : kv_node(t, idx);
    if (!aot) {
        if (!n) {
            if (!(n = add_table(ps, t, ps->key.n - 1)))
                return -1;
        } else if (n->v.type == TOML_TABLE && (n->flags & NODE_HEADER)) {
            return fail_at(ps, at, "table [%.*s] is defined twice (first at line %d)",
                           raw_len, raw, n->v.line);
        } else if (n->v.type == TOML_TABLE && n->dotted_sec) {
            return fail_at(ps, at, "table [%.*s] is already defined by dotted keys at line %d",
                           raw_len, raw, n->v.line);
        } else if (n->v.type == TOML_ARRAY && (n->flags & NODE_AOT)) {
            return fail_at(ps, at, "table [%.*s] is already defined as an array of tables "
                           "(first at line %d); use [[%.*s]] to add an element",
                           raw_len, raw, n->v.line, raw_len, raw);
        } else if (n->v.type != TOML_TABLE || (n->flags & NODE_INLINE)) {
            return fail_at(ps, at, "cannot define table [%.*s]: key %s is already %s "
                           "(line %d)", raw_len, raw, key_quoted(ps, ps->key.n - 1, kb,
                           sizeof kb), node_kind(n), n->v.line);
        }
        n->flags |= NODE_HEADER;
        n->v.line = at.line;
        n->v.col = at.col;
    } else {
        if (!n) {
            if (!(n = add_table(ps, t, ps->key.n - 1)))
                return -1;
            n->v.type = TOML_ARRAY;
            n->flags |= NODE_AOT;
            n->v.line = at.line;
            n->v.col = at.col;
        } else if (n->v.type != TOML_ARRAY || !(n->flags & NODE_AOT)) {
            return fail_at(ps, at, "cannot add to [[%.*s]]: key %s is already %s (line %d), "
                           "not an array of tables", raw_len, raw,
                           key_quoted(ps, ps->key.n - 1, kb, sizeof kb), node_kind(n),
                           n->v.line);
        }
        if (n->depth + 1 > TOML_MAX_DEPTH)
            return fail_at(ps, at, "tables are nested deeper than %d levels", TOML_MAX_DEPTH);
        struct node *elem = node_new(ps, TOML_TABLE, at, n->depth + 1);
        if (!elem)
            return -1;
        if (array_push(ps, n, elem))
            return -1;
        elem->flags |= NODE_HEADER;
        n = elem;
    }
    ps->sec++;
    ps->cur = n;
    return 0;
}

static int parse_header(struct parser *ps)
{
    struct pos at = here(ps);
    int aot = ps->end - ps->p >= 2 && ps->p[1] == '[';
    ps->p += aot ? 2 : 1;
    skip_ws(ps);
    if (parse_key(ps, "a table name") || check_key_end(ps))
        return -1;
    if (aot && !(ps->end - ps->p >= 2 && ps->p[0] == ']' && ps->p[1] == ']'))
        return fail_unexpected(ps, ps->p, "']]' to close the [[array of tables]] header");
    if (!aot && (ps->p >= ps->end || *ps->p != ']'))
        return fail_unexpected(ps, ps->p, "']' to close the [table] header");
    ps->p += aot ? 2 : 1;
    if (open_table(ps, aot, at))
        return -1;
    return end_line(ps, aot ? "the [[array of tables]] header" : "the [table] header");
}

static int parse_document(struct parser *ps)
{
    if (ps->end - ps->p >= 3 && memcmp(ps->p, "\xEF\xBB\xBF", 3) == 0) {
        ps->p += 3;
        ps->line_start = ps->p;
    }
    for (;;) {
        skip_ws(ps);
        if (ps->p >= ps->end)
            return 0;
        char c = *ps->p;
        if (c == '#') {
            if (skip_comment(ps))
                return -1;
        } else if (eat_newline(ps)) {
            continue;
        } else if (c == '[') {
            if (parse_header(ps))
                return -1;
        } else if (is_bare(c) || c == '"' || c == '\'') {
            if (parse_keyval(ps, ps->cur) || end_line(ps, "the value"))
                return -1;
        } else if (c == '\r') {
            return fail_at(ps, pos_of(ps, ps->p), "carriage return without a line feed");
        } else {
            return fail_unexpected(ps, ps->p, "a key, a [table] header or a comment");
        }
    }
}

/* Public interface. */

struct toml_value *toml_parse(const char *src, size_t len, const char *name,
                              char *err, size_t err_len)
{
    struct parser ps;
    memset(&ps, 0, sizeof ps);
    if (!src)
        src = "", len = 0;
    ps.p = ps.line_start = src;
    ps.end = src + len;
    ps.name = name ? name : "<input>";
    ps.err = err;
    ps.err_len = err_len;
    if (err && err_len)
        err[0] = '\0';
    ps.line = 1;
    ps.sec = 1;
    ps.decimal_point = *localeconv()->decimal_point;
    ps.doc = calloc(1, sizeof *ps.doc);
    if (!ps.doc) {
        fail_at(&ps, here(&ps), "out of memory");
        return NULL;
    }
    ps.root = &ps.doc->root;
    ps.root->v.type = TOML_TABLE;
    ps.root->v.line = ps.root->v.col = 1;
    ps.root->flags = NODE_HEADER | NODE_ROOT;
    ps.cur = ps.root;
    /* allocated up front so that an empty key or string still has a buffer */
    int rc = buf_reserve(&ps.sbuf, 1) || buf_reserve(&ps.key.text, 1) ? fail_oom(&ps)
             : parse_document(&ps);
    free(ps.sbuf.p);
    free(ps.key.text.p);
    free(ps.key.parts);
    if (rc) {
        toml_free(&ps.root->v);
        return NULL;
    }
    return &ps.root->v;
}

void toml_free(struct toml_value *v)
{
    if (!v || !(((struct node *)v)->flags & NODE_ROOT))
        return;         /* values inside a document go with its root */
    struct doc *d = (struct doc *)v;
    for (struct chunk *c = d->chunks, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(d);
}

const struct toml_value *toml_get(const struct toml_value *t, const char *key)
{
    if (!t || !key || t->type != TOML_TABLE)
        return NULL;
    size_t i = table_find((const struct node *)t, key, strlen(key));
    return i == NOT_FOUND ? NULL : t->u.table.items[i].value;
}

const char *toml_type_name(enum toml_type type)
{
    switch (type) {
    case TOML_TABLE: return "table";
    case TOML_ARRAY: return "array";
    case TOML_STRING: return "string";
    case TOML_INTEGER: return "integer";
    case TOML_FLOAT: return "float";
    case TOML_BOOL: return "boolean";
    case TOML_DATETIME: return "offset date-time";
    case TOML_DATETIME_LOCAL: return "local date-time";
    case TOML_DATE_LOCAL: return "local date";
    case TOML_TIME_LOCAL: return "local time";
    }
    return "unknown";
}

int toml_datetime_format(const struct toml_value *v, char *buf, size_t len)
{
    const struct toml_datetime *d = &v->u.dt;
    char frac[16] = "", off[16] = "";
    if (d->frac_digits > 0) {
        int digits = d->frac_digits > 9 ? 9 : d->frac_digits, div = 1;
        for (int i = digits; i < 9; i++)
            div *= 10;
        snprintf(frac, sizeof frac, ".%0*d", digits, d->nanosecond / div);
    }
    if (v->type == TOML_DATETIME) {
        int m = d->offset_minutes < 0 ? -d->offset_minutes : d->offset_minutes;
        if (d->offset_z)
            snprintf(off, sizeof off, "Z");
        else
            snprintf(off, sizeof off, "%c%02d:%02d", d->offset_minutes < 0 ? '-' : '+',
                     m / 60 % 100, m % 60);
    }
    switch (v->type) {
    case TOML_DATETIME:
    case TOML_DATETIME_LOCAL:
        return snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d%s%s", d->year, d->month,
                        d->day, d->hour, d->minute, d->second, frac, off);
    case TOML_DATE_LOCAL:
        return snprintf(buf, len, "%04d-%02d-%02d", d->year, d->month, d->day);
    case TOML_TIME_LOCAL:
        return snprintf(buf, len, "%02d:%02d:%02d%s", d->hour, d->minute, d->second, frac);
    default:
        return snprintf(buf, len, "%s", "");
    }
}
