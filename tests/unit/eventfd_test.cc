// eventfd dumped from the test process's own fdinfo and opened again: the
// same count, mode and blocking, and the original keeps its count.
#include <fcntl.h>
#include <sys/eventfd.h>

#include "own_fd.hpp"

using namespace minicriu;
using namespace minicriu::testing;

namespace {

uint64_t read_count(int fd) {
  uint64_t v = 0;
  EXPECT_EQ(::read(fd, &v, sizeof(v)), static_cast<ssize_t>(sizeof(v))) << strerror(errno);
  return v;
}

bool would_block(int fd) {
  uint64_t v;
  return ::read(fd, &v, sizeof(v)) < 0 && errno == EAGAIN;
}

}  // namespace

TEST(EventFd, CountAndNonblockComeBackAndTheDumpLeavesTheCount) {
  UniqueFd efd(::eventfd(5, EFD_NONBLOCK | EFD_CLOEXEC));
  ASSERT_TRUE(efd);
  DumpContextFixture fx;
  auto entry = dump_own_fd(efd.get(), fx);
  ASSERT_TRUE(entry) << entry.error().what();
  ASSERT_TRUE(entry->has_eventfd());
  EXPECT_EQ(entry->eventfd().count(), 5u);
  EXPECT_FALSE(entry->eventfd().semaphore());
  EXPECT_TRUE(entry->eventfd().flags() & O_NONBLOCK);
  EXPECT_EQ(restore_kinds().owner(*entry).value()->name(), std::string("eventfd"));

  auto restored = open_entry(*entry);
  ASSERT_TRUE(restored) << restored.error().what();
  EXPECT_TRUE(::fcntl(restored->get(), F_GETFL) & O_NONBLOCK);
  EXPECT_EQ(read_count(restored->get()), 5u);
  EXPECT_TRUE(would_block(restored->get()));
  // Dumping read fdinfo only: the original still holds its 5.
  EXPECT_EQ(read_count(efd.get()), 5u);
}

TEST(EventFd, SemaphoreModeComesBack) {
  UniqueFd efd(::eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK));
  ASSERT_TRUE(efd);
  DumpContextFixture fx;
  auto entry = dump_own_fd(efd.get(), fx);
  ASSERT_TRUE(entry) << entry.error().what();
  EXPECT_TRUE(entry->eventfd().semaphore()) << "this kernel shows eventfd-semaphore since 6.6";
  auto restored = open_entry(*entry);
  ASSERT_TRUE(restored) << restored.error().what();
  for (int i = 0; i < 3; i++) EXPECT_EQ(read_count(restored->get()), 1u) << "read " << i;
  EXPECT_TRUE(would_block(restored->get()));
}

TEST(EventFd, CountAboveThirtyTwoBitsAndBlockingMode) {
  UniqueFd efd(::eventfd(0, 0));
  ASSERT_TRUE(efd);
  uint64_t big = 0x1'0000'0007ull;
  ASSERT_EQ(::write(efd.get(), &big, sizeof(big)), static_cast<ssize_t>(sizeof(big)));
  DumpContextFixture fx;
  auto entry = dump_own_fd(efd.get(), fx);
  ASSERT_TRUE(entry) << entry.error().what();
  EXPECT_EQ(entry->eventfd().count(), big);
  auto restored = open_entry(*entry);
  ASSERT_TRUE(restored) << restored.error().what();
  EXPECT_FALSE(::fcntl(restored->get(), F_GETFL) & O_NONBLOCK);
  EXPECT_EQ(read_count(restored->get()), big);
}

TEST(EventFd, MalformedFdinfoIsAnErrorNamingTheFd) {
  UniqueFd efd(::eventfd(1, 0));
  FdDumpInfo info = own_fd(efd.get());
  info.fdinfo.text = "pos:\t0\nflags:\t02\n";
  img::FileEntry entry;
  DumpContextFixture fx;
  auto st = take_fd(info, entry, fx);
  ASSERT_FALSE(st);
  EXPECT_NE(std::string(st.error().what()).find(info.what), std::string::npos) << st.error().what();
  EXPECT_NE(std::string(st.error().what()).find("eventfd-count"), std::string::npos) << st.error().what();
}
