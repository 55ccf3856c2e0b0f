// Restore orchestration: the order of the steps (DESIGN.md, "Restore, step by
// step"), not the details of any of them. Nothing is created before every image
// has been read and validated; until every process said ready and was told to
// go, a failure kills what was created (RestoringTask), so no half-restored
// process is ever left running.

#include <chrono>
#include <memory>
#include <vector>

#include "core/error.hpp"
#include "core/log.hpp"
#include "fs/ghost_file.hpp"
#include "fs/pipe.hpp"
#include "images/image_dir.hpp"
#include "mem/shmem.hpp"
#include "restorer/checkpoint.hpp"
#include "restorer/machine.hpp"
#include "restorer/pid_check.hpp"
#include "restorer/process_restore.hpp"
#include "restorer/restore_channel.hpp"
#include "restorer/tail_unmap.hpp"
#include "restorer/task_builder.hpp"
#include "restorer/validate.hpp"

// After the images' headers: <signal.h> defines a sigmask() macro.
#include <sys/wait.h>

namespace minicriu {

namespace {

// Relays a task's warnings until it is ready; its error becomes ours.
Result<rst::Msg> wait_ready(RestoringTask& task, const Logger& log) {
  for (;;) {
    ASSIGN_OR_RETURN(rst::Msg m, with_context(receive(task.channel()), fmt::format("pid {}", task.pid())));
    switch (m.type) {
      case rst::MSG_WARN:
        log.warn("{}", m.text);
        break;
      case rst::MSG_ERROR:
        return std::unexpected(Error(m.text, m.err));
      case rst::MSG_READY:
        return m;
      default:
        return failf("pid {}: unknown message {} on the restore channel", task.pid(), m.type);
    }
  }
}

}  // namespace

Result<RestoreResult> restore(const RestoreOptions& options) {
  Logger log(options.log);
  auto start = std::chrono::steady_clock::now();
  ImageDir dir(options.images_dir);

  ASSIGN_OR_RETURN(Checkpoint ckpt, load_checkpoint(dir));
  ASSIGN_OR_RETURN(MachineInfo machine, probe_machine());
  TRY(with_context(validate_checkpoint(ckpt, machine),
                   fmt::format("{} cannot be restored here", dir.path())));
  log.info("images of {} process(es) read and valid", ckpt.processes.size());
  if (ckpt.processes.size() != 1)
    return failf("{} holds a tree of {} processes; this version restores single processes "
                 "(with any number of threads) only", dir.path(), ckpt.processes.size());
  // Shared objects of the tree: their images are read and checked now, the
  // objects made when a process first needs them.
  ASSIGN_OR_RETURN(auto pipes, PipeRestorer::load(dir));
  ASSIGN_OR_RETURN(auto shmem, ShmemRestorer::load(dir));
  TRY(check_ids_free(ckpt));

  // Ghost files come back under temporary names until every holder has them.
  ASSIGN_OR_RETURN(auto ghosts, RecreatedGhosts::recreate(dir, ckpt.ghosts, options.ghost_dir));
  FileRestoreContext files;
  files.ghost_paths = &ghosts.paths();
  files.pipes = pipes.get();
  files.shmem = shmem.get();

  std::vector<RestoringTask> tasks;
  for (const ProcessImages& p : ckpt.processes) {
    ASSIGN_OR_RETURN(auto task, create_task(p, [&](int channel) {
      restore_process(ckpt, p, channel, files);
    }));
    log.info("pid {}: created", task.pid());
    tasks.push_back(std::move(task));
  }
  std::vector<std::unique_ptr<TailUnmapper>> tails;
  for (size_t i = 0; i < tasks.size(); i++) {
    ASSIGN_OR_RETURN(rst::Msg ready, wait_ready(tasks[i], log));
    std::vector<pid_t> tids(ckpt.processes[i].entry.tids().begin(), ckpt.processes[i].entry.tids().end());
    auto tail = TailUnmapper::attach(tasks[i].pid(), tids, ready);
    if (!tail) log.warn("the restorer tail will stay mapped: {}", tail.error().what());
    tails.push_back(tail ? std::move(*tail) : nullptr);
  }
  log.info("every process is ready; resuming");
  // Every holder has its files: ghosts become ghosts again, link remaps go.
  ghosts.unlink_all();
  for (auto& f : ckpt.files)
    if (f.has_reg() && f.reg().remove_after_restore()) ::unlink(f.reg().path().c_str());
  for (auto& t : tasks) TRY(send_go(t.channel()));
  // From here the tree runs on its own: nothing below may kill it.
  for (auto& t : tasks) t.release();
  for (auto& tail : tails) {
    if (!tail) continue;
    if (auto st = tail->finish(); !st) log.warn("the restorer tail stays mapped: {}", st.error().what());
    tail.reset();
  }
  // A process stopped at the dump is stopped again (after the tails: they
  // are finished under ptrace).
  for (size_t i = 0; i < tasks.size(); i++)
    if (ckpt.processes[i].entry.stopped()) ::kill(tasks[i].pid(), SIGSTOP);
  for (auto& t : tasks) {
    if (auto closed = wait_closed(t.channel()); !closed) log.warn("{}", closed.error().what());
    t.close_channel();
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - start).count();
  RestoreResult result;
  result.root_pid = static_cast<pid_t>(ckpt.inventory.root_pid());
  log.info("restored pid {} in {} ms", result.root_pid, ms);
  if (options.detach) return result;
  int status = 0;
  while (::waitpid(result.root_pid, &status, 0) < 0) {
    if (errno != EINTR) return failf_errno("waiting for the restored pid {}", result.root_pid);
  }
  result.exit_status = status;
  return result;
}

}  // namespace minicriu
