// Dump orchestration: the order of the steps (DESIGN.md, "Dump, step by step"),
// not the details of any kind. The kinds are walked as a list, phase by phase
// (kinds/kind.hpp); one failure guard sees that every early return leaves the
// tree exactly as it was: images removed, kinds released before the tree runs
// again, every thread detached, the network lock gone.
#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <memory>

#include "arch/x86_64/cpu.hpp"
#include "base/page.hpp"
#include "base/error.hpp"
#include "base/external.hpp"
#include "base/log.hpp"
#include "base/version.hpp"
#include "fs/fd_table.hpp"
#include "images/checkpoint.hpp"
#include "images/image_dir.hpp"
#include "images/image_io.hpp"
#include "images/image_set.hpp"
#include "kinds/kind_set.hpp"
#include "mem/page_dump.hpp"
#include "mem/vma.hpp"
#include "minicriu.pb.h"
#include "net/network_lock.hpp"
#include "parasite/parasite_session.hpp"
#include "proc/process_state.hpp"
#include "ptrace/task_tree.hpp"
#include "ptrace/thread_core.hpp"

namespace minicriu {

namespace {

using Clock = std::chrono::steady_clock;

uint64_t ns_since(Clock::time_point t) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t).count());
}

// The images of one process as a restore reads them, and its page image
// while it is being written.
struct DumpedProcess : ProcessImages {
  std::unique_ptr<RawImageFile> pages;
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

 private:
  class FailureGuard;

  [[nodiscard]] Status dump_tree(TaskTree& tree);
  [[nodiscard]] Status dump_process(FrozenProcess& proc, DumpedProcess& out, const ParentMemory& parent);
  [[nodiscard]] Status run_parasite(FrozenProcess& proc, const proc::Stat& stat, std::vector<VmaInfo>& vmas,
                                    const std::vector<FdListing>& fds, DumpedProcess& out,
                                    const ParentMemory& parent);
  [[nodiscard]] Status check_tree(TaskTree& tree);
  [[nodiscard]] Status refuse_destructive() const;
  [[nodiscard]] Status release_running(TaskTree& tree);
  [[nodiscard]] Status write_images(pid_t root);
  [[nodiscard]] Status write_process_images();
  [[nodiscard]] Status commit_kinds(bool destructive);
  [[nodiscard]] Result<NetworkLock::Kept> keep_network_lock();
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
  DumpStats stats_;
  uint32_t xsave_size_ = 0;
  bool released_ = false;
  NetworkLock::Kept kept_lock_;
  Clock::time_point frozen_at_;
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

Status Dumper::run_parasite(FrozenProcess& proc, const proc::Stat& stat, std::vector<VmaInfo>& vmas,
                            const std::vector<FdListing>& fds, DumpedProcess& out,
                            const ParentMemory& parent) {
  ASSIGN_OR_RETURN(uint64_t site, find_syscall_site(vmas));
  ASSIGN_OR_RETURN(auto memory, TraceeMemory::open(proc.pid));
  ParasiteSession parasite(proc, memory, RemotePtr<>(site), log_);
  TRY(parasite.infect());
  for (size_t i = 0; i < proc.threads.size(); i++) {
    ASSIGN_OR_RETURN(auto self, parasite.thread_self_state(proc.threads[i]));
    img::ThreadCore* t = out.core.mutable_threads(static_cast<int>(i));
    t->mutable_sigaltstack()->set_sp(self.altstack_sp.addr());
    t->mutable_sigaltstack()->set_flags(self.altstack_flags);
    t->mutable_sigaltstack()->set_size(self.altstack_size);
    t->set_clear_child_tid(self.clear_child_tid.addr());
  }
  TRY(parasite.start());
  log_.info("pid {}: parasite running", proc.pid);

  ASSIGN_OR_RETURN(auto misc, parasite.get_misc());
  apply_parasite_misc(misc, out.core, out.mm);

  ASSIGN_OR_RETURN(out.fds, dump_fd_table(proc.pid, fds, parasite, files_));
  log_.info("pid {}: {} fd(s)", proc.pid, out.fds.size());
  // After the fds: a ghost file held by an fd is named by its fd in messages.
  for (auto& v : vmas) {
    TRY(kinds_.each([&](Kind& k) { return k.take_vma(proc.pid, v, env_); }));
    if (!v.deleted) continue;
    bool writable_shared = v.maps.shared && v.maps.write;
    ASSIGN_OR_RETURN(uint32_t id, files_.add_deleted_mapping(proc.pid, v.vma.start(), v.vma.end(),
                                                             writable_shared));
    v.vma.set_file_id(id);
  }
  ProcessDump p{proc.pid, stat, out.entry, out.core, out.mm, parasite};
  TRY(kinds_.each([&](Kind& k) { return k.take_process(p, env_); }));

  ASSIGN_OR_RETURN(auto pages, RawImageFile::create(dir_.pages(proc.pid)));
  out.pages = std::make_unique<RawImageFile>(std::move(pages));
  auto t0 = Clock::now();
  ASSIGN_OR_RETURN(auto result,
                   with_context(dump_pages(proc.pid, vmas, parasite, memory, out.pages->fd(), log_, parent),
                                fmt::format("pid {}: dumping pages into {}", proc.pid, dir_.path())));
  double secs = static_cast<double>(ns_since(t0)) / 1e9;
  log_.info("pid {}: {} page(s) ({} MiB) in {:.3f} s", proc.pid, result.pages,
            (result.pages * kPageSize) >> 20, secs);
  stats_.pages_dumped += result.pages;
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

  ASSIGN_OR_RETURN(auto vmas, collect_vmas(pid));
  log_.info("pid {}: {} vma(s)", pid, vmas.size());
  stats_.vmas += vmas.size();
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
  for (size_t i = 0; i < processes_.size(); i++) {
    // Parents come first: a child's memory still shared with its parent is
    // found against the parent's, already dumped and still frozen.
    ParentMemory parent;
    for (size_t j = 0; j < i; j++)
      if (tree.processes()[j].pid == tree.processes()[i].ppid && !tree.processes()[j].zombie)
        parent = ParentMemory{tree.processes()[j].pid, &processes_[j].mm};
    TRY(dump_process(tree.processes()[i], processes_[i], parent));
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
  return kinds_.each([&](Kind& k) { return k.check(view, env_); });
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

// Every page is in the page images now (splice copied it into the page
// cache), so a tree that stays may run again before the images are synced.
Status Dumper::release_running(TaskTree& tree) {
  release_kinds(TreeFate::runs);
  tree.release();
  stats_.frozen_ns = ns_since(frozen_at_);
  log_.info("tree released, left running");
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
  ASSIGN_OR_RETURN(auto kept, net_lock_->keep());
  log_.info("network lock: {} {} stays until the restore", network_lock_mode_name(kept.mode), kept.table);
  return kept;
}

// After the dump, whatever its outcome, once the tree is released or killed.
// (TCP sockets must be out of repair mode before the lock goes: the peer's
// packets must never reach a socket in repair.)
void Dumper::remove_network_lock(const char* when) {
  if (auto st = net_lock_->remove(); !st)
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
    TRY(images_.commit(*p.pages));
  }
  return images_.write(dir_.pstree(), ImageKind::pstree, pstree);
}

Status Dumper::commit_kinds(bool destructive) {
  return kinds_.each([&](Kind& k) {
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
    TRY(kinds_.each([&](Kind& k) { return k.is_destructive() ? k.destructive(env_) : Status{}; }));
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

Result<DumpStats> Dumper::run() {
  auto start = Clock::now();
  TRY(dir_.check_writable());
  TRY(kinds_.each([&](Kind& k) { return k.begin(env_); }));
  log_.info("dumping pid {} into {}", options_.pid, dir_.path());

  ASSIGN_OR_RETURN(auto tree, TaskTree::freeze(options_.pid, log_));
  frozen_at_ = Clock::now();
  FailureGuard guard(*this, *tree);
  TRY(dump_tree(*tree));
  TRY(files_.drop_unheld());
  TRY(check_tree(*tree));
  if (options_.commit_gate && !options_.leave_running) TRY(refuse_destructive());
  if (options_.leave_running) TRY(release_running(*tree));
  TRY(write_images(tree->root()));
  // Every image is synced; the tree dies (or its images stay) only on the
  // gate's word. A no fails the dump as anything else would.
  if (options_.commit_gate) TRY(options_.commit_gate());
  TRY(images_.publish());
  guard.dismiss();

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

}  // namespace

Result<DumpStats> dump(const DumpOptions& options) {
  // Bad options are refused before anything is touched (the kinds' own
  // options in their begin()).
  ASSIGN_OR_RETURN(auto external, ExternalPolicy::from_options(options));
  ASSIGN_OR_RETURN(NetworkLockMode lock_mode, parse_network_lock_mode(options.network_lock));
  // Creates nothing yet: the first TCP connection makes the table.
  ASSIGN_OR_RETURN(auto net_lock, NetworkLock::create(lock_mode, std::to_string(options.pid), Logger(options.log)));
  Dumper d(options, std::move(external), std::move(net_lock));
  return d.run();
}

}  // namespace minicriu
