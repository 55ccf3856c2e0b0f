// Everything restore checks before it touches the system: the images agree with
// each other (pids, threads, VMAs, page runs, files) and with this machine
// (page size, xsave layout, vDSO). Pure: unit tests feed it checkpoints built
// in memory.
#pragma once

#include "base/error.hpp"
#include "images/checkpoint.hpp"
#include "kinds/kind_set.hpp"
#include "restorer/machine.hpp"

namespace minicriu {

// kinds: every entry of files.img must have a kind that restores it.
[[nodiscard]] Status validate_checkpoint(const Checkpoint& c, const MachineInfo& machine, const KindSet& kinds);

}  // namespace minicriu
