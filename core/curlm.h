/* curlm.h: libcurl's multi interface on the agent's libuv loop.
 *
 * Every outbound HTTP request of the agent (Podman over its unix socket,
 * health checks, webhooks, the CLI against an agent) is an easy handle
 * started here: curl's sockets are watched with uv_poll, its timeouts with
 * a uv_timer, and nothing ever blocks the loop.
 *
 * Callbacks come in two kinds. on_data runs inside curl's write callback: it
 * may only keep the bytes (or ask for a pause), never call curl or resume a
 * task. on_wake and on_done run from the loop outside curl, after curl has
 * returned: they may resume tasks, start and cancel requests. */
#ifndef MCP_CURLM_H
#define MCP_CURLM_H

#include <stddef.h>
#include <stdint.h>
#include <curl/curl.h>
#include <uv.h>

struct agent;
struct curlm;
struct curlm_req;

/* Upper bounds (seconds) of the latency histogram buckets, Prometheus-style;
 * one more bucket counts what is above the last. */
#define CURLM_NBUCKETS 12
extern const double curlm_bucket_le[CURLM_NBUCKETS];

struct curlm_stat {
    char name[48];
    uint64_t count, errors;
    double sum;                                 /* seconds */
    uint64_t buckets[CURLM_NBUCKETS + 1];       /* per bucket, not cumulative */
};

/* What on_data returns. */
enum { CURLM_DATA_OK = 0, CURLM_DATA_PAUSE = 1, CURLM_DATA_ABORT = 2 };

struct curlm_result {
    CURLcode code;
    long status;                /* HTTP status, 0 when none arrived */
    const char *error;          /* curl's message; "" when code is CURLE_OK */
    const char *body;           /* the body, when the request had no on_data */
    size_t body_len;
    const char *headers;        /* raw header block of the final response */
    size_t headers_len;
    int os_errno;               /* errno of a failed connect, or 0 */
    double seconds;             /* since curlm_start */
    CURL *easy;                 /* for curl_easy_getinfo */
};

struct curlm_callbacks {
    /* Inside curl: keep the bytes and return CURLM_DATA_OK; CURLM_DATA_PAUSE
     * keeps nothing (curl delivers the same bytes again after
     * curlm_resume); CURLM_DATA_ABORT ends the transfer with an error.
     * NULL: curlm keeps the body (up to max_body) for on_done. */
    int (*on_data)(void *ud, const char *data, size_t len);
    /* Outside curl, after data or the response headers arrived. May be NULL. */
    void (*on_wake)(void *ud);
    /* Outside curl, once; the request is freed when it returns. */
    void (*on_done)(void *ud, const struct curlm_result *r);
};

/* Returns a new multi on loop, or NULL. */
struct curlm *curlm_new(uv_loop_t *loop);
/* Ends every request in flight (their on_done sees CURLE_ABORTED_BY_CALLBACK,
 * "shutting down"), then frees m once its handles are closed. */
void curlm_free(struct curlm *m);
/* The agent's multi, created on first use (the Lua module opens no
 * subsystems). NULL when it cannot be created. */
struct curlm *curlm_of(struct agent *a);

/* The agent's multi as a subsystem: made at start (0, or -1 logged), and
 * closed at stop, which ends every request in flight (their owners see an
 * error) before a->curl becomes NULL. */
int curlm_agent_open(struct agent *a);
void curlm_agent_close(struct agent *a);

/* Starts easy, whose options the caller has set (URL, method, timeouts).
 * curlm takes easy and headers (may be NULL; set as CURLOPT_HTTPHEADER) in
 * every case and frees them when the request ends. stat names the latency
 * statistic to record it under (NULL: none); max_body bounds the kept body
 * when on_data is NULL (0: 64 MiB). Never calls a callback before returning.
 * Returns the request, or NULL (easy freed) when curl refused it. */
struct curlm_req *curlm_start(struct curlm *m, CURL *easy, struct curl_slist *headers,
                              const struct curlm_callbacks *cb, void *ud, const char *stat,
                              size_t max_body);
/* Stops a request: no callback runs after this, easy is freed. Safe inside
 * the request's own on_wake (not inside on_data). */
void curlm_cancel(struct curlm_req *r);
/* Lets a request that on_data paused deliver again. */
void curlm_resume(struct curlm_req *r);
/* Schedules the request's on_wake from the loop (soon, not now). */
void curlm_wake(struct curlm_req *r);
/* Non-zero once the final response's headers are complete; *status gets
 * its HTTP status. */
int curlm_headers_done(struct curlm_req *r, long *status);
/* The raw header block of the response so far. */
const char *curlm_headers(struct curlm_req *r, size_t *len);

/* Records one observation of the statistic name. */
void curlm_stat_record(struct curlm *m, const char *name, double seconds, int ok);
/* The statistics recorded so far (valid until the next record). */
const struct curlm_stat *curlm_stats(struct curlm *m, size_t *n);
/* Requests started and not yet ended. */
size_t curlm_in_flight(struct curlm *m);

/* A short description of a failed transfer, for error messages: "connection
 * refused", "timed out after 5 s", ... written into buf. */
const char *curlm_describe(const struct curlm_result *r, char *buf, size_t len);

#endif
