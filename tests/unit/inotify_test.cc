// inotify dumped from the test process's own fdinfo and opened again: the
// same watch numbers on the same names with the same masks, nothing queued
// that the application did not have, and events arrive as before.
#include <fcntl.h>
#include <sys/inotify.h>

#include <filesystem>

#include "own_fd.hpp"

using namespace minicriu;
using namespace minicriu::testing;

namespace {

class InotifyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/minicriu-inotify-XXXXXX";
    dir_ = mkdtemp(tmpl);
    file_ = dir_ + "/watched";
    UniqueFd f(::open(file_.c_str(), O_CREAT | O_WRONLY, 0644));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_, file_;
};

// The next event: (wd, mask, name).
std::tuple<int, uint32_t, std::string> next_event(int fd) {
  alignas(inotify_event) char buf[4096];
  ssize_t n = ::read(fd, buf, sizeof(buf));
  if (n <= 0) return {-1, 0, strerror(errno)};
  auto* ev = reinterpret_cast<inotify_event*>(buf);
  return {ev->wd, ev->mask, ev->len ? std::string(ev->name) : std::string()};
}

}  // namespace

TEST_F(InotifyTest, WatchNumbersNamesAndMasksComeBackWithNothingQueued) {
  UniqueFd in(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  ASSERT_TRUE(in);
  // Watch numbers 1 and 2 come and go, so the ones kept are 3 and 4.
  for (int i = 0; i < 2; i++) ASSERT_EQ(::inotify_rm_watch(in.get(), ::inotify_add_watch(in.get(), dir_.c_str(), IN_ALL_EVENTS)), 0);
  ASSERT_EQ(::inotify_add_watch(in.get(), dir_.c_str(), IN_CREATE), 3);
  ASSERT_EQ(::inotify_add_watch(in.get(), file_.c_str(), IN_MODIFY | IN_ONESHOT), 4);
  while (std::get<0>(next_event(in.get())) > 0) {
  }

  DumpContextFixture fx;
  auto entry = dump_own_fd(in.get(), fx);
  ASSERT_TRUE(entry) << entry.error().what();
  ASSERT_TRUE(entry->has_inotify());
  const auto& watches = entry->inotify().watches();
  ASSERT_EQ(watches.size(), 2);
  EXPECT_EQ(watches[0].wd(), 3);
  EXPECT_EQ(watches[0].path(), dir_);
  EXPECT_EQ(watches[0].mask(), static_cast<uint32_t>(IN_CREATE));
  EXPECT_EQ(watches[1].wd(), 4);
  EXPECT_EQ(watches[1].path(), file_);
  EXPECT_EQ(watches[1].mask(), static_cast<uint32_t>(IN_MODIFY | IN_ONESHOT));
  EXPECT_TRUE(entry->inotify().flags() & O_NONBLOCK);

  auto restored = open_entry(*entry);
  ASSERT_TRUE(restored) << restored.error().what();
  EXPECT_TRUE(::fcntl(restored->get(), F_GETFL) & O_NONBLOCK);
  EXPECT_EQ(std::get<0>(next_event(restored->get())), -1) << "events of the restore's own watches were left queued";
  // Dumped again, the restored inotify has the same watches.
  auto again = dump_own_fd(restored->get(), fx);
  ASSERT_TRUE(again) << again.error().what();
  EXPECT_EQ(again->inotify().DebugString(), entry->inotify().DebugString());

  UniqueFd created(::open((dir_ + "/new").c_str(), O_CREAT | O_WRONLY, 0644));
  EXPECT_EQ(next_event(restored->get()), std::make_tuple(3, static_cast<uint32_t>(IN_CREATE), std::string("new")));
  UniqueFd w(::open(file_.c_str(), O_WRONLY));
  ASSERT_EQ(::write(w.get(), "x", 1), 1);
  EXPECT_EQ(next_event(restored->get()), std::make_tuple(4, static_cast<uint32_t>(IN_MODIFY), std::string()));
}

TEST_F(InotifyTest, BlockingModeComesBack) {
  UniqueFd in(::inotify_init1(0));
  ASSERT_EQ(::inotify_add_watch(in.get(), dir_.c_str(), IN_DELETE), 1);
  DumpContextFixture fx;
  auto entry = dump_own_fd(in.get(), fx);
  ASSERT_TRUE(entry) << entry.error().what();
  auto restored = open_entry(*entry);
  ASSERT_TRUE(restored) << restored.error().what();
  EXPECT_FALSE(::fcntl(restored->get(), F_GETFL) & O_NONBLOCK);
}

// A watch on a deleted file is carried through the fd of the tree that
// holds the file (a ghost; tests/e2e/fsmore_test.cc InotifyWatches.*): out
// of a dump, with no files of a tree to find it among, it is refused.
TEST_F(InotifyTest, WatchOnADeletedFileIsRefusedWithoutTheTreesFiles) {
  UniqueFd in(::inotify_init1(IN_NONBLOCK));
  ASSERT_EQ(::inotify_add_watch(in.get(), file_.c_str(), IN_MODIFY), 1);
  UniqueFd keep(::open(file_.c_str(), O_RDONLY));  // the inode and its watch stay
  ASSERT_EQ(::unlink(file_.c_str()), 0);
  DumpContextFixture fx;
  auto entry = dump_own_fd(in.get(), fx);
  ASSERT_FALSE(entry);
  std::string msg = entry.error().what();
  EXPECT_NE(msg.find("fd " + std::to_string(in.get()) + ": inotify watch 1 on a deleted file"), std::string::npos)
      << msg;
}
