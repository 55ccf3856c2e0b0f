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
#include "net/inet_addr.hpp"
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
  CheckItem item{"capabilities", false, true, {}};
  auto status = proc::read_file("/proc/self/status");
  if (!status) {
    item.detail = status.error().what();
    return item;
  }
  auto eff = proc::status_field(*status, "CapEff");
  uint64_t caps = eff ? std::strtoull(eff->c_str(), nullptr, 16) : 0;
  auto has = [&](int cap) { return (caps >> cap) & 1; };
  constexpr int kSysPtrace = 19, kSysAdmin = 21, kSysResource = 24, kCheckpointRestore = 40;
  item.ok = has(kSysPtrace) && (has(kSysAdmin) || has(kCheckpointRestore));
  item.detail = fmt::format("CAP_SYS_PTRACE {}, CAP_SYS_ADMIN {}, CAP_CHECKPOINT_RESTORE {}, "
                            "CAP_SYS_RESOURCE {} (without it: rlimits above the hard limit are "
                            "not raised, pipes stay at fs.pipe-max-size)",
                            has(kSysPtrace) ? "yes" : "no", has(kSysAdmin) ? "yes" : "no",
                            has(kCheckpointRestore) ? "yes" : "no", has(kSysResource) ? "yes" : "no");
  return item;
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

}  // namespace minicriu
