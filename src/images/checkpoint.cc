#include "images/checkpoint.hpp"

#include <sys/stat.h>

#include <algorithm>

#include "base/page.hpp"

#include "images/image_io.hpp"

namespace minicriu {

const img::FileEntry* Checkpoint::file(uint32_t id) const {
  for (auto& f : files)
    if (f.id() == id) return &f;
  return nullptr;
}

const ProcessImages* Checkpoint::process(pid_t pid) const {
  for (auto& p : processes)
    if (static_cast<pid_t>(p.entry.pid()) == pid) return &p;
  return nullptr;
}

namespace {

// The pages of a pagemap as page_runs, when a page server holds them.
void runs_of_pagemap(ProcessImages& p) {
  p.pages_file_size = 0;
  for (auto& e : p.pagemap) {
    uint64_t len = uint64_t{e.nr_pages()} * kPageSize;
    if (!e.in_parent()) p.pages_file_size += len;
    p.page_runs.push_back({e.vaddr(), e.vaddr() + len, 0, 0});
  }
  std::sort(p.page_runs.begin(), p.page_runs.end(), [](auto& a, auto& b) { return a.start < b.start; });
}

Status load_process(const ImageDir& dir, const img::Inventory& inv, ProcessImages& p, bool pages_elsewhere) {
  pid_t pid = static_cast<pid_t>(p.entry.pid());
  ASSIGN_OR_RETURN(p.core, read_single_image<img::ProcessCore>(dir.core(pid), ImageKind::core));
  ASSIGN_OR_RETURN(p.mm, read_single_image<img::MmCore>(dir.mm(pid), ImageKind::mm));
  ASSIGN_OR_RETURN(p.pagemap,
                   read_all_images<img::PagemapEntry>(dir.pagemap(pid), ImageKind::pagemap));
  ASSIGN_OR_RETURN(p.fds, read_all_images<img::FdEntry>(dir.fdinfo(pid), ImageKind::fdinfo));
  if (pages_elsewhere) {
    p.pages_path = "the page server";
    runs_of_pagemap(p);
    return {};
  }
  p.pages_path = dir.pages(pid);
  struct stat st;
  if (::stat(p.pages_path.c_str(), &st) != 0) {
    if (errno == ENOENT && !inv.page_server().empty())
      return failf("the pages of this checkpoint went to the page server {} (dump --page-server): restore with "
                   "--page-server {}, or from that server's directory", inv.page_server(), inv.page_server());
    return failf_errno("cannot stat the page image {}", p.pages_path);
  }
  if (!S_ISREG(st.st_mode)) return failf("page image {} is not a regular file", p.pages_path);
  p.pages_file_size = static_cast<uint64_t>(st.st_size);
  ASSIGN_OR_RETURN(auto resolved, resolve_pages(dir.path(), inv, pid, p.pagemap));
  p.pages_file_size = resolved.bytes;  // every lane's file (each checked against its entries)
  p.page_files = std::move(resolved.files);
  p.page_runs = std::move(resolved.runs);
  return {};
}

}  // namespace

Result<Checkpoint> load_checkpoint(const ImageDir& dir, bool pages_elsewhere) {
  Checkpoint c;
  ASSIGN_OR_RETURN(c.inventory,
                   with_context(read_single_image<img::Inventory>(dir.inventory(), ImageKind::inventory),
                                fmt::format("{} is not a complete checkpoint", dir.path())));
  if (c.inventory.pre_dump())
    return failf("{} is a pre-dump (memory only, the tree ran on): restore from the dump made after it with "
                 "--prev-images-dir",
                 dir.path());
  ASSIGN_OR_RETURN(auto pstree, read_all_images<img::ProcessEntry>(dir.pstree(), ImageKind::pstree));
  ASSIGN_OR_RETURN(c.files, read_all_images<img::FileEntry>(dir.files(), ImageKind::files));
  for (auto& e : pstree) {
    ProcessImages p;
    p.entry = std::move(e);
    // A zombie is its pstree entry alone.
    if (!p.entry.zombie()) TRY(with_context(load_process(dir, c.inventory, p, pages_elsewhere), fmt::format("pid {}", p.entry.pid())));
    c.processes.push_back(std::move(p));
  }
  return c;
}

}  // namespace minicriu
