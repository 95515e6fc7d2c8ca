/* loadgen.c: a small HTTP/1.1 load generator that speaks over a unix socket
 * as well as TCP, so that Podman's API (a unix socket only; wrk cannot reach
 * it) and the agent's (TCP) are measured by the same client.
 *
 *   loadgen (--unix PATH | --tcp HOST:PORT) [-c CONNS] [-d SECONDS] [-w WARMUP]
 *           [-n MIN [-m MAXSECONDS]] [-H 'Name: value']... URL-PATH
 *
 * CONNS keep-alive connections (default 8) on one thread and one epoll, each
 * sending the next GET as soon as the previous answer is complete (a closed
 * loop at a fixed concurrency, as wrk does). Answers are framed by
 * Content-Length or chunked transfer encoding; a server that closes a
 * connection is reconnected (counted). After WARMUP seconds (default 1),
 * the answers that complete in the next SECONDS (default 5) are counted, with
 * their latency from the request's first byte; with -n, the window grows
 * until MIN answers are counted (at most to MAXSECONDS, default 5 x SECONDS),
 * so that a slow server still gives enough samples. Prints one JSON object on stdout:
 * requests, the window, rps, latency percentiles in ms, errors, non-2xx
 * answers, bytes per answer. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

struct conn {
    int fd;
    size_t sent;
    char *buf;
    size_t len, cap;
    double t0;                  /* when the request's first byte was sent */
};

static const char *unix_path;
static struct sockaddr_storage tcp_addr;
static socklen_t tcp_len;
static char *request;
static size_t request_len;

static double *lat;             /* seconds, one per counted answer */
static size_t nlat, caplat;
static long long errors, non_2xx, reconnects, body_bytes;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    perror(what);
    exit(2);
}

static int conn_open(void)
{
    int fd;
    if (unix_path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (strlen(unix_path) >= sizeof sa.sun_path) {
            fprintf(stderr, "loadgen: socket path too long\n");
            exit(2);
        }
        strcpy(sa.sun_path, unix_path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
            die("loadgen: connect");
    } else {
        fd = socket(tcp_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&tcp_addr, tcp_len) != 0)
            die("loadgen: connect");
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* Length of the complete response at the start of buf, 0 when more bytes
 * are needed, -1 when it cannot be parsed. Sets *status and *body. */
static long response_len(const char *buf, size_t len, int *status, long *body)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t hlen = (size_t)(end - buf) + 4;
    if (len < 12 || strncmp(buf, "HTTP/1.", 7) != 0)
        return -1;
    *status = atoi(buf + 9);
    long clen = -1;
    int chunked = 0;
    const char *p = buf;
    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        p++;                    /* the start of a header line */
        if (strncasecmp(p, "Content-Length:", 15) == 0)
            clen = atol(p + 15);
        else if (strncasecmp(p, "Transfer-Encoding:", 18) == 0) {
            const char *v = p + 18;
            while (*v == ' ')
                v++;
            chunked = strncasecmp(v, "chunked", 7) == 0;
        }
    }
    if (!chunked) {
        if (clen < 0)
            clen = 0;           /* no body without a length on a kept-alive reply */
        *body = clen;
        return hlen + (size_t)clen <= len ? (long)hlen + clen : 0;
    }
    size_t pos = hlen;
    long total = 0;
    for (;;) {
        const char *eol = memmem(buf + pos, len - pos, "\r\n", 2);
        if (!eol)
            return 0;
        char *after;
        long n = strtol(buf + pos, &after, 16);
        if (after == buf + pos || n < 0)
            return -1;
        pos = (size_t)(eol - buf) + 2;
        if (n == 0) {
            /* No trailers are expected: the final CRLF ends the answer. */
            const char *fin = memmem(buf + pos, len - pos, "\r\n", 2);
            if (!fin)
                return 0;
            *body = total;
            return (long)((size_t)(fin - buf) + 2);
        }
        if (pos + (size_t)n + 2 > len)
            return 0;
        pos += (size_t)n + 2;
        total += n;
    }
}

static void conn_send(struct conn *c)
{
    while (c->sent < request_len) {
        ssize_t n = write(c->fd, request + c->sent, request_len - c->sent);
        if (n < 0) {
            if (errno == EAGAIN)
                return;
            errors++;
            return;
        }
        c->sent += (size_t)n;
    }
}

static void conn_start(struct conn *c)
{
    c->sent = 0;
    c->len = 0;
    c->t0 = now();
    conn_send(c);
}

static void record(double secs)
{
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 65536;
        lat = realloc(lat, caplat * sizeof *lat);
        if (!lat)
            die("loadgen: realloc");
    }
    lat[nlat++] = secs;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p)
{
    if (nlat == 0)
        return 0;
    size_t i = (size_t)(p * (double)nlat);
    if (i >= nlat)
        i = nlat - 1;
    return lat[i] * 1e3;
}

static void usage(void)
{
    fprintf(stderr, "usage: loadgen (--unix PATH | --tcp HOST:PORT) [-c CONNS] [-d SECONDS] "
                    "[-w WARMUP] [-n MIN [-m MAXSECONDS]] [-H 'Name: value']... PATH\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int conns = 8;
    long min_requests = 0;
    double duration = 5, warmup = 1, max_window = 0;
    const char *tcp = NULL, *path = NULL;
    char headers[4096] = "";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--unix") == 0 && i + 1 < argc)
            unix_path = argv[++i];
        else if (strcmp(a, "--tcp") == 0 && i + 1 < argc)
            tcp = argv[++i];
        else if (strcmp(a, "-c") == 0 && i + 1 < argc)
            conns = atoi(argv[++i]);
        else if (strcmp(a, "-d") == 0 && i + 1 < argc)
            duration = atof(argv[++i]);
        else if (strcmp(a, "-w") == 0 && i + 1 < argc)
            warmup = atof(argv[++i]);
        else if (strcmp(a, "-n") == 0 && i + 1 < argc)
            min_requests = atol(argv[++i]);
        else if (strcmp(a, "-m") == 0 && i + 1 < argc)
            max_window = atof(argv[++i]);
        else if (strcmp(a, "-H") == 0 && i + 1 < argc) {
            size_t l = strlen(headers);
            snprintf(headers + l, sizeof headers - l, "%s\r\n", argv[++i]);
        } else if (a[0] != '-' && !path)
            path = a;
        else
            usage();
    }
    if (!path || (!unix_path == !tcp) || conns < 1 || duration <= 0)
        usage();
    if (tcp) {
        char host[256];
        const char *colon = strrchr(tcp, ':');
        if (!colon || (size_t)(colon - tcp) >= sizeof host)
            usage();
        memcpy(host, tcp, (size_t)(colon - tcp));
        host[colon - tcp] = 0;
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
        if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
            usage();
        memcpy(&tcp_addr, res->ai_addr, res->ai_addrlen);
        tcp_len = res->ai_addrlen;
        freeaddrinfo(res);
    }
    if (asprintf(&request, "GET %s HTTP/1.1\r\nHost: localhost\r\n%s\r\n", path, headers) < 0)
        die("loadgen: asprintf");
    request_len = strlen(request);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct conn *cs = calloc((size_t)conns, sizeof *cs);
    for (int i = 0; i < conns; i++) {
        cs[i].fd = conn_open();
        struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = &cs[i] };
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    double start = now(), count_from = start + warmup, stop = count_from + duration;
    double last_stop = count_from + (max_window > duration ? max_window : 5 * duration);
    for (int i = 0; i < conns; i++)
        conn_start(&cs[i]);
    struct epoll_event evs[64];
    /* The window ends at the first look at the clock past stop (or past the
     * last stop, when -n asks for more answers): every answer counted so far
     * completed before that look. */
    double t;
    for (;;) {
        t = now();
        if (t >= stop && ((long)nlat >= min_requests || t >= last_stop))
            break;
        int n = epoll_wait(ep, evs, 64, 100);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->sent < request_len)
                conn_send(c);
            int closed = 0;
            for (;;) {
                if (c->cap - c->len < 65536) {
                    c->cap = c->cap ? c->cap * 2 : 131072;
                    c->buf = realloc(c->buf, c->cap);
                    if (!c->buf)
                        die("loadgen: realloc");
                }
                ssize_t r = read(c->fd, c->buf + c->len, c->cap - c->len);
                if (r > 0) {
                    c->len += (size_t)r;
                    continue;
                }
                if (r == 0 || errno != EAGAIN)
                    closed = 1;
                break;
            }
            int status = 0;
            long body = 0;
            long rl = c->len ? response_len(c->buf, c->len, &status, &body) : 0;
            if (rl > 0) {
                double done = now();
                if (done >= count_from) {
                    record(done - c->t0);
                    body_bytes += body;
                    if (status < 200 || status > 299)
                        non_2xx++;
                }
                if ((size_t)rl != c->len)
                    errors++;   /* bytes after the answer: nothing was asked */
                if (!closed) {
                    conn_start(c);
                    continue;
                }
            } else if (rl < 0) {
                errors++;
                closed = 1;
            }
            if (closed) {
                if (rl == 0 && now() >= count_from)
                    errors++;   /* closed in the middle of an answer */
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                reconnects++;
                c->fd = conn_open();
                struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET,
                                          .data.ptr = c };
                epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
                conn_start(c);
            }
        }
    }
    qsort(lat, nlat, sizeof *lat, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < nlat; i++)
        sum += lat[i];
    printf("{\"client\": \"loadgen\", \"transport\": \"%s\", \"connections\": %d, "
           "\"seconds\": %.3f, \"requests\": %zu, \"rps\": %.1f, "
           "\"latency_ms\": {\"mean\": %.3f, \"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, "
           "\"max\": %.3f}, \"errors\": %lld, \"non_2xx\": %lld, \"reconnects\": %lld, "
           "\"body_bytes\": %lld}\n",
           unix_path ? "unix" : "tcp", conns, t - count_from, nlat,
           (double)nlat / (t - count_from),
           nlat ? sum / (double)nlat * 1e3 : 0, pct(0.50), pct(0.90), pct(0.99),
           nlat ? lat[nlat - 1] * 1e3 : 0, errors, non_2xx, reconnects,
           nlat ? body_bytes / (long long)nlat : 0);
    for (int i = 0; i < conns; i++) {
        close(cs[i].fd);
        free(cs[i].buf);
    }
    free(cs);
    free(lat);
    free(request);
    close(ep);
    return 0;
}
