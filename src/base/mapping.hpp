#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <utility>

#include "base/error.hpp"

namespace minicriu {

// Owns one mmap'd range in this process; unmaps it when it goes.
class Mapping {
 public:
  Mapping() = default;
  Mapping(void* addr, size_t size) : addr_(addr), size_(size) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  Mapping(Mapping&& o) noexcept
      : addr_(std::exchange(o.addr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept {
    if (this != &o) {
      reset();
      addr_ = std::exchange(o.addr_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ~Mapping() { reset(); }

  static Result<Mapping> map(void* hint, size_t size, int prot, int flags, int fd, off_t off) {
    void* p = ::mmap(hint, size, prot, flags, fd, off);
    if (p == MAP_FAILED) return failf_errno("mmap of {} bytes", size);
    return Mapping(p, size);
  }

  template <typename T = void>
  T* get() const { return static_cast<T*>(addr_); }
  size_t size() const { return size_; }
  // Hands the range over to someone who unmaps it otherwise (the restorer blob).
  void* release() {
    size_ = 0;
    return std::exchange(addr_, nullptr);
  }
  void reset() {
    if (addr_) ::munmap(addr_, size_);
    addr_ = nullptr;
    size_ = 0;
  }

 private:
  void* addr_ = nullptr;
  size_t size_ = 0;
};

}  // namespace minicriu
