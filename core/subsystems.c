/* subsystems.c: opening the server's subsystems in order, closing them in
 * reverse. */
#include "agent.h"
#include "console.h"
#include "curlm.h"
#include "httpd.h"
#include "podman.h"
#include "sdnotify.h"
#include "subsystems.h"
#include "watch.h"

int subsystems_open(struct agent *a)
{
    if (curlm_agent_open(a) != 0 || podman_agent_open(a) != 0)
        return -1;
    if (console_open(a) != 0)
        return -1;
    if (httpd_agent_open(a) != 0)
        return -1;
    if (watch_agent_open(a) != 0)
        return -1;
    sdnotify_watchdog_start(a->loop, NULL);
    return 0;
}

int subsystems_open_client(struct agent *a)
{
    return curlm_agent_open(a);
}

void subsystems_stop_accepting(struct agent *a)
{
    watch_close(a);         /* no reloads while stopping */
    httpd_agent_stop_accepting(a);
    console_stop(a);
}

void subsystems_close(struct agent *a)
{
    sdnotify_watchdog_stop();
    watch_close(a);
    httpd_agent_close(a);
    console_close(a);
    curlm_agent_close(a);   /* ends the requests in flight, Podman's too */
    podman_agent_close(a);
}
