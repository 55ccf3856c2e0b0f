// `minicriu show`: every image of a checkpoint, decoded for people or as JSON.
#include <google/protobuf/util/json_util.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

#include "base/error.hpp"
#include "images/image_dir.hpp"
#include "images/image_io.hpp"
#include "fs/tty.hpp"
#include "net/inet_socket.hpp"
#include "net/unix_named.hpp"
#include "net/unix_socket.hpp"
#include "minicriu.pb.h"

namespace minicriu {

namespace {

std::string hex(uint64_t v) { return fmt::format("{:#x}", v); }

const char* vma_kind_name(img::VmaKind k) {
  switch (k) {
    case img::VMA_ANON_PRIVATE: return "anon-private";
    case img::VMA_ANON_SHARED: return "anon-shared";
    case img::VMA_FILE_PRIVATE: return "file-private";
    case img::VMA_FILE_SHARED: return "file-shared";
    case img::VMA_VDSO: return "vdso";
    case img::VMA_VVAR: return "vvar";
    case img::VMA_VVAR_VCLOCK: return "vvar_vclock";
    case img::VMA_VSYSCALL: return "vsyscall";
    case img::VMA_SYSV_SHM: return "sysv-shm";
    default: return "?";
  }
}

std::string prot_string(uint32_t prot) {
  return fmt::format("{}{}{}", prot & 1 ? 'r' : '-', prot & 2 ? 'w' : '-', prot & 4 ? 'x' : '-');
}

Result<img::CheckpointView> load(const ImageDir& dir) {
  img::CheckpointView c;
  ASSIGN_OR_RETURN(*c.mutable_inventory(),
                   read_single_image<img::Inventory>(dir.inventory(), ImageKind::inventory));
  ASSIGN_OR_RETURN(auto pstree, read_all_images<img::ProcessEntry>(dir.pstree(), ImageKind::pstree));
  ASSIGN_OR_RETURN(auto files, read_all_images<img::FileEntry>(dir.files(), ImageKind::files));
  for (auto& f : files) *c.add_files() = std::move(f);
  ASSIGN_OR_RETURN(auto shmem, read_all_images<img::ShmemObject>(dir.shmem(), ImageKind::shmem));
  for (auto& o : shmem) *c.add_shmem() = std::move(o);
  ASSIGN_OR_RETURN(auto pipes, read_all_images<img::PipeData>(dir.pipes(), ImageKind::pipes));
  for (auto& p : pipes) *c.add_pipes() = std::move(p);
  ASSIGN_OR_RETURN(auto ghosts, read_all_images<img::GhostFile>(dir.ghosts(), ImageKind::ghosts));
  for (auto& g : ghosts) *c.add_ghosts() = std::move(g);
  for (auto& p : pstree) {
    pid_t pid = static_cast<pid_t>(p.pid());
    img::ProcessView* proc = c.add_processes();
    *proc->mutable_pstree() = p;
    if (p.zombie()) continue;
    ASSIGN_OR_RETURN(*proc->mutable_core(), read_single_image<img::ProcessCore>(dir.core(pid), ImageKind::core));
    ASSIGN_OR_RETURN(*proc->mutable_mm(), read_single_image<img::MmCore>(dir.mm(pid), ImageKind::mm));
    ASSIGN_OR_RETURN(auto pagemap, read_all_images<img::PagemapEntry>(dir.pagemap(pid), ImageKind::pagemap));
    for (auto& e : pagemap) *proc->add_pagemap() = e;
    ASSIGN_OR_RETURN(auto fds, read_all_images<img::FdEntry>(dir.fdinfo(pid), ImageKind::fdinfo));
    for (auto& e : fds) *proc->add_fds() = e;
    struct stat st;
    if (::stat(dir.pages(pid).c_str(), &st) != 0)
      return failf_errno("cannot stat page image {}", dir.pages(pid));
    proc->set_pages_file_size(static_cast<uint64_t>(st.st_size));
  }
  return c;
}

std::string file_summary(const google::protobuf::RepeatedPtrField<img::FileEntry>& files, uint32_t id) {
  for (auto& f : files) {
    if (f.id() != id) continue;
    if (f.has_reg())
      return fmt::format("{} (flags {:#o}, pos {}{})", f.reg().path(), f.reg().flags(), f.reg().pos(),
                         f.reg().ghost_id() ? fmt::format(", ghost {}", f.reg().ghost_id())
                         : f.reg().remove_after_restore() ? ", link remap"
                                                          : "");
    if (f.has_fifo())
      return fmt::format("fifo {} {} end{}", f.fifo().path(), (f.fifo().flags() & 3) == 0 ? "read" : "write",
                         (f.fifo().flags() & 04000) ? ", non-blocking" : "");
    if (f.has_memfd())
      return fmt::format("memfd (shmem {}, flags {:#o}, pos {})", f.memfd().shmem_id(), f.memfd().flags(),
                         f.memfd().pos());
    if (f.has_pipe())
      return fmt::format("pipe:[{}] {} end{}", f.pipe().pipe_ino(),
                         (f.pipe().flags() & 3) == 0 ? "read" : "write",
                         (f.pipe().flags() & 04000) ? ", non-blocking" : "");
    if (f.has_eventfd())
      return fmt::format("eventfd (count {}{}, flags {:#o})", f.eventfd().count(),
                         f.eventfd().semaphore() ? ", semaphore" : "", f.eventfd().flags());
    if (f.has_timerfd()) {
      auto& t = f.timerfd();
      return fmt::format("timerfd (clock {}, {}, left {} ns, interval {} ns, {} unread tick(s), flags {:#o})",
                         t.clockid(), t.settime_flags() & TFD_TIMER_ABSTIME ? "absolute" : "relative", t.remaining_ns(),
                         t.interval_ns(), t.ticks(), t.flags());
    }
    if (f.has_signalfd())
      return fmt::format("signalfd (mask {:#x}, flags {:#o})", f.signalfd().mask(), f.signalfd().flags());
    if (f.has_epoll()) {
      std::string targets;
      for (auto& t : f.epoll().targets())
        targets += fmt::format("{}fd {} events {:#x} data {:#x}", targets.empty() ? "" : "; ", t.fd(),
                               t.events(), t.data());
      return fmt::format("epoll ({} target(s){}{})", f.epoll().targets_size(), targets.empty() ? "" : ": ",
                         targets);
    }
    if (f.has_pidfd())
      return fmt::format("pidfd (pid {}, flags {:#o})", f.pidfd().pid(), f.pidfd().flags());
    if (f.has_unix_sk()) {
      const auto& sk = f.unix_sk();
      if (sk.external())
        return fmt::format("{}; external: restore with --inherit-fd fd[N]:socket:[{}]{}",
                           unix_external_object(sk).description, sk.ino(),
                           sk.type() == SOCK_DGRAM && !sk.peer_name().empty()
                               ? " or let it connect to " + sk.peer_name() + " again" : "");
      size_t bytes = 0;
      for (auto& m : sk.queue()) bytes += m.size();
      // A stream's queue is one run of bytes; the other types keep messages.
      std::string queued = sk.type() == SOCK_STREAM
                               ? fmt::format("{} byte(s) queued", bytes)
                               : fmt::format("{} message(s) of {} byte(s) queued", sk.queue_size(), bytes);
      std::string named;
      if (!sk.name().empty()) {
        static const char* const kPath[] = {"", "", " (path unlinked)", " (path replaced by another file)"};
        named = fmt::format(" bound to {}{}", unix_name_display(sk.name()), kPath[sk.path_state() & 3]);
      }
      if (sk.state() == kUnixListening)
        return fmt::format("unix {} socket:[{}]{} listening (backlog {}), {} connection(s) not yet accepted",
                           unix_type_name(static_cast<int>(sk.type())), sk.ino(), named, sk.backlog(),
                           sk.pending_size());
      std::string peer = sk.peer_ino() ? fmt::format("peer socket:[{}]", sk.peer_ino())
                         : sk.state() == kUnixConnected ? std::string("waiting to be accepted")
                                                        : std::string("unconnected");
      return fmt::format("unix {} socket:[{}]{} {}, {}{}", unix_type_name(static_cast<int>(sk.type())),
                         sk.ino(), named, peer, queued, (sk.flags() & 04000) ? ", non-blocking" : "");
    }
    if (f.has_tty()) {
      const auto& t = f.tty();
      if (t.external())
        return fmt::format("pty slave /dev/pts/{} (flags {:#o}), external: its master was outside the tree; "
                           "reopened by path at restore", t.index(), t.flags());
      return fmt::format("pty {} /dev/pts/{} (flags {:#o}{}): {}", t.master() ? "master" : "slave", t.index(),
                         t.flags(), t.exclusive() ? ", exclusive" : "",
                         pty_state_summary(t.pty()));
    }
    if (f.has_inet_sk()) {
      const auto& sk = f.inet_sk();
      std::string s = fmt::format("{} socket:[{}]", describe_inet_socket(sk), sk.ino());
      if (sk.state() == 10) s += fmt::format(", backlog {}", sk.backlog());
      if (sk.has_tcp())
        s += fmt::format(", send queue {} byte(s) ({} unsent), receive queue {} byte(s)",
                         sk.tcp().send_queue().size(), sk.tcp().unsent(), sk.tcp().recv_queue().size());
      if (sk.protocol() == IPPROTO_UDP) {
        size_t bytes = 0;
        for (auto& d : sk.queue()) bytes += d.data().size();
        s += fmt::format(", {} datagram(s) of {} byte(s) queued", sk.queue_size(), bytes);
      }
      if (sk.pending())
        s += fmt::format(", waiting to be accepted (#{}) with {} byte(s) received", sk.pending_order(),
                         sk.pending_received().size());
      if (sk.flags() & 04000) s += ", non-blocking";
      return s;
    }
    if (f.has_inotify()) {
      std::string watches;
      for (auto& w : f.inotify().watches())
        watches += fmt::format("{}wd {} {} mask {:#x}", watches.empty() ? "" : "; ", w.wd(), w.path(), w.mask());
      return fmt::format("inotify ({} watch(es){}{})", f.inotify().watches_size(), watches.empty() ? "" : ": ",
                         watches);
    }
    return fmt::format("file {}", id);
  }
  return fmt::format("missing file {}", id);
}

std::string text(const img::CheckpointView& c) {
  std::string out;
  auto& inv = c.inventory();
  out += fmt::format("checkpoint: root pid {}, {} process(es), kernel {}, minicriu {}, xsave {} bytes\n",
                     inv.root_pid(), c.processes_size(), inv.kernel(), inv.tool_version(), inv.xsave_size());
  if (!inv.network_lock_table().empty())
    out += fmt::format("network lock: {} {} kept until the restore (TCP connections to peers outside the tree)\n",
                       inv.network_lock_backend() == "nftables" ? "nftables table inet" : inv.network_lock_backend() + " chain",
                       inv.network_lock_table());
  for (auto& g : c.ghosts())
    out += fmt::format("ghost {}: {} ({} bytes, {} bytes of data in {} extent(s))\n", g.id(), g.path(),
                       g.size(), g.allocated(), g.extents_size());
  for (auto& o : c.shmem())
    out += fmt::format("shmem {}: {} ({} bytes, {} bytes of data){}\n", o.id(),
                       o.has_sysv()  ? fmt::format("System V segment {} (key {:#x}{})", o.sysv().shmid(),
                                                   static_cast<uint32_t>(o.sysv().key()),
                                                   o.sysv().removed() ? ", removed" : "")
                       : o.memfd() ? "memfd:" + o.name()
                                   : "shared anonymous memory",
                       o.size(),
                       o.allocated(), o.seals() ? fmt::format(", seals {:#x}", o.seals()) : "");
  for (auto& p : c.pipes())
    out += fmt::format("pipe:[{}]: {} bytes queued, capacity {}\n", p.pipe_ino(), p.bytes(), p.capacity());
  for (auto& p : c.processes()) {
    auto& e = p.pstree();
    if (e.zombie()) {
      out += fmt::format("\nprocess {}: zombie of ppid {}, wait status {:#x}\n", e.pid(), e.ppid(),
                         e.exit_status());
      continue;
    }
    uint64_t pages = 0;
    for (auto& pm : p.pagemap()) pages += pm.nr_pages();
    out += fmt::format("\nprocess {} ({}): ppid {}, pgid {}, sid {}, {} thread(s){}\n", e.pid(),
                       p.core().comm(), e.ppid(), e.pgid(), e.sid(), e.tids_size(),
                       e.stopped() ? ", stopped" : "");
    if (e.has_ctty())
      out += fmt::format("  controlling terminal: /dev/pts/{}, foreground group {}\n", e.ctty().pts_index(),
                         e.ctty().foreground_pgid());
    for (auto& t : p.core().threads())
      out += fmt::format("  thread {} ({}): rip {} rsp {} fs_base {}, xsave {} bytes, sigmask {:#x}{}\n",
                         t.tid(), t.comm(), hex(t.regs().rip()), hex(t.regs().rsp()),
                         hex(t.regs().fs_base()), t.xsave().size(), t.blocked_signals(),
                         t.restart() == img::RESTART_REISSUE ? ", restarts its syscall"
                         : t.restart() == img::RESTART_EINTR ? ", syscall returns EINTR" : "");
    out += fmt::format("  memory: {} vma(s), {} page(s) = {} KiB in the page image ({} bytes)\n",
                       p.mm().vmas_size(), pages, pages * 4, p.pages_file_size());
    for (auto& v : p.mm().vmas())
      out += fmt::format("    {:>12x}-{:<12x} {} {:<12} {}{}{}\n", v.start(), v.end(), prot_string(v.prot()),
                         vma_kind_name(v.kind()), v.path(), v.has_pages() ? " [pages]" : "",
                         v.file_id() ? fmt::format(" [file {}]", v.file_id())
                         : v.shmem_id() ? fmt::format(" [shmem {}]", v.shmem_id())
                                        : "");
    out += fmt::format("  fds: {}\n", p.fds_size());
    for (auto& f : p.fds())
      out += fmt::format("    {}: {}{}\n", f.fd(), file_summary(c.files(), f.file_id()),
                         f.cloexec() ? " cloexec" : "");
    out += fmt::format("  cwd: {}\n", file_summary(c.files(), p.core().cwd_file_id()));
    out += fmt::format("  sigactions: {}, itimers: {}, umask {:03o}, pending signals: {}\n",
                       p.core().sigactions_size(), p.core().itimers_size(), p.core().umask(),
                       p.core().shared_pending_size());
  }
  return out;
}

Result<std::string> json(const img::CheckpointView& c) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.preserve_proto_field_names = true;
  std::string out;
  auto st = google::protobuf::util::MessageToJsonString(c, &out, opts);
  if (!st.ok()) return failf("JSON encoding failed: {}", st.ToString());
  return out;
}

}  // namespace

Result<std::string> show(const ShowOptions& options) {
  ImageDir dir(options.images_dir);
  auto c = load(dir);
  if (!c) return std::unexpected(c.error().context(fmt::format("{} is not a readable checkpoint", dir.path())));
  if (options.json) return json(*c);
  return text(*c);
}

}  // namespace minicriu
