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

// In the restored process: creates every timer with its id, notification and
// remaining time. Needs the process to be the one that will own the timers.
[[nodiscard]] Status restore_posix_timers(const img::ProcessCore& core);

}  // namespace minicriu
