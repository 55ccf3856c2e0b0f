// pidfd dumped from the test process's own fdinfo and opened again: a pidfd
// to a process of the dumped tree comes back to the same process; one to a
// process outside it is refused in one line that names the pid.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

#include "base/syscalls.hpp"
#include "own_fd.hpp"

using namespace minicriu;
using namespace minicriu::testing;

namespace {

// A child that waits to be killed, reaped at the end.
class Child {
 public:
  Child() {
    pid_ = ::fork();
    if (pid_ == 0) {
      ::pause();
      ::_exit(0);
    }
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_;
};

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 2000) == 1 && (p.revents & POLLIN);
}

}  // namespace

TEST(PidFd, PidfdIntoTheTreeComesBackToTheSameProcess) {
  Child child;
  ASSERT_GT(child.pid(), 0);
  UniqueFd pfd(sys::pidfd_open(child.pid(), O_NONBLOCK));
  ASSERT_TRUE(pfd) << strerror(errno);
  DumpContextFixture fx;
  fx.set_tree({::getpid(), child.pid()});
  auto entry = dump_own_fd(pfd.get(), fx);
  ASSERT_TRUE(entry) << entry.error().what();
  ASSERT_TRUE(entry->has_pidfd());
  EXPECT_EQ(entry->pidfd().pid(), static_cast<uint32_t>(child.pid()));
  EXPECT_TRUE(entry->pidfd().flags() & O_NONBLOCK);

  auto restored = open_entry(*entry);
  ASSERT_TRUE(restored) << restored.error().what();
  EXPECT_TRUE(::fcntl(restored->get(), F_GETFL) & O_NONBLOCK);
  auto again = dump_own_fd(restored->get(), fx);
  ASSERT_TRUE(again) << again.error().what();
  EXPECT_EQ(again->pidfd().pid(), static_cast<uint32_t>(child.pid()));
  // The same process: signals go to it, and its exit makes the pidfd readable.
  ASSERT_EQ(::syscall(SYS_pidfd_send_signal, restored->get(), SIGKILL, nullptr, 0), 0);
  EXPECT_TRUE(readable(restored->get()));
}

TEST(PidFd, PidfdOutsideTheTreeIsRefusedNamingThePid) {
  Child child;
  UniqueFd pfd(sys::pidfd_open(child.pid(), 0));
  ASSERT_TRUE(pfd);
  DumpContextFixture fx;
  fx.set_tree({::getpid()});
  auto entry = dump_own_fd(pfd.get(), fx);
  ASSERT_FALSE(entry);
  std::string msg = entry.error().what();
  EXPECT_NE(msg.find(fmt::format("fd {} is a pidfd to pid {}", pfd.get(), child.pid())), std::string::npos) << msg;
  EXPECT_NE(msg.find("outside the dumped tree"), std::string::npos) << msg;
  EXPECT_NE(msg.find("close it before the dump"), std::string::npos) << msg;
  // Without a tree at all, every pidfd is outside it.
  DumpContextFixture no_tree;
  EXPECT_FALSE(dump_own_fd(pfd.get(), no_tree));
}

// A pidfd to a reaped process is recorded as such (no pid), whatever the
// tree: the restore makes one to a child it reaps at once.
TEST(PidFd, PidfdToAReapedProcessIsRecordedAsExited) {
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  UniqueFd pfd(sys::pidfd_open(pid, O_NONBLOCK)  /* PIDFD_NONBLOCK */);
  ASSERT_TRUE(pfd);
  ASSERT_EQ(::waitpid(pid, nullptr, 0), pid);
  DumpContextFixture fx;
  fx.set_tree({::getpid()});
  auto entry = dump_own_fd(pfd.get(), fx);
  ASSERT_TRUE(entry) << entry.error().what();
  ASSERT_TRUE(entry->has_pidfd());
  EXPECT_TRUE(entry->pidfd().exited());
  EXPECT_EQ(entry->pidfd().pid(), 0u);
  EXPECT_TRUE(entry->pidfd().flags() & O_NONBLOCK);
}
