#ifndef TCPGW_CNETSHIM_H
#define TCPGW_CNETSHIM_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Socket plumbing Swift cannot express directly (CMSG macros, packed epoll_event,
   ioctl varargs, TCP_INFO) or that must happen in one step (fchmod before bind).
   Every function returns a negative errno on failure unless stated otherwise. */

typedef struct {
    int family;        /* AF_INET or AF_INET6 */
    char addr[64];     /* numeric address text */
    int port;
} tcpgw_sockaddr;

/* Unix domain sockets */
int tcpgw_unix_listen(const char *path, int backlog, unsigned mode);
int tcpgw_unix_connect(const char *path);
/* Whether something listens on the Unix socket at path, never blocking for more than
   timeout_ms: 1 live (it accepted, or its backlog is full), 0 nobody (ECONNREFUSED: a stale
   file, or ENOENT: no file), a negative errno when it cannot tell. */
int tcpgw_unix_probe(const char *path, int timeout_ms);
int tcpgw_peer_uid(int fd, int *uid, int *pid);
/* SO_PEERCRED: uid, gid and pid of the peer of a Unix socket. */
int tcpgw_peer_cred(int fd, int *uid, int *gid, int *pid);

/* Send `len` bytes, with `passfd` attached by SCM_RIGHTS when >= 0. Non-blocking. */
ssize_t tcpgw_send_with_fd(int fd, const void *buf, size_t len, int passfd, int nonblocking);
/* Receive up to `len` bytes; descriptors that arrive are stored into fds (up to maxfds), count in *nfds.
   Surplus descriptors are closed. Non-blocking when nonblocking != 0. */
ssize_t tcpgw_recv_with_fds(int fd, void *buf, size_t len, int *fds, int maxfds, int *nfds, int nonblocking);

/* TCP sockets */
int tcpgw_tcp_socket(int family);                       /* non-blocking, close-on-exec */
int tcpgw_resolve(int family_hint, const char *addr, int port, void *storage, unsigned *len); /* returns family */
int tcpgw_bind(int fd, const char *addr, int port, int family);
int tcpgw_listen(int fd, int backlog);
int tcpgw_connect_start(int fd, const char *addr, int port, int family); /* 0 done, 1 in progress */
int tcpgw_accept(int fd, tcpgw_sockaddr *peer);        /* new fd, non-blocking, close-on-exec */
int tcpgw_sockname(int fd, tcpgw_sockaddr *out);
int tcpgw_peername(int fd, tcpgw_sockaddr *out);
int tcpgw_socket_family(int fd);
int tcpgw_socket_check_tcp(int fd, int *listening);     /* family on success; -ENOTSOCK/-EPROTONOSUPPORT otherwise */
int tcpgw_set_nonblocking(int fd, int on);

/* Options */
int tcpgw_setsockopt_int(int fd, int level, int name, int value);
int tcpgw_getsockopt_int(int fd, int level, int name, int *value);
int tcpgw_set_linger(int fd, int onoff, int seconds);
int tcpgw_bind_to_device(int fd, const char *ifname);   /* NULL or "" unbinds */
int tcpgw_set_keepalive(int fd, int enable, int idle_s, int interval_s, int count);
int tcpgw_set_ttl(int fd, int ttl);
int tcpgw_so_error(int fd);                             /* pending error (>= 0) */
int tcpgw_fionread(int fd);
int tcpgw_tcp_state(int fd);                            /* Linux TCP_* state number */
int tcpgw_shutdown(int fd, int how);                    /* 0 = rd, 1 = wr, 2 = rdwr */

/* Level/name numbers for the option calls (Swift cannot see some of these macros). */
int tcpgw_const_sol_socket(void);
int tcpgw_const_so_reuseaddr(void);
int tcpgw_const_so_rcvbuf(void);
int tcpgw_const_so_sndbuf(void);
int tcpgw_const_ipproto_tcp(void);
int tcpgw_const_tcp_nodelay(void);
int tcpgw_const_ipproto_ipv6(void);
int tcpgw_const_ipv6_v6only(void);

/* epoll, level-triggered, for the gateway's one reactor. op: 0 add, 1 modify, 2 delete. */
int tcpgw_epoll_create(void);
int tcpgw_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t token);
int tcpgw_epoll_wait(int epfd, uint64_t *tokens, uint32_t *events, int max, int timeout_ms);
uint32_t tcpgw_epoll_in(void);
uint32_t tcpgw_epoll_out(void);
uint32_t tcpgw_epoll_err(void);
uint32_t tcpgw_epoll_hup(void);
int tcpgw_eventfd(void);
int tcpgw_eventfd_signal(int fd);
int tcpgw_eventfd_drain(int fd);

/* read(2) and send(2) without SIGPIPE; negative errno on failure. */
ssize_t tcpgw_read(int fd, void *buf, size_t len);
ssize_t tcpgw_write(int fd, const void *buf, size_t len);
uint64_t tcpgw_monotonic_ns(void);

/* errno names: "ECONNREFUSED"; NULL when unknown */
const char *tcpgw_errno_name(int err);
const char *tcpgw_errno_message(int err);

/* Raises the soft RLIMIT_NOFILE to the hard limit (servers hold many sockets); returns the
   resulting soft limit, or a negative errno. */
long tcpgw_raise_nofile_limit(void);

/* Raw byte relays (contract §11): a non-blocking, close-on-exec kernel pipe (fds[0] read end,
   fds[1] write end), grown towards `size` bytes where the system allows; returns its capacity.
   splice(2) moves up to len bytes between a socket and a pipe without copying them to user
   space, never blocking on the pipe (the socket's own O_NONBLOCK governs it); 0 is end of
   stream. */
int tcpgw_pipe(int fds[2], int size);
ssize_t tcpgw_splice(int fd_in, int fd_out, size_t len);

/* Closes fd retrying nothing (Linux closes even on EINTR). */
int tcpgw_close(int fd);
/* For tcpgw bridge: a pipe whose two ends close on exec (fds[0] read, fds[1] write); 0 or a
   negative errno. And memmem and memrchr, which glibc hides behind _GNU_SOURCE. */
int tcpgw_pipe_cloexec(int fds[2]);
const void *tcpgw_memmem(const void *haystack, size_t haystack_len, const void *needle, size_t needle_len);
const void *tcpgw_memrchr(const void *s, int c, size_t n);

/* JSON text scans (scan.c). The length of the run of "plain" bytes at p (printable ASCII other
   than '"' and '\\': what a JSON string may hold verbatim, as base64 and hex payloads do), and
   the index of the first '"' or '\\' (n when there is none). */
size_t tcpgw_plain_run(const unsigned char *p, size_t n);
size_t tcpgw_quote_or_backslash(const unsigned char *p, size_t n);

/* Base64 (standard alphabet, '=' padding) for the data path: writes 4 * ceil(n / 3) bytes to
   out and returns that count. Vectorised where the CPU allows (SSSE3, AVX2), chosen at run time. */
size_t tcpgw_base64_encode(const void *in, size_t n, void *out);
/* The same with the instruction set capped at level (0 scalar, 1 SSSE3, 2 AVX2): for tests,
   which check every level against the others. */
size_t tcpgw_base64_encode_level(const void *in, size_t n, void *out, int level);
/* Decodes the longest prefix of in[0..n) made of whole vector blocks of the standard alphabet
   (no padding), writing at most cap bytes to out; returns how many characters it consumed (a
   multiple of 16, possibly 0), having written 3/4 as many bytes. The caller decodes and checks
   the rest. */
size_t tcpgw_base64_decode_prefix(const void *in, size_t n, void *out, size_t cap);
size_t tcpgw_base64_decode_prefix_level(const void *in, size_t n, void *out, size_t cap, int level);
/* The best level this CPU runs (0, 1 or 2). */
int tcpgw_base64_best_level(void);

/* Service-manager plumbing (contract §9). */
#include "CNetShimService.h"

#endif
