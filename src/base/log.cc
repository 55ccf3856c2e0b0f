#include "base/log.hpp"

#include <unistd.h>

#include <cstdio>

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

void Logger::progress(const std::string& line) const {
  if (!options_.progress) return;
  std::string out = "\r\033[K" + line;
  ::write(STDERR_FILENO, out.data(), out.size());
}

void Logger::progress_done() const {
  if (!options_.progress) return;
  ::write(STDERR_FILENO, "\r\033[K", 4);
}

}  // namespace minicriu
