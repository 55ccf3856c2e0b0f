// `minicriu show`: every image of a checkpoint, decoded for people or as JSON.
// Each kind describes its own entries and images.
#include <google/protobuf/util/json_util.h>

#include "base/error.hpp"
#include "base/log.hpp"
#include "images/checkpoint.hpp"
#include "images/image_dir.hpp"
#include "kinds/kind_set.hpp"
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

// The whole checkpoint as one message, for JSON: the orchestration's images
// and each kind's own.
img::CheckpointView view(const Checkpoint& ckpt, const KindSet& kinds) {
  img::CheckpointView c;
  *c.mutable_inventory() = ckpt.inventory;
  for (auto& f : ckpt.files) *c.add_files() = f;
  for (auto& p : ckpt.processes) {
    img::ProcessView* proc = c.add_processes();
    *proc->mutable_pstree() = p.entry;
    if (p.entry.zombie()) continue;
    *proc->mutable_core() = p.core;
    *proc->mutable_mm() = p.mm;
    for (auto& e : p.pagemap) *proc->add_pagemap() = e;
    for (auto& e : p.fds) *proc->add_fds() = e;
    proc->set_pages_file_size(p.pages_file_size);
  }
  for (auto& k : kinds.kinds()) k->add_to_view(c);
  return c;
}

std::string file_summary(const Checkpoint& c, const KindSet& kinds, uint32_t id) {
  const img::FileEntry* f = c.file(id);
  return f ? kinds.describe(*f) : fmt::format("missing file {}", id);
}

std::string text(const Checkpoint& c, const KindSet& kinds) {
  std::string out;
  auto& inv = c.inventory;
  out += fmt::format("checkpoint: root pid {}, {} process(es), kernel {}, minicriu {}, xsave {} bytes\n",
                     inv.root_pid(), c.processes.size(), inv.kernel(), inv.tool_version(), inv.xsave_size());
  if (!inv.network_lock_table().empty())
    out += fmt::format("network lock: {} {} kept until the restore (TCP connections to peers outside the tree)\n",
                       inv.network_lock_backend() == "nftables" ? "nftables table inet" : inv.network_lock_backend() + " chain",
                       inv.network_lock_table());
  for (auto& k : kinds.kinds()) k->describe_images(out);
  for (auto& p : c.processes) {
    auto& e = p.entry;
    if (e.zombie()) {
      out += fmt::format("\nprocess {}: zombie of ppid {}, wait status {:#x}\n", e.pid(), e.ppid(),
                         e.exit_status());
      continue;
    }
    uint64_t pages = 0;
    for (auto& pm : p.pagemap) pages += pm.nr_pages();
    out += fmt::format("\nprocess {} ({}): ppid {}, pgid {}, sid {}, {} thread(s){}\n", e.pid(),
                       p.core.comm(), e.ppid(), e.pgid(), e.sid(), e.tids_size(),
                       e.stopped() ? ", stopped" : "");
    for (auto& k : kinds.kinds()) k->describe_process(p, out);
    for (auto& t : p.core.threads())
      out += fmt::format("  thread {} ({}): rip {} rsp {} fs_base {}, xsave {} bytes, sigmask {:#x}{}\n",
                         t.tid(), t.comm(), hex(t.regs().rip()), hex(t.regs().rsp()),
                         hex(t.regs().fs_base()), t.xsave().size(), t.blocked_signals(),
                         t.restart() == img::RESTART_REISSUE ? ", restarts its syscall"
                         : t.restart() == img::RESTART_EINTR ? ", syscall returns EINTR" : "");
    out += fmt::format("  memory: {} vma(s), {} page(s) = {} KiB in the page image ({} bytes)\n",
                       p.mm.vmas_size(), pages, pages * 4, p.pages_file_size);
    for (auto& v : p.mm.vmas())
      out += fmt::format("    {:>12x}-{:<12x} {} {:<12} {}{}{}\n", v.start(), v.end(), prot_string(v.prot()),
                         vma_kind_name(v.kind()), v.path(), v.has_pages() ? " [pages]" : "",
                         v.file_id() ? fmt::format(" [file {}]", v.file_id())
                         : v.shmem_id() ? fmt::format(" [shmem {}]", v.shmem_id())
                                        : "");
    out += fmt::format("  fds: {}\n", p.fds.size());
    for (auto& f : p.fds)
      out += fmt::format("    {}: {}{}\n", f.fd(), file_summary(c, kinds, f.file_id()),
                         f.cloexec() ? " cloexec" : "");
    out += fmt::format("  cwd: {}\n", file_summary(c, kinds, p.core.cwd_file_id()));
    out += fmt::format("  sigactions: {}, itimers: {}, umask {:03o}, pending signals: {}\n",
                       p.core.sigactions_size(), p.core.itimers_size(), p.core.umask(),
                       p.core.shared_pending_size());
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

Result<std::string> show_checkpoint(const ShowOptions& options, const ImageDir& dir) {
  ASSIGN_OR_RETURN(Checkpoint ckpt, load_checkpoint(dir));
  KindSet kinds = KindSet::make();
  RestoreOptions none;
  Logger quiet;
  RestoreEnv env{none, dir, ckpt, quiet};
  TRY(kinds.each([&](Kind& k) { return k.load(env); }));
  if (options.json) return json(view(ckpt, kinds));
  return text(ckpt, kinds);
}

}  // namespace

Result<std::string> show(const ShowOptions& options) {
  ImageDir dir(options.images_dir);
  auto out = show_checkpoint(options, dir);
  if (!out) return std::unexpected(out.error().context(fmt::format("{} is not a readable checkpoint", dir.path())));
  return out;
}

}  // namespace minicriu
