#include "core/journal_replay.hpp"

#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "base/journal.hpp"
#include "base/unique_fd.hpp"
#include "net/network_lock.hpp"
#include "parasite/target_snapshot.hpp"
#include "proc/proc_parse.hpp"
#include "ptrace/tracee.hpp"
#include "ptrace/tracee_memory.hpp"

namespace minicriu {

namespace {

using namespace std::chrono_literals;

struct SavedRegs {
  arch::Regs regs{};
  uint64_t sigmask = 0;
};

struct ParasiteNote {
  uint64_t site = 0;
  uint64_t pending = 0;
  std::set<int> fds;
};

// What the journal says is still changed, the first state saved of each
// thread and site (a change noted twice is undone to the older state).
struct Outstanding {
  pid_t dumper = 0, guardian = 0;
  uint64_t dumper_start = 0, guardian_start = 0;
  std::map<pid_t, uint64_t> procs;          // pid -> start time
  std::set<pid_t> stopped;
  std::map<pid_t, std::pair<pid_t, std::vector<SavedRegs>>> regs;  // tid -> (pid, stack)
  std::map<std::pair<pid_t, uint64_t>, std::vector<std::string>> code;
  std::map<pid_t, ParasiteNote> parasites;
  std::set<uint64_t> tcp_repair;            // socket inodes
  std::map<std::string, std::string> locks; // table -> mode
  std::set<std::string> link_remaps;
  bool published = false;
  unsigned bad_lines = 0;
};

Outstanding parse(std::istream& in) {
  Outstanding o;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string word;
    f >> word;
    bool ok = true;
    if (word == "dumper") {
      ok = static_cast<bool>(f >> o.dumper >> o.dumper_start);
    } else if (word == "guardian") {
      ok = static_cast<bool>(f >> o.guardian >> o.guardian_start);
    } else if (word == "proc") {
      pid_t pid;
      uint64_t start;
      if ((ok = static_cast<bool>(f >> pid >> start))) o.procs.emplace(pid, start);
    } else if (word == "stop") {
      pid_t pid;
      if ((ok = static_cast<bool>(f >> pid))) o.stopped.insert(pid);
    } else if (word == "cont") {
      pid_t pid;
      if ((ok = static_cast<bool>(f >> pid))) o.stopped.erase(pid);
    } else if (word == "regs") {
      pid_t pid, tid;
      std::string hex, bytes, mask;
      ok = static_cast<bool>(f >> pid >> tid >> hex >> mask) && parse_hex(hex, bytes) &&
           bytes.size() == sizeof(arch::Regs);
      if (ok) {
        SavedRegs s;
        std::memcpy(&s.regs, bytes.data(), sizeof(s.regs));
        s.sigmask = std::strtoull(mask.c_str(), nullptr, 16);
        auto& entry = o.regs[tid];
        entry.first = pid;
        entry.second.push_back(s);
      }
    } else if (word == "regs-back") {
      pid_t tid;
      if ((ok = static_cast<bool>(f >> tid))) {
        auto it = o.regs.find(tid);
        if (it != o.regs.end()) {
          if (!it->second.second.empty()) it->second.second.pop_back();
          if (it->second.second.empty()) o.regs.erase(it);
        }
      }
    } else if (word == "code" || word == "code-back") {
      pid_t pid;
      std::string addr, hex, bytes;
      ok = static_cast<bool>(f >> pid >> addr);
      uint64_t at = ok ? std::strtoull(addr.c_str(), nullptr, 16) : 0;
      if (ok && word == "code") {
        ok = static_cast<bool>(f >> hex) && parse_hex(hex, bytes);
        if (ok) o.code[{pid, at}].push_back(bytes);
      } else if (ok) {
        auto it = o.code.find({pid, at});
        if (it != o.code.end()) {
          it->second.pop_back();
          if (it->second.empty()) o.code.erase(it);
        }
      }
    } else if (word == "parasite") {
      pid_t pid;
      std::string site, pending;
      if ((ok = static_cast<bool>(f >> pid >> site >> pending))) {
        ParasiteNote p;
        p.site = std::strtoull(site.c_str(), nullptr, 16);
        p.pending = std::strtoull(pending.c_str(), nullptr, 16);
        for (int fd; f >> fd;) p.fds.insert(fd);
        o.parasites[pid] = std::move(p);
      }
    } else if (word == "parasite-gone") {
      pid_t pid;
      if ((ok = static_cast<bool>(f >> pid))) o.parasites.erase(pid);
    } else if (word == "tcp-repair" || word == "tcp-repair-off") {
      uint64_t ino;
      if ((ok = static_cast<bool>(f >> ino))) {
        if (word == "tcp-repair") o.tcp_repair.insert(ino);
        else o.tcp_repair.erase(ino);
      }
    } else if (word == "nft") {
      std::string mode, table;
      if ((ok = static_cast<bool>(f >> mode >> table))) o.locks[table] = mode;
    } else if (word == "nft-gone") {
      std::string table;
      if ((ok = static_cast<bool>(f >> table))) o.locks.erase(table);
    } else if (word == "link-remap" || word == "link-remap-gone") {
      std::string hex, path;
      if ((ok = static_cast<bool>(f >> hex) && parse_hex(hex, path))) {
        if (word == "link-remap") o.link_remaps.insert(path);
        else o.link_remaps.erase(path);
      }
    } else if (word == "published") {
      o.published = true;
    } else if (!word.empty()) {
      ok = false;
    }
    // A line cut by the crash (the last one, not synced whole) or unknown.
    if (!ok) o.bad_lines++;
  }
  return o;
}

// Seizes a thread whose tracer may still be on its way out: the dumper's
// fds (the guardian's pipe) close before the kernel detaches its tracees.
Result<Tracee> seize_when_free(pid_t pid, pid_t tid) {
  auto deadline = std::chrono::steady_clock::now() + 5s;
  for (;;) {
    auto t = Tracee::seize(pid, tid);
    if (t || t.error().err() != EPERM || std::chrono::steady_clock::now() >= deadline) return t;
    std::this_thread::sleep_for(2ms);
  }
}

// socket:[ino] among pid's fds: its fd number, or -1.
int fd_of_socket(pid_t pid, uint64_t ino) {
  auto fds = proc::list_numeric_dir(proc::pid_path(pid, "fd"));
  if (!fds) return -1;
  std::string want = fmt::format("socket:[{}]", ino);
  for (int fd : *fds) {
    char buf[64];
    ssize_t n = ::readlink(proc::pid_path(pid, fmt::format("fd/{}", fd)).c_str(), buf, sizeof(buf) - 1);
    if (n > 0 && std::string_view(buf, static_cast<size_t>(n)) == want) return fd;
  }
  return -1;
}

class Replayer {
 public:
  Replayer(const Outstanding& o, ReplayResult& r, const Logger& log) : o_(o), r_(r), log_(log) {}

  void run() {
    for (auto& [pid, start] : o_.procs) {
      if (!process_alive(pid, start)) continue;
      Status st = put_back(pid);
      if (!st) problem(fmt::format("pid {}: {}", pid, st.error().what()));
    }
    // Processes we stopped are continued after every one was put back (and
    // detached, by put_back's end): a tree wakes as a whole.
    for (pid_t pid : o_.stopped) {
      auto it = o_.procs.find(pid);
      if (it == o_.procs.end() || !process_alive(pid, it->second)) continue;
      if (::kill(pid, SIGCONT) == 0) r_.continued++;
    }
    if (!o_.published) {
      // A table noted and then gone already (killed before its "nft-gone"
      // line) is nothing to remove.
      std::vector<std::string> present;
      if (!o_.locks.empty())
        if (auto t = network_lock_tables()) present = std::move(*t);
      for (auto& [table, mode] : o_.locks) {
        if (mode == "nftables" && std::find(present.begin(), present.end(), table) == present.end()) continue;
        auto m = parse_network_lock_mode(mode);
        if (!m || !is_network_lock_name(*m, table)) {
          problem(fmt::format("network lock {}: not a table of minicriu's", table));
          continue;
        }
        if (auto st = network_unlock(*m, table, log_); st) r_.other++;
        else problem(fmt::format("network lock {}: {}", table, st.error().what()));
      }
      for (auto& path : o_.link_remaps) {
        auto slash = path.rfind('/');
        if (slash == std::string::npos || path.compare(slash + 1, 15, ".minicriu-link-") != 0) {
          problem(fmt::format("{}: not a link remap of minicriu's", path));
          continue;
        }
        if (::unlink(path.c_str()) == 0 || errno == ENOENT) r_.other++;
        else problem(fmt::format("cannot remove the link remap {}: {}", path, strerror(errno)));
      }
    }
  }

 private:
  void problem(std::string what) {
    log_.warn("journal replay: {}", what);
    r_.problems.push_back(std::move(what));
  }

  bool touched(pid_t pid) const {
    if (o_.stopped.count(pid) || o_.parasites.count(pid)) return true;
    for (auto& [tid, e] : o_.regs)
      if (e.first == pid) return true;
    for (auto& [key, v] : o_.code)
      if (key.first == pid) return true;
    return !o_.tcp_repair.empty();
  }

  Status put_back(pid_t pid) {
    if (!touched(pid)) return {};
    std::vector<Tracee> threads;
    // A process held in its group stop makes no threads; one pass more for
    // one that is not (stopped by nobody: the dumper died before SIGSTOP).
    for (int pass = 0; pass < 2; pass++) {
      ASSIGN_OR_RETURN(auto tids, proc::list_numeric_dir(proc::pid_path(pid, "task")));
      std::stable_partition(tids.begin(), tids.end(), [&](int t) { return t == pid; });
      for (pid_t tid : tids) {
        if (std::any_of(threads.begin(), threads.end(), [&](const Tracee& t) { return t.tid() == tid; })) continue;
        auto t = seize_when_free(pid, tid);
        if (!t) {
          if (t.error().err() == ESRCH) continue;
          return std::unexpected(t.error());
        }
        threads.push_back(std::move(*t));
      }
    }
    if (threads.empty()) return {};
    r_.processes++;
    Status result;
    auto note = [&](Status st) {
      if (!st && result) result = std::move(st);
    };
    for (auto& t : threads) {
      auto it = o_.regs.find(t.tid());
      if (it == o_.regs.end() || it->second.first != pid || it->second.second.empty()) continue;
      const SavedRegs& s = it->second.second.front();
      Status regs = t.set_regs(s.regs);
      Status mask = t.set_sigmask(s.sigmask);
      if (regs && mask) r_.threads++;
      note(std::move(regs));
      note(std::move(mask));
    }
    ASSIGN_OR_RETURN(auto memory, TraceeMemory::open(pid));
    for (auto& [key, stack] : o_.code) {
      if (key.first != pid || stack.empty()) continue;
      const std::string& bytes = stack.front();
      Status st = memory.write_bytes(RemotePtr<>(key.second), bytes.data(), bytes.size());
      if (st) r_.code++;
      note(std::move(st));
    }
    Tracee& leader = threads.front();
    if (auto p = o_.parasites.find(pid); p != o_.parasites.end()) {
      TargetSnapshot before;
      before.fds = p->second.fds;
      before.pending = p->second.pending;
      auto now = TargetSnapshot::take(pid, leader.tid());
      if (!now) {
        note(std::unexpected(now.error()));
      } else {
        Leftovers left = find_leftovers(before, *now);
        log_.info("journal replay: pid {}: taking away {}", pid, left.describe());
        if (!left.empty()) {
          Status st = take_leftovers_away(leader, memory, RemotePtr<>(p->second.site), left);
          if (st) r_.parasites++;
          note(std::move(st));
        }
      }
    }
    // Repair mode goes off on the socket itself, which we take from the
    // process's fd table (pidfd_getfd: the same socket, not a copy).
    for (uint64_t ino : o_.tcp_repair) {
      int fd = fd_of_socket(pid, ino);
      if (fd < 0) continue;
      UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
      UniqueFd sock(pidfd ? static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), fd, 0)) : -1);
      int off = 0;
      if (!sock || ::setsockopt(sock.get(), SOL_TCP, TCP_REPAIR, &off, sizeof off) != 0) {
        note(failf_errno("socket:[{}] (fd {}): cannot turn TCP repair mode off", ino, fd));
        continue;
      }
      r_.other++;
    }
    return result;  // threads detach here, in their group stop if held in one
  }

  const Outstanding& o_;
  ReplayResult& r_;
  const Logger& log_;
};

}  // namespace

std::string ReplayResult::summary() const {
  std::string name = path.substr(path.rfind('/') + 1);
  if (!replayed) return fmt::format("{}: left alone: {}", name, why);
  std::string out = fmt::format("{}: replayed: {} process(es) put back ({} thread(s) got their registers back, "
                                "{} code site(s) restored, {} parasite(s) taken away, {} continued, {} other)",
                                name, processes, threads, code, parasites, continued, other);
  if (!problems.empty()) out += fmt::format("; {} problem(s): {}", problems.size(), problems.front());
  return out;
}

Result<ReplayResult> replay_journal(const std::string& path, const Logger& log, bool by_guardian, pid_t dumper,
                                    uint64_t dumper_start) {
  ReplayResult r;
  r.path = path;
  std::ifstream in(path);
  if (!in) return failf_errno("cannot open the dump journal {}", path);
  Outstanding o = parse(in);
  if (by_guardian && (o.dumper != dumper || o.dumper_start != dumper_start)) {
    r.why = fmt::format("the journal of another dumper (pid {})", o.dumper);
    return r;
  }
  if (!by_guardian) {
    if (o.dumper && process_alive(o.dumper, o.dumper_start)) {
      r.why = fmt::format("its dumper (pid {}) still runs", o.dumper);
      return r;
    }
    if (o.guardian && process_alive(o.guardian, o.guardian_start)) {
      r.why = fmt::format("its guardian (pid {}) still runs", o.guardian);
      return r;
    }
  }
  if (o.bad_lines > 1) log.warn("journal {}: {} line(s) not understood", path, o.bad_lines);
  Replayer(o, r, log).run();
  r.replayed = true;
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    r.problems.push_back(fmt::format("cannot remove {}: {}", path, strerror(errno)));
  log.info("{}", r.summary());
  return r;
}

Result<std::vector<ReplayResult>> replay_all_journals(const Logger& log) {
  std::vector<ReplayResult> out;
  std::string dir = Journal::directory();
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    if (errno == ENOENT) return out;
    return failf_errno("cannot read the journal directory {}", dir);
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n.starts_with("dump-") && n.ends_with(".journal")) names.emplace_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (auto& n : names) {
    ASSIGN_OR_RETURN(auto r, replay_journal(dir + "/" + n, log, false));
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace minicriu
