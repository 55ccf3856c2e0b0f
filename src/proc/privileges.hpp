// What the process running minicriu may do to others (issue 16, "unprivileged
// users"): the kernel's own rules, checked before anything is touched so that
// a refusal is one line naming the process and the field, not an EPERM from
// the middle of a dump or a restore.
//
// Dump: without CAP_SYS_PTRACE, only a process minicriu could ptrace
// (PTRACE_MODE_ATTACH_REALCREDS): its real, effective and saved uids and gids
// all the caller's real uid and gid, its permitted capabilities a subset of
// the caller's, and dumpable.
// Restore: CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN) for clone3's set_tid and
// PR_SET_MM_MAP; and no process gets credentials the caller could not give
// itself: uids and gids it holds (or CAP_SETUID/CAP_SETGID), its own groups
// (or CAP_SETGID), capabilities it holds, its bounding set and securebits (or
// CAP_SETPCAP), and no_new_privs where the caller has it. Files are opened by
// the restoring process with the caller's own credentials: the kernel refuses
// what the caller could not open.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "base/error.hpp"
#include "minicriu.pb.h"

namespace minicriu {

// Capability numbers (linux/capability.h), those minicriu asks for by name.
namespace cap {
inline constexpr int kSetgid = 6, kSetuid = 7, kSetpcap = 8, kNetAdmin = 12, kSysPtrace = 19, kSysAdmin = 21,
                     kSysResource = 24, kCheckpointRestore = 40;
}

// "CAP_NET_ADMIN, CAP_SYS_PTRACE" for the bits of mask ("none" if empty).
std::string cap_names(uint64_t mask);

// The credentials of the calling process: uids, gids, groups and
// capability sets (/proc/self/status), securebits and no_new_privs (prctl).
[[nodiscard]] Result<img::Creds> own_creds();

// Whether the calling thread has cap in its effective set.
bool have_cap(int cap);

// Whether creds may restore (CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN); what
// is missing otherwise, in one line.
[[nodiscard]] Status check_may_restore(const img::Creds& caller);

// Whether caller may dump pid (checked before it is seized): one line naming
// pid and what makes it out of reach.
[[nodiscard]] Status check_may_dump(pid_t pid, const img::Creds& caller);

// Whether the restoring process (caller) may give pid the credentials of its
// image: one line naming the process and the field otherwise.
[[nodiscard]] Status check_restored_creds(pid_t pid, const img::Creds& image, const img::Creds& caller);

}  // namespace minicriu
