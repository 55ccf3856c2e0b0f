// Per-thread state that ptrace reads without help: registers (with syscall
// restart applied), the whole xsave area, signal mask, pending signals, robust
// futex list, rseq registration.
#pragma once

#include "base/error.hpp"
#include "minicriu.pb.h"
#include "ptrace/tracee.hpp"

namespace minicriu {

[[nodiscard]] Result<img::ThreadCore> dump_thread_core(const Tracee& thread);

// Signals queued for the thread alone, or (shared) for the whole process.
[[nodiscard]] Result<std::vector<img::SigInfo>> peek_pending_signals(pid_t tid, bool shared);

}  // namespace minicriu
