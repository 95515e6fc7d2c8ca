/* curlm.c: libcurl multi on libuv (CURLMOPT_SOCKETFUNCTION/TIMERFUNCTION
 * bound to uv_poll/uv_timer, curl_multi_socket_action on readiness).
 *
 * Re-entrancy is the whole difficulty: curl forbids calling it from its own
 * callbacks, and a resumed Lua task may start or cancel requests. So curl's
 * callbacks only record (data, finished headers), and the owner's callbacks
 * run after curl_multi_socket_action has returned: first the wakes, then
 * the completions, one at a time, re-reading the lists after each. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "curlm.h"
#include "log.h"

#define DEFAULT_MAX_BODY ((size_t)64 << 20)
#define MAX_HEADERS ((size_t)64 << 10)

const double curlm_bucket_le[CURLM_NBUCKETS] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
};

struct curlm_sock {
    uv_poll_t poll;
    curl_socket_t fd;
    struct curlm *m;
    struct curlm_sock *next, *prev;
};

struct curlm_req {
    struct curlm *m;
    CURL *easy;
    struct curl_slist *headers;
    struct curlm_callbacks cb;
    void *ud;
    const char *stat;
    uint64_t t0;
    struct curlm_req *next, *prev;      /* m->reqs */
    struct curlm_req *wake_next;        /* m->wakes */
    int in_wake, in_done, paused;
    int headers_done;
    long status;
    char *body;
    size_t body_len, body_cap, max_body;
    int body_overflow;
    char *hdr;
    size_t hdr_len, hdr_cap;
    char errbuf[CURL_ERROR_SIZE];
};

struct curlm {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;           /* curl's timeout */
    uv_timer_t kick;            /* wakes asked for from outside curl */
    struct curlm_sock *socks;
    struct curlm_req *reqs;
    struct curlm_req *wake_head, *wake_tail;
    size_t in_flight;
    int closing, handles_open;
    struct curlm_stat *stats;
    size_t nstats, cap_stats;
};

static void after_action(struct curlm *m);

static void sock_closed(uv_handle_t *h)
{
    struct curlm_sock *cs = h->data;
    struct curlm *m = cs->m;
    free(cs);
    if (--m->handles_open == 0 && m->closing)
        free(m);
}

static void sock_close(struct curlm *m, struct curlm_sock *cs)
{
    if (cs->prev)
        cs->prev->next = cs->next;
    else
        m->socks = cs->next;
    if (cs->next)
        cs->next->prev = cs->prev;
    uv_poll_stop(&cs->poll);
    uv_close((uv_handle_t *)&cs->poll, sock_closed);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct curlm_sock *cs = h->data;
    struct curlm *m = cs->m;
    int flags = 0, running;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    curl_multi_socket_action(m->multi, cs->fd, flags, &running);   /* may free cs */
    after_action(m);
}

static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    struct curlm *m = userp;
    struct curlm_sock *cs = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (cs) {
            curl_multi_assign(m->multi, s, NULL);
            sock_close(m, cs);
        }
        return 0;
    }
    if (!cs) {
        cs = calloc(1, sizeof *cs);
        if (!cs)
            return -1;
        if (uv_poll_init_socket(m->loop, &cs->poll, s) != 0) {
            free(cs);
            return -1;
        }
        m->handles_open++;
        cs->fd = s;
        cs->m = m;
        cs->poll.data = cs;
        cs->next = m->socks;
        if (m->socks)
            m->socks->prev = cs;
        m->socks = cs;
        curl_multi_assign(m->multi, s, cs);
    }
    int ev = 0;
    if (what & CURL_POLL_IN)
        ev |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        ev |= UV_WRITABLE;
    uv_poll_start(&cs->poll, ev, on_poll);
    return 0;
}

static void on_timer(uv_timer_t *h)
{
    struct curlm *m = h->data;
    int running;
    curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    after_action(m);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct curlm *m = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&m->timer);
    else
        uv_timer_start(&m->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static void on_kick(uv_timer_t *h)
{
    after_action(h->data);
}

struct curlm *curlm_new(uv_loop_t *loop)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return NULL;
    struct curlm *m = calloc(1, sizeof *m);
    if (!m) {
        curl_global_cleanup();
        return NULL;
    }
    m->loop = loop;
    m->multi = curl_multi_init();
    if (!m->multi) {
        free(m);
        curl_global_cleanup();
        return NULL;
    }
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, m);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERDATA, m);
    uv_timer_init(loop, &m->timer);
    m->timer.data = m;
    uv_timer_init(loop, &m->kick);
    m->kick.data = m;
    m->handles_open = 2;
    return m;
}

struct curlm *curlm_of(struct agent *a)
{
    if (!a->curl)
        a->curl = curlm_new(a->loop);
    return a->curl;
}

int curlm_agent_open(struct agent *a)
{
    if (curlm_of(a))
        return 0;
    log_error("curl: cannot set up libcurl's multi interface");
    return -1;
}

void curlm_agent_close(struct agent *a)
{
    /* a->curl stays set while the owners of requests hear their end, so that
     * what they start meanwhile fails at once instead of making a new multi. */
    curlm_free(a->curl);
    a->curl = NULL;
}

/* Takes r off the wake list, if it is there. */
static void wake_remove(struct curlm *m, struct curlm_req *r)
{
    if (!r->in_wake)
        return;
    struct curlm_req **pp = &m->wake_head, *prev = NULL;
    while (*pp && *pp != r) {
        prev = *pp;
        pp = &(*pp)->wake_next;
    }
    if (*pp) {
        *pp = r->wake_next;
        if (m->wake_tail == r)
            m->wake_tail = prev;
    }
    r->wake_next = NULL;
    r->in_wake = 0;
}

static void wake_add(struct curlm *m, struct curlm_req *r)
{
    if (r->in_wake || !r->cb.on_wake)
        return;
    r->in_wake = 1;
    r->wake_next = NULL;
    if (m->wake_tail)
        m->wake_tail->wake_next = r;
    else
        m->wake_head = r;
    m->wake_tail = r;
}

static void req_free(struct curlm_req *r)
{
    struct curlm *m = r->m;
    wake_remove(m, r);
    if (r->prev)
        r->prev->next = r->next;
    else
        m->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    m->in_flight--;
    curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    free(r->body);
    free(r->hdr);
    free(r);
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *userp)
{
    struct curlm_req *r = userp;
    size_t len = size * nmemb;
    if (r->cb.on_data) {
        int rc = r->cb.on_data(r->ud, data, len);
        if (rc == CURLM_DATA_PAUSE) {
            r->paused = 1;
            return CURL_WRITEFUNC_PAUSE;
        }
        if (rc != CURLM_DATA_OK)
            return 0;
        wake_add(r->m, r);
        return len;
    }
    if (r->body_len + len > r->max_body) {
        r->body_overflow = 1;
        return 0;
    }
    if (r->body_len + len + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 1024;
        while (cap < r->body_len + len + 1)
            cap *= 2;
        char *p = realloc(r->body, cap);
        if (!p)
            return 0;
        r->body = p;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
    r->body[r->body_len] = 0;
    return len;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userp)
{
    struct curlm_req *r = userp;
    size_t len = size * nmemb;
    /* A new status line starts a new block (after 100 Continue, redirects). */
    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        r->hdr_len = 0;
        r->headers_done = 0;
    }
    if (r->hdr_len + len <= MAX_HEADERS) {
        if (r->hdr_len + len + 1 > r->hdr_cap) {
            size_t cap = r->hdr_cap ? r->hdr_cap : 512;
            while (cap < r->hdr_len + len + 1)
                cap *= 2;
            char *p = realloc(r->hdr, cap);
            if (!p)
                return 0;
            r->hdr = p;
            r->hdr_cap = cap;
        }
        memcpy(r->hdr + r->hdr_len, data, len);
        r->hdr_len += len;
        r->hdr[r->hdr_len] = 0;
    }
    if ((len == 2 && data[0] == '\r' && data[1] == '\n') || (len == 1 && data[0] == '\n')) {
        long status = 0;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200) {
            r->status = status;
            r->headers_done = 1;
            wake_add(r->m, r);
        }
    }
    return len;
}

struct curlm_req *curlm_start(struct curlm *m, CURL *easy, struct curl_slist *headers,
                              const struct curlm_callbacks *cb, void *ud, const char *stat,
                              size_t max_body)
{
    struct curlm_req *r = m->closing ? NULL : calloc(1, sizeof *r);
    if (!r) {
        curl_easy_cleanup(easy);
        curl_slist_free_all(headers);
        return NULL;
    }
    r->m = m;
    r->easy = easy;
    r->headers = headers;
    r->cb = *cb;
    r->ud = ud;
    r->stat = stat;
    r->max_body = max_body ? max_body : DEFAULT_MAX_BODY;
    r->t0 = uv_hrtime();
    curl_easy_setopt(easy, CURLOPT_PRIVATE, r);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    if (headers)
        curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    r->next = m->reqs;
    if (m->reqs)
        m->reqs->prev = r;
    m->reqs = r;
    m->in_flight++;
    if (curl_multi_add_handle(m->multi, easy) != CURLM_OK) {
        req_free(r);
        return NULL;
    }
    return r;
}

void curlm_cancel(struct curlm_req *r)
{
    if (!r || r->in_done)
        return;
    curl_multi_remove_handle(r->m->multi, r->easy);
    req_free(r);
}

void curlm_wake(struct curlm_req *r)
{
    wake_add(r->m, r);
    uv_timer_start(&r->m->kick, on_kick, 0, 0);
}

void curlm_resume(struct curlm_req *r)
{
    if (!r->paused)
        return;
    r->paused = 0;
    /* May deliver the kept bytes to on_data at once; their wake runs from
     * the loop. */
    curl_easy_pause(r->easy, CURLPAUSE_CONT);
    uv_timer_start(&r->m->kick, on_kick, 0, 0);
}

int curlm_headers_done(struct curlm_req *r, long *status)
{
    if (status)
        *status = r->status;
    return r->headers_done;
}

const char *curlm_headers(struct curlm_req *r, size_t *len)
{
    *len = r->hdr_len;
    return r->hdr ? r->hdr : "";
}

static struct curlm_stat *stat_find(struct curlm *m, const char *name)
{
    for (size_t i = 0; i < m->nstats; i++)
        if (strcmp(m->stats[i].name, name) == 0)
            return &m->stats[i];
    if (m->nstats == m->cap_stats) {
        size_t cap = m->cap_stats ? m->cap_stats * 2 : 16;
        struct curlm_stat *p = realloc(m->stats, cap * sizeof *p);
        if (!p)
            return NULL;
        m->stats = p;
        m->cap_stats = cap;
    }
    struct curlm_stat *s = &m->stats[m->nstats++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    return s;
}

void curlm_stat_record(struct curlm *m, const char *name, double seconds, int ok)
{
    struct curlm_stat *s = stat_find(m, name);
    if (!s)
        return;
    s->count++;
    if (!ok)
        s->errors++;
    s->sum += seconds;
    int b = 0;
    while (b < CURLM_NBUCKETS && seconds > curlm_bucket_le[b])
        b++;
    s->buckets[b]++;
}

const struct curlm_stat *curlm_stats(struct curlm *m, size_t *n)
{
    *n = m->nstats;
    return m->stats;
}

size_t curlm_in_flight(struct curlm *m)
{
    return m->in_flight;
}

const char *curlm_describe(const struct curlm_result *r, char *buf, size_t len)
{
    const char *what = r->error && *r->error ? r->error : curl_easy_strerror(r->code);
    int os_errno = r->os_errno;
    if (os_errno && r->code == CURLE_COULDNT_CONNECT && !strstr(what, strerror(os_errno)))
        snprintf(buf, len, "%s (%s)", what, strerror(os_errno));
    else
        snprintf(buf, len, "%s", what);
    return buf;
}

/* Ends r: takes it out of the multi and tells its owner. */
static void req_finish(struct curlm_req *r, CURLcode code, const char *why)
{
    struct curlm *m = r->m;
    curl_multi_remove_handle(m->multi, r->easy);
    /* Data that came with the end is delivered before the end. */
    if (r->in_wake) {
        wake_remove(m, r);
        r->cb.on_wake(r->ud);
    }
    struct curlm_result res = { 0 };
    res.code = code;
    res.easy = r->easy;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &res.status);
    if (why)
        res.error = why;
    else if (r->body_overflow)
        res.error = "response body too large";
    else
        res.error = code == CURLE_OK ? "" : r->errbuf;
    res.body = r->body ? r->body : "";
    res.body_len = r->body_len;
    res.headers = r->hdr ? r->hdr : "";
    res.headers_len = r->hdr_len;
    long os_errno = 0;
    if (code != CURLE_OK)
        curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &os_errno);
    res.os_errno = (int)os_errno;
    res.seconds = (double)(uv_hrtime() - r->t0) / 1e9;
    if (r->stat)
        curlm_stat_record(m, r->stat, res.seconds, code == CURLE_OK);
    r->in_done = 1;
    r->cb.on_done(r->ud, &res);
    req_free(r);
}

static void after_action(struct curlm *m)
{
    for (;;) {
        struct curlm_req *r = m->wake_head;
        if (r) {
            m->wake_head = r->wake_next;
            if (!m->wake_head)
                m->wake_tail = NULL;
            r->wake_next = NULL;
            r->in_wake = 0;
            r->cb.on_wake(r->ud);       /* may cancel r */
            continue;
        }
        int pending;
        CURLMsg *msg = curl_multi_info_read(m->multi, &pending);
        if (!msg)
            break;
        if (msg->msg != CURLMSG_DONE)
            continue;
        void *p = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &p);
        req_finish(p, msg->data.result, NULL);
    }
}

static void timer_closed(uv_handle_t *h)
{
    struct curlm *m = h->data;
    if (--m->handles_open == 0 && m->closing)
        free(m);
}

void curlm_free(struct curlm *m)
{
    if (!m)
        return;
    m->closing = 1;
    while (m->reqs)
        req_finish(m->reqs, CURLE_ABORTED_BY_CALLBACK, "shutting down");
    curl_multi_cleanup(m->multi);           /* may close sockets through on_socket */
    m->multi = NULL;
    while (m->socks)
        sock_close(m, m->socks);
    free(m->stats);
    m->stats = NULL;
    uv_timer_stop(&m->timer);
    uv_timer_stop(&m->kick);
    uv_close((uv_handle_t *)&m->timer, timer_closed);
    uv_close((uv_handle_t *)&m->kick, timer_closed);
    curl_global_cleanup();
}
