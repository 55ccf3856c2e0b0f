// POSIX timers (timer_create): which exist and how they notify from
// /proc/PID/timers, their remaining time from the parasite; at restore,
// created again with the same ids in the restored process itself.
#pragma once

#include <sys/types.h>

#include <vector>

#include "base/error.hpp"
#include "minicriu.pb.h"
#include "parasite/parasite_protocol.h"
#include "proc/proc_parse.hpp"

namespace minicriu {

class ParasiteSession;

// Reads the process's timers (through the parasite) into core.
[[nodiscard]] Status dump_posix_timers(pid_t pid, ParasiteSession& parasite, img::ProcessCore& core);

// A timer that signals a thread of the process other than its leader
// (SIGEV_THREAD_ID): the restorer blob creates it once the thread exists
// (restorer/blob_setup.cc); restore_posix_timers() leaves it.
bool notifies_another_thread(const img::PosixTimer& t, pid_t pid);

// In the restored process: creates every timer with its id, notification and
// remaining time. Needs the process to be the one that will own the timers.
[[nodiscard]] Status restore_posix_timers(const img::ProcessCore& core);

}  // namespace minicriu
