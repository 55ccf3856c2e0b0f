// Where restore premaps a process: clear of the restoring program and of every
// dumped VMA, with the blob and its tail inside the same reservation.
#include "restorer/premap.hpp"

// After the images' headers: <signal.h> (through gtest) defines a sigmask() macro.
#include <gtest/gtest.h>

namespace minicriu {
namespace {

bool overlaps(uint64_t a0, uint64_t a1, uint64_t b0, uint64_t b1) { return a0 < b1 && b0 < a1; }

img::MmCore dumped() {
  img::MmCore mm;
  auto add = [&](uint64_t s, uint64_t e, img::VmaKind k, bool pages = true) {
    img::Vma* v = mm.add_vmas();
    v->set_start(s);
    v->set_end(e);
    v->set_kind(k);
    v->set_has_pages(pages && k != img::VMA_VVAR && k != img::VMA_VDSO && k != img::VMA_VSYSCALL);
  };
  add(0x555555554000, 0x555555556000, img::VMA_FILE_PRIVATE);
  // A 64 GiB reservation with no page: mapped directly, no premap room.
  add(0x7fe000000000, 0x7ff000000000, img::VMA_ANON_PRIVATE, false);
  add(0x7ffff7d00000, 0x7ffff7f00000, img::VMA_ANON_PRIVATE);
  add(0x7ffff7fc0000, 0x7ffff7fc4000, img::VMA_VVAR);
  add(0x7ffff7fc4000, 0x7ffff7fc6000, img::VMA_VDSO);
  add(0x7ffffffde000, 0x7ffffffff000, img::VMA_ANON_PRIVATE);
  add(0xffffffffff600000, 0xffffffffff601000, img::VMA_VSYSCALL);
  return mm;
}

TEST(RestorePremap, AvoidsBothLayouts) {
  img::MmCore mm = dumped();
  std::vector<AddrRange> busy = {{0x7ffff0000000, 0x7ffff7c00000}, {0x560000000000, 0x560000100000}};
  PremapSizes sizes;
  sizes.specials[0] = 0x2000;
  sizes.specials[1] = 0x4000;
  sizes.blob = 0x30000;
  sizes.tail = 0x3000;
  auto plan = plan_premap(mm, busy, sizes);
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_EQ(plan->base % 4096, 0u);
  for (auto& b : busy) EXPECT_FALSE(overlaps(plan->base, plan->end, b.start, b.end));
  for (auto& v : mm.vmas()) EXPECT_FALSE(overlaps(plan->base, plan->end, v.start(), v.end()));
  ASSERT_EQ(plan->slot.size(), static_cast<size_t>(mm.vmas_size()));
  uint64_t prev_end = plan->base;
  for (int i = 0; i < mm.vmas_size(); i++) {
    const img::Vma& v = mm.vmas(i);
    if (!needs_slot(v)) {
      EXPECT_EQ(plan->slot[i], 0u);
      continue;
    }
    EXPECT_GE(plan->slot[i], prev_end);  // slots do not overlap (and keep a gap)
    prev_end = plan->slot[i] + (v.end() - v.start());
  }
  EXPECT_GE(plan->special_scratch[0], prev_end);
  EXPECT_GE(plan->special_scratch[1], plan->special_scratch[0] + 0x2000);
  EXPECT_EQ(plan->special_scratch[2], 0u);
  EXPECT_GE(plan->blob, plan->slots_end);
  EXPECT_GE(plan->tail, plan->blob + sizes.blob);
  EXPECT_LE(plan->tail + sizes.tail, plan->end);
  EXPECT_EQ(plan->slot[1], 0u);                    // the reservation
  EXPECT_LT(plan->end - plan->base, 64ull << 20);  // ... took no room
}

TEST(RestorePremap, FailsWhenNothingIsFree) {
  img::MmCore mm = dumped();
  std::vector<AddrRange> busy = {{0, 0x7ffffffff000}};
  PremapSizes sizes;
  sizes.blob = 0x10000;
  auto plan = plan_premap(mm, busy, sizes);
  ASSERT_FALSE(plan);
  EXPECT_NE(plan.error().message().find("no hole"), std::string::npos);
}

}  // namespace
}  // namespace minicriu

namespace minicriu {
namespace {

TEST(RestorePremap, InheritedVmasTakeTheParentsSlotsAndNoRoom) {
  img::MmCore mm = dumped();
  // The third VMA (2 MiB of anonymous memory) is still the parent's.
  mm.mutable_vmas(2)->set_inherited(true);
  PremapSizes sizes;
  sizes.blob = 0x30000;
  sizes.tail = 0x3000;
  auto own = plan_premap(dumped(), {}, sizes);
  ASSERT_TRUE(own);
  InheritedSlots parent = {{mm.vmas(2).start(), 0x100000000000ull}};
  auto plan = plan_premap(mm, {{0x100000000000ull, 0x100000200000ull}}, sizes, parent);
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_EQ(plan->slot[2], 0x100000000000ull);
  EXPECT_TRUE(plan->inherited[2]);
  EXPECT_FALSE(plan->inherited[0]);
  // Its room is not taken again in the child's own area.
  EXPECT_EQ((own->end - own->base) - (plan->end - plan->base), 0x200000u + 4096u);
  // An inherited VMA whose parent slot is missing is an error, not a guess.
  EXPECT_FALSE(plan_premap(mm, {}, sizes, {}));
}

}  // namespace
}  // namespace minicriu
