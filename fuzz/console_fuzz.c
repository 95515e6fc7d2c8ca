/* console_fuzz.c: libFuzzer harness for console input: the bytes a client
 * sends to the agent's console socket.
 *
 * First the frame parser (console_frame_parse, core/console.c), as the
 * session's read callback drives it: the bytes arrive in chunks of any
 * size, so parsing them whole and cut at places chosen by the input's first
 * byte must give the same frames and the same verdict; a frame encoded by
 * console_frame_encode parses back to itself. Then what the agent does with
 * the frames (fuzz/lua/console.lua): EVAL runs mcp.console.eval with the
 * task limits, in an environment with no way out of the process (fuzzed
 * code must not reach os or io), COMPLETE runs mcp.console.complete.
 *
 *   sh fuzz/run.sh 60 console          (builds build/fuzz/console_fuzz)
 *   build/fuzz/console_fuzz -max_total_time=180 fuzz/corpus/console */
#include "fuzz_lua.h"
#include "../core/console.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct fuzz_lua *f;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* A small budget: fuzzed code loops often, and each loop runs to it. */
    f = fuzz_lua_init("console", "[lua]\ntask_instructions = 300000\ntask_timeout = \"2s\"\n"
                                 "task_memory = \"32MiB\"", NULL);
    return 0;
}

#define MAX_FRAMES 64

struct frames {
    int n;
    int type[MAX_FRAMES];
    const char *data[MAX_FRAMES];
    size_t len[MAX_FRAMES];
    int verdict;                /* 0: ended cleanly or waiting; -1: protocol error */
    size_t used;                /* bytes taken by complete frames */
};

/* Parses like on_read: a buffer that grows by chunks, frames taken from its
 * head after each chunk, stopping at the first protocol error. */
static void parse(const char *in, size_t len, size_t max, uint32_t seed, struct frames *fr)
{
    memset(fr, 0, sizeof *fr);
    size_t have = 0, off = 0;
    while (have < len) {
        size_t n = len - have;
        if (seed) {
            seed = seed * 1103515245u + 12345u;
            size_t cut = 1 + (seed >> 16) % 23;
            if (cut < n)
                n = cut;
        }
        have += n;
        for (;;) {
            int type;
            const char *data = NULL, *err = NULL;
            size_t dlen = 0;
            long used = console_frame_parse(in + off, have - off, max, &type, &data, &dlen, &err);
            if (used == 0)
                break;
            if (used < 0) {
                if (!err || !*err)
                    abort();
                fr->verdict = -1;
                fr->used = off;
                return;
            }
            if ((size_t)used > have - off || data < in + off || data + dlen > in + off + used)
                abort();
            if (fr->n < MAX_FRAMES) {
                fr->type[fr->n] = type;
                fr->data[fr->n] = data;
                fr->len[fr->n] = dlen;
            }
            fr->n++;
            off += (size_t)used;
        }
    }
    fr->used = off;
}

static int push_frames(lua_State *L, void *ud)
{
    struct frames *fr = ud;
    int n = fr->n < MAX_FRAMES ? fr->n : MAX_FRAMES;
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_createtable(L, 2, 0);
        char t = (char)fr->type[i];
        lua_pushlstring(L, &t, 1);
        lua_rawseti(L, -2, 1);
        lua_pushlstring(L, fr->data[i], fr->len[i]);
        lua_rawseti(L, -2, 2);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint32_t seed = data[0] | 1u;
    /* A small maximum now and then, so "frame too large" is reached. */
    size_t max = (data[1] & 1) ? CONSOLE_MAX_REQUEST : (size_t)(data[1] >> 1) * 4;
    const char *in = (const char *)data + 2;
    size_t len = size - 2;

    struct frames whole, cut;
    parse(in, len, max, 0, &whole);
    parse(in, len, max, seed, &cut);
    if (whole.n != cut.n || whole.verdict != cut.verdict || whole.used != cut.used)
        abort();
    int n = whole.n < MAX_FRAMES ? whole.n : MAX_FRAMES;
    for (int i = 0; i < n; i++) {
        if (whole.type[i] != cut.type[i] || whole.len[i] != cut.len[i] ||
            whole.data[i] != cut.data[i])
            abort();
        /* Encoding gives the frame back. */
        size_t elen;
        char *enc = console_frame_encode(whole.type[i], whole.data[i], whole.len[i], &elen);
        if (!enc)
            abort();
        int type;
        const char *d, *err = NULL;
        size_t dlen;
        long used = console_frame_parse(enc, elen, CONSOLE_MAX_REQUEST, &type, &d, &dlen, &err);
        if (used != (long)elen || type != whole.type[i] || dlen != whole.len[i] ||
            memcmp(d, whole.data[i], dlen) != 0)
            abort();
        free(enc);
    }
    if (n > 0)
        fuzz_lua_call(f, push_frames, &whole);
    return 0;
}
