/* podman_parse.h: the pure parsers of Podman's streams, apart from any I/O so
 * that the fuzzer (fuzz/podman_fuzz.c) and the unit specs link just them.
 *
 * - a line splitter for JSON-lines streams (events, pull progress) and for
 *   logs, fed in chunks of any size;
 * - the decoder of the multiplexed frames of logs, attach and exec: an 8-byte
 *   header (byte 0 the stream, bytes 4-7 the big-endian payload length), then
 *   the payload, delivered in pieces as it arrives;
 * - the parser of one event line and the client-side event filter. */
#ifndef MCP_PODMAN_PARSE_H
#define MCP_PODMAN_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

/* Return codes of the feeders besides 0 and a callback's own non-zero. */
#define PP_ENOMEM (-1)
#define PP_EFRAME (-2)          /* a frame header that no Podman writes */

/* Called with one line, without its "\n" (nor a "\r" before it). */
typedef int (*pp_line_fn)(void *ud, const char *line, size_t len);

struct pp_lines {
    char *buf;                  /* the line begun in an earlier chunk */
    size_t len, cap;
    size_t max;                 /* a longer line is cut into pieces of max bytes */
};

void pp_lines_init(struct pp_lines *s, size_t max);
/* Splits data into lines, calling fn for each complete one; keeps the
 * unterminated rest for the next call. Returns 0, PP_ENOMEM, or the first
 * non-zero value fn returned (the remaining lines of data are dropped). */
int pp_lines_feed(struct pp_lines *s, const char *data, size_t len, pp_line_fn fn, void *ud);
/* Delivers the unterminated rest, if any, as a last line. */
int pp_lines_flush(struct pp_lines *s, pp_line_fn fn, void *ud);
void pp_lines_free(struct pp_lines *s);

enum pp_stream { PP_STDIN = 0, PP_STDOUT = 1, PP_STDERR = 2, PP_SYSTEM = 3 };
const char *pp_stream_name(int stream);

/* Called with a piece of a frame's payload (frames may arrive in pieces). */
typedef int (*pp_frame_fn)(void *ud, int stream, const char *data, size_t len);

struct pp_frames {
    unsigned char hdr[8];
    size_t hdr_len;             /* header bytes seen of the current frame */
    int stream;
    uint32_t remaining;         /* payload bytes still to come */
    uint64_t frames;            /* frames begun, for tests */
};

void pp_frames_init(struct pp_frames *f);
/* Returns 0, PP_EFRAME on a bad header (the decoder then stays failed), or
 * the first non-zero value fn returned. */
int pp_frames_feed(struct pp_frames *f, const char *data, size_t len, pp_frame_fn fn,
                   void *ud);
/* Non-zero when the input ended inside a frame (a cut stream). */
int pp_frames_partial(const struct pp_frames *f);

/* Parses one event line into a new JSON object the caller owns, or NULL
 * with err filled (bad JSON, or not an object). */
json_t *pp_event_parse(const char *line, size_t len, char *err, size_t err_len);

/* A subscriber's filter, with Podman's semantics: several values of one key
 * match any of them, several keys must all match. */
enum pp_filter_key { PP_F_TYPE, PP_F_EVENT, PP_F_CONTAINER, PP_F_IMAGE, PP_F_LABEL, PP_F_N };
extern const char *const pp_filter_keys[PP_F_N + 1];

struct pp_filter {
    char **vals[PP_F_N];
    size_t n[PP_F_N];
};

/* Adds a value (copied) under key. Returns 0 or PP_ENOMEM. */
int pp_filter_add(struct pp_filter *f, enum pp_filter_key key, const char *val);
void pp_filter_free(struct pp_filter *f);
/* Does the event match? An empty filter matches everything. */
int pp_event_match(json_t *ev, const struct pp_filter *f);

#endif
