/* podman_fuzz.c: libFuzzer harness for the parsers of Podman's streams
 * (core/podman_parse.c): the logs/exec frame decoder, the JSON-lines
 * splitter of the events stream, the event parser and the event filter.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined core/podman_parse.c \
 *       fuzz/podman_fuzz.c $(pkg-config --cflags --libs jansson) -o build/podman_fuzz
 *   build/podman_fuzz -max_total_time=180 fuzz/corpus/podman
 *
 * Beyond "does not crash", it checks what the client relies on: the bytes
 * arrive in chunks of any size, so decoding the input whole and decoding it
 * cut at places chosen by its first byte must give the same frames, the same
 * lines, and the same verdict on a bad header. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/podman_parse.h"

/* What a decoding produced, as one byte string: enough to compare runs. */
struct sink {
    unsigned char *buf;
    size_t len, cap;
};

static void sink_put(struct sink *s, const void *data, size_t len)
{
    if (s->len + len > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        while (cap < s->len + len)
            cap *= 2;
        unsigned char *b = realloc(s->buf, cap);
        if (!b)
            abort();
        s->buf = b;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, len);
    s->len += len;
}

/* Frame payload pieces: consecutive pieces of one stream are merged, since
 * where a piece ends depends on the chunking; a stream switch is marked. */
struct frame_sink {
    struct sink out;
    int last_stream;
};

static int on_frame(void *ud, int stream, const char *data, size_t len)
{
    struct frame_sink *fs = ud;
    if (stream < 0 || stream > 3)
        abort();
    if (len == 0)
        return 0;
    if (stream != fs->last_stream) {
        unsigned char mark[2] = { 0xff, (unsigned char)stream };
        sink_put(&fs->out, mark, 2);
        fs->last_stream = stream;
    }
    sink_put(&fs->out, data, len);
    return 0;
}

static int on_line(void *ud, const char *line, size_t len)
{
    struct sink *s = ud;
    uint32_t n = (uint32_t)len;
    sink_put(s, &n, sizeof n);
    sink_put(s, line, len);
    return 0;
}

/* The cut points: a small generator seeded by the input's first byte. */
static size_t next_cut(uint32_t *state, size_t left)
{
    *state = *state * 1103515245u + 12345u;
    size_t n = 1 + (*state >> 16) % 37;
    return n < left ? n : left;
}

static int decode_frames(const char *data, size_t len, uint32_t seed, struct frame_sink *fs,
                         int *partial)
{
    struct pp_frames f;
    pp_frames_init(&f);
    fs->last_stream = -1;
    int rc = 0;
    size_t pos = 0;
    while (pos < len && rc == 0) {
        size_t n = seed ? next_cut(&seed, len - pos) : len - pos;
        rc = pp_frames_feed(&f, data + pos, n, on_frame, fs);
        pos += n;
    }
    *partial = rc == 0 && pp_frames_partial(&f);
    return rc;
}

static void split_lines(const char *data, size_t len, uint32_t seed, size_t max,
                        struct sink *out)
{
    struct pp_lines s;
    pp_lines_init(&s, max);
    size_t pos = 0;
    while (pos < len) {
        size_t n = seed ? next_cut(&seed, len - pos) : len - pos;
        if (pp_lines_feed(&s, data + pos, n, on_line, out) != 0)
            abort();
        pos += n;
    }
    if (pp_lines_flush(&s, on_line, out) != 0)
        abort();
    pp_lines_free(&s);
}

static int on_event_line(void *ud, const char *line, size_t len)
{
    const struct pp_filter *filters = ud;
    char err[200];
    json_t *ev = pp_event_parse(line, len, err, sizeof err);
    if (!ev) {
        if (!err[0])
            abort();
        return 0;
    }
    if (!json_is_object(ev))
        abort();
    for (int i = 0; i < 3; i++)
        pp_event_match(ev, &filters[i]);
    json_decref(ev);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
    if (size < 1)
        return 0;
    uint32_t seed = in[0] | 1u;
    const char *data = (const char *)in + 1;
    size_t len = size - 1;

    /* frames: whole and cut must agree */
    struct frame_sink a = { { 0 }, -1 }, b = { { 0 }, -1 };
    int pa, pb;
    int ra = decode_frames(data, len, 0, &a, &pa);
    int rb = decode_frames(data, len, seed, &b, &pb);
    if (ra != rb || pa != pb || a.out.len != b.out.len ||
        (a.out.len && memcmp(a.out.buf, b.out.buf, a.out.len) != 0))
        abort();
    free(a.out.buf);
    free(b.out.buf);

    /* lines: whole and cut must agree, with a roomy and a tiny maximum */
    size_t maxes[2] = { (size_t)1 << 20, 1 + (size_t)(in[0] % 16) };
    for (int m = 0; m < 2; m++) {
        struct sink x = { 0 }, y = { 0 };
        split_lines(data, len, 0, maxes[m], &x);
        split_lines(data, len, seed, maxes[m], &y);
        if (x.len != y.len || (x.len && memcmp(x.buf, y.buf, x.len) != 0))
            abort();
        free(x.buf);
        free(y.buf);
    }

    /* events: every line parsed and filtered */
    struct pp_filter filters[3];
    memset(filters, 0, sizeof filters);
    pp_filter_add(&filters[0], PP_F_TYPE, "container");
    pp_filter_add(&filters[0], PP_F_EVENT, "die");
    pp_filter_add(&filters[1], PP_F_CONTAINER, "0123456789ab");
    pp_filter_add(&filters[1], PP_F_IMAGE, "localhost/mcp-test:1.0");
    pp_filter_add(&filters[2], PP_F_LABEL, "mcp.service=web");
    pp_filter_add(&filters[2], PP_F_LABEL, "mcp.managed");
    struct pp_lines s;
    pp_lines_init(&s, 1 << 16);
    pp_lines_feed(&s, data, len, on_event_line, filters);
    pp_lines_flush(&s, on_event_line, filters);
    pp_lines_free(&s);
    for (int i = 0; i < 3; i++)
        pp_filter_free(&filters[i]);
    return 0;
}
