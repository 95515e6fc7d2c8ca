/* httpd.h: the HTTP API server, libmicrohttpd driven from the agent's loop.
 *
 * Each request is collected in C (headers, body up to a limit), then handed
 * to Lua as a task running require("mcp.api").handle(req); the connection is
 * suspended until the task answers, so the loop serves others meanwhile.
 * core/l_httpd.c is the Lua face: mcp.httpd, the req table and streams. */
#ifndef MCP_HTTPD_H
#define MCP_HTTPD_H

#include <stddef.h>
#include <stdint.h>
#include <lua.h>

#include "runtime.h"

struct agent;
struct config;
struct httpd;
struct httpd_req;

struct httpd_options {
    const char *const *listen;      /* NULL-terminated "host:port" / "[v6]:port" */
    const char *tls_cert, *tls_key; /* PEM file paths; both or neither */
    const char *client_ca;          /* PEM CA bundle: client certificates required */
    uint64_t max_body;              /* bytes; larger bodies get 413 */
    unsigned max_connections;
    double connection_timeout;      /* seconds to receive a request, and idle time */
    struct task_limits limits;      /* of each request's task; its timeout is lifted
                                       once the handler starts streaming */
    int handler_ref;                /* registry ref of a handler function, or LUA_NOREF
                                       for require("mcp.api").handle */
};

struct httpd_stats {
    uint64_t connections_total, requests_total;
    uint64_t too_large, forbidden, unavailable, task_failed, deadline, client_gone;
    uint64_t slow_clients, refused;
    int connections, in_flight, streams;
};

/* Fills o from the agent's config ([api] and [lua]). listen points into cfg. */
void httpd_options_from_config(struct httpd_options *o, const struct config *cfg);

/* Starts listening on every address of o. Returns the server, or NULL with
 * err filled ("api: listen 127.0.0.1:9444: Address already in use"). The
 * strings of o are copied. */
struct httpd *httpd_start(struct agent *a, const struct httpd_options *o, char *err,
                          size_t err_len);
/* The agent's server, from its config: a->httpd. Opening with an empty
 * [api] listen does nothing. Returns 0, or -1 with the error logged. */
int httpd_agent_open(struct agent *a);
void httpd_agent_stop_accepting(struct agent *a);
void httpd_agent_close(struct agent *a);

/* Closes the listening sockets; requests in progress go on, streams end
 * (their tasks are aborted) and new requests on open connections get 503. */
void httpd_stop_accepting(struct httpd *h);
/* Ends every request (tasks aborted, connections closed) and frees the
 * server once the loop has closed its handles. */
void httpd_close(struct httpd *h);

/* The addresses actually bound (port 0 in the config resolved), count in *n.
 * Owned by the server. */
const char *const *httpd_addresses(struct httpd *h, size_t *n);
void httpd_get_stats(struct httpd *h, struct httpd_stats *s);

/* What the Lua face needs of one request (NULL-safe: a request that has
 * ended is NULL, and every call then reports the client gone). */

/* Starts a chunked response with status and the header table at idx (or 0).
 * Returns 0, or -1 with err filled. */
int httpd_stream_start(struct httpd_req *r, lua_State *L, int status, int headers_idx,
                       char *err, size_t err_len);
/* Queues a chunk. Returns 1 when queued, 0 when the client is gone. When
 * *must_wait is set on return, the caller waits with httpd_stream_wait. */
int httpd_stream_write(struct httpd_req *r, const char *data, size_t len, int *must_wait);
/* Yields the running task until the client has taken enough of the
 * buffered data; it is resumed with true, or false once the client is gone.
 * To be used as `return httpd_stream_wait(L, t, r);` */
int httpd_stream_wait(lua_State *L, struct task *t, struct httpd_req *r);
/* Ends the stream once the buffered data is sent. */
void httpd_stream_close(struct httpd_req *r);
int httpd_stream_alive(struct httpd_req *r);
/* Bytes queued but not yet handed to the connection. */
size_t httpd_stream_pending(struct httpd_req *r);

/* The Lua side holds a request through a box (a userdata) that the server
 * empties when the request ends; a stream keeps the box alive. */
struct httpd_box {
    struct httpd_req *r;
};

/* l_httpd.c: req:stream (the box is its upvalue 1), and the mcp.httpd table. */
int l_httpd_req_stream(lua_State *L);
int l_httpd_open(lua_State *L);

#endif
