// restore --lazy of shared memory (the objects of shmem.cc: shared anonymous
// memory, memfds, System V segments): which objects come back on first touch,
// and what the lazy pager needs to serve them.
//
// A lazy object is made at its size with no contents. Each process that maps
// it registers its mappings with its userfaultfd (MISSING; shmem supports it);
// a first touch in any of them is answered by UFFDIO_COPY into that mapping,
// which fills the object's page cache: the other mappers then see the page
// without a fault. The prefetch fills each object once, through one of its
// mappings. What no lazy mapping covers (no process could fault it in) is
// written eagerly at creation.
//
// An object is lazy only where a fault is the only way to reach its pages:
// - no fd holds it (a read(2) or write(2) does not fault: a memfd with an fd
//   in the tree, or in flight in a unix queue, is restored eagerly);
// - no private mapping of it (UFFDIO_COPY there would fill the private copy,
//   not the object), no mapping without VM_MAYWRITE (userfaultfd refuses to
//   register those), no mlocked mapping (mlock faults every page in), no
//   mapping the dump saw as inherited;
// - no write seal (F_SEAL_WRITE, F_SEAL_FUTURE_WRITE: its mappings cannot
//   write, so cannot be registered);
// - not a System V segment: userfaultfd does not take its attachments (their
//   VMAs are ipc/shm.c's, not shmem's: UFFDIO_REGISTER fails with EINVAL),
//   and a new shmat() would not be registered anyway.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "base/error.hpp"
#include "images/checkpoint.hpp"
#include "images/image_dir.hpp"
#include "minicriu.pb.h"

namespace minicriu {

// [start, end) address (or offset) ranges.
using LazyRanges = std::vector<std::pair<uint64_t, uint64_t>>;

struct LazyShmemObject {
  uint32_t id = 0;
  std::string data;  // its data image (shmem-ID.data)
  uint64_t size = 0;
  struct Extent {
    uint64_t offset = 0, length = 0;  // in the object
    uint64_t data_offset = 0;         // where its bytes lie in data
  };
  std::vector<Extent> extents;
  // The object offsets the lazy mappings cover, sorted and merged: the data
  // outside them is written at creation.
  LazyRanges mapped;
  uint64_t lazy_bytes = 0;  // of the extents' bytes, those inside mapped
};

// One lazy mapping of an object in a process: [start, end) maps the object
// from pgoff on.
struct LazyShmemVma {
  uint64_t start = 0, end = 0, pgoff = 0;
  uint32_t id = 0;
};

using LazyShmemPlan = std::map<uint32_t, LazyShmemObject>;

// The lazy objects of the checkpoint (rules above), from its shmem.img
// objects. Pure, for unit tests.
LazyShmemPlan plan_lazy_shmem(const ImageDir& dir, const Checkpoint& c,
                              const std::vector<img::ShmemObject>& objects);
// The same, reading the objects from the directory's shmem.img.
[[nodiscard]] Result<LazyShmemPlan> plan_lazy_shmem(const ImageDir& dir, const Checkpoint& c);

// Whether v is a mapping of a lazy object (one of plan's).
bool maps_lazy_shmem(const img::Vma& v, const LazyShmemPlan& plan);

// Each lazy mapping of p.
std::vector<LazyShmemVma> lazy_shmem_vmas(const ProcessImages& p, const LazyShmemPlan& plan);

}  // namespace minicriu
