/* subsystems.h: the subsystems of the server, opened and closed in order.
 * subsystems.c is the one list; each subsystem keeps its state in struct
 * agent and is skipped when the config leaves it out. */
#ifndef MCP_SUBSYSTEMS_H
#define MCP_SUBSYSTEMS_H

struct agent;

/* The server's subsystems. */
int subsystems_open(struct agent *a);
/* Only what a client program (the `mcp` CLI, commands) needs: curl. */
int subsystems_open_client(struct agent *a);
void subsystems_stop_accepting(struct agent *a);
void subsystems_close(struct agent *a);

#endif
