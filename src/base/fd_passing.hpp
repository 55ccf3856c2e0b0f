// One message with fds riding on it (SCM_RIGHTS) over a unix socket, both
// ways: the parasite's replies, the write-tracking holder's hand-over, the
// restored tasks' userfaultfds to the lazy pager. The send side allocates
// nothing (the holder sends between fork and _exit).
#pragma once

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <span>
#include <vector>

#include "base/unique_fd.hpp"

namespace minicriu {

// sendmsg of len bytes of data with fds (at most kMax of them): the bytes
// sent, or -1 with errno (EINVAL: too many fds). MSG_NOSIGNAL; EINTR retried.
template <size_t kMax>
ssize_t send_with_fds(int sock, const void* data, size_t len, std::span<const int> fds) {
  if (fds.size() > kMax) {
    errno = EINVAL;
    return -1;
  }
  iovec iov{const_cast<void*>(data), len};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMax)] = {};
  msghdr hdr{};
  hdr.msg_iov = &iov;
  hdr.msg_iovlen = 1;
  if (!fds.empty()) {
    hdr.msg_control = control;
    hdr.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&hdr);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n;
  do n = ::sendmsg(sock, &hdr, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n;
}

// recvmsg of up to len bytes into data, with flags (MSG_CMSG_CLOEXEC added);
// the fds that came (at most kMax) appended to fds; truncated: the kernel
// had more fds than fitted (MSG_CTRUNC; those are closed). The bytes, or -1
// with errno.
template <size_t kMax>
ssize_t recv_with_fds(int sock, void* data, size_t len, std::vector<UniqueFd>& fds, int flags = 0,
                      bool* truncated = nullptr) {
  iovec iov{data, len};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMax)];
  msghdr hdr{};
  hdr.msg_iov = &iov;
  hdr.msg_iovlen = 1;
  hdr.msg_control = control;
  hdr.msg_controllen = sizeof(control);
  ssize_t n = ::recvmsg(sock, &hdr, flags | MSG_CMSG_CLOEXEC);
  if (truncated) *truncated = n >= 0 && (hdr.msg_flags & MSG_CTRUNC);
  if (n < 0) return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&hdr); c; c = CMSG_NXTHDR(&hdr, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds.emplace_back(fd);
    }
  }
  return n;
}

}  // namespace minicriu
