/* toml_bench.c: times toml_parse on one file.
 *
 *   toml_bench FILE [RUNS]
 *
 * Reads FILE once, then parses it RUNS times (default 10), timing each
 * parse (the tree is freed outside the timed part, as a garbage-collected
 * parser's is), and prints one JSON object with the median, min and max in
 * milliseconds. bench/toml/run.sh drives it. */
#define _POSIX_C_SOURCE 200809L
#include "../../core/toml.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Reads path whole; returns a malloc'd buffer the caller frees, or NULL. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
            *len = fread(buf, 1, (size_t)n, f);
            if (*len != (size_t)n) {
                free(buf);
                buf = NULL;
            }
        }
    }
    fclose(f);
    return buf;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: toml_bench FILE [RUNS]\n");
        return 2;
    }
    int runs = argc > 2 ? atoi(argv[2]) : 10;
    if (runs < 1)
        runs = 1;
    size_t len;
    char *src = read_file(argv[1], &len);
    if (!src) {
        fprintf(stderr, "toml_bench: cannot read %s\n", argv[1]);
        return 1;
    }
    double *ms = malloc(sizeof *ms * (size_t)runs);
    char err[512];
    for (int i = 0; i < runs; i++) {
        double t0 = now_ms();
        struct toml_value *doc = toml_parse(src, len, argv[1], err, sizeof err);
        ms[i] = now_ms() - t0;
        if (!doc) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        toml_free(doc);
    }
    qsort(ms, (size_t)runs, sizeof *ms, cmp_double);
    double median = runs % 2 ? ms[runs / 2] : (ms[runs / 2 - 1] + ms[runs / 2]) / 2;
    printf("{\"bytes\": %zu, \"runs\": %d, \"median_ms\": %.2f, \"min_ms\": %.2f, "
           "\"max_ms\": %.2f}\n", len, runs, median, ms[0], ms[runs - 1]);
    free(ms);
    free(src);
    return 0;
}
