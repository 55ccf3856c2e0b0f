// Leaving the current code for good: the restore's last step in each task,
// when it jumps into the restorer blob it mapped into its own address space.
#pragma once

#include <cstdint>

namespace minicriu::arch {

// Switches to the stack whose top is stack_top (16-byte aligned) and jumps to
// entry with arg0 as the first argument (rdi); the frame pointer is cleared so
// that nothing unwinds into the code left behind.
[[noreturn]] void jump_on_stack(uint64_t entry, uint64_t stack_top, uint64_t arg0);

}  // namespace minicriu::arch
