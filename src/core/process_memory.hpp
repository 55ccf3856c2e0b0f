// The memory of one process of a checkpoint as it was at the dump, read
// without restoring it (show --backtrace, coredump). A page is, in order:
// in the process's page image; for memory it still shared copy-on-write with
// its parent at the dump, in the parent's (and so on up); else what its VMA
// maps, as it is found now: the file, if it is still the file that was mapped;
// the data a kind holds for the object (shared memory, a ghost file); this
// kernel's vDSO, if this is the kernel of the dump; zeros for anonymous memory
// never touched. What cannot be found (a binary replaced since, the kernel's
// data pages) cannot be read, and says why.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "images/checkpoint.hpp"
#include "kinds/kind_set.hpp"

namespace minicriu {

class ProcessMemory {
 public:
  using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;  // [start, end) each, in order

  // Where the bytes of a VMA that the page images lack come from.
  enum class Source { zeros, file, object, local_vdso, none };

  struct Region {
    const img::Vma* vma = nullptr;
    Source source = Source::none;
    // Source::none: why, in words ("/usr/lib/libfoo.so changed since the dump
    // (inode 12, was 34)"); Source::file: the path read.
    std::string note;
    int file = -1;           // Source::file: an fd the ProcessMemory owns
    uint64_t file_size = 0;
    const Kind* kind = nullptr;  // Source::object
  };

  // Opens the page images of the process and of its ancestors, and each
  // VMA's source. The checkpoint and the kinds (loaded) must outlive it.
  [[nodiscard]] static Result<std::unique_ptr<ProcessMemory>> open(const Checkpoint& c, const ProcessImages& p,
                                                                   const KindSet& kinds);

  const ProcessImages& process() const { return process_; }
  const std::vector<Region>& regions() const { return regions_; }
  const Region* region_at(uint64_t addr) const;

  // Copies the out.size() bytes at addr; false if one of them cannot be read
  // (nothing mapped there, a source that is gone, beyond the end of a file).
  // Small reads go through a cache of pages: an unwinder reads word by word.
  [[nodiscard]] bool read(uint64_t addr, std::span<uint8_t> out) const;

  // The parts of [start, end) whose pages are in the page images (the
  // process's or, where inherited, an ancestor's), in order.
  Ranges image_ranges(uint64_t start, uint64_t end) const;
  // The parts of a region's VMA that read() can read.
  Ranges readable_ranges(const Region& r) const;

 private:
  // The page image of one process of the chain (0: this one, 1: its parent...).
  struct Layer {
    const ProcessImages* process = nullptr;
    // Its page image, then those of the parent images of the chain.
    std::vector<UniqueFd> files;
    // Runs sorted by address, each with where its bytes start in which file.
    struct Run {
      uint64_t start, end, offset;
      int fd;
    };
    std::vector<Run> runs;
  };
  // What holds addr in the images: a layer's run, or none and where the
  // next run of the layers consulted begins.
  struct Hit {
    const Layer* layer = nullptr;
    int fd = -1;          // the page file that holds it
    uint64_t offset = 0;  // in that file
    uint64_t end = 0;     // of the run, or of the gap before the next one
  };

  ProcessMemory(const Checkpoint& c, const ProcessImages& p) : checkpoint_(c), process_(p) {}
  Hit find(uint64_t addr, uint64_t limit) const;
  bool read_uncached(uint64_t addr, std::span<uint8_t> out) const;
  bool read_source(const Region& r, uint64_t addr, std::span<uint8_t> out) const;

  const Checkpoint& checkpoint_;
  const ProcessImages& process_;
  std::vector<Layer> layers_;
  std::vector<Region> regions_;  // one per VMA, in order
  // The files mapped, each opened once however many VMAs map it.
  std::map<std::tuple<std::string, uint64_t, uint64_t>, UniqueFd> files_;
  std::vector<uint8_t> vdso_;    // this kernel's vDSO, when it is the dump's
  mutable std::map<uint64_t, std::vector<uint8_t>> cache_;
};

}  // namespace minicriu
