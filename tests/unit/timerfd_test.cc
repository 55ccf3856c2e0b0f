// timerfd dumped from the test process's own fdinfo and opened again: the
// same clock, interval, time left (relative) or expiry (absolute), and the
// expirations not yet read.
#include <fcntl.h>
#include <sys/timerfd.h>
#include <time.h>

#include <chrono>
#include <thread>

#include "own_fd.hpp"

using namespace minicriu;
using namespace minicriu::testing;
using namespace std::chrono_literals;

namespace {

constexpr int64_t kMs = 1'000'000;

int64_t ns(const timespec& ts) { return ts.tv_sec * 1'000'000'000ll + ts.tv_nsec; }
timespec ts(int64_t ns) { return {static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)}; }

int64_t now_ns(clockid_t clock) {
  timespec t;
  clock_gettime(clock, &t);
  return ns(t);
}

UniqueFd armed_timer(clockid_t clock, int create_flags, int settime_flags, int64_t value_ns, int64_t interval_ns) {
  UniqueFd fd(::timerfd_create(clock, create_flags));
  EXPECT_TRUE(fd) << strerror(errno);
  itimerspec spec{ts(interval_ns), ts(value_ns)};
  EXPECT_EQ(::timerfd_settime(fd.get(), settime_flags, &spec, nullptr), 0) << strerror(errno);
  return fd;
}

uint64_t read_ticks(int fd) {
  uint64_t v = 0;
  EXPECT_EQ(::read(fd, &v, sizeof(v)), static_cast<ssize_t>(sizeof(v))) << strerror(errno);
  return v;
}

}  // namespace

TEST(TimerFd, PeriodicTimerKeepsTimeLeftAndTicksAtTheSameInterval) {
  auto tfd = armed_timer(CLOCK_MONOTONIC, 0, 0, 200 * kMs, 1000 * kMs);
  DumpContextFixture fx;
  auto entry = dump_own_fd(tfd.get(), fx);
  ASSERT_TRUE(entry) << entry.error().what();
  ASSERT_TRUE(entry->has_timerfd());
  const auto& t = entry->timerfd();
  EXPECT_EQ(t.clockid(), static_cast<uint32_t>(CLOCK_MONOTONIC));
  EXPECT_EQ(t.settime_flags(), 0u);
  EXPECT_EQ(t.interval_ns(), static_cast<uint64_t>(1000 * kMs));
  EXPECT_GT(t.remaining_ns(), 0u);
  EXPECT_LE(t.remaining_ns(), static_cast<uint64_t>(200 * kMs));
  EXPECT_EQ(t.ticks(), 0u);

  auto restored = open_entry(*entry);
  ASSERT_TRUE(restored) << restored.error().what();
  itimerspec cur;
  ASSERT_EQ(::timerfd_gettime(restored->get(), &cur), 0);
  EXPECT_EQ(ns(cur.it_interval), 1000 * kMs);
  EXPECT_GT(ns(cur.it_value), 0);
  EXPECT_LE(ns(cur.it_value), 200 * kMs);
  EXPECT_FALSE(::fcntl(restored->get(), F_GETFL) & O_NONBLOCK);
  // It fires once in what was left, then once a second.
  int64_t t0 = now_ns(CLOCK_MONOTONIC);
  EXPECT_EQ(read_ticks(restored->get()), 1u);
  int64_t t1 = now_ns(CLOCK_MONOTONIC);
  EXPECT_LE(t1 - t0, 400 * kMs);  // wide: a loaded machine wakes readers late
  EXPECT_EQ(read_ticks(restored->get()), 1u);
  int64_t t2 = now_ns(CLOCK_MONOTONIC);
  EXPECT_NEAR(static_cast<double>(t2 - t1), 1000.0 * kMs, 250.0 * kMs);
}

TEST(TimerFd, ExpirationsNotReadComeBackAndTheTimerGoesOn) {
  auto tfd = armed_timer(CLOCK_MONOTONIC, TFD_NONBLOCK, 0, 10 * kMs, 40 * kMs);
  std::this_thread::sleep_for(150ms);  // expirations at 10, 50, 90, 130 ms
  // The kernel stopped the timer at its first expiry: fdinfo says 1 tick.
  EXPECT_NE(own_fd(tfd.get()).fdinfo.text.find("ticks: 1\n"), std::string::npos);
  DumpContextFixture fx;
  auto entry = dump_own_fd(tfd.get(), fx);
  ASSERT_TRUE(entry) << entry.error().what();
  const auto& t = entry->timerfd();
  EXPECT_GE(t.ticks(), 3u) << "the missed intervals were not counted";
  EXPECT_GT(t.remaining_ns(), 0u) << "the timer was not moved on to its next expiry";
  EXPECT_LE(t.remaining_ns(), static_cast<uint64_t>(40 * kMs));

  auto restored = open_entry(*entry);
  ASSERT_TRUE(restored) << restored.error().what();
  EXPECT_EQ(read_ticks(restored->get()), t.ticks());
  // ... and then it ticks on at 40 ms.
  EXPECT_TRUE(::fcntl(restored->get(), F_GETFL) & O_NONBLOCK);
  int64_t slept_from = now_ns(CLOCK_MONOTONIC);
  std::this_thread::sleep_for(100ms);
  uint64_t more = read_ticks(restored->get());
  int64_t slept = now_ns(CLOCK_MONOTONIC) - slept_from;
  EXPECT_GE(more, 2u);
  // At most one expiry per 40 ms slept, plus the one that was at most 40 ms away.
  EXPECT_LE(more, static_cast<uint64_t>(slept / (40 * kMs)) + 1);
  // The original counts no fewer than were dumped: the dump took none away.
  EXPECT_GE(read_ticks(tfd.get()), t.ticks());
}

TEST(TimerFd, AbsoluteTimerKeepsItsExpiry) {
  int64_t at = now_ns(CLOCK_REALTIME) + 100'000 * kMs;
  auto tfd = armed_timer(CLOCK_REALTIME, TFD_NONBLOCK, TFD_TIMER_ABSTIME, at, 0);
  DumpContextFixture fx;
  auto entry = dump_own_fd(tfd.get(), fx);
  ASSERT_TRUE(entry) << entry.error().what();
  const auto& t = entry->timerfd();
  EXPECT_EQ(t.clockid(), static_cast<uint32_t>(CLOCK_REALTIME));
  EXPECT_EQ(t.settime_flags(), static_cast<uint32_t>(TFD_TIMER_ABSTIME));
  EXPECT_NEAR(static_cast<double>(t.expires_at_ns()), static_cast<double>(at), 1.0 * kMs);

  auto restored = open_entry(*entry);
  ASSERT_TRUE(restored) << restored.error().what();
  EXPECT_NE(own_fd(restored->get()).fdinfo.text.find("settime flags: 01"), std::string::npos);
  // Dumped again, the restored timer names the same instant.
  auto again = dump_own_fd(restored->get(), fx);
  ASSERT_TRUE(again) << again.error().what();
  EXPECT_NEAR(static_cast<double>(again->timerfd().expires_at_ns()), static_cast<double>(at), 1.0 * kMs);
  uint64_t v;
  EXPECT_LT(::read(restored->get(), &v, sizeof(v)), 0) << "fired early";
}

TEST(TimerFd, OneShotThatFiredAndWasNotReadStillHasItsTick) {
  auto tfd = armed_timer(CLOCK_MONOTONIC, TFD_NONBLOCK, 0, 1 * kMs, 0);
  std::this_thread::sleep_for(20ms);
  DumpContextFixture fx;
  auto entry = dump_own_fd(tfd.get(), fx);
  ASSERT_TRUE(entry) << entry.error().what();
  EXPECT_EQ(entry->timerfd().ticks(), 1u);
  EXPECT_EQ(entry->timerfd().remaining_ns(), 0u);
  auto restored = open_entry(*entry);
  ASSERT_TRUE(restored) << restored.error().what();
  EXPECT_EQ(read_ticks(restored->get()), 1u);
  itimerspec cur;
  ASSERT_EQ(::timerfd_gettime(restored->get(), &cur), 0);
  EXPECT_EQ(ns(cur.it_value), 0);
  EXPECT_EQ(read_ticks(tfd.get()), 1u);
}

TEST(TimerFd, DisarmedTimerStaysDisarmed) {
  UniqueFd tfd(::timerfd_create(CLOCK_BOOTTIME, TFD_NONBLOCK));
  DumpContextFixture fx;
  auto entry = dump_own_fd(tfd.get(), fx);
  ASSERT_TRUE(entry) << entry.error().what();
  EXPECT_EQ(entry->timerfd().clockid(), static_cast<uint32_t>(CLOCK_BOOTTIME));
  auto restored = open_entry(*entry);
  ASSERT_TRUE(restored) << restored.error().what();
  itimerspec cur;
  ASSERT_EQ(::timerfd_gettime(restored->get(), &cur), 0);
  EXPECT_EQ(ns(cur.it_value), 0);
  EXPECT_EQ(ns(cur.it_interval), 0);
  uint64_t v;
  EXPECT_LT(::read(restored->get(), &v, sizeof(v)), 0);
  EXPECT_EQ(errno, EAGAIN);
}
