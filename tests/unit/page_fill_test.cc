// What restore reads into the premap slots, and how it shares that between
// its page reader threads.
#include "restorer/page_fill.hpp"
#include "base/page.hpp"

// After the images' headers: <signal.h> (through gtest) defines a sigmask() macro.
#include <gtest/gtest.h>

namespace minicriu {
namespace {

constexpr uint64_t kFillMiB = 1ull << 20;

void add_anon_vma(ProcessImages& p, uint64_t start, uint64_t end) {
  img::Vma* v = p.mm.add_vmas();
  v->set_start(start);
  v->set_end(end);
  v->set_kind(img::VMA_ANON_PRIVATE);
  v->set_has_pages(true);
}

uint64_t bytes_read(const std::vector<PageRead>& reads) {
  uint64_t n = 0;
  for (auto& r : reads) n += r.len;
  return n;
}

TEST(PageFill, ReadsEveryRunIntoItsSlotButTheLazyOnes) {
  ProcessImages p;
  add_anon_vma(p, 0x10000, 0x14000);  // 0: back to back with 1
  add_anon_vma(p, 0x14000, 0x18000);  // 1: lazy
  add_anon_vma(p, 0x18000, 0x1c000);  // 2: back to back with 1, its pages in two files, huge pages
  p.mm.mutable_vmas(2)->set_advice(img::ADVICE_HUGEPAGE);
  p.page_files = {"pages-1.img", "parent/pages-1.img"};
  // One run over the three VMAs in this image, the parent's page in between.
  p.page_runs = {{0x10000, 0x19000, 0, 0}, {0x19000, 0x1a000, 1, 0x3000}, {0x1a000, 0x1c000, 0, 0x9000}};
  PremapPlan plan;
  plan.slot = {0x100000, 0, 0x200000};
  plan.lazy = {false, true, false};
  auto reads = plan_page_reads(p, plan);
  ASSERT_TRUE(reads) << reads.error().message();
  ASSERT_EQ(reads->size(), 4u);
  // File 0 in the order of its offsets: VMA 0 whole; VMA 1 skipped (its
  // offsets too); VMA 2's first page, then its last two (next in the file,
  // not in the slot: a read of their own); then the parent's page.
  auto expect_read = [&](size_t i, uint32_t file, uint64_t offset, uint64_t dst, uint64_t len) {
    EXPECT_EQ((*reads)[i].file, file) << i;
    EXPECT_EQ((*reads)[i].offset, offset) << i;
    EXPECT_EQ((*reads)[i].dst, dst) << i;
    EXPECT_EQ((*reads)[i].len, len) << i;
  };
  expect_read(0, 0, 0, 0x100000, 0x4000);
  expect_read(1, 0, 0x8000, 0x200000, 0x1000);
  expect_read(2, 0, 0x9000, 0x202000, 0x2000);
  expect_read(3, 1, 0x3000, 0x201000, 0x1000);
  // Memory with huge pages is not populated before its read.
  EXPECT_TRUE((*reads)[0].populate);
  for (size_t i = 1; i < 4; i++) EXPECT_FALSE((*reads)[i].populate) << i;
}

TEST(PageFill, RunsNextToEachOtherInFileAndSlotAreOneRead) {
  ProcessImages p;
  add_anon_vma(p, 0x10000, 0x14000);
  p.page_files = {"pages-1.img"};
  p.page_runs = {{0x10000, 0x12000, 0, 0}, {0x12000, 0x14000, 0, 0x2000}};
  PremapPlan plan;
  plan.slot = {0x100000};
  plan.lazy = {false};
  auto reads = plan_page_reads(p, plan);
  ASSERT_TRUE(reads) << reads.error().message();
  ASSERT_EQ(reads->size(), 1u);
  EXPECT_EQ((*reads)[0].len, 0x4000u);
}

TEST(PageFill, UffdioCopyFillsFreshAnonymousSlotsWithoutHugePagesOnly) {
  ProcessImages p;
  add_anon_vma(p, 0x10000, 0x14000);  // 0: yes
  add_anon_vma(p, 0x20000, 0x24000);  // 1: inherited from the parent, its pages there
  add_anon_vma(p, 0x30000, 0x34000);  // 2: MADV_HUGEPAGE
  p.mm.mutable_vmas(2)->set_advice(img::ADVICE_HUGEPAGE);
  add_anon_vma(p, 0x40000, 0x44000);  // 3: lazy
  add_anon_vma(p, 0x50000, 0x54000);  // 4: a file's private mapping
  p.mm.mutable_vmas(4)->set_kind(img::VMA_FILE_PRIVATE);
  add_anon_vma(p, 0x60000, 0x64000);  // 5: MADV_NOHUGEPAGE
  p.mm.mutable_vmas(5)->set_advice(img::ADVICE_NOHUGEPAGE);
  PremapPlan plan;
  plan.slot = {0x100000, 0x200000, 0x300000, 0x400000, 0x500000, 0x600000};
  plan.inherited = {false, true, false, false, false, false};
  plan.lazy = {false, false, false, true, false, false};
  EXPECT_EQ(copy_slots(p, plan, false), (std::vector<bool>{true, false, false, false, false, true}));
  // THP "always": only memory that refused huge pages.
  EXPECT_EQ(copy_slots(p, plan, true), (std::vector<bool>{false, false, false, false, false, true}));
  p.page_files = {"pages-1.img"};
  p.page_runs = {{0x10000, 0x14000, 0, 0}, {0x50000, 0x54000, 0, 0x4000}};
  auto reads = plan_page_reads(p, plan, copy_slots(p, plan, false));
  ASSERT_TRUE(reads) << reads.error().message();
  ASSERT_EQ(reads->size(), 2u);
  EXPECT_TRUE((*reads)[0].copy);
  EXPECT_FALSE((*reads)[1].copy);
}

TEST(PageFill, ARunOutsideTheVmasIsAnError) {
  ProcessImages p;
  add_anon_vma(p, 0x10000, 0x14000);
  p.page_files = {"pages-1.img"};
  p.page_runs = {{0x13000, 0x15000, 0, 0}};
  PremapPlan plan;
  plan.slot = {0x100000};
  plan.lazy = {false};
  EXPECT_FALSE(plan_page_reads(p, plan));
}

// Every byte once, in order, the file offsets following the addresses.
void expect_same_bytes(const std::vector<PageRead>& reads, const std::vector<std::vector<PageRead>>& parts) {
  std::vector<PageRead> joined;
  for (auto& part : parts)
    for (auto& r : part) {
      EXPECT_GT(r.len, 0u);
      EXPECT_EQ(r.len % kPageSize, 0u);
      if (!joined.empty() && joined.back().file == r.file && joined.back().offset + joined.back().len == r.offset &&
          joined.back().dst + joined.back().len == r.dst)
        joined.back().len += r.len;
      else
        joined.push_back(r);
    }
  ASSERT_EQ(joined.size(), reads.size());
  for (size_t i = 0; i < reads.size(); i++) {
    EXPECT_EQ(joined[i].file, reads[i].file);
    EXPECT_EQ(joined[i].offset, reads[i].offset);
    EXPECT_EQ(joined[i].dst, reads[i].dst);
    EXPECT_EQ(joined[i].len, reads[i].len);
  }
}

TEST(PageFill, SplitsIntoPartsOfAboutTheSameSize) {
  std::vector<PageRead> reads = {{0, 0, 0x7f0000001000, 300 * kFillMiB},
                                 {0, 300 * kFillMiB, 0x7f1000000000, 100 * kFillMiB},
                                 {1, 0, 0x7f2000000000, 1 * kFillMiB}};
  auto parts = split_page_reads(reads, 4);
  ASSERT_EQ(parts.size(), 4u);
  expect_same_bytes(reads, parts);
  uint64_t total = bytes_read(reads);
  for (auto& part : parts) {
    EXPECT_LE(bytes_read(part), total / 4 + 2 * kFillMiB);
    EXPECT_GE(bytes_read(part) + 2 * kFillMiB, total / 4);
  }
  // Cut where the destination starts a huge page: no two readers fill one.
  for (size_t k = 1; k < parts.size(); k++) EXPECT_EQ(parts[k].front().dst % (2 * kFillMiB), 0u) << k;
}

TEST(PageFill, CutsAtAPageWhereNoHugePageBoundaryIsNear) {
  std::vector<PageRead> reads = {{0, 0, 0x7f0000001000, 16 * kPageSize}, {0, 16 * kPageSize, 0x7f0000101000, 16 * kPageSize}};
  auto parts = split_page_reads(reads, 4);
  ASSERT_EQ(parts.size(), 4u);
  expect_same_bytes(reads, parts);
  for (auto& part : parts) EXPECT_EQ(bytes_read(part), 8 * kPageSize);
}

TEST(PageFill, NoMorePartsThanPages) {
  std::vector<PageRead> reads = {{0, 0, 0x10000, 2 * kPageSize}};
  auto parts = split_page_reads(reads, 4);
  ASSERT_EQ(parts.size(), 2u);
  expect_same_bytes(reads, parts);
  EXPECT_EQ(split_page_reads({}, 4).size(), 1u);
  EXPECT_EQ(split_page_reads(reads, 1).size(), 1u);
}

TEST(PageFill, OneReaderForLittleMemory) {
  EXPECT_EQ(page_read_workers(0), 1u);
  EXPECT_EQ(page_read_workers(64 * kFillMiB), 1u);
  EXPECT_GE(page_read_workers(1024 * kFillMiB), 1u);
  EXPECT_LE(page_read_workers(1024 * kFillMiB), 4u);
  EXPECT_LE(page_read_workers(65 * kFillMiB), 2u);
}

}  // namespace
}  // namespace minicriu
