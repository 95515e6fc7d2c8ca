/* util.h: small parsers and string helpers shared by the core. */
#ifndef MCP_UTIL_H
#define MCP_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* "500ms", "2s", "1m30s", "1h", "1.5s", "10" (seconds) -> seconds.
 * Returns 0, or -1 when s is not a duration. */
int util_parse_duration(const char *s, double *out);
/* "64MiB", "1GiB", "512KiB", "1000", "2MB" -> bytes. Returns 0 or -1. */
int util_parse_size(const char *s, uint64_t *out);
/* Reads a whole file into a NUL-terminated buffer the caller frees.
 * Returns NULL with errno set. */
char *util_read_file(const char *path, size_t *len);
/* Copies src into a freshly allocated string; aborts on OOM. */
char *util_strdup(const char *src);
/* Milliseconds of wall clock since the epoch. */
uint64_t util_now_ms(void);

#endif
