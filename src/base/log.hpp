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

  // Where a ProgressMeter's reports go (LogOptions: the sink, the terminal
  // line, or log lines) and how often they may.
  void progress(const Progress& p) const noexcept;
  void progress_interrupted() const noexcept;
  std::chrono::milliseconds progress_after() const {
    return std::chrono::milliseconds(options_.progress_after_ms);
  }
  std::chrono::milliseconds progress_interval() const {
    // Log lines stay readable; a sink or a terminal line may move smoothly.
    return std::chrono::milliseconds(options_.progress_sink || options_.progress ? 100 : 1000);
  }

 private:
  void emit(LogLevel level, const std::string& message) const;

  LogOptions options_;
  std::chrono::steady_clock::time_point start_;
};

// The progress of one transfer of pages (a process's dump, a tree's
// restore), fed as bytes move: cheap enough to call per batch (one look at
// the clock), it reports nothing for a transfer shorter than the Logger's
// progress_after(), then at most every progress_interval(), and once at the
// end, from finish() or its destructor.
class ProgressMeter {
 public:
  using Clock = std::chrono::steady_clock;

  ProgressMeter(const Logger& log, std::string_view phase, pid_t pid, uint64_t total_bytes)
      : log_(log), start_(Clock::now()), last_(start_) {
    p_.phase = phase;
    p_.pid = pid;
    p_.bytes_total = total_bytes;
  }
  // A transfer that failed midway reports no end; the terminal line is
  // ended, so that the error is printed on a line of its own.
  ~ProgressMeter() {
    if (shown_ && !p_.finished) log_.progress_interrupted();
  }
  ProgressMeter(const ProgressMeter&) = delete;
  ProgressMeter& operator=(const ProgressMeter&) = delete;

  void add(uint64_t bytes) { set(p_.bytes_done + bytes); }
  void set(uint64_t done_bytes) {
    p_.bytes_done = done_bytes;
    auto now = Clock::now();
    if (now - start_ < log_.progress_after() || (shown_ && now - last_ < log_.progress_interval())) return;
    report(now);
  }
  void finish() {
    if (!shown_ || p_.finished) return;
    p_.finished = true;
    report(Clock::now());
  }

 private:
  void report(Clock::time_point now);

  const Logger& log_;
  Clock::time_point start_, last_;
  Progress p_;
  bool shown_ = false;
};

// "1.5 GiB", "12.0 MiB", "512 KiB", "100 B".
std::string format_bytes(uint64_t bytes);

}  // namespace minicriu
