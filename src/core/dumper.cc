// Dump orchestration: the order of the steps (DESIGN.md, "Dump, step by step"),
// not the details of any kind. Every early return leaves the tree running: the
// ParasiteSession cures its process, the TaskTree detaches every thread, and
// images written so far are removed.
#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <memory>
#include <set>

#include "base/error.hpp"
#include "base/external.hpp"
#include "base/log.hpp"
#include "base/version.hpp"
#include "fs/fd_table.hpp"
#include "fs/ghost_file.hpp"
#include "fs/pipe.hpp"
#include "fs/tty.hpp"
#include "mem/shmem.hpp"
#include "net/network_lock.hpp"
#include "net/inet_socket.hpp"
#include "net/unix_socket.hpp"
#include "images/image_dir.hpp"
#include "images/image_io.hpp"
#include "mem/page_dump.hpp"
#include "mem/vma.hpp"
#include "minicriu.pb.h"
#include "parasite/parasite_session.hpp"
#include "proc/posix_timers.hpp"
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

uint64_t read_xcr0() {
  uint32_t lo, hi;
  asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

struct DumpedProcess {
  img::ProcessEntry entry;
  img::ProcessCore core;
  img::MmCore mm;
  std::vector<img::PagemapEntry> pagemap;
  std::vector<img::FdEntry> fds;
  std::unique_ptr<RawImageFile> pages;
};

class Dumper {
 public:
  Dumper(const DumpOptions& options, GhostPolicy policy, ExternalPolicy external,
         std::unique_ptr<NetworkLock> net_lock)
      : options_(options), external_(std::move(external)), log_(options.log), dir_(options.images_dir),
        ghosts_(dir_, std::move(policy), log_), pipes_(dir_), shmem_(dir_, log_),
        net_lock_(std::move(net_lock)),
        inet_sockets_(InetDumpPolicy{options.tcp_established, options.tcp_drop_pending,
                                     options.leave_running}),
        files_(make_file_context()) {}

  Result<DumpStats> run();

 private:
  [[nodiscard]] Status dump_process(FrozenProcess& proc, DumpedProcess& out, const ParentMemory& parent);
  [[nodiscard]] Status run_parasite(FrozenProcess& proc, std::vector<VmaInfo>& vmas,
                                    const std::vector<FdListing>& fds, DumpedProcess& out,
                                    const ParentMemory& parent);
  [[nodiscard]] Status write_images(std::vector<DumpedProcess>& images, pid_t root,
                                    const std::function<Status()>& before_files,
                                    const NetworkLock::Kept& kept_lock);
  [[nodiscard]] Result<NetworkLock::Kept> keep_network_lock();
  void remove_network_lock(const char* when);
  [[nodiscard]] Status check_external_pipes(TaskTree& tree);
  [[nodiscard]] Status check_ttys(const std::vector<DumpedProcess>& images);
  FileDumpContext make_file_context() {
    FileDumpContext ctx{ghosts_, pipes_, shmem_, created_links_, &tree_tids_, &unix_sockets_};
    ctx.net_lock = net_lock_.get();
    ctx.inet_sockets = &inet_sockets_;
    ctx.ttys = &ttys_;
    return ctx;
  }
  template <typename M>
  [[nodiscard]] Status write_stream(const std::string& path, ImageKind kind, const std::vector<M>& msgs);
  void remove_written();

  const DumpOptions& options_;
  ExternalPolicy external_;
  Logger log_;
  ImageDir dir_;
  std::vector<std::string> created_links_;
  std::vector<pid_t> tree_tids_;  // filled once the tree is frozen
  GhostStore ghosts_;
  PipeStore pipes_;
  ShmemStore shmem_;
  UnixSocketStore unix_sockets_;
  TtyStore ttys_;
  // Before files_ (whose context points to it); the tree, a local of run(),
  // is released before the lock goes, so a failed dump's connections wake up
  // only once nothing of ours holds them any more.
  std::unique_ptr<NetworkLock> net_lock_;
  InetSocketStore inet_sockets_;
  FileRegistry files_;
  DumpStats stats_;
  std::vector<std::string> written_;
  uint32_t xsave_size_ = 0;
};

Status Dumper::run_parasite(FrozenProcess& proc, std::vector<VmaInfo>& vmas,
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
  TRY(dump_posix_timers(proc.pid, parasite, out.core));

  ASSIGN_OR_RETURN(out.fds, dump_fd_table(proc.pid, fds, parasite, files_));
  log_.info("pid {}: {} fd(s)", proc.pid, out.fds.size());
  // After the fds: a ghost file held by an fd is named by its fd in messages.
  for (auto& v : vmas) {
    if (v.shmem) {
      ASSIGN_OR_RETURN(uint32_t id, shmem_.add_mapping(proc.pid, v.vma.start(), v.vma.end(), v.maps.path));
      v.vma.set_shmem_id(id);
    }
    if (!v.deleted) continue;
    bool writable_shared = v.maps.shared && v.maps.write;
    ASSIGN_OR_RETURN(uint32_t id, files_.add_deleted_mapping(proc.pid, v.vma.start(), v.vma.end(),
                                                             writable_shared));
    v.vma.set_file_id(id);
  }

  ASSIGN_OR_RETURN(auto pages, RawImageFile::create(dir_.pages(proc.pid)));
  out.pages = std::make_unique<RawImageFile>(std::move(pages));
  auto t0 = Clock::now();
  ASSIGN_OR_RETURN(auto result,
                   with_context(dump_pages(proc.pid, vmas, parasite, memory, out.pages->fd(), log_, parent),
                                fmt::format("pid {}: dumping pages into {}", proc.pid, dir_.path())));
  double secs = static_cast<double>(ns_since(t0)) / 1e9;
  log_.info("pid {}: {} page(s) ({} MiB) in {:.3f} s", proc.pid, result.pages,
            (result.pages * 4096) >> 20, secs);
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
  if (auto ctty = controlling_tty(stat.tty_nr, stat.tpgid))
    *out.entry.mutable_ctty() = *ctty;
  else if (stat.tty_nr != 0 && pid == stat.session)
    log_.info("pid {}: its controlling terminal (device {:#x}) is not a pseudo-terminal; it is not restored",
              pid, stat.tty_nr);

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

  TRY(run_parasite(proc, vmas, fds, out, parent));
  for (auto& v : vmas) *out.mm.add_vmas() = std::move(v.vma);
  return {};
}

template <typename M>
Status Dumper::write_stream(const std::string& path, ImageKind kind, const std::vector<M>& msgs) {
  ASSIGN_OR_RETURN(auto w, ImageWriter::create(path, kind));
  for (auto& m : msgs) TRY(w.write(m));
  TRY(w.commit());
  written_.push_back(path);
  return {};
}

// files.img and the inventory come last, after before_files(): the step that
// changes the tree (accepting waiting connections) runs when only they are
// left to write.
Status Dumper::write_images(std::vector<DumpedProcess>& images, pid_t root,
                            const std::function<Status()>& before_files,
                            const NetworkLock::Kept& kept_lock) {
  std::vector<img::ProcessEntry> pstree;
  for (auto& p : images) {
    pid_t pid = static_cast<pid_t>(p.entry.pid());
    pstree.push_back(p.entry);
    if (p.entry.zombie()) continue;
    TRY(write_stream(dir_.core(pid), ImageKind::core, std::vector<img::ProcessCore>{p.core}));
    TRY(write_stream(dir_.mm(pid), ImageKind::mm, std::vector<img::MmCore>{p.mm}));
    TRY(write_stream(dir_.pagemap(pid), ImageKind::pagemap, p.pagemap));
    TRY(write_stream(dir_.fdinfo(pid), ImageKind::fdinfo, p.fds));
    TRY(p.pages->commit());
    written_.push_back(dir_.pages(pid));
  }
  TRY(write_stream(dir_.pstree(), ImageKind::pstree, pstree));
  TRY(shmem_.commit());
  for (auto& o : shmem_.entries()) written_.push_back(dir_.shmem_data(o.id()));
  TRY(write_stream(dir_.shmem(), ImageKind::shmem, shmem_.entries()));
  TRY(pipes_.commit());
  if (!pipes_.entries().empty()) written_.push_back(dir_.pipes_data());
  TRY(write_stream(dir_.pipes(), ImageKind::pipes, pipes_.entries()));
  TRY(ghosts_.commit());
  for (auto& g : ghosts_.entries()) written_.push_back(dir_.ghost_data(g.id()));
  TRY(write_stream(dir_.ghosts(), ImageKind::ghosts, ghosts_.entries()));
  TRY(before_files());
  TRY(write_stream(dir_.files(), ImageKind::files, files_.entries()));

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
  inv.set_xsave_features(read_xcr0());
  inv.set_leave_running(options_.leave_running);
  if (!kept_lock.table.empty()) {
    inv.set_network_lock_backend(network_lock_mode_name(kept_lock.mode));
    inv.set_network_lock_table(kept_lock.table);
  }
  // Last: only a directory with an inventory is a checkpoint.
  return write_stream(dir_.inventory(), ImageKind::inventory, std::vector<img::Inventory>{inv});
}

// A pipe whose other end lives outside the tree would come back connected to
// nothing: refuse it until the user brings that process into the dump.
Status Dumper::check_external_pipes(TaskTree& tree) {
  std::set<pid_t> pids;
  for (auto& p : tree.processes()) pids.insert(p.pid);
  ASSIGN_OR_RETURN(std::string holder, pipes_.find_external_holder(pids));
  if (holder.empty()) return {};
  return failf("{}; dump the tree that holds both ends, or close the pipe there before the dump", holder);
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

// A pty slave whose master stays behind is refused; a session whose
// controlling terminal stays behind comes back without one (said here once).
Status Dumper::check_ttys(const std::vector<DumpedProcess>& images) {
  TRY(ttys_.check_masters(external_, files_.mutable_entries()));
  std::set<pid_t> tree;
  for (auto& p : images) tree.insert(static_cast<pid_t>(p.entry.pid()));
  TRY(ttys_.check_slaves_inside(tree));
  for (auto& p : images) {
    const img::ProcessEntry& e = p.entry;
    if (e.has_ctty() && e.pid() == e.sid() && !ttys_.has_master(e.ctty().pts_index()))
      log_.warn("pid {}: its controlling terminal /dev/pts/{} is outside the dumped tree; its session "
                "comes back without one", e.pid(), e.ctty().pts_index());
  }
  return {};
}

void Dumper::remove_written() {
  for (auto& p : written_) ::unlink(p.c_str());
  written_.clear();
  for (auto& p : created_links_) ::unlink(p.c_str());
  created_links_.clear();
}

Result<DumpStats> Dumper::run() {
  auto start = Clock::now();
  TRY(dir_.check_writable());
  TRY(dir_.invalidate());
  log_.info("dumping pid {} into {}", options_.pid, dir_.path());

  ASSIGN_OR_RETURN(auto tree, TaskTree::freeze(options_.pid, log_));
  auto frozen_at = Clock::now();
  for (auto& p : tree->processes())
    for (auto& t : p.threads) tree_tids_.push_back(t.tid());
  std::vector<DumpedProcess> images(tree->processes().size());
  Status st;
  for (size_t i = 0; i < images.size() && st; i++) {
    // Parents come first: a child's memory still shared with its parent is
    // found against the parent's, already dumped and still frozen.
    ParentMemory parent;
    for (size_t j = 0; j < i; j++)
      if (tree->processes()[j].pid == tree->processes()[i].ppid && !tree->processes()[j].zombie)
        parent = ParentMemory{tree->processes()[j].pid, &images[j].mm};
    st = dump_process(tree->processes()[i], images[i], parent);
  }
  if (st) st = check_external_pipes(*tree);
  if (st) st = check_ttys(images);
  if (st) {
    std::set<pid_t> pids;
    for (auto& p : tree->processes()) pids.insert(p.pid);
    st = unix_sockets_.check_peers(pids, external_, files_.mutable_entries());
    if (st) st = unix_sockets_.check_named(pids, options_.leave_running);
  }
  if (st) st = inet_sockets_.check_peers();
  if (st && inet_sockets_.size()) log_.info("{} inet socket(s), their peers checked", inet_sockets_.size());
  stats_.processes = static_cast<unsigned>(tree->processes().size());
  stats_.threads = tree->thread_count();
  stats_.page_bytes = stats_.pages_dumped * 4096;
  // Every page is in the page images now (splice copied it into the page
  // cache), so a tree that stays may run again before the images are synced.
  if (st && options_.leave_running) {
    inet_sockets_.finish(false);  // repair mode off before the tree runs again
    tree->release();
    stats_.frozen_ns = ns_since(frozen_at);
    log_.info("tree released, left running");
    // Running again: its connections must talk again (out of repair mode
    // first). A lock we cannot remove would leave them silent: the dump fails.
    if (auto removed = net_lock_->remove(); !removed)
      st = std::unexpected(removed.error().context("after the dump, removing the network lock"));
  }
  NetworkLock::Kept kept_lock;
  if (st) {
    auto kept = keep_network_lock();
    if (kept) kept_lock = *kept;
    else st = std::unexpected(kept.error());
  }
  // The one destructive step, as late as can be (only files.img and the
  // inventory are written after it), and only when the tree will be killed:
  // connections not yet accepted (unix and TCP) are accepted to read the
  // data their clients sent.
  auto accept_pending = [&]() -> Status {
    if (options_.leave_running) return {};
    TRY(unix_sockets_.accept_pending(files_.mutable_entries()));
    return inet_sockets_.take_pending(files_.mutable_entries());
  };
  if (st) st = write_images(images, tree->root(), accept_pending, kept_lock);
  if (!st) {
    remove_written();
    images.clear();  // drops unfinished page files
    inet_sockets_.finish(false);
    tree->release();
    remove_network_lock("dump failed");
    log_.info("dump failed; the tree was released and keeps running");
    return std::unexpected(st.error());
  }
  if (!options_.leave_running) {
    // Only a complete, synced image set may cost the tree its life.
    tree->kill();
    // Its TCP sockets died in repair mode: closed without FIN or RST.
    inet_sockets_.finish(true);
    stats_.frozen_ns = ns_since(frozen_at);
    log_.info("tree killed after a complete dump");
    // The dump's own rules go now; a kept lock (peers outside) stays.
    if (kept_lock.table.empty()) remove_network_lock("tree killed");
    else net_lock_.reset();
  }
  stats_.total_ns = ns_since(start);
  return stats_;
}

}  // namespace

Result<DumpStats> dump(const DumpOptions& options) {
  // Bad options are refused before anything is touched.
  ASSIGN_OR_RETURN(auto policy, GhostPolicy::from_options(options.ghost_limit, options.ghost_policy));
  ASSIGN_OR_RETURN(auto external, ExternalPolicy::from_options(options));
  ASSIGN_OR_RETURN(NetworkLockMode lock_mode, parse_network_lock_mode(options.network_lock));
  // Creates nothing yet: the first TCP connection makes the table.
  ASSIGN_OR_RETURN(auto net_lock, NetworkLock::create(lock_mode, std::to_string(options.pid), Logger(options.log)));
  Dumper d(options, std::move(policy), std::move(external), std::move(net_lock));
  return d.run();
}

}  // namespace minicriu
