// Process-wide state from /proc and from the parasite's misc query: mm fields,
// auxv, rlimits, sigactions, itimers, umask, personality.
#pragma once

#include <sys/types.h>

#include "base/error.hpp"
#include "minicriu.pb.h"
#include "parasite/parasite_protocol.h"
#include "proc/proc_parse.hpp"

namespace minicriu {

// From /proc/PID/{stat,limits,auxv}.
[[nodiscard]] Status dump_proc_state(pid_t pid, const proc::Stat& stat, img::ProcessCore& core,
                                     img::MmCore& mm);

// Uids, gids, groups and capability sets from /proc/PID/status.
[[nodiscard]] Status dump_creds(pid_t pid, img::Creds& creds);

// From the parasite: what only the process itself can report.
void apply_parasite_misc(const ParasiteMisc& misc, img::ProcessCore& core, img::MmCore& mm);

}  // namespace minicriu
