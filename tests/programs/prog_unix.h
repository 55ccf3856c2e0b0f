/* For the test programs of named unix sockets: addresses, and a check that a
 * socket's name (or its peer's) is exactly the expected address. */
#ifndef PROG_UNIX_H
#define PROG_UNIX_H

#include "prog_common.h"

#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static inline socklen_t addr_path(struct sockaddr_un* a, const char* path) {
  memset(a, 0, sizeof(*a));
  a->sun_family = AF_UNIX;
  strcpy(a->sun_path, path);
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
}

/* The name getsockname/getpeername return equals the expected address. */
static inline void check_name(int fd, int peer, const struct sockaddr_un* want, socklen_t want_len,
                              const char* what) {
  struct sockaddr_un got;
  socklen_t len = sizeof(got);
  memset(&got, 0, sizeof(got));
  int r = peer ? getpeername(fd, (struct sockaddr*)&got, &len) : getsockname(fd, (struct sockaddr*)&got, &len);
  CHECK(r == 0 && len == want_len && memcmp(&got, want, len) == 0, "%s: %s is '%s' (len %u, want %u)", what,
        peer ? "peer name" : "name", got.sun_path[0] ? got.sun_path : got.sun_path + 1, len, want_len);
}

#endif
