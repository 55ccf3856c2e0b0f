// Reads and writes another process's memory through /proc/PID/mem, which (like
// ptrace peek/poke, FOLL_FORCE) reaches read-only text and PROT_NONE pages too.
#pragma once

#include <sys/types.h>

#include <cstddef>

#include "base/error.hpp"
#include "base/remote_ptr.hpp"
#include "base/unique_fd.hpp"

namespace minicriu {

class TraceeMemory {
 public:
  [[nodiscard]] static Result<TraceeMemory> open(pid_t pid);

  [[nodiscard]] Status read(RemotePtr<> addr, void* buf, size_t size) const;
  [[nodiscard]] Status write(RemotePtr<> addr, const void* buf, size_t size) const;
  int fd() const { return fd_.get(); }

 private:
  TraceeMemory(pid_t pid, UniqueFd fd) : pid_(pid), fd_(std::move(fd)) {}
  pid_t pid_;
  UniqueFd fd_;
};

}  // namespace minicriu
