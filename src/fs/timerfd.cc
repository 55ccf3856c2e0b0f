// timerfd: a timer on one clock, relative or absolute (TFD_TIMER_ABSTIME),
// one-shot or periodic, with a count of expirations not yet read.
//
// Dump: fdinfo shows clockid, ticks, settime flags, it_value (time left) and
// it_interval. A periodic timer that expired and was not read since is
// stopped in the kernel, and fdinfo then shows it_value (0, 0) and ticks 1
// whatever the number of intervals that went by; timerfd_gettime() moves such
// a timer on (fs/timerfd.c: hrtimer_forward_now adds the missed intervals to
// ticks and restarts it), exactly as the application's next read, poll or
// gettime would, so calling it first changes nothing the application can see
// and makes fdinfo tell the real count and the time to the next expiry.
//
// Restore: timerfd_create + timerfd_settime with the time that was left (a
// relative timer) or the same expiry on its clock (an absolute one), and the
// same interval; unread expirations come back through TFD_IOC_SET_TICKS
// (Linux 4.10+, CONFIG_CHECKPOINT_RESTORE). What does not come back:
//  - time does not run for a relative timer while it is in the image: it
//    fires as long after the restore as it had left at the dump;
//  - an absolute timer on CLOCK_MONOTONIC or CLOCK_BOOTTIME keeps its value on
//    a clock that starts again at each boot: restored after a reboot, it
//    fires too late (or at once);
//  - an expiry due between timerfd_settime and the ioctl (microseconds) is
//    overwritten by the restored ticks, so with unread ticks it may be one less;
//  - the "cancelled" state of a TFD_TIMER_CANCEL_ON_SET timer whose clock was
//    set before the dump is not visible in fdinfo and is not restored.
#include <fcntl.h>
#include <linux/ioctl.h>
#include <sys/ioctl.h>
#include <sys/timerfd.h>
#include <time.h>

#include <cstdio>

#include "fs/anon_inode.hpp"
#include "base/clock.hpp"
#include "kinds/kind.hpp"

namespace minicriu {

namespace {


// From <linux/timerfd.h>, which cannot be included beside glibc's
// <sys/timerfd.h> (both define the TFD_* flags).
#ifndef TFD_IOC_SET_TICKS
#define TFD_IOC_SET_TICKS _IOW('T', 0, uint64_t)
#endif

uint64_t to_ns(const timespec& ts) {
  return static_cast<uint64_t>(ts.tv_sec) * kNsPerSec + static_cast<uint64_t>(ts.tv_nsec);
}

timespec from_ns(uint64_t ns) {
  return {static_cast<time_t>(ns / kNsPerSec), static_cast<long>(ns % kNsPerSec)};
}

// "it_value: (SEC, NSEC)" as fs/timerfd.c prints it.
Result<uint64_t> fdinfo_timespec(const FdDumpInfo& fd, const std::string& text, const std::string& key) {
  auto v = proc::fdinfo_field(text, key);
  long long sec = 0, nsec = 0;
  if (!v || std::sscanf(v->c_str(), "(%lld, %lld)", &sec, &nsec) != 2 || sec < 0 || nsec < 0 ||
      nsec >= static_cast<long long>(kNsPerSec))
    return failf("{} ({}): cannot read \"{}:\" in its fdinfo", fd.what, fd.link, key);
  return static_cast<uint64_t>(sec) * kNsPerSec + static_cast<uint64_t>(nsec);
}

class TimerFdKind final : public Kind {
 public:
  const char* name() const override { return "timerfd"; }

  bool takes(const FdDumpInfo& fd) const override { return is_anon_inode(fd, "timerfd"); }

  Status take(const FdDumpInfo& fd, img::FileEntry& entry, DumpEnv&) override {
    itimerspec cur{};
    if (fd.local_fd >= 0 && ::timerfd_gettime(fd.local_fd, &cur) != 0)
      return failf_errno("{} ({}): timerfd_gettime", fd.what, fd.link);
    // The fdinfo listed before the parasite came is older than the timer.
    ASSIGN_OR_RETURN(std::string text, fdinfo_text_now(fd));
    ASSIGN_OR_RETURN(uint64_t clockid, fdinfo_number(fd, text, "clockid", 10));
    // The clock is read before the time left: their sum is the expiry, early
    // by the microseconds between the two reads at most.
    timespec now{};
    if (::clock_gettime(static_cast<clockid_t>(clockid), &now) != 0)
      return failf_errno("{} ({}): cannot read clock {}", fd.what, fd.link, clockid);
    ASSIGN_OR_RETURN(text, fdinfo_text_now(fd));
    ASSIGN_OR_RETURN(uint64_t ticks, fdinfo_number(fd, text, "ticks", 10));
    // "settime flags: 0%o": octal.
    ASSIGN_OR_RETURN(uint64_t settime_flags, fdinfo_number(fd, text, "settime flags", 8));
    ASSIGN_OR_RETURN(uint64_t remaining, fdinfo_timespec(fd, text, "it_value"));
    ASSIGN_OR_RETURN(uint64_t interval, fdinfo_timespec(fd, text, "it_interval"));

    img::TimerFd* t = entry.mutable_timerfd();
    t->set_clockid(static_cast<uint32_t>(clockid));
    t->set_flags(fd.fdinfo.flags);
    t->set_settime_flags(static_cast<uint32_t>(settime_flags));
    t->set_remaining_ns(remaining);
    t->set_interval_ns(interval);
    if ((settime_flags & TFD_TIMER_ABSTIME) && remaining) t->set_expires_at_ns(to_ns(now) + remaining);
    t->set_ticks(ticks);
    return {};
  }

  bool owns(const img::FileEntry& entry) const override { return entry.has_timerfd(); }

  Result<UniqueFd> open(const img::FileEntry& entry) override {
    const img::TimerFd& t = entry.timerfd();
    int flags = TFD_CLOEXEC;  // our handle only; the fd table sets close-on-exec per fd
    if (t.flags() & O_NONBLOCK) flags |= TFD_NONBLOCK;
    UniqueFd fd(::timerfd_create(static_cast<clockid_t>(t.clockid()), flags));
    if (!fd)
      return failf_errno("file {}: cannot create a timerfd on clock {}{}", entry.id(), t.clockid(),
                         errno == EPERM ? " (alarm clocks need CAP_WAKE_ALARM)" : "");
    if (t.remaining_ns()) {
      bool absolute = t.settime_flags() & TFD_TIMER_ABSTIME;
      itimerspec spec{};
      spec.it_value = from_ns(absolute ? t.expires_at_ns() : t.remaining_ns());
      spec.it_interval = from_ns(t.interval_ns());
      if (::timerfd_settime(fd.get(), static_cast<int>(t.settime_flags()), &spec, nullptr) != 0)
        return failf_errno("file {}: cannot arm the timerfd (clock {}, settime flags {:#o})", entry.id(),
                           t.clockid(), t.settime_flags());
    }
    // A disarmed timer may still hold expirations not read (a one-shot that fired).
    if (t.ticks()) {
      uint64_t ticks = t.ticks();
      if (::ioctl(fd.get(), TFD_IOC_SET_TICKS, &ticks) != 0)
        return failf_errno("file {}: cannot give the timerfd back its {} unread expiration(s) "
                           "(TFD_IOC_SET_TICKS needs a kernel built with CONFIG_CHECKPOINT_RESTORE)",
                           entry.id(), ticks);
    }
    return fd;
  }

  std::string describe(const img::FileEntry& f) const override {
    auto& t = f.timerfd();
    return fmt::format("timerfd (clock {}, {}, left {} ns, interval {} ns, {} unread tick(s), flags {:#o})",
                       t.clockid(), t.settime_flags() & TFD_TIMER_ABSTIME ? "absolute" : "relative",
                       t.remaining_ns(), t.interval_ns(), t.ticks(), t.flags());
  }
};

}  // namespace

std::unique_ptr<Kind> make_timerfd_kind() { return std::make_unique<TimerFdKind>(); }

}  // namespace minicriu
