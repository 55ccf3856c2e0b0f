// Scheduling, per thread: policy and its priority, SCHED_RESET_ON_FORK, the
// nice value, SCHED_DEADLINE's runtime/deadline/period and the utilization
// clamps, as sched_getattr(2) reports them. The blob sets them again in each
// thread with sched_setattr(2) before the thread drops the restore's
// credentials (a lower nice or a real-time policy needs CAP_SYS_NICE), the
// leader after it has created the other threads (a SCHED_DEADLINE task
// cannot clone).
#pragma once

#include <sys/types.h>

#include "base/error.hpp"
#include "minicriu.pb.h"
#include "restorer/restorer_args.hpp"

namespace minicriu {

// Every thread of core.threads (tids set), read from outside: sched_getattr
// needs no privilege and no stop.
[[nodiscard]] Status dump_sched(pid_t pid, img::ProcessCore& core);

// The kernel's struct sched_attr for the blob's sched_setattr.
rst::SchedAttr sched_attr_for(const img::ThreadCore& t);

}  // namespace minicriu
