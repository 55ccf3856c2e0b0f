// restore --lazy of shared memory: which objects come on first touch
// (mem/lazy_shmem.hpp), and the premap plan of their mappings.
#include "mem/lazy_shmem.hpp"

#include <fcntl.h>

#include "restorer/premap.hpp"

// After the images' headers: <signal.h> (through gtest) defines a sigmask() macro.
#include <gtest/gtest.h>

namespace minicriu {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

img::ShmemObject object(uint32_t id, uint64_t size) {
  img::ShmemObject o;
  o.set_id(id);
  o.set_size(size);
  img::DataExtent* e = o.add_extents();  // all of it but the first MiB
  e->set_offset(kMiB);
  e->set_length(size - kMiB);
  o.set_allocated(size - kMiB);
  return o;
}

img::Vma* map(ProcessImages& p, uint64_t start, uint64_t len, uint32_t id, img::VmaKind kind,
              uint64_t pgoff = 0) {
  img::Vma* v = p.mm.add_vmas();
  v->set_start(start);
  v->set_end(start + len);
  v->set_kind(kind);
  v->set_shmem_id(id);
  v->set_pgoff(pgoff);
  return v;
}

struct Fixture {
  ImageDir dir{"/images"};
  Checkpoint c;
  std::vector<img::ShmemObject> objects;
  Fixture() {
    c.processes.resize(2);
    c.processes[0].entry.set_pid(10);
    c.processes[1].entry.set_pid(11);
    c.processes[1].entry.set_ppid(10);
  }
  LazyShmemPlan plan() const { return plan_lazy_shmem(dir, c, objects); }
};

TEST(LazyShmem, SharedAnonymousMemoryAndAMemfdMappedByTwoProcessesAreLazy) {
  Fixture f;
  f.objects = {object(1, 64 * kMiB), object(2, 8 * kMiB)};
  f.objects[1].set_memfd(true);
  f.objects[1].set_seals(F_SEAL_SEAL);  // a memfd made without MFD_ALLOW_SEALING
  for (auto& p : f.c.processes) {
    map(p, 0x7f0000000000, 64 * kMiB, 1, img::VMA_ANON_SHARED);
    map(p, 0x7f1000000000, 4 * kMiB, 2, img::VMA_FILE_SHARED);  // half of the memfd
  }
  LazyShmemPlan plan = f.plan();
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan.at(1).lazy_bytes, 63 * kMiB);
  EXPECT_EQ(plan.at(1).data, "/images/shmem-1.data");
  // Only the mapped half comes lazily; the rest is written at creation.
  ASSERT_EQ(plan.at(2).mapped.size(), 1u);
  EXPECT_EQ(plan.at(2).mapped[0], std::make_pair(uint64_t{0}, 4 * kMiB));
  EXPECT_EQ(plan.at(2).lazy_bytes, 3 * kMiB);
  EXPECT_EQ(lazy_shmem_vmas(f.c.processes[1], plan).size(), 2u);
  // Their mappings are lazy VMAs, and keep their premap slots.
  std::vector<bool> lazy = lazy_vmas(f.c, f.c.processes[0], plan);
  EXPECT_EQ(lazy, (std::vector<bool>{true, true}));
  PremapSizes sizes;
  sizes.blob = 0x30000;
  sizes.tail = 0x3000;
  auto pp = plan_premap(f.c.processes[0].mm, {}, sizes, {}, lazy);
  ASSERT_TRUE(pp) << pp.error().what();
  EXPECT_NE(pp->slot[0], 0u);
  EXPECT_NE(pp->slot[1], 0u);
}

TEST(LazyShmem, WhatAFaultCannotReachStaysEager) {
  Fixture f;
  for (uint32_t id = 1; id <= 7; id++) f.objects.push_back(object(id, 4 * kMiB));
  auto& p = f.c.processes[0];
  // 1: a memfd an fd holds (read(2) does not fault).
  f.objects[0].set_memfd(true);
  map(p, 0x10000000, 4 * kMiB, 1, img::VMA_FILE_SHARED);
  img::FileEntry fe;
  fe.set_id(5);
  fe.mutable_memfd()->set_shmem_id(1);
  f.c.files.push_back(fe);
  // 2: also mapped privately.
  map(p, 0x20000000, 4 * kMiB, 2, img::VMA_FILE_SHARED);
  map(p, 0x21000000, 4 * kMiB, 2, img::VMA_FILE_PRIVATE);
  // 3: a mapping that cannot write (userfaultfd refuses to register it).
  map(p, 0x30000000, 4 * kMiB, 3, img::VMA_ANON_SHARED)->set_no_may_write(true);
  // 4: mlocked.
  map(p, 0x40000000, 4 * kMiB, 4, img::VMA_ANON_SHARED)->set_advice(img::ADVICE_LOCKED);
  // 5: write-sealed.
  f.objects[4].set_memfd(true);
  f.objects[4].set_seals(F_SEAL_WRITE);
  map(p, 0x50000000, 4 * kMiB, 5, img::VMA_FILE_SHARED);
  // 6: a System V segment (removed: still eager, userfaultfd does not take it).
  f.objects[5].mutable_sysv()->set_removed(true);
  map(p, 0x60000000, 4 * kMiB, 6, img::VMA_SYSV_SHM);
  // 7: mapped by nobody.
  LazyShmemPlan plan = f.plan();
  EXPECT_TRUE(plan.empty()) << plan.size();
  std::vector<bool> lazy = lazy_vmas(f.c, p, plan);
  EXPECT_EQ(std::count(lazy.begin(), lazy.end(), true), 0);
}

TEST(LazyShmem, OffsetsOfSeveralMappingsMerge) {
  Fixture f;
  f.objects = {object(1, 16 * kMiB)};
  map(f.c.processes[0], 0x10000000, 4 * kMiB, 1, img::VMA_ANON_SHARED, 2 * kMiB);
  map(f.c.processes[1], 0x20000000, 4 * kMiB, 1, img::VMA_ANON_SHARED, 4 * kMiB);
  map(f.c.processes[1], 0x30000000, 2 * kMiB, 1, img::VMA_ANON_SHARED, 12 * kMiB);
  LazyShmemPlan plan = f.plan();
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan.at(1).mapped, (LazyRanges{{2 * kMiB, 8 * kMiB}, {12 * kMiB, 14 * kMiB}}));
  EXPECT_EQ(plan.at(1).lazy_bytes, 8 * kMiB);
}

}  // namespace
}  // namespace minicriu
