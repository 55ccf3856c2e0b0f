// Restore orchestration: the order of the steps (DESIGN.md, "Restore, step by
// step"), not the details of any of them. Nothing is created before every image
// has been read and validated; until every process said ready and was told to
// go, a failure kills what was created (RestoringTask), so no half-restored
// process is ever left running.

#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <memory>
#include <vector>

#include "base/error.hpp"
#include "base/external.hpp"
#include "base/fault.hpp"
#include "base/log.hpp"
#include "base/mapping.hpp"
#include "fs/fd_table.hpp"
#include "images/checkpoint.hpp"
#include "images/image_dir.hpp"
#include "kinds/kind_set.hpp"
#include "mem/page_protocol.hpp"
#include "mem/page_source_remote.hpp"
#include "mem/lazy_pager.hpp"
#include "mem/page_source.hpp"
#include "net/network_lock.hpp"
#include "restorer/machine.hpp"
#include "restorer/pid_check.hpp"
#include "restorer/premap.hpp"
#include "restorer/process_restore.hpp"
#include "restorer/restore_channel.hpp"
#include "proc/privileges.hpp"
#include "proc/seccomp.hpp"
#include "restorer/tail_unmap.hpp"
#include "restorer/task_builder.hpp"
#include "restorer/validate.hpp"

// After the images' headers: <signal.h> defines a sigmask() macro.
#include <sys/wait.h>

namespace minicriu {

namespace {

// The first fd number above every dumped one (and the soft RLIMIT_NOFILE up to
// the hard one, so that the fds kept there fit).
Result<int> raise_fd_floor(const Checkpoint& c) {
  int floor = 3;
  for (auto& p : c.processes)
    for (auto& f : p.fds) floor = std::max(floor, f.fd() + 1);
  rlimit nofile;
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &nofile);
  }
  return floor;
}

// The bytes of pages the tasks have read back, counted where minicriu sees
// them: in a page shared with every task it makes (MAP_SHARED survives
// clone3 without CLONE_VM; each restored process's blob unmaps it with the
// rest of the restoring program).
class SharedCounter {
 public:
  [[nodiscard]] static Result<SharedCounter> make() {
    ASSIGN_OR_RETURN(Mapping page, Mapping::map(nullptr, sizeof(std::atomic<uint64_t>), PROT_READ | PROT_WRITE,
                                                MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    static_assert(std::atomic<uint64_t>::is_always_lock_free, "shared by processes: no lock may hide inside");
    new (page.get()) std::atomic<uint64_t>(0);
    return SharedCounter(std::move(page));
  }
  std::atomic<uint64_t>* get() const { return page_.get<std::atomic<uint64_t>>(); }

 private:
  explicit SharedCounter(Mapping page) : page_(std::move(page)) {}
  Mapping page_;
};

// Relays a task's warnings until it is ready; its error becomes ours. While
// it waits, tick() runs every 100 ms (the progress of the tree's pages).
Result<rst::Msg> wait_ready(RestoringTask& task, const Logger& log, const std::function<void()>& tick) {
  for (;;) {
    TRY(check_cancelled());
    pollfd pfd{task.channel(), POLLIN, 0};
    int ready = ::poll(&pfd, 1, 100);
    if (ready < 0 && errno != EINTR) return failf_errno("pid {}: waiting on the restore channel", task.pid());
    tick();
    if (ready <= 0) continue;
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

// The network lock a dump kept (connections to peers outside the tree): it
// goes once every restored process runs. A restore that fails before leaves
// it, so the peers still hear nothing and the restore can be tried again.
class KeptNetworkLock {
 public:
  KeptNetworkLock(const img::Inventory& inv, const Logger& log) : log_(log) {
    if (inv.network_lock_table().empty()) return;
    table_ = inv.network_lock_table();
    backend_ = inv.network_lock_backend();
  }
  ~KeptNetworkLock() {
    if (!table_.empty())
      log_.warn("restore failed: the network lock ({} {}) stays, so the connections to peers outside "
                "the tree stay silent for another try; give up on them by deleting it (nftables: `nft "
                "delete table inet {}`)", backend_, table_, table_);
  }
  KeptNetworkLock(const KeptNetworkLock&) = delete;
  KeptNetworkLock& operator=(const KeptNetworkLock&) = delete;

  // Before anything is created: a lock this build cannot remove is refused.
  [[nodiscard]] Status check() const {
    if (table_.empty()) return {};
    auto mode = parse_network_lock_mode(backend_);
    if (!mode || *mode == NetworkLockMode::automatic || *mode == NetworkLockMode::skip)
      return failf("inventory: unknown network lock backend {:?} (table {})", backend_, table_);
    if (!is_network_lock_name(*mode, table_))
      return failf("inventory: the network lock {:?} is not a name minicriu gives its tables; the images "
                   "are damaged", table_);
    return {};
  }

  // The tree runs: its connections may talk again. A failure is a warning
  // (the tree is restored and running), naming what is left behind.
  void unlock() {
    if (table_.empty()) return;
    auto mode = parse_network_lock_mode(backend_);
    if (auto st = network_unlock(*mode, table_, log_); !st)
      log_.warn("the restored tree's TCP connections stay locked: {}", st.error().what());
    table_.clear();
  }

 private:
  const Logger& log_;
  std::string table_, backend_;
};

// restore --page-server: the server is there and serves this very
// checkpoint (the same dump, and for each process the pages its pagemap
// lists), before anything is made.
Status check_page_server(const Checkpoint& c, const pagesrv::Endpoint& where, const std::string& dir,
                         const Logger& log) {
  ASSIGN_OR_RETURN(auto source, RemotePageSource::connect(where.host, where.port));
  ASSIGN_OR_RETURN(img::Inventory inv, source->inventory());
  if (inv.root_pid() != c.inventory.root_pid() || inv.dump_time_unix_ns() != c.inventory.dump_time_unix_ns())
    return failf("the {} serves another checkpoint (root pid {}, dumped at {} ns) than {} (root pid {}, dumped at "
                 "{} ns): give the page server the dump was made to, or restore from its directory",
                 source->describe(), inv.root_pid(), inv.dump_time_unix_ns(), dir, c.inventory.root_pid(),
                 c.inventory.dump_time_unix_ns());
  for (auto& p : c.processes) {
    if (p.entry.zombie()) continue;
    pid_t pid = static_cast<pid_t>(p.entry.pid());
    ASSIGN_OR_RETURN(auto runs, source->runs(pid));
    std::vector<std::pair<uint64_t, uint64_t>> want;
    for (auto& r : p.page_runs) {
      if (!want.empty() && want.back().second == r.start) want.back().second = r.end;
      else want.emplace_back(r.start, r.end);
    }
    if (runs != want)
      return failf("pid {}: the {} holds other pages ({} run(s)) than pagemap-{}.img lists ({} run(s)): the images "
                   "of {} are not of that server's checkpoint",
                   pid, source->describe(), runs.size(), pid, want.size(), dir);
  }
  log.info("the {} serves this checkpoint's pages", source->describe());
  return {};
}

// No process gets credentials the restoring process could not give itself
// (proc/privileges.hpp): checked for the whole tree before anything is made.
Status check_tree_creds(const Checkpoint& c, const img::Creds& caller) {
  for (auto& p : c.processes)
    if (!p.entry.zombie() && p.core.has_creds())
      TRY(check_restored_creds(static_cast<pid_t>(p.entry.pid()), p.core.creds(), caller));
  return {};
}

// restore --lazy: each process's lazy VMAs (premap.hpp lazy_vmas), the lazy
// shared memory objects (mem/lazy_shmem.hpp), and the bytes of the images
// they hold (read on first touch, not now).
struct LazyPlan {
  std::map<pid_t, LazyProcess> processes;
  LazyShmemPlan shmem;
  uint64_t bytes = 0, shmem_bytes = 0;
};
Result<LazyPlan> plan_lazy(const ImageDir& dir, const Checkpoint& c) {
  LazyPlan plan;
  ASSIGN_OR_RETURN(plan.shmem, plan_lazy_shmem(dir, c));
  for (auto& [id, o] : plan.shmem) plan.shmem_bytes += o.lazy_bytes;
  for (const ProcessImages& p : c.processes) {
    if (p.entry.zombie()) continue;
    std::vector<bool> lazy = lazy_vmas(c, p, plan.shmem);
    LazyProcess lp;
    for (int i = 0; i < p.mm.vmas_size(); i++) {
      const img::Vma& v = p.mm.vmas(i);
      if (!lazy[i] || v.kind() != img::VMA_ANON_PRIVATE) continue;
      lp.anon.emplace_back(v.start(), v.end());
      if (v.advice() & (img::ADVICE_WIPEONFORK | img::ADVICE_DONTFORK)) lp.not_in_fork.emplace_back(v.start(), v.end());
    }
    lp.shmem = lazy_shmem_vmas(p, plan.shmem);
    for (auto& run : p.page_runs)
      for (auto& [s, e] : lp.anon)
        if (std::max(s, run.start) < std::min(e, run.end)) plan.bytes += std::min(e, run.end) - std::max(s, run.start);
    if (!lp.anon.empty() || !lp.shmem.empty()) plan.processes[static_cast<pid_t>(p.entry.pid())] = std::move(lp);
  }
  return plan;
}

Result<RestoreResult> restore_tree(const RestoreOptions& options, std::unique_ptr<LazyPager>& pager) {
  Logger log(options.log);
  FaultScope steps(log, options.cancel);
  auto start = std::chrono::steady_clock::now();
  ImageDir dir(options.images_dir);

  ASSIGN_OR_RETURN(auto stand_ins, ExternalStandIns::from_options(options));
  // Without CAP_CHECKPOINT_RESTORE no tree can come back with its pids.
  ASSIGN_OR_RETURN(img::Creds caller, own_creds());
  TRY(check_may_restore(caller));
  TRY(fault_point("restore/load"));
  std::optional<pagesrv::Endpoint> page_server;
  if (!options.page_server.empty()) {
    ASSIGN_OR_RETURN(auto where, pagesrv::parse_endpoint(options.page_server, "--page-server"));
    page_server = where;
  }
  ASSIGN_OR_RETURN(Checkpoint ckpt, load_checkpoint(dir, page_server.has_value()));
  KeptNetworkLock net_lock(ckpt.inventory, log);
  TRY(net_lock.check());
  KindSet kinds = KindSet::make();
  ASSIGN_OR_RETURN(MachineInfo machine, probe_machine());
  TRY(with_context(validate_checkpoint(ckpt, machine, kinds),
                   fmt::format("{} cannot be restored here", dir.path())));
  TRY(check_restorer_not_under_seccomp());
  if (page_server) TRY(check_page_server(ckpt, *page_server, dir.path(), log));
  TRY(check_tree_creds(ckpt, caller));
  RestoreEnv env{options, dir, ckpt, log};
  // Every kind reads and checks its own images now.
  TRY(kinds.each("load", [&](Kind& k) { return k.load(env); }));
  log.info("images of {} process(es) read and valid", ckpt.processes.size());
  TRY(check_ids_free(ckpt));
  // What stands in for objects that were outside the tree: asked for before
  // anything is made, so a missing one costs nothing. An --inherit-fd that
  // names none of them is a typo, refused first.
  std::set<std::string> external;
  kinds.each_void([&](Kind& k) { k.list_external(env, external); });
  TRY(stand_ins.check_used(external));
  TRY(kinds.each("take_stand_ins", [&](Kind& k) { return k.take_stand_ins(stand_ins, env); }));

  // What the whole tree shares is made here, before its first process, above
  // every fd number any of them uses: each process inherits it all.
  ASSIGN_OR_RETURN(env.fd_floor, raise_fd_floor(ckpt));
  TRY(kinds.each("create_shared", [&](Kind& k) { return k.create_shared(env); }));
  std::set<uint32_t> held;
  kinds.each_void([&](Kind& k) { k.list_held(env, held); });
  ASSIGN_OR_RETURN(SharedFiles shared, open_shared_files(ckpt, kinds, env.fd_floor, held));
  env.shared_file = [&shared](uint32_t id) -> Result<int> {
    int fd = shared.get(id);
    if (fd < 0) return failf("file {} is held by no object of the images and was not opened", id);
    return fd;
  };
  ASSIGN_OR_RETURN(SharedCounter pages_restored, SharedCounter::make());
  uint64_t page_bytes = 0;
  for (auto& p : ckpt.processes) page_bytes += p.pages_file_size;
  // restore --lazy: the pager serves faults from before the first process
  // is made (the kernel itself may touch lazy memory in the blob: rseq).
  LazyPlan lazy;
  if (options.lazy) {
    ASSIGN_OR_RETURN(lazy, plan_lazy(dir, ckpt));
    page_bytes -= std::min(page_bytes, lazy.bytes);
    std::vector<pid_t> pids;
    for (auto& p : ckpt.processes)
      if (!p.entry.zombie()) pids.push_back(static_cast<pid_t>(p.entry.pid()));
    // restore --lazy --page-server: post-copy, pages fetched on first touch.
    ASSIGN_OR_RETURN(auto source, page_server ? connect_page_server(page_server->host, page_server->port)
                                              : open_local_pages(dir.path()));
    ASSIGN_OR_RETURN(pager, LazyPager::start(std::move(source), std::move(lazy.processes), lazy.shmem,
                                             std::move(pids), env.fd_floor, log));
    log.info("lazy restore: {} MiB of pages come on first touch, and {} MiB of {} shared memory object(s)",
             lazy.bytes >> 20, lazy.shmem_bytes >> 20, lazy.shmem.size());
  }
  ProgressMeter progress(log, "restore", static_cast<pid_t>(ckpt.inventory.root_pid()), page_bytes);
  auto tick = [&] { progress.set(pages_restored.get()->load(std::memory_order_relaxed)); };
  TreeRestore tree;
  tree.pages_restored = pages_restored.get();
  tree.checkpoint = &ckpt;
  tree.kinds = &kinds;
  tree.shared = &shared;
  if (page_server) {
    tree.page_server_host = page_server->host;
    tree.page_server_port = page_server->port;
  }
  tree.lazy_socket = pager ? pager->task_socket() : -1;
  tree.lazy_shmem = &lazy.shmem;
  std::map<pid_t, ChannelPair> channels;
  for (const ProcessImages& p : ckpt.processes) {
    if (p.entry.zombie()) continue;
    ASSIGN_OR_RETURN(auto ch, make_channel());
    ch.child = move_fd_above(std::move(ch.child), env.fd_floor);
    tree.channels[static_cast<pid_t>(p.entry.pid())] = ch.child.get();
    channels.emplace(static_cast<pid_t>(p.entry.pid()), std::move(ch));
  }

  // The root; every other process is created by its restored parent.
  const ProcessImages& root = ckpt.processes.front();
  pid_t root_pid = static_cast<pid_t>(root.entry.pid());
  std::vector<RestoringTask> tasks;
  std::vector<const ProcessImages*> restored;
  {
    TRY(fault_point("restore/create-root"));
    ASSIGN_OR_RETURN(auto task, create_task(root, std::move(channels.at(root_pid)),
                                            [&](int) { restore_task(tree, root); }));
    tasks.push_back(std::move(task));
    restored.push_back(&root);
    // The tree holds the pager's socket now (each task closes it once it sent
    // its uffd): the pager sees its end when every task did.
    if (pager) pager->close_task_socket();
  }
  for (const ProcessImages& p : ckpt.processes) {
    pid_t pid = static_cast<pid_t>(p.entry.pid());
    if (p.entry.zombie() || pid == root_pid) continue;
    ChannelPair& ch = channels.at(pid);
    ch.child.reset();  // the tree holds it now
    tasks.emplace_back(pid, std::move(ch.parent));
    restored.push_back(&p);
  }
  log.info("{} process(es) being restored", tasks.size());

  std::vector<std::unique_ptr<TailUnmapper>> tails;
  for (size_t i = 0; i < tasks.size(); i++) {
    TRY(fault_point("restore/wait-ready"));
    ASSIGN_OR_RETURN(rst::Msg ready, wait_ready(tasks[i], log, tick));
    std::vector<pid_t> tids(restored[i]->entry.tids().begin(), restored[i]->entry.tids().end());
    auto tail = TailUnmapper::attach(tasks[i].pid(), tids, ready);
    // The blob gives the threads their seccomp state after go, and only
    // threads traced with it suspended can then leave the blob.
    if (has_seccomp(restored[i]->core) && !(tail && (*tail)->suspends_seccomp()))
      return failf("pid {}: its threads run under seccomp, and minicriu cannot trace them with "
                   "PTRACE_O_SUSPEND_SECCOMP until they leave the restorer ({}); restore as root outside any "
                   "seccomp sandbox", tasks[i].pid(), tail ? "not permitted" : tail.error().what());
    if (!tail) log.warn("the restorer tail will stay mapped: {}", tail.error().what());
    tails.push_back(tail ? std::move(*tail) : nullptr);
  }
  tick();
  progress.finish();
  log.info("every process is ready; resuming");
  // Each kind puts its last touches (ghosts become ghosts again, connections
  // leave repair mode, queues carrying files and credentials are filled);
  // then every holder has its files: our own copies of what the tree shares
  // must not keep it open.
  TRY(kinds.each("resume", [&](Kind& k) { return k.resume(env); }));
  env.shared_file = nullptr;
  shared.fds.clear();
  for (auto& t : tasks) {
    TRY(fault_point("restore/go"));
    TRY(send_go(t.channel()));
  }
  // From here the tree runs on its own: nothing below may kill it.
  for (auto& t : tasks) t.release();
  net_lock.unlock();
  kinds.each_void([&](Kind& k) { k.after_resume(env); });
  for (auto& tail : tails) {
    if (!tail) continue;
    if (auto st = tail->finish(); !st) log.warn("the restorer tail stays mapped: {}", st.error().what());
    tail.reset();
  }
  // A process stopped at the dump is stopped again (after the tails: they
  // are finished under ptrace).
  for (size_t i = 0; i < tasks.size(); i++)
    if (restored[i]->entry.stopped()) ::kill(tasks[i].pid(), SIGSTOP);
  for (auto& t : tasks) {
    if (auto closed = wait_closed(t.channel()); !closed) log.warn("{}", closed.error().what());
    t.close_channel();
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - start).count();
  // The background prefetch starts once the restore's own last steps are
  // done: until then the pager serves faults only, at once.
  if (pager) pager->prefetch();
  RestoreResult result;
  result.root_pid = static_cast<pid_t>(ckpt.inventory.root_pid());
  log.info("restored pid {} in {} ms", result.root_pid, ms);
  if (options.on_running) options.on_running(result.root_pid);
  if (options.detach && pager) {
    // The pager goes on in a process of its own; without one, here.
    if (auto st = pager->detach(); !st) {
      log.warn("lazy restore: {}; the pages are served until they are all in", st.error().what());
      TRY(pager->finish());
    }
    return result;
  }
  if (options.detach) return result;
  // The tree runs: a cancel now is the signal's for the tree, passed on to
  // its root (as a shell would), once.
  int status = 0;
  bool passed_on = false;
  while (::waitpid(result.root_pid, &status, 0) < 0) {
    if (errno != EINTR) return failf_errno("waiting for the restored pid {}", result.root_pid);
    if (options.cancel && options.cancel->requested() && !passed_on) {
      passed_on = true;
      if (int sig = options.cancel->signal(); sig > 0) ::kill(result.root_pid, sig);
    }
  }
  result.exit_status = status;
  // The pager has served every page, or killed the tree (its error).
  if (pager) TRY(pager->finish());
  return result;
}

}  // namespace

Result<RestoreResult> restore(const RestoreOptions& options) {
  std::unique_ptr<LazyPager> pager;
  auto r = restore_tree(options, pager);
  // A lazy restore whose pager failed (and killed the tree) failed for that
  // reason, whichever step saw the tree die: its error is the one line.
  if (!r && pager) {
    pager->stop();
    if (auto st = pager->finish(); !st) return std::unexpected(st.error());
  }
  return r;
}

}  // namespace minicriu
