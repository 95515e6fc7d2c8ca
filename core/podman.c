/* podman.c: calls to the libpod API and the one events stream.
 *
 * A call owns one curl request. Its bytes are kept raw by curl's write
 * callback and decoded (lines, frames) when curlm wakes the call from the
 * loop, so that handlers may resume tasks, which may cancel this very call:
 * a call cancelled while it delivers is only marked, and freed when the
 * delivery unwinds. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "curlm.h"
#include "log.h"
#include "podman.h"
#include "podman_parse.h"

#define STREAM_LINE_MAX ((size_t)4 << 20)
#define ERROR_BODY_MAX ((size_t)64 << 10)
#define BACKOFF_FIRST 0.2
#define BACKOFF_MAX 5.0

struct podman_sub {
    struct podman *p;
    podman_event_fn fn;
    void *ud;
    int primed;                 /* has had its first news (connected or failed) */
    struct podman_sub *next, *prev;
};

struct podman {
    struct curlm *m;
    uv_loop_t *loop;
    char *socket;
    double timeout;

    struct podman_sub *subs, *iter_next;
    int nsubs;
    struct podman_call *ev_call;
    int ev_connected;
    uv_timer_t *ev_timer;       /* reconnect backoff; freed on close */
    int ev_waiting;             /* the timer is armed */
    double ev_backoff;
    unsigned long long ev_connects, ev_events, ev_bad;
};

struct podman_call {
    struct podman *p;
    struct curlm_req *req;
    enum podman_mode mode;
    struct podman_handlers h;
    void *ud;
    double timeout;
    char *raw;                  /* bytes kept by curl's callback, not yet decoded */
    size_t raw_len, raw_cap;
    char *body;                 /* the body (PODMAN_BODY), or an error answer's */
    size_t body_len, body_cap;
    struct pp_lines lines;
    struct pp_frames frames;
    long status;
    int headers_told;
    int held;
    int depth;                  /* handlers running now */
    int dead;                   /* cancelled or finished: no more handlers */
    int failed;                 /* a handler or the decoder ended it */
    char fail_msg[160];
};

char *podman_escape(const char *s)
{
    return curl_easy_escape(NULL, s, 0);
}

struct podman *podman_new(struct curlm *m, uv_loop_t *loop, const char *socket_path,
                          double timeout)
{
    struct podman *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->m = m;
    p->loop = loop;
    p->ev_backoff = BACKOFF_FIRST;
    p->ev_timer = malloc(sizeof *p->ev_timer);
    if (!p->ev_timer || podman_set(p, socket_path, timeout) != 0) {
        free(p->ev_timer);
        free(p);
        return NULL;
    }
    uv_timer_init(loop, p->ev_timer);
    p->ev_timer->data = p;
    return p;
}

int podman_set(struct podman *p, const char *socket_path, double timeout)
{
    char *s = strdup(socket_path);
    if (!s)
        return -1;
    free(p->socket);
    p->socket = s;
    p->timeout = timeout;
    return 0;
}

struct podman *podman_of(struct agent *a)
{
    if (!a->podman && a->config && a->config->podman_socket) {
        struct curlm *m = curlm_of(a);
        if (m)
            a->podman = podman_new(m, a->loop, a->config->podman_socket,
                                   a->config->podman_timeout);
    }
    return a->podman;
}

int podman_agent_open(struct agent *a)
{
    if (podman_of(a) || !a->config)
        return 0;
    log_error("podman: cannot set up the client of %s", a->config->podman_socket);
    return -1;
}

void podman_agent_close(struct agent *a)
{
    podman_free(a->podman);
    a->podman = NULL;
}

const char *podman_socket(struct podman *p) { return p->socket; }
double podman_timeout(struct podman *p) { return p->timeout; }
struct curlm *podman_curlm(struct podman *p) { return p->m; }

static void call_free(struct podman_call *c)
{
    free(c->raw);
    free(c->body);
    pp_lines_free(&c->lines);
    free(c);
}

static int grow_append(char **buf, size_t *len, size_t *cap, const char *data, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 1024;
        while (nc < *len + n + 1)
            nc *= 2;
        char *b = realloc(*buf, nc);
        if (!b)
            return -1;
        *buf = b;
        *cap = nc;
    }
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

/* Inside curl: keep the bytes. An error answer's body is kept apart, whatever
 * the mode, for its message. */
static int call_data(void *ud, const char *data, size_t len)
{
    struct podman_call *c = ud;
    if (c->status == 0) {
        long st = 0;
        curlm_headers_done(c->req, &st);
        c->status = st;
    }
    if (c->status >= 400 || c->mode == PODMAN_BODY) {
        size_t max = c->mode == PODMAN_BODY ? (size_t)256 << 20 : ERROR_BODY_MAX;
        if (c->body_len + len > max)
            return c->status >= 400 ? CURLM_DATA_OK : CURLM_DATA_ABORT;
        return grow_append(&c->body, &c->body_len, &c->body_cap, data, len) ? CURLM_DATA_ABORT
                                                                              : CURLM_DATA_OK;
    }
    if (c->held)
        return CURLM_DATA_PAUSE;
    return grow_append(&c->raw, &c->raw_len, &c->raw_cap, data, len) ? CURLM_DATA_ABORT
                                                                    : CURLM_DATA_OK;
}

static int deliver_line(void *ud, const char *line, size_t len)
{
    struct podman_call *c = ud;
    if (c->dead)
        return 1;
    int rc = c->h.on_line(c->ud, line, len);
    if (rc && !c->dead) {
        c->failed = 1;
    }
    return c->dead ? 1 : rc;
}

static int deliver_frame(void *ud, int stream, const char *data, size_t len)
{
    struct podman_call *c = ud;
    if (c->dead)
        return 1;
    int rc = c->h.on_frame(c->ud, stream, data, len);
    if (rc && !c->dead)
        c->failed = 1;
    return c->dead ? 1 : rc;
}

/* Decodes what curl kept and hands it to the handlers. Returns non-zero
 * when the call must end (cancelled, a handler said stop, bad frames). */
static int call_deliver(struct podman_call *c)
{
    if (!c->headers_told && !c->dead && c->req) {
        long st;
        if (curlm_headers_done(c->req, &st)) {
            c->headers_told = 1;
            c->status = st;
            if (c->h.on_headers)
                c->h.on_headers(c->ud, st);
        }
    }
    if (c->dead || c->failed || c->raw_len == 0)
        return c->dead || c->failed;
    /* Take the buffer: a handler may lead to more bytes being appended. */
    char *raw = c->raw;
    size_t n = c->raw_len;
    c->raw = NULL;
    c->raw_len = c->raw_cap = 0;
    int rc = 0;
    if (c->mode == PODMAN_LINES && c->h.on_line) {
        rc = pp_lines_feed(&c->lines, raw, n, deliver_line, c);
        if (rc == PP_ENOMEM) {
            c->failed = 1;
            snprintf(c->fail_msg, sizeof c->fail_msg, "out of memory");
        }
    } else if (c->mode == PODMAN_FRAMES && c->h.on_frame) {
        rc = pp_frames_feed(&c->frames, raw, n, deliver_frame, c);
        if (rc == PP_EFRAME) {
            c->failed = 1;
            snprintf(c->fail_msg, sizeof c->fail_msg, "bad frame header in Podman's stream");
        }
    }
    free(raw);
    return rc != 0 || c->dead || c->failed;
}

static void call_wake(void *ud)
{
    struct podman_call *c = ud;
    c->depth++;
    int stop = call_deliver(c);
    c->depth--;
    if (c->dead) {
        if (c->depth == 0)
            call_free(c);
        return;
    }
    if (stop && c->req) {
        /* Ends the transfer now; on_done tells the owner why. */
        struct curlm_req *r = c->req;
        c->req = NULL;
        curlm_cancel(r);
        struct podman_reply rep = { 0 };
        rep.status = c->status;
        rep.error = c->fail_msg[0] ? c->fail_msg : "stopped by its reader";
        c->depth++;
        c->h.on_done(c->ud, &rep);
        c->depth--;
        c->dead = 1;
        if (c->depth == 0)
            call_free(c);
    }
}

/* Podman's message from an error body {"cause", "message", "response"}. */
static void error_message(const char *body, size_t len, long status, char *out, size_t out_len)
{
    json_t *v = len ? json_loadb(body, len, 0, NULL) : NULL;
    json_t *msg = json_is_object(v) ? json_object_get(v, "message") : NULL;
    if (json_is_string(msg) && json_string_length(msg) > 0) {
        snprintf(out, out_len, "%s", json_string_value(msg));
    } else if (len > 0) {
        while (len > 0 && (body[len - 1] == '\n' || body[len - 1] == '\r' || body[len - 1] == ' '))
            len--;
        snprintf(out, out_len, "%.*s", (int)(len > 300 ? 300 : len), body);
    } else {
        snprintf(out, out_len, "HTTP %ld", status);
    }
    json_decref(v);
}

static void call_done(void *ud, const struct curlm_result *res)
{
    struct podman_call *c = ud;
    struct podman *p = c->p;
    c->depth++;
    c->req = NULL;                      /* curlm frees it when we return */
    if (!c->headers_told && res->status >= 200) {
        c->headers_told = 1;
        c->status = res->status;
        if (c->h.on_headers)
            c->h.on_headers(c->ud, res->status);
    }
    call_deliver(c);                    /* what came with the end */
    if (!c->dead && !c->failed && c->mode == PODMAN_LINES && c->h.on_line &&
        res->code == CURLE_OK && c->status < 400)
        pp_lines_flush(&c->lines, deliver_line, c);
    if (!c->dead) {
        char msg[600], why[400];
        struct podman_reply rep = { 0 };
        rep.status = res->status ? res->status : c->status;
        rep.body = c->body ? c->body : "";
        rep.len = c->body_len;
        rep.seconds = res->seconds;
        if (c->failed) {
            rep.error = c->fail_msg[0] ? c->fail_msg : "stopped by its reader";
        } else if (res->code != CURLE_OK && !(rep.status >= 400 && c->body_len > 0)) {
            curlm_describe(res, why, sizeof why);
            switch (res->code) {
            case CURLE_COULDNT_CONNECT:
                snprintf(msg, sizeof msg, "cannot connect to Podman at %s: %s", p->socket,
                         res->os_errno ? strerror(res->os_errno) : why);
                break;
            case CURLE_OPERATION_TIMEDOUT:
                snprintf(msg, sizeof msg, "timed out after %g s (%s)", c->timeout, why);
                break;
            case CURLE_GOT_NOTHING:
            case CURLE_RECV_ERROR:
            case CURLE_SEND_ERROR:
            case CURLE_PARTIAL_FILE:
                snprintf(msg, sizeof msg, "connection to Podman lost: %s", why);
                break;
            default:
                snprintf(msg, sizeof msg, "%s", why);
            }
            rep.error = msg;
        } else if (rep.status >= 400) {
            error_message(rep.body, rep.len, rep.status, msg, sizeof msg);
            rep.error = msg;
        } else if (c->mode == PODMAN_FRAMES && pp_frames_partial(&c->frames)) {
            rep.error = "Podman's stream ended inside a frame";
        }
        c->h.on_done(c->ud, &rep);
    }
    c->depth--;
    c->dead = 1;
    if (c->depth == 0)
        call_free(c);
}

struct podman_call *podman_call(struct podman *p, const char *method, const char *path,
                                const char *body, double timeout, enum podman_mode mode,
                                const struct podman_handlers *h, void *ud)
{
    struct podman_call *c = calloc(1, sizeof *c);
    CURL *easy = curl_easy_init();
    char url[4096];
    if (!c || !easy || snprintf(url, sizeof url, "http://d" PODMAN_API_PREFIX "%s", path) >=
                           (int)sizeof url) {
        free(c);
        curl_easy_cleanup(easy);
        return NULL;
    }
    c->p = p;
    c->mode = mode;
    c->h = *h;
    c->ud = ud;
    c->timeout = timeout;
    pp_lines_init(&c->lines, STREAM_LINE_MAX);
    pp_frames_init(&c->frames);

    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_UNIX_SOCKET_PATH, p->socket);
    if (timeout > 0)
        curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000 + 0.5));
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(timeout > 0 && timeout < 10 ? timeout * 1000 + 0.5 : 10000));
    struct curl_slist *hdrs = curl_slist_append(NULL, "Expect:");
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    } else {
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method);
        if (body || strcmp(method, "POST") == 0) {
            curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long)(body ? strlen(body) : 0));
            curl_easy_setopt(easy, CURLOPT_COPYPOSTFIELDS, body ? body : "");
        }
        if (body && hdrs)
            hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    }
    static const struct curlm_callbacks cb = { call_data, call_wake, call_done };
    c->req = curlm_start(p->m, easy, hdrs, &cb, c, NULL, 0);
    if (!c->req) {
        call_free(c);
        return NULL;
    }
    return c;
}

void podman_call_cancel(struct podman_call *c)
{
    if (!c || c->dead)
        return;
    c->dead = 1;
    if (c->req) {
        struct curlm_req *r = c->req;
        c->req = NULL;
        curlm_cancel(r);
    }
    if (c->depth == 0)
        call_free(c);
}

void podman_call_hold(struct podman_call *c, int hold)
{
    if (c->dead || c->held == hold)
        return;
    c->held = hold;
    if (!hold && c->req)
        curlm_resume(c->req);
}

/* --- events --- */

static void ev_start(struct podman *p);

/* Calls fn of every subscriber (or only of those not primed yet); the list
 * may change under the callbacks. */
static void ev_dispatch(struct podman *p, enum podman_ev kind, json_t *ev, const char *err,
                        int unprimed_only)
{
    for (struct podman_sub *s = p->subs; s; s = p->iter_next) {
        p->iter_next = s->next;
        if (unprimed_only && s->primed)
            continue;
        enum podman_ev k = kind;
        if (kind == PODMAN_EV_CONNECTED)
            k = s->primed ? PODMAN_EV_RECONNECTED : PODMAN_EV_CONNECTED;
        s->primed = 1;
        s->fn(s->ud, k, ev, err);
    }
    p->iter_next = NULL;
}

static void ev_headers(void *ud, long status)
{
    struct podman *p = ud;
    if (status != 200)
        return;                         /* an error: on_done says which */
    p->ev_connected = 1;
    p->ev_connects++;
    p->ev_backoff = BACKOFF_FIRST;
    log_debug("podman events: stream up on %s", p->socket);
    ev_dispatch(p, PODMAN_EV_CONNECTED, NULL, NULL, 0);
}

static int ev_line(void *ud, const char *line, size_t len)
{
    struct podman *p = ud;
    if (len == 0)
        return 0;
    char err[200];
    json_t *ev = pp_event_parse(line, len, err, sizeof err);
    if (!ev) {
        p->ev_bad++;
        log_warn("podman events: skipping a line Podman sent: %s", err);
        return 0;
    }
    p->ev_events++;
    ev_dispatch(p, PODMAN_EV_EVENT, ev, NULL, 0);
    json_decref(ev);
    return 0;
}

static void ev_retry(uv_timer_t *h)
{
    struct podman *p = h->data;
    p->ev_waiting = 0;
    ev_start(p);
}

static void ev_schedule(struct podman *p)
{
    if (!p->subs || p->ev_waiting || p->ev_call)
        return;
    p->ev_waiting = 1;
    uv_update_time(p->loop);            /* uv_now() may be stale after long Lua */
    uv_timer_start(p->ev_timer, ev_retry, (uint64_t)(p->ev_backoff * 1000), 0);
    p->ev_backoff = p->ev_backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : p->ev_backoff * 2;
}

static void ev_done(void *ud, const struct podman_reply *r)
{
    struct podman *p = ud;
    int was_up = p->ev_connected;
    char why[600];
    snprintf(why, sizeof why, "%s", r->error ? r->error : "Podman ended the stream");
    p->ev_call = NULL;
    p->ev_connected = 0;
    if (was_up)
        log_warn("podman events: stream lost (%s); reconnecting", why);
    else
        log_debug("podman events: cannot open the stream (%s); retrying in %g s", why,
                  p->ev_backoff);
    ev_dispatch(p, PODMAN_EV_FAILED, NULL, why, 1);
    ev_schedule(p);
}

static void ev_start(struct podman *p)
{
    if (p->ev_call || !p->subs)
        return;
    static const struct podman_handlers h = { ev_headers, ev_line, NULL, ev_done };
    p->ev_call = podman_call(p, "GET", "/events?stream=true", NULL, 0, PODMAN_LINES, &h, p);
    if (!p->ev_call) {
        log_warn("podman events: cannot start a request; retrying");
        ev_schedule(p);
    }
}

static void ev_stop(struct podman *p)
{
    if (p->ev_call) {
        struct podman_call *c = p->ev_call;
        p->ev_call = NULL;
        podman_call_cancel(c);
    }
    if (p->ev_waiting) {
        uv_timer_stop(p->ev_timer);
        p->ev_waiting = 0;
    }
    p->ev_connected = 0;
    p->ev_backoff = BACKOFF_FIRST;
}

struct podman_sub *podman_events_subscribe(struct podman *p, podman_event_fn fn, void *ud,
                                           enum podman_ev_state *state)
{
    struct podman_sub *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->p = p;
    s->fn = fn;
    s->ud = ud;
    /* Up now: nothing to wait for. Waiting out a backoff: nothing to wait
     * for either; it hears RECONNECTED when the stream is back. */
    s->primed = p->ev_connected || p->ev_waiting;
    s->next = p->subs;
    if (p->subs)
        p->subs->prev = s;
    p->subs = s;
    p->nsubs++;
    if (!p->ev_call && !p->ev_waiting)
        ev_start(p);
    *state = p->ev_connected ? PODMAN_EVS_UP
             : p->ev_call ? PODMAN_EVS_CONNECTING : PODMAN_EVS_DOWN;
    if (*state == PODMAN_EVS_DOWN)
        s->primed = 1;          /* ev_start could not even begin: it retries */
    return s;
}

void podman_events_unsubscribe(struct podman_sub *s)
{
    if (!s)
        return;
    struct podman *p = s->p;
    if (p->iter_next == s)
        p->iter_next = s->next;
    if (s->prev)
        s->prev->next = s->next;
    else
        p->subs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    p->nsubs--;
    free(s);
    if (!p->subs)
        ev_stop(p);
}

void podman_events_stats(struct podman *p, struct podman_events_stats *st)
{
    st->subscribers = p->nsubs;
    st->connected = p->ev_connected;
    st->connects = p->ev_connects;
    st->events = p->ev_events;
    st->bad_lines = p->ev_bad;
}

static void timer_freed(uv_handle_t *h)
{
    free(h);
}

void podman_free(struct podman *p)
{
    if (!p)
        return;
    while (p->subs) {
        struct podman_sub *s = p->subs;
        p->subs = s->next;
        if (p->subs)
            p->subs->prev = NULL;
        p->nsubs--;
        s->fn(s->ud, PODMAN_EV_CLOSED, NULL, "the Podman client is closing");
        free(s);
    }
    ev_stop(p);
    uv_close((uv_handle_t *)p->ev_timer, timer_freed);
    free(p->socket);
    free(p);
}
