#include "base/external.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <charconv>

namespace minicriu {

namespace {

// The decimal number between prefix and a closing ']' that ends the text.
template <typename T>
bool bracketed_number(std::string_view text, std::string_view prefix, T& out) {
  if (!text.starts_with(prefix) || !text.ends_with("]")) return false;
  std::string_view digits = text.substr(prefix.size(), text.size() - prefix.size() - 1);
  if (digits.empty()) return false;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), out);
  return ec == std::errc() && end == digits.data() + digits.size();
}

}  // namespace

Result<uint64_t> parse_external_unix(const std::string& text) {
  uint64_t ino = 0;
  if (!bracketed_number(text, "unix[", ino) || ino == 0)
    return failf("--external {}: expected unix[INODE], the inode of a unix socket of the tree "
                 "whose peer is outside it, pipe[INODE], a pipe or fifo of the tree also held outside "
                 "it, or tty[N], a terminal /dev/pts/N whose master is outside it (as the dump's "
                 "refusal names them)", text);
  return ino;
}

std::optional<uint32_t> parse_external_tty(const std::string& text) {
  uint32_t index = 0;
  if (!bracketed_number(text, "tty[", index)) return std::nullopt;
  return index;
}

std::optional<uint64_t> parse_external_pipe(const std::string& text) {
  uint64_t ino = 0;
  if (!bracketed_number(text, "pipe[", ino) || ino == 0) return std::nullopt;
  return ino;
}

Result<std::pair<int, std::string>> parse_inherit_fd(const std::string& text) {
  auto colon = text.find(':');
  int fd = -1;
  uint64_t ino = 0;
  std::string_view key = colon == std::string::npos ? std::string_view() : std::string_view(text).substr(colon + 1);
  if (colon == std::string::npos || !bracketed_number(std::string_view(text).substr(0, colon), "fd[", fd) ||
      fd < 0 ||
      !(bracketed_number(key, "socket:[", ino) || bracketed_number(key, "pipe:[", ino)) || ino == 0)
    return failf("--inherit-fd {}: expected fd[N]:socket:[INODE] or fd[N]:pipe:[INODE], N an fd "
                 "open in minicriu and INODE an external socket or pipe of the images", text);
  return std::pair{fd, text.substr(colon + 1)};
}

Result<ExternalPolicy> ExternalPolicy::from_options(const DumpOptions& options) {
  ExternalPolicy p;
  p.all_unix_ = options.ext_unix_sk;
  p.all_ttys_ = options.shell_job;
  p.all_pipes_ = options.ext_pipes;
  for (auto& e : options.external) {
    if (auto tty = parse_external_tty(e)) {
      p.tty_indexes_.insert(*tty);
      continue;
    }
    if (auto pipe = parse_external_pipe(e)) {
      p.pipe_inodes_.insert(*pipe);
      continue;
    }
    ASSIGN_OR_RETURN(uint64_t ino, parse_external_unix(e));
    p.unix_inodes_.insert(ino);
  }
  p.hook_ = options.external_hook;
  return p;
}

bool ExternalPolicy::accepts(const ExternalObject& obj) const {
  if (obj.kind == "unix" && (all_unix_ || unix_inodes_.count(obj.inode))) return true;
  if (obj.kind == "tty" && (all_ttys_ || tty_indexes_.count(static_cast<uint32_t>(obj.inode)))) return true;
  if (obj.kind == "pipe" && (all_pipes_ || pipe_inodes_.count(obj.inode))) return true;
  return hook_ && hook_(obj);
}

Result<ExternalStandIns> ExternalStandIns::from_options(const RestoreOptions& options) {
  ExternalStandIns s;
  for (auto& text : options.inherit_fds) {
    ASSIGN_OR_RETURN(auto entry, parse_inherit_fd(text));
    auto [fd, key] = entry;
    struct stat st {};
    if (::fstat(fd, &st) != 0)
      return failf_errno("--inherit-fd {}: fd {} is not open in minicriu; pass it to the "
                         "restore open", text, fd);
    // The stand-in must be the kind of object it stands for; the kind checks
    // the rest (a pipe's end) when it takes it.
    bool pipe = key.starts_with("pipe:");
    if (pipe ? !S_ISFIFO(st.st_mode) : !S_ISSOCK(st.st_mode))
      return failf("--inherit-fd {}: fd {} is not a {}, and it stands in for one", text, fd,
                   pipe ? "pipe or fifo" : "socket");
    if (!s.inherited_.emplace(key, fd).second)
      return failf("--inherit-fd {}: {} is given twice", text, key);
  }
  s.hook_ = options.external_hook;
  return s;
}

Status ExternalStandIns::check_used(const std::set<std::string>& external_keys) const {
  for (auto& [key, fd] : inherited_)
    if (!external_keys.count(key))
      return failf("--inherit-fd fd[{}]:{}: the images hold no external {} (see `minicriu "
                   "show`)", fd, key, key);
  return {};
}

Result<UniqueFd> ExternalStandIns::take(const ExternalObject& obj, int floor) const {
  int given = -1;
  if (auto it = inherited_.find(obj.key); it != inherited_.end()) {
    given = it->second;
  } else if (hook_) {
    ASSIGN_OR_RETURN(given, with_context(hook_(obj), fmt::format("the restore hook for {}", obj.key)));
    if (given < 0) return UniqueFd();
  } else {
    return UniqueFd();
  }
  UniqueFd fd(::fcntl(given, F_DUPFD_CLOEXEC, floor));
  if (!fd) return failf_errno("{}: dup of the fd {} standing in for it", obj.key, given);
  return fd;
}

}  // namespace minicriu
