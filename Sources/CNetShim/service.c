#define _GNU_SOURCE
#include "CNetShimService.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

int tcpgw_socket_kind(int fd, int *family, int *type, int *listening) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int value = 0;
    socklen_t vlen = sizeof(value);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &value, &vlen) < 0) return -errno;
    *type = value;
    vlen = sizeof(value);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &value, &vlen) < 0) return -errno;
    *listening = value != 0;
    memset(&ss, 0, sizeof(ss));
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return -errno;
    *family = ss.ss_family;
    return 0;
}

int tcpgw_const_af_unix(void) { return AF_UNIX; }
int tcpgw_const_sock_stream(void) { return SOCK_STREAM; }

int tcpgw_unix_sockname(int fd, char *buf, size_t cap) {
    struct sockaddr_un sun;
    socklen_t len = sizeof(sun);
    memset(&sun, 0, sizeof(sun));
    if (cap == 0) return -EINVAL;
    if (getsockname(fd, (struct sockaddr *)&sun, &len) < 0) return -errno;
    if (sun.sun_family != AF_UNIX) return -EAFNOSUPPORT;
    size_t n = len > offsetof(struct sockaddr_un, sun_path) ? len - offsetof(struct sockaddr_un, sun_path) : 0;
    if (n == 0) {
        buf[0] = 0;
        return 0;
    }
    if (sun.sun_path[0] == 0) {
        /* Abstract: the name is exactly the bytes after the leading NUL, shown after '@'. */
        if (n > cap - 1) return -ENAMETOOLONG;
        buf[0] = '@';
        memcpy(buf + 1, sun.sun_path + 1, n - 1);
        buf[n] = 0;
        return (int)n;
    }
    size_t plen = strnlen(sun.sun_path, n);
    if (plen + 1 > cap) return -ENAMETOOLONG;
    memcpy(buf, sun.sun_path, plen);
    buf[plen] = 0;
    return (int)plen;
}

int tcpgw_set_cloexec(int fd) {
    int fl = fcntl(fd, F_GETFD);
    if (fl < 0) return -errno;
    return fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0 ? -errno : 0;
}

int tcpgw_notify_socket(int timeout_ms) {
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

int tcpgw_notify_send(int fd, const char *address, const void *buf, size_t len, int nowait) {
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    size_t n = strlen(address);
    socklen_t alen;
    if (n >= 2 && address[0] == '@') {
        /* Abstract namespace: a leading NUL, then the name; the length counts no terminator. */
        if (n > sizeof(sun.sun_path)) return -ENAMETOOLONG;
        memcpy(sun.sun_path + 1, address + 1, n - 1);
        alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else if (n >= 2 && address[0] == '/') {
        if (n >= sizeof(sun.sun_path)) return -ENAMETOOLONG;
        memcpy(sun.sun_path, address, n);
        alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    } else {
        return -EAFNOSUPPORT;
    }
    int flags = MSG_NOSIGNAL | (nowait ? MSG_DONTWAIT : 0);
    ssize_t sent;
    do {
        sent = sendto(fd, buf, len, flags, (struct sockaddr *)&sun, alen);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) return -errno;
    return (int)sent;
}
