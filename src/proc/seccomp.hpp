// seccomp, per thread: strict mode, or a chain of filters (classic BPF)
// that the thread inherited or installed, newest last. Dumped with ptrace
// (PTRACE_SECCOMP_GET_FILTER, PTRACE_SECCOMP_GET_METADATA) from the frozen
// threads, each filter once per process (threads that share a chain point to
// the same entries, as CRIU compares them: by content and order). The blob
// installs them again last, after go, while minicriu traces every thread
// with PTRACE_O_SUSPEND_SECCOMP: the filters the threads share are installed
// once by the leader with SECCOMP_FILTER_FLAG_TSYNC (so a later TSYNC of the
// application still finds one shared chain), the rest by each thread itself.
//
// The dumper seizes every thread with PTRACE_O_SUSPEND_SECCOMP (tracee.hpp):
// a filter cannot kill a thread for the syscalls the dump makes it run.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <vector>

#include "base/error.hpp"
#include "minicriu.pb.h"

namespace minicriu {

class Tracee;

// Reads the seccomp state of every thread of the process (frozen, not yet
// running parasite code) into core, or refuses it in one line: a thread
// under seccomp that the dumper could not seize with PTRACE_O_SUSPEND_SECCOMP,
// a user-notification filter, a filter the restore could not install again.
[[nodiscard]] Status dump_seccomp(pid_t pid, const std::vector<Tracee>& threads, img::ProcessCore& core);

// Some thread of the process has seccomp state: its restore needs the
// threads traced with PTRACE_O_SUSPEND_SECCOMP until they are out of the blob.
bool has_seccomp(const img::ProcessCore& core);

// A restore run under seccomp would hand its filters to every process it
// makes (they inherit them): refused before anything is made.
[[nodiscard]] Status check_restorer_not_under_seccomp();

// What the blob installs: the filters (indices into core.seccomp_filters)
// that every thread shares, oldest first, installed once with TSYNC; then
// each thread's own, oldest first.
struct SeccompPlan {
  std::vector<uint32_t> shared;
  std::vector<std::vector<uint32_t>> own;  // per thread, as core.threads
};
[[nodiscard]] Result<SeccompPlan> plan_seccomp(const img::ProcessCore& core);

}  // namespace minicriu
