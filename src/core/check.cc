// `minicriu check`: probes what dump and restore rely on, on this kernel and
// with this process's capabilities, by trying each thing on a child of ours.
#include <linux/sched.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>
#include <linux/kcmp.h>

#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstring>
#include <sstream>

#include "base/error.hpp"
#include "base/syscalls.hpp"
#include "net/network_lock.hpp"
#include "base/unique_fd.hpp"
#include "core/journal_replay.hpp"
#include "minicriu/cleanup.hpp"
#include "net/inet_addr.hpp"
#include "proc/privileges.hpp"
#include "proc/proc_parse.hpp"
#include "ptrace/tracee.hpp"

namespace minicriu {

namespace {

// A child that only waits to be killed.
pid_t spawn_sleeper() {
  pid_t pid = ::fork();
  if (pid == 0) {
    for (;;) ::pause();
  }
  return pid;
}

void reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  int st;
  ::waitpid(pid, &st, __WALL);
}

CheckItem check_ptrace() {
  CheckItem item{"ptrace seize, interrupt, registers, xsave", false, true, {}};
  pid_t pid = spawn_sleeper();
  if (pid < 0) {
    item.detail = "fork failed";
    return item;
  }
  {
    auto t = Tracee::seize(pid, pid);
    if (!t) {
      item.detail = t.error().what();
    } else if (auto regs = t->get_regs(); !regs) {
      item.detail = regs.error().what();
    } else if (auto xs = t->get_xsave(); !xs) {
      item.detail = xs.error().what();
    } else {
      item.ok = true;
      item.detail = fmt::format("xsave area {} bytes", xs->size());
    }
  }
  reap(pid);
  return item;
}

// Needed only for processes under seccomp (proc/seccomp.cc).
CheckItem check_suspend_seccomp() {
  CheckItem item{"PTRACE_O_SUSPEND_SECCOMP (processes under seccomp)", false, false, {}};
  pid_t pid = spawn_sleeper();
  if (pid < 0) {
    item.detail = "fork failed";
    return item;
  }
  {
    auto t = Tracee::seize(pid, pid);
    if (!t) item.detail = t.error().what();
    else if ((item.ok = t->seccomp_suspended())) item.detail = "a thread's seccomp filters do not apply to the dump's syscalls";
    else item.detail = "not permitted (needs CAP_SYS_ADMIN, and minicriu not under seccomp itself)";
  }
  reap(pid);
  return item;
}

// Needed only for POSIX timers that signal a thread other than the leader.
CheckItem check_timer_restore_ids() {
  CheckItem item{"prctl(PR_TIMER_CREATE_RESTORE_IDS) (POSIX timers of other threads)", false, false, {}};
  constexpr int kPrTimerCreateRestoreIds = 77;
  item.ok = ::prctl(kPrTimerCreateRestoreIds, 1, 0, 0, 0) == 0;
  if (item.ok) ::prctl(kPrTimerCreateRestoreIds, 0, 0, 0, 0);
  item.detail = item.ok ? "timers are made again with their ids" : "this kernel lacks it (Linux 6.17)";
  return item;
}

CheckItem check_clone3_set_tid() {
  CheckItem item{"clone3 with set_tid (restore with the same PIDs)", false, true, {}};
  // A pid nobody holds, away from the last one handed out, below pid_max.
  pid_t want = 0;
  auto last = proc::read_file("/proc/sys/kernel/ns_last_pid");
  auto max = proc::read_file("/proc/sys/kernel/pid_max");
  pid_t pid_max = max ? static_cast<pid_t>(std::atoi(max->c_str())) : 32768;
  pid_t start = last ? static_cast<pid_t>(std::atoi(last->c_str())) + 1000 : 1000;
  for (pid_t i = 0; i < pid_max && !want; i++) {
    pid_t p = 300 + (start - 300 + i) % (pid_max - 300);
    if (::kill(p, 0) != 0 && errno == ESRCH) want = p;
  }
  clone_args args{};
  args.exit_signal = SIGCHLD;
  pid_t tid = want;
  args.set_tid = reinterpret_cast<uint64_t>(&tid);
  args.set_tid_size = 1;
  long pid = sys::clone3(&args, sizeof(args));
  if (pid == 0) ::_exit(0);
  if (pid < 0) {
    item.detail = fmt::format("clone3: {}", std::strerror(errno));
    return item;
  }
  int st;
  ::waitpid(static_cast<pid_t>(pid), &st, 0);
  item.ok = pid == want;
  item.detail = fmt::format("asked for pid {}, got {}", want, pid);
  return item;
}

CheckItem check_kcmp() {
  CheckItem item{"kcmp (shared open files)", false, true, {}};
  int r = sys::kcmp(::getpid(), ::getpid(), KCMP_FILE, 0, 0);
  item.ok = r == 0;
  item.detail = item.ok ? "available" : std::strerror(errno);
  return item;
}

CheckItem check_vdso() {
  CheckItem item{"vdso and vvar layout", false, true, {}};
  auto text = proc::read_file("/proc/self/maps");
  if (!text) {
    item.detail = text.error().what();
    return item;
  }
  auto maps = proc::parse_maps(*text);
  if (!maps) {
    item.detail = maps.error().what();
    return item;
  }
  std::string found;
  for (auto& m : *maps)
    if (m.path == "[vdso]" || m.path == "[vvar]" || m.path == "[vvar_vclock]")
      found += fmt::format("{}{} {} KiB", found.empty() ? "" : ", ", m.path, (m.end - m.start) >> 10);
  item.ok = found.find("[vdso]") != std::string::npos;
  item.detail = found.empty() ? "no vdso" : found;
  return item;
}

CheckItem check_userfaultfd() {
  CheckItem item{"userfaultfd (lazy restore, dirty tracking)", false, false, {}};
  constexpr int kUffdUserModeOnly = 1;
  int fd = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | kUffdUserModeOnly));
  item.ok = fd >= 0;
  item.detail = item.ok ? "available" : std::strerror(errno);
  if (fd >= 0) ::close(fd);
  return item;
}

CheckItem check_capabilities() {
  // Not required: a user without them may still dump their own processes
  // (the two items below say what).
  CheckItem item{"capabilities", false, false, {}};
  auto caller = own_creds();
  if (!caller) {
    item.detail = caller.error().what();
    return item;
  }
  auto has = [&](int cap) { return (caller->cap_eff() >> cap) & 1; };
  item.ok = has(cap::kSysPtrace) && (has(cap::kSysAdmin) || has(cap::kCheckpointRestore));
  item.detail = fmt::format("uid {}, gid {}; CAP_SYS_PTRACE {}, CAP_SYS_ADMIN {}, CAP_CHECKPOINT_RESTORE {}, "
                            "CAP_NET_ADMIN {}, CAP_SYS_RESOURCE {} (without it: rlimits above the hard limit are "
                            "not raised, pipes stay at fs.pipe-max-size)",
                            caller->uids_size() ? caller->uids(0) : ~0u, caller->gids_size() ? caller->gids(0) : ~0u,
                            has(cap::kSysPtrace) ? "yes" : "no", has(cap::kSysAdmin) ? "yes" : "no",
                            has(cap::kCheckpointRestore) ? "yes" : "no", has(cap::kNetAdmin) ? "yes" : "no",
                            has(cap::kSysResource) ? "yes" : "no");
  return item;
}

// A capability set in a few words: "all but CAP_SYS_RESOURCE" for root's.
std::string caps_text(uint64_t mask) {
  constexpr uint64_t kKnown = (uint64_t{1} << (cap::kCheckpointRestore + 1)) - 1;
  if (__builtin_popcountll(mask & kKnown) > 20)
    return (mask & kKnown) == kKnown ? "all" : "all but " + cap_names(kKnown & ~mask);
  return cap_names(mask);
}

// What this user may dump and restore (proc/privileges.hpp), from its
// capabilities and kernel.yama.ptrace_scope.
std::vector<CheckItem> check_this_user() {
  std::vector<CheckItem> items;
  auto caller = own_creds();
  if (!caller || caller->uids_size() != 4 || caller->gids_size() != 4) {
    items.push_back({"dump and restore as this user", false, false,
                     caller ? "minicriu's own uids and gids are unknown" : caller.error().what()});
    return items;
  }
  auto has = [&](int cap) { return ((caller->cap_eff() >> cap) & 1) != 0; };
  auto yes_no = [](bool b) { return b ? "yes" : "no"; };
  uint32_t uid = caller->uids(0), gid = caller->gids(0);
  bool map_files = has(cap::kCheckpointRestore) || has(cap::kSysAdmin);
  auto yama = proc::read_file("/proc/sys/kernel/yama/ptrace_scope");
  int scope = yama ? std::atoi(yama->c_str()) : -1;

  CheckItem dump{"dump as this user", true, false, {}};
  if (has(cap::kSysPtrace)) {
    dump.detail = "any process (CAP_SYS_PTRACE)";
  } else if (scope >= 2) {
    dump.ok = false;
    dump.detail = fmt::format("nothing: kernel.yama.ptrace_scope is {}, only CAP_SYS_PTRACE may attach", scope);
  } else {
    dump.detail = fmt::format("only processes it could ptrace: real, effective and saved uids {} and gids {}, no "
                              "capability beyond its own ({}), dumpable{}; not: other users' processes (no "
                              "CAP_SYS_PTRACE)",
                              uid, gid, caps_text(caller->cap_prm()),
                              scope == 1 ? "; kernel.yama.ptrace_scope is 1: only its descendants, or processes "
                                           "that named it with PR_SET_PTRACER"
                                         : "");
  }
  if (dump.ok)
    dump.detail += fmt::format("; TCP connections {} (CAP_NET_ADMIN: TCP_REPAIR, network lock); shared memory, "
                               "memfd and deleted-file mappings {} (CAP_CHECKPOINT_RESTORE: /proc/PID/map_files); "
                               "processes under seccomp {} (CAP_SYS_ADMIN)",
                               yes_no(has(cap::kNetAdmin)), yes_no(map_files), yes_no(has(cap::kSysAdmin)));
  items.push_back(dump);

  CheckItem restore{"restore as this user", map_files, false, {}};
  if (!map_files) {
    restore.detail = "nothing: it needs CAP_CHECKPOINT_RESTORE (clone3 with set_tid, PR_SET_MM_MAP, "
                     "/proc/self/map_files)";
  } else {
    restore.detail = fmt::format(
        "processes with {}, {}, capabilities within its own ({}){}; TCP connections {} (CAP_NET_ADMIN); files "
        "only those it may open itself",
        has(cap::kSetuid) ? std::string("any uids (CAP_SETUID)") : fmt::format("uids {}", uid),
        has(cap::kSetgid) ? std::string("any gids and groups (CAP_SETGID)")
                          : fmt::format("gids {} and its own groups", gid),
        caps_text(caller->cap_prm()), has(cap::kSetpcap) ? "" : ", its own bounding set and securebits",
        yes_no(has(cap::kNetAdmin)));
  }
  items.push_back(restore);
  return items;
}

// The network lock's default backend: a table of ours created and deleted
// through libnftables (no firewall command needed).
CheckItem check_nftables() {
  CheckItem item{"nftables network lock (TCP connections)", false, false, {}};
  auto st = network_lock_probe_nftables();
  item.ok = st.has_value();
  item.detail = item.ok ? "a probe table was created and deleted through libnftables"
                        : st.error().what() + "; dumps of TCP connections need --network-lock iptables or skip";
  return item;
}

// TCP connections are dumped and restored with TCP_REPAIR (CAP_NET_ADMIN),
// their peers found through inet sock_diag.
CheckItem check_tcp_repair() {
  CheckItem item{"TCP_REPAIR and inet sock_diag (TCP connections)", false, false, {}};
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int on = TCP_REPAIR_ON;
  if (!s || ::setsockopt(s.get(), SOL_TCP, TCP_REPAIR, &on, sizeof on) != 0) {
    item.detail = fmt::format("TCP_REPAIR: {}", std::strerror(errno));
    return item;
  }
  auto diag = inet_diag_dump(AF_INET, IPPROTO_TCP);
  item.ok = diag.has_value();
  item.detail = diag ? "available" : diag.error().what();
  return item;
}

}  // namespace

Result<std::vector<CheckItem>> check() {
  std::vector<CheckItem> items;
  utsname u;
  ::uname(&u);
  items.push_back({"kernel", true, false, fmt::format("{} {}", u.sysname, u.release)});
  items.push_back(check_capabilities());
  for (auto& item : check_this_user()) items.push_back(std::move(item));
  items.push_back(check_ptrace());
  items.push_back(check_suspend_seccomp());
  items.push_back(check_timer_restore_ids());
  items.push_back(check_clone3_set_tid());
  items.push_back(check_kcmp());
  items.push_back(check_vdso());
  items.push_back(check_userfaultfd());
  items.push_back(check_nftables());
  items.push_back(check_tcp_repair());
  auto pipe_max = proc::read_file("/proc/sys/fs/pipe-max-size");
  items.push_back({"pipe size for the page path", pipe_max.has_value(), false,
                   pipe_max ? fmt::format("fs.pipe-max-size {}", std::atol(pipe_max->c_str())) : "unknown"});
  return items;
}

Result<std::vector<std::string>> cleanup_dead_dumps(const LogOptions& log) {
  ASSIGN_OR_RETURN(auto results, replay_all_journals(Logger(log)));
  std::vector<std::string> lines;
  for (auto& r : results) lines.push_back(r.summary());
  return lines;
}

}  // namespace minicriu
