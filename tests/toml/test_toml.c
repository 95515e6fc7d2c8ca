/* test_toml.c: unit tests of the TOML parser's C interface.
 *
 * The toml-test suite checks what is accepted and what the values are; these
 * tests check what the suite cannot see: toml_get, the positions values
 * remember, the exact text of error messages, and date-time formatting.
 * Run under valgrind by `make`-style callers to check toml_free. */
#include "../../core/toml.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

static void check(int ok, const char *test, const char *fmt, ...)
{
    if (ok) {
        passed++;
        return;
    }
    failed++;
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL %s: ", test);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

/* Parses src, which must succeed; the caller frees the result. */
static struct toml_value *parse_ok(const char *test, const char *src)
{
    char err[256];
    struct toml_value *doc = toml_parse(src, strlen(src), "t.toml", err, sizeof err);
    check(doc != NULL, test, "parse failed: %s", err);
    return doc;
}

/* Parses src (len bytes), which must fail with exactly the message want. */
static void expect_error_n(const char *test, const char *name, const char *src, size_t len,
                           const char *want)
{
    char err[256];
    struct toml_value *doc = toml_parse(src, len, name, err, sizeof err);
    check(doc == NULL, test, "parsed, but should fail with: %s", want);
    toml_free(doc);
    if (!doc)
        check(strcmp(err, want) == 0, test, "\n  want: %s\n  got:  %s", want, err);
}

static void expect_error(const char *test, const char *name, const char *src, const char *want)
{
    expect_error_n(test, name, src, strlen(src), want);
}

static void test_get_finds_values_by_key(void)
{
    const char *t = "toml_get finds values by key and NULL for absent keys";
    struct toml_value *doc = parse_ok(t, "name = \"mcq\"\nport = 8080\n[limits]\ncpu = 1.5\n");
    if (!doc)
        return;
    const struct toml_value *v = toml_get(doc, "name");
    check(v && v->type == TOML_STRING && strcmp(v->u.str.ptr, "mcq") == 0, t, "name");
    v = toml_get(doc, "port");
    check(v && v->type == TOML_INTEGER && v->u.integer == 8080, t, "port");
    v = toml_get(toml_get(doc, "limits"), "cpu");
    check(v && v->type == TOML_FLOAT && v->u.fp == 1.5, t, "limits.cpu");
    check(toml_get(doc, "absent") == NULL, t, "absent key");
    check(toml_get(toml_get(doc, "port"), "x") == NULL, t, "lookup in a non-table");
    check(toml_get(NULL, "x") == NULL, t, "lookup in NULL");
    check(toml_get(doc, "limits.cpu") == NULL, t, "toml_get does not split dots");
    toml_free(doc);
}

static void test_large_tables_keep_source_order(void)
{
    const char *t = "a table with many keys keeps source order and finds every key";
    enum { N = 20000 };
    char *src = malloc((size_t)N * 32), *p = src;
    for (int i = 0; i < N; i++)
        p += sprintf(p, "k%d = %d\n", (i * 7919) % N, i);
    char err[256];
    struct toml_value *doc = toml_parse(src, (size_t)(p - src), "big.toml", err, sizeof err);
    free(src);
    check(doc != NULL, t, "parse failed: %s", err);
    if (!doc)
        return;
    check(doc->u.table.len == N, t, "len %zu", doc->u.table.len);
    int order_ok = 1, found_ok = 1;
    char key[32];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "k%d", (i * 7919) % N);
        order_ok &= strcmp(doc->u.table.items[i].key, key) == 0;
        const struct toml_value *v = toml_get(doc, key);
        found_ok &= v && v->u.integer == i;
    }
    check(order_ok, t, "items are not in source order");
    check(found_ok, t, "a key was not found");
    check(toml_get(doc, "k-1") == NULL, t, "absent key found");
    expect_error(t, "big.toml", "a = 1\nb = 2\nc = 3\nd = 4\ne = 5\nf = 6\ng = 7\nh = 8\n"
                 "i = 9\nj = 10\nc = 11\n",
                 "big.toml:11:1: duplicate key \"c\" (first defined at line 3)");
    toml_free(doc);
}

static void test_positions(void)
{
    const char *t = "values remember their line and column, counted in characters";
    struct toml_value *doc = parse_ok(t, "# header\n\nname = \"x\"\n  [srv]\n  a = [\"é\", 7]\n"
                                      "b.c = true\n");
    if (!doc)
        return;
    const struct toml_value *v = toml_get(doc, "name");
    check(v && v->line == 3 && v->col == 8, t, "name at %d:%d", v ? v->line : 0,
          v ? v->col : 0);
    const struct toml_value *srv = toml_get(doc, "srv");
    check(srv && srv->line == 4 && srv->col == 3, t, "[srv] at %d:%d",
          srv ? srv->line : 0, srv ? srv->col : 0);
    v = toml_get(srv, "a");
    check(v && v->type == TOML_ARRAY && v->u.array.len == 2 && v->line == 5 && v->col == 7,
          t, "a");
    if (v && v->type == TOML_ARRAY && v->u.array.len == 2) {
        const struct toml_value *seven = v->u.array.items[1];
        check(seven->line == 5 && seven->col == 13, t, "7 at %d:%d (é is one column)",
              seven->line, seven->col);
    }
    v = toml_get(srv, "b");
    check(v && v->type == TOML_TABLE && v->line == 6 && v->col == 1, t, "dotted table b");
    toml_free(doc);
    /* CRLF counts as one line break; a BOM takes no column */
    doc = parse_ok(t, "\xEF\xBB\xBFx = 1\r\ny = 2\r\n");
    if (doc) {
        v = toml_get(doc, "x");
        check(v && v->line == 1 && v->col == 5, t, "x after BOM");
        v = toml_get(doc, "y");
        check(v && v->line == 2 && v->col == 5, t, "y after CRLF");
    }
    toml_free(doc);
}

static void test_strings(void)
{
    const char *t = "strings decode escapes, keep NUL from \\u0000, and trim multi-line openers";
    struct toml_value *doc = parse_ok(t,
        "a = \"tab\\there \\u00e9 \\U0001F600\"\n"
        "\"k\\u0000z\" = \"x\\u0000y\"\n"
        "m = \"\"\"\nline1\\\n    line2\r\nline3\"\"\"\n"
        "l = '''\nC:\\path\\'''\n"
        "q = \"\"\"\"quoted\"\"\"\"\n");
    if (!doc)
        return;
    const struct toml_value *v = toml_get(doc, "a");
    check(v && strcmp(v->u.str.ptr, "tab\there \xC3\xA9 \xF0\x9F\x98\x80") == 0, t, "escapes");
    const struct toml_kv *kv = &doc->u.table.items[1];
    check(kv->key_len == 3 && memcmp(kv->key, "k\0z", 3) == 0, t, "key with NUL");
    check(kv->value->u.str.len == 3 && memcmp(kv->value->u.str.ptr, "x\0y", 4) == 0, t,
          "value with NUL");
    v = toml_get(doc, "m");
    check(v && strcmp(v->u.str.ptr, "line1line2\nline3") == 0, t, "multi-line: '%s'",
          v ? v->u.str.ptr : "");
    v = toml_get(doc, "l");
    check(v && strcmp(v->u.str.ptr, "C:\\path\\") == 0, t, "literal");
    v = toml_get(doc, "q");
    check(v && strcmp(v->u.str.ptr, "\"quoted\"") == 0, t, "quotes next to delimiters");
    toml_free(doc);
}

static void test_numbers(void)
{
    const char *t = "numbers cover the 64-bit range, all bases, and special floats";
    struct toml_value *doc = parse_ok(t,
        "min = -9223372036854775808\nmax = 9_223_372_036_854_775_807\n"
        "hex = 0xDEAD_beef\noct = 0o755\nbin = 0b1010\n"
        "f = -1_000.5e-3\nni = -inf\nn = nan\nz = -0.0\n");
    if (!doc)
        return;
    check(toml_get(doc, "min")->u.integer == INT64_MIN, t, "min");
    check(toml_get(doc, "max")->u.integer == INT64_MAX, t, "max");
    check(toml_get(doc, "hex")->u.integer == 0xDEADBEEF, t, "hex");
    check(toml_get(doc, "oct")->u.integer == 0755, t, "oct");
    check(toml_get(doc, "bin")->u.integer == 10, t, "bin");
    check(toml_get(doc, "f")->u.fp == -1.0005, t, "float %g", toml_get(doc, "f")->u.fp);
    check(isinf(toml_get(doc, "ni")->u.fp) && toml_get(doc, "ni")->u.fp < 0, t, "-inf");
    check(isnan(toml_get(doc, "n")->u.fp), t, "nan");
    check(signbit(toml_get(doc, "z")->u.fp), t, "-0.0 keeps its sign");
    toml_free(doc);
}

static void expect_datetime(const char *t, const struct toml_value *doc, const char *key,
                            enum toml_type type, const char *want)
{
    const struct toml_value *v = toml_get(doc, key);
    char buf[64] = "";
    if (v)
        toml_datetime_format(v, buf, sizeof buf);
    check(v && v->type == type && strcmp(buf, want) == 0, t, "%s: want %s (%s), got %s (%s)",
          key, want, toml_type_name(type), buf, v ? toml_type_name(v->type) : "absent");
}

static void test_datetimes(void)
{
    const char *t = "date-times parse into fields and format back as RFC 3339";
    struct toml_value *doc = parse_ok(t,
        "odt = 1979-05-27T07:32:00Z\n"
        "odt2 = 1979-05-27 00:32:00.999999-07:30\n"
        "odt3 = 1979-05-27t07:32:00.5+05:45\n"
        "ldt = 1979-05-27T07:32:00\n"
        "ld = 2024-02-29\n"
        "lt = 07:32:00.1234567891\n"
        "leap = 2016-12-31T23:59:60Z\n");
    if (!doc)
        return;
    expect_datetime(t, doc, "odt", TOML_DATETIME, "1979-05-27T07:32:00Z");
    expect_datetime(t, doc, "odt2", TOML_DATETIME, "1979-05-27T00:32:00.999999-07:30");
    expect_datetime(t, doc, "odt3", TOML_DATETIME, "1979-05-27T07:32:00.5+05:45");
    expect_datetime(t, doc, "ldt", TOML_DATETIME_LOCAL, "1979-05-27T07:32:00");
    expect_datetime(t, doc, "ld", TOML_DATE_LOCAL, "2024-02-29");
    expect_datetime(t, doc, "lt", TOML_TIME_LOCAL, "07:32:00.123456789");
    expect_datetime(t, doc, "leap", TOML_DATETIME, "2016-12-31T23:59:60Z");
    const struct toml_value *v = toml_get(doc, "odt2");
    check(v->u.dt.offset_minutes == -450 && !v->u.dt.offset_z && v->u.dt.nanosecond == 999999000
          && v->u.dt.frac_digits == 6, t, "odt2 fields");
    v = toml_get(doc, "lt");
    check(v->u.dt.nanosecond == 123456789, t, "extra digits are truncated, not rounded");
    char small[8];
    int n = toml_datetime_format(toml_get(doc, "odt"), small, sizeof small);
    check(n == 20 && strcmp(small, "1979-05") == 0, t, "returns the full length like snprintf");
    toml_free(doc);
}

static void test_type_names(void)
{
    const char *t = "type names read well in messages";
    check(strcmp(toml_type_name(TOML_BOOL), "boolean") == 0, t, "bool");
    check(strcmp(toml_type_name(TOML_DATETIME), "offset date-time") == 0, t, "datetime");
    check(strcmp(toml_type_name(TOML_TIME_LOCAL), "local time") == 0, t, "time");
}

static void test_tables_and_arrays(void)
{
    const char *t = "tables, dotted keys and arrays of tables build the expected tree";
    struct toml_value *doc = parse_ok(t,
        "[a.b.c]\nx = 1\n[a]\nb.d = 2\n"
        "[[svc]]\nname = \"one\"\n[svc.env]\nK = \"v\"\n[[svc]]\nname = \"two\"\n"
        "[fruit]\napple.color = \"red\"\n[fruit.apple.texture]\nsmooth = true\n");
    if (!doc)
        return;
    const struct toml_value *b = toml_get(toml_get(doc, "a"), "b");
    check(b && toml_get(toml_get(b, "c"), "x") && toml_get(b, "d"), t, "a.b.c.x and a.b.d");
    const struct toml_value *svc = toml_get(doc, "svc");
    check(svc && svc->type == TOML_ARRAY && svc->u.array.len == 2, t, "svc has two elements");
    if (svc && svc->u.array.len == 2) {
        check(toml_get(toml_get(svc->u.array.items[0], "env"), "K") != NULL, t, "svc[0].env");
        check(toml_get(svc->u.array.items[1], "env") == NULL, t, "svc[1] has no env");
    }
    const struct toml_value *apple = toml_get(toml_get(doc, "fruit"), "apple");
    check(toml_get(toml_get(apple, "texture"), "smooth") != NULL, t, "sub-table of dotted");
    toml_free(doc);
}

static void test_error_messages(void)
{
    const char *t = "errors name the file, line and column, what was wrong and what was expected";
    expect_error(t, "services/mcq.toml", "\n\n\n\n\n\n     image \"nginx\"\n",
                 "services/mcq.toml:7:12: expected '=' after key \"image\"");
    expect_error(t, "x.toml", "[server]\nport = 1\n[server]\n",
                 "x.toml:3:1: table [server] is defined twice (first at line 1)");
    expect_error(t, "x.toml", "a = 1\nbig_n = 99999999999999999999\n",
                 "x.toml:2:9: integer 99999999999999999999 does not fit in 64 bits");
    expect_error(t, "x.toml", "name = \"a\"\nname = \"b\"\n",
                 "x.toml:2:1: duplicate key \"name\" (first defined at line 1)");
    expect_error(t, "x.toml", "s = \"a\\qb\"\n",
                 "x.toml:1:7: invalid escape: backslash followed by 'q'; expected one of "
                 "\\b \\t \\n \\f \\r \\\" \\\\ \\uXXXX \\UXXXXXXXX");
    expect_error(t, "x.toml", "s = \"\\uD800\"\n",
                 "x.toml:1:6: escape \\uD800 is a surrogate code point, not a Unicode scalar "
                 "value");
    expect_error(t, "x.toml", "s = \"\\U00110000\"\n",
                 "x.toml:1:6: escape \\U00110000 is beyond U+10FFFF, the last Unicode code "
                 "point");
    expect_error(t, "x.toml", "s = \"open\nt = 1\n",
                 "x.toml:1:5: unterminated string; expected \" before the end of the line "
                 "(multi-line strings use \"\"\")");
    expect_error(t, "x.toml", "a = 1\ns = '''\nnever closed\n",
                 "x.toml:2:5: unterminated multi-line string; expected '''");
    expect_error(t, "x.toml", "s = \"\xC0\xAF\"\n",
                 "x.toml:1:6: invalid UTF-8 at byte 0xC0: an overlong encoding; TOML text "
                 "must be UTF-8");
    expect_error(t, "x.toml", "s = \"\xED\xA0\x80\"\n",
                 "x.toml:1:6: invalid UTF-8 at byte 0xED: an encoded surrogate (U+D800 to "
                 "U+DFFF); TOML text must be UTF-8");
    expect_error(t, "x.toml", "# bell \x07\n",
                 "x.toml:1:8: control character U+0007 is not allowed in a comment");
    expect_error(t, "x.toml", "d = 2023-02-29\n",
                 "x.toml:1:5: invalid date 2023-02-29: day must be 01 to 28 in that month");
    expect_error(t, "x.toml", "t = 24:00:00\n",
                 "x.toml:1:5: invalid time 24:00:00: hour must be 00 to 23");
    expect_error(t, "x.toml", "n = 012\n", "x.toml:1:5: leading zeros are not allowed in 012");
    expect_error(t, "x.toml", "n = 1__0\n",
                 "x.toml:1:6: '_' in a number must be between two digits");
    expect_error(t, "x.toml", "n = -0x1\n", "x.toml:1:5: hexadecimal integers cannot have a sign");
    expect_error(t, "x.toml", "a = {b = 1}\na.c = 2\n",
                 "x.toml:2:1: cannot add keys to \"a\": it is an inline table (defined at line "
                 "1), which cannot be extended");
    expect_error(t, "x.toml", "a = [1]\n[[a]]\n",
                 "x.toml:2:1: cannot add to [[a]]: key \"a\" is already an array (line 1), not "
                 "an array of tables");
    expect_error(t, "x.toml", "[a]\nb.c = 1\n[a.b]\n",
                 "x.toml:3:1: table [a.b] is already defined by dotted keys at line 2");
    expect_error(t, "x.toml", "[a.b]\n[a]\nb.c = 1\n",
                 "x.toml:3:1: cannot add keys to table \"b\" with dotted keys: it was defined "
                 "by a header at line 1; add them under that header");
    expect_error(t, "x.toml", "a = {b = 1,\n c = 2}\n",
                 "x.toml:1:12: an inline table must be on one line; expected a key");
    expect_error(t, "x.toml", "a = {b = 1,}\n",
                 "x.toml:1:12: trailing comma in an inline table; expected a key");
    expect_error(t, "x.toml", "a = [1 2]\n",
                 "x.toml:1:8: unexpected '2'; expected ',' or ']' after an array element");
    expect_error(t, "x.toml", "a = yes\n",
                 "x.toml:1:5: invalid value yes; expected a string (in quotes), number, "
                 "boolean, date-time, array or inline table");
    expect_error(t, "x.toml", "a = 1\rb = 2\n",
                 "x.toml:1:6: carriage return without a line feed");
    expect_error(t, "x.toml", "a = \"é\" x\n",
                 "x.toml:1:9: unexpected 'x'; expected a newline after the value");
    expect_error(t, "x.toml", "ké = 1\n",
                 "x.toml:1:2: unexpected 'é' (U+00E9) in key \"k\"; bare keys may only contain "
                 "A-Z a-z 0-9 _ and -, other keys must be quoted");
    expect_error_n(t, "x.toml", "a = \"x\0\"\n", 8,
                   "x.toml:1:7: control character U+0000 is not allowed in a string; write it "
                   "as \\u0000");
    expect_error(t, NULL, "= 1\n",
                 "<input>:1:1: unexpected '='; expected a key, a [table] header or a comment");
}

static void test_nesting_is_capped(void)
{
    const char *t = "deep nesting is an error, not a stack overflow";
    enum { DEEP = 100000 };
    char *src = malloc(2 * DEEP + 16);
    size_t n = (size_t)sprintf(src, "a = ");
    memset(src + n, '[', DEEP);
    memset(src + n + DEEP, ']', DEEP);
    expect_error_n(t, "deep.toml", src, n + 2 * DEEP,
                   "deep.toml:1:1005: values are nested deeper than 1000 levels");
    for (size_t i = 0; i < DEEP; i++)
        src[i] = i % 2 ? '.' : 'a';
    memcpy(src + DEEP - 1, " = 1", 4);
    expect_error_n(t, "deep.toml", src, DEEP + 3,
                   "deep.toml:1:2001: key has more than 1000 parts");
    free(src);
    struct toml_value *doc = parse_ok(t, "a = [[[[[[[[[[1]]]]]]]]]]\n");
    toml_free(doc);
}

static void test_free_accepts_null(void)
{
    toml_free(NULL);
    check(1, "toml_free(NULL) does nothing", "");
}

int main(void)
{
    test_get_finds_values_by_key();
    test_large_tables_keep_source_order();
    test_positions();
    test_strings();
    test_numbers();
    test_datetimes();
    test_type_names();
    test_tables_and_arrays();
    test_error_messages();
    test_nesting_is_capped();
    test_free_accepts_null();
    printf("toml-unit: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
