// Worker pools: how many CPUs this task may run on, and their threads.
#pragma once

#include <pthread.h>
#include <sched.h>
#include <signal.h>

#include <algorithm>
#include <system_error>
#include <thread>
#include <vector>

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

// Up to n threads running body, with every signal blocked: one meant for
// the caller's program (the library runs in it) goes to its own threads. A
// thread that cannot be made is left out (its share to the others).
template <typename F>
void start_workers(std::vector<std::thread>& threads, unsigned n, F&& body) {
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  for (unsigned w = 0; w < n; w++) {
    try {
      threads.emplace_back(body);
    } catch (const std::system_error&) {
      break;
    }
  }
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

}  // namespace minicriu
