// Shared memory at dump: every object once, from the object, however many
// processes map it; the processes keep sharing it after a leave-running dump.
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>

#include <filesystem>

#include "e2e_util.hpp"
#include "minicriu.pb.h"

using namespace e2e;

TEST(ShmDump, AnonymousSharedAndMemfdAreStoredOnceEach) {
  TempDir dir;
  std::string images = dir / "images";
  std::filesystem::create_directory(images);
  Program p("shm", dir);
  ASSERT_TRUE(p.wait_ready());
  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images, "--leave-running"});
  ASSERT_EQ(r.status, 0) << r.output;
  auto json = run_minicriu({"show", "--json", "-D", images});
  minicriu::img::CheckpointView view;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json.output, &view).ok()) << json.output;
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
    uint64_t pages = 0;
    for (auto& e : proc.pagemap()) pages += e.nr_pages();
    EXPECT_LT(pages * 4096, 4u << 20) << "shared memory dumped again as process memory";
    int mapped = 0;
    for (auto& v : proc.mm().vmas()) mapped += v.shmem_id() != 0;
    EXPECT_EQ(mapped, 3) << "pid " << proc.pstree().pid();
  }
  bool memfd_fd = false;
  for (auto& f : view.files())
    if (f.has_memfd() && f.memfd().shmem_id() == memfd_id && f.memfd().pos() == 4096) memfd_fd = true;
  EXPECT_TRUE(memfd_fd);
  ASSERT_TRUE(p.alive());
  p.signal(SIGUSR1);
  EXPECT_EQ(p.wait_exit().value_or(-1), 0) << p.log();
}
