// One log facility: levels, a timestamp, routed to the caller's sink (the CLI's
// is stderr). A Logger travels in the dump or restore context; there is no global.
#pragma once

#include <chrono>
#include <string>

#include <fmt/format.h>

#include "minicriu/minicriu.hpp"

namespace minicriu {

class Logger {
 public:
  explicit Logger(LogOptions options = {});

  bool enabled(LogLevel level) const { return level <= options_.level; }
  bool progress_enabled() const { return options_.progress; }

  // Never throws: logging runs in destructors and failure paths, where a
  // line lost to a full memory (or a throwing sink) must not cost the dump.
  template <typename... Args>
  void log(LogLevel level, fmt::format_string<Args...> f, Args&&... args) const noexcept {
    if (!enabled(level)) return;
    try {
      emit(level, fmt::format(f, std::forward<Args>(args)...));
    } catch (...) {
    }
  }
  template <typename... Args>
  void error(fmt::format_string<Args...> f, Args&&... args) const noexcept {
    log(LogLevel::error, f, std::forward<Args>(args)...);
  }
  template <typename... Args>
  void warn(fmt::format_string<Args...> f, Args&&... args) const noexcept {
    log(LogLevel::warn, f, std::forward<Args>(args)...);
  }
  template <typename... Args>
  void info(fmt::format_string<Args...> f, Args&&... args) const noexcept {
    log(LogLevel::info, f, std::forward<Args>(args)...);
  }
  template <typename... Args>
  void debug(fmt::format_string<Args...> f, Args&&... args) const noexcept {
    log(LogLevel::debug, f, std::forward<Args>(args)...);
  }

  // A progress line that rewrites itself on a terminal ("pages: 512/1024 MiB").
  void progress(const std::string& line) const;
  void progress_done() const;

 private:
  void emit(LogLevel level, const std::string& message) const;

  LogOptions options_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace minicriu
