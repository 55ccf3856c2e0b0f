// getsockopt of an int option, for the socket kinds that read many of them.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "base/error.hpp"

namespace minicriu {

// The option's value, or fallback when the socket does not have it.
inline int sock_int(int fd, int level, int opt, int fallback) {
  int v = fallback;
  socklen_t len = sizeof v;
  if (::getsockopt(fd, level, opt, &v, &len) != 0) return fallback;
  return v;
}

// SO_SNDBUF or SO_RCVBUF (opt) set again to what getsockopt reported at the
// dump (want, 0: left at the default), through its FORCE variant first (the
// kernel doubles what it is given and caps the plain one at wmem_max).
[[nodiscard]] inline Status set_socket_buffer(int fd, uint32_t want, int opt, int force, const char* name,
                                              const std::string& what) {
  if (want == 0 || static_cast<uint32_t>(sock_int(fd, SOL_SOCKET, opt, 0)) == want) return {};
  int half = static_cast<int>(want / 2);
  if (::setsockopt(fd, SOL_SOCKET, force, &half, sizeof half) != 0 &&
      ::setsockopt(fd, SOL_SOCKET, opt, &half, sizeof half) != 0)
    return failf_errno("{}: {} of {}", what, name, want);
  return {};
}

}  // namespace minicriu
