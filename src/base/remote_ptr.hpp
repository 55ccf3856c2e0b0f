// An address in another process's address space (as rr's remote_ptr<T>). Never
// dereferenced here: local and remote memory cannot be mixed up by accident,
// and TraceeMemory reads and writes a RemotePtr<T> as a T.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <fmt/format.h>

namespace minicriu {

template <typename T = void>
class RemotePtr {
  // Arithmetic steps by whole objects, as on a T*: only for complete object types.
  static constexpr bool kSized = !std::is_void_v<T> && !std::is_function_v<T>;
  // Untyped memory (void, bytes) moves by byte counts, under a name of its own.
  static constexpr bool kBytes =
      std::is_void_v<T> || std::is_same_v<std::remove_cv_t<T>, uint8_t> ||
      std::is_same_v<std::remove_cv_t<T>, char> || std::is_same_v<std::remove_cv_t<T>, std::byte>;

 public:
  using element_type = T;

  constexpr RemotePtr() = default;
  constexpr explicit RemotePtr(uint64_t addr) : addr_(addr) {}
  // Any RemotePtr<T> is a RemotePtr<void>, as any T* is a void*.
  template <typename U>
    requires(std::is_void_v<T> && !std::is_void_v<U>)
  constexpr RemotePtr(RemotePtr<U> p) : addr_(p.addr()) {}

  constexpr uint64_t addr() const { return addr_; }
  constexpr bool null() const { return addr_ == 0; }

  // By elements of T, as pointer arithmetic.
  constexpr RemotePtr operator+(int64_t n) const
    requires kSized
  {
    return RemotePtr(addr_ + static_cast<uint64_t>(n) * sizeof(T));
  }
  constexpr RemotePtr operator-(int64_t n) const
    requires kSized
  {
    return RemotePtr(addr_ - static_cast<uint64_t>(n) * sizeof(T));
  }
  constexpr RemotePtr& operator+=(int64_t n)
    requires kSized
  {
    return *this = *this + n;
  }
  constexpr RemotePtr& operator++()
    requires kSized
  {
    return *this = *this + 1;
  }
  // Elements of T from o up to this.
  constexpr int64_t operator-(RemotePtr o) const
    requires kSized
  {
    return static_cast<int64_t>(addr_ - o.addr_) / static_cast<int64_t>(sizeof(T));
  }

  // By bytes: for untyped memory, where no element size exists.
  constexpr RemotePtr byte_offset(int64_t bytes) const
    requires kBytes
  {
    return RemotePtr(addr_ + static_cast<uint64_t>(bytes));
  }
  // Bytes from o up to this.
  constexpr int64_t bytes_from(RemotePtr o) const { return static_cast<int64_t>(addr_ - o.addr_); }

  template <typename U>
  constexpr RemotePtr<U> cast() const {
    return RemotePtr<U>(addr_);
  }

  constexpr auto operator<=>(const RemotePtr&) const = default;

 private:
  uint64_t addr_ = 0;
};

// A range of another process's memory: [start, start + size).
struct RemoteRange {
  RemotePtr<> start;
  uint64_t size = 0;
  constexpr RemotePtr<> end() const { return start.byte_offset(static_cast<int64_t>(size)); }
  constexpr bool operator==(const RemoteRange&) const = default;
};

}  // namespace minicriu

// Formats as the address in hex ("0x7f12..."), as messages name addresses.
template <typename T>
struct fmt::formatter<minicriu::RemotePtr<T>> {
  constexpr auto parse(fmt::format_parse_context& ctx) { return ctx.begin(); }
  template <typename Ctx>
  auto format(const minicriu::RemotePtr<T>& p, Ctx& ctx) const {
    return fmt::format_to(ctx.out(), "{:#x}", p.addr());
  }
};
