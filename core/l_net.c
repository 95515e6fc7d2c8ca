/* l_net.c: mcp.net: is a port free, does a TCP port answer, this host's name.
 *
 * port_free is a few non-blocking system calls (socket, bind, close) made
 * in place; tcp_check is a connect through libuv that the task waits for,
 * with a name lookup on libuv's thread pool when the host is not an IP. */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"
#include "bindings.h"

#define NET_DEFAULT_TIMEOUT 5.0

static int net_check_port(lua_State *L, int idx, const char *fn)
{
    lua_Number n = luaL_checknumber(L, idx);
    if (n < 1 || n > 65535 || n != (lua_Number)(int)n)
        luaL_error(L, "%s: port must be an integer from 1 to 65535, got %f", fn, n);
    return (int)n;
}

/* Parses an IP literal into ss. Returns 0, or -1 when host is not one. */
static int net_parse_ip(const char *host, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
        return 0;
    const char *h = host;
    char buf[64];
    size_t len = strlen(host);
    if (len > 2 && host[0] == '[' && host[len - 1] == ']' && len - 2 < sizeof buf) {
        memcpy(buf, host + 1, len - 2);
        buf[len - 2] = 0;
        h = buf;
    }
    if (uv_ip6_addr(h, port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    return -1;
}

/* Tries to bind host:port, SO_REUSEADDR off. Returns 1 when it could,
 * 0 when not (why filled), -1 when the address family is not available here. */
static int net_try_bind(const char *host, int port, char *why, size_t cap)
{
    struct sockaddr_storage ss;
    if (net_parse_ip(host, port, &ss) != 0)
        return -1;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 && errno == EAFNOSUPPORT)
        return -1;
    if (fd < 0) {
        snprintf(why, cap, "%s port %d: %s", host, port,
                 uv_strerror(uv_translate_sys_error(errno)));
        return 0;
    }
    socklen_t len = ss.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                            : sizeof(struct sockaddr_in6);
    int rc = bind(fd, (struct sockaddr *)&ss, len);
    int err = errno;
    close(fd);
    if (rc == 0)
        return 1;
    if (ss.ss_family == AF_INET6 && err == EADDRNOTAVAIL)
        return -1;          /* IPv6 disabled on this host */
    snprintf(why, cap, "%s port %d: %s", host, port, uv_strerror(uv_translate_sys_error(err)));
    return 0;
}

/* mcp.net.port_free(port [, host]) -> true, or false, reason. Without a
 * host, the port must be bindable on 127.0.0.1, 0.0.0.0 and (when the host
 * has IPv6) ::, which is what a container publishing it will need. */
static int l_net_port_free(lua_State *L)
{
    int port = net_check_port(L, 1, "mcp.net.port_free");
    const char *host = luaL_optstring(L, 2, NULL);
    char why[256];
    if (host) {
        struct sockaddr_storage ss;
        if (net_parse_ip(host, port, &ss) != 0)
            return luaL_error(L, "mcp.net.port_free: host must be an IP address, got \"%s\"",
                              host);
        int r = net_try_bind(host, port, why, sizeof why);
        if (r == 0) {
            lua_pushboolean(L, 0);
            lua_pushstring(L, why);
            return 2;
        }
        if (r < 0) {
            lua_pushboolean(L, 0);
            lua_pushfstring(L, "%s: address family not available on this host", host);
            return 2;
        }
        lua_pushboolean(L, 1);
        return 1;
    }
    static const char *const hosts[] = { "127.0.0.1", "0.0.0.0", "::" };
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
        if (net_try_bind(hosts[i], port, why, sizeof why) == 0) {
            lua_pushboolean(L, 0);
            lua_pushstring(L, why);
            return 2;
        }
    }
    lua_pushboolean(L, 1);
    return 1;
}

struct tcp_op {
    uv_tcp_t tcp;
    uv_connect_t conn;
    uv_getaddrinfo_t gai;
    uv_timer_t timer;
    struct task *task;          /* NULL once finished or cancelled */
    struct addrinfo *ai, *next; /* from the lookup: addresses left to try */
    struct sockaddr_storage addr;
    double timeout;
    int port;
    int handles;                /* initialised and not yet closed */
    int gai_pending, tcp_open, done;
    char host[256];
    char err[256];
};

static void tcp_maybe_free(struct tcp_op *op)
{
    if (op->done && op->handles == 0 && !op->gai_pending) {
        if (op->ai)
            uv_freeaddrinfo(op->ai);
        free(op);
    }
}

static void tcp_on_close(uv_handle_t *h)
{
    struct tcp_op *op = h->data;
    op->handles--;
    tcp_maybe_free(op);
}

/* Ends the check: closes what is open, resumes the task with true, or with
 * nil and op->err when ok is 0. */
static void tcp_finish(struct tcp_op *op, int ok)
{
    if (op->done)
        return;
    op->done = 1;
    uv_timer_stop(&op->timer);
    uv_close((uv_handle_t *)&op->timer, tcp_on_close);
    if (op->tcp_open) {
        op->tcp_open = 0;
        uv_close((uv_handle_t *)&op->tcp, tcp_on_close);
    }
    if (op->gai_pending)
        uv_cancel((uv_req_t *)&op->gai);
    struct task *t = op->task;
    op->task = NULL;
    if (t) {
        lua_State *co = task_thread(t);
        if (ok) {
            lua_pushboolean(co, 1);
            task_resume(t, 1);
        } else {
            lua_pushnil(co);
            lua_pushfstring(co, "tcp_check %s port %d: %s", op->host, op->port, op->err);
            task_resume(t, 2);
        }
    }
    tcp_maybe_free(op);
}

static int tcp_try_next(struct tcp_op *op);

static void tcp_on_closed_retry(uv_handle_t *h)
{
    struct tcp_op *op = h->data;
    op->handles--;
    if (op->done)
        tcp_maybe_free(op);
    else if (tcp_try_next(op) != 0)
        tcp_finish(op, 0);
}

static void tcp_on_connect(uv_connect_t *req, int status)
{
    struct tcp_op *op = req->data;
    if (op->done)
        return;                 /* closed by the deadline or a cancel */
    if (status == 0) {
        tcp_finish(op, 1);
        return;
    }
    snprintf(op->err, sizeof op->err, "%s", uv_strerror(status));
    if (op->next) {
        op->tcp_open = 0;
        uv_close((uv_handle_t *)&op->tcp, tcp_on_closed_retry);
        return;
    }
    tcp_finish(op, 0);
}

/* Starts connecting to op->addr, or to the next address from the lookup.
 * Returns 0, or -1 with op->err filled. */
static int tcp_try_next(struct tcp_op *op)
{
    if (op->next) {
        memset(&op->addr, 0, sizeof op->addr);
        memcpy(&op->addr, op->next->ai_addr, op->next->ai_addrlen);
        op->next = op->next->ai_next;
    }
    uv_loop_t *loop = op->timer.loop;
    uv_tcp_init(loop, &op->tcp);
    op->tcp.data = op;
    op->handles++;
    op->tcp_open = 1;
    op->conn.data = op;
    int rc = uv_tcp_connect(&op->conn, &op->tcp, (struct sockaddr *)&op->addr, tcp_on_connect);
    if (rc != 0) {
        snprintf(op->err, sizeof op->err, "%s", uv_strerror(rc));
        return -1;
    }
    return 0;
}

static void tcp_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct tcp_op *op = req->data;
    op->gai_pending = 0;
    op->ai = res;
    if (op->done) {
        tcp_maybe_free(op);
        return;
    }
    if (status != 0 || !res) {
        snprintf(op->err, sizeof op->err, "cannot resolve the name: %s", uv_strerror(status));
        tcp_finish(op, 0);
        return;
    }
    op->next = res;
    if (tcp_try_next(op) != 0)
        tcp_finish(op, 0);
}

static void tcp_on_timeout(uv_timer_t *h)
{
    struct tcp_op *op = h->data;
    snprintf(op->err, sizeof op->err, "no answer within %g s", op->timeout);
    tcp_finish(op, 0);
}

static void tcp_cancel(void *p)
{
    struct tcp_op *op = p;
    op->task = NULL;
    tcp_finish(op, 0);
}

static const char *const tcp_opts[] = { "timeout", NULL };

/* mcp.net.tcp_check(host, port [, {timeout = 5}]) -> true, or nil, err:
 * whether a TCP connection to host:port is accepted (the tcp health check).
 * host is an IP address or a name. */
static int l_net_tcp_check(lua_State *L)
{
    const char *fn = "mcp.net.tcp_check";
    size_t hlen;
    const char *host = luaL_checklstring(L, 1, &hlen);
    int port = net_check_port(L, 2, fn);
    bind_check_options(L, 3, fn, tcp_opts);
    double timeout = bind_opt_duration(L, 3, "timeout", NET_DEFAULT_TIMEOUT, fn);
    if (timeout <= 0)
        return luaL_error(L, "%s: option timeout: must be more than 0", fn);
    if (hlen == 0 || hlen >= 256 || strlen(host) != hlen)
        return luaL_error(L, "%s: host must be a name or an IP address, got \"%s\"", fn, host);
    struct task *t = task_check(L, fn);
    struct tcp_op *op = calloc(1, sizeof *op);
    if (!op)
        return luaL_error(L, "%s: out of memory", fn);
    uv_loop_t *loop = agent_from_lua(L)->loop;
    snprintf(op->host, sizeof op->host, "%s", host);
    op->port = port;
    op->timeout = timeout;
    op->task = t;
    uv_timer_init(loop, &op->timer);
    op->timer.data = op;
    op->handles = 1;
    uv_timer_start(&op->timer, tcp_on_timeout, (uint64_t)(timeout * 1000 + 0.5), 0);
    if (net_parse_ip(host, port, &op->addr) == 0) {
        if (tcp_try_next(op) != 0) {
            /* Failed at once: report from here, nothing may resume us yet. */
            op->task = NULL;
            tcp_finish(op, 0);
            return bind_fail(L, "tcp_check", "%s port %d: %s", host, port, op->err);
        }
    } else {
        char portstr[8];
        snprintf(portstr, sizeof portstr, "%d", port);
        struct addrinfo hints;
        memset(&hints, 0, sizeof hints);
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_family = AF_UNSPEC;
        op->gai.data = op;
        int rc = uv_getaddrinfo(loop, &op->gai, tcp_on_resolved, host, portstr, &hints);
        if (rc != 0) {
            op->task = NULL;
            tcp_finish(op, 0);
            return bind_fail(L, "tcp_check", "%s port %d: cannot resolve the name: %s", host,
                             port, uv_strerror(rc));
        }
        op->gai_pending = 1;
    }
    return task_wait(L, t, tcp_cancel, op);
}

/* mcp.net.hostname() -> this host's name. */
static int l_net_hostname(lua_State *L)
{
    char name[UV_MAXHOSTNAMESIZE];
    size_t len = sizeof name;
    int rc = uv_os_gethostname(name, &len);
    if (rc != 0)
        return bind_fail(L, "hostname", "%s", uv_strerror(rc));
    lua_pushlstring(L, name, len);
    return 1;
}

static const luaL_Reg net_funcs[] = {
    { "port_free", l_net_port_free },
    { "tcp_check", l_net_tcp_check },
    { "hostname", l_net_hostname },
    { NULL, NULL },
};

int l_net_open(lua_State *L)
{
    lua_newtable(L);
    luaL_register(L, NULL, net_funcs);
    return 1;
}
