/* toml.h: a strict TOML 1.0.0 parser producing an ordered value tree.
 *
 * Every value remembers the line and column where it was defined, so that a
 * consumer (the agent config, service definitions) can name file:line in its
 * own errors. The tree owns all of its memory; toml_free() releases it. */
#ifndef MCP_TOML_H
#define MCP_TOML_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum toml_type {
    TOML_TABLE,
    TOML_ARRAY,
    TOML_STRING,
    TOML_INTEGER,
    TOML_FLOAT,
    TOML_BOOL,
    TOML_DATETIME,          /* offset date-time: 1979-05-27T07:32:00Z */
    TOML_DATETIME_LOCAL,    /* 1979-05-27T07:32:00 */
    TOML_DATE_LOCAL,        /* 1979-05-27 */
    TOML_TIME_LOCAL,        /* 07:32:00 */
};

struct toml_datetime {
    int year, month, day;
    int hour, minute, second;
    int nanosecond;         /* fractional seconds, 0..999999999 */
    int frac_digits;        /* digits written in the source (0 = none) */
    int offset_minutes;     /* TOML_DATETIME only; Z is 0 */
    int offset_z;           /* 1 when written as Z/z */
};

struct toml_value;

struct toml_kv {
    char *key;              /* NUL-terminated; may contain NUL only via \u0000 */
    size_t key_len;
    struct toml_value *value;
};

struct toml_value {
    enum toml_type type;
    int line, col;          /* 1-based position of the value in the source */
    union {
        struct { char *ptr; size_t len; } str;     /* NUL-terminated too */
        int64_t integer;
        double fp;
        int boolean;
        struct toml_datetime dt;
        struct { struct toml_kv *items; size_t len, cap; } table;   /* in source order */
        struct { struct toml_value **items; size_t len, cap; } array;
    } u;
};

/* Parses src (len bytes, need not be NUL-terminated). name is used in error
 * messages ("services/mcq.toml"). Returns a TOML_TABLE the caller owns and
 * frees with toml_free(), or NULL with a message in err:
 * "NAME:LINE:COL: what was wrong, and what was expected". */
struct toml_value *toml_parse(const char *src, size_t len, const char *name,
                              char *err, size_t err_len);

/* Frees a document: v is the root toml_parse returned, and every value in
 * the tree goes with it (they share one arena). Called on a value inside a
 * tree, or on NULL, it does nothing. */
void toml_free(struct toml_value *v);

/* Looks up key in a table; NULL when absent or when t is not a table. t must
 * come from toml_parse (large tables carry a hash index beside the items). */
const struct toml_value *toml_get(const struct toml_value *t, const char *key);

/* Name of a type for messages: "table", "array", "string", "integer", "float",
 * "boolean", "offset date-time", "local date-time", "local date", "local time". */
const char *toml_type_name(enum toml_type type);

/* Writes a date/time value as RFC 3339 text (the form toml-test expects) into
 * buf; returns the length written, as snprintf does. */
int toml_datetime_format(const struct toml_value *v, char *buf, size_t len);

/* The `mcp-agent toml-decode` command: TOML on in, toml-test JSON on out.
 * Returns the process exit code (0, or 1 with the error written to err). */
int toml_decode_cmd(FILE *in, FILE *out, FILE *err);

#endif
