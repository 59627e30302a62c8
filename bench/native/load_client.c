/*
 * load_client: a native load generator for tcpgw benchmarks (bench/run.py builds and runs it).
 *
 *   load_client pipeline --socket PATH --conns N --window W --count C --seconds S [--gateway]
 *   load_client latency  --socket PATH --count C --seconds S [--gateway]
 *   load_client burst    --socket PATH --count B --backlog K --seconds S      (the gateway accepts)
 *   load_client burst    --plain        --count B --backlog K --seconds S     (a plain accept loop)
 *
 * --server-pid PID: also report the CPU seconds that process (the server) used during the
 *   measured phase, as "server_cpu_s" (the plain burst always reports its acceptor child's).
 *
 * Prints one JSON object on stdout (the figures), diagnostics on stderr; exit 0 when the run
 * completed and every answer checked out, 1 otherwise (the JSON then carries "error").
 *
 * pipeline: N Unix-socket connections, each keeping W `tcp.getState` requests in flight until
 *   C requests in total (C/N per connection) are answered or S seconds have passed. Every answer
 *   must carry "result" and an id that was sent on that connection and not yet answered. With
 *   --gateway each connection first creates a real connected handle (tcp.createServer on
 *   127.0.0.1 port 0, tcp.createClient to it) so that getState does a real TCP_INFO; without it
 *   (the bare server) handle 1 is used.
 * latency: one connection, one request at a time; median and p99 in microseconds.
 * burst: B non-blocking connects to a loopback listener as fast as possible. Gateway: the
 *   listener is tcp.createServer {backlog: K} + tcp.accept {async: true} on a control connection
 *   whose tcp.onAccept notifications are counted here. Plain: a forked child runs a poll +
 *   accept4 loop on a listen(K) socket. Either way the figure is accepted connections per second
 *   from the first connect to the last accept (the last onAccept read here, or the child's last
 *   accept4), with the TcpExt ListenOverflows / ListenDrops deltas of /proc/net/netstat.
 *
 * Loopback and Unix sockets only; every loop is bounded in count and in time.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define IO_TIMEOUT 5.0 /* seconds without progress that fail a run */
#define MAX_CONNS 64
#define MAX_WINDOW 4096
#define MAX_COUNT 50000000L
#define MAX_BURST 19000

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* CPU seconds (user + system) used so far by another process (the server: --server-pid), from
 * /proc/PID/stat; 0 without a pid. Clock-tick resolution (10 ms). */
static int server_pid;

static double server_cpu_s(void) {
    if (server_pid <= 0)
        return 0;
    char path[64], text[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", server_pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    char *p = strrchr(text, ')');
    unsigned long long utime = 0, stime = 0;
    /* after ") ": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return 0;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static void fail(const char *fmt, const char *what) {
    /* One JSON line so that the caller can report the failure as a row. */
    char msg[512];
    snprintf(msg, sizeof msg, fmt, what ? what : "");
    json_t *o = json_pack("{s:s}", "error", msg);
    char *text = json_dumps(o, JSON_COMPACT);
    printf("%s\n", text);
    fflush(stdout);
    fprintf(stderr, "load_client: %s\n", msg);
    exit(1);
}

static void raise_fd_limit(long need) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    if ((long)rl.rlim_cur < need) {
        char what[64];
        snprintf(what, sizeof what, "%ld < %ld", (long)rl.rlim_cur, need);
        fail("descriptor limit too low: %s", what);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Lines on a Unix socket */

struct reader {
    int fd;
    char *buf;
    size_t len, cap, scan; /* scan: bytes already known to hold no newline */
};

static void reader_init(struct reader *r, int fd) {
    r->fd = fd;
    r->cap = 1 << 20;
    r->buf = malloc(r->cap);
    r->len = r->scan = 0;
}

/* Reads once (blocking or not, as the socket is); 1 = got bytes, 0 = would block, -1 = closed. */
static int reader_fill(struct reader *r) {
    if (r->cap - r->len < 65536) {
        r->cap *= 2;
        if (r->cap > (256u << 20))
            fail("answer line too long%s", "");
        r->buf = realloc(r->buf, r->cap);
    }
    ssize_t k = recv(r->fd, r->buf + r->len, r->cap - r->len, 0);
    if (k > 0) {
        r->len += (size_t)k;
        return 1;
    }
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    return -1;
}

/* Calls fn on each complete line, then keeps the tail. */
static void reader_lines(struct reader *r, void (*fn)(void *, const char *, size_t), void *ctx) {
    size_t start = 0;
    char *p = r->buf + r->scan;
    char *end = r->buf + r->len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            break;
        fn(ctx, r->buf + start, (size_t)(nl - (r->buf + start)));
        start = (size_t)(nl - r->buf) + 1;
        p = nl + 1;
    }
    if (start) {
        memmove(r->buf, r->buf + start, r->len - start);
        r->len -= start;
    }
    r->scan = r->len;
}

static int connect_unix(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sun.sun_path)
        fail("socket path too long: %s", path);
    strcpy(sun.sun_path, path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0)
        fail("cannot connect to %s", path);
    struct timeval tv = {.tv_sec = (long)IO_TIMEOUT};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
}

static void send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            fail("send failed: %s", strerror(errno));
        p += k;
        n -= (size_t)k;
    }
}

/* A synchronous call on a blocking connection (setup only): the result, or a failure. Lines
 * that are not its answer (notifications) are skipped. */
struct call_ctx {
    long id;
    json_t *result;
    int done;
};

static void call_line(void *vctx, const char *line, size_t n) {
    struct call_ctx *ctx = vctx;
    if (ctx->done)
        return;
    json_error_t jerr;
    json_t *msg = json_loadb(line, n, 0, &jerr);
    if (!msg)
        fail("unparsable answer: %s", jerr.text);
    json_t *id = json_object_get(msg, "id");
    if (json_is_integer(id) && json_integer_value(id) == ctx->id) {
        json_t *err = json_object_get(msg, "error");
        if (err) {
            char *t = json_dumps(err, JSON_COMPACT);
            fail("setup call failed: %s", t);
        }
        ctx->result = json_incref(json_object_get(msg, "result"));
        ctx->done = 1;
    }
    json_decref(msg);
}

static json_t *call(struct reader *r, long id, const char *method, const char *params) {
    char line[1024];
    int n = snprintf(line, sizeof line, "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"method\":\"%s\",\"params\":%s}\n", id,
                     method, params);
    send_all(r->fd, line, (size_t)n);
    struct call_ctx ctx = {.id = id};
    double deadline = now_s() + IO_TIMEOUT;
    while (!ctx.done) {
        reader_lines(r, call_line, &ctx);
        if (ctx.done)
            break;
        if (now_s() > deadline || reader_fill(r) <= 0)
            fail("no answer to %s", method);
    }
    return ctx.result;
}

/* A real connected handle on this connection: a listener on 127.0.0.1 port 0 and a sync client
 * connected to it (the accepted end stays in the listener's backlog; the client end is
 * ESTABLISHED either way). */
static long make_handle(struct reader *r) {
    json_t *srv = call(r, 1, "tcp.createServer", "{\"sockaddr\":{\"addr\":\"127.0.0.1\",\"port\":0},\"backlog\":8}");
    long port = (long)json_integer_value(json_object_get(json_object_get(srv, "local"), "port"));
    json_decref(srv);
    char params[256];
    snprintf(params, sizeof params, "{\"sockaddr\":{\"addr\":\"127.0.0.1\",\"port\":%ld}}", port);
    json_t *cli = call(r, 2, "tcp.createClient", params);
    long handle = (long)json_integer_value(json_object_get(cli, "handle"));
    json_decref(cli);
    snprintf(params, sizeof params, "{\"handle\":%ld}", handle);
    json_t *st = call(r, 3, "tcp.getState", params);
    const char *name = json_string_value(json_object_get(st, "name"));
    if (!name || strcmp(name, "ESTABLISHED") != 0)
        fail("handle is not ESTABLISHED: %s", name);
    json_decref(st);
    return handle;
}

/* The id of an answer line ("id":N; getState answers hold no other "id" key), -1 if none. */
static long line_id(const char *line, size_t n) {
    const char *p = memmem(line, n, "\"id\":", 5);
    if (!p)
        return -1;
    p += 5;
    long v = 0;
    int digits = 0;
    while (p < line + n && *p >= '0' && *p <= '9') {
        v = v * 10 + (*p - '0');
        p++;
        digits++;
    }
    return digits ? v : -1;
}

#define FIRST_ID 1000 /* ids of measured requests start here (setup uses 1..3) */

static size_t request_line(char *dst, long id, long handle) {
    return (size_t)sprintf(dst, "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"method\":\"tcp.getState\",\"params\":{\"handle\":%ld}}\n",
                           id, handle);
}

/* ---------------------------------------------------------------------------------------- */
/* pipeline */

struct pconn {
    struct reader rd;
    long handle;
    long target, sent, answered, bad;
    unsigned char *seen; /* per id - FIRST_ID */
    char *out;
    size_t out_len, out_off;
    int want_out;
    char first_bad[160];
};

static void pipe_line(void *vctx, const char *line, size_t n) {
    struct pconn *c = vctx;
    long id = line_id(line, n);
    if (id < 0)
        return; /* a notification: not expected here, and not an answer */
    long k = id - FIRST_ID;
    int ok = memmem(line, n, "\"result\"", 8) != NULL && k >= 0 && k < c->sent && !c->seen[k];
    if (ok) {
        c->seen[k] = 1;
    } else {
        if (!c->bad)
            snprintf(c->first_bad, sizeof c->first_bad, "%.*s", (int)(n < 150 ? n : 150), line);
        c->bad++;
    }
    c->answered++;
}

static int pconn_flush(struct pconn *c) {
    while (c->out_off < c->out_len) {
        ssize_t k = send(c->rd.fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (k > 0)
            c->out_off += (size_t)k;
        else if (k < 0 && errno == EINTR)
            continue;
        else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        else
            return -1;
    }
    c->out_len = c->out_off = 0;
    return 0;
}

/* Tops the window up (one write for everything the last read freed). */
static int pconn_refill(struct pconn *c, long window, int sending) {
    if (!sending)
        return 0;
    long more = window - (c->sent - c->answered);
    if (more > c->target - c->sent)
        more = c->target - c->sent;
    if (more <= 0)
        return 0;
    if (c->out_off) { /* keep only the unwritten part, at the start */
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    for (long j = 0; j < more; j++) {
        c->out_len += request_line(c->out + c->out_len, FIRST_ID + c->sent, c->handle);
        c->sent++;
    }
    return pconn_flush(c);
}

static void set_nonblock(int fd) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static int run_pipeline(const char *path, int nconns, long window, long count, double seconds, int gateway) {
    if (nconns < 1 || nconns > MAX_CONNS || window < 1 || window > MAX_WINDOW || count < nconns || count > MAX_COUNT)
        fail("bad pipeline sizes%s", "");
    struct pconn *cs = calloc((size_t)nconns, sizeof *cs);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < nconns; i++) {
        struct pconn *c = &cs[i];
        reader_init(&c->rd, connect_unix(path));
        c->handle = gateway ? make_handle(&c->rd) : 1;
        c->target = count / nconns + (i < count % nconns ? 1 : 0);
        c->seen = calloc((size_t)c->target, 1);
        /* The write buffer holds at most one window of requests (plus what is still unwritten). */
        c->out = malloc((size_t)(2 * window + 2) * 128);
        set_nonblock(c->rd.fd);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->rd.fd, &ev);
    }
    double t0 = now_s(), c0 = cpu_s(), s0 = server_cpu_s();
    double stop_sending = t0 + seconds;
    double last_progress = t0, t_last = t0;
    int sending = 1, capped = 0;
    for (int i = 0; i < nconns; i++)
        if (pconn_refill(&cs[i], window, 1) < 0)
            fail("send failed%s", "");
    long answered = 0, sent = 0;
    for (;;) {
        answered = sent = 0;
        for (int i = 0; i < nconns; i++) {
            answered += cs[i].answered;
            sent += cs[i].sent;
        }
        if (answered >= count || (!sending && answered >= sent))
            break;
        double now = now_s();
        if (sending && now > stop_sending) {
            sending = 0;
            capped = 1;
        }
        if (now - last_progress > IO_TIMEOUT) {
            char what[96];
            snprintf(what, sizeof what, "%ld of %ld answered, none for %.0f s", answered, sent, IO_TIMEOUT);
            fail("stalled: %s", what);
        }
        struct epoll_event evs[MAX_CONNS];
        int n = epoll_wait(ep, evs, MAX_CONNS, 100);
        for (int e = 0; e < n; e++) {
            struct pconn *c = evs[e].data.ptr;
            if (evs[e].events & EPOLLOUT) {
                if (pconn_flush(c) < 0)
                    fail("send failed%s", "");
            }
            if (evs[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                long before = c->answered;
                for (int r = 0; r < 4; r++) {
                    int got = reader_fill(&c->rd);
                    if (got < 0)
                        fail("server closed the connection%s", "");
                    if (got == 0)
                        break;
                }
                reader_lines(&c->rd, pipe_line, c);
                if (c->answered > before) {
                    last_progress = t_last = now_s();
                    if (pconn_refill(c, window, sending) < 0)
                        fail("send failed%s", "");
                }
            }
            int want_out = c->out_len > c->out_off;
            if (want_out != c->want_out) {
                struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0u), .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->rd.fd, &ev);
                c->want_out = want_out;
            }
        }
    }
    double wall = t_last - t0, cpu = cpu_s() - c0, scpu = server_cpu_s() - s0;
    long bad = 0;
    const char *first_bad = "";
    for (int i = 0; i < nconns; i++) {
        bad += cs[i].bad;
        if (cs[i].bad && !*first_bad)
            first_bad = cs[i].first_bad;
    }
    if (bad)
        fail("bad answer: %s", first_bad);
    printf("{\"mode\":\"pipeline\",\"conns\":%d,\"window\":%ld,\"answered\":%ld,\"seconds\":%.6f,"
           "\"rate\":%.1f,\"client_cpu_s\":%.3f,\"server_cpu_s\":%.3f,\"capped\":%s}\n",
           nconns, window, answered, wall, wall > 0 ? answered / wall : 0.0, cpu, scpu, capped ? "true" : "false");
    for (int i = 0; i < nconns; i++)
        close(cs[i].rd.fd);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* latency */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct lat_ctx {
    long want;
    int got, bad;
};

static void lat_line(void *vctx, const char *line, size_t n) {
    struct lat_ctx *ctx = vctx;
    long id = line_id(line, n);
    if (id < 0)
        return;
    if (id != ctx->want || !memmem(line, n, "\"result\"", 8))
        ctx->bad = 1;
    ctx->got = 1;
}

static int run_latency(const char *path, long count, double seconds, int gateway) {
    if (count < 1 || count > 1000000)
        fail("bad latency count%s", "");
    struct reader rd;
    reader_init(&rd, connect_unix(path));
    long handle = gateway ? make_handle(&rd) : 1;
    double *samples = malloc((size_t)count * sizeof *samples);
    long n = 0;
    double t0 = now_s(), c0 = cpu_s(), s0 = server_cpu_s();
    double stop = t0 + seconds;
    char line[256];
    for (; n < count && now_s() < stop; n++) {
        size_t len = request_line(line, FIRST_ID + n, handle);
        double t = now_s();
        send_all(rd.fd, line, len);
        struct lat_ctx ctx = {.want = FIRST_ID + n};
        while (!ctx.got) {
            int r = reader_fill(&rd);
            if (r <= 0)
                fail("no answer (connection closed or timed out)%s", "");
            reader_lines(&rd, lat_line, &ctx);
        }
        samples[n] = now_s() - t;
        if (ctx.bad)
            fail("bad answer to a latency call%s", "");
    }
    double wall = now_s() - t0, cpu = cpu_s() - c0, scpu = server_cpu_s() - s0;
    if (n == 0)
        fail("no samples%s", "");
    double mean = 0;
    for (long i = 0; i < n; i++)
        mean += samples[i];
    mean /= (double)n;
    qsort(samples, (size_t)n, sizeof *samples, cmp_double);
    long i50 = (long)((double)(n - 1) * 0.50 + 0.5), i99 = (long)((double)(n - 1) * 0.99 + 0.5);
    printf("{\"mode\":\"latency\",\"n\":%ld,\"p50_us\":%.2f,\"p99_us\":%.2f,\"mean_us\":%.2f,\"min_us\":%.2f,"
           "\"seconds\":%.6f,\"client_cpu_s\":%.3f,\"server_cpu_s\":%.3f,\"capped\":%s}\n",
           n, samples[i50] * 1e6, samples[i99] * 1e6, mean * 1e6, samples[0] * 1e6, wall, cpu, scpu,
           n < count ? "true" : "false");
    close(rd.fd);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* burst */

/* TcpExt ListenOverflows and ListenDrops from /proc/net/netstat (this network namespace). */
static void listen_counters(long *overflows, long *drops) {
    *overflows = *drops = -1;
    FILE *f = fopen("/proc/net/netstat", "r");
    if (!f)
        return;
    static char names[16384], values[16384];
    while (fgets(names, sizeof names, f) && fgets(values, sizeof values, f)) {
        if (strncmp(names, "TcpExt:", 7) != 0)
            continue;
        char *sn, *sv;
        char *n = strtok_r(names, " \n", &sn);
        char *v = strtok_r(values, " \n", &sv);
        while (n && v) {
            if (strcmp(n, "ListenOverflows") == 0)
                *overflows = atol(v);
            else if (strcmp(n, "ListenDrops") == 0)
                *drops = atol(v);
            n = strtok_r(NULL, " \n", &sn);
            v = strtok_r(NULL, " \n", &sv);
        }
    }
    fclose(f);
}

struct accept_ctx {
    long accepted;
    long server;
};

static void accept_line(void *vctx, const char *line, size_t n) {
    struct accept_ctx *ctx = vctx;
    if (memmem(line, n, "\"tcp.onAccept\"", 14))
        ctx->accepted++;
}

/* The plain baseline: accept everything as it comes, keep every descriptor open until told. */
static void plain_acceptor(int lfd, long count, double deadline, int report_fd, int done_fd) {
    int *fds = malloc((size_t)count * sizeof *fds);
    long accepted = 0;
    double t_last = 0, c0 = cpu_s();
    struct pollfd pfd = {.fd = lfd, .events = POLLIN};
    while (accepted < count) {
        double left = deadline - now_s();
        if (left <= 0)
            break;
        int r = poll(&pfd, 1, (int)(left * 1000) + 1);
        if (r < 0 && errno != EINTR)
            break;
        while (accepted < count) {
            int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0)
                break;
            fds[accepted++] = fd;
            t_last = now_s();
        }
    }
    double report[3] = {(double)accepted, t_last, cpu_s() - c0};
    if (write(report_fd, report, sizeof report) != sizeof report)
        _exit(1);
    char byte;
    struct pollfd dp = {.fd = done_fd, .events = POLLIN};
    poll(&dp, 1, (int)(IO_TIMEOUT * 1000));
    (void)!read(done_fd, &byte, 1);
    _exit(0);
}

static int run_burst(const char *path, int plain, long count, int backlog, double seconds) {
    if (count < 1 || count > MAX_BURST || backlog < 1 || backlog > 65535)
        fail("bad burst sizes%s", "");
    raise_fd_limit(count + 64);
    struct reader ctl = {0};
    struct accept_ctx actx = {0};
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    pid_t child = -1;
    int report_pipe[2], done_pipe[2];
    if (plain) {
        int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        socklen_t sl = sizeof sin;
        if (lfd < 0 || bind(lfd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(lfd, backlog) < 0 ||
            getsockname(lfd, (struct sockaddr *)&sin, &sl) < 0)
            fail("plain listener: %s", strerror(errno));
        if (pipe2(report_pipe, O_CLOEXEC) < 0 || pipe2(done_pipe, O_CLOEXEC) < 0)
            fail("pipe: %s", strerror(errno));
        child = fork();
        if (child < 0)
            fail("fork: %s", strerror(errno));
        if (child == 0) {
            close(report_pipe[0]);
            close(done_pipe[1]);
            plain_acceptor(lfd, count, now_s() + seconds + 0.5, report_pipe[1], done_pipe[0]);
        }
        close(lfd);
        close(report_pipe[1]);
        close(done_pipe[0]);
    } else {
        reader_init(&ctl, connect_unix(path));
        char params[256];
        snprintf(params, sizeof params, "{\"sockaddr\":{\"addr\":\"127.0.0.1\",\"port\":0},\"backlog\":%d}", backlog);
        json_t *srv = call(&ctl, 1, "tcp.createServer", params);
        actx.server = (long)json_integer_value(json_object_get(srv, "handle"));
        sin.sin_port = htons((uint16_t)json_integer_value(json_object_get(json_object_get(srv, "local"), "port")));
        json_decref(srv);
        snprintf(params, sizeof params, "{\"handle\":%ld,\"async\":true}", actx.server);
        json_decref(call(&ctl, 2, "tcp.accept", params));
        set_nonblock(ctl.fd);
    }
    int *fds = malloc((size_t)count * sizeof *fds);
    long ov0, dr0, ov1, dr1;
    listen_counters(&ov0, &dr0);
    double t0 = now_s(), c0 = cpu_s(), s0 = server_cpu_s();
    double deadline = t0 + seconds;
    long opened = 0, connect_errors = 0;
    int first_errno = 0;
    double t_last = 0;
    for (long i = 0; i < count && now_s() < deadline; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            connect_errors++;
            if (!first_errno)
                first_errno = errno;
            continue;
        }
        if (connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0 && errno != EINPROGRESS) {
            connect_errors++;
            if (!first_errno)
                first_errno = errno;
            close(fd);
            continue;
        }
        fds[opened++] = fd;
        /* Keep the control connection drained (its onAccept lines would otherwise pile up). */
        if (!plain && (i & 63) == 63) {
            long before = actx.accepted;
            while (reader_fill(&ctl) > 0)
                reader_lines(&ctl, accept_line, &actx);
            if (actx.accepted > before)
                t_last = now_s();
        }
    }
    double t_connects = now_s() - t0;
    long accepted;
    double child_cpu = 0;
    if (plain) {
        double report[3] = {0, 0, 0};
        struct pollfd pfd = {.fd = report_pipe[0], .events = POLLIN};
        int wait_ms = (int)((deadline - now_s() + 0.5 + IO_TIMEOUT) * 1000);
        if (poll(&pfd, 1, wait_ms > 0 ? wait_ms : 1) != 1 || read(report_pipe[0], report, sizeof report) != sizeof report)
            fail("plain acceptor did not report%s", "");
        accepted = (long)report[0];
        t_last = report[1];
        child_cpu = report[2];
    } else {
        struct pollfd pfd = {.fd = ctl.fd, .events = POLLIN};
        while (actx.accepted < opened) {
            double left = deadline - now_s();
            if (left <= 0)
                break;
            if (poll(&pfd, 1, (int)(left * 1000) + 1) <= 0)
                continue;
            long before = actx.accepted;
            int r;
            while ((r = reader_fill(&ctl)) > 0)
                reader_lines(&ctl, accept_line, &actx);
            if (actx.accepted > before)
                t_last = now_s();
            if (r < 0)
                fail("gateway closed the control connection%s", "");
        }
        accepted = actx.accepted;
        child_cpu = server_cpu_s() - s0; /* the gateway's, with --server-pid */
    }
    double cpu = cpu_s() - c0;
    listen_counters(&ov1, &dr1);
    double wall = t_last > t0 ? t_last - t0 : 0;
    printf("{\"mode\":\"burst\",\"target\":\"%s\",\"count\":%ld,\"backlog\":%d,\"opened\":%ld,\"connect_errors\":%ld,"
           "\"first_errno\":\"%s\",\"accepted\":%ld,\"seconds\":%.6f,\"connect_seconds\":%.6f,\"rate\":%.1f,"
           "\"listen_overflows\":%ld,\"listen_drops\":%ld,\"client_cpu_s\":%.3f,\"server_cpu_s\":%.3f,"
           "\"capped\":%s}\n",
           plain ? "plain" : "gateway", count, backlog, opened, connect_errors, first_errno ? strerror(first_errno) : "",
           accepted, wall, t_connects, wall > 0 ? accepted / wall : 0.0, ov1 - ov0, dr1 - dr0, cpu, child_cpu,
           accepted < count ? "true" : "false");
    fflush(stdout);
    /* Gateway: closing the control connection closes the server and every accepted handle.
     * Plain: the child closes its descriptors as it exits. Then ours. */
    if (plain) {
        (void)!write(done_pipe[1], "x", 1);
        int status;
        waitpid(child, &status, 0);
    } else {
        close(ctl.fd);
    }
    for (long i = 0; i < opened; i++)
        close(fds[i]);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
    if (argc < 2) {
    usage:
        fprintf(stderr, "usage: load_client pipeline|latency|burst [--socket PATH] [--gateway] [--plain] "
                        "[--conns N] [--window W] [--count C] [--backlog K] [--seconds S] [--server-pid PID]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    const char *mode = argv[1], *path = NULL;
    int gateway = 0, plain = 0, conns = 1, backlog = 4096;
    long window = 128, count = 100000;
    double seconds = 10;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--gateway") == 0)
            gateway = 1;
        else if (strcmp(a, "--plain") == 0)
            plain = 1;
        else if (v && strcmp(a, "--socket") == 0)
            path = v, i++;
        else if (v && strcmp(a, "--conns") == 0)
            conns = atoi(v), i++;
        else if (v && strcmp(a, "--window") == 0)
            window = atol(v), i++;
        else if (v && strcmp(a, "--count") == 0)
            count = atol(v), i++;
        else if (v && strcmp(a, "--backlog") == 0)
            backlog = atoi(v), i++;
        else if (v && strcmp(a, "--seconds") == 0)
            seconds = atof(v), i++;
        else if (v && strcmp(a, "--server-pid") == 0)
            server_pid = atoi(v), i++;
        else
            goto usage;
    }
    if (seconds <= 0 || seconds > 120)
        fail("--seconds must be in (0, 120]%s", "");
    if (!path && !(strcmp(mode, "burst") == 0 && plain))
        fail("--socket PATH is required%s", "");
    if (strcmp(mode, "pipeline") == 0)
        return run_pipeline(path, conns, window, count, seconds, gateway);
    if (strcmp(mode, "latency") == 0)
        return run_latency(path, count, seconds, gateway);
    if (strcmp(mode, "burst") == 0)
        return run_burst(path, plain, count, backlog, seconds);
    goto usage;
}
