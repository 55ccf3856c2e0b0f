// The premap area: one reservation, free both in the restoring program and in
// the dumped layout, that holds every dumped VMA (filled with its pages) until
// the restorer blob moves each to its address, plus the blob itself.
//
// Because the area overlaps no dumped VMA, every mremap to a final address
// moves out of the area into a hole left by unmapping the restoring program:
// no ordering between VMAs is needed and no move can clobber another's source.
#pragma once

#include <atomic>

#include <cstdint>
#include <map>
#include <vector>

#include "base/error.hpp"
#include "base/mapping.hpp"
#include "minicriu.pb.h"
#include "proc/proc_parse.hpp"
#include "images/checkpoint.hpp"
#include "kinds/kind_set.hpp"
#include "mem/lazy_shmem.hpp"
#include "mem/page_source.hpp"

namespace minicriu {

struct AddrRange {
  uint64_t start = 0;
  uint64_t end = 0;
};

struct PremapSizes {
  uint64_t specials[3] = {};  // this kernel's [vdso], [vvar], [vvar_vclock] (0: none)
  uint64_t blob = 0;          // blob code, args and stacks
  uint64_t tail = 0;          // tail code and sigframes
};

// Slots of the parent's VMAs that a child task inherited mapped, by VMA start.
using InheritedSlots = std::map<uint64_t, uint64_t>;

struct PremapPlan {
  uint64_t base = 0, end = 0;         // the whole reservation
  std::vector<uint64_t> slot;         // per mm.vmas(i); 0: not premapped (needs_slot)
  std::vector<bool> inherited;        // per mm.vmas(i): the slot is the parent's, already mapped
  std::vector<bool> lazy;             // per mm.vmas(i): filled on first touch (restore --lazy); no slot
                                      // but for shared memory (lazy_vmas)
  uint64_t special_scratch[3] = {};
  uint64_t slots_end = 0;             // [base, slots_end) is empty once everything moved
  uint64_t blob = 0;
  uint64_t tail = 0;
};

// Whether a VMA waits in the premap area. Not the kernel's own mappings (moved,
// not premapped), nor anonymous private memory without pages in the image: the
// blob maps that directly at its address, so large reservations (sanitizer
// shadows, language runtimes' heaps) cost no premap room.
bool needs_slot(const img::Vma& v);

// restore --lazy: which of p's VMAs come back on first touch (anonymous
// private memory with pages, registered with userfaultfd by the blob). Not
// mlocked memory (mlock faults every page in, in the blob), nor memory still
// shared copy-on-write with the parent or a child at the dump (the child's
// image holds only what differs: it inherits the parent's premapped pages,
// as today). Also the mappings of lazy shared memory objects (shmem:
// mem/lazy_shmem.hpp), which keep their premap slot (the object is mapped
// there, empty) and are registered once at their address. Per mm.vmas(i).
std::vector<bool> lazy_vmas(const Checkpoint& c, const ProcessImages& p, const LazyShmemPlan& shmem = {});

// Where everything goes. busy: every mapping of the restoring program.
// Pure, for unit tests.
// inherited: slots mapped by the parent for VMAs marked inherited.
[[nodiscard]] Result<PremapPlan> plan_premap(const img::MmCore& mm,
                                             const std::vector<AddrRange>& busy,
                                             const PremapSizes& sizes,
                                             const InheritedSlots& inherited = {},
                                             const std::vector<bool>& lazy = {});

// Reserves the area (PROT_NONE) and maps every dumped VMA into its slot: anonymous
// ones anonymous, file ones from their files. Private and anonymous slots are
// writable until the blob sets the final protections, so pages can be read in.
// Objects a kind made (shared memory) are mapped by that kind, files of
// files.img (ghosts) opened by theirs.
[[nodiscard]] Result<Mapping> premap_vmas(const Checkpoint& c, const ProcessImages& p,
                                          const PremapPlan& plan, const KindSet& kinds);

}  // namespace minicriu
