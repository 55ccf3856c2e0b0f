// Reads and writes another process's memory through /proc/PID/mem, which (like
// ptrace peek/poke, FOLL_FORCE) reaches read-only text and PROT_NONE pages too.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <span>
#include <type_traits>
#include <vector>

#include "base/error.hpp"
#include "base/remote_ptr.hpp"
#include "base/unique_fd.hpp"

namespace minicriu {

// What may cross between address spaces as bytes: no pointers of ours inside
// that would mean anything there, so no vtables or owning members.
template <typename T>
concept RemoteValue = std::is_trivially_copyable_v<T> && !std::is_pointer_v<T>;

class TraceeMemory {
 public:
  [[nodiscard]] static Result<TraceeMemory> open(pid_t pid);

  template <RemoteValue T>
  [[nodiscard]] Result<T> read(RemotePtr<T> at) const {
    T value;
    TRY(read_bytes(at, &value, sizeof(T)));
    return value;
  }
  template <RemoteValue T>
  [[nodiscard]] Status write(RemotePtr<T> at, const T& value) const {
    return write_bytes(at, &value, sizeof(T));
  }
  // count objects of T from at on.
  template <RemoteValue T>
  [[nodiscard]] Result<std::vector<T>> read_array(RemotePtr<T> at, size_t count) const {
    std::vector<T> out(count);
    TRY(read_bytes(at, out.data(), count * sizeof(T)));
    return out;
  }
  template <RemoteValue T>
  [[nodiscard]] Status write_array(RemotePtr<T> at, std::span<const T> values) const {
    return write_bytes(at, values.data(), values.size_bytes());
  }

  // Untyped: size bytes at addr (a failure names the range).
  [[nodiscard]] Status read_bytes(RemotePtr<> at, void* buf, size_t size) const;
  // Up to size bytes at addr: fewer when the rest cannot be read (unmapped,
  // or the process gone), errno then set. Unlike process_vm_readv, which
  // pins the pages it reads, a read here does not unshare a page the process
  // shares copy-on-write with another (a pin of such a page copies it).
  size_t read_some(RemotePtr<> at, void* buf, size_t size) const;
  [[nodiscard]] Status write_bytes(RemotePtr<> at, const void* buf, size_t size) const;

  pid_t pid() const { return pid_; }

 private:
  TraceeMemory(pid_t pid, UniqueFd fd) : pid_(pid), fd_(std::move(fd)) {}
  pid_t pid_;
  UniqueFd fd_;
};

}  // namespace minicriu
