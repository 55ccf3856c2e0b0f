// Each thread's stack at the moment of the checkpoint, unwound with
// libunwind's remote API over the checkpoint's memory (ProcessMemory: the page
// images and the files that back mappings) from the dumped registers, and
// named with elfutils (ModuleMap). Nothing of the checkpoint is trusted: a
// stack that leads nowhere stops with its reason, never a crash.
#pragma once

#include <string>

#include "core/module_map.hpp"
#include "core/process_memory.hpp"
#include "minicriu.pb.h"

namespace minicriu {

// The stack of one thread of the process.
img::ThreadStack unwind_thread(const img::ThreadCore& thread, const ProcessMemory& memory,
                               const ModuleMap& modules);

// "    #1  0x... park_reader+0x1c (parked.c:41) in /path/parked\n" per frame.
std::string format_stack(const img::ThreadStack& stack, const std::string& indent);

}  // namespace minicriu
