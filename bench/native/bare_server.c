/*
 * bare_server: the floor for any jansson-based JSON-RPC gateway.
 *
 *     bare_server --socket PATH [--seconds N]
 *
 * Listens on a Unix socket and serves newline-delimited JSON-RPC 2.0 on every connection, on one
 * thread (epoll, non-blocking sockets), as the gateway does. Every request line is parsed with
 * jansson; `tcp.getState` gets {"jsonrpc":"2.0","result":{"state":4,"name":"ESTABLISHED"},"id":ID}
 * built and printed with jansson (json_dumpb, compact). Any other method gets a -32601 error, an
 * unparsable line -32700 (also through jansson). Nothing else: no validation, no handles, no TCP.
 *
 * Bounded: it exits after --seconds (default 300) or on SIGTERM/SIGINT. Prints "ready" on stdout
 * once listening.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define READ_CHUNK (64 * 1024)
#define MAX_LINE (16 * 1024 * 1024)
#define OUT_PAUSE (4 * 1024 * 1024) /* stop reading a client whose answers pile up beyond this */
#define MAX_CONNS 1024

struct buf {
    char *data;
    size_t len, cap;
};

struct conn {
    int fd;
    struct buf in, out;
    size_t out_off;
    int want_out; /* EPOLLOUT registered */
    int paused;   /* EPOLLIN removed because out is large */
};

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void buf_reserve(struct buf *b, size_t extra) {
    if (b->len + extra <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        perror("realloc");
        exit(1);
    }
    b->data = p;
    b->cap = cap;
}

static void buf_append(struct buf *b, const char *p, size_t n) {
    buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* Appends the compact JSON text of `v` plus a newline to `out` (json_dumpb straight into it). */
static void emit(struct buf *out, json_t *v) {
    size_t need = json_dumpb(v, NULL, 0, JSON_COMPACT);
    if (need == 0) {
        fprintf(stderr, "bare_server: json_dumpb failed\n");
        exit(1);
    }
    buf_reserve(out, need + 1);
    json_dumpb(v, out->data + out->len, need, JSON_COMPACT);
    out->len += need;
    out->data[out->len++] = '\n';
}

static json_t *error_answer(int code, const char *message, json_t *id) {
    json_t *err = json_pack("{s:i,s:s}", "code", code, "message", message);
    json_t *ans = json_object();
    json_object_set_new(ans, "jsonrpc", json_string("2.0"));
    json_object_set_new(ans, "error", err);
    json_object_set(ans, "id", id ? id : json_null());
    return ans;
}

static void answer_line(struct buf *out, const char *line, size_t n) {
    json_error_t jerr;
    json_t *req = json_loadb(line, n, 0, &jerr);
    json_t *ans;
    if (!req || !json_is_object(req)) {
        ans = error_answer(-32700, "Parse error", NULL);
    } else {
        json_t *id = json_object_get(req, "id");
        const char *method = json_string_value(json_object_get(req, "method"));
        if (method && strcmp(method, "tcp.getState") == 0) {
            json_t *result = json_object();
            json_object_set_new(result, "state", json_integer(4));
            json_object_set_new(result, "name", json_string("ESTABLISHED"));
            ans = json_object();
            json_object_set_new(ans, "jsonrpc", json_string("2.0"));
            json_object_set_new(ans, "result", result);
            json_object_set(ans, "id", id ? id : json_null());
        } else {
            ans = error_answer(-32601, "Method not found", id);
        }
    }
    emit(out, ans);
    json_decref(ans);
    if (req)
        json_decref(req);
}

/* Answers every complete line in c->in; keeps the unfinished tail. */
static void process_input(struct conn *c) {
    size_t start = 0;
    for (;;) {
        char *nl = memchr(c->in.data + start, '\n', c->in.len - start);
        if (!nl)
            break;
        size_t end = (size_t)(nl - c->in.data);
        size_t n = end - start;
        if (n && c->in.data[end - 1] == '\r')
            n--;
        if (n)
            answer_line(&c->out, c->in.data + start, n);
        start = end + 1;
    }
    if (start) {
        memmove(c->in.data, c->in.data + start, c->in.len - start);
        c->in.len -= start;
    }
    if (c->in.len > MAX_LINE)
        c->in.len = 0; /* an over-long line is dropped (never happens in the bench) */
}

static void update_events(int ep, struct conn *c) {
    size_t pending = c->out.len - c->out_off;
    int want_out = pending > 0;
    int paused = pending > OUT_PAUSE;
    if (want_out == c->want_out && paused == c->paused)
        return;
    struct epoll_event ev = {.events = (paused ? 0u : EPOLLIN) | (want_out ? EPOLLOUT : 0u), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = want_out;
    c->paused = paused;
}

/* Writes what it can; returns -1 when the connection is gone. */
static int flush_out(struct conn *c) {
    while (c->out_off < c->out.len) {
        ssize_t k = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (k > 0) {
            c->out_off += (size_t)k;
        } else if (k < 0 && errno == EINTR) {
            continue;
        } else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;
        } else {
            return -1;
        }
    }
    c->out.len = c->out_off = 0;
    return 0;
}

static void close_conn(int ep, struct conn *c, int *nconns) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in.data);
    free(c->out.data);
    free(c);
    (*nconns)--;
}

int main(int argc, char **argv) {
    const char *path = NULL;
    double seconds = 300;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc)
            path = argv[++i];
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: bare_server --socket PATH [--seconds N]\n");
            return 2;
        }
    }
    if (!path || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        fprintf(stderr, "bare_server: --socket PATH is required (and short)\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, path);
    unlink(path);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sun, sizeof sun) < 0 || listen(lfd, 128) < 0) {
        perror("bare_server: listen");
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    printf("ready\n");
    fflush(stdout);

    char *chunk = malloc(READ_CHUNK);
    struct epoll_event events[64];
    int nconns = 0;
    double deadline = now_s() + seconds;
    while (!stop_flag && now_s() < deadline) {
        int n = epoll_wait(ep, events, 64, 200);
        if (n < 0 && errno == EINTR)
            continue;
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (!c) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0)
                        break;
                    if (nconns >= MAX_CONNS) {
                        close(fd);
                        continue;
                    }
                    struct conn *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                    nconns++;
                }
                continue;
            }
            int gone = 0;
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                /* Read what is there now (bounded: a few chunks per wake-up, as a fair loop does). */
                for (int r = 0; r < 4 && !c->paused; r++) {
                    ssize_t k = recv(c->fd, chunk, READ_CHUNK, 0);
                    if (k > 0) {
                        buf_append(&c->in, chunk, (size_t)k);
                        if ((size_t)k < READ_CHUNK)
                            break;
                    } else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
                        break;
                    } else {
                        gone = 1;
                        break;
                    }
                }
                process_input(c);
            }
            if (!gone && flush_out(c) < 0)
                gone = 1;
            if (gone) {
                close_conn(ep, c, &nconns);
                continue;
            }
            update_events(ep, c);
        }
    }
    close(lfd);
    unlink(path);
    return 0;
}
