#define _GNU_SOURCE
#include "CNetShim.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define NEG_ERRNO (-errno)

static int fill_unix_addr(const char *path, struct sockaddr_un *sun, socklen_t *len) {
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(sun->sun_path)) return -ENAMETOOLONG;
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, n);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

int tcpgw_unix_listen(const char *path, int backlog, unsigned mode) {
    struct sockaddr_un sun;
    socklen_t len;
    int rc = fill_unix_addr(path, &sun, &len);
    if (rc < 0) return rc;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return NEG_ERRNO;
    /* The mode is set on the socket before bind, so the file appears with it: no window
       in which another user could connect. */
    if (fchmod(fd, (mode_t)mode) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    /* bind masks the socket's mode with the umask; cleared for the bind alone so the file has
       exactly `mode` (0660 stays 0660 under umask 022). Only start-up binds, before the loop
       thread exists, so no other file creation sees the cleared mask. */
    mode_t old_mask = umask(0);
    int bound = bind(fd, (struct sockaddr *)&sun, len);
    int bind_err = errno;
    umask(old_mask);
    if (bound < 0 || listen(fd, backlog) < 0) {
        int err = bound < 0 ? bind_err : errno;
        close(fd);
        return -err;
    }
    return fd;
}

int tcpgw_unix_connect(const char *path) {
    struct sockaddr_un sun;
    socklen_t len;
    int rc = fill_unix_addr(path, &sun, &len);
    if (rc < 0) return rc;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return NEG_ERRNO;
    if (connect(fd, (struct sockaddr *)&sun, len) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

int tcpgw_unix_probe(const char *path, int timeout_ms) {
    struct sockaddr_un sun;
    socklen_t len;
    int rc = fill_unix_addr(path, &sun, &len);
    if (rc < 0) return rc;
    /* Non-blocking: a blocking connect to a listener whose backlog is full waits until that
       listener accepts, which may be never. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return NEG_ERRNO;
    int result;
    if (connect(fd, (struct sockaddr *)&sun, len) == 0) {
        result = 1;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        result = 1; /* a listener whose backlog is full is alive */
    } else if (errno == ECONNREFUSED || errno == ENOENT) {
        result = 0;
    } else if (errno == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int ready = poll(&p, 1, timeout_ms);
        if (ready == 0) {
            result = 1; /* someone holds the path and has not refused */
        } else if (ready < 0) {
            result = NEG_ERRNO;
        } else {
            int err = tcpgw_so_error(fd);
            result = err == 0 ? 1 : (err == ECONNREFUSED || err == ENOENT) ? 0 : err > 0 ? -err : err;
        }
    } else {
        result = NEG_ERRNO;
    }
    close(fd);
    return result;
}

int tcpgw_peer_uid(int fd, int *uid, int *pid) {
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return NEG_ERRNO;
    *uid = (int)cred.uid;
    *pid = (int)cred.pid;
    return 0;
}

int tcpgw_peer_cred(int fd, int *uid, int *gid, int *pid) {
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return NEG_ERRNO;
    *uid = (int)cred.uid;
    *gid = (int)cred.gid;
    *pid = (int)cred.pid;
    return 0;
}

ssize_t tcpgw_send_with_fd(int fd, const void *buf, size_t len, int passfd, int nonblocking) {
    int flags = MSG_NOSIGNAL | (nonblocking ? MSG_DONTWAIT : 0);
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    if (passfd >= 0) {
        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof(control.buf);
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmsg), &passfd, sizeof(int));
    }
    ssize_t n = sendmsg(fd, &msg, flags);
    return n < 0 ? NEG_ERRNO : n;
}

ssize_t tcpgw_recv_with_fds(int fd, void *buf, size_t len, int *fds, int maxfds, int *nfds, int nonblocking) {
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr msg;
    union {
        char buf[CMSG_SPACE(sizeof(int) * 16)];
        struct cmsghdr align;
    } control;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    *nfds = 0;
    ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | (nonblocking ? MSG_DONTWAIT : 0));
    if (n < 0) return NEG_ERRNO;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < count; i++) {
            int passed;
            memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (*nfds < maxfds) fds[(*nfds)++] = passed;
            else close(passed); /* never leak what we cannot hold */
        }
    }
    if (msg.msg_flags & MSG_CTRUNC) {
        /* Truncated control data means descriptors were dropped by the kernel; report it as
           one extra (invalid) descriptor so the request that carried them fails loudly. */
        if (*nfds < maxfds) fds[(*nfds)++] = -1;
    }
    return n;
}

int tcpgw_tcp_socket(int family) {
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    return fd < 0 ? NEG_ERRNO : fd;
}

int tcpgw_resolve(int family_hint, const char *addr, int port, void *storage, unsigned *len) {
    struct sockaddr_in *sin = storage;
    struct sockaddr_in6 *sin6 = storage;
    if (family_hint != AF_INET6) {
        memset(sin, 0, sizeof(*sin));
        if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
            if (family_hint == AF_INET6) return -EAFNOSUPPORT;
            sin->sin_family = AF_INET;
            sin->sin_port = htons((uint16_t)port);
            *len = sizeof(*sin);
            return AF_INET;
        }
        if (family_hint == AF_INET) return -EINVAL;
    }
    memset(sin6, 0, sizeof(*sin6));
    /* Allow a scope suffix ("fe80::1%lo") for link-local addresses. */
    char text[64];
    size_t n = strlen(addr);
    if (n >= sizeof(text)) return -EINVAL;
    memcpy(text, addr, n + 1);
    char *pct = strchr(text, '%');
    if (pct) {
        *pct = 0;
        unsigned idx = if_nametoindex(pct + 1);
        if (idx == 0) return -ENODEV;
        sin6->sin6_scope_id = idx;
    }
    if (inet_pton(AF_INET6, text, &sin6->sin6_addr) != 1) return -EINVAL;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((uint16_t)port);
    *len = sizeof(*sin6);
    return AF_INET6;
}

int tcpgw_bind(int fd, const char *addr, int port, int family) {
    struct sockaddr_storage ss;
    unsigned len;
    int fam = tcpgw_resolve(family, addr, port, &ss, &len);
    if (fam < 0) return fam;
    return bind(fd, (struct sockaddr *)&ss, len) < 0 ? NEG_ERRNO : 0;
}

int tcpgw_listen(int fd, int backlog) { return listen(fd, backlog) < 0 ? NEG_ERRNO : 0; }

int tcpgw_connect_start(int fd, const char *addr, int port, int family) {
    struct sockaddr_storage ss;
    unsigned len;
    int fam = tcpgw_resolve(family, addr, port, &ss, &len);
    if (fam < 0) return fam;
    if (connect(fd, (struct sockaddr *)&ss, len) == 0) return 0;
    if (errno == EINPROGRESS) return 1;
    return NEG_ERRNO;
}

static int describe(const struct sockaddr_storage *ss, tcpgw_sockaddr *out) {
    memset(out, 0, sizeof(*out));
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const void *)ss;
        out->family = AF_INET;
        inet_ntop(AF_INET, &sin->sin_addr, out->addr, sizeof(out->addr));
        out->port = ntohs(sin->sin_port);
        return 0;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const void *)ss;
        out->family = AF_INET6;
        inet_ntop(AF_INET6, &sin6->sin6_addr, out->addr, sizeof(out->addr));
        out->port = ntohs(sin6->sin6_port);
        return 0;
    }
    return -EAFNOSUPPORT;
}

int tcpgw_accept(int fd, tcpgw_sockaddr *peer) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int nfd = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (nfd < 0) return NEG_ERRNO;
    if (peer) describe(&ss, peer);
    return nfd;
}

int tcpgw_sockname(int fd, tcpgw_sockaddr *out) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return NEG_ERRNO;
    return describe(&ss, out);
}

int tcpgw_peername(int fd, tcpgw_sockaddr *out) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0) return NEG_ERRNO;
    return describe(&ss, out);
}

int tcpgw_socket_family(int fd) {
    int v;
    socklen_t len = sizeof(v);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len) < 0) return NEG_ERRNO;
    return v;
}

int tcpgw_socket_check_tcp(int fd, int *listening) {
    int domain, type, proto, acc;
    socklen_t len = sizeof(int);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0) return NEG_ERRNO;
    len = sizeof(int);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) return NEG_ERRNO;
    len = sizeof(int);
    if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) < 0) return NEG_ERRNO;
    len = sizeof(int);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) < 0) return NEG_ERRNO;
    if ((domain != AF_INET && domain != AF_INET6) || type != SOCK_STREAM || proto != IPPROTO_TCP)
        return -EPROTONOSUPPORT;
    *listening = acc;
    return domain;
}

int tcpgw_set_nonblocking(int fd, int on) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) return NEG_ERRNO;
    fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
    return fcntl(fd, F_SETFL, fl) < 0 ? NEG_ERRNO : 0;
}

int tcpgw_setsockopt_int(int fd, int level, int name, int value) {
    return setsockopt(fd, level, name, &value, sizeof(value)) < 0 ? NEG_ERRNO : 0;
}

int tcpgw_getsockopt_int(int fd, int level, int name, int *value) {
    socklen_t len = sizeof(*value);
    return getsockopt(fd, level, name, value, &len) < 0 ? NEG_ERRNO : 0;
}

int tcpgw_set_linger(int fd, int onoff, int seconds) {
    struct linger l = {.l_onoff = onoff ? 1 : 0, .l_linger = seconds};
    return setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l)) < 0 ? NEG_ERRNO : 0;
}

int tcpgw_bind_to_device(int fd, const char *ifname) {
    const char *name = ifname ? ifname : "";
    return setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, name, (socklen_t)strlen(name)) < 0 ? NEG_ERRNO : 0;
}

int tcpgw_set_keepalive(int fd, int enable, int idle_s, int interval_s, int count) {
    int on = enable ? 1 : 0;
    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) < 0) return NEG_ERRNO;
    if (!enable) return 0;
    if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof(idle_s)) < 0) return NEG_ERRNO;
    if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval_s, sizeof(interval_s)) < 0) return NEG_ERRNO;
    if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count)) < 0) return NEG_ERRNO;
    return 0;
}

int tcpgw_set_ttl(int fd, int ttl) {
    int fam = tcpgw_socket_family(fd);
    if (fam < 0) return fam;
    if (fam == AF_INET6) {
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &ttl, sizeof(ttl)) < 0) return NEG_ERRNO;
        /* A dual-stack socket may carry IPv4 traffic too; set its TTL where the kernel allows. */
        (void)setsockopt(fd, IPPROTO_IP, IP_TTL, &ttl, sizeof(ttl));
        return 0;
    }
    return setsockopt(fd, IPPROTO_IP, IP_TTL, &ttl, sizeof(ttl)) < 0 ? NEG_ERRNO : 0;
}

int tcpgw_so_error(int fd) {
    int v = 0;
    socklen_t len = sizeof(v);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &v, &len) < 0) return NEG_ERRNO;
    return v;
}

int tcpgw_fionread(int fd) {
    int v = 0;
    if (ioctl(fd, FIONREAD, &v) < 0) return NEG_ERRNO;
    return v;
}

int tcpgw_tcp_state(int fd) {
    struct tcp_info info;
    socklen_t len = sizeof(info);
    memset(&info, 0, sizeof(info));
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) < 0) return NEG_ERRNO;
    return info.tcpi_state;
}

int tcpgw_shutdown(int fd, int how) {
    int h = how == 0 ? SHUT_RD : how == 1 ? SHUT_WR : SHUT_RDWR;
    return shutdown(fd, h) < 0 ? NEG_ERRNO : 0;
}

int tcpgw_const_sol_socket(void) { return SOL_SOCKET; }
int tcpgw_const_so_reuseaddr(void) { return SO_REUSEADDR; }
int tcpgw_const_so_rcvbuf(void) { return SO_RCVBUF; }
int tcpgw_const_so_sndbuf(void) { return SO_SNDBUF; }
int tcpgw_const_ipproto_tcp(void) { return IPPROTO_TCP; }
int tcpgw_const_tcp_nodelay(void) { return TCP_NODELAY; }
int tcpgw_const_ipproto_ipv6(void) { return IPPROTO_IPV6; }
int tcpgw_const_ipv6_v6only(void) { return IPV6_V6ONLY; }

int tcpgw_epoll_create(void) {
    int fd = epoll_create1(EPOLL_CLOEXEC);
    return fd < 0 ? NEG_ERRNO : fd;
}

int tcpgw_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t token) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.u64 = token;
    int how = op == 0 ? EPOLL_CTL_ADD : op == 1 ? EPOLL_CTL_MOD : EPOLL_CTL_DEL;
    return epoll_ctl(epfd, how, fd, how == EPOLL_CTL_DEL ? NULL : &ev) < 0 ? NEG_ERRNO : 0;
}

int tcpgw_epoll_wait(int epfd, uint64_t *tokens, uint32_t *events, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n = epoll_wait(epfd, evs, max, timeout_ms);
    if (n < 0) return NEG_ERRNO;
    for (int i = 0; i < n; i++) {
        tokens[i] = evs[i].data.u64;
        events[i] = evs[i].events;
    }
    return n;
}

int tcpgw_eventfd(void) {
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return fd < 0 ? NEG_ERRNO : fd;
}

int tcpgw_eventfd_signal(int fd) {
    uint64_t one = 1;
    return write(fd, &one, sizeof(one)) < 0 ? NEG_ERRNO : 0;
}

int tcpgw_eventfd_drain(int fd) {
    uint64_t v;
    return read(fd, &v, sizeof(v)) < 0 ? NEG_ERRNO : 0;
}

uint32_t tcpgw_epoll_in(void) { return EPOLLIN; }
uint32_t tcpgw_epoll_out(void) { return EPOLLOUT; }
uint32_t tcpgw_epoll_err(void) { return EPOLLERR; }
uint32_t tcpgw_epoll_hup(void) { return EPOLLHUP; }

ssize_t tcpgw_read(int fd, void *buf, size_t len) {
    ssize_t n = read(fd, buf, len);
    return n < 0 ? NEG_ERRNO : n;
}

ssize_t tcpgw_write(int fd, const void *buf, size_t len) {
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    return n < 0 ? NEG_ERRNO : n;
}

int tcpgw_pipe(int fds[2], int size) {
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) return NEG_ERRNO;
    /* Bigger pipes mean fewer wake-ups per MiB; above pipe-max-size (or the user's page
       quota) the kernel refuses and the default 64 KiB stays. */
    if (size > 0) (void)fcntl(fds[1], F_SETPIPE_SZ, size);
    int capacity = fcntl(fds[1], F_GETPIPE_SZ);
    if (capacity < 0) {
        int err = errno;
        close(fds[0]);
        close(fds[1]);
        return -err;
    }
    return capacity;
}

ssize_t tcpgw_splice(int fd_in, int fd_out, size_t len) {
    ssize_t n = splice(fd_in, NULL, fd_out, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    return n < 0 ? NEG_ERRNO : n;
}

uint64_t tcpgw_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

const char *tcpgw_errno_name(int err) { return strerrorname_np(err); }
const char *tcpgw_errno_message(int err) { return strerror(err); }

int tcpgw_close(int fd) { return close(fd) < 0 ? NEG_ERRNO : 0; }

long tcpgw_raise_nofile_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return NEG_ERRNO;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) return NEG_ERRNO;
    }
    return (long)rl.rlim_cur;
}

int tcpgw_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC) == 0 ? 0 : NEG_ERRNO;
}

const void *tcpgw_memmem(const void *haystack, size_t haystack_len, const void *needle, size_t needle_len) {
    return memmem(haystack, haystack_len, needle, needle_len);
}

const void *tcpgw_memrchr(const void *s, int c, size_t n) {
    return memrchr(s, c, n);
}
