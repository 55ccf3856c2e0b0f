// PageMap::scan on this very process: the runs it returns are sorted,
// disjoint and exactly the present pages, also when there are more runs
// than the kernel's buffer of 512 (where the ioctl's walk_end is left at an
// earlier internal stop and a second call reports pages again).
#include "mem/page_scan.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

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

}  // namespace
}  // namespace minicriu
