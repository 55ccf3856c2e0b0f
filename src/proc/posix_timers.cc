#include "proc/posix_timers.hpp"
#include "base/clock.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "parasite/parasite_session.hpp"

namespace minicriu {

namespace {


// prctl(PR_TIMER_CREATE_RESTORE_IDS) (Linux 6.17): timer_create then takes the
// id to create from the timer_t it writes to.
constexpr int kPrTimerCreateRestoreIds = 77;
constexpr int kPrTimerCreateRestoreIdsOn = 1;
constexpr int kPrTimerCreateRestoreIdsOff = 0;

uint32_t notify_of(const proc::TimerEntry& t) {
  uint32_t n = t.notify == "none" ? SIGEV_NONE : t.notify == "thread" ? SIGEV_THREAD : SIGEV_SIGNAL;
  if (t.to_thread) n |= SIGEV_THREAD_ID;
  return n;
}

}  // namespace

Status dump_posix_timers(pid_t pid, ParasiteSession& parasite, img::ProcessCore& core) {
  auto text = proc::read_file(proc::pid_path(pid, "timers"));
  if (!text) return {};  // no CONFIG_CHECKPOINT_RESTORE: no timers to see
  ASSIGN_OR_RETURN(auto entries, with_context(proc::parse_timers(*text), fmt::format("pid {}", pid)));
  if (entries.empty()) return {};
  std::vector<int32_t> ids;
  for (auto& e : entries) ids.push_back(e.id);
  ASSIGN_OR_RETURN(auto timers, parasite.get_timers(ids));
  for (size_t i = 0; i < entries.size(); i++) {
    const ParasiteTimer& t = timers[i];
    if (t.status < 0)
      return std::unexpected(Error(fmt::format("pid {}: timer_gettime of timer {}", pid, t.id), -t.status));
    img::PosixTimer* out = core.add_posix_timers();
    out->set_id(entries[i].id);
    out->set_clock_id(entries[i].clock_id);
    out->set_signo(entries[i].signo);
    out->set_sigev_value(entries[i].sigev_value);
    out->set_notify(notify_of(entries[i]));
    out->set_notify_tid(static_cast<uint32_t>(entries[i].to_thread ? entries[i].notify_pid : 0));
    out->set_interval_ns(static_cast<uint64_t>(t.interval_sec) * kNsPerSec + static_cast<uint64_t>(t.interval_nsec));
    out->set_value_ns(static_cast<uint64_t>(t.value_sec) * kNsPerSec + static_cast<uint64_t>(t.value_nsec));
    out->set_overrun(t.overrun);
  }
  return {};
}

bool notifies_another_thread(const img::PosixTimer& t, pid_t pid) {
  return (t.notify() & SIGEV_THREAD_ID) && static_cast<pid_t>(t.notify_tid()) != pid;
}

Status restore_posix_timers(const img::ProcessCore& core) {
  if (core.posix_timers().empty()) return {};
  bool exact_ids = ::prctl(kPrTimerCreateRestoreIds, kPrTimerCreateRestoreIdsOn, 0, 0, 0) == 0;
  pid_t pid = static_cast<pid_t>(core.pid());
  for (const auto& t : core.posix_timers()) {
    if (notifies_another_thread(t, pid)) {
      // Made by the blob once its thread exists, with its id: that needs
      // the prctl, the order of creation being no longer ours.
      if (!exact_ids)
        return failf("timer {} signals thread {} (SIGEV_THREAD_ID): restoring it with its id needs "
                     "prctl(PR_TIMER_CREATE_RESTORE_IDS) (Linux 6.17), which this kernel lacks; restore on a "
                     "newer kernel", t.id(), t.notify_tid());
      continue;
    }
    sigevent sev{};
    sev.sigev_notify = static_cast<int>(t.notify());
    sev.sigev_signo = t.signo();
    sev.sigev_value.sival_ptr = reinterpret_cast<void*>(t.sigev_value());
    if (t.notify() & SIGEV_THREAD_ID) sev._sigev_un._tid = static_cast<pid_t>(t.notify_tid());
    // Raw syscall: glibc's timer_create wraps ids in its own timer_t.
    int id = t.id();
    if (exact_ids) {
      if (::syscall(SYS_timer_create, t.clock_id(), &sev, &id) != 0)
        return failf_errno("timer_create of timer {}", t.id());
    } else {
      // Without the prctl ids come in order: create and drop until ours comes.
      for (;;) {
        int got = -1;
        if (::syscall(SYS_timer_create, t.clock_id(), &sev, &got) != 0)
          return failf_errno("timer_create of timer {}", t.id());
        if (got == t.id()) break;
        ::syscall(SYS_timer_delete, got);
        if (got > t.id()) return failf("cannot create timer {} again (got id {})", t.id(), got);
      }
    }
    if (t.value_ns() == 0) continue;  // disarmed
    itimerspec spec{};
    spec.it_interval.tv_sec = static_cast<time_t>(t.interval_ns() / kNsPerSec);
    spec.it_interval.tv_nsec = static_cast<long>(t.interval_ns() % kNsPerSec);
    spec.it_value.tv_sec = static_cast<time_t>(t.value_ns() / kNsPerSec);
    spec.it_value.tv_nsec = static_cast<long>(t.value_ns() % kNsPerSec);
    if (::syscall(SYS_timer_settime, t.id(), 0, &spec, nullptr) != 0)
      return failf_errno("timer_settime of timer {}", t.id());
  }
  if (exact_ids) ::prctl(kPrTimerCreateRestoreIds, kPrTimerCreateRestoreIdsOff, 0, 0, 0);
  return {};
}

}  // namespace minicriu

// ---- the kind ----------------------------------------------------------------

#include "images/checkpoint.hpp"
#include "kinds/kind.hpp"

namespace minicriu {

namespace {

// POSIX timers belong to a process, not to an fd: taken with the process
// (through its parasite), made again in the restored process itself.
class PosixTimerKind final : public Kind {
 public:
  const char* name() const override { return "POSIX timer"; }

  Status take_process(ProcessDump& p, DumpEnv&) override { return dump_posix_timers(p.pid, p.parasite, p.core); }

  Status restore_process(TaskEnv& task) override { return restore_posix_timers(task.process.core); }
};

}  // namespace

std::unique_ptr<Kind> make_posix_timer_kind() { return std::make_unique<PosixTimerKind>(); }

}  // namespace minicriu
