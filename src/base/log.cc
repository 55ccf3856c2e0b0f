#include "base/log.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iterator>

namespace minicriu {

namespace {
const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::error: return "error";
    case LogLevel::warn: return "warn";
    case LogLevel::info: return "info";
    case LogLevel::debug: return "debug";
  }
  return "?";
}
}  // namespace

Logger::Logger(LogOptions options)
    : options_(std::move(options)), start_(std::chrono::steady_clock::now()) {}

void Logger::emit(LogLevel level, const std::string& message) const {
  double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::string line = fmt::format("({:9.6f}) {:5}: {}", t, level_name(level), message);
  if (options_.sink) {
    options_.sink(level, line);
  } else {
    line += '\n';
    ::write(STDERR_FILENO, line.data(), line.size());
  }
}

std::string format_bytes(uint64_t bytes) {
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(kUnits)) v /= 1024, u++;
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", v, kUnits[u]);
}

namespace {

std::string progress_line(const Progress& p) {
  std::string line = fmt::format("{} pid {}: {}", p.phase, p.pid, format_bytes(p.bytes_done));
  if (p.bytes_total)
    line += fmt::format(" of {} ({}%)", format_bytes(p.bytes_total),
                        std::min<uint64_t>(100, p.bytes_done * 100 / p.bytes_total));
  line += fmt::format(", {}/s", format_bytes(static_cast<uint64_t>(p.bytes_per_s)));
  if (p.finished)
    line += fmt::format(", done in {:.1f} s", p.elapsed_s);
  else if (p.eta_s >= 0)
    line += fmt::format(", {:.1f} s left", p.eta_s);
  return line;
}

}  // namespace

void Logger::progress(const Progress& p) const noexcept {
  try {
    if (options_.progress_sink) {
      options_.progress_sink(p);
    } else if (options_.progress) {
      // One line, redrawn: back to its start, clear it, write it again.
      std::string out = "\r\033[K" + progress_line(p) + (p.finished ? "\n" : "");
      ::write(STDERR_FILENO, out.data(), out.size());
    } else {
      info("{}", progress_line(p));
    }
  } catch (...) {
  }
}

void Logger::progress_interrupted() const noexcept {
  if (!options_.progress_sink && options_.progress) ::write(STDERR_FILENO, "\n", 1);
}

void ProgressMeter::report(Clock::time_point now) {
  p_.elapsed_s = std::chrono::duration<double>(now - start_).count();
  p_.bytes_per_s = p_.elapsed_s > 0 ? static_cast<double>(p_.bytes_done) / p_.elapsed_s : 0;
  p_.eta_s = p_.bytes_per_s > 0 && p_.bytes_total >= p_.bytes_done
                 ? static_cast<double>(p_.bytes_total - p_.bytes_done) / p_.bytes_per_s
                 : -1;
  shown_ = true;
  last_ = now;
  log_.progress(p_);
}

}  // namespace minicriu
