#include "restorer/task_builder.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/syscalls.hpp"
#include "restorer/restore_channel.hpp"
#include "restorer/task_sharing.hpp"

namespace minicriu {

RestoringTask::~RestoringTask() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int st;
  while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
  }
}

namespace {

Error clone_error(pid_t pid, int e) {
  if (e == EEXIST) return Error(fmt::format("pid {} was taken by another process while restoring", pid));
  if (e == EPERM)
    return Error(fmt::format("clone3 with pid {} (set_tid needs CAP_CHECKPOINT_RESTORE or "
                             "CAP_SYS_ADMIN)", pid), e);
  if (e == EINVAL)
    return Error(fmt::format("clone3 with pid {} (is it above /proc/sys/kernel/pid_max?)", pid), e);
  return Error(fmt::format("clone3 with pid {}", pid), e);
}

}  // namespace

Result<RestoringTask> create_task(const ProcessImages& p, ChannelPair ch, const TaskBody& body) {
  pid_t pid = static_cast<pid_t>(p.entry.pid());
  // The new task runs minicriu code (malloc included) before it jumps into
  // the blob. A raw clone3 of a caller with other threads (an MPI runtime) could
  // copy a lock another thread holds; glibc's fork() makes a consistent copy.
  // So a forked helper, single-threaded, does the clone3: with CLONE_PARENT the
  // task is still our child, and the helper reports clone3's errno as its exit.
  pid_t helper = ::fork();
  if (helper < 0) return fail_errno("fork of the restore helper");
  if (helper == 0) {
    clone_args args{};
    args.flags = CLONE_PARENT;  // exit_signal must be 0: the task gets ours (SIGCHLD)
    pid_t want = pid;
    args.set_tid = reinterpret_cast<uint64_t>(&want);
    args.set_tid_size = 1;
    long r = sys::clone3(&args, sizeof(args));
    if (r == 0) {
      // The task: a copy of minicriu that becomes the restored process.
      ch.parent.reset();
      body(ch.child.get());
      send_error(ch.child.get(), Error("restore body returned"));
      ::_exit(127);
    }
    ::_exit(r < 0 ? (errno & 0xff) : 0);
  }
  int status = 0;
  while (::waitpid(helper, &status, 0) < 0) {
    if (errno != EINTR) return fail_errno("waiting for the restore helper");
  }
  if (!WIFEXITED(status)) return fail("the restore helper died");
  if (WEXITSTATUS(status) != 0) return std::unexpected(clone_error(pid, WEXITSTATUS(status)));
  return RestoringTask(pid, std::move(ch.parent));
}

Status create_child_task(const ProcessImages& child, const std::function<void()>& body, UniqueFd* pidfd,
                         int floor) {
  pid_t pid = static_cast<pid_t>(child.entry.pid());
  clone_args args{};
  args.flags = sharing_flags(child.entry);
  int child_pidfd = -1;
  if (pidfd) {
    args.flags |= CLONE_PIDFD;
    args.pidfd = reinterpret_cast<uint64_t>(&child_pidfd);
  }
  // A zombie has no core image: its parent was told of it with SIGCHLD.
  int exit_signal = child.entry.zombie() ? SIGCHLD : static_cast<int>(child.core.exit_signal());
  args.exit_signal = static_cast<uint64_t>(exit_signal ? exit_signal : SIGCHLD);
  pid_t want = pid;
  args.set_tid = reinterpret_cast<uint64_t>(&want);
  args.set_tid_size = 1;
  long r = sys::clone3(&args, sizeof(args));
  if (r < 0) return std::unexpected(clone_error(pid, errno));
  if (r > 0) {
    if (pidfd) *pidfd = move_fd_above(UniqueFd(child_pidfd), floor);
    return {};
  }
  if (child.entry.zombie()) {
    // Dead again, the way it died: its parent reaps the same status.
    int status = static_cast<int>(child.entry.exit_status());
    if (WIFSIGNALED(status)) {
      ::signal(WTERMSIG(status), SIG_DFL);
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, WTERMSIG(status));
      ::sigprocmask(SIG_UNBLOCK, &set, nullptr);
      ::prctl(PR_SET_DUMPABLE, 0);  // no core file for a death that already happened
      ::kill(::getpid(), WTERMSIG(status));
    }
    ::_exit(WEXITSTATUS(status));
  }
  body();
  ::_exit(127);
}

}  // namespace minicriu
