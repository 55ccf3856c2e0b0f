// The restorer blob: placeholder until restore lands (issue 3).
#include "common/blob/syscall.h"

extern "C" __attribute__((used)) long restorer_main(void*) { return -38; }

asm(R"(
  .section .text.entry,"ax"
  .globl restorer_entry
restorer_entry:
  call restorer_main
  int3
  .globl restorer_thread_entry
restorer_thread_entry:
  int3
  .text
)");
