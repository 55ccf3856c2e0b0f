// PageMap::scan on this very process: the runs it returns are sorted,
// disjoint and exactly the present pages, also when there are more runs
// than the kernel's buffer of 512 (where the ioctl's walk_end is left at an
// earlier internal stop and a second call reports pages again).
#include "mem/page_scan.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <memory>

#include "base/page.hpp"

namespace minicriu {
namespace {

struct Pages {
  explicit Pages(size_t pages) : size(pages * kPageSize) {
    base = static_cast<char*>(::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  }
  ~Pages() { ::munmap(base, size); }
  uint64_t start() const { return reinterpret_cast<uint64_t>(base); }
  uint64_t end() const { return start() + size; }
  char* base;
  size_t size;
};

void expect_every_other_page(size_t pages) {
  Pages m(pages);
  ASSERT_NE(m.base, MAP_FAILED);
  ::madvise(m.base, m.size, MADV_NOHUGEPAGE);
  for (size_t i = 0; i < pages; i += 2) m.base[i * kPageSize] = 1;
  auto pm = PageMap::open(::getpid());
  ASSERT_TRUE(pm) << pm.error().what();
  std::vector<PageRegion> runs;
  auto st = pm->scan(m.start(), m.end(), false, runs);
  ASSERT_TRUE(st) << st.error().what();
  ASSERT_EQ(runs.size(), pages / 2);
  for (size_t i = 0; i < runs.size(); i++) {
    EXPECT_EQ(runs[i].start, m.start() + 2 * i * kPageSize) << "run " << i;
    EXPECT_EQ(runs[i].end, runs[i].start + kPageSize) << "run " << i;
  }
}

TEST(PageScan, FewRunsAreExactlyThePresentPages) { expect_every_other_page(64); }

TEST(PageScan, MoreRunsThanTheKernelsBufferAreEachReportedOnce) {
  // 3000 runs: several internal stops of the kernel's walk and, with the
  // vec of 16384, no stop of ours.
  expect_every_other_page(6000);
}

TEST(PageScan, MoreRunsThanOurVecAreEachReportedOnce) { expect_every_other_page(2 * 40000); }

// Adjacent runs of the same categories as one (chunks cut runs at their
// boundaries).
std::vector<PageRegion> merged(const std::vector<PageRegion>& in) {
  std::vector<PageRegion> out;
  for (auto& r : in) {
    if (!out.empty() && out.back().end == r.start && out.back().categories == r.categories) out.back().end = r.end;
    else out.push_back(r);
  }
  return out;
}

// ScanAhead hands out every chunk in order, each exactly its range's runs,
// the same runs as one scan of the whole, with workers and with none (the
// reader scans then).
void expect_scan_ahead_matches(unsigned workers) {
  const size_t pages = 4096;
  Pages m(pages);
  ASSERT_NE(m.base, MAP_FAILED);
  ::madvise(m.base, m.size, MADV_NOHUGEPAGE);
  // Runs of 1 to 7 pages with gaps, some across the chunks' boundaries.
  for (size_t i = 0; i < pages; i += 9)
    for (size_t j = 0; j < 1 + i % 7 && i + j < pages; j++) m.base[(i + j) * kPageSize] = 1;
  auto pm = PageMap::open(::getpid());
  ASSERT_TRUE(pm) << pm.error().what();
  std::vector<PageRegion> whole;
  ASSERT_TRUE(pm->scan(m.start(), m.end(), false, whole));
  const uint64_t chunk = 100 * kPageSize;  // not a divisor of the range: a short last chunk
  ScanAhead ahead(*pm, m.start(), m.end(), chunk, workers);
  std::vector<PageRegion> all, runs;
  uint64_t expect = m.start();
  for (;;) {
    uint64_t at = 0, to = 0;
    auto more = ahead.next(at, to, runs);
    ASSERT_TRUE(more) << more.error().what();
    if (!*more) break;
    EXPECT_EQ(at, expect);
    EXPECT_EQ(to, std::min(m.end(), at + chunk));
    for (auto& r : runs) {
      EXPECT_GE(r.start, at);
      EXPECT_LE(r.end, to);
    }
    all.insert(all.end(), runs.begin(), runs.end());
    expect = to;
  }
  EXPECT_EQ(expect, m.end());
  auto a = merged(all), w = merged(whole);
  ASSERT_EQ(a.size(), w.size());
  for (size_t i = 0; i < a.size(); i++) {
    EXPECT_EQ(a[i].start, w[i].start) << "run " << i;
    EXPECT_EQ(a[i].end, w[i].end) << "run " << i;
  }
}

TEST(ScanAhead, WorkersHandOutEveryChunkInOrder) { expect_scan_ahead_matches(2); }
TEST(ScanAhead, WithoutWorkersTheReaderScans) { expect_scan_ahead_matches(0); }

TEST(ScanAhead, GoingAwayBeforeTheLastChunkStopsItsWorkers) {
  Pages m(2048);
  ASSERT_NE(m.base, MAP_FAILED);
  for (size_t i = 0; i < 2048; i++) m.base[i * kPageSize] = 1;
  auto pm = PageMap::open(::getpid());
  ASSERT_TRUE(pm);
  auto ahead = std::make_unique<ScanAhead>(*pm, m.start(), m.end(), 16 * kPageSize, 4);
  uint64_t at = 0, to = 0;
  std::vector<PageRegion> runs;
  auto more = ahead->next(at, to, runs);
  ASSERT_TRUE(more && *more);
  EXPECT_EQ(runs.size(), 1u);
  ahead.reset();  // workers waiting at their bound, or scanning: joined, no hang
}

}  // namespace
}  // namespace minicriu
