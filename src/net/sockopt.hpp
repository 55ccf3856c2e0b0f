// getsockopt of an int option, for the socket kinds that read many of them.
#pragma once

#include <sys/socket.h>

namespace minicriu {

// The option's value, or fallback when the socket does not have it.
inline int sock_int(int fd, int level, int opt, int fallback) {
  int v = fallback;
  socklen_t len = sizeof v;
  if (::getsockopt(fd, level, opt, &v, &len) != 0) return fallback;
  return v;
}

}  // namespace minicriu
