// A dump that runs out of space at any point leaves the tree as it was: the
// destructive step (accepting connections not yet accepted, to read their
// data) runs only once every other image is written and the room for the rest
// is reserved, so no size of disk makes a dump fail after it.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include <fmt/format.h>

#include "e2e_util.hpp"

using namespace e2e;

namespace {

// Bytes the files of a directory take, rounded up to pages as tmpfs counts.
uint64_t space_of(const std::string& dir) {
  uint64_t total = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) {
    struct stat st;
    if (::stat(e.path().c_str(), &st) == 0) total += (static_cast<uint64_t>(st.st_size) + 4095) & ~4095ull;
  }
  return total;
}

std::string listing(const std::string& dir) {
  std::string out;
  for (auto& e : std::filesystem::directory_iterator(dir)) out += e.path().filename().string() + " ";
  return out;
}

}  // namespace

TEST(DumpOutOfSpace, PendingUnixAndTcpConnectionsSurviveEveryShortDisk) {
  // What a complete dump of this program takes, on a disk with room enough
  // (and the restore of that dump goes on to the same end).
  uint64_t needed = 0;
  {
    TempDir dir;
    Program p("pendingboth", dir);
    ASSERT_TRUE(p.wait_ready());
    pid_t pid = p.pid();
    std::string images = images_dir(dir);
    ASSERT_NO_FATAL_FAILURE(dump_and_reap(pid, images, &p));
    needed = space_of(images);
    RestoredTree restored;
    restored.add_from(images);
    ASSERT_EQ(restore_detached(images), pid);
    ::kill(pid, SIGUSR1);
    EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "pendingboth.log");
  }
  ASSERT_GT(needed, 200u * 1024) << "the pending data should weigh in the images";

  // Every disk smaller than that: the dump fails in one line, leaves nothing
  // in the directory, and the connections still wait with their data.
  TempDir dir;
  Program p("pendingboth", dir);
  ASSERT_TRUE(p.wait_ready());
  std::string small = dir / "small";
  uint64_t step = std::max<uint64_t>(4096, (needed / 48) & ~4095ull);
  int walked = 0;
  for (uint64_t size = 4096; size < needed; size += step) {
    TmpfsMount disk(small, fmt::format("size={}", size));
    ASSERT_TRUE(disk.ok());
    auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", small});
    ASSERT_NE(r.status, 0) << "a dump into " << size << " bytes succeeded: " << r.output;
    expect_one_line_error(r, "No space left on device");
    ASSERT_TRUE(p.alive()) << "after a dump into " << size << " bytes";
    EXPECT_TRUE(std::filesystem::is_empty(small)) << size << " bytes: left behind: " << listing(small);
    walked++;
  }
  EXPECT_GE(walked, 40);
  // The application accepts both connections and reads all their data.
  expect_intact(p);
}

// A dump into a directory that holds a good checkpoint builds the new one
// beside it and replaces it only once complete: one that fails (here, for
// lack of space) leaves the old one whole, and it still restores.
TEST(DumpOutOfSpace, AFailedDumpLeavesThePreviousCheckpointWhole) {
  TempDir dir;
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  std::string measure = images_dir(dir, "measure");
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, measure));
  uint64_t size = space_of(measure);
  std::string small = dir / "small";
  TmpfsMount disk(small, fmt::format("size={}", size + size / 2));
  ASSERT_TRUE(disk.ok());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, small));
  std::string before = listing(small);
  auto view_before = show_json(small);

  auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", small, "--leave-running"});
  expect_one_line_error(r, "No space left on device");
  EXPECT_EQ(listing(small), before) << "the previous checkpoint changed";
  auto view_after = show_json(small);
  EXPECT_EQ(view_after.inventory().dump_time_unix_ns(), view_before.inventory().dump_time_unix_ns());
  ASSERT_TRUE(p.alive());

  // The old checkpoint restores: the program, killed, comes back from it.
  pid_t pid = p.pid();
  p.signal(SIGKILL);
  EXPECT_EQ(p.wait_exit().value_or(-1), 128 + SIGKILL);
  p.forget();
  ASSERT_TRUE(wait_gone(pid));
  RestoredTree restored;
  restored.add_from(small);
  ASSERT_EQ(restore_detached(small), pid);
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "basic.log");
}
