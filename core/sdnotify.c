/* sdnotify.c: the sd_notify protocol by hand: one datagram per message to
 * the unix socket named by $NOTIFY_SOCKET ("@name" for the abstract
 * namespace, else a path).
 *
 * The watchdog is the process's, as systemd sees it (WATCHDOG_PID names a
 * process), so its timer lives here rather than in struct agent, like the
 * log's settings. It runs on the loop: if the loop stops turning, the pings
 * stop and systemd restarts the agent after WatchdogSec. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "sdnotify.h"

static struct {
    uv_timer_t *timer;
} sdnotify_wd;

int sdnotify_send(const char *text)
{
    const char *sock = getenv("NOTIFY_SOCKET");
    if (!sock || !*sock)
        return 0;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t len = strlen(sock);
    if ((sock[0] != '/' && sock[0] != '@') || len < 2 || len > sizeof sa.sun_path)
        return -EAFNOSUPPORT;   /* e.g. "vsock:..." of a VM's manager: not ours */
    memcpy(sa.sun_path, sock, len);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = 0;     /* the abstract namespace */
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    size_t n = strlen(text);
    ssize_t sent = sendto(fd, text, n, MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
    int err = errno;
    close(fd);
    if (sent != (ssize_t)n) {
        log_debug("sd_notify %s: %s", sock, sent < 0 ? strerror(err) : "short write");
        return sent < 0 ? -err : -EIO;
    }
    return 1;
}

static void sdnotify_ping(uv_timer_t *h)
{
    (void)h;
    sdnotify_send("WATCHDOG=1");
}

static void sdnotify_timer_free(uv_handle_t *h)
{
    free(h);
}

double sdnotify_watchdog_start(uv_loop_t *loop, const char **why)
{
    const char *usec_s = getenv("WATCHDOG_USEC"), *pid_s = getenv("WATCHDOG_PID");
    const char *dummy;
    if (!why)
        why = &dummy;
    if (!usec_s || !*usec_s) {
        *why = "WATCHDOG_USEC is not set";
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long usec = strtoull(usec_s, &end, 10);
    if (errno || *end || usec == 0) {
        *why = "WATCHDOG_USEC is not a positive number";
        return 0;
    }
    if (pid_s && *pid_s) {
        long pid = strtol(pid_s, &end, 10);
        if (*end || pid != (long)getpid()) {
            *why = "WATCHDOG_PID names another process";
            return 0;
        }
    }
    if (!getenv("NOTIFY_SOCKET")) {
        *why = "NOTIFY_SOCKET is not set";
        return 0;
    }
    uint64_t interval = usec / 2000;    /* half of it, in ms */
    if (interval == 0)
        interval = 1;
    if (!sdnotify_wd.timer) {
        uv_timer_t *t = malloc(sizeof *t);
        if (!t) {
            *why = "out of memory";
            return 0;
        }
        uv_timer_init(loop, t);
        uv_unref((uv_handle_t *)t);     /* pings alone do not keep the loop running */
        sdnotify_wd.timer = t;
    }
    sdnotify_send("WATCHDOG=1");
    uv_timer_start(sdnotify_wd.timer, sdnotify_ping, interval, interval);
    log_debug("systemd watchdog: pinging every %llu ms", (unsigned long long)interval);
    return (double)interval / 1000.0;
}

void sdnotify_watchdog_stop(void)
{
    uv_timer_t *t = sdnotify_wd.timer;
    if (!t)
        return;
    sdnotify_wd.timer = NULL;
    uv_timer_stop(t);
    if (!uv_is_closing((uv_handle_t *)t))
        uv_close((uv_handle_t *)t, sdnotify_timer_free);
}
