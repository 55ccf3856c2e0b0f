#include "arch/x86_64/jump.hpp"

namespace minicriu::arch {

void jump_on_stack(uint64_t entry, uint64_t stack_top, uint64_t arg0) {
  // A jmp, not a call: the entry stub (restorer_entry) finds rsp % 16 == 0
  // and makes the call into C++ itself, with the alignment the ABI wants.
  asm volatile(
      "mov %0, %%rsp\n\t"
      "xor %%ebp, %%ebp\n\t"
      "jmp *%1\n\t"
      :
      : "r"(stack_top), "r"(entry), "D"(arg0)
      : "memory");
  __builtin_unreachable();
}

}  // namespace minicriu::arch
