// Objects of a tree that reach outside it: unix sockets whose peer is held by
// a process not dumped, terminals whose master is, pipes and fifos also held
// outside. The dump accepts them only when told to; the restore plants what
// the caller gives in their place. This file holds the options' side; each
// kind builds its ExternalObject and asks.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "minicriu/minicriu.hpp"

namespace minicriu {

// Dump side: --ext-unix-sk, --ext-pipes, --external unix[INODE]|pipe[INODE]|
// tty[N]..., and the hook.
class ExternalPolicy {
 public:
  ExternalPolicy() = default;
  // Refuses a malformed --external before anything is touched.
  [[nodiscard]] static Result<ExternalPolicy> from_options(const DumpOptions& options);
  // The object may be dumped as external. The hook is asked only for what the
  // options did not already accept.
  bool accepts(const ExternalObject& obj) const;

 private:
  bool all_unix_ = false;
  std::set<uint64_t> unix_inodes_;
  std::set<uint32_t> tty_indexes_;
  bool all_ttys_ = false;
  bool all_pipes_ = false;
  std::set<uint64_t> pipe_inodes_;
  ExternalDumpHook hook_;
};

// Restore side: --inherit-fd fd[N]:socket:[INODE] and fd[N]:pipe:[INODE]...,
// and the hook.
class ExternalStandIns {
 public:
  ExternalStandIns() = default;
  // Refuses malformed entries and fds the caller does not have open.
  [[nodiscard]] static Result<ExternalStandIns> from_options(const RestoreOptions& options);
  // Fails on an --inherit-fd naming an object the images do not hold as
  // external (a typo would otherwise go unnoticed).
  [[nodiscard]] Status check_used(const std::set<std::string>& external_keys) const;
  // A new fd standing in for obj, above floor, or an invalid UniqueFd when
  // neither an --inherit-fd nor the hook gave one.
  [[nodiscard]] Result<UniqueFd> take(const ExternalObject& obj, int floor) const;

 private:
  std::map<std::string, int> inherited_;  // key -> the caller's fd
  ExternalRestoreHook hook_;
};

// "unix[123]" -> 123; other forms are an error naming the accepted ones.
[[nodiscard]] Result<uint64_t> parse_external_unix(const std::string& text);
// "tty[4]" -> 4: the pty slave /dev/pts/4, whose master is outside the tree.
[[nodiscard]] std::optional<uint32_t> parse_external_tty(const std::string& text);
// "pipe[123]" -> 123: the pipe (or fifo) of that inode, also held outside.
[[nodiscard]] std::optional<uint64_t> parse_external_pipe(const std::string& text);
// "fd[7]:socket:[123]" -> {7, "socket:[123]"}; "fd[7]:pipe:[123]" -> {7,
// "pipe:[123]"}.
[[nodiscard]] Result<std::pair<int, std::string>> parse_inherit_fd(const std::string& text);

}  // namespace minicriu
