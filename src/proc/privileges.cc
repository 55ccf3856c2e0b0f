#include "proc/privileges.hpp"

#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <vector>

#include <fmt/ranges.h>

#include "proc/proc_parse.hpp"
#include "proc/process_state.hpp"

namespace minicriu {

namespace {

constexpr std::array<const char*, 41> kCapNames = {
    "CAP_CHOWN",           "CAP_DAC_OVERRIDE",   "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
    "CAP_FSETID",          "CAP_KILL",           "CAP_SETGID",          "CAP_SETUID",
    "CAP_SETPCAP",         "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",       "CAP_NET_RAW",        "CAP_IPC_LOCK",        "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",      "CAP_SYS_RAWIO",      "CAP_SYS_CHROOT",      "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",       "CAP_SYS_ADMIN",      "CAP_SYS_BOOT",        "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",    "CAP_SYS_TIME",       "CAP_SYS_TTY_CONFIG",  "CAP_MKNOD",
    "CAP_LEASE",           "CAP_AUDIT_WRITE",    "CAP_AUDIT_CONTROL",   "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",    "CAP_MAC_ADMIN",      "CAP_SYSLOG",          "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",   "CAP_AUDIT_READ",     "CAP_PERFMON",         "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE"};

constexpr const char* kIdNames[4] = {"real", "effective", "saved", "filesystem"};

bool has(const img::Creds& c, int cap) { return (c.cap_eff() >> cap) & 1; }

// The ids of creds, for messages: "uid 1000" or "uids 1000 0 1000 1000".
std::string ids(const google::protobuf::RepeatedField<uint32_t>& v, const char* what) {
  if (v.empty()) return fmt::format("{} unknown", what);
  bool same = std::all_of(v.begin(), v.end(), [&](uint32_t x) { return x == v[0]; });
  if (same) return fmt::format("{} {}", what, v[0]);
  return fmt::format("{}s {}", what, fmt::join(v, " "));
}

std::string who(const img::Creds& c) {
  return c.uids_size() > 0 ? fmt::format("uid {}", c.uids(0)) : std::string("uid ?");
}

// kernel.yama.ptrace_scope: -1 where Yama is not built in.
int yama_scope() {
  auto text = proc::read_file("/proc/sys/kernel/yama/ptrace_scope");
  return text ? std::atoi(text->c_str()) : -1;
}

// An id of the image's (uid or gid) that the restoring process cannot take:
// without CAP_SETUID/CAP_SETGID, setresuid takes only ids the process holds,
// and setfsuid only one of the new real, effective and saved ones.
Status check_ids(pid_t pid, const char* what, const google::protobuf::RepeatedField<uint32_t>& image,
                 const google::protobuf::RepeatedField<uint32_t>& caller, bool privileged, const char* cap,
                 const img::Creds& c) {
  if (privileged || image.size() != 4 || caller.size() != 4) return {};
  for (int i = 0; i < 3; i++)
    if (std::find(caller.begin(), caller.begin() + 3, image[i]) == caller.begin() + 3)
      return failf("pid {}: its {} {} {} is not one minicriu ({}) holds, and giving it needs {}; restore it "
                   "as root or as that user", pid, kIdNames[i], what, image[i], who(c), cap);
  if (std::find(image.begin(), image.begin() + 3, image[3]) == image.begin() + 3)
    return failf("pid {}: its filesystem {} {} is none of its real, effective and saved ones, and giving it "
                 "needs {}; restore it as root", pid, what, image[3], cap);
  return {};
}

}  // namespace

std::string cap_names(uint64_t mask) {
  std::vector<std::string> names;
  for (int cap = 0; cap < 64; cap++) {
    if (!((mask >> cap) & 1)) continue;
    names.push_back(cap < static_cast<int>(kCapNames.size()) ? kCapNames[cap] : fmt::format("capability {}", cap));
  }
  return names.empty() ? "none" : fmt::format("{}", fmt::join(names, ", "));
}

Result<img::Creds> own_creds() {
  img::Creds c;
  TRY(with_context(dump_creds(::getpid(), c), "minicriu's own credentials"));
  c.set_securebits(static_cast<uint32_t>(::prctl(PR_GET_SECUREBITS)));
  c.set_no_new_privs(::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1);
  return c;
}

bool have_cap(int cap) {
  __user_cap_header_struct head{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capget, &head, data) != 0) return false;
  uint64_t eff = data[0].effective | static_cast<uint64_t>(data[1].effective) << 32;
  return (eff >> cap) & 1;
}

Status check_may_restore(const img::Creds& caller) {
  if (has(caller, cap::kCheckpointRestore) || has(caller, cap::kSysAdmin)) return {};
  return std::unexpected(Error(
      fmt::format("restore needs CAP_CHECKPOINT_RESTORE (clone3 with set_tid gives the processes their pids "
                  "back, PR_SET_MM_MAP their memory layout), which minicriu ({}) does not have; run it as "
                  "root, or with the capability (an ambient capability, or `setcap cap_checkpoint_restore+ep` "
                  "on its binary)",
                  who(caller)),
      EPERM));
}

Status check_may_dump(pid_t pid, const img::Creds& caller) {
  if (has(caller, cap::kSysPtrace)) return {};
  auto refuse = [&](const std::string& why) -> Status {
    return std::unexpected(Error(
        fmt::format("pid {}: minicriu ({}, without CAP_SYS_PTRACE) may dump only processes it could ptrace "
                    "(real, effective and saved uids and gids all its real ones, capabilities a subset of its "
                    "own, dumpable), and {}; dump it as root or as its user",
                    pid, who(caller), why),
        EPERM));
  };
  int scope = yama_scope();
  if (scope >= 2)
    return refuse(fmt::format("kernel.yama.ptrace_scope is {}: only CAP_SYS_PTRACE may attach to a process", scope));
  img::Creds t;
  TRY(with_context(dump_creds(pid, t), fmt::format("pid {}", pid)));
  if (caller.uids_size() != 4 || caller.gids_size() != 4) return fail("minicriu's own uids and gids are unknown");
  for (int i = 0; i < 3; i++) {
    if (t.uids(i) != caller.uids(0))
      return refuse(fmt::format("its {} uid is {} ({})", kIdNames[i], t.uids(i), ids(t.uids(), "uid")));
    if (t.gids(i) != caller.gids(0))
      return refuse(fmt::format("its {} gid is {} (minicriu's real gid {})", kIdNames[i], t.gids(i), caller.gids(0)));
  }
  if (uint64_t more = t.cap_prm() & ~caller.cap_prm())
    return refuse(fmt::format("it has capabilities minicriu lacks: {}", cap_names(more)));
  // A process that is not dumpable (PR_SET_DUMPABLE 0, or it ran a setuid
  // or file-capability program) has its /proc files owned by root.
  struct stat st;
  if (::stat(proc::pid_path(pid, "").c_str(), &st) == 0 && st.st_uid != t.uids(1))
    return refuse("it is not dumpable (prctl PR_SET_DUMPABLE 0, or it runs a setuid or setcap program)");
  return {};
}

Status check_restored_creds(pid_t pid, const img::Creds& image, const img::Creds& caller) {
  if (image.uids_size() != 4 || image.gids_size() != 4) return {};  // not recorded: it keeps minicriu's
  TRY(check_ids(pid, "uid", image.uids(), caller.uids(), has(caller, cap::kSetuid), "CAP_SETUID", caller));
  TRY(check_ids(pid, "gid", image.gids(), caller.gids(), has(caller, cap::kSetgid), "CAP_SETGID", caller));
  if (!has(caller, cap::kSetgid)) {
    std::vector<uint32_t> theirs(image.groups().begin(), image.groups().end());
    std::vector<uint32_t> mine(caller.groups().begin(), caller.groups().end());
    std::sort(theirs.begin(), theirs.end());
    std::sort(mine.begin(), mine.end());
    if (theirs != mine)
      return failf("pid {}: its supplementary groups ({}) are not minicriu's own ({}), and setgroups needs "
                   "CAP_SETGID; restore it as root or as that user with its groups", pid,
                   theirs.empty() ? "none" : fmt::format("{}", fmt::join(theirs, ", ")),
                   mine.empty() ? "none" : fmt::format("{}", fmt::join(mine, ", ")));
  }
  // The images' own sets must fit together, as the kernel keeps them.
  if (uint64_t odd = image.cap_eff() & ~image.cap_prm())
    return failf("pid {}: its effective capabilities {} are not permitted ones; the images are damaged", pid,
                 cap_names(odd));
  if (uint64_t odd = image.cap_amb() & ~(image.cap_prm() & image.cap_inh()))
    return failf("pid {}: its ambient capabilities {} are not permitted and inheritable ones; the images are "
                 "damaged", pid, cap_names(odd));
  // Nothing raises a permitted or a bounding capability.
  if (uint64_t more = image.cap_prm() & ~caller.cap_prm())
    return failf("pid {}: its permitted capabilities hold {}, which minicriu ({}) does not have; restore it "
                 "where they are given", pid, cap_names(more), who(caller));
  if (uint64_t more = image.cap_bnd() & ~caller.cap_bnd())
    return failf("pid {}: its capability bounding set holds {}, which minicriu's lacks, and no process can "
                 "add to its bounding set", pid, cap_names(more));
  bool setpcap = has(caller, cap::kSetpcap);
  if (uint64_t fewer = caller.cap_bnd() & ~image.cap_bnd(); fewer && !setpcap)
    return failf("pid {}: its capability bounding set lacks {}, which minicriu's holds, and dropping them "
                 "needs CAP_SETPCAP; restore it as root", pid, cap_names(fewer));
  // capset: a new inheritable set within the old one and the bounding set,
  // and, without CAP_SETPCAP, within the old inheritable and permitted sets.
  uint64_t inh_room = caller.cap_inh() | (setpcap ? image.cap_bnd() : (caller.cap_prm() & image.cap_bnd()));
  if (uint64_t more = image.cap_inh() & ~inh_room)
    return failf("pid {}: its inheritable capabilities hold {}, which minicriu may not give{}", pid,
                 cap_names(more), setpcap ? " (outside its bounding set)" : " without CAP_SETPCAP");
  // securebits: KEEP_CAPS is the process's own (PR_SET_KEEPCAPS); the rest
  // need CAP_SETPCAP, and a locked bit stays as it is.
  constexpr uint32_t kKeepCaps = 1u << 4, kLocks = 0xaa;
  uint32_t mine = caller.securebits(), theirs = image.securebits();
  uint32_t locked = (mine & kLocks) | ((mine & kLocks) >> 1);
  if ((mine ^ theirs) & locked)
    return failf("pid {}: its securebits {:#x} differ from minicriu's {:#x} in locked bits, which no process "
                 "can change", pid, theirs, mine);
  if (((mine ^ theirs) & ~kKeepCaps) && !setpcap)
    return failf("pid {}: its securebits {:#x} are not minicriu's {:#x}, and setting them needs CAP_SETPCAP; "
                 "restore it as root", pid, theirs, mine);
  if (caller.no_new_privs() && !image.no_new_privs())
    return failf("pid {}: it ran without no_new_privs, which minicriu runs with and cannot clear; restore it "
                 "from a process without no_new_privs", pid);
  return {};
}

}  // namespace minicriu
