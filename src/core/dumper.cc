// Dump orchestration: the order of the steps (DESIGN.md, "Dump, step by step"),
// not the details of any kind. The kinds are walked as a list, phase by phase
// (kinds/kind.hpp); one failure guard sees that every early return leaves the
// tree exactly as it was: images removed, kinds released before the tree runs
// again, every thread detached, the network lock gone.
#include <fcntl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <cstring>
#include <memory>
#include <future>
#include <system_error>
#include <thread>

#include "arch/x86_64/cpu.hpp"
#include "base/clock.hpp"
#include "base/cpus.hpp"
#include "base/page.hpp"
#include "base/error.hpp"
#include "base/external.hpp"
#include "base/fault.hpp"
#include "base/journal.hpp"
#include "base/log.hpp"
#include "base/version.hpp"
#include "core/guardian.hpp"
#include "core/journal_replay.hpp"
#include "fs/fd_table.hpp"
#include "images/checkpoint.hpp"
#include "images/image_chain.hpp"
#include "images/image_dir.hpp"
#include "images/image_io.hpp"
#include "images/image_set.hpp"
#include "kinds/kind_set.hpp"
#include "mem/background_copy.hpp"
#include "mem/page_dump.hpp"
#include "mem/page_upload.hpp"
#include "mem/write_tracking.hpp"
#include "mem/vma.hpp"
#include "minicriu.pb.h"
#include "net/network_lock.hpp"
#include "parasite/parasite_session.hpp"
#include "proc/process_state.hpp"
#include "proc/sched_attr.hpp"
#include "proc/seccomp.hpp"
#include "ptrace/task_tree.hpp"
#include "ptrace/thread_core.hpp"

namespace minicriu {

namespace {

using Clock = std::chrono::steady_clock;

// The images of one process as a restore reads them, and its page image
// while it is being written.
struct DumpedProcess : ProcessImages {
  std::unique_ptr<RawImageFile> pages;
  // Its page files of lanes 1.. (PagemapEntry.lane): a worker's each.
  std::vector<std::unique_ptr<RawImageFile>> lanes;
  // A pre-dump: its VMAs and tracking, for its pages once the tree runs.
  std::vector<VmaInfo> vmas;
  std::optional<PageChain> chain;
  // A background dump: the pages copied once the tree runs (after pages:
  // it writes into it, and goes first).
  std::unique_ptr<BackgroundCopy> background;
};

// Bytes a stream image of msgs takes: its head, and each message behind its
// length.
template <typename M>
uint64_t stream_size(const std::vector<M>& msgs) {
  uint64_t n = 16;
  for (auto& m : msgs) n += 4 + m.ByteSizeLong();
  return n;
}

class Dumper {
 public:
  Dumper(const DumpOptions& options, ExternalPolicy external, std::unique_ptr<NetworkLock> net_lock)
      : options_(options), external_(std::move(external)), log_(options.log), dir_(options.images_dir),
        net_lock_(std::move(net_lock)), kinds_(KindSet::make()),
        env_{options_, dir_, log_, external_, net_lock_.get()}, files_(kinds_, env_), images_(dir_) {}

  Result<DumpStats> run();
  // After a failed dump (not a pre-dump: its arming already cleared what was
  // written since the parent), the library's tracking is the caller's again.
  // (A holder is made again for the parent images: a retry may still use it.)
  void give_back_tracking() {
    if (options_.pre_dump || !tracking_ok_ || tracking_.empty()) return;
    if (options_.tracking) {
      if (options_.tracking->held.empty()) {
        tracking_.images_dir = parent_dir_;
        options_.tracking->held = std::move(tracking_);
      }
      return;
    }
    if (auto st = spawn_tracking_holder(parent_dir_, std::move(tracking_),
                                        std::chrono::seconds(options_.tracking_timeout_s), log_);
        !st)
      log_.info("the write tracking since {} is lost: {}", parent_dir_, st.error().what());
  }

 private:
  class FailureGuard;

  [[nodiscard]] Status dump_tree(TaskTree& tree);
  [[nodiscard]] Status dump_process(FrozenProcess& proc, DumpedProcess& out, const ParentMemory& parent);
  [[nodiscard]] Status run_parasite(FrozenProcess& proc, const proc::Stat& stat, std::vector<VmaInfo>& vmas,
                                    const std::vector<FdListing>& fds, DumpedProcess& out,
                                    const ParentMemory& parent);
  [[nodiscard]] Status make_page_lanes(pid_t pid, const std::vector<VmaInfo>& vmas, bool allowed,
                                       DumpedProcess& out, std::vector<int>& fds);
  [[nodiscard]] Status take_process_state(FrozenProcess& proc, const proc::Stat& stat, std::vector<VmaInfo>& vmas,
                                          const std::vector<FdListing>& fds, DumpedProcess& out,
                                          ParasiteSession& parasite);
  [[nodiscard]] Status check_tree(TaskTree& tree);
  [[nodiscard]] Status refuse_destructive() const;
  [[nodiscard]] Status release_running(TaskTree& tree);
  void read_early_maps();
  [[nodiscard]] Status check_early_maps();
  [[nodiscard]] Status write_images(pid_t root);
  [[nodiscard]] Status write_process_images();
  [[nodiscard]] Status commit_kinds(bool destructive);
  [[nodiscard]] Result<NetworkLock::Kept> keep_network_lock();
  [[nodiscard]] Status load_parent();
  [[nodiscard]] Result<PageChain> page_chain(pid_t pid, FrozenProcess& proc, std::vector<VmaInfo>& vmas,
                                             ParasiteSession& parasite);
  [[nodiscard]] Status write_pre_dump(pid_t root);
  [[nodiscard]] Status connect_page_server();
  [[nodiscard]] Status upload_images();
  int uffd_dev();
  [[nodiscard]] Status register_background(pid_t pid, std::vector<VmaInfo>& vmas, ParasiteSession& parasite,
                                           PageChain& chain, UniqueFd& uffd, std::vector<RemoteRange>& ranges);
  [[nodiscard]] Status copy_background();
  [[nodiscard]] Status pre_arm_background();
  [[nodiscard]] Status settle_background();
  [[nodiscard]] Result<bool> take_prearmed(pid_t pid, const std::vector<VmaInfo>& vmas,
                                           std::vector<std::pair<uint64_t, uint64_t>>& runs);
  [[nodiscard]] Status run_pre_dump();
  [[nodiscard]] Status pre_dump_pages();
  void keep_tracking();
  img::Inventory inventory(pid_t root, const NetworkLock::Kept& kept) const;
  void kill_tree(TaskTree& tree);
  void release_kinds(TreeFate fate);
  void remove_network_lock(const char* when);

  const DumpOptions& options_;
  ExternalPolicy external_;
  Logger log_;
  ImageDir dir_;
  // Before the kinds (whose env points to it); the tree, a local of run(), is
  // released before the lock goes, so a failed dump's connections wake up
  // only once nothing of ours holds them any more.
  std::unique_ptr<NetworkLock> net_lock_;
  KindSet kinds_;
  DumpEnv env_;
  FileRegistry files_;
  ImageSet images_;
  std::vector<DumpedProcess> processes_;
  // The page copies of the frozen tree (into local images), done by its
  // workers while the next processes are dumped; after processes_, so gone
  // (joined) before their page images.
  std::unique_ptr<CopyPool> copies_;
  DumpStats stats_;
  uint32_t xsave_size_ = 0;
  bool released_ = false;
  NetworkLock::Kept kept_lock_;
  Clock::time_point frozen_at_;
  // --prev-images-dir: the parent images, and whether the write tracking
  // since them is still there (taken from its holder).
  std::optional<ChainLink> parent_;
  std::string parent_dir_;
  bool tracking_ok_ = false;
  WriteTracking tracking_;
  TreeIdentity identity_;
  UniqueFd uffd_dev_;
  bool uffd_dev_tried_ = false;
  // A dump that lets the tree run: smaps read before the freeze, and the
  // processes whose VMAs were taken from it (checked after the release).
  EarlyMaps early_;
  std::vector<pid_t> early_used_;
  // A background dump armed before its freeze: each process's copy, its
  // memory write-protected and listed with the tree running.
  std::map<pid_t, std::unique_ptr<BackgroundCopy>> prearmed_;
  // --page-server: the connection the pages (then the other images) go to.
  std::optional<PageUpload> upload_;
};

// The failure path of a dump, on every early return once the tree is frozen:
// what was written goes, the kinds undo what they changed in the tree's
// objects, the tree runs on, the lock goes, the kinds clean up.
class Dumper::FailureGuard {
 public:
  FailureGuard(Dumper& d, TaskTree& tree) : d_(d), tree_(tree) {}
  FailureGuard(const FailureGuard&) = delete;
  FailureGuard& operator=(const FailureGuard&) = delete;
  void* operator new(size_t) = delete;
  ~FailureGuard() {
    if (dismissed_) return;
    FaultPause no_second_fault;
    d_.copies_.reset();  // no worker writes any more
    d_.images_.remove_all();
    d_.processes_.clear();  // drops unfinished page files
    d_.release_kinds(TreeFate::runs);
    tree_.release();
    d_.remove_network_lock("dump failed");
    d_.kinds_.each_void([&](Kind& k) { k.finish(false, d_.env_); });
    d_.log_.info("dump failed; the tree was released and keeps running");
  }
  void dismiss() { dismissed_ = true; }

 private:
  Dumper& d_;
  TaskTree& tree_;
  bool dismissed_ = false;
};

// What the parasite tells of a process besides its memory: misc state, the
// fds, and each kind's part of the process and of its VMAs.
Status Dumper::take_process_state(FrozenProcess& proc, const proc::Stat& stat, std::vector<VmaInfo>& vmas,
                                  const std::vector<FdListing>& fds, DumpedProcess& out, ParasiteSession& parasite) {
  ASSIGN_OR_RETURN(auto misc, parasite.get_misc());
  apply_parasite_misc(misc, out.core, out.mm);

  ASSIGN_OR_RETURN(out.fds, dump_fd_table(proc.pid, fds, parasite, files_));
  log_.info("pid {}: {} fd(s)", proc.pid, out.fds.size());
  // After the fds: a ghost file held by an fd is named by its fd in messages.
  for (auto& v : vmas) {
    TRY(kinds_.each("take_vma", [&](Kind& k) { return k.take_vma(proc.pid, v, env_); }));
    if (!v.deleted) continue;
    bool writable_shared = v.maps.shared && v.maps.write;
    ASSIGN_OR_RETURN(uint32_t id, files_.add_deleted_mapping(proc.pid, v.vma.start(), v.vma.end(),
                                                             writable_shared));
    v.vma.set_file_id(id);
  }
  ProcessDump p{proc.pid, stat, out.entry, out.core, out.mm, parasite};
  TRY(kinds_.each("take_process", [&](Kind& k) { return k.take_process(p, env_); }));
  return {};
}

Status Dumper::run_parasite(FrozenProcess& proc, const proc::Stat& stat, std::vector<VmaInfo>& vmas,
                            const std::vector<FdListing>& fds, DumpedProcess& out,
                            const ParentMemory& parent) {
  // Armed before the freeze: its pages are known before the parasite's
  // work writes any (taken first).
  std::optional<std::vector<std::pair<uint64_t, uint64_t>>> prearmed_runs;
  if (options_.background && prearmed_.count(proc.pid)) {
    std::vector<std::pair<uint64_t, uint64_t>> runs;
    ASSIGN_OR_RETURN(bool taken, take_prearmed(proc.pid, vmas, runs));
    if (taken) prearmed_runs = std::move(runs);
  }
  ASSIGN_OR_RETURN(uint64_t site, find_syscall_site(vmas));
  ASSIGN_OR_RETURN(auto memory, TraceeMemory::open(proc.pid));
  ParasiteSession parasite(proc, memory, RemotePtr<>(site), log_);
  TRY(parasite.infect());
  for (size_t i = 0; i < proc.threads.size() && !options_.pre_dump; i++) {
    ASSIGN_OR_RETURN(auto self, parasite.thread_self_state(proc.threads[i]));
    img::ThreadCore* t = out.core.mutable_threads(static_cast<int>(i));
    t->mutable_sigaltstack()->set_sp(self.altstack_sp.addr());
    t->mutable_sigaltstack()->set_flags(self.altstack_flags);
    t->mutable_sigaltstack()->set_size(self.altstack_size);
    t->set_clear_child_tid(self.clear_child_tid.addr());
  }
  TRY(parasite.start());
  log_.info("pid {}: parasite running", proc.pid);
  // A pre-dump takes memory only: the rest is the final dump's.
  if (!options_.pre_dump) TRY(take_process_state(proc, stat, vmas, fds, out, parasite));

  ASSIGN_OR_RETURN(PageChain chain, page_chain(proc.pid, proc, vmas, parasite));
  if (options_.pre_dump) {
    // Its tracking registered: the pages are scanned (armed) and read once
    // the tree runs again (pre_dump_pages).
    ASSIGN_OR_RETURN(auto pages, RawImageFile::create(dir_.pages(proc.pid)));
    out.pages = std::make_unique<RawImageFile>(std::move(pages));
    out.chain = std::move(chain);
    TRY(parasite.cure());
    log_.info("pid {}: parasite cured", proc.pid);
    return {};
  }
  UniqueFd bg_uffd;
  std::vector<RemoteRange> bg_ranges;
  if (options_.background && !prearmed_runs)
    TRY(register_background(proc.pid, vmas, parasite, chain, bg_uffd, bg_ranges));
  if (prearmed_runs) {
    chain.deferred_runs = &*prearmed_runs;
    for (auto& r : prearmed_.at(proc.pid)->ranges()) chain.deferred.push_back(r.start.addr());
  }
  int pages_fd = -1;
  std::vector<int> lane_fds;  // the page files of lanes 1..
  BeforePages before;
  if (upload_) {
    // Into the connection, a header before each batch.
    TRY(upload_->begin_process(proc.pid));
    pages_fd = upload_->fd();
    before = [this, pid = proc.pid](std::span<const std::pair<uint64_t, uint64_t>> runs) {
      return upload_->begin_batch(pid, runs);
    };
  } else {
    ASSIGN_OR_RETURN(auto pages, RawImageFile::create(dir_.pages(proc.pid)));
    out.pages = std::make_unique<RawImageFile>(std::move(pages));
    pages_fd = out.pages->fd();
    TRY(make_page_lanes(proc.pid, vmas, !bg_uffd && !prearmed_runs, out, lane_fds));
  }
  auto t0 = Clock::now();
  ASSIGN_OR_RETURN(auto result,
                   with_context(dump_pages(proc.pid, vmas, &parasite, memory, pages_fd, log_, parent, chain, before,
                                           copies_.get(), lane_fds),
                                fmt::format("pid {}: dumping pages {} {}", proc.pid, upload_ ? "to the" : "into",
                                            upload_ ? upload_->describe() : dir_.path())));
  double secs = static_cast<double>(ns_since(t0)) / 1e9;
  log_.info("pid {}: {} page(s) ({} MiB) in {:.3f} s{}", proc.pid, result.pages,
            (result.pages * kPageSize) >> 20, secs,
            result.spliced_pages
                ? fmt::format(" ({} MiB vmsplice'd by the parasite into {} page files)",
                              (result.spliced_pages * kPageSize) >> 20, lane_fds.size() + 1)
                : copies_ ? " (listed; copied by the workers meanwhile)" : "");
  if (!result.scan_ioctl && (options_.pre_dump || parent_) && !stats_.write_tracked)
    log_.info("pid {}: no PAGEMAP_SCAN ioctl here (Linux 6.7): no write tracking, every page is dumped", proc.pid);
  if (result.pages_in_parent || result.pages_changed)
    log_.info("pid {}: {} page(s) unchanged since the parent images, {} written since", proc.pid,
              result.pages_in_parent, result.pages_changed);
  for (auto& v : vmas)
    if (v.vma.tracked()) stats_.write_tracked = true;
  stats_.pages_dumped += result.pages;
  stats_.pages_in_parent += result.pages_in_parent;
  stats_.pages_changed += result.pages_changed;
  if (bg_uffd || prearmed_runs) {
    std::vector<DeferredRun> runs;
    uint64_t offset = result.deferred_offset;
    for (size_t i = result.deferred_first_entry; i < result.entries.size(); i++) {
      auto& e = result.entries[i];
      if (e.in_parent()) break;
      runs.push_back({e.vaddr(), e.nr_pages(), offset});
      offset += uint64_t{e.nr_pages()} * kPageSize;
    }
    log_.info("pid {}: {} MiB of private anonymous memory write-protected, to be copied once it runs; {} MiB "
              "copied while frozen (file-backed private pages, memory that is not readable or is executable{})",
              proc.pid, (result.deferred_pages * kPageSize) >> 20,
              ((result.pages - result.deferred_pages) * kPageSize) >> 20,
              parent_ ? ", memory tracked since the parent images" : "");
    if (prearmed_runs) {
      auto it = prearmed_.find(proc.pid);
      TRY(it->second->start_copy(out.pages->fd(), std::move(runs)));
      out.background = std::move(it->second);
      prearmed_.erase(it);
    } else {
      // Protected only now, its list of pages made: the cure's remote
      // syscalls may already write (rseq), and the handler answers.
      ASSIGN_OR_RETURN(out.background, BackgroundCopy::arm(proc.pid, std::move(bg_uffd), out.pages->fd(),
                                                           std::move(runs), bg_ranges, log_));
    }
  }
  out.pagemap = std::move(result.entries);
  TRY(parasite.cure());
  log_.info("pid {}: parasite cured", proc.pid);
  return {};
}

Status Dumper::dump_process(FrozenProcess& proc, DumpedProcess& out, const ParentMemory& parent) {
  pid_t pid = proc.pid;
  ASSIGN_OR_RETURN(auto stat_text, proc::read_file(proc::pid_path(pid, "stat")));
  ASSIGN_OR_RETURN(auto stat, proc::parse_stat(stat_text));
  out.entry.set_pid(static_cast<uint32_t>(pid));
  out.entry.set_ppid(static_cast<uint32_t>(proc.ppid));
  out.entry.set_pgid(static_cast<uint32_t>(stat.pgrp));
  out.entry.set_sid(static_cast<uint32_t>(stat.session));
  if (proc.zombie) {
    out.entry.set_zombie(true);
    out.entry.set_exit_status(static_cast<uint32_t>(proc.exit_status));
    out.entry.add_tids(static_cast<uint32_t>(pid));
    return {};
  }
  for (auto& t : proc.threads) out.entry.add_tids(static_cast<uint32_t>(t.tid()));
  out.entry.set_stopped(proc.leader().group_stopped());

  bool from_early = false;
  bool prearmed = prearmed_.count(pid) > 0;
  ASSIGN_OR_RETURN(auto vmas,
                   collect_vmas(pid, VmaSource{.wp_is_ours = (tracking_ok_ && tracking_.uffds.count(pid)) || prearmed,
                                               .missing_is_ours = prearmed,
                                               .early = early_.of(pid),
                                               .log = &log_,
                                               .from_early = &from_early}));
  if (from_early) early_used_.push_back(pid);
  log_.info("pid {}: {} vma(s){}", pid, vmas.size(), from_early ? " (smaps read before the freeze)" : "");
  stats_.vmas += vmas.size();
  if (options_.pre_dump) {
    // Memory only: the rest is the final dump's; the pages once it runs.
    TRY(run_parasite(proc, stat, vmas, {}, out, parent));
    out.vmas = std::move(vmas);
    return {};
  }
  ASSIGN_OR_RETURN(auto fds, list_fds(pid));
  TRY(dump_proc_state(pid, stat, out.core, out.mm));
  ASSIGN_OR_RETURN(uint32_t cwd, files_.add_link(pid, "cwd"));
  ASSIGN_OR_RETURN(uint32_t root, files_.add_link(pid, "root"));
  ASSIGN_OR_RETURN(uint32_t exe, files_.add_link(pid, "exe"));
  out.core.set_cwd_file_id(cwd);
  out.core.set_root_file_id(root);
  out.mm.set_exe_file_id(exe);

  for (auto& t : proc.threads) {
    ASSIGN_OR_RETURN(auto core, with_context(dump_thread_core(t), fmt::format("thread {}", t.tid())));
    if (xsave_size_ == 0) xsave_size_ = static_cast<uint32_t>(core.xsave().size());
    *out.core.add_threads() = std::move(core);
  }
  // Before any code of ours runs in a thread: a thread under seccomp that
  // we could not seize with its filters suspended is refused here.
  TRY(dump_seccomp(pid, proc.threads, out.core));
  TRY(dump_sched(pid, out.core));
  ASSIGN_OR_RETURN(auto shared_pending, peek_pending_signals(pid, true));
  for (auto& s : shared_pending) *out.core.add_shared_pending() = std::move(s);
  log_.info("pid {}: registers and xsave of {} thread(s)", pid, proc.threads.size());

  TRY(run_parasite(proc, stat, vmas, fds, out, parent));
  for (auto& v : vmas) *out.mm.add_vmas() = std::move(v.vma);
  return {};
}

Status Dumper::dump_tree(TaskTree& tree) {
  for (auto& p : tree.processes())
    for (auto& t : p.threads) env_.tree_tids.push_back(t.tid());
  processes_.resize(tree.processes().size());
  // Pages into local images: copied by workers of their own while the next
  // processes are dumped (the ptrace work stays on this thread).
  if (!upload_ && !options_.pre_dump) copies_ = std::make_unique<CopyPool>(std::min(cpus_allowed(), 4u), &log_);
  for (size_t i = 0; i < processes_.size(); i++) {
    // Parents come first: a child's memory still shared with its parent is
    // found against the parent's, already dumped and still frozen.
    ParentMemory parent;
    for (size_t j = 0; j < i; j++)
      if (tree.processes()[j].pid == tree.processes()[i].ppid && !tree.processes()[j].zombie)
        parent = ParentMemory{tree.processes()[j].pid, &processes_[j].mm};
    TRY(fault_point("dump/process"));
    TRY(dump_process(tree.processes()[i], processes_[i], parent));
  }
  if (copies_) {
    auto t0 = Clock::now();
    TRY(with_context(copies_->wait(), fmt::format("dumping pages into {}", dir_.path())));
    log_.info("pages of {} process(es) copied by {} worker(s), {:.3f} s after the last one's scan",
              processes_.size(), copies_->workers(), static_cast<double>(ns_since(t0)) / 1e9);
    copies_.reset();
  }
  stats_.processes = static_cast<unsigned>(tree.processes().size());
  stats_.threads = tree.thread_count();
  stats_.page_bytes = stats_.pages_dumped * kPageSize;
  return {};
}

Status Dumper::check_tree(TaskTree& tree) {
  DumpTree view;
  for (auto& p : tree.processes()) view.pids.insert(p.pid);
  for (auto& p : processes_) view.processes.push_back(&p.entry);
  return kinds_.each("check", [&](Kind& k) { return k.check(view, env_); });
}

// A gated dump (DumpOptions::commit_gate) must leave the tree as it was when
// the gate says no, after every image is written: a destructive step would
// already have consumed application state by then.
Status Dumper::refuse_destructive() const {
  std::string kinds;
  for (auto& k : kinds_.kinds())
    if (k->is_destructive() && k->destructive_room(env_) > 0)
      kinds += (kinds.empty() ? "" : ", ") + std::string(k->name());
  if (kinds.empty()) return {};
  return failf("pid {}: the dump of its {} would take state from the application (connections not yet "
               "accepted, accepted to read their data), which cannot be undone if the coordinator then "
               "says no, so a coordinated dump refuses it; let the application accept them, then dump again",
               options_.pid, kinds);
}

void Dumper::release_kinds(TreeFate fate) {
  if (released_) return;
  released_ = true;
  kinds_.each_void([&](Kind& k) { k.release(fate, env_); });
}

// A dump that lets the tree run reads its smaps before the freeze
// (mem/vma.hpp, EarlyMaps): their page walk costs the tree no frozen time.
// A dump that kills it reads them frozen (the tree never runs again to
// check them against).
void Dumper::read_early_maps() {
  if (!options_.leave_running && !options_.pre_dump) return;
  auto t0 = Clock::now();
  early_ = EarlyMaps::read(options_.pid);
  log_.info("smaps of {} process(es) read before the freeze in {:.3f} s", early_.smaps.size(),
            static_cast<double>(ns_since(t0)) / 1e9);
}

// After the release: the flags taken from the early smaps are still those of
// the mappings (a pre-dump's VMA flags are not restored: not checked).
Status Dumper::check_early_maps() {
  if (options_.pre_dump) return {};
  for (pid_t pid : early_used_)
    if (auto* e = early_.of(pid)) TRY(check_flags_unchanged(pid, *e));
  early_ = EarlyMaps{};
  return {};
}

// Every page is in the page images now (copied into the page cache), so a
// tree that stays may run again before the images are synced.
Status Dumper::release_running(TaskTree& tree) {
  release_kinds(TreeFate::runs);
  tree.release();
  stats_.frozen_ns = ns_since(frozen_at_);
  log_.info("tree released after {:.3f} s frozen, left running", static_cast<double>(stats_.frozen_ns) / 1e9);
  // Running again: its connections must talk again (out of repair mode
  // first). A lock we cannot remove would leave them silent: the dump fails.
  if (auto removed = net_lock_->remove(); !removed)
    return std::unexpected(removed.error().context("after the dump, removing the network lock"));
  return {};
}

// A tree about to be killed whose connections reach peers outside it: the
// peers must hear nothing (no RST) until the restore, which removes the lock.
Result<NetworkLock::Kept> Dumper::keep_network_lock() {
  if (options_.leave_running || !net_lock_->needs_keeping()) return NetworkLock::Kept{};
  TRY(journal_note(fmt::format("nft {} {}", network_lock_mode_name(net_lock_->mode()), net_lock_->table())));
  ASSIGN_OR_RETURN(auto kept, net_lock_->keep());
  if (kept.table != net_lock_->table())
    TRY(journal_note(fmt::format("nft {} {}", network_lock_mode_name(kept.mode), kept.table)));
  log_.info("network lock: {} {} stays until the restore", network_lock_mode_name(kept.mode), kept.table);
  return kept;
}

// After the dump, whatever its outcome, once the tree is released or killed.
// (TCP sockets must be out of repair mode before the lock goes: the peer's
// packets must never reach a socket in repair.)
void Dumper::remove_network_lock(const char* when) {
  std::string table = net_lock_->table();
  auto st = net_lock_->remove();
  if (st && !table.empty()) (void)journal_note(fmt::format("nft-gone {}", table));
  if (!st)
    log_.warn("{}: the network lock {} could not be removed: {}; delete it by hand (nftables: `nft delete "
              "table inet {}`), or the tree's connections stay silent", when, net_lock_->table(),
              st.error().what(), net_lock_->table());
}

Status Dumper::write_process_images() {
  std::vector<img::ProcessEntry> pstree;
  for (auto& p : processes_) {
    pid_t pid = static_cast<pid_t>(p.entry.pid());
    pstree.push_back(p.entry);
    if (p.entry.zombie()) continue;
    TRY(images_.write(dir_.core(pid), ImageKind::core, std::vector<img::ProcessCore>{p.core}));
    TRY(images_.write(dir_.mm(pid), ImageKind::mm, std::vector<img::MmCore>{p.mm}));
    TRY(images_.write(dir_.pagemap(pid), ImageKind::pagemap, p.pagemap));
    TRY(images_.write(dir_.fdinfo(pid), ImageKind::fdinfo, p.fds));
    if (p.pages) TRY(images_.commit(*p.pages));  // none: they went to the page server
    for (auto& lane : p.lanes) {
      // A lane no piece went to is no file of the checkpoint (its part goes
      // with it). The lanes used are the first ones: the pieces go round.
      struct stat st{};
      if (::fstat(lane->fd(), &st) != 0) return failf_errno("cannot stat the page image {}", lane->path());
      if (st.st_size > 0) TRY(images_.commit(*lane));
    }
  }
  return images_.write(dir_.pstree(), ImageKind::pstree, pstree);
}

Status Dumper::commit_kinds(bool destructive) {
  return kinds_.each("commit", [&](Kind& k) {
    return k.is_destructive() == destructive ? k.commit(images_, env_) : Status{};
  });
}

img::Inventory Dumper::inventory(pid_t root, const NetworkLock::Kept& kept) const {
  img::Inventory inv;
  inv.set_format_version(kImageFormatVersion);
  inv.set_root_pid(static_cast<uint32_t>(root));
  utsname u;
  if (::uname(&u) == 0) inv.set_kernel(u.release);
  inv.set_tool_version(kVersion);
  inv.set_dump_time_unix_ns(static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::chrono::system_clock::now().time_since_epoch()).count()));
  inv.set_page_size(static_cast<uint32_t>(::sysconf(_SC_PAGESIZE)));
  inv.set_xsave_size(xsave_size_);
  inv.set_xsave_features(arch::read_xcr0());
  inv.set_leave_running(options_.leave_running);
  inv.set_parent_images(options_.prev_images_dir);
  inv.set_pre_dump(options_.pre_dump);
  inv.set_root_start_time(identity_.start_time);
  inv.set_root_exe(identity_.exe);
  if (upload_) inv.set_page_server(upload_->where().str());
  if (!kept.table.empty()) {
    inv.set_network_lock_backend(network_lock_mode_name(kept.mode));
    inv.set_network_lock_table(kept.table);
  }
  return inv;
}

// The order that keeps a failed dump harmless: everything that does not
// change the tree is written and synced first; then the room for what is
// left (files.img, grown by the destructive kinds, and the inventory) is
// reserved; only then does the destructive phase consume application state
// (a dump that kills the tree only), and nothing after it can fail for lack
// of space. The inventory comes last: only a directory with one is a
// checkpoint (and every image becomes visible at once, in run(), by
// publish()).
Status Dumper::write_images(pid_t root) {
  TRY(write_process_images());
  TRY(commit_kinds(false));
  ASSIGN_OR_RETURN(kept_lock_, keep_network_lock());
  img::Inventory inv = inventory(root, kept_lock_);

  bool destroys = !options_.leave_running;
  uint64_t room = stream_size(files_.entries());
  if (destroys) {
    kinds_.each_void([&](Kind& k) {
      if (k.is_destructive()) room += k.destructive_room(env_);
    });
  }
  ASSIGN_OR_RETURN(auto files_img, ImageWriter::create(dir_.files(), ImageKind::files));
  TRY(files_img.reserve(room + 4096));
  ASSIGN_OR_RETURN(auto inventory_img, ImageWriter::create(dir_.inventory(), ImageKind::inventory));
  TRY(inventory_img.reserve(stream_size(std::vector<img::Inventory>{inv}) + 4096));

  if (destroys) {
    TRY(kinds_.each("destructive", [&](Kind& k) { return k.is_destructive() ? k.destructive(env_) : Status{}; }));
    TRY(commit_kinds(true));
  }
  for (auto& f : files_.entries()) TRY(files_img.write(f));
  TRY(images_.commit(files_img));
  TRY(inventory_img.write(inv));
  return images_.commit(inventory_img);
}

void Dumper::kill_tree(TaskTree& tree) {
  tree.kill();
  // Its TCP sockets died in repair mode: closed without FIN or RST.
  release_kinds(TreeFate::dies);
  stats_.frozen_ns = ns_since(frozen_at_);
  log_.info("tree killed after a complete dump");
}

// The parent images of --prev-images-dir, checked to be of this tree, and
// the write tracking since them, taken from whoever holds it.
Status Dumper::load_parent() {
  tracking_.root = options_.pid;
  // No such process: the freeze says so, in its own words.
  auto id = tree_identity(options_.pid);
  if (!id) return {};
  identity_ = *id;
  const std::string& prev = options_.prev_images_dir;
  if (prev.empty()) return {};
  parent_dir_ = prev[0] == '/' ? prev : dir_.path() + "/" + prev;
  ASSIGN_OR_RETURN(auto link, load_chain_link(parent_dir_));
  const img::Inventory& inv = link.inventory;
  if (static_cast<pid_t>(inv.root_pid()) != options_.pid || inv.root_start_time() != identity_.start_time ||
      inv.root_exe() != identity_.exe)
    return failf("--prev-images-dir {}: those images are of pid {} ({}{}), not of this tree (pid {}, {}); give the "
                 "images dir of an earlier pre-dump of this tree, or none",
                 prev, inv.root_pid(), inv.root_exe().empty() ? "exe unknown" : inv.root_exe(),
                 static_cast<pid_t>(inv.root_pid()) == options_.pid ? ", an earlier process of the same pid" : "",
                 options_.pid, identity_.exe);
  parent_ = std::move(link);
  if (options_.tracking && !options_.tracking->held.empty()) {
    // Held for the images it armed for, and for no others.
    struct stat a{}, b{};
    if (::stat(options_.tracking->held.images_dir.c_str(), &a) == 0 && ::stat(parent_dir_.c_str(), &b) == 0 &&
        a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
      tracking_ = std::move(options_.tracking->held);
      options_.tracking->held = WriteTracking{};
    }
  } else {
    ASSIGN_OR_RETURN(auto taken, take_tracking_from_holder(parent_dir_));
    if (taken) tracking_ = std::move(*taken);
  }
  tracking_ok_ = !tracking_.empty() && tracking_.root == options_.pid;
  if (!tracking_ok_) {
    log_.warn("--prev-images-dir {}: the write tracking since those images is gone (no holder answered on {}/{}: "
              "it timed out or was killed); every page is dumped",
              prev, parent_dir_, kTrackingSocket);
    tracking_ = WriteTracking{};
  }
  tracking_.root = options_.pid;
  return {};
}

// What a dump knows of the parent images of one process, and for a
// pre-dump the write tracking it arms: the VMAs already registered (by the
// userfaultfds it holds) and a new userfaultfd for the others.
Result<PageChain> Dumper::page_chain(pid_t pid, FrozenProcess&, std::vector<VmaInfo>& vmas,
                                     ParasiteSession& parasite) {
  PageChain chain;
  bool ours = tracking_ok_ && tracking_.uffds.count(pid);
  if (parent_ && ours) {
    if (auto it = parent_->mm.find(pid); it != parent_->mm.end()) {
      chain.parent_mm = &it->second;
      for (auto& e : parent_->pagemap[pid])
        chain.parent_pages.emplace_back(e.vaddr(), e.vaddr() + uint64_t{e.nr_pages()} * kPageSize);
      std::sort(chain.parent_pages.begin(), chain.parent_pages.end());
    }
  }
  if (!options_.pre_dump) return chain;
  chain.arm = true;
  if (uffd_dev() < 0)
    log_.info("no write tracking: cannot open /dev/userfaultfd; the next round dumps every page");
  std::vector<RemoteRange> ranges;
  for (auto& v : vmas) {
    if (!vma_dumps_pages(v.vma)) continue;
    // Registered already: by a userfaultfd we hold, or by the application's
    // own (then it is not ours to arm: dumped whole, untracked).
    if (v.maps.has_flag("uw")) {
      if (ours) chain.registered.push_back(v.vma.start());
      continue;
    }
    ranges.push_back({RemotePtr<>(v.vma.start()), v.vma.end() - v.vma.start()});
  }
  if (ranges.empty() || !uffd_dev_) return chain;
  auto made = parasite.make_uffd(uffd_dev_.get(), ranges);
  if (!made) {
    log_.info("pid {}: no write tracking: {}", pid, made.error().what());
    return chain;
  }
  for (size_t i = 0; i < ranges.size(); i++) {
    if (made->status[i] == 0) chain.registered.push_back(ranges[i].start.addr());
    else
      log_.debug("pid {}: vma {}-{} cannot be write-tracked ({}): dumped whole each round", pid, ranges[i].start,
                 ranges[i].end(), std::strerror(made->status[i]));
  }
  tracking_.uffds[pid].push_back(std::move(made->fd));
  return chain;
}

// A frozen dump into local images by several workers: a page file for each
// worker beyond the first (lanes 1..), so that their writes do not take turns
// on one file's lock (tmpfs takes one writer at a time: bench/REPORT.md).
// Not for a small process (a few pieces), nor a background dump (its later
// copy appends to lane 0).
Status Dumper::make_page_lanes(pid_t pid, const std::vector<VmaInfo>& vmas, bool allowed, DumpedProcess& out,
                               std::vector<int>& fds) {
  constexpr uint64_t kLanesFrom = 16ull << 20;
  if (!allowed || !copies_ || copies_->workers() < 2) return {};
  uint64_t bytes = 0;
  for (auto& v : vmas)
    if (vma_dumps_pages(v.vma)) bytes += (v.maps.rss_kb + v.maps.swap_kb) << 10;
  if (bytes < kLanesFrom) return {};
  unsigned lanes = std::min<unsigned>(copies_->workers(), ImageDir::kMaxPageLanes);
  for (uint32_t lane = 1; lane < lanes; lane++) {
    ASSIGN_OR_RETURN(auto f, RawImageFile::create(dir_.pages(pid, lane)));
    out.lanes.push_back(std::make_unique<RawImageFile>(std::move(f)));
    fds.push_back(out.lanes.back()->fd());
  }
  return {};
}

int Dumper::uffd_dev() {
  if (!uffd_dev_tried_) {
    uffd_dev_tried_ = true;
    uffd_dev_.reset(::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
    if (!uffd_dev_) log_.info("cannot open /dev/userfaultfd: {}", std::strerror(errno));
  }
  return uffd_dev_.get();
}

// A background dump: the private anonymous VMAs whose pages can wait for the
// tree to run, registered with a new userfaultfd of the process in
// synchronous write-protect mode. Not those the remote syscalls or the cure
// may write to (executable), not unreadable ones (copied while frozen, as
// they always were), not huge TLB pages, not those another userfaultfd has (ours of a
// pre-dump: their pages written since are few and copied now).
static std::vector<RemoteRange> background_candidates(const std::vector<VmaInfo>& vmas) {
  std::vector<RemoteRange> candidates;
  for (auto& v : vmas) {
    if (v.vma.kind() != img::VMA_ANON_PRIVATE || !v.maps.read || v.maps.exec || v.maps.has_flag("uw") ||
        v.maps.has_flag("um") || v.maps.has_flag("ht") || (v.maps.rss_kb == 0 && v.maps.swap_kb == 0))
      continue;
    candidates.push_back({RemotePtr<>(v.vma.start()), v.vma.end() - v.vma.start()});
  }
  return candidates;
}

// A background dump, before its freeze, so that the freeze does not grow
// with memory: a short stop of the tree (seized, a parasite in each process
// makes the userfaultfd and registers its memory, cured), then with the
// tree running each process's memory write-protected and its pages listed
// (BackgroundCopy::pre_arm). What was written meanwhile is protected again
// with the tree running (settle_background), and the freeze takes only what
// changed after that (take_prearmed). Where this cannot be done, the freeze
// arms as before.
Status Dumper::pre_arm_background() {
  if (!options_.background || uffd_dev() < 0) return {};
  struct Made {
    pid_t pid;
    UniqueFd fd;
    std::vector<RemoteRange> ranges;
  };
  std::vector<Made> made;
  auto t0 = Clock::now();
  {
    ASSIGN_OR_RETURN(auto tree, TaskTree::freeze(options_.pid, log_));
    for (auto& proc : tree->processes()) {
      if (proc.zombie) continue;
      ASSIGN_OR_RETURN(auto vmas, collect_vmas(proc.pid, VmaSource{.wp_is_ours = tracking_ok_ &&
                                                                                 tracking_.uffds.count(proc.pid),
                                                                   .early = early_.of(proc.pid),
                                                                   .log = &log_}));
      auto candidates = background_candidates(vmas);
      if (candidates.size() > 4096) candidates.resize(4096);  // the rest: copied while frozen
      if (candidates.empty()) continue;
      ASSIGN_OR_RETURN(uint64_t site, find_syscall_site(vmas));
      ASSIGN_OR_RETURN(auto memory, TraceeMemory::open(proc.pid));
      ParasiteSession parasite(proc, memory, RemotePtr<>(site), log_);
      TRY(parasite.infect());
      TRY(parasite.start());
      auto uffd = parasite.make_uffd(uffd_dev(), candidates, ParasiteSession::UffdMode::prearm);
      TRY(parasite.cure());
      // As when armed frozen (register_background): no userfaultfd, no dump.
      if (!uffd)
        return std::unexpected(uffd.error().context(
            fmt::format("pid {}: write-protecting its memory for a background dump", proc.pid)));
      Made m{proc.pid, std::move(uffd->fd), {}};
      for (size_t i = 0; i < candidates.size(); i++)
        if (uffd->status[i] == 0) m.ranges.push_back(candidates[i]);
      made.push_back(std::move(m));
    }
    tree->release();
  }
  double stop = static_cast<double>(ns_since(t0)) / 1e9;
  for (auto& m : made) {
    ASSIGN_OR_RETURN(auto copy, BackgroundCopy::pre_arm(m.pid, std::move(m.fd), m.ranges, log_));
    prearmed_[m.pid] = std::move(copy);
  }
  log_.info("background: {} process(es) armed before the freeze (stopped {:.3f} s to register their memory, "
            "{:.3f} s in all)",
            prearmed_.size(), stop, static_cast<double>(ns_since(t0)) / 1e9);
  return {};
}

// What was written while arming (a page at a time, at the application's
// pace for as long as the arming took) protected again right before the
// freeze, until what is left is small: the freeze takes only the rest.
Status Dumper::settle_background() {
  constexpr uint64_t kFewPages = 256;
  for (int round = 0; round < 3; round++) {
    uint64_t pages = 0;
    for (auto& [pid, copy] : prearmed_) {
      ASSIGN_OR_RETURN(uint64_t n, with_context(copy->settle(), fmt::format("pid {}: background dump", pid)));
      pages += n;
    }
    if (pages <= kFewPages) break;
  }
  return {};
}

// At the freeze: the process's pre-armed copy, if its memory is still laid
// out as when it was armed: runs are its pages now (write-protected). Else
// dropped (its userfaultfd closed: every protection lifted), and the
// freeze arms it as before (false).
Result<bool> Dumper::take_prearmed(pid_t pid, const std::vector<VmaInfo>& vmas,
                                   std::vector<std::pair<uint64_t, uint64_t>>& runs) {
  auto it = prearmed_.find(pid);
  for (auto& r : it->second->ranges()) {
    bool same = std::any_of(vmas.begin(), vmas.end(), [&](const VmaInfo& v) {
      return v.vma.start() == r.start.addr() && v.vma.end() == r.end().addr() &&
             v.vma.kind() == img::VMA_ANON_PRIVATE && v.maps.read && !v.maps.exec;
    });
    if (!same) {
      log_.info("pid {}: its mapping {}-{} changed after it was armed: armed frozen", pid, r.start, r.end());
      prearmed_.erase(it);
      return false;
    }
  }
  ASSIGN_OR_RETURN(runs, with_context(it->second->freeze_point(), fmt::format("pid {}: background dump", pid)));
  return true;
}

Status Dumper::register_background(pid_t pid, std::vector<VmaInfo>& vmas, ParasiteSession& parasite,
                                   PageChain& chain, UniqueFd& uffd, std::vector<RemoteRange>& ranges) {
  std::vector<RemoteRange> candidates = background_candidates(vmas);
  if (candidates.empty()) return {};
  if (uffd_dev() < 0)
    return failf("pid {}: a background dump needs /dev/userfaultfd, which cannot be opened here; dump without "
                 "--background", pid);
  for (size_t at = 0; at < candidates.size();) {
    // One userfaultfd for all: the first batch makes it (later batches of a
    // process with very many VMAs are copied while frozen).
    size_t n = std::min<size_t>(candidates.size() - at, 4096);
    std::span<const RemoteRange> batch(candidates.data() + at, n);
    at += n;
    if (uffd) {
      for (auto& r : batch) log_.debug("pid {}: vma {}-{}: copied while frozen (too many VMAs)", pid, r.start, r.end());
      continue;
    }
    ASSIGN_OR_RETURN(auto made, with_context(parasite.make_uffd(uffd_dev(), batch, ParasiteSession::UffdMode::sync),
                                             fmt::format("pid {}: write-protecting its memory for a background "
                                                         "dump", pid)));
    for (size_t i = 0; i < batch.size(); i++) {
      if (made.status[i] == 0) {
        chain.deferred.push_back(batch[i].start.addr());
        ranges.push_back(batch[i]);
      } else {
        log_.info("pid {}: vma {}-{} cannot be write-protected ({}): copied while frozen", pid, batch[i].start,
                  batch[i].end(), std::strerror(made.status[i]));
      }
    }
    uffd = std::move(made.fd);
  }
  return {};
}

// A background dump, the tree running: every write-protected page into the
// page images, the processes' chunks shared out to a worker per core.
Status Dumper::copy_background() {
  std::vector<BackgroundCopy*> copies;
  uint64_t pages = 0;
  for (auto& p : processes_)
    if (p.background) {
      copies.push_back(p.background.get());
      pages += p.background->pages();
    }
  if (copies.empty()) return {};
  auto t0 = Clock::now();
  unsigned workers = cpus_allowed();
  Status st = BackgroundCopy::copy_all(copies, workers, log_);
  for (auto* c : copies) {
    auto s = c->stats();
    stats_.pages_background += s.pages;
    stats_.background_faults += s.faults;
    stats_.background_faults_copied += s.faults_copied;
  }
  stats_.background_ns = ns_since(t0);
  for (auto& p : processes_) p.background.reset();
  TRY(with_context(std::move(st), "background dump"));
  log_.info("background copy: {} MiB in {:.3f} s by {} worker(s), the tree running; {} write fault(s) answered, "
            "{} on a page not yet copied (copied first)",
            (pages * kPageSize) >> 20, static_cast<double>(stats_.background_ns) / 1e9, workers,
            stats_.background_faults, stats_.background_faults_copied);
  return {};
}

Status Dumper::write_pre_dump(pid_t root) {
  std::vector<img::ProcessEntry> pstree;
  for (auto& p : processes_) {
    pid_t pid = static_cast<pid_t>(p.entry.pid());
    pstree.push_back(p.entry);
    if (p.entry.zombie()) continue;
    TRY(images_.write(dir_.mm(pid), ImageKind::mm, std::vector<img::MmCore>{p.mm}));
    TRY(images_.write(dir_.pagemap(pid), ImageKind::pagemap, p.pagemap));
    TRY(images_.commit(*p.pages));
  }
  TRY(images_.write(dir_.pstree(), ImageKind::pstree, pstree));
  return images_.write(dir_.inventory(), ImageKind::inventory, std::vector<img::Inventory>{inventory(root, {})});
}

// The `parent` link CRIU leaves in incremental images dirs (for people and
// tools: the inventory names the parent for restore).
static void link_parent(const std::string& dir, const std::string& prev, const Logger& log) {
  std::string link = dir + "/parent";
  struct stat st{};
  if (::lstat(link.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) ::unlink(link.c_str());
  if (!prev.empty() && ::symlink(prev.c_str(), link.c_str()) != 0)
    log.warn("cannot link {} to {}: {}", link, prev, std::strerror(errno));
}

// After a pre-dump: the tracking it armed stays with the caller, or with a
// holder process, for the next round.
void Dumper::keep_tracking() {
  if (tracking_.empty()) return;
  if (options_.tracking) {
    tracking_.images_dir = dir_.path();
    options_.tracking->held = std::move(tracking_);
    return;
  }
  if (auto st = spawn_tracking_holder(dir_.path(), std::move(tracking_), std::chrono::seconds(options_.tracking_timeout_s),
                                      log_);
      !st)
    log_.warn("the write tracking of this pre-dump cannot be kept ({}); the next round dumps every page",
              st.error().what());
}

// --page-server: connected before the tree is touched (a server that is
// not there costs nothing). Pre-dump chains stay local: their parents'
// pages would be split between two machines.
Status Dumper::connect_page_server() {
  if (options_.page_server.empty()) return {};
  if (options_.pre_dump)
    return fail("pre-dump --page-server: not supported; pre-dump into a local directory, or dump to the page "
                "server without --prev-images-dir");
  if (!options_.prev_images_dir.empty())
    return fail("dump --page-server with --prev-images-dir: not supported (the parent's pages are not on the "
                "page server); dump the whole tree to the page server without --prev-images-dir");
  ASSIGN_OR_RETURN(auto up, PageUpload::connect(options_.page_server));
  upload_.emplace(std::move(up));
  log_.info("pages go to the {}", upload_->describe());
  return {};
}

// The images written (synced, not yet published) go to the page server,
// which publishes them with the pages: its directory is a whole checkpoint.
Status Dumper::upload_images() {
  if (!upload_) return {};
  std::vector<std::string> paths = images_.pending();
  // The inventory last: the server publishes it last in any case.
  std::stable_partition(paths.begin(), paths.end(), [&](auto& p) { return p != dir_.inventory(); });
  for (auto& path : paths) TRY(upload_->send_file(path.substr(path.rfind('/') + 1), image_part_path(path)));
  TRY(upload_->commit());
  log_.info("{} image(s) published on the {}", paths.size(), upload_->describe());
  return {};
}

// A pre-dump, the tree running again: each process's pages scanned, which
// arms their write tracking (PM_SCAN_WP_MATCHING: a page written after the
// scan counts as written), then read through /proc/PID/mem into its image.
// A page written between its scan and its read reaches the image newer and
// counts as written: the next round takes it again. Not shared with the
// parent process's image (fork's copy-on-write): with the tree running, a
// page shared at the scan may be the parent's own by the read.
Status Dumper::pre_dump_pages() {
  auto t0 = Clock::now();
  uint64_t pages = 0;
  for (auto& p : processes_) {
    if (!p.chain) continue;
    pid_t pid = static_cast<pid_t>(p.entry.pid());
    ASSIGN_OR_RETURN(auto memory, TraceeMemory::open(pid));
    ASSIGN_OR_RETURN(auto result, with_context(dump_pages(pid, p.vmas, nullptr, memory, p.pages->fd(), log_, {},
                                                          *p.chain),
                                               fmt::format("pid {}: pre-dumping pages into {}", pid, dir_.path())));
    log_.info("pid {}: {} page(s) ({} MiB){}", pid, result.pages, (result.pages * kPageSize) >> 20,
              result.pages_in_parent ? fmt::format(", {} unchanged since the parent images", result.pages_in_parent)
                                     : "");
    if (!result.scan_ioctl) log_.info("pid {}: no PAGEMAP_SCAN ioctl here (Linux 6.7): no write tracking", pid);
    stats_.pages_dumped += result.pages;
    stats_.pages_in_parent += result.pages_in_parent;
    stats_.pages_changed += result.pages_changed;
    for (auto& v : p.vmas) {
      if (v.vma.tracked()) stats_.write_tracked = true;
      *p.mm.add_vmas() = std::move(v.vma);
    }
    p.vmas.clear();
    p.pagemap = std::move(result.entries);
    p.chain.reset();
    pages += result.pages;
  }
  stats_.page_bytes = stats_.pages_dumped * kPageSize;
  log_.info("pre-dump: {} MiB of pages into the images in {:.3f} s, the tree running", (pages * kPageSize) >> 20,
            static_cast<double>(ns_since(t0)) / 1e9);
  return {};
}

// A pre-dump: frozen only to register the write tracking; the pages are
// taken with the tree running; memory images only.
Status Dumper::run_pre_dump() {
  read_early_maps();
  ASSIGN_OR_RETURN(auto tree, TaskTree::freeze(options_.pid, log_));
  frozen_at_ = Clock::now();
  FailureGuard guard(*this, *tree);
  TRY(dump_tree(*tree));
  release_kinds(TreeFate::runs);
  tree->release();
  stats_.frozen_ns = ns_since(frozen_at_);
  log_.info("pre-dump: tree released after {:.3f} s frozen", static_cast<double>(stats_.frozen_ns) / 1e9);
  TRY(pre_dump_pages());
  TRY(write_pre_dump(tree->root()));
  TRY(images_.publish());
  guard.dismiss();
  link_parent(dir_.path(), options_.prev_images_dir, log_);
  keep_tracking();
  kinds_.each_void([&](Kind& k) { k.finish(true, env_); });
  return {};
}

Result<DumpStats> Dumper::run() {
  auto start = Clock::now();
  if (options_.background && !options_.page_server.empty())
    return fail("--background with --page-server is not supported yet: the pages copied with the tree running "
                "go to the local page images; dump to a local dir, or without --background");
  if (options_.background && (!options_.leave_running || options_.pre_dump))
    return fail(options_.pre_dump ? "--background is for a dump, not a pre-dump (a pre-dump already copies its "
                                     "pages with the tree running)"
                                   : "--background needs --leave-running: a dump that kills the tree gains "
                                     "nothing from letting it run while its pages are copied");
  TRY(dir_.check_writable());
  TRY(connect_page_server());
  TRY(load_parent());
  TRY(kinds_.each("begin", [&](Kind& k) { return k.begin(env_); }));
  // Writes into a connection the server may drop fail with EPIPE.
  SigpipeBlock no_sigpipe;
  log_.info("{} pid {} into {}{}", options_.pre_dump ? "pre-dumping" : "dumping", options_.pid, dir_.path(),
            parent_ ? fmt::format(" (parent images {})", parent_dir_) : "");
  if (options_.pre_dump) {
    TRY(run_pre_dump());
    stats_.total_ns = ns_since(start);
    return stats_;
  }

  read_early_maps();
  TRY(fault_point("dump/freeze"));
  TRY(pre_arm_background());
  if (!prearmed_.empty()) TRY(fault_point("dump/armed"));
  TRY(settle_background());
  ASSIGN_OR_RETURN(auto tree, TaskTree::freeze(options_.pid, log_));
  frozen_at_ = Clock::now();
  FailureGuard guard(*this, *tree);
  TRY(dump_tree(*tree));
  if (upload_) TRY(upload_->pages_end());
  TRY(files_.drop_unheld());
  TRY(check_tree(*tree));
  if (options_.commit_gate && !options_.leave_running) TRY(refuse_destructive());
  if (options_.leave_running) TRY(release_running(*tree));
  // The check of the early smaps walks every page table again: on a thread
  // of its own beside the background copy (whose protected pages wait for
  // it) and the images, joined before they are written (on an early return,
  // when this goes: before the failure guard).
  std::future<Status> early_checked;
  if (options_.leave_running) {
    try {
      early_checked = std::async(std::launch::async, [this] { return check_early_maps(); });
    } catch (const std::system_error&) {
      TRY(check_early_maps());
    }
  }
  if (options_.background) {
    TRY(fault_point("dump/copy"));
    TRY(copy_background());
  }
  if (early_checked.valid()) TRY(early_checked.get());
  TRY(write_images(tree->root()));
  TRY(upload_images());
  // Every image is synced; the tree dies (or its images stay) only on the
  // gate's word. A no fails the dump as anything else would.
  if (options_.commit_gate) TRY(options_.commit_gate());
  TRY(fault_point("dump/publish"));
  TRY(images_.publish());
  guard.dismiss();
  // Its link remaps and kept lock belong to the checkpoint now.
  (void)journal_note("published");
  link_parent(dir_.path(), options_.prev_images_dir, log_);

  if (!options_.leave_running) {
    // Only a complete, synced image set may cost the tree its life.
    kill_tree(*tree);
    // The dump's own rules go now; a kept lock (peers outside) stays.
    if (kept_lock_.table.empty()) remove_network_lock("tree killed");
    else net_lock_.reset();
  }
  kinds_.each_void([&](Kind& k) { k.finish(true, env_); });
  stats_.total_ns = ns_since(start);
  return stats_;
}

// What makes a dumper killed midway (SIGKILL, the OOM killer) harmless, with
// the group stop TaskTree holds the tree in: the journal of what the dump
// changes, and the guardian that replays it if we die. A journal left by an
// earlier dump of the same root that died is replayed first.
struct DumpSafety {
  std::unique_ptr<Journal> journal;
  std::optional<Guardian> guardian;

  DumpSafety() = default;
  DumpSafety(DumpSafety&&) = default;
  static Result<DumpSafety> begin(pid_t root, const Logger& log) {
    DumpSafety s;
    std::string path = Journal::path_for(root);
    if (::access(path.c_str(), F_OK) == 0) {
      ASSIGN_OR_RETURN(auto r, replay_journal(path, log, false));
      if (!r.replayed)
        return failf("pid {}: another dump of it is under way ({}); wait for it to end", root, r.why);
      log.warn("pid {}: an earlier dump of it died midway; its journal was replayed: {}", root, r.summary());
    }
    // The guardian first, then the journal, made whole with the names of
    // both: killed before it has its name, we changed nothing yet; killed
    // after, the journal says whose it is, and the guardian is there.
    ASSIGN_OR_RETURN(Guardian g, Guardian::start(path, log));
    auto journal = Journal::create(root, {fmt::format("dumper {} {}", ::getpid(), process_start_time(::getpid())),
                                          fmt::format("guardian {} {}", g.pid(), process_start_time(g.pid()))});
    if (!journal) {
      // Not fatal: the group stop still holds the tree if we die, but nobody
      // would put its registers and code back.
      log.warn("no dump journal ({}): a dumper killed midway (SIGKILL) would leave the tree stopped and "
               "changed", journal.error().what());
      g.dismiss();
      return s;
    }
    s.journal = std::move(*journal);
    s.guardian.emplace(std::move(g));
    return s;
  }

  // The dump is over, well or cured: the journal goes, then the guardian.
  void end() {
    if (journal) journal->remove();
    if (guardian) guardian->dismiss();
  }
  ~DumpSafety() { end(); }
};

}  // namespace

Result<DumpStats> dump(const DumpOptions& options) {
  // Bad options are refused before anything is touched (the kinds' own
  // options in their begin()).
  ASSIGN_OR_RETURN(auto external, ExternalPolicy::from_options(options));
  ASSIGN_OR_RETURN(NetworkLockMode lock_mode, parse_network_lock_mode(options.network_lock));
  // Creates nothing yet: the first TCP connection makes the table.
  ASSIGN_OR_RETURN(auto net_lock, NetworkLock::create(lock_mode, std::to_string(options.pid), Logger(options.log)));
  FaultScope steps(Logger(options.log), options.cancel);
  ASSIGN_OR_RETURN(DumpSafety safety, DumpSafety::begin(options.pid, Logger(options.log)));
  JournalScope journal(safety.journal.get());
  Result<DumpStats> result;
  {
    Dumper d(options, std::move(external), std::move(net_lock));
    result = d.run();
    if (!result) d.give_back_tracking();
  }
  // The tree is released (or killed) and the lock gone: nothing to put back.
  safety.end();
  return result;
}

}  // namespace minicriu
