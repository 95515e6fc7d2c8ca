/* toml_json.c: the `mcp-agent toml-decode` command.
 *
 * Reads TOML on one stream and writes the JSON form the toml-test suite
 * expects on another: tables as objects, arrays as arrays, and every leaf as
 * {"type": T, "value": "<text>"}. It is how the parser is checked against
 * the suite, and a handy way for an operator to see how a file parses. */
#include "toml.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *leaf_type(enum toml_type type)
{
    switch (type) {
    case TOML_STRING: return "string";
    case TOML_INTEGER: return "integer";
    case TOML_FLOAT: return "float";
    case TOML_BOOL: return "bool";
    case TOML_DATETIME: return "datetime";
    case TOML_DATETIME_LOCAL: return "datetime-local";
    case TOML_DATE_LOCAL: return "date-local";
    case TOML_TIME_LOCAL: return "time-local";
    default: return "";
    }
}

/* Shortest %g text that reads back as the same double, so the output is
 * exact without the noise of a fixed %.17g. */
static void format_float(double d, char *buf, size_t len)
{
    if (isnan(d)) {
        snprintf(buf, len, "nan");
        return;
    }
    if (isinf(d)) {
        snprintf(buf, len, d < 0 ? "-inf" : "inf");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    if (!strpbrk(buf, ".eE"))
        strncat(buf, ".0", len - strlen(buf) - 1);
}

/* Returns a new reference, or NULL when jansson runs out of memory. */
static json_t *to_json(const struct toml_value *v)
{
    char text[64];
    json_t *j;
    switch (v->type) {
    case TOML_TABLE:
        if (!(j = json_object()))
            return NULL;
        for (size_t i = 0; i < v->u.table.len; i++) {
            const struct toml_kv *kv = &v->u.table.items[i];
            json_t *c = to_json(kv->value);
            if (!c || json_object_setn_new(j, kv->key, kv->key_len, c)) {
                json_decref(j);
                return NULL;
            }
        }
        return j;
    case TOML_ARRAY:
        if (!(j = json_array()))
            return NULL;
        for (size_t i = 0; i < v->u.array.len; i++) {
            json_t *c = to_json(v->u.array.items[i]);
            if (!c || json_array_append_new(j, c)) {
                json_decref(j);
                return NULL;
            }
        }
        return j;
    case TOML_STRING:
        return json_pack("{s:s, s:s%}", "type", "string", "value", v->u.str.ptr,
                         v->u.str.len);
    case TOML_INTEGER:
        snprintf(text, sizeof text, "%lld", (long long)v->u.integer);
        break;
    case TOML_FLOAT:
        format_float(v->u.fp, text, sizeof text);
        break;
    case TOML_BOOL:
        snprintf(text, sizeof text, "%s", v->u.boolean ? "true" : "false");
        break;
    default:
        toml_datetime_format(v, text, sizeof text);
        break;
    }
    return json_pack("{s:s, s:s}", "type", leaf_type(v->type), "value", text);
}

/* Reads all of in; returns a malloc'd buffer (the caller frees it) or NULL. */
static char *read_all(FILE *in, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, in);
        if (n < cap)
            break;
        char *bigger = cap > (size_t)-1 / 2 ? NULL : realloc(buf, cap * 2);
        if (!bigger)
            free(buf);
        buf = bigger;
        cap *= 2;
    }
    if (buf && ferror(in)) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

int toml_decode_cmd(FILE *in, FILE *out, FILE *err)
{
    size_t len;
    char msg[512];
    char *src = read_all(in, &len);
    if (!src) {
        fprintf(err, "<stdin>: cannot read the input\n");
        return 1;
    }
    struct toml_value *doc = toml_parse(src, len, "<stdin>", msg, sizeof msg);
    free(src);
    if (!doc) {
        fprintf(err, "%s\n", msg);
        return 1;
    }
    json_t *j = to_json(doc);
    toml_free(doc);
    int rc = !j || json_dumpf(j, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0;
    json_decref(j);
    if (rc) {
        fprintf(err, "<stdin>: cannot write the JSON output\n");
        return 1;
    }
    fputc('\n', out);
    return 0;
}
