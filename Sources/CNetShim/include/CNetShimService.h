#ifndef TCPGW_CNETSHIM_SERVICE_H
#define TCPGW_CNETSHIM_SERVICE_H
#include <stddef.h>

/* Running under a service manager (contract §9): an inherited listening socket, and the
   readiness datagrams of the sd_notify protocol, without libsystemd. Negative errno on
   failure unless stated otherwise. */

/* What kind of socket fd is: its family, type (SOCK_STREAM...) and whether it listens.
   -ENOTSOCK for a descriptor that is not a socket, -EBADF for one that is not open. */
int tcpgw_socket_kind(int fd, int *family, int *type, int *listening);
int tcpgw_const_af_unix(void);
int tcpgw_const_sock_stream(void);

/* The Unix socket fd is bound to, into buf (NUL-terminated): a path, "@name" for the abstract
   namespace, "" when unnamed. Returns the length written. */
int tcpgw_unix_sockname(int fd, char *buf, size_t cap);

int tcpgw_set_cloexec(int fd);

/* A datagram socket for notifications: close-on-exec, a send waits at most timeout_ms. */
int tcpgw_notify_socket(int timeout_ms);
/* Sends len bytes to the notification address: an absolute path, or "@name" for the
   abstract namespace. -EAFNOSUPPORT for any other form, -ENAMETOOLONG when it does not fit.
   Never blocks when nowait != 0 (a full receiver gives -EAGAIN). */
int tcpgw_notify_send(int fd, const char *address, const void *buf, size_t len, int nowait);

#endif
