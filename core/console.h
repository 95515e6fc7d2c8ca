/* console.h: `mcp-agent console`, a Lua prompt inside the running agent.
 *
 * The server side (console.c) listens on the unix socket of [console] socket,
 * admits only the agent's own uid and root (SO_PEERCRED), and runs each line
 * a client sends as a task through lua/mcp/console.lua. The client side
 * (console_client.c) is the line editor. Both speak the framed protocol
 * below, documented for people in docs/console.md.
 *
 * A frame is a header line "T LEN\n" (one type letter, a space, the payload's
 * length in decimal), then LEN bytes of payload, then "\n". The trailing
 * newline makes a session readable with socat; the length makes any payload
 * (newlines, NUL bytes) safe. */
#ifndef MCP_CONSOLE_H
#define MCP_CONSOLE_H

#include <stddef.h>

struct agent;

enum console_frame_type {
    /* client -> agent */
    CONSOLE_EVAL = 'E',         /* a chunk of Lua: one line or accumulated lines */
    CONSOLE_COMPLETE = 'C',     /* the name before the cursor, e.g. "mcp.pod" */
    CONSOLE_INTERRUPT = 'I',    /* abort the evaluation in flight (empty payload) */
    /* agent -> client */
    CONSOLE_HELLO = 'H',        /* first frame: "mcp-agent VERSION on NODE" */
    CONSOLE_OUTPUT = 'O',       /* print() output of the evaluation in flight */
    CONSOLE_RESULT = 'R',       /* ends an evaluation: its values, pretty-printed */
    CONSOLE_ERROR = 'X',        /* ends an evaluation with an error; or a refusal */
    CONSOLE_MORE = 'M',         /* ends an evaluation: the chunk is incomplete */
    CONSOLE_COMPLETIONS = 'L',  /* answers COMPLETE: candidates, one per line */
};

/* Largest payload a client may send (a chunk typed at the prompt). */
#define CONSOLE_MAX_REQUEST (1u << 20)
/* Largest payload the agent sends; longer results are cut with a note. */
#define CONSOLE_MAX_REPLY (16u << 20)

/* Encodes one frame. Returns a buffer the caller frees, its length in *out_len;
 * NULL when out of memory. */
char *console_frame_encode(int type, const char *data, size_t len, size_t *out_len);

/* Parses the frame at the start of buf[0..len). Returns the bytes it takes
 * (> 0) with *type, and *data and *dlen pointing into buf; 0 when more bytes are
 * needed; -1 when the bytes are not a frame or the payload exceeds max, with
 * *err saying why (a static string). */
long console_frame_parse(const char *buf, size_t len, size_t max, int *type,
                         const char **data, size_t *dlen, const char **err);

/* Opens the console socket of a->config ([console] socket; an empty path
 * disables the console). Returns 0, or -1 with the reason logged. */
int console_open(struct agent *a);
/* On stop: closes the socket, ends evaluations in flight ("agent stopping")
 * and says goodbye to the clients. */
void console_stop(struct agent *a);
/* Closes every handle and lets go of the Lua state; must run before the
 * runtime closes. a->console is NULL afterwards. */
void console_close(struct agent *a);

#endif
