/* sdnotify.h: telling systemd how the agent is (sd_notify without
 * libsystemd): READY=1 once it serves, STATUS=..., STOPPING=1, and the
 * WATCHDOG=1 pings that let systemd restart an agent whose loop is stuck. */
#ifndef MCP_SDNOTIFY_H
#define MCP_SDNOTIFY_H

#include <uv.h>

/* Sends text (one or more "KEY=value" lines) to $NOTIFY_SOCKET, without
 * blocking. Returns 1 when sent, 0 when not run by systemd (no
 * NOTIFY_SOCKET), or a negative errno when it could not be sent. */
int sdnotify_send(const char *text);

/* When systemd asked for a watchdog (WATCHDOG_USEC set, and WATCHDOG_PID
 * unset or this process), pings WATCHDOG=1 from a timer on loop at half
 * the interval, starting now. Returns the ping interval in seconds, or 0
 * when no watchdog is asked for (then *why, when not NULL, says why). */
double sdnotify_watchdog_start(uv_loop_t *loop, const char **why);
/* Stops the pings. Safe when they were never started. */
void sdnotify_watchdog_stop(void);

#endif
