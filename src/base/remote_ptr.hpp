#pragma once

#include <cstdint>

namespace minicriu {

// An address in another process's address space. Never dereferenced here: local
// and remote memory cannot be mixed up by accident.
template <typename T = void>
class RemotePtr {
 public:
  constexpr RemotePtr() = default;
  constexpr explicit RemotePtr(uint64_t addr) : addr_(addr) {}
  constexpr uint64_t addr() const { return addr_; }
  constexpr bool null() const { return addr_ == 0; }
  constexpr RemotePtr<T> operator+(uint64_t bytes) const { return RemotePtr<T>(addr_ + bytes); }
  template <typename U>
  constexpr RemotePtr<U> cast() const { return RemotePtr<U>(addr_); }
  constexpr auto operator<=>(const RemotePtr&) const = default;

 private:
  uint64_t addr_ = 0;
};

}  // namespace minicriu
