// The host side of the restorer blob: lays out, inside the premap area, the
// blob (code, rst::Args, one stack per thread) and the tail (the code that
// outlives the blob and one rt_sigframe per thread), fills them in, and hands
// back where to jump.
#pragma once

#include <cstdint>
#include <vector>

#include "base/error.hpp"
#include "images/checkpoint.hpp"
#include "restorer/machine.hpp"
#include "restorer/premap.hpp"
#include "restorer/restorer_args.hpp"

namespace minicriu {

struct BlobSizes {
  uint64_t blob = 0;  // code + args + stacks
  uint64_t tail = 0;  // tail code + sigframes
};
BlobSizes blob_sizes(const ProcessImages& p);

struct BlobInputs {
  const ProcessImages* process = nullptr;
  const PremapPlan* plan = nullptr;
  SpecialMappings here;               // this task's vdso/vvar, to be moved
  std::vector<rst::RLimit> rlimits;   // already planned (rlimit_plan.hpp)
  int channel_fd = -1;
  int exe_fd = -1;
  int uffd = -1;                      // restore --lazy: registers the plan's lazy VMAs
  bool root = false;                  // the root of the tree (its parent is minicriu)
};

struct BlobJump {
  uint64_t entry = 0;
  uint64_t stack_top = 0;
  uint64_t args = 0;
};

[[nodiscard]] Result<BlobJump> install_blob(const BlobInputs& in);

// Leaves minicriu for good: switches to the blob's stack and jumps into it.
[[noreturn]] void jump_to_blob(const BlobJump& j);

}  // namespace minicriu
