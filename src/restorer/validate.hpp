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

// The same checks of the images among themselves, against the machine they
// describe rather than this one, without what only a restore needs (a
// chroot, the number of groups): what show, show --backtrace and coredump
// need before they read a checkpoint.
[[nodiscard]] Status validate_images(const Checkpoint& c, const KindSet& kinds);

}  // namespace minicriu
