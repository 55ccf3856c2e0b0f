// Restoring POSIX timers with their ids, in a child that owns them.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proc/posix_timers.hpp"

using namespace minicriu;

TEST(PosixTimers, RestoredWithTheirIdsAndTimes) {
  img::ProcessCore core;
  for (int id : {0, 2, 5}) {
    img::PosixTimer* t = core.add_posix_timers();
    t->set_id(id);
    t->set_clock_id(CLOCK_MONOTONIC);
    t->set_signo(SIGRTMIN);
    t->set_notify(SIGEV_SIGNAL);
    t->set_interval_ns(id == 2 ? 250000000 : 0);
    t->set_value_ns(id == 5 ? 0 : 3000000000ull);
  }
  pid_t pid = fork();
  if (pid == 0) {
    sigset_t set;
    sigfillset(&set);
    sigprocmask(SIG_BLOCK, &set, nullptr);
    auto st = restore_posix_timers(core);
    if (!st) {
      fprintf(stderr, "%s\n", st.error().what().c_str());
      _exit(1);
    }
    itimerspec spec;
    if (syscall(SYS_timer_gettime, 2, &spec) != 0) _exit(2);
    if (spec.it_interval.tv_nsec != 250000000 || spec.it_value.tv_sec > 3 || spec.it_value.tv_sec < 2) _exit(3);
    if (syscall(SYS_timer_gettime, 5, &spec) != 0) _exit(4);
    if (spec.it_value.tv_sec || spec.it_value.tv_nsec) _exit(5);  // disarmed
    if (syscall(SYS_timer_gettime, 1, &spec) == 0) _exit(6);      // a gap stays a gap
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}
