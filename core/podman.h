/* podman.h: the libpod REST API over Podman's unix socket, without blocking.
 *
 * A call is one HTTP exchange with Podman (/v4.0.0/libpod/...), through the
 * agent's curl multi. Its body is kept whole, or split as it streams: into
 * lines (events, pull progress) or into the multiplexed frames of logs and
 * exec. The events hub keeps ONE streaming /events request open while there
 * are subscribers, reconnecting with backoff, and fans events out to them.
 * core/l_podman.c is the Lua face. */
#ifndef MCP_PODMAN_H
#define MCP_PODMAN_H

#include <stddef.h>
#include <jansson.h>
#include <uv.h>

struct agent;
struct curlm;
struct podman;
struct podman_call;
struct podman_sub;

#define PODMAN_API_PREFIX "/v4.0.0/libpod"

enum podman_mode {
    PODMAN_BODY,                /* keep the body for on_done */
    PODMAN_LINES,               /* on_line per line as they arrive */
    PODMAN_FRAMES,              /* on_frame per payload piece as it arrives */
};

struct podman_reply {
    long status;                /* HTTP status; 0 when Podman never answered */
    const char *body;           /* PODMAN_BODY, or the error body of a stream */
    size_t len;
    /* NULL on success (any status below 400); otherwise what went wrong:
     * Podman's own message for a status >= 400, or the transport failure
     * ("cannot connect to Podman at PATH: ...", "timed out after 5 s",
     * "connection to Podman lost: ..."). */
    const char *error;
    double seconds;
};

struct podman_handlers {
    /* The response headers are in (status >= 200). May be NULL. */
    void (*on_headers)(void *ud, long status);
    /* PODMAN_LINES: one line without "\n". Non-zero ends the call. */
    int (*on_line)(void *ud, const char *line, size_t len);
    /* PODMAN_FRAMES: a piece of a frame's payload. Non-zero ends the call. */
    int (*on_frame)(void *ud, int stream, const char *data, size_t len);
    /* Once, at the end (unless cancelled). */
    void (*on_done)(void *ud, const struct podman_reply *r);
};

/* A client of the socket at socket_path; timeout (seconds) is the default
 * deadline of a call. Returns NULL when out of memory. */
struct podman *podman_new(struct curlm *m, uv_loop_t *loop, const char *socket_path,
                          double timeout);
/* Points the client at another socket; calls in flight are unaffected. */
int podman_set(struct podman *p, const char *socket_path, double timeout);
/* Cancels the events stream, tells subscribers (PODMAN_EV_CLOSED), frees p
 * once its timer is closed. Calls still in flight must be cancelled first
 * (or ended by curlm_free). */
void podman_free(struct podman *p);
/* The agent's client, made from its config on first use; NULL when there is
 * no config and mcp.podman.connect() was not called. */
struct podman *podman_of(struct agent *a);

/* The client as a subsystem of the server: made from [podman] at start;
 * closed after curlm_agent_close() (which ended its calls). */
int podman_agent_open(struct agent *a);
void podman_agent_close(struct agent *a);

const char *podman_socket(struct podman *p);
double podman_timeout(struct podman *p);
struct curlm *podman_curlm(struct podman *p);

/* Starts METHOD PODMAN_API_PREFIX PATH (path and query already escaped) with
 * body (JSON, may be NULL), a deadline of timeout seconds (0: none). Never
 * calls a handler before returning. Returns NULL when curl refused it. */
struct podman_call *podman_call(struct podman *p, const char *method, const char *path,
                                const char *body, double timeout, enum podman_mode mode,
                                const struct podman_handlers *h, void *ud);
/* No handler runs after this. Safe from inside the call's own handlers. */
void podman_call_cancel(struct podman_call *c);
/* Flow control of a stream: while held, Podman's bytes stay unread. */
void podman_call_hold(struct podman_call *c, int hold);

/* A path segment (name, id, image reference), percent-encoded; the caller
 * frees it with curl_free(). NULL when out of memory. */
char *podman_escape(const char *s);

/* --- events --- */

enum podman_ev {
    PODMAN_EV_EVENT,            /* ev: the event (borrowed) */
    PODMAN_EV_CONNECTED,        /* the stream is up; first news for a new subscriber */
    PODMAN_EV_FAILED,           /* the first attempt failed; err says why; retrying */
    PODMAN_EV_RECONNECTED,      /* the stream broke and is back: events may be lost */
    PODMAN_EV_CLOSED,           /* the client is going away; the sub is freed after */
};

typedef void (*podman_event_fn)(void *ud, enum podman_ev kind, json_t *ev, const char *err);

enum podman_ev_state {
    PODMAN_EVS_CONNECTING,      /* an attempt is in flight: CONNECTED or FAILED follows */
    PODMAN_EVS_UP,              /* the stream is up: events follow */
    PODMAN_EVS_DOWN,            /* waiting out a backoff: RECONNECTED once it is back */
};

/* Adds a subscriber, starting the stream if it is the first; *state says
 * what the subscriber hears first. NULL when out of memory. */
struct podman_sub *podman_events_subscribe(struct podman *p, podman_event_fn fn, void *ud,
                                           enum podman_ev_state *state);
/* Removes a subscriber; the last one ends the stream. Safe inside fn. */
void podman_events_unsubscribe(struct podman_sub *s);

struct podman_events_stats {
    int subscribers, connected;
    unsigned long long connects, events, bad_lines;
};
void podman_events_stats(struct podman *p, struct podman_events_stats *st);

#endif
