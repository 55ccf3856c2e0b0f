#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <utility>

#include "base/error.hpp"

namespace minicriu {

// Owns one file descriptor; closes it when it goes.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// The fd moved to the lowest free number at or above floor (close-on-exec), or
// left where it is if floor is 0 or the move fails. A restore keeps its own
// fds above the numbers the restored process will use.
inline UniqueFd move_fd_above(UniqueFd fd, int floor) {
  if (!fd || floor <= 0 || fd.get() >= floor) return fd;
  int moved = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, floor);
  if (moved < 0) return fd;
  return UniqueFd(moved);
}

// A new fd (close-on-exec, the lowest free number) on the open file
// description fd holds: how objects made once for a whole restore (a socket,
// a pty end) are handed to each process that held them, one description
// shared as it was.
[[nodiscard]] inline Result<UniqueFd> dup_description(int fd, const std::string& what) {
  UniqueFd out(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!out) return failf_errno("{}: dup", what);
  return out;
}

}  // namespace minicriu
