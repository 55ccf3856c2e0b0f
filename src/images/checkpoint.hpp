// A checkpoint directory read whole into memory: the orchestration's images
// (inventory, pstree, files, each process's core, mm, pagemap and fd table),
// what restore and show work from, so that nothing on the system is touched
// before every image has been read and validated (restorer/validate.hpp).
// Kinds read their own images in their load().
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "images/image_chain.hpp"
#include "images/image_dir.hpp"
#include "minicriu.pb.h"

namespace minicriu {

struct ProcessImages {
  img::ProcessEntry entry;
  img::ProcessCore core;
  img::MmCore mm;
  std::vector<img::PagemapEntry> pagemap;
  std::vector<img::FdEntry> fds;
  std::string pages_path;
  uint64_t pages_file_size = 0;
  // Where every page of the pagemap lies, the pages left in the parent
  // images (image_chain.hpp) followed up the chain: page_files[0] is
  // pages_path, page_runs are sorted by address.
  std::vector<std::string> page_files;
  std::vector<PageRun> page_runs;
};

struct Checkpoint {
  img::Inventory inventory;
  std::vector<img::FileEntry> files;
  std::vector<ProcessImages> processes;  // pstree order: parents first

  const img::FileEntry* file(uint32_t id) const;
  const ProcessImages* process(pid_t pid) const;
};

// Reads every image of the directory; a missing, truncated or foreign image is
// an error naming it. pages_elsewhere: the pages come from a page server
// (restore --page-server), the directory may hold no page image; each
// process's page_runs are then its pagemap's (file 0, offsets unused) and
// pages_file_size what the pagemap describes.
[[nodiscard]] Result<Checkpoint> load_checkpoint(const ImageDir& dir, bool pages_elsewhere = false);

}  // namespace minicriu
