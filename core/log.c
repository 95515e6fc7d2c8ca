/* log.c: levelled log lines on stderr, journal-aware.
 *
 * The level and the output form are process-wide settings made once at
 * start, so they live here rather than in struct agent: every file logs, and
 * threading the agent through each call site would buy nothing. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "log.h"

static struct {
    enum log_level level;
    int journal;
    int setup;
} logger = { LOG_INFO, 0, 0 };

static const char *const level_names[] = { "debug", "info", "warn", "error" };
static const int level_prio[] = { 7, 6, 4, 3 };

void log_setup(enum log_level level)
{
    logger.level = level;
    logger.journal = getenv("JOURNAL_STREAM") != NULL;
    logger.setup = 1;
}

enum log_level log_get_level(void)
{
    return logger.level;
}

int log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    if (strcmp(name, "warning") == 0)
        return LOG_WARN;
    return -1;
}

const char *log_level_name(enum log_level level)
{
    return level_names[level];
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level < logger.level)
        return;
    if (!logger.setup)
        log_setup(logger.level);

    char line[8192];
    size_t n = 0;
    if (logger.journal) {
        n = (size_t)snprintf(line, sizeof line, "<%d>", level_prio[level]);
    } else {
        struct timeval tv;
        struct tm tm;
        gettimeofday(&tv, NULL);
        gmtime_r(&tv.tv_sec, &tm);
        n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
        n += (size_t)snprintf(line + n, sizeof line - n, ".%03dZ %-5s ",
                              (int)(tv.tv_usec / 1000), level_names[level]);
    }
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += (size_t)m;
    if (n > sizeof line - 2)
        n = sizeof line - 2;
    /* One write per line so that lines from a crash-looping agent never interleave. */
    line[n++] = '\n';
    fwrite(line, 1, n, stderr);
    fflush(stderr);
}
