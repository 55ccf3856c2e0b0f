#include "ptrace/task_tree.hpp"

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <set>

#include "base/journal.hpp"
#include "proc/privileges.hpp"
#include "proc/proc_parse.hpp"
#include "ptrace/borrowed_thread.hpp"

namespace minicriu {

TaskTree::~TaskTree() { release(); }

unsigned TaskTree::thread_count() const {
  unsigned n = 0;
  for (auto& p : processes_) n += static_cast<unsigned>(p.threads.size());
  return n;
}

Status TaskTree::seize_threads(FrozenProcess& proc, const Logger& log) {
  std::set<pid_t> seized;
  // A thread may create threads until it is stopped: list again until a pass
  // finds nothing new.
  for (bool grew = true; grew;) {
    grew = false;
    ASSIGN_OR_RETURN(auto tids, proc::list_numeric_dir(proc::pid_path(proc.pid, "task")));
    // The leader first, so that threads.front() is the thread group leader.
    std::stable_partition(tids.begin(), tids.end(), [&](int t) { return t == proc.pid; });
    for (pid_t tid : tids) {
      if (seized.count(tid)) continue;
      auto t = Tracee::seize(proc.pid, tid);
      if (!t) {
        if (t.error().err() == ESRCH && tid != proc.pid) continue;  // exited meanwhile
        return std::unexpected(t.error());
      }
      log.debug("pid {}: seized thread {}", proc.pid, tid);
      proc.threads.push_back(std::move(*t));
      seized.insert(tid);
      grew = true;
    }
  }
  return {};
}

Result<std::unique_ptr<TaskTree>> TaskTree::freeze(pid_t root, const Logger& log) {
  if (root <= 0) return failf("invalid pid {}", root);
  if (::kill(root, 0) != 0 && errno == ESRCH)
    return std::unexpected(Error(fmt::format("pid {}: no such process", root), ESRCH));
  // Every process is checked against the kernel's ptrace rules before it is
  // seized: a user dumps only what is theirs, refused in one line.
  ASSIGN_OR_RETURN(img::Creds caller, own_creds());
  std::unique_ptr<TaskTree> tree(new TaskTree());
  std::vector<pid_t> queue{root};
  std::vector<pid_t> parents{0};
  for (size_t i = 0; i < queue.size(); i++) {
    FrozenProcess proc;
    proc.pid = queue[i];
    proc.ppid = parents[i];
    tree->processes_.push_back(std::move(proc));
    FrozenProcess& p = tree->processes_.back();
    // A zombie cannot be seized and has nothing left but its exit status.
    if (auto stat = proc::read_file(proc::pid_path(p.pid, "stat"))) {
      auto parsed = proc::parse_stat(*stat);
      if (parsed && parsed->state == 'Z') {
        if (i == 0) return failf("pid {} is a zombie: there is nothing to dump", p.pid);
        p.zombie = true;
        p.exit_status = parsed->exit_code;
        log.debug("pid {}: zombie, exit status {:#x}", p.pid, p.exit_status);
        continue;
      }
    }
    if (auto st = check_may_dump(p.pid, caller); !st) {
      int e = st.error().err();
      if ((e == ESRCH || e == ENOENT) && i > 0) {  // a child exited before we got it
        tree->processes_.pop_back();
        continue;
      }
      return std::unexpected(st.error());
    }
    if (auto st = tree->seize_threads(p, log); !st) {
      if (st.error().err() == ESRCH && i > 0) {  // a child exited before we got it
        tree->processes_.pop_back();
        continue;
      }
      return std::unexpected(st.error().context(fmt::format("pid {}", p.pid)));
    }
    if (auto st = journal_note(fmt::format("proc {} {}", p.pid, process_start_time(p.pid))); !st)
      return std::unexpected(st.error());
    // Every thread of p is stopped now, so its set of children is final.
    for (auto& t : p.threads) {
      auto text = proc::read_file(proc::pid_path(p.pid, fmt::format("task/{}/children", t.tid())));
      if (!text) continue;
      for (pid_t child : proc::parse_pid_list(*text)) {
        queue.push_back(child);
        parents.push_back(p.pid);
      }
    }
  }
  for (auto& p : tree->processes_)
    if (!p.zombie) TRY(with_context(tree->hold_in_group_stop(p, log), fmt::format("pid {}", p.pid)));
  log.info("froze {} process(es), {} thread(s)", tree->processes_.size(), tree->thread_count());
  return tree;
}

Status TaskTree::hold_in_group_stop(FrozenProcess& proc, const Logger& log) {
  Tracee& leader = proc.leader();
  if (leader.group_stopped()) return {};  // stopped by someone else: stays so
  TRY(journal_note(fmt::format("stop {}", proc.pid)));
  proc.stopped_by_us = true;
  if (::kill(proc.pid, SIGSTOP) != 0) return failf_errno("cannot SIGSTOP the process");
  // The SIGSTOP waits in the queue until a thread dequeues it: the leader,
  // with every other signal blocked for a moment, so that it takes that one.
  BorrowedThread kick(leader);
  TRY(kick.enter());
  TRY(leader.join_group_stop());
  TRY(kick.give_back());
  log.debug("pid {}: held in a group stop", proc.pid);
  return {};
}

namespace {

bool real_parent_is_us(pid_t pid) {
  auto text = proc::read_file(proc::pid_path(pid, "stat"));
  if (!text) return false;
  auto st = proc::parse_stat(*text);
  return st && st->ppid == ::getpid();
}

}  // namespace

void TaskTree::kill() {
  for (auto& p : processes_) {
    if (!p.zombie) ::kill(p.pid, SIGKILL);
    p.stopped_by_us = false;  // nothing to continue (and its pid may be reused)
  }
  for (auto& p : processes_) {
    // Collect the exit of each thread we trace, so no ptrace link outlives us.
    // The leader last: its exit is not reported while other threads of its
    // group are left, and those (traced) stay zombies until we wait for them.
    // A process of which we are the real parent (a runtime dumping its own
    // child) stays a zombie for its parent's own wait: WNOWAIT.
    bool ours = real_parent_is_us(p.pid);
    for (auto it = p.threads.rbegin(); it != p.threads.rend(); ++it) {
      auto& t = *it;
      bool keep = ours && t.tid() == p.pid;
      siginfo_t info;
      while (::waitid(P_PID, static_cast<id_t>(t.tid()), &info, WEXITED | __WALL | (keep ? WNOWAIT : 0)) < 0 &&
             errno == EINTR) {
      }
      t.forget();
    }
  }
}

namespace {

// A SIGSTOP queued for the process, or for one of its threads.
bool sigstop_pending(const FrozenProcess& p) {
  constexpr uint64_t bit = 1ull << (SIGSTOP - 1);
  auto pending = [&](const std::string& path, const char* field) {
    auto text = proc::read_file(path);
    if (!text) return false;
    auto value = proc::status_field(*text, field);
    return value && (std::strtoull(value->c_str(), nullptr, 16) & bit);
  };
  if (pending(proc::pid_path(p.pid, "status"), "ShdPnd")) return true;
  for (auto& t : p.threads)
    if (pending(proc::pid_path(p.pid, fmt::format("task/{}/status", t.tid())), "SigPnd")) return true;
  return false;
}

}  // namespace

void TaskTree::release() {
  for (auto p = processes_.rbegin(); p != processes_.rend(); ++p)
    for (auto t = p->threads.rbegin(); t != p->threads.rend(); ++t) t->detach();
  // Detached, they are back in the group stop; only now does SIGCONT end it
  // (sent while they were traced, it would be queued as a signal for them).
  // Not one that someone else stopped meanwhile (a SIGSTOP besides ours, passed
  // on or still pending): it stays stopped, as its sender asked.
  for (auto& p : processes_) {
    if (!p.stopped_by_us) continue;
    p.stopped_by_us = false;
    unsigned stops = 0;
    for (auto& t : p.threads) stops += t.stops_passed_on();
    if (stops <= 1 && !sigstop_pending(p)) ::kill(p.pid, SIGCONT);
    (void)journal_note(fmt::format("cont {}", p.pid));
  }
}

}  // namespace minicriu
