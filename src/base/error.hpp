// Errors are values: a message with context and the errno that caused it.
// The Error type is public (minicriu.hpp); this adds the engine's helpers.
#pragma once

#include <cerrno>
#include <expected>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "minicriu/minicriu.hpp"

namespace minicriu {

inline std::unexpected<Error> fail(std::string message, int err = 0) {
  return std::unexpected(Error(std::move(message), err));
}
// An error from the errno of the call that just failed.
inline std::unexpected<Error> fail_errno(std::string message) {
  return std::unexpected(Error(std::move(message), errno));
}
template <typename... Args>
std::unexpected<Error> failf(fmt::format_string<Args...> f, Args&&... args) {
  return std::unexpected(Error(fmt::format(f, std::forward<Args>(args)...)));
}
template <typename... Args>
std::unexpected<Error> failf_errno(fmt::format_string<Args...> f, Args&&... args) {
  int e = errno;
  return std::unexpected(Error(fmt::format(f, std::forward<Args>(args)...), e));
}

// Adds context to the error of a result, passing values through.
template <typename T>
Result<T> with_context(Result<T> r, const std::string& what) {
  if (!r) r.error().context(what);
  return r;
}

}  // namespace minicriu

// Early return of an error; TRY(x) for Status, ASSIGN_OR_RETURN for values.
#define MC_CONCAT_(a, b) a##b
#define MC_CONCAT(a, b) MC_CONCAT_(a, b)
#define TRY(expr)                                                        \
  do {                                                                   \
    auto&& mc_try_r_ = (expr);                                           \
    if (!mc_try_r_) return std::unexpected(std::move(mc_try_r_).error()); \
  } while (0)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr)            \
  auto tmp = (expr);                                      \
  if (!tmp) return std::unexpected(std::move(tmp).error()); \
  lhs = std::move(*tmp)
#define ASSIGN_OR_RETURN(lhs, expr) ASSIGN_OR_RETURN_IMPL_(MC_CONCAT(mc_r_, __LINE__), lhs, expr)
