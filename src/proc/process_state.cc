#include "proc/process_state.hpp"

#include <signal.h>

namespace minicriu {

Status dump_proc_state(pid_t pid, const proc::Stat& stat, img::ProcessCore& core, img::MmCore& mm) {
  core.set_pid(static_cast<uint32_t>(pid));
  core.set_comm(stat.comm);
  core.set_exit_signal(stat.exit_signal);
  mm.set_start_code(stat.start_code);
  mm.set_end_code(stat.end_code);
  mm.set_start_data(stat.start_data);
  mm.set_end_data(stat.end_data);
  mm.set_start_brk(stat.start_brk);
  mm.set_start_stack(stat.start_stack);
  mm.set_arg_start(stat.arg_start);
  mm.set_arg_end(stat.arg_end);
  mm.set_env_start(stat.env_start);
  mm.set_env_end(stat.env_end);

  // prlimit(2) on another task needs CAP_SYS_RESOURCE, which we may lack;
  // /proc/PID/limits needs nothing.
  ASSIGN_OR_RETURN(auto limits_text, proc::read_file(proc::pid_path(pid, "limits")));
  ASSIGN_OR_RETURN(auto limits, proc::parse_limits(limits_text));
  for (auto& l : limits) {
    img::RLimit* r = core.add_rlimits();
    r->set_resource(l.resource);
    r->set_cur(l.cur);
    r->set_max(l.max);
  }
  ASSIGN_OR_RETURN(auto auxv, proc::read_file(proc::pid_path(pid, "auxv")));
  mm.set_auxv(auxv);
  for (const char* ns : {"net", "mnt", "ipc", "uts", "pid"}) {
    auto theirs = proc::read_link(proc::pid_path(pid, std::string("ns/") + ns));
    auto mine = proc::read_link(std::string("/proc/self/ns/") + ns);
    if (theirs && mine && *theirs != *mine) core.add_own_namespaces(ns);
  }
  return dump_creds(pid, *core.mutable_creds());
}

Status dump_creds(pid_t pid, img::Creds& creds) {
  ASSIGN_OR_RETURN(auto status, proc::read_file(proc::pid_path(pid, "status")));
  auto field = [&](const char* key) -> Result<std::string> {
    auto v = proc::status_field(status, key);
    if (!v) return failf("pid {}: /proc/PID/status has no {}", pid, key);
    return *v;
  };
  auto numbers = [](const std::string& text) { return proc::parse_pid_list(text); };
  ASSIGN_OR_RETURN(auto uids, field("Uid"));
  ASSIGN_OR_RETURN(auto gids, field("Gid"));
  ASSIGN_OR_RETURN(auto groups, field("Groups"));
  for (auto v : numbers(uids)) creds.add_uids(static_cast<uint32_t>(v));
  for (auto v : numbers(gids)) creds.add_gids(static_cast<uint32_t>(v));
  for (auto v : numbers(groups)) creds.add_groups(static_cast<uint32_t>(v));
  if (creds.uids_size() != 4 || creds.gids_size() != 4) return failf("pid {}: malformed Uid/Gid", pid);
  auto hex = [&](const char* key) -> Result<uint64_t> {
    ASSIGN_OR_RETURN(auto v, field(key));
    return std::strtoull(v.c_str(), nullptr, 16);
  };
  ASSIGN_OR_RETURN(uint64_t inh, hex("CapInh"));
  ASSIGN_OR_RETURN(uint64_t prm, hex("CapPrm"));
  ASSIGN_OR_RETURN(uint64_t eff, hex("CapEff"));
  ASSIGN_OR_RETURN(uint64_t bnd, hex("CapBnd"));
  ASSIGN_OR_RETURN(uint64_t amb, hex("CapAmb"));
  creds.set_cap_inh(inh);
  creds.set_cap_prm(prm);
  creds.set_cap_eff(eff);
  creds.set_cap_bnd(bnd);
  creds.set_cap_amb(amb);
  // seccomp is per thread: proc/seccomp.cc.
  return {};
}

void apply_parasite_misc(const ParasiteMisc& misc, img::ProcessCore& core, img::MmCore& mm) {
  for (int sig = 1; sig <= 64; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    if (misc.sigaction_status[sig - 1] != 0) continue;
    const ParasiteSigaction& a = misc.sigactions[sig - 1];
    if (a.handler == reinterpret_cast<uint64_t>(SIG_DFL) && a.flags == 0 && a.mask == 0) continue;
    img::SigAction* out = core.add_sigactions();
    out->set_signo(static_cast<uint32_t>(sig));
    out->set_handler(a.handler);
    out->set_flags(a.flags);
    out->set_restorer(a.restorer);
    out->set_mask(a.mask);
  }
  for (uint32_t which = 0; which < 3; which++) {
    const ParasiteITimer& t = misc.itimers[which];
    if (!t.value_sec && !t.value_usec && !t.interval_sec && !t.interval_usec) continue;
    img::ITimer* out = core.add_itimers();
    out->set_which(which);
    out->set_interval_us(static_cast<uint64_t>(t.interval_sec * 1000000 + t.interval_usec));
    out->set_value_us(static_cast<uint64_t>(t.value_sec * 1000000 + t.value_usec));
  }
  core.set_umask(misc.umask);
  core.set_personality(misc.personality);
  core.mutable_creds()->set_securebits(static_cast<uint32_t>(misc.securebits));
  core.mutable_creds()->set_no_new_privs(misc.no_new_privs == 1);
  img::ProcessPrctl* prctl = core.mutable_prctl();
  prctl->set_pdeathsig(static_cast<uint32_t>(misc.pdeathsig));
  prctl->set_dumpable(static_cast<uint32_t>(misc.dumpable));
  prctl->set_child_subreaper(misc.child_subreaper != 0);
  prctl->set_thp_disable(misc.thp_disable == 1);
  mm.set_brk(misc.brk);
  if (misc.membarrier > 0) core.mutable_attrs()->set_membarrier(static_cast<uint32_t>(misc.membarrier));
}

}  // namespace minicriu
