// Shared memory at dump: every object once, from the object, however many
// processes map it; the processes keep sharing it after a leave-running dump.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>

#include <filesystem>

#include "e2e_util.hpp"
#include "minicriu.pb.h"

using namespace e2e;

TEST(ShmDump, AnonymousSharedAndMemfdAreStoredOnceEach) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("shm", dir);
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  auto view = show_json(images);
  ASSERT_EQ(view.processes_size(), 2);
  // The 16 MiB region, the flags page and the memfd: three objects.
  ASSERT_EQ(view.shmem_size(), 3);
  uint32_t memfd_id = 0;
  for (auto& o : view.shmem()) {
    if (o.memfd()) {
      memfd_id = o.id();
      EXPECT_EQ(o.name(), "mc-test");
      EXPECT_EQ(o.size(), 8u << 20);
      EXPECT_EQ(o.allocated(), 8u << 20);
      EXPECT_EQ(o.seals(), static_cast<uint32_t>(F_SEAL_SHRINK | F_SEAL_GROW));
    } else if (o.size() == (16u << 20)) {
      EXPECT_EQ(o.allocated(), 16u << 20);
    }
    EXPECT_EQ(std::filesystem::file_size(images + "/shmem-" + std::to_string(o.id()) + ".data"), o.allocated());
  }
  ASSERT_NE(memfd_id, 0u);
  for (auto& proc : view.processes()) {
    EXPECT_LT(dumped_pages(proc) * 4096, 4u << 20) << "shared memory dumped again as process memory";
    int mapped = 0;
    for (auto& v : proc.mm().vmas()) mapped += v.shmem_id() != 0;
    EXPECT_EQ(mapped, 3) << "pid " << proc.pstree().pid();
  }
  bool memfd_fd = false;
  for (auto& f : view.files())
    if (f.has_memfd() && f.memfd().shmem_id() == memfd_id && f.memfd().pos() == 4096) memfd_fd = true;
  EXPECT_TRUE(memfd_fd);
  expect_intact(p);
}

TEST(ShmDump, SystemVSegmentsAreStoredOnceWithTheirIds) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("sysv", dir);
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  auto view = show_json(images);
  int segments = 0, removed = 0;
  for (auto& o : view.shmem()) {
    if (!o.has_sysv()) continue;
    segments++;
    removed += o.sysv().removed();
    EXPECT_EQ(o.size(), 4u << 20);
  }
  EXPECT_EQ(segments, 2);
  EXPECT_EQ(removed, 1);
  expect_intact(p);
}
