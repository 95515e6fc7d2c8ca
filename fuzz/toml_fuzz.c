/* toml_fuzz.c: libFuzzer harness for the TOML parser.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined core/toml.c core/toml_json.c \
 *       fuzz/toml_fuzz.c $(pkg-config --cflags --libs jansson) -lm -o build/toml_fuzz
 *   build/toml_fuzz -max_total_time=180 fuzz/corpus/toml
 *
 * Beyond "does not crash", it checks what callers rely on: a failed parse
 * always leaves a "NAME:LINE:COL: " message, toml_get finds every key of
 * every table (the hash index agrees with the items), and a document that
 * parses also goes through toml-decode's JSON output. */
#define _POSIX_C_SOURCE 200809L
#include "../core/toml.h"

#include <stdlib.h>
#include <string.h>

static void check_tree(const struct toml_value *v)
{
    char buf[64];
    switch (v->type) {
    case TOML_TABLE:
        for (size_t i = 0; i < v->u.table.len; i++) {
            const struct toml_kv *kv = &v->u.table.items[i];
            if (strlen(kv->key) == kv->key_len && toml_get(v, kv->key) != kv->value)
                abort();
            check_tree(kv->value);
        }
        break;
    case TOML_ARRAY:
        for (size_t i = 0; i < v->u.array.len; i++)
            check_tree(v->u.array.items[i]);
        break;
    case TOML_DATETIME:
    case TOML_DATETIME_LOCAL:
    case TOML_DATE_LOCAL:
    case TOML_TIME_LOCAL:
        if (toml_datetime_format(v, buf, sizeof buf) >= (int)sizeof buf)
            abort();
        break;
    default:
        break;
    }
    if (v->line < 1 || v->col < 1)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    struct toml_value *doc = toml_parse((const char *)data, size, "fuzz", err, sizeof err);
    if (!doc) {
        if (strncmp(err, "fuzz:", 5) != 0 || strlen(err) < 10)
            abort();
        return 0;
    }
    check_tree(doc);
    toml_free(doc);
    if (size == 0)
        return 0;
    FILE *in = fmemopen((void *)data, size, "r");
    FILE *out = fopen("/dev/null", "w");
    if (in && out && toml_decode_cmd(in, out, out) != 0)
        abort();
    if (in)
        fclose(in);
    if (out)
        fclose(out);
    return 0;
}
