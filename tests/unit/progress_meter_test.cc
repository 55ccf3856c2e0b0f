// ProgressMeter: nothing for a transfer shorter than the threshold, reports
// no more often than the interval, one finished report at the end, none for
// a transfer that failed midway.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "base/log.hpp"

namespace minicriu {
namespace {

struct Seen {
  std::vector<Progress> reports;
  LogOptions options(uint32_t after_ms) {
    LogOptions o;
    o.progress_after_ms = after_ms;
    o.progress_sink = [this](const Progress& p) { reports.push_back(p); };
    return o;
  }
};

TEST(ProgressMeter, AShortTransferReportsNothing) {
  Seen seen;
  Logger log(seen.options(60000));
  ProgressMeter m(log, "dump", 12, 100);
  m.add(50);
  m.add(50);
  m.finish();
  EXPECT_TRUE(seen.reports.empty());
}

TEST(ProgressMeter, ReportsAtMostEveryIntervalAndOnceFinished) {
  Seen seen;
  Logger log(seen.options(0));
  {
    ProgressMeter m(log, "restore", 7, 1000);
    for (int i = 0; i < 1000; i++) m.add(1);  // far within one 100 ms interval
    m.finish();
    m.finish();
  }
  ASSERT_EQ(seen.reports.size(), 2u);
  EXPECT_EQ(seen.reports[0].bytes_done, 1u);
  EXPECT_FALSE(seen.reports[0].finished);
  const Progress& last = seen.reports[1];
  EXPECT_TRUE(last.finished);
  EXPECT_EQ(last.bytes_done, 1000u);
  EXPECT_EQ(last.bytes_total, 1000u);
  EXPECT_EQ(last.phase, "restore");
  EXPECT_EQ(last.pid, 7);
  EXPECT_EQ(last.eta_s, 0);
}

TEST(ProgressMeter, ReportsAgainAfterTheInterval) {
  Seen seen;
  Logger log(seen.options(0));
  ProgressMeter m(log, "dump", 1, 0);
  m.add(1);
  std::this_thread::sleep_for(std::chrono::milliseconds(120));
  m.add(1);
  ASSERT_EQ(seen.reports.size(), 2u);
  EXPECT_EQ(seen.reports[1].bytes_done, 2u);
  EXPECT_EQ(seen.reports[1].eta_s, -1) << "no total, no time left";
}

TEST(ProgressMeter, AFailedTransferReportsNoEnd) {
  Seen seen;
  Logger log(seen.options(0));
  { ProgressMeter m(log, "dump", 1, 10); m.add(5); }
  ASSERT_EQ(seen.reports.size(), 1u);
  EXPECT_FALSE(seen.reports[0].finished);
}

TEST(ProgressMeter, FormatsSizes) {
  EXPECT_EQ(format_bytes(100), "100 B");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
  EXPECT_EQ(format_bytes(64ull << 20), "64.0 MiB");
  EXPECT_EQ(format_bytes(3ull << 30), "3.0 GiB");
}

}  // namespace
}  // namespace minicriu
