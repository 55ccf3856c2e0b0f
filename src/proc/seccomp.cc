#include "proc/seccomp.hpp"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/ptrace.h>

#include <cstring>
#include <map>
#include <string>
#include <tuple>

#include "proc/proc_parse.hpp"
#include "ptrace/tracee.hpp"

namespace minicriu {

namespace {

constexpr unsigned kCapSysAdmin = 21;
// <linux/ptrace.h> and <sys/ptrace.h> do not mix; the two requests are stable ABI.
constexpr int kGetFilter = 0x420c;    // PTRACE_SECCOMP_GET_FILTER
constexpr int kGetMetadata = 0x420d;  // PTRACE_SECCOMP_GET_METADATA

struct Metadata {
  uint64_t filter_off;
  uint64_t flags;
};

// A filter that can answer SECCOMP_RET_USER_NOTIF sends the syscall to a
// listener (an fd that SECCOMP_FILTER_FLAG_NEW_LISTENER gave), which minicriu
// cannot make again: without one the kernel answers ENOSYS instead.
bool can_notify_user(const std::string& program) {
  for (size_t off = 0; off + sizeof(sock_filter) <= program.size(); off += sizeof(sock_filter)) {
    sock_filter insn;
    std::memcpy(&insn, program.data() + off, sizeof(insn));
    if (BPF_CLASS(insn.code) == BPF_RET && BPF_RVAL(insn.code) == BPF_K &&
        (insn.k & SECCOMP_RET_ACTION_FULL) == SECCOMP_RET_USER_NOTIF)
      return true;
  }
  return false;
}

// The thread's filters, oldest first (filter_off 0 is the oldest: the kernel
// counts back from the newest, total - 1 - off steps).
Result<std::vector<img::SeccompFilter>> read_filters(pid_t pid, pid_t tid) {
  std::vector<img::SeccompFilter> chain;
  for (unsigned long i = 0;; i++) {
    long n = ::ptrace(static_cast<__ptrace_request>(kGetFilter), tid, reinterpret_cast<void*>(i), nullptr);
    if (n < 0 && errno == ENOENT) break;
    if (n < 0) return failf_errno("pid {}: thread {}: PTRACE_SECCOMP_GET_FILTER of its filter {}", pid, tid, i);
    std::vector<sock_filter> insns(static_cast<size_t>(n));
    if (::ptrace(static_cast<__ptrace_request>(kGetFilter), tid, reinterpret_cast<void*>(i), insns.data()) != n)
      return failf_errno("pid {}: thread {}: PTRACE_SECCOMP_GET_FILTER of its filter {}", pid, tid, i);
    Metadata md{i, 0};
    if (::ptrace(static_cast<__ptrace_request>(kGetMetadata), tid, reinterpret_cast<void*>(sizeof(md)), &md) < 0)
      return failf_errno("pid {}: thread {}: PTRACE_SECCOMP_GET_METADATA of its filter {}", pid, tid, i);
    img::SeccompFilter f;
    f.set_program(std::string(reinterpret_cast<const char*>(insns.data()), insns.size() * sizeof(sock_filter)));
    f.set_flags(static_cast<uint32_t>(md.flags));
    chain.push_back(std::move(f));
  }
  return chain;
}

}  // namespace

Status dump_seccomp(pid_t pid, const std::vector<Tracee>& threads, img::ProcessCore& core) {
  // Each filter once: (parent, program, flags) -> index + 1.
  std::map<std::tuple<uint32_t, std::string, uint32_t>, uint32_t> known;
  for (size_t ti = 0; ti < threads.size(); ti++) {
    const Tracee& t = threads[ti];
    pid_t tid = t.tid();
    ASSIGN_OR_RETURN(auto status, proc::read_file(proc::pid_path(pid, fmt::format("task/{}/status", tid))));
    auto mode_text = proc::status_field(status, "Seccomp");
    uint32_t mode = mode_text ? static_cast<uint32_t>(std::strtoul(mode_text->c_str(), nullptr, 10)) : 0;
    if (mode == 0) continue;
    const char* what = mode == SECCOMP_MODE_STRICT ? "strict mode (SECCOMP_SET_MODE_STRICT)" : "seccomp filters";
    if (!t.seccomp_suspended())
      return failf("pid {}: thread {} runs under {}, and minicriu could not seize it with "
                   "PTRACE_O_SUSPEND_SECCOMP (that needs CAP_SYS_ADMIN, and a dumper not under seccomp "
                   "itself), so its own syscalls in the thread could kill it; run the dump as root outside "
                   "any seccomp sandbox", pid, tid, what);
    img::ThreadCore& tc = *core.mutable_threads(static_cast<int>(ti));
    tc.set_seccomp_mode(mode);
    if (mode != SECCOMP_MODE_FILTER) continue;
    // The blob installs the filters after the thread's credentials: the
    // kernel then wants no_new_privs or CAP_SYS_ADMIN, as it did when the
    // application installed them.
    auto nnp = proc::status_field(status, "NoNewPrivs");
    auto eff = proc::status_field(status, "CapEff");
    bool can_install = (nnp && *nnp == "1") ||
                       (eff && (std::strtoull(eff->c_str(), nullptr, 16) >> kCapSysAdmin & 1));
    if (!can_install)
      return failf("pid {}: thread {} has seccomp filters but neither no_new_privs nor CAP_SYS_ADMIN any more "
                   "(it dropped them after installing the filters); the restore installs the filters after "
                   "the credentials and the kernel would refuse them: set PR_SET_NO_NEW_PRIVS before "
                   "installing the filters", pid, tid);
    // Where the kernel mitigates speculative store bypass for every seccomp
    // thread ("prctl and seccomp"), a filter installed without
    // SECCOMP_FILTER_FLAG_SPEC_ALLOW forces the mitigation on; the kernel
    // does not report that flag, so a filtered thread left vulnerable had it.
    auto ssb = proc::status_field(status, "Speculation_Store_Bypass");
    auto ssb_mode = proc::read_file("/sys/devices/system/cpu/vulnerabilities/spec_store_bypass");
    if (ssb && ssb->find("vulnerable") != std::string::npos && ssb_mode &&
        ssb_mode->find("seccomp") != std::string::npos)
      return failf("pid {}: thread {} has seccomp filters and no speculative store bypass mitigation "
                   "(SECCOMP_FILTER_FLAG_SPEC_ALLOW, or PR_SET_SPECULATION_CTRL), which the kernel does not "
                   "report and the restored filters would turn on; dump it on a kernel booted with "
                   "spec_store_bypass_disable=prctl", pid, tid);
    ASSIGN_OR_RETURN(auto chain, read_filters(pid, tid));
    uint32_t parent = 0;
    for (size_t i = 0; i < chain.size(); i++) {
      img::SeccompFilter& f = chain[i];
      if (can_notify_user(f.program()))
        return failf("pid {}: thread {}: its seccomp filter {} (of {}, oldest first) can answer "
                     "SECCOMP_RET_USER_NOTIF: a user-notification filter (SECCOMP_FILTER_FLAG_NEW_LISTENER), "
                     "whose listener minicriu cannot make again; dump the process without it",
                     pid, tid, i + 1, chain.size());
      if (f.flags() & SECCOMP_FILTER_FLAG_NEW_LISTENER)
        return failf("pid {}: thread {}: its seccomp filter {} has a user-notification listener "
                     "(SECCOMP_FILTER_FLAG_NEW_LISTENER), which minicriu cannot make again; dump the process "
                     "without it", pid, tid, i + 1);
      auto key = std::make_tuple(parent, f.program(), f.flags());
      auto it = known.find(key);
      if (it == known.end()) {
        f.set_parent(parent);
        *core.add_seccomp_filters() = f;
        it = known.emplace(key, static_cast<uint32_t>(core.seccomp_filters_size())).first;
      }
      parent = it->second;
    }
    tc.set_seccomp_filter(parent);
  }
  return {};
}

bool has_seccomp(const img::ProcessCore& core) {
  for (auto& t : core.threads())
    if (t.seccomp_mode() != 0) return true;
  return false;
}

Status check_restorer_not_under_seccomp() {
  ASSIGN_OR_RETURN(auto status, proc::read_file("/proc/self/status"));
  auto mode = proc::status_field(status, "Seccomp");
  if (mode && *mode != "0")
    return failf("minicriu runs under seccomp ({}), and every process it restores would inherit it; restore "
                 "outside any seccomp sandbox", *mode == "1" ? "strict mode" : "filters");
  return {};
}

Result<SeccompPlan> plan_seccomp(const img::ProcessCore& core) {
  SeccompPlan plan;
  std::vector<std::vector<uint32_t>> chains;
  for (auto& t : core.threads()) {
    std::vector<uint32_t> chain;
    uint32_t at = t.seccomp_filter();
    if (t.seccomp_mode() != SECCOMP_MODE_FILTER && at)
      return failf("thread {}: seccomp filters with seccomp mode {}", t.tid(), t.seccomp_mode());
    // Walk up to the oldest; parents come before children in the list, so
    // a bad image cannot make this loop.
    while (at) {
      if (at > static_cast<uint32_t>(core.seccomp_filters_size()))
        return failf("thread {}: seccomp filter {} is not in the image", t.tid(), at);
      chain.push_back(at - 1);
      uint32_t parent = core.seccomp_filters(static_cast<int>(at - 1)).parent();
      if (parent >= at) return failf("seccomp filter {} comes before its parent {}", at, parent);
      at = parent;
    }
    for (uint32_t i : chain) {
      const std::string& prog = core.seccomp_filters(static_cast<int>(i)).program();
      if (prog.empty() || prog.size() % sizeof(sock_filter) || prog.size() / sizeof(sock_filter) > BPF_MAXINSNS)
        return failf("seccomp filter {} has a malformed program", i + 1);
    }
    chains.emplace_back(chain.rbegin(), chain.rend());
  }
  if (chains.empty()) return plan;
  // The prefix every thread shares.
  size_t common = chains.front().size();
  for (auto& c : chains) {
    size_t n = 0;
    while (n < common && n < c.size() && c[n] == chains.front()[n]) n++;
    common = n;
  }
  plan.shared.assign(chains.front().begin(), chains.front().begin() + static_cast<long>(common));
  for (auto& c : chains) plan.own.emplace_back(c.begin() + static_cast<long>(common), c.end());
  return plan;
}

}  // namespace minicriu
