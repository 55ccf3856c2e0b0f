// `minicriu show`: every image of a checkpoint, decoded for people or as JSON
// (docs/show-json.md), a summary first; with --backtrace each thread's stack.
// Each kind describes its own entries and images, and counts its own objects.
#include <google/protobuf/util/json_util.h>

#include <filesystem>
#include <map>
#include <set>

#include "base/error.hpp"
#include "base/log.hpp"
#include "base/page.hpp"
#include "core/backtrace.hpp"
#include "core/inspect.hpp"
#include "images/image_chain.hpp"
#include "minicriu.pb.h"

namespace minicriu {

namespace {

// Raised only when a field changes meaning or goes away (docs/show-json.md).
// 2: paths, names and comms are bytes (base64 in the JSON), not strings.
constexpr uint32_t kJsonSchemaVersion = 2;

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
    case img::VMA_AIO_RING: return "aio-ring";
    case img::VMA_PACKET_RING: return "packet-ring";
    default: return "?";
  }
}

std::string prot_string(uint32_t prot) {
  return fmt::format("{}{}{}", prot & 1 ? 'r' : '-', prot & 2 ? 'w' : '-', prot & 4 ? 'x' : '-');
}

// Each thread's stack, by tid, for the processes that have memory.
using Stacks = std::map<uint32_t, img::ThreadStack>;

Result<Stacks> unwind_all(const InspectedCheckpoint& ic) {
  Stacks stacks;
  for (auto& p : ic.checkpoint.processes) {
    if (p.entry.zombie()) continue;
    ASSIGN_OR_RETURN(auto memory, with_context(ProcessMemory::open(ic.checkpoint, p, ic.kinds),
                                               fmt::format("pid {}", p.entry.pid())));
    auto modules = ModuleMap::build(*memory);
    for (auto& t : p.core.threads()) stacks[t.tid()] = unwind_thread(t, *memory, *modules);
  }
  return stacks;
}

// Bytes of the process's page image that lie in each of its VMAs (a run of
// the pagemap may span VMAs that touch).
std::vector<uint64_t> image_bytes_by_vma(const ProcessImages& p) {
  const auto& vmas = p.mm.vmas();
  std::vector<uint64_t> out(static_cast<size_t>(vmas.size()), 0);
  for (auto& e : p.pagemap) {
    if (e.in_parent()) continue;  // in the parent images, not this one's
    uint64_t start = e.vaddr(), end = start + uint64_t{e.nr_pages()} * kPageSize;
    auto it = std::upper_bound(vmas.begin(), vmas.end(), start,
                               [](uint64_t a, const img::Vma& v) { return a < v.end(); });
    for (; it != vmas.end() && it->start() < end; ++it)
      out[static_cast<size_t>(it - vmas.begin())] += std::min(end, it->end()) - std::max(start, it->start());
  }
  return out;
}

// The name of the kind of a file (validate_images saw that it has one).
std::string kind_name(const InspectedCheckpoint& ic, uint32_t file_id) {
  const img::FileEntry* f = ic.checkpoint.file(file_id);
  auto kind = f ? ic.kinds.owner(*f) : Result<Kind*>(nullptr);
  return kind && *kind ? (*kind)->name() : "unknown";
}

// The figures of the summary: the orchestration's images counted here, each
// kind's own objects counted by the kind.
img::ShowSummary summarize(const InspectedCheckpoint& ic) {
  const Checkpoint& c = ic.checkpoint;
  img::ShowSummary s;
  std::map<int, img::MemoryTally> memory;
  std::map<std::string, std::pair<uint32_t, std::set<uint32_t>>> fds;
  for (auto& p : c.processes) {
    if (p.entry.zombie()) {
      s.set_zombies(s.zombies() + 1);
      continue;
    }
    s.set_processes(s.processes() + 1);
    s.set_threads(s.threads() + static_cast<uint32_t>(p.entry.tids_size()));
    s.set_page_image_bytes(s.page_image_bytes() + p.pages_file_size);
    auto in_image = image_bytes_by_vma(p);
    for (int i = 0; i < p.mm.vmas_size(); i++) {
      const img::Vma& v = p.mm.vmas(i);
      img::MemoryTally& t = memory[v.kind()];
      t.set_kind(vma_kind_name(v.kind()));
      t.set_vmas(t.vmas() + 1);
      t.set_mapped_bytes(t.mapped_bytes() + (v.end() - v.start()));
      t.set_image_bytes(t.image_bytes() + in_image[static_cast<size_t>(i)]);
    }
    for (auto& fd : p.fds) {
      auto& tally = fds[kind_name(ic, fd.file_id())];
      tally.first++;
      tally.second.insert(fd.file_id());
    }
  }
  for (auto& [k, t] : memory) *s.add_memory() = t;
  for (auto& [name, t] : fds) {
    img::FdTally* f = s.add_fds();
    f->set_kind(name);
    f->set_fds(t.first);
    f->set_files(static_cast<uint32_t>(t.second.size()));
  }
  std::set<std::string> external;
  for (auto& k : ic.kinds.kinds()) k->list_external(ic.env, external);
  for (auto& key : external) s.add_external(key);
  for (auto& k : ic.kinds.kinds()) k->summarize(s);
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator(ic.dir.path(), ec)) {
    std::error_code size_ec;
    if (!e.is_regular_file(size_ec)) continue;
    s.set_image_files(s.image_files() + 1);
    s.set_image_bytes(s.image_bytes() + e.file_size(size_ec));
  }
  return s;
}

std::string summary_text(const img::ShowSummary& s) {
  std::string out = fmt::format("summary: {} process(es){}, {} thread(s); images: {} in {} file(s), {} of them pages\n",
                                s.processes(), s.zombies() ? fmt::format(" and {} zombie(s)", s.zombies()) : "",
                                s.threads(), format_bytes(s.image_bytes()), s.image_files(),
                                format_bytes(s.page_image_bytes()));
  for (auto& m : s.memory())
    out += fmt::format("  memory {:<12} {:>4} vma(s), {:>10} mapped, {:>10} in the page images\n", m.kind(), m.vmas(),
                       format_bytes(m.mapped_bytes()), format_bytes(m.image_bytes()));
  std::string fds;
  for (auto& f : s.fds()) fds += fmt::format("{}{} {} ({} open file(s))", fds.empty() ? "" : ", ", f.fds(), f.kind(), f.files());
  out += fmt::format("  fds: {}\n", fds.empty() ? "none" : fds);
  std::string ext;
  for (auto& e : s.external()) ext += (ext.empty() ? "" : ", ") + e;
  out += fmt::format("  external objects: {}\n", ext.empty() ? "none" : ext);
  for (auto& o : s.objects()) out += fmt::format("  {}: {}, {} of data\n", o.what(), o.count(), format_bytes(o.bytes()));
  return out;
}

// The whole checkpoint as one message, for JSON: the orchestration's images
// and each kind's own.
img::CheckpointView view(const InspectedCheckpoint& ic, const Stacks& stacks) {
  const Checkpoint& ckpt = ic.checkpoint;
  img::CheckpointView c;
  c.set_schema_version(kJsonSchemaVersion);
  *c.mutable_summary() = summarize(ic);
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
    for (auto& t : p.core.threads())
      if (auto it = stacks.find(t.tid()); it != stacks.end()) *proc->add_stacks() = it->second;
  }
  for (auto& k : ic.kinds.kinds()) k->add_to_view(c);
  return c;
}

std::string file_summary(const Checkpoint& c, const KindSet& kinds, uint32_t id) {
  const img::FileEntry* f = c.file(id);
  return f ? kinds.describe(*f) : fmt::format("missing file {}", id);
}

void process_text(const InspectedCheckpoint& ic, const ProcessImages& p, const Stacks& stacks, std::string& out) {
  const Checkpoint& c = ic.checkpoint;
  const KindSet& kinds = ic.kinds;
  auto& e = p.entry;
  if (e.zombie()) {
    out += fmt::format("\nprocess {}: zombie of ppid {}, wait status {:#x}\n", e.pid(), e.ppid(), e.exit_status());
    return;
  }
  uint64_t pages = 0, in_parent = 0;
  for (auto& pm : p.pagemap) (pm.in_parent() ? in_parent : pages) += pm.nr_pages();
  out += fmt::format("\nprocess {} ({}): ppid {}, pgid {}, sid {}, {} thread(s){}\n", e.pid(), p.core.comm(), e.ppid(),
                     e.pgid(), e.sid(), e.tids_size(), e.stopped() ? ", stopped" : "");
  for (auto& k : kinds.kinds()) k->describe_process(p, out);
  for (auto& t : p.core.threads()) {
    out += fmt::format("  thread {} ({}): rip {} rsp {} fs_base {}, xsave {} bytes, sigmask {:#x}{}\n", t.tid(),
                       t.comm(), hex(t.regs().rip()), hex(t.regs().rsp()), hex(t.regs().fs_base()), t.xsave().size(),
                       t.blocked_signals(),
                       t.restart() == img::RESTART_REISSUE ? ", restarts its syscall"
                       : t.restart() == img::RESTART_EINTR ? ", syscall returns EINTR"
                                                           : "");
    if (auto it = stacks.find(t.tid()); it != stacks.end()) out += format_stack(it->second, "      ");
  }
  out += fmt::format("  memory: {} vma(s), {} page(s) = {} KiB in the page image ({} bytes){}\n", p.mm.vmas_size(),
                     pages, pages * kPageSize / 1024, p.pages_file_size,
                     in_parent ? fmt::format(", {} page(s) unchanged in the parent images", in_parent) : "");
  for (auto& v : p.mm.vmas())
    out += fmt::format("    {:>12x}-{:<12x} {} {:<12} {}{}{}\n", v.start(), v.end(), prot_string(v.prot()),
                       vma_kind_name(v.kind()), v.path(), v.has_pages() ? " [pages]" : "",
                       v.file_id()     ? fmt::format(" [file {}]", v.file_id())
                       : v.shmem_id() ? fmt::format(" [shmem {}]", v.shmem_id())
                                      : "");
  out += fmt::format("  fds: {}\n", p.fds.size());
  for (auto& f : p.fds)
    out += fmt::format("    {}: {}{}\n", f.fd(), file_summary(c, kinds, f.file_id()), f.cloexec() ? " cloexec" : "");
  out += fmt::format("  cwd: {}\n", file_summary(c, kinds, p.core.cwd_file_id()));
  out += fmt::format("  sigactions: {}, itimers: {}, umask {:03o}, pending signals: {}\n", p.core.sigactions_size(),
                     p.core.itimers_size(), p.core.umask(), p.core.shared_pending_size());
}

// The chain of parent images (incremental dumps), one line each, up to the
// first full one.
std::string chain_text(const std::string& dir, const img::Inventory& inv) {
  std::string out;
  std::string at = dir;
  img::Inventory cur = inv;
  for (int depth = 0; depth < 64 && !cur.parent_images().empty(); depth++) {
    std::string parent = parent_images_dir(at, cur);
    auto link = load_chain_link(parent);
    if (!link) {
      out += fmt::format("parent images: {} ({}): {}\n", cur.parent_images(), parent, link.error().what());
      break;
    }
    uint64_t own = 0, up = 0;
    for (auto& [pid, pm] : link->pagemap)
      for (auto& e : pm) (e.in_parent() ? up : own) += e.nr_pages();
    out += fmt::format("parent images: {} ({}): a {} of pid {}, {} page(s) of its own, {} in its parent\n",
                       cur.parent_images(), parent, link->inventory.pre_dump() ? "pre-dump" : "dump",
                       link->inventory.root_pid(), own, up);
    at = parent;
    cur = link->inventory;
  }
  return out;
}

std::string text(const InspectedCheckpoint& ic, const Stacks& stacks) {
  const Checkpoint& c = ic.checkpoint;
  std::string out;
  auto& inv = c.inventory;
  out += fmt::format("checkpoint: root pid {}, {} process(es), kernel {}, minicriu {}, xsave {} bytes\n",
                     inv.root_pid(), c.processes.size(), inv.kernel(), inv.tool_version(), inv.xsave_size());
  out += summary_text(summarize(ic));
  if (!inv.network_lock_table().empty())
    out += fmt::format("network lock: {} {} kept until the restore (TCP connections to peers outside the tree)\n",
                       inv.network_lock_backend() == "nftables" ? "nftables table inet"
                                                                : inv.network_lock_backend() + " chain",
                       inv.network_lock_table());
  out += chain_text(ic.dir.path(), inv);
  for (auto& k : ic.kinds.kinds()) k->describe_images(out);
  for (auto& p : c.processes) process_text(ic, p, stacks, out);
  return out;
}

Result<std::string> json(const img::CheckpointView& c) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.preserve_proto_field_names = true;
  // Every field, at its default too: a script finds each name of the schema.
  opts.always_print_primitive_fields = true;
  std::string out;
  auto st = google::protobuf::util::MessageToJsonString(c, &out, opts);
  if (!st.ok()) return failf("JSON encoding failed: {}", st.ToString());
  return out;
}

// A pre-dump holds memory only (no registers, no files): its processes'
// VMAs and pages, and its chain.
img::CheckpointView pre_dump_view(const ChainLink& link) {
  img::CheckpointView c;
  c.set_schema_version(kJsonSchemaVersion);
  *c.mutable_inventory() = link.inventory;
  for (auto& [pid, mm] : link.mm) {
    img::ProcessView* proc = c.add_processes();
    proc->mutable_pstree()->set_pid(pid);
    *proc->mutable_mm() = mm;
    if (auto it = link.pagemap.find(pid); it != link.pagemap.end())
      for (auto& e : it->second) *proc->add_pagemap() = e;
    c.mutable_summary()->set_processes(c.summary().processes() + 1);
  }
  return c;
}

std::string pre_dump_text(const ChainLink& link) {
  std::string out = fmt::format(
      "pre-dump: root pid {}, {} process(es), kernel {}, minicriu {}: memory only, not restorable "
      "(restore the dump made with --prev-images-dir {})\n",
      link.inventory.root_pid(), link.mm.size(), link.inventory.kernel(), link.inventory.tool_version(), link.dir);
  out += chain_text(link.dir, link.inventory);
  for (auto& [pid, mm] : link.mm) {
    uint64_t own = 0, up = 0;
    if (auto it = link.pagemap.find(pid); it != link.pagemap.end())
      for (auto& e : it->second) (e.in_parent() ? up : own) += e.nr_pages();
    out += fmt::format("process {}: {} vma(s), {} page(s) = {} KiB of its own, {} unchanged in the parent images\n",
                       pid, mm.vmas_size(), own, own * kPageSize / 1024, up);
    for (auto& v : mm.vmas())
      out += fmt::format("    {:>12x}-{:<12x} {} {:<12} {}{}\n", v.start(), v.end(), prot_string(v.prot()),
                         vma_kind_name(v.kind()), v.path(), v.has_pages() ? " [pages]" : "");
  }
  return out;
}

}  // namespace

Result<std::string> show(const ShowOptions& options) {
  Logger quiet;
  // A pre-dump is shown from what it holds: memory.
  if (auto link = load_chain_link(options.images_dir); link && link->inventory.pre_dump()) {
    if (options.backtrace)
      return failf("{} is a pre-dump: it holds no registers to unwind (show --backtrace the dump made after it)",
                   options.images_dir);
    if (options.json) return json(pre_dump_view(*link));
    return pre_dump_text(*link);
  }
  ASSIGN_OR_RETURN(auto ic, InspectedCheckpoint::load(options.images_dir, quiet));
  Stacks stacks;
  if (options.backtrace) {
    ASSIGN_OR_RETURN(stacks, unwind_all(*ic));
  }
  if (options.json) return json(view(*ic, stacks));
  return text(*ic, stacks);
}

}  // namespace minicriu
