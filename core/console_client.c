/* console_client.c: `mcp-agent console`, the prompt side of the console.
 *
 * Connects to the agent's console socket, then either evaluates one
 * expression (-e, for scripts) or runs a line editor: libedit with history in
 * ~/.mcp_agent_history, continuation lines while a chunk is incomplete, and
 * Tab completion asked of the agent. The protocol is in console.h.
 *
 * Ctrl-C is a SIGINT in both states and reaches us through a self-pipe: at
 * the prompt our read function sees it and ends el_gets() (the line is
 * dropped); during an evaluation the wait loop sends INTERRUPT. libedit's own
 * signal handling stays off: it re-raises signals to the process group. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <langinfo.h>
#include <limits.h>
#include <locale.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#include <histedit.h>

#include "commands.h"
#include "config.h"
#include "console.h"

#define HELLO_TIMEOUT_MS 5000
#define COMPLETE_TIMEOUT_MS 3000
#define CLIENT_MAX_FRAME (CONSOLE_MAX_REPLY + 4096)
#define HISTORY_SIZE 1000

enum { RF_FRAME = 1, RF_TIMEOUT = 0, RF_CLOSED = -1, RF_SIGINT = -2, RF_ERROR = -3 };

struct frame {
    int type;
    char *data;                 /* NUL-terminated copy of the payload */
    size_t len;
};

struct client {
    int fd;
    const char *path;
    char *rbuf;
    size_t rlen, rcap;
    EditLine *el;
    History *hist;
    char hist_path[PATH_MAX];
    const char *prompt;
    int tty;
    int interrupted;            /* Ctrl-C at the prompt */
    int lost;                   /* the agent closed the connection */
};

static volatile sig_atomic_t got_sigint, got_sigwinch;
static int sig_pipe[2] = { -1, -1 };

static void on_signal(int signo)
{
    int saved = errno;
    if (signo == SIGINT)
        got_sigint = 1;
    else if (signo == SIGWINCH)
        got_sigwinch = 1;
    if (sig_pipe[1] >= 0 && write(sig_pipe[1], "", 1) < 0) {
        /* full pipe: a wake-up is already pending */
    }
    errno = saved;
}

static int signals_setup(void)
{
    if (pipe2(sig_pipe, O_NONBLOCK | O_CLOEXEC) != 0)
        return -1;
    struct sigaction sa = { 0 };
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;            /* no SA_RESTART: a blocked poll() must wake */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGWINCH, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static void drain_sig_pipe(void)
{
    char buf[64];
    while (read(sig_pipe[0], buf, sizeof buf) > 0) {
    }
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The socket. */

static int client_connect(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "mcp-agent console: socket path %s is too long (at most %zu bytes)\n",
                path, sizeof sa.sun_path - 1);
        return -1;
    }
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "mcp-agent console: socket: %s\n", strerror(errno));
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        if (e == ENOENT || e == ECONNREFUSED)
            fprintf(stderr, "mcp-agent console: is the agent running? socket %s: %s\n", path,
                    strerror(e));
        else if (e == EACCES || e == EPERM)
            fprintf(stderr, "mcp-agent console: socket %s: %s (the console is open to the "
                            "agent's own user and root only)\n", path, strerror(e));
        else
            fprintf(stderr, "mcp-agent console: socket %s: %s\n", path, strerror(e));
        close(fd);
        return -1;
    }
    return fd;
}

static int send_frame(struct client *c, int type, const char *data, size_t len)
{
    size_t n;
    char *buf = console_frame_encode(type, data, len, &n);
    if (!buf)
        return -1;
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(c->fd, buf + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            free(buf);
            c->lost = 1;
            return -1;
        }
        off += (size_t)w;
    }
    free(buf);
    return 0;
}

/* Reads whatever the socket has into rbuf. Returns 1, or RF_CLOSED. */
static int fill(struct client *c)
{
    if (c->rcap - c->rlen < 65536) {
        size_t cap = c->rcap ? c->rcap * 2 : 131072;
        char *p = realloc(c->rbuf, cap);
        if (!p)
            return RF_CLOSED;
        c->rbuf = p;
        c->rcap = cap;
    }
    ssize_t n;
    do
        n = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
    while (n < 0 && errno == EINTR);
    if (n <= 0) {
        c->lost = 1;
        return RF_CLOSED;
    }
    c->rlen += (size_t)n;
    return 1;
}

/* Takes one complete frame out of rbuf. Returns RF_FRAME, 0 when none is
 * complete yet, or RF_ERROR. */
static int take_frame(struct client *c, struct frame *f)
{
    int type;
    const char *data, *err = NULL;
    size_t dlen;
    long used = console_frame_parse(c->rbuf, c->rlen, CLIENT_MAX_FRAME, &type, &data, &dlen,
                                    &err);
    if (used == 0)
        return 0;
    if (used < 0) {
        fprintf(stderr, "mcp-agent console: protocol error from the agent: %s\n", err);
        return RF_ERROR;
    }
    f->type = type;
    f->len = dlen;
    f->data = malloc(dlen + 1);
    if (!f->data)
        return RF_ERROR;
    memcpy(f->data, data, dlen);
    f->data[dlen] = 0;
    memmove(c->rbuf, c->rbuf + used, c->rlen - (size_t)used);
    c->rlen -= (size_t)used;
    return RF_FRAME;
}

/* Waits for the next frame, at most timeout_ms (-1: no limit). A Ctrl-C
 * meanwhile returns RF_SIGINT. */
static int read_frame(struct client *c, struct frame *f, int timeout_ms)
{
    int64_t deadline = timeout_ms >= 0 ? now_ms() + timeout_ms : 0;
    for (;;) {
        int rc = c->rlen ? take_frame(c, f) : 0;
        if (rc != 0)
            return rc;
        if (got_sigint) {
            got_sigint = 0;
            return RF_SIGINT;
        }
        int wait = -1;
        if (timeout_ms >= 0) {
            int64_t left = deadline - now_ms();
            if (left <= 0)
                return RF_TIMEOUT;
            wait = (int)left;
        }
        struct pollfd p[2] = { { c->fd, POLLIN, 0 }, { sig_pipe[0], POLLIN, 0 } };
        int r = poll(p, 2, wait);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return RF_ERROR;
        if (p[1].revents & POLLIN)
            drain_sig_pipe();
        if ((p[0].revents & (POLLIN | POLLHUP | POLLERR)) && fill(c) < 0)
            return RF_CLOSED;
    }
}

static void write_out(FILE *f, const char *data, size_t len)
{
    fwrite(data, 1, len, f);
    if (len && data[len - 1] != '\n')
        fputc('\n', f);
    fflush(f);
}

/* Sends a chunk and shows what comes back until the evaluation ends.
 * Returns CONSOLE_RESULT, CONSOLE_ERROR, CONSOLE_MORE, or -1 when the
 * connection is lost. */
static int client_eval(struct client *c, const char *text, size_t len, int interactive)
{
    if (send_frame(c, CONSOLE_EVAL, text, len) != 0)
        return -1;
    int interrupts = 0;
    for (;;) {
        struct frame f;
        int rc = read_frame(c, &f, -1);
        if (rc == RF_SIGINT) {
            if (send_frame(c, CONSOLE_INTERRUPT, "", 0) != 0)
                return -1;
            if (interactive && c->tty)
                fputc('\n', stdout);      /* after the terminal's "^C" */
            if (++interrupts == 2)
                fprintf(stderr, "(interrupt sent again; code that computes without waiting "
                                "ends only at its instruction budget)\n");
            continue;
        }
        if (rc != RF_FRAME)
            return -1;
        int type = f.type;
        switch (type) {
        case CONSOLE_OUTPUT:
            fwrite(f.data, 1, f.len, stdout);
            fflush(stdout);
            break;
        case CONSOLE_RESULT:
            if (f.len)
                write_out(stdout, f.data, f.len);
            break;
        case CONSOLE_ERROR:
            fflush(stdout);
            write_out(stderr, f.data, f.len);
            break;
        case CONSOLE_MORE:
            if (!interactive) {
                fprintf(stderr, "incomplete input: ");
                write_out(stderr, f.data, f.len);
            }
            break;
        default:
            break;      /* a late answer to an abandoned completion */
        }
        free(f.data);
        if (type == CONSOLE_RESULT || type == CONSOLE_ERROR || type == CONSOLE_MORE)
            return type;
    }
}

/* The line editor. */

static char *prompt_fn(EditLine *el)
{
    struct client *c;
    el_get(el, EL_CLIENTDATA, &c);
    return (char *)c->prompt;
}

/* Frames that arrive at the prompt: the agent is stopping, or a stray one. */
static void idle_frames(struct client *c)
{
    struct frame f;
    while (take_frame(c, &f) == RF_FRAME) {
        if (f.type == CONSOLE_OUTPUT || f.type == CONSOLE_ERROR) {
            fputc('\n', stderr);
            write_out(stderr, f.data, f.len);
            el_set(c->el, EL_REFRESH);
        }
        free(f.data);
    }
}

/* libedit's read function: one character from the terminal, or 0 (el_gets
 * returns NULL) on end of input, Ctrl-C or a lost connection. */
static int client_getc(EditLine *el, wchar_t *wc)
{
    struct client *c;
    el_get(el, EL_CLIENTDATA, &c);
    char buf[MB_LEN_MAX];
    size_t n = 0;
    for (;;) {
        if (got_sigint) {
            got_sigint = 0;
            c->interrupted = 1;
            return 0;
        }
        if (got_sigwinch) {
            got_sigwinch = 0;
            el_resize(el);
        }
        struct pollfd p[3] = { { STDIN_FILENO, POLLIN, 0 }, { sig_pipe[0], POLLIN, 0 },
                               { c->fd, POLLIN, 0 } };
        int r = poll(p, 3, -1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (p[1].revents & POLLIN) {
            drain_sig_pipe();
            continue;
        }
        if (p[2].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (fill(c) < 0)
                return 0;
            idle_frames(c);
        }
        if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        ssize_t k = read(STDIN_FILENO, buf + n, 1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k == 0 ? 0 : -1;
        n++;
        mbstate_t mbs;
        memset(&mbs, 0, sizeof mbs);
        size_t rc = mbrtowc(wc, buf, n, &mbs);
        if (rc == (size_t)-2 && n < sizeof buf)
            continue;           /* the rest of a multibyte character follows */
        if (rc == (size_t)-1 || rc == (size_t)-2) {
            n = 0;              /* not a character here: drop the bytes */
            continue;
        }
        return 1;
    }
}

static int word_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '.' || ch == ':';
}

static void list_candidates(char **cand, size_t n)
{
    size_t width = 0;
    for (size_t i = 0; i < n; i++)
        if (strlen(cand[i]) > width)
            width = strlen(cand[i]);
    struct winsize ws;
    size_t cols = 80;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        cols = ws.ws_col;
    size_t per_line = cols / (width + 2);
    if (per_line == 0)
        per_line = 1;
    fputc('\n', stdout);
    for (size_t i = 0; i < n; i++) {
        int last = (i + 1) % per_line == 0 || i + 1 == n;
        printf("%-*s%s", last ? 0 : (int)(width + 2), cand[i], last ? "\n" : "");
    }
    fflush(stdout);
}

/* Tab: asks the agent for the names that complete the word before the
 * cursor; inserts what they have in common, or lists them. */
static unsigned char client_complete(EditLine *el, int ch)
{
    (void)ch;
    struct client *c;
    el_get(el, EL_CLIENTDATA, &c);
    const LineInfo *li = el_line(el);
    const char *start = li->cursor;
    while (start > li->buffer && word_char(start[-1]))
        start--;
    size_t wlen = (size_t)(li->cursor - start);
    if (send_frame(c, CONSOLE_COMPLETE, start, wlen) != 0)
        return CC_EOF;
    struct frame f;
    for (;;) {
        int rc = read_frame(c, &f, COMPLETE_TIMEOUT_MS);
        if (rc == RF_FRAME && f.type == CONSOLE_COMPLETIONS)
            break;
        if (rc == RF_FRAME) {
            free(f.data);
            continue;
        }
        if (rc == RF_SIGINT) {
            c->interrupted = 1;
            return CC_EOF;
        }
        return rc == RF_TIMEOUT ? CC_REFRESH_BEEP : CC_EOF;
    }
    size_t n = 0, cap = 16;
    char **cand = malloc(cap * sizeof *cand);
    for (char *p = f.data, *end; cand && f.len && p; p = end ? end + 1 : NULL) {
        end = strchr(p, '\n');
        if (end)
            *end = 0;
        if (n == cap) {
            char **more = realloc(cand, (cap *= 2) * sizeof *cand);
            if (!more)
                break;
            cand = more;
        }
        cand[n++] = p;
    }
    unsigned char ret = CC_REFRESH;
    if (!cand || n == 0) {
        ret = CC_REFRESH_BEEP;
    } else {
        size_t common = strlen(cand[0]);
        for (size_t i = 1; i < n; i++) {
            size_t j = 0;
            while (j < common && cand[i][j] == cand[0][j])
                j++;
            common = j;
        }
        /* Candidates repeat the word: only the rest is inserted. */
        if (common > wlen && strncmp(cand[0], start, wlen) == 0) {
            char save = cand[0][common];
            cand[0][common] = 0;
            el_insertstr(el, cand[0] + wlen);
            cand[0][common] = save;
        } else if (n > 1) {
            list_candidates(cand, n);
            ret = CC_REDISPLAY;
        }
    }
    free(cand);
    free(f.data);
    return ret;
}

static void history_setup(struct client *c)
{
    HistEvent ev;
    c->hist = history_init();
    history(c->hist, &ev, H_SETSIZE, HISTORY_SIZE);
    history(c->hist, &ev, H_SETUNIQUE, 1);
    const char *home = getenv("HOME");
    if (!home || !*home) {
        struct passwd *pw = getpwuid(getuid());
        home = pw ? pw->pw_dir : NULL;
    }
    if (home)
        snprintf(c->hist_path, sizeof c->hist_path, "%s/.mcp_agent_history", home);
    if (c->hist_path[0])
        history(c->hist, &ev, H_LOAD, c->hist_path);
}

/* Adds a line to the history and writes the file at once, so that a second
 * console, or the next one, has it. The file is read again first, so that
 * consoles open side by side do not drop each other's lines. */
static void history_add(struct client *c, const char *line)
{
    HistEvent ev;
    if (c->hist_path[0]) {
        history(c->hist, &ev, H_CLEAR);
        history(c->hist, &ev, H_LOAD, c->hist_path);
    }
    history(c->hist, &ev, H_ENTER, line);
    if (c->hist_path[0]) {
        mode_t old = umask(077);      /* what was typed may hold secrets */
        if (history(c->hist, &ev, H_SAVE, c->hist_path) < 0 && c->tty)
            fprintf(stderr, "mcp-agent console: cannot write %s\n", c->hist_path);
        umask(old);
    }
}

static void editor_setup(struct client *c)
{
    c->el = el_init("mcp-agent", stdin, stdout, stderr);
    el_set(c->el, EL_CLIENTDATA, c);
    el_set(c->el, EL_PROMPT, prompt_fn);
    el_set(c->el, EL_EDITOR, "emacs");
    el_set(c->el, EL_SIGNAL, 0);
    el_set(c->el, EL_GETCFN, client_getc);
    history_setup(c);
    el_set(c->el, EL_HIST, history, c->hist);
    /* libedit copies these two strings and never frees them (its el.c says
     * so): LeakSanitizer reports 132 bytes at exit, once per process. */
    el_set(c->el, EL_ADDFN, "mcp-complete", "Complete a Lua name", client_complete);
    el_set(c->el, EL_BIND, "^I", "mcp-complete", NULL);
    /* Home, End and Delete as terminals send them; libedit binds only some. */
    static const char *const keys[][2] = {
        { "\\e[1~", "ed-move-to-beg" }, { "\\e[H", "ed-move-to-beg" },
        { "\\eOH", "ed-move-to-beg" },  { "\\e[4~", "ed-move-to-end" },
        { "\\e[F", "ed-move-to-end" },  { "\\eOF", "ed-move-to-end" },
        { "\\e[3~", "ed-delete-next-char" },
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        el_set(c->el, EL_BIND, keys[i][0], keys[i][1], NULL);
    el_source(c->el, NULL);     /* ~/.editrc, as every libedit program reads */
}

static int blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t')
            return 0;
    return 1;
}

static int is_quit(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return strcmp(s, ":quit") == 0 || strcmp(s, ":q") == 0 || strcmp(s, ":exit") == 0;
}

static int client_repl(struct client *c, const char *hello)
{
    c->tty = isatty(STDIN_FILENO);
    printf("%s \xe2\x80\x94 :help for help\n", hello);
    fflush(stdout);
    editor_setup(c);
    char *chunk = NULL;
    size_t clen = 0, ccap = 0;
    int rc = 0;
    for (;;) {
        c->prompt = clen ? ">> " : "> ";
        c->interrupted = 0;
        int n = 0;
        const char *got = el_gets(c->el, &n);
        if (c->lost) {
            fprintf(stderr, "\nmcp-agent console: the agent closed the connection\n");
            rc = 1;
            break;
        }
        if (!got) {
            if (c->interrupted) {
                fputs("^C\n", stdout);
                fflush(stdout);
                clen = 0;
                continue;
            }
            if (c->tty)
                fputc('\n', stdout);
            break;
        }
        size_t len = strlen(got);
        while (len && (got[len - 1] == '\n' || got[len - 1] == '\r'))
            len--;
        char *line = strndup(got, len);
        if (!line)
            break;
        if (c->tty && !blank(line, len))
            history_add(c, line);
        if (clen == 0 && (blank(line, len) || is_quit(line))) {
            int quit = is_quit(line);
            free(line);
            if (quit)
                break;
            continue;
        }
        if (clen + len + 2 > ccap) {
            ccap = (clen + len + 2) * 2;
            char *p = realloc(chunk, ccap);
            if (!p) {
                free(line);
                break;
            }
            chunk = p;
        }
        if (clen)
            chunk[clen++] = '\n';
        memcpy(chunk + clen, line, len);
        clen += len;
        free(line);
        int t = client_eval(c, chunk, clen, 1);
        if (t < 0) {
            fprintf(stderr, "mcp-agent console: the agent closed the connection\n");
            rc = 1;
            break;
        }
        if (t != CONSOLE_MORE)
            clen = 0;
    }
    free(chunk);
    el_end(c->el);
    history_end(c->hist);
    return rc;
}

/* Makes the editor handle UTF-8 even when the environment says "C". */
static void locale_setup(void)
{
    setlocale(LC_CTYPE, "");
    const char *cs = nl_langinfo(CODESET);
    if (!cs || strcmp(cs, "UTF-8") != 0)
        setlocale(LC_CTYPE, "C.UTF-8");
}

static int console_run(const char *path, const char *expr)
{
    struct client cl = { .fd = -1, .path = path }, *c = &cl;
    if (signals_setup() != 0) {
        fprintf(stderr, "mcp-agent console: pipe: %s\n", strerror(errno));
        return 1;
    }
    c->fd = client_connect(path);
    if (c->fd < 0)
        return 1;
    struct frame f = { 0 };
    int rc = read_frame(c, &f, HELLO_TIMEOUT_MS);
    if (rc != RF_FRAME || f.type != CONSOLE_HELLO) {
        if (rc == RF_FRAME && f.type == CONSOLE_ERROR)
            fprintf(stderr, "mcp-agent console: the agent refused the connection: %s\n",
                    f.data);
        else if (rc == RF_TIMEOUT)
            fprintf(stderr, "mcp-agent console: no answer from the agent on %s within %d s\n",
                    path, HELLO_TIMEOUT_MS / 1000);
        else if (rc == RF_CLOSED)
            fprintf(stderr, "mcp-agent console: the agent closed the connection on %s "
                            "before greeting\n", path);
        else if (rc == RF_FRAME)
            fprintf(stderr, "mcp-agent console: unexpected first frame '%c' from %s\n",
                    f.type, path);
        free(f.data);
        free(c->rbuf);
        close(c->fd);
        return 1;
    }
    int exit_code;
    if (expr) {
        int t = client_eval(c, expr, strlen(expr), 0);
        if (t < 0)
            fprintf(stderr, "mcp-agent console: the agent closed the connection\n");
        exit_code = t == CONSOLE_RESULT ? 0 : 1;
    } else {
        locale_setup();
        exit_code = client_repl(c, f.data);
    }
    free(f.data);
    free(c->rbuf);
    close(c->fd);
    return exit_code;
}

int cmd_console(const struct command *cmd, int argc, char **argv)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "socket", required_argument, NULL, 's' },
        { "eval", required_argument, NULL, 'e' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *config_path = NULL, *socket_path = NULL, *expr = NULL;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "+c:s:e:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config_path = optarg;
            break;
        case 's':
            socket_path = optarg;
            break;
        case 'e':
            expr = optarg;
            break;
        case 'h':
            return command_help(cmd, stdout, 0);
        default:
            return command_help(cmd, stderr, 2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mcp-agent console: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if (config_path && socket_path) {
        fprintf(stderr, "mcp-agent console: give --config or --socket, not both\n");
        return 2;
    }
    struct config *cfg = NULL;
    if (!socket_path) {
        char err[1024];
        if (!config_path)
            config_path = getenv("MCP_AGENT_CONFIG");
        cfg = config_path ? config_load(config_path, err, sizeof err)
                          : config_parse("", 0, "<defaults>", err, sizeof err);
        if (!cfg) {
            fprintf(stderr, "mcp-agent console: %s\n", err);
            return 1;
        }
        socket_path = cfg->console_socket;
        if (!socket_path || !*socket_path) {
            fprintf(stderr, "mcp-agent console: the console is disabled in %s "
                            "([console] socket is empty)\n", cfg->path);
            config_free(cfg);
            return 1;
        }
    }
    int rc = console_run(socket_path, expr);
    config_free(cfg);
    return rc;
}
