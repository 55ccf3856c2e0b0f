#include "images/image_chain.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "base/page.hpp"
#include "images/image_dir.hpp"
#include "images/image_io.hpp"

namespace minicriu {

namespace {

constexpr int kMaxChain = 64;

Result<ResolvedPages> resolve(const std::string& dir, const img::Inventory& inv, pid_t pid,
                              const std::vector<img::PagemapEntry>& pagemap, int depth) {
  if (depth > kMaxChain) return failf("{}: the chain of parent images is longer than {} (a loop?)", dir, kMaxChain);
  ImageDir d(dir);
  ResolvedPages out;
  // Each lane's file holds its entries' bytes in pagemap order.
  std::vector<uint64_t> off(1, 0);
  bool any_parent = false;
  for (auto& e : pagemap) {
    uint64_t len = uint64_t{e.nr_pages()} * kPageSize;
    if (e.in_parent()) {
      any_parent = true;
      continue;
    }
    if (e.lane() >= ImageDir::kMaxPageLanes)
      return failf("{}: pid {}: the pagemap run at {:#x} names page file {} (at most {})", dir, pid, e.vaddr(),
                   e.lane(), ImageDir::kMaxPageLanes - 1);
    if (e.lane() >= off.size()) off.resize(e.lane() + 1, 0);
    out.runs.push_back({e.vaddr(), e.vaddr() + len, e.lane(), off[e.lane()]});
    off[e.lane()] += len;
  }
  for (uint32_t lane = 0; lane < off.size(); lane++) {
    out.files.push_back(d.pages(pid, lane));
    struct stat st{};
    if (::stat(out.files[lane].c_str(), &st) != 0)
      return failf_errno("cannot stat the page image {}", out.files[lane]);
    if (static_cast<uint64_t>(st.st_size) != off[lane])
      return failf("{} holds {} bytes, its pagemap describes {} (truncated or mismatched page image)",
                   out.files[lane], st.st_size, off[lane]);
    out.bytes += off[lane];
  }
  if (any_parent) {
    std::string parent = parent_images_dir(dir, inv);
    if (parent.empty())
      return failf("{}: pagemap-{}.img leaves pages in the parent images, but the inventory names none", dir, pid);
    auto inv_parent = read_single_image<img::Inventory>(ImageDir(parent).inventory(), ImageKind::inventory);
    if (!inv_parent)
      return std::unexpected(inv_parent.error().context(fmt::format("{}: its parent images {}", dir, parent)));
    ASSIGN_OR_RETURN(auto pm, read_all_images<img::PagemapEntry>(ImageDir(parent).pagemap(pid), ImageKind::pagemap));
    ASSIGN_OR_RETURN(ResolvedPages up, resolve(parent, *inv_parent, pid, pm, depth + 1));
    auto base = static_cast<uint32_t>(out.files.size());
    for (auto& f : up.files) out.files.push_back(f);
    for (auto& e : pagemap) {
      if (!e.in_parent()) continue;
      uint64_t start = e.vaddr(), end = start + uint64_t{e.nr_pages()} * kPageSize;
      auto it = std::upper_bound(up.runs.begin(), up.runs.end(), start,
                                 [](uint64_t a, const PageRun& r) { return a < r.end; });
      for (uint64_t at = start; at < end; ++it) {
        if (it == up.runs.end() || it->start > at)
          return failf("pid {}: page {:#x} is left in the parent images {}, which lack it", pid, at, parent);
        uint64_t piece_end = std::min(end, it->end);
        out.runs.push_back({at, piece_end, base + it->file, it->offset + (at - it->start)});
        at = piece_end;
      }
    }
  }
  std::sort(out.runs.begin(), out.runs.end(), [](auto& a, auto& b) { return a.start < b.start; });
  for (size_t i = 1; i < out.runs.size(); i++)
    if (out.runs[i].start < out.runs[i - 1].end)
      return failf("{}: pid {}: pagemap runs at {:#x} and {:#x} overlap", dir, pid, out.runs[i - 1].start,
                   out.runs[i].start);
  return out;
}

}  // namespace

std::string parent_images_dir(const std::string& dir, const img::Inventory& inv) {
  const std::string& p = inv.parent_images();
  if (p.empty()) return "";
  return p[0] == '/' ? p : dir + "/" + p;
}

Result<ChainLink> load_chain_link(const std::string& dir) {
  ImageDir d(dir);
  ChainLink link;
  link.dir = dir;
  ASSIGN_OR_RETURN(link.inventory,
                   with_context(read_single_image<img::Inventory>(d.inventory(), ImageKind::inventory),
                                fmt::format("--prev-images-dir {} is not a complete dump or pre-dump", dir)));
  ASSIGN_OR_RETURN(auto pstree, read_all_images<img::ProcessEntry>(d.pstree(), ImageKind::pstree));
  for (auto& e : pstree) {
    if (e.zombie()) continue;
    auto pid = static_cast<pid_t>(e.pid());
    ASSIGN_OR_RETURN(link.mm[pid], read_single_image<img::MmCore>(d.mm(pid), ImageKind::mm));
    ASSIGN_OR_RETURN(link.pagemap[pid], read_all_images<img::PagemapEntry>(d.pagemap(pid), ImageKind::pagemap));
  }
  return link;
}

Result<ResolvedPages> resolve_pages(const std::string& dir, const img::Inventory& inv, pid_t pid,
                                    const std::vector<img::PagemapEntry>& pagemap) {
  return resolve(dir, inv, pid, pagemap, 0);
}

Result<TreeIdentity> tree_identity(pid_t root) {
  TreeIdentity id;
  std::ifstream in(fmt::format("/proc/{}/stat", root));
  std::stringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  auto close = s.rfind(')');
  if (close == std::string::npos) return failf("pid {}: cannot read /proc/{}/stat", root, root);
  std::istringstream fields(s.substr(close + 2));
  std::string f;
  // Fields from 3 (state) on: starttime is field 22.
  for (int i = 3; i <= 22 && fields >> f; i++)
    if (i == 22) id.start_time = std::stoull(f);
  char buf[4096];
  ssize_t n = ::readlink(fmt::format("/proc/{}/exe", root).c_str(), buf, sizeof(buf));
  if (n > 0) id.exe.assign(buf, static_cast<size_t>(n));
  return id;
}

}  // namespace minicriu
