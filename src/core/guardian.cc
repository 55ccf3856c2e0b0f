#include "core/guardian.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <utility>

#include "base/journal.hpp"
#include "core/journal_replay.hpp"

namespace minicriu {

namespace {

constexpr char kDone = 'd';

[[noreturn]] void guard(int done_fd, int dumper_fd, pid_t dumper, uint64_t dumper_start, const std::string& journal,
                        const Logger& log) {
  ::setsid();
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) ::signal(sig, SIG_IGN);
  // Nothing of the dumper's but the two fds (as 3 and 4) and stderr (the log).
  int a = ::fcntl(done_fd, F_DUPFD_CLOEXEC, 100), b = ::fcntl(dumper_fd, F_DUPFD_CLOEXEC, 100);
  if (a < 0 || b < 0 || ::dup3(a, 3, O_CLOEXEC) < 0 || ::dup3(b, 4, O_CLOEXEC) < 0) ::_exit(1);
  ::syscall(SYS_close_range, 5u, ~0u, 0u);
  int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    ::dup2(null, 0);
    ::dup2(null, 1);
  }
  bool done = false, dead = false;
  while (!done && !dead) {
    pollfd fds[2] = {{3, POLLIN, 0}, {4, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      ::_exit(1);
    }
    if (fds[0].revents) {
      char c = 0;
      ssize_t n = ::read(3, &c, 1);
      if (n == 1 && c == kDone) done = true;
      else if (n <= 0 && !(fds[1].revents)) {
        // End of file: the dumper is going (or a child of its holds the end):
        // the pidfd tells when it is gone.
        pollfd pid_fd{4, POLLIN, 0};
        while (::poll(&pid_fd, 1, -1) < 0 && errno == EINTR) {
        }
        dead = true;
      }
    }
    if (fds[1].revents) dead = true;
  }
  if (done) ::_exit(0);
  // A "done" may have been written just before the end.
  pollfd last{3, POLLIN, 0};
  if (::poll(&last, 1, 0) == 1) {
    char c = 0;
    if (::read(3, &c, 1) == 1 && c == kDone) ::_exit(0);
  }
  // Killed while it made the journal: the half-made one goes; nothing was
  // changed in the tree before the journal had its name.
  ::unlink(Journal::temp_path(journal, dumper).c_str());
  if (::access(journal.c_str(), F_OK) != 0) ::_exit(0);
  auto r = replay_journal(journal, log, true, dumper, dumper_start);
  if (!r) {
    log.error("guardian: {}", r.error().what());
    ::_exit(1);
  }
  // Not its dumper's journal (it died before making its own, and another
  // dump of the same root runs): not ours to touch.
  if (!r->replayed) ::_exit(0);
  log.warn("guardian: the dumper (pid {}) died during the dump; the tree was put back from its journal: {}", dumper,
           r->summary());
  ::_exit(r->problems.empty() ? 0 : 1);
}

}  // namespace

Result<Guardian> Guardian::start(const std::string& journal_path, const Logger& log) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return fail_errno("pipe for the dump's guardian");
  UniqueFd rd(p[0]), wr(p[1]);
  UniqueFd self(static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0)));
  if (!self) return fail_errno("pidfd_open of the dumper for its guardian");
  pid_t dumper = ::getpid();
  uint64_t dumper_start = process_start_time(dumper);
  pid_t pid = ::fork();
  if (pid < 0) return fail_errno("fork of the dump's guardian");
  if (pid == 0) guard(rd.get(), self.get(), dumper, dumper_start, journal_path, log);
  return Guardian(pid, std::move(wr));
}

Guardian::Guardian(Guardian&& o) noexcept : pid_(std::exchange(o.pid_, -1)), done_(std::move(o.done_)) {}

void Guardian::dismiss() {
  if (pid_ < 0) return;
  if (done_) {
    char c = kDone;
    while (::write(done_.get(), &c, 1) < 0 && errno == EINTR) {
    }
    done_.reset();
  }
  int status;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

}  // namespace minicriu
