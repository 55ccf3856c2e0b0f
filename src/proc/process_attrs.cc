// Process-wide attributes that no fd and no mapping holds: oom_score_adj,
// the audit loginuid, membarrier registrations, mlockall's flags for future
// mappings, KSM's merge-any flag (PR_SET_MEMORY_MERGE). Read from /proc and through the parasite; set again in the
// restored process itself (its mm is the one it keeps), the mlockall flags
// by the blob once every mapping is in place.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "images/checkpoint.hpp"
#include "kinds/kind.hpp"
#include "parasite/parasite_session.hpp"
#include "proc/proc_parse.hpp"
#include "base/unique_fd.hpp"

namespace minicriu {

namespace {

constexpr uint32_t kLoginuidUnset = 4294967295u;
// <linux/prctl.h> of Linux 6.4, newer than glibc's headers here.
constexpr int kPrSetMemoryMerge = 67;

// KSM's merge-any flag of the process (MMF_VM_MERGE_ANY), which only
// /proc/PID/ksm_stat shows ("ksm_merge_any:", recent kernels; without that
// line: false, and the VMAs still have their own MADV_MERGEABLE carried).
bool memory_merge_of(pid_t pid) {
  auto text = proc::read_file(proc::pid_path(pid, "ksm_stat"));
  return text && text->find("ksm_merge_any: yes") != std::string::npos;
}

Result<long long> read_number(const std::string& path) {
  ASSIGN_OR_RETURN(auto text, proc::read_file(path));
  return std::strtoll(text.c_str(), nullptr, 10);
}

bool write_text(const char* path, const std::string& text) {
  int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

// Whether a process made by minicriu may set oom_score_adj to value: the
// kernel lets a process without CAP_SYS_RESOURCE go down only to the lowest
// value a privileged one set for it, which /proc does not show, so a child
// tries (on itself: it inherits our limit, and is gone after).
bool can_set_oom_score_adj(int value) {
  auto mine = read_number("/proc/self/oom_score_adj");
  if (mine && value >= *mine) return true;
  pid_t child = ::fork();
  if (child < 0) return false;
  if (child == 0) ::_exit(write_text("/proc/self/oom_score_adj", std::to_string(value)) ? 0 : 1);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// mlockall(MCL_FUTURE) puts VM_LOCKED (and VM_LOCKONFAULT, with MCL_ONFAULT)
// into every new mapping: the parasite's, mapped by us, shows them. smaps is
// read only up to the parasite's record, a page at a time: the kernel walks
// the page tables of every VMA it shows (tens of ms for each GiB, with the
// tree frozen), and the VMAs behind the parasite's are not needed.
Result<uint32_t> mlockall_flags(pid_t pid, RemotePtr<> parasite) {
  std::string path = proc::pid_path(pid, "smaps");
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return failf_errno("cannot open {}", path);
  std::string head = fmt::format("\n{:x}-", parasite.addr());
  std::string smaps = "\n";
  size_t line = std::string::npos;
  for (char buf[4096];;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return failf_errno("cannot read {}", path);
    smaps.append(buf, static_cast<size_t>(n));
    size_t at = smaps.find(head);
    if (at != std::string::npos) {
      size_t flags = smaps.find("VmFlags:", at);
      if (flags != std::string::npos && smaps.find('\n', flags) != std::string::npos) {
        line = flags;
        break;
      }
    }
    if (n == 0) break;
  }
  if (line == std::string::npos)
    return failf("pid {}: the parasite's mapping at {} has no VmFlags in smaps", pid, parasite);
  std::string flags = smaps.substr(line, smaps.find('\n', line) - line) + " ";
  uint32_t out = 0;
  if (flags.find(" lo ") != std::string::npos) out |= MCL_FUTURE;
  if (flags.find(" lf ") != std::string::npos) out |= MCL_ONFAULT;
  return out;
}

class ProcessAttrsKind final : public Kind {
 public:
  const char* name() const override { return "process attributes"; }

  Status take_process(ProcessDump& p, DumpEnv&) override {
    img::ProcessAttrs& a = *p.core.mutable_attrs();
    ASSIGN_OR_RETURN(long long oom, read_number(proc::pid_path(p.pid, "oom_score_adj")));
    a.set_oom_score_adj(static_cast<int32_t>(oom));
    if (oom < 0 && !can_set_oom_score_adj(static_cast<int>(oom))) {
      auto mine = read_number("/proc/self/oom_score_adj");
      return failf("pid {}: its oom_score_adj is {}, lower than minicriu may set again (it lacks "
                   "CAP_SYS_RESOURCE; {} is allowed): raise it to {} or more before the dump (echo {} > "
                   "/proc/{}/oom_score_adj), or dump and restore with CAP_SYS_RESOURCE",
                   p.pid, oom, mine ? *mine : 0, mine ? *mine : 0, mine ? *mine : 0, p.pid);
    }
    if (auto login = read_number(proc::pid_path(p.pid, "loginuid"))) {
      a.set_has_loginuid(true);
      a.set_loginuid(static_cast<uint32_t>(*login));
    }
    ASSIGN_OR_RETURN(uint32_t mcl, mlockall_flags(p.pid, p.parasite.area()));
    a.set_mlockall(mcl);
    a.set_memory_merge(memory_merge_of(p.pid));
    return {};
  }

  Status restore_process(TaskEnv& task) override {
    const img::ProcessCore& core = task.process.core;
    if (!core.has_attrs()) return {};
    const img::ProcessAttrs& a = core.attrs();
    pid_t pid = static_cast<pid_t>(task.process.entry.pid());
    if (!write_text("/proc/self/oom_score_adj", std::to_string(a.oom_score_adj())))
      return failf_errno("pid {}: cannot set its oom_score_adj {} again (lowering it needs CAP_SYS_RESOURCE)",
                         pid, a.oom_score_adj());
    if (a.has_loginuid()) TRY(restore_loginuid(pid, a.loginuid()));
    for (uint32_t bit = 1; bit; bit <<= 1) {
      if (!(a.membarrier() & bit)) continue;
      if (::syscall(SYS_membarrier, bit, 0, 0) != 0)
        return failf_errno("pid {}: cannot register for membarrier again (MEMBARRIER_CMD_REGISTER_* {:#x})", pid, bit);
    }
    // Before the blob maps the dumped VMAs: each new one is made mergeable.
    if (a.memory_merge() && ::prctl(kPrSetMemoryMerge, 1, 0, 0, 0) != 0)
      return failf_errno("pid {}: cannot set prctl(PR_SET_MEMORY_MERGE, 1) again (a kernel without KSM?)", pid);
    return {};
  }

  void describe_process(const ProcessImages& p, std::string& out) const override {
    if (!p.core.has_attrs()) return;
    const img::ProcessAttrs& a = p.core.attrs();
    std::string line;
    auto add = [&](const std::string& part) { line += (line.empty() ? "  " : ", ") + part; };
    if (a.oom_score_adj()) add(fmt::format("oom_score_adj {}", a.oom_score_adj()));
    if (a.has_loginuid() && a.loginuid() != kLoginuidUnset) add(fmt::format("loginuid {}", a.loginuid()));
    if (a.membarrier()) add(fmt::format("membarrier registrations {:#x}", a.membarrier()));
    if (a.mlockall()) add(fmt::format("mlockall(MCL_FUTURE{})", (a.mlockall() & MCL_ONFAULT) ? " | MCL_ONFAULT" : ""));
    if (a.memory_merge()) add("KSM merges all its memory (PR_SET_MEMORY_MERGE)");
    if (!line.empty()) out += line + "\n";
  }

 private:
  // Set once per session by anyone while unset; changed again only with
  // CAP_AUDIT_CONTROL (and not at all with loginuid_immutable).
  static Status restore_loginuid(pid_t pid, uint32_t want) {
    auto now = read_number("/proc/self/loginuid");
    if (!now) return {};  // no CONFIG_AUDIT here
    if (static_cast<uint32_t>(*now) == want) return {};
    if (!write_text("/proc/self/loginuid", std::to_string(want)))
      return failf_errno("pid {}: cannot set its audit loginuid {} again: minicriu runs with loginuid {} "
                         "already, and changing a set loginuid needs CAP_AUDIT_CONTROL; restore from a session "
                         "whose loginuid is unset or {}", pid, want, static_cast<uint32_t>(*now), want);
    return {};
  }
};

}  // namespace

std::unique_ptr<Kind> make_process_attrs_kind() { return std::make_unique<ProcessAttrsKind>(); }

}  // namespace minicriu
