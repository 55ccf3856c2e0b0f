#include "base/journal.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace minicriu {

namespace {

thread_local Journal* current_journal = nullptr;

Status make_directory(const std::string& dir) {
  // One level is enough for /run/minicriu; a test's directory exists already.
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return failf_errno("cannot make the journal directory {}", dir);
  // Ours alone (a user's may be in /tmp, where anyone could have made it).
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) return failf_errno("cannot stat the journal directory {}", dir);
  if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 022))
    return failf("the journal directory {} is not a directory of our own that only we may write", dir);
  return {};
}

}  // namespace

std::string Journal::directory() {
  if (const char* d = std::getenv("MINICRIU_JOURNAL_DIR"); d && *d) return d;
  uid_t uid = ::geteuid();
  if (uid == 0) return "/run/minicriu";
  // A user's own: /run/minicriu is root's.
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x && *x == '/') return fmt::format("{}/minicriu", x);
  return fmt::format("/tmp/minicriu-{}", uid);
}

std::string Journal::path_for(pid_t root) { return fmt::format("{}/dump-{}.journal", directory(), root); }

std::string Journal::temp_path(const std::string& path, pid_t dumper) {
  auto slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  return fmt::format("{}/.{}.{}", dir, name, dumper);
}

Result<std::unique_ptr<Journal>> Journal::create(pid_t root, const std::vector<std::string>& header) {
  std::string dir = directory();
  TRY(make_directory(dir));
  std::string path = path_for(root);
  std::string temp = temp_path(path, ::getpid());
  UniqueFd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return failf_errno("cannot create the dump journal {}", temp);
  std::unique_ptr<Journal> j(new Journal(temp, std::move(fd)));
  for (auto& line : header) {
    if (auto st = j->note(line); !st) {
      ::unlink(temp.c_str());
      return std::unexpected(st.error());
    }
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(temp.c_str());
    return std::unexpected(Error(fmt::format("cannot name the dump journal {}", path), e));
  }
  j->path_ = path;
  // The file's name must survive a crash too.
  UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d) ::fsync(d.get());
  return j;
}

Status Journal::note(std::string_view line) {
  if (!fd_) return {};
  std::string text(line);
  text += '\n';
  const char* at = text.data();
  size_t left = text.size();
  while (left) {
    ssize_t n = ::write(fd_.get(), at, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return failf_errno("cannot write the dump journal {}", path_);
    at += n;
    left -= static_cast<size_t>(n);
  }
  while (::fdatasync(fd_.get()) != 0)
    if (errno != EINTR) return failf_errno("cannot sync the dump journal {}", path_);
  return {};
}

void Journal::remove() {
  if (!fd_) return;
  fd_.reset();
  ::unlink(path_.c_str());
}

JournalScope::JournalScope(Journal* journal) : outer_(current_journal) { current_journal = journal; }
JournalScope::~JournalScope() { current_journal = outer_; }

Status journal_note(std::string_view line) {
  if (!current_journal) return {};
  return current_journal->note(line);
}

bool journal_active() { return current_journal != nullptr; }

uint64_t process_start_time(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = text.rfind(')');
  if (close == std::string::npos) return 0;
  // After "pid (comm)": field 3 (state) is the first; start time is field 22.
  std::istringstream rest(text.substr(close + 1));
  std::string field;
  for (int i = 3; i <= 22; i++)
    if (!(rest >> field)) return 0;
  return std::strtoull(field.c_str(), nullptr, 10);
}

bool process_alive(pid_t pid, uint64_t start) {
  if (pid <= 0) return false;
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = text.rfind(')');
  if (close == std::string::npos || close + 2 >= text.size()) return false;
  char state = text[close + 2];
  if (state == 'Z' || state == 'X') return false;
  return process_start_time(pid) == start;
}

std::string hex_bytes(const void* data, size_t size) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; i++) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}

bool parse_hex(std::string_view hex, std::string& out) {
  if (hex.size() % 2) return false;
  auto val = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  out.clear();
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = val(hex[i]), lo = val(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out += static_cast<char>(hi << 4 | lo);
  }
  return true;
}

}  // namespace minicriu
