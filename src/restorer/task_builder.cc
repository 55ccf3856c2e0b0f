#include "restorer/task_builder.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/syscalls.hpp"
#include "restorer/restore_channel.hpp"

namespace minicriu {

RestoringTask::~RestoringTask() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int st;
  while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
  }
}

Result<RestoringTask> create_task(const ProcessImages& p, const TaskBody& body) {
  pid_t pid = static_cast<pid_t>(p.entry.pid());
  ASSIGN_OR_RETURN(auto ch, make_channel());
  clone_args args{};
  args.exit_signal = SIGCHLD;
  pid_t want = pid;
  args.set_tid = reinterpret_cast<uint64_t>(&want);
  args.set_tid_size = 1;
  long r = sys::clone3(&args, sizeof(args));
  if (r < 0) {
    int e = errno;
    if (e == EEXIST) return failf("pid {} was taken by another process while restoring", pid);
    if (e == EPERM)
      return std::unexpected(Error(fmt::format("clone3 with pid {} (set_tid needs "
                                               "CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN)", pid), e));
    if (e == EINVAL)
      return std::unexpected(Error(fmt::format("clone3 with pid {} (is it above "
                                               "/proc/sys/kernel/pid_max?)", pid), e));
    return std::unexpected(Error(fmt::format("clone3 with pid {}", pid), e));
  }
  if (r == 0) {
    // The child: a copy of minicriu that becomes the restored process.
    ch.parent.reset();
    body(ch.child.get());
    send_error(ch.child.get(), Error("restore body returned"));
    ::_exit(127);
  }
  return RestoringTask(static_cast<pid_t>(r), std::move(ch.parent));
}

}  // namespace minicriu
