// Parsers for /proc files. Each takes the text, so unit tests feed recorded
// samples; read_* helpers fetch the text of a live process.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/error.hpp"

namespace minicriu::proc {

[[nodiscard]] Result<std::string> read_file(const std::string& path);
[[nodiscard]] Result<std::string> read_link(const std::string& path);
std::string pid_path(pid_t pid, const std::string& rest);

// /proc/PID/stat, the fields we use (man 5 proc numbers them from 1).
struct Stat {
  pid_t pid = 0;
  std::string comm;
  char state = '?';
  pid_t ppid = 0, pgrp = 0, session = 0;
  uint32_t tty_nr = 0;  // the controlling terminal's device number (encoded as new_encode_dev), 0: none
  pid_t tpgid = -1;     // its foreground process group, -1: none
  uint64_t start_code = 0, end_code = 0, start_stack = 0;
  uint32_t exit_signal = 0;
  uint64_t start_data = 0, end_data = 0, start_brk = 0;
  uint64_t arg_start = 0, arg_end = 0, env_start = 0, env_end = 0;
  int exit_code = 0;  // field 52: a zombie's wait status
};
[[nodiscard]] Result<Stat> parse_stat(const std::string& text);

// One line of /proc/PID/maps, plus its VmFlags from smaps.
struct MapsEntry {
  uint64_t start = 0, end = 0, offset = 0;
  bool read = false, write = false, exec = false, shared = false;
  uint32_t dev_major = 0, dev_minor = 0;
  uint64_t inode = 0;
  std::string path;                 // may be empty, [heap], "... (deleted)"
  std::vector<std::string> vm_flags;
  uint64_t rss_kb = 0, swap_kb = 0;  // from smaps; both 0: no page to look for
  uint32_t pkey = 0;                 // from smaps (ProtectionKey:, where the CPU has them)
  bool has_flag(const char* f) const;
};
[[nodiscard]] Result<std::vector<MapsEntry>> parse_maps(const std::string& text);
// smaps: maps lines followed by "Key: value" lines, among them VmFlags.
[[nodiscard]] Result<std::vector<MapsEntry>> parse_smaps(const std::string& text);

struct Limit {
  uint32_t resource = 0;
  uint64_t cur = 0, max = 0;  // ~0 for unlimited
};
[[nodiscard]] Result<std::vector<Limit>> parse_limits(const std::string& text);

struct FdInfo {
  uint64_t pos = 0;
  uint32_t flags = 0;
  uint32_t mnt_id = 0;
  uint64_t ino = 0;
  // The whole text: anonymous-inode kinds (eventfd, timerfd, epoll...) add
  // lines of their own, which only the kind that owns them reads.
  std::string text;
};
[[nodiscard]] Result<FdInfo> parse_fdinfo(const std::string& text);
// The value of the first "key: value" line of an fdinfo text ("eventfd-count",
// "sigmask", "Pid"), without the blanks after the colon.
std::optional<std::string> fdinfo_field(const std::string& fdinfo_text, const std::string& key);

// Whitespace-separated pids in a file (task/TID/children).
std::vector<pid_t> parse_pid_list(const std::string& text);
// The numeric entries of a /proc directory (task/, fd/), sorted.
[[nodiscard]] Result<std::vector<int>> list_numeric_dir(const std::string& path);
// The children of every thread of pid (/proc/PID/task/TID/children), as
// they are now; none if it is gone.
std::vector<pid_t> children_of(pid_t pid);

// A process's command name (/proc/PID/comm without its newline), "?" if gone.
std::string comm_of(pid_t pid);

// A process outside `exclude` that holds an fd whose /proc link is one of
// `links` (pipe:[N], socket:[N]...): the first found, by a scan of /proc/*/fd.
struct FdHolder {
  pid_t pid = 0;
  int fd = -1;
  std::string comm;
  std::string link;
};
[[nodiscard]] Result<std::optional<FdHolder>> find_fd_holder(const std::set<std::string>& links,
                                                             const std::set<pid_t>& exclude);
// The first fd of pid (or of a thread's table, by tid) whose /proc link is
// one of links; none if there is none or pid is gone.
std::optional<FdHolder> find_fd_link(pid_t pid, const std::set<std::string>& links);

// A "Key:\tvalue" line of /proc/PID/status.
std::optional<std::string> status_field(const std::string& status_text, const std::string& key);

}  // namespace minicriu::proc

namespace minicriu::proc {

// One entry of /proc/PID/timers (fs/proc/base.c show_timer).
struct TimerEntry {
  int id = 0;
  int signo = 0;
  uint64_t sigev_value = 0;
  std::string notify;     // "signal", "none", "thread"
  bool to_thread = false; // notify ".../tid.N" (SIGEV_THREAD_ID)
  pid_t notify_pid = 0;
  int clock_id = 0;
};
[[nodiscard]] Result<std::vector<TimerEntry>> parse_timers(const std::string& text);

}  // namespace minicriu::proc
