/* AVX-512 register state for the restore_* test programs: loads known values
 * into zmm0-zmm31 and k0-k7, waits in a syscall loop until *flag is set, and
 * stores the registers again. Everything between the load and the store is in
 * one asm block, so no compiled code can touch the registers: only the kernel
 * (dump, restore) can, and it must keep them. */
#ifndef RESTORE_AVX512_H
#define RESTORE_AVX512_H

#include <stdint.h>
#include <string.h>

/* The programs are built with the project's flags (no -mavx512f): the asm that
 * names zmm16-31 and k0-7 needs the target enabled where it is compiled. */
#pragma GCC push_options
#pragma GCC target("avx512f")

struct avx512_state {
  uint64_t zmm[32][8] __attribute__((aligned(64)));
  uint64_t k[8];
};

static inline void avx512_fill(struct avx512_state* s, uint64_t seed) {
  for (int r = 0; r < 32; r++)
    for (int i = 0; i < 8; i++) s->zmm[r][i] = (seed + 1) * 0x9e3779b97f4a7c15ull ^ ((uint64_t)r << 32) ^ (uint64_t)i * 0x0101010101ull;
  for (int i = 0; i < 8; i++) s->k[i] = (seed * 0x1234567ull + (uint64_t)i) * 0x2545F4914F6CDD1Dull;
}

#define AVX512_LOAD(in)                                                                     \
  "vmovdqu64 0*64(" in "), %%zmm0\n vmovdqu64 1*64(" in "), %%zmm1\n"                    \
  "vmovdqu64 2*64(" in "), %%zmm2\n vmovdqu64 3*64(" in "), %%zmm3\n"                    \
  "vmovdqu64 4*64(" in "), %%zmm4\n vmovdqu64 5*64(" in "), %%zmm5\n"                    \
  "vmovdqu64 6*64(" in "), %%zmm6\n vmovdqu64 7*64(" in "), %%zmm7\n"                    \
  "vmovdqu64 8*64(" in "), %%zmm8\n vmovdqu64 9*64(" in "), %%zmm9\n"                    \
  "vmovdqu64 10*64(" in "), %%zmm10\n vmovdqu64 11*64(" in "), %%zmm11\n"                \
  "vmovdqu64 12*64(" in "), %%zmm12\n vmovdqu64 13*64(" in "), %%zmm13\n"                \
  "vmovdqu64 14*64(" in "), %%zmm14\n vmovdqu64 15*64(" in "), %%zmm15\n"                \
  "vmovdqu64 16*64(" in "), %%zmm16\n vmovdqu64 17*64(" in "), %%zmm17\n"                \
  "vmovdqu64 18*64(" in "), %%zmm18\n vmovdqu64 19*64(" in "), %%zmm19\n"                \
  "vmovdqu64 20*64(" in "), %%zmm20\n vmovdqu64 21*64(" in "), %%zmm21\n"                \
  "vmovdqu64 22*64(" in "), %%zmm22\n vmovdqu64 23*64(" in "), %%zmm23\n"                \
  "vmovdqu64 24*64(" in "), %%zmm24\n vmovdqu64 25*64(" in "), %%zmm25\n"                \
  "vmovdqu64 26*64(" in "), %%zmm26\n vmovdqu64 27*64(" in "), %%zmm27\n"                \
  "vmovdqu64 28*64(" in "), %%zmm28\n vmovdqu64 29*64(" in "), %%zmm29\n"                \
  "vmovdqu64 30*64(" in "), %%zmm30\n vmovdqu64 31*64(" in "), %%zmm31\n"                \
  "kmovq 2048+0(" in "), %%k0\n kmovq 2048+8(" in "), %%k1\n"                            \
  "kmovq 2048+16(" in "), %%k2\n kmovq 2048+24(" in "), %%k3\n"                          \
  "kmovq 2048+32(" in "), %%k4\n kmovq 2048+40(" in "), %%k5\n"                          \
  "kmovq 2048+48(" in "), %%k6\n kmovq 2048+56(" in "), %%k7\n"

#define AVX512_STORE(out)                                                                   \
  "vmovdqu64 %%zmm0, 0*64(" out ")\n vmovdqu64 %%zmm1, 1*64(" out ")\n"                  \
  "vmovdqu64 %%zmm2, 2*64(" out ")\n vmovdqu64 %%zmm3, 3*64(" out ")\n"                  \
  "vmovdqu64 %%zmm4, 4*64(" out ")\n vmovdqu64 %%zmm5, 5*64(" out ")\n"                  \
  "vmovdqu64 %%zmm6, 6*64(" out ")\n vmovdqu64 %%zmm7, 7*64(" out ")\n"                  \
  "vmovdqu64 %%zmm8, 8*64(" out ")\n vmovdqu64 %%zmm9, 9*64(" out ")\n"                  \
  "vmovdqu64 %%zmm10, 10*64(" out ")\n vmovdqu64 %%zmm11, 11*64(" out ")\n"              \
  "vmovdqu64 %%zmm12, 12*64(" out ")\n vmovdqu64 %%zmm13, 13*64(" out ")\n"              \
  "vmovdqu64 %%zmm14, 14*64(" out ")\n vmovdqu64 %%zmm15, 15*64(" out ")\n"              \
  "vmovdqu64 %%zmm16, 16*64(" out ")\n vmovdqu64 %%zmm17, 17*64(" out ")\n"              \
  "vmovdqu64 %%zmm18, 18*64(" out ")\n vmovdqu64 %%zmm19, 19*64(" out ")\n"              \
  "vmovdqu64 %%zmm20, 20*64(" out ")\n vmovdqu64 %%zmm21, 21*64(" out ")\n"              \
  "vmovdqu64 %%zmm22, 22*64(" out ")\n vmovdqu64 %%zmm23, 23*64(" out ")\n"              \
  "vmovdqu64 %%zmm24, 24*64(" out ")\n vmovdqu64 %%zmm25, 25*64(" out ")\n"              \
  "vmovdqu64 %%zmm26, 26*64(" out ")\n vmovdqu64 %%zmm27, 27*64(" out ")\n"              \
  "vmovdqu64 %%zmm28, 28*64(" out ")\n vmovdqu64 %%zmm29, 29*64(" out ")\n"              \
  "vmovdqu64 %%zmm30, 30*64(" out ")\n vmovdqu64 %%zmm31, 31*64(" out ")\n"              \
  "kmovq %%k0, 2048+0(" out ")\n kmovq %%k1, 2048+8(" out ")\n"                          \
  "kmovq %%k2, 2048+16(" out ")\n kmovq %%k3, 2048+24(" out ")\n"                        \
  "kmovq %%k4, 2048+32(" out ")\n kmovq %%k5, 2048+40(" out ")\n"                        \
  "kmovq %%k6, 2048+48(" out ")\n kmovq %%k7, 2048+56(" out ")\n"

#define AVX512_CLOBBERS                                                                      \
  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",  \
      "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19",      \
      "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28",      \
      "xmm29", "xmm30", "xmm31", "k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"

/* Loads `in`, then runs the syscall `nr` (args a1-a3: ppoll, nanosleep...)
 * again and again until *flag != 0, then stores into `out`. Use a call with a
 * timeout: a signal handled just before the call is entered (after a restore
 * the thread resumes right at a re-issued `syscall`) must not leave it waiting
 * forever. */
static inline void avx512_hold(const struct avx512_state* in, struct avx512_state* out,
                               volatile int* flag, long nr, long a1, long a2, long a3) {
  asm volatile(AVX512_LOAD("%[in]")
               "1:\n"
               "mov %[nr], %%rax\n"
               "mov %[a1], %%rdi\n"
               "mov %[a2], %%rsi\n"
               "mov %[a3], %%rdx\n"
               "xor %%r10d, %%r10d\n"
               "syscall\n"
               "cmpl $0, (%[flag])\n"
               "je 1b\n"
               AVX512_STORE("%[out]")
               :
               : [in] "r"(in), [out] "r"(out), [flag] "r"(flag), [nr] "m"(nr), [a1] "m"(a1),
                 [a2] "m"(a2), [a3] "m"(a3)
               : "rax", "rcx", "rdx", "rdi", "rsi", "r10", "r11", "memory", AVX512_CLOBBERS);
}

/* The same, blocked in futex(flag, FUTEX_WAIT_PRIVATE, 0) until *flag != 0. */
static inline void avx512_hold_futex(const struct avx512_state* in, struct avx512_state* out,
                                     volatile int* flag) {
  asm volatile(AVX512_LOAD("%[in]")
               "1:\n"
               "mov $202, %%eax\n"
               "mov %[flag], %%rdi\n"
               "mov $128, %%esi\n"
               "xor %%edx, %%edx\n"
               "xor %%r10d, %%r10d\n"
               "syscall\n"
               "cmpl $0, (%[flag])\n"
               "je 1b\n"
               AVX512_STORE("%[out]")
               :
               : [in] "r"(in), [out] "r"(out), [flag] "r"(flag)
               : "rax", "rcx", "rdx", "rdi", "rsi", "r10", "r11", "memory", AVX512_CLOBBERS);
}

#pragma GCC pop_options

#endif
