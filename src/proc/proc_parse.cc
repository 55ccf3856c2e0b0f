#include "proc/proc_parse.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <sstream>

#include "base/unique_fd.hpp"

namespace minicriu::proc {

Result<std::string> read_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return failf_errno("cannot open {}", path);
  std::string out;
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return failf_errno("cannot read {}", path);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Result<std::string> read_link(const std::string& path) {
  char buf[4096];
  ssize_t n = ::readlink(path.c_str(), buf, sizeof(buf));
  if (n < 0) return failf_errno("cannot read link {}", path);
  return std::string(buf, static_cast<size_t>(n));
}

std::string pid_path(pid_t pid, const std::string& rest) {
  return "/proc/" + std::to_string(pid) + "/" + rest;
}

Result<Stat> parse_stat(const std::string& text) {
  Stat s;
  auto open = text.find('(');
  auto close = text.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open)
    return fail("malformed /proc/PID/stat: no comm");
  s.pid = std::atoi(text.c_str());
  s.comm = text.substr(open + 1, close - open - 1);
  std::istringstream in(text.substr(close + 2));
  std::vector<std::string> f;  // f[0] is field 3 (state)
  for (std::string w; in >> w;) f.push_back(w);
  if (f.size() < 50) return failf("malformed /proc/PID/stat: {} fields", f.size() + 2);
  auto field_or_zero = [&](int field) -> uint64_t {
    return static_cast<size_t>(field - 3) < f.size() ? std::strtoull(f[field - 3].c_str(), nullptr, 10) : 0;
  };
  auto u = [&](int field) { return std::strtoull(f[field - 3].c_str(), nullptr, 10); };
  s.state = f[0][0];
  s.ppid = static_cast<pid_t>(u(4));
  s.pgrp = static_cast<pid_t>(u(5));
  s.session = static_cast<pid_t>(u(6));
  s.tty_nr = static_cast<uint32_t>(u(7));
  s.tpgid = static_cast<pid_t>(std::strtol(f[8 - 3].c_str(), nullptr, 10));
  s.start_code = u(26);
  s.end_code = u(27);
  s.start_stack = u(28);
  s.exit_signal = static_cast<uint32_t>(u(38));
  s.start_data = u(45);
  s.end_data = u(46);
  s.start_brk = u(47);
  s.arg_start = u(48);
  s.arg_end = u(49);
  s.env_start = u(50);
  s.env_end = u(51);
  s.exit_code = static_cast<int>(field_or_zero(52));
  return s;
}

bool MapsEntry::has_flag(const char* f) const {
  return std::find(vm_flags.begin(), vm_flags.end(), f) != vm_flags.end();
}

namespace {

bool parse_maps_line(const std::string& line, MapsEntry& e) {
  // 7f00-7f10 rw-p 00000000 fe:00 1234    /path with spaces (deleted)
  const char* p = line.c_str();
  char* end;
  e.start = std::strtoull(p, &end, 16);
  if (*end != '-') return false;
  e.end = std::strtoull(end + 1, &end, 16);
  if (*end != ' ' || std::strlen(end) < 6) return false;
  p = end + 1;
  e.read = p[0] == 'r';
  e.write = p[1] == 'w';
  e.exec = p[2] == 'x';
  e.shared = p[3] == 's';
  e.offset = std::strtoull(p + 5, &end, 16);
  e.dev_major = static_cast<uint32_t>(std::strtoul(end + 1, &end, 16));
  if (*end != ':') return false;
  e.dev_minor = static_cast<uint32_t>(std::strtoul(end + 1, &end, 16));
  e.inode = std::strtoull(end + 1, &end, 10);
  while (*end == ' ') end++;
  e.path = end;
  return true;
}

bool is_maps_line(const std::string& line) {
  // Keys of smaps start with a capital letter and have no '-' before a ':'.
  auto dash = line.find('-');
  auto space = line.find(' ');
  return dash != std::string::npos && space != std::string::npos && dash < space &&
         std::isxdigit(static_cast<unsigned char>(line[0]));
}

}  // namespace

Result<std::vector<MapsEntry>> parse_maps(const std::string& text) {
  std::vector<MapsEntry> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    MapsEntry e;
    if (!parse_maps_line(line, e)) return failf("malformed maps line: {}", line);
    out.push_back(std::move(e));
  }
  return out;
}

Result<std::vector<MapsEntry>> parse_smaps(const std::string& text) {
  std::vector<MapsEntry> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    if (is_maps_line(line)) {
      MapsEntry e;
      if (!parse_maps_line(line, e)) return failf("malformed smaps line: {}", line);
      out.push_back(std::move(e));
    } else if (line.rfind("Rss:", 0) == 0 && !out.empty()) {
      out.back().rss_kb = std::strtoull(line.c_str() + 4, nullptr, 10);
    } else if (line.rfind("Swap:", 0) == 0 && !out.empty()) {
      out.back().swap_kb = std::strtoull(line.c_str() + 5, nullptr, 10);
    } else if (line.rfind("ProtectionKey:", 0) == 0 && !out.empty()) {
      out.back().pkey = static_cast<uint32_t>(std::strtoul(line.c_str() + 14, nullptr, 10));
    } else if (line.rfind("VmFlags:", 0) == 0) {
      if (out.empty()) return fail("malformed smaps: VmFlags before a mapping");
      std::istringstream flags(line.substr(8));
      for (std::string f; flags >> f;) out.back().vm_flags.push_back(f);
    }
  }
  return out;
}

Result<std::vector<Limit>> parse_limits(const std::string& text) {
  // The names /proc/PID/limits prints, in the order of RLIMIT_* numbers.
  static const std::pair<const char*, uint32_t> kNames[] = {
      {"Max cpu time", RLIMIT_CPU},           {"Max file size", RLIMIT_FSIZE},
      {"Max data size", RLIMIT_DATA},         {"Max stack size", RLIMIT_STACK},
      {"Max core file size", RLIMIT_CORE},    {"Max resident set", RLIMIT_RSS},
      {"Max processes", RLIMIT_NPROC},        {"Max open files", RLIMIT_NOFILE},
      {"Max locked memory", RLIMIT_MEMLOCK},  {"Max address space", RLIMIT_AS},
      {"Max file locks", RLIMIT_LOCKS},       {"Max pending signals", RLIMIT_SIGPENDING},
      {"Max msgqueue size", RLIMIT_MSGQUEUE}, {"Max nice priority", RLIMIT_NICE},
      {"Max realtime priority", RLIMIT_RTPRIO}, {"Max realtime timeout", RLIMIT_RTTIME},
  };
  std::vector<Limit> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    for (auto& [name, res] : kNames) {
      size_t n = std::strlen(name);
      if (line.compare(0, n, name) != 0 || line.size() <= n || line[n] != ' ') continue;
      std::istringstream vals(line.substr(n));
      std::string cur, max;
      vals >> cur >> max;
      auto value = [](const std::string& v) -> uint64_t {
        return v == "unlimited" ? ~0ull : std::strtoull(v.c_str(), nullptr, 10);
      };
      out.push_back({res, value(cur), value(max)});
    }
  }
  if (out.size() != 16) return failf("malformed limits: {} of 16 limits found", out.size());
  return out;
}

Result<FdInfo> parse_fdinfo(const std::string& text) {
  FdInfo info;
  bool have_pos = false, have_flags = false;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    const char* v = line.c_str() + colon + 1;
    while (*v == ' ' || *v == '\t') v++;
    if (key == "pos") {
      info.pos = std::strtoull(v, nullptr, 10);
      have_pos = true;
    } else if (key == "flags") {
      info.flags = static_cast<uint32_t>(std::strtoul(v, nullptr, 8));
      have_flags = true;
    } else if (key == "mnt_id") {
      info.mnt_id = static_cast<uint32_t>(std::strtoul(v, nullptr, 10));
    } else if (key == "ino") {
      info.ino = std::strtoull(v, nullptr, 10);
    }
  }
  if (!have_pos || !have_flags) return fail("malformed fdinfo: no pos or flags");
  info.text = text;
  return info;
}

std::vector<pid_t> parse_pid_list(const std::string& text) {
  std::vector<pid_t> out;
  std::istringstream in(text);
  for (long v; in >> v;) out.push_back(static_cast<pid_t>(v));
  return out;
}

Result<std::vector<int>> list_numeric_dir(const std::string& path) {
  DIR* d = ::opendir(path.c_str());
  if (!d) return failf_errno("cannot list {}", path);
  std::vector<int> out;
  while (dirent* e = ::readdir(d)) {
    int v = 0;
    auto [ptr, ec] = std::from_chars(e->d_name, e->d_name + std::strlen(e->d_name), v);
    if (ec == std::errc() && *ptr == '\0') out.push_back(v);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> out;
  auto tids = list_numeric_dir(pid_path(pid, "task"));
  if (!tids) return out;
  for (int tid : *tids)
    if (auto text = read_file(pid_path(pid, fmt::format("task/{}/children", tid))))
      for (pid_t c : parse_pid_list(*text)) out.push_back(c);
  return out;
}

std::string comm_of(pid_t pid) {
  auto comm = read_file(pid_path(pid, "comm"));
  return comm ? comm->substr(0, comm->find('\n')) : "?";
}

Result<std::optional<FdHolder>> find_fd_holder(const std::set<std::string>& links,
                                               const std::set<pid_t>& exclude) {
  if (links.empty()) return std::optional<FdHolder>();
  ASSIGN_OR_RETURN(auto pids, list_numeric_dir("/proc"));
  for (pid_t pid : pids) {
    if (exclude.count(pid)) continue;
    if (auto holder = find_fd_link(pid, links)) return holder;
  }
  return std::optional<FdHolder>();
}

std::optional<FdHolder> find_fd_link(pid_t pid, const std::set<std::string>& links) {
  auto fds = list_numeric_dir(pid_path(pid, "fd"));
  if (!fds) return std::nullopt;  // gone, or a kernel thread
  for (int fd : *fds) {
    auto link = read_link(pid_path(pid, fmt::format("fd/{}", fd)));
    if (link && links.count(*link)) return FdHolder{pid, fd, comm_of(pid), *link};
  }
  return std::nullopt;
}

std::optional<std::string> status_field(const std::string& status_text, const std::string& key) {
  std::istringstream in(status_text);
  for (std::string line; std::getline(in, line);) {
    if (line.size() > key.size() && line.compare(0, key.size(), key) == 0 && line[key.size()] == ':') {
      size_t v = key.size() + 1;
      while (v < line.size() && (line[v] == ' ' || line[v] == '\t')) v++;
      return line.substr(v);
    }
  }
  return std::nullopt;
}

// Same "Key:<blanks>value" shape as status lines.
std::optional<std::string> fdinfo_field(const std::string& fdinfo_text, const std::string& key) {
  return status_field(fdinfo_text, key);
}

}  // namespace minicriu::proc

namespace minicriu::proc {

Result<std::vector<TimerEntry>> parse_timers(const std::string& text) {
  std::vector<TimerEntry> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("ID:", 0) == 0) {
      out.emplace_back();
      out.back().id = std::atoi(line.c_str() + 3);
      continue;
    }
    if (out.empty()) return failf("malformed timers: {} before an ID", line);
    TimerEntry& t = out.back();
    if (line.rfind("signal:", 0) == 0) {
      // "signal: 14/00000000deadbeef"
      const char* v = line.c_str() + 7;
      char* end;
      t.signo = static_cast<int>(std::strtol(v, &end, 10));
      if (*end != '/') return failf("malformed timers line: {}", line);
      t.sigev_value = std::strtoull(end + 1, nullptr, 16);
    } else if (line.rfind("notify:", 0) == 0) {
      // "notify: signal/pid.123" or "notify: thread/tid.124"
      std::string v = line.substr(7);
      while (!v.empty() && v[0] == ' ') v.erase(0, 1);
      auto slash = v.find('/');
      auto dot = v.find('.', slash);
      if (slash == std::string::npos || dot == std::string::npos) return failf("malformed timers line: {}", line);
      t.notify = v.substr(0, slash);
      t.to_thread = v.compare(slash + 1, 3, "tid") == 0;
      t.notify_pid = static_cast<pid_t>(std::atoi(v.c_str() + dot + 1));
    } else if (line.rfind("ClockID:", 0) == 0) {
      t.clock_id = std::atoi(line.c_str() + 8);
    }
  }
  return out;
}

}  // namespace minicriu::proc
