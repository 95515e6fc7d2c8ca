/* util.c: durations, sizes, files. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "util.h"

int util_parse_duration(const char *s, double *out)
{
    static const struct { const char *unit; double scale; } units[] = {
        { "ms", 1e-3 }, { "us", 1e-6 }, { "ns", 1e-9 },
        { "s", 1 }, { "m", 60 }, { "h", 3600 }, { "d", 86400 },
    };
    double total = 0;
    const char *p = s;
    if (!*p)
        return -1;
    while (*p) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || errno || v < 0 || *p == '+' || *p == '-' || *p == ' ')
            return -1;
        p = end;
        if (!*p) {
            if (p != s + strlen(s) || total != 0)
                return -1;          /* "1m30" is ambiguous: refuse */
            total = v;
            break;
        }
        size_t i;
        for (i = 0; i < sizeof units / sizeof units[0]; i++) {
            size_t n = strlen(units[i].unit);
            if (strncmp(p, units[i].unit, n) == 0) {
                total += v * units[i].scale;
                p += n;
                break;
            }
        }
        if (i == sizeof units / sizeof units[0])
            return -1;
    }
    *out = total;
    return 0;
}

int util_parse_size(const char *s, uint64_t *out)
{
    static const struct { const char *unit; uint64_t scale; } units[] = {
        { "KiB", 1ull << 10 }, { "MiB", 1ull << 20 }, { "GiB", 1ull << 30 },
        { "KB", 1000 }, { "MB", 1000000 }, { "GB", 1000000000 },
        { "K", 1ull << 10 }, { "M", 1ull << 20 }, { "G", 1ull << 30 }, { "B", 1 },
    };
    char *end;
    errno = 0;
    if (!*s || *s == '-' || *s == ' ')
        return -1;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0)
        return -1;
    uint64_t scale = 1;
    if (*end) {
        size_t i;
        for (i = 0; i < sizeof units / sizeof units[0]; i++)
            if (strcmp(end, units[i].unit) == 0)
                break;
        if (i == sizeof units / sizeof units[0])
            return -1;
        scale = units[i].scale;
    }
    if (v * (double)scale > 1.8e19)
        return -1;
    *out = (uint64_t)(v * (double)scale);
    return 0;
}

char *util_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 8192, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf)
            break;
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (n < cap - 1) {
            if (ferror(f)) {
                int e = errno;
                free(buf);
                fclose(f);
                errno = e;
                return NULL;
            }
            break;
        }
        cap *= 2;
        char *nb = realloc(buf, cap);
        if (!nb)
            free(buf);
        buf = nb;
    }
    fclose(f);
    if (!buf) {
        errno = ENOMEM;
        return NULL;
    }
    buf[n] = 0;
    if (len)
        *len = n;
    return buf;
}

char *util_strdup(const char *src)
{
    char *s = strdup(src ? src : "");
    if (!s)
        abort();
    return s;
}

uint64_t util_now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}
