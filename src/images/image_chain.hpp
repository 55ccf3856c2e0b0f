// Incremental images: a dump (or pre-dump) made with --prev-images-dir
// records its parent images dir (Inventory.parent_images, and a `parent`
// symlink as CRIU makes), and its pagemaps list every present page, marking
// those left unchanged in the parent (PagemapEntry.in_parent). A page marked
// so is read from the parent, and so on up the chain.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "minicriu.pb.h"

namespace minicriu {

// The parent images dir of dir (parent_images resolved against dir), "" if
// the images have none.
std::string parent_images_dir(const std::string& dir, const img::Inventory& inv);

// One images dir of a chain as a dump against it needs it: its processes'
// VMAs and pagemaps (a pre-dump holds nothing else).
struct ChainLink {
  std::string dir;
  img::Inventory inventory;
  std::map<pid_t, img::MmCore> mm;
  std::map<pid_t, std::vector<img::PagemapEntry>> pagemap;
};
[[nodiscard]] Result<ChainLink> load_chain_link(const std::string& dir);

// Where the bytes of a run of pages lie: in files[file] at offset.
struct PageRun {
  uint64_t start = 0, end = 0;
  uint32_t file = 0;
  uint64_t offset = 0;
};
struct ResolvedPages {
  std::vector<std::string> files;  // dir's own page files by lane (PagemapEntry.lane), then the parents'
  std::vector<PageRun> runs;       // sorted by address, not overlapping
  uint64_t bytes = 0;              // in dir's own page files (every lane)
};

// Every page of pid's pagemap in dir, followed up the chain for those in a
// parent. A page marked in the parent that the parent lacks, a page image
// of the wrong size, a chain that loops: an error naming the images.
[[nodiscard]] Result<ResolvedPages> resolve_pages(const std::string& dir, const img::Inventory& inv, pid_t pid,
                                                  const std::vector<img::PagemapEntry>& pagemap);

// The root's identity a chain is checked against: its starttime (field 22
// of /proc/PID/stat) and its exe.
struct TreeIdentity {
  uint64_t start_time = 0;
  std::string exe;
};
[[nodiscard]] Result<TreeIdentity> tree_identity(pid_t root);

}  // namespace minicriu
