// signalfd dumped from the test process's own fdinfo and opened again: the
// same mask and blocking mode, and it reads the signals of its mask.
#include <fcntl.h>
#include <signal.h>
#include <sys/signalfd.h>

#include "own_fd.hpp"

using namespace minicriu;
using namespace minicriu::testing;

namespace {

uint64_t sig_bit(int sig) { return 1ull << (sig - 1); }

// Blocks signals for the test's duration (a signalfd reads only blocked,
// pending signals) and drops any left pending.
class BlockedSignals {
 public:
  explicit BlockedSignals(std::initializer_list<int> sigs) {
    sigemptyset(&set_);
    for (int s : sigs) sigaddset(&set_, s);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
  }
  ~BlockedSignals() {
    timespec zero{};
    while (sigtimedwait(&set_, nullptr, &zero) > 0) {
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t set_, old_;
};

}  // namespace

TEST(SignalFd, MaskAndFlagsComeBackAndItReadsItsSignals) {
  BlockedSignals blocked({SIGUSR1, SIGUSR2, SIGRTMIN + 1});
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGUSR2);
  sigaddset(&mask, SIGRTMIN + 1);
  UniqueFd sfd(::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC));
  ASSERT_TRUE(sfd);
  DumpContextFixture fx;
  auto entry = dump_own_fd(sfd.get(), fx);
  ASSERT_TRUE(entry) << entry.error().what();
  ASSERT_TRUE(entry->has_signalfd());
  EXPECT_EQ(entry->signalfd().mask(), sig_bit(SIGUSR2) | sig_bit(SIGRTMIN + 1));
  EXPECT_TRUE(entry->signalfd().flags() & O_NONBLOCK);

  auto restored = open_entry(*entry);
  ASSERT_TRUE(restored) << restored.error().what();
  EXPECT_TRUE(::fcntl(restored->get(), F_GETFL) & O_NONBLOCK);
  auto again = dump_own_fd(restored->get(), fx);
  ASSERT_TRUE(again) << again.error().what();
  EXPECT_EQ(again->signalfd().mask(), entry->signalfd().mask());

  signalfd_siginfo si{};
  // A blocked signal outside the mask is not for it.
  ASSERT_EQ(::raise(SIGUSR1), 0);
  EXPECT_LT(::read(restored->get(), &si, sizeof(si)), 0);
  EXPECT_EQ(errno, EAGAIN);
  sigval v{};
  v.sival_int = 4242;
  ASSERT_EQ(::sigqueue(::getpid(), SIGRTMIN + 1, v), 0);
  ASSERT_EQ(::read(restored->get(), &si, sizeof(si)), static_cast<ssize_t>(sizeof(si)));
  EXPECT_EQ(si.ssi_signo, static_cast<uint32_t>(SIGRTMIN + 1));
  EXPECT_EQ(si.ssi_int, 4242);
}

TEST(SignalFd, SignalsGlibcKeepsForItselfAreRestoredToo) {
  // Signal 32 cannot be put in a sigset_t through glibc, but a program may
  // have a signalfd for it; the mask goes to the kernel as raw bits.
  img::FileEntry entry;
  entry.set_id(7);
  entry.mutable_signalfd()->set_mask(sig_bit(32) | sig_bit(SIGUSR2));
  auto restored = open_entry(entry);
  ASSERT_TRUE(restored) << restored.error().what();
  EXPECT_FALSE(::fcntl(restored->get(), F_GETFL) & O_NONBLOCK);
  DumpContextFixture fx;
  auto again = dump_own_fd(restored->get(), fx);
  ASSERT_TRUE(again) << again.error().what();
  EXPECT_EQ(again->signalfd().mask(), sig_bit(32) | sig_bit(SIGUSR2));
}
