// How many CPUs this task may run on: the width of a worker pool.
#pragma once

#include <sched.h>

#include <algorithm>
#include <thread>

namespace minicriu {

// The CPUs of this task's affinity (a cpuset may narrow it below the
// machine's), at least 1.
inline unsigned cpus_allowed() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
    return static_cast<unsigned>(CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace minicriu
