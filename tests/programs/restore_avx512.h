/* Vector register state for the restore_* test programs: loads known values
 * into the widest registers the CPU has (zmm0-31 and k0-7 with AVX-512, else
 * ymm0-15 with AVX, else xmm0-15), waits in a syscall loop until *flag is
 * set, and stores the registers again. Everything between the load and the
 * store is in one asm block, so no compiled code can touch the registers:
 * only the kernel (dump, restore) can, and it must keep them. The parts of
 * the state a CPU has no register for stay zero in both copies. */
#ifndef RESTORE_AVX512_H
#define RESTORE_AVX512_H

#include <stdint.h>
#include <string.h>

struct avx512_state {
  uint64_t zmm[32][8] __attribute__((aligned(64)));
  uint64_t k[8];
};

/* 512: AVX-512, 256: AVX, 128: SSE (every x86_64). */
static inline int vector_width(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") ? 512 : __builtin_cpu_supports("avx") ? 256 : 128;
}

static inline void avx512_fill(struct avx512_state* s, uint64_t seed) {
  int width = vector_width();
  memset(s, 0, sizeof *s);
  int nregs = width == 512 ? 32 : 16, words = width / 64;
  for (int r = 0; r < nregs; r++)
    for (int i = 0; i < words; i++)
      s->zmm[r][i] = (seed + 1) * 0x9e3779b97f4a7c15ull ^ ((uint64_t)r << 32) ^ (uint64_t)i * 0x0101010101ull;
  if (width == 512)
    for (int i = 0; i < 8; i++) s->k[i] = (seed * 0x1234567ull + (uint64_t)i) * 0x2545F4914F6CDD1Dull;
}

/* Loads, then runs the syscall nr (args a1-a3: ppoll, nanosleep...) again
 * and again until *flag != 0, then stores. Use a call with a timeout: a
 * signal handled just before the call is entered (after a restore the thread
 * resumes right at a re-issued `syscall`) must not leave it waiting forever. */
#define HOLD_SYSCALL_LOOP                      \
  "1:\n"                                       \
  "mov %[nr], %%rax\n"                         \
  "mov %[a1], %%rdi\n"                         \
  "mov %[a2], %%rsi\n"                         \
  "mov %[a3], %%rdx\n"                         \
  "xor %%r10d, %%r10d\n"                       \
  "syscall\n"                                  \
  "cmpl $0, (%[flag])\n"                       \
  "je 1b\n"
/* The same, blocked in futex(flag, FUTEX_WAIT_PRIVATE, 0). */
#define HOLD_FUTEX_LOOP                        \
  "1:\n"                                       \
  "mov $202, %%eax\n"                          \
  "mov %[flag], %%rdi\n"                       \
  "mov $128, %%esi\n"                          \
  "xor %%edx, %%edx\n"                         \
  "xor %%r10d, %%r10d\n"                       \
  "syscall\n"                                  \
  "cmpl $0, (%[flag])\n"                       \
  "je 1b\n"

#define VEC512_LOAD \
  "vmovdqu64 0*64(%[in]), %%zmm0\n"  \
  "vmovdqu64 1*64(%[in]), %%zmm1\n"  \
  "vmovdqu64 2*64(%[in]), %%zmm2\n"  \
  "vmovdqu64 3*64(%[in]), %%zmm3\n"  \
  "vmovdqu64 4*64(%[in]), %%zmm4\n"  \
  "vmovdqu64 5*64(%[in]), %%zmm5\n"  \
  "vmovdqu64 6*64(%[in]), %%zmm6\n"  \
  "vmovdqu64 7*64(%[in]), %%zmm7\n"  \
  "vmovdqu64 8*64(%[in]), %%zmm8\n"  \
  "vmovdqu64 9*64(%[in]), %%zmm9\n"  \
  "vmovdqu64 10*64(%[in]), %%zmm10\n"  \
  "vmovdqu64 11*64(%[in]), %%zmm11\n"  \
  "vmovdqu64 12*64(%[in]), %%zmm12\n"  \
  "vmovdqu64 13*64(%[in]), %%zmm13\n"  \
  "vmovdqu64 14*64(%[in]), %%zmm14\n"  \
  "vmovdqu64 15*64(%[in]), %%zmm15\n"  \
  "vmovdqu64 16*64(%[in]), %%zmm16\n"  \
  "vmovdqu64 17*64(%[in]), %%zmm17\n"  \
  "vmovdqu64 18*64(%[in]), %%zmm18\n"  \
  "vmovdqu64 19*64(%[in]), %%zmm19\n"  \
  "vmovdqu64 20*64(%[in]), %%zmm20\n"  \
  "vmovdqu64 21*64(%[in]), %%zmm21\n"  \
  "vmovdqu64 22*64(%[in]), %%zmm22\n"  \
  "vmovdqu64 23*64(%[in]), %%zmm23\n"  \
  "vmovdqu64 24*64(%[in]), %%zmm24\n"  \
  "vmovdqu64 25*64(%[in]), %%zmm25\n"  \
  "vmovdqu64 26*64(%[in]), %%zmm26\n"  \
  "vmovdqu64 27*64(%[in]), %%zmm27\n"  \
  "vmovdqu64 28*64(%[in]), %%zmm28\n"  \
  "vmovdqu64 29*64(%[in]), %%zmm29\n"  \
  "vmovdqu64 30*64(%[in]), %%zmm30\n"  \
  "vmovdqu64 31*64(%[in]), %%zmm31\n"  \
  "kmovq 2048+0(%[in]), %%k0\n"  \
  "kmovq 2048+8(%[in]), %%k1\n"  \
  "kmovq 2048+16(%[in]), %%k2\n"  \
  "kmovq 2048+24(%[in]), %%k3\n"  \
  "kmovq 2048+32(%[in]), %%k4\n"  \
  "kmovq 2048+40(%[in]), %%k5\n"  \
  "kmovq 2048+48(%[in]), %%k6\n"  \
  "kmovq 2048+56(%[in]), %%k7\n"  \
  ""
#define VEC512_STORE \
  "vmovdqu64 %%zmm0, 0*64(%[out])\n"  \
  "vmovdqu64 %%zmm1, 1*64(%[out])\n"  \
  "vmovdqu64 %%zmm2, 2*64(%[out])\n"  \
  "vmovdqu64 %%zmm3, 3*64(%[out])\n"  \
  "vmovdqu64 %%zmm4, 4*64(%[out])\n"  \
  "vmovdqu64 %%zmm5, 5*64(%[out])\n"  \
  "vmovdqu64 %%zmm6, 6*64(%[out])\n"  \
  "vmovdqu64 %%zmm7, 7*64(%[out])\n"  \
  "vmovdqu64 %%zmm8, 8*64(%[out])\n"  \
  "vmovdqu64 %%zmm9, 9*64(%[out])\n"  \
  "vmovdqu64 %%zmm10, 10*64(%[out])\n"  \
  "vmovdqu64 %%zmm11, 11*64(%[out])\n"  \
  "vmovdqu64 %%zmm12, 12*64(%[out])\n"  \
  "vmovdqu64 %%zmm13, 13*64(%[out])\n"  \
  "vmovdqu64 %%zmm14, 14*64(%[out])\n"  \
  "vmovdqu64 %%zmm15, 15*64(%[out])\n"  \
  "vmovdqu64 %%zmm16, 16*64(%[out])\n"  \
  "vmovdqu64 %%zmm17, 17*64(%[out])\n"  \
  "vmovdqu64 %%zmm18, 18*64(%[out])\n"  \
  "vmovdqu64 %%zmm19, 19*64(%[out])\n"  \
  "vmovdqu64 %%zmm20, 20*64(%[out])\n"  \
  "vmovdqu64 %%zmm21, 21*64(%[out])\n"  \
  "vmovdqu64 %%zmm22, 22*64(%[out])\n"  \
  "vmovdqu64 %%zmm23, 23*64(%[out])\n"  \
  "vmovdqu64 %%zmm24, 24*64(%[out])\n"  \
  "vmovdqu64 %%zmm25, 25*64(%[out])\n"  \
  "vmovdqu64 %%zmm26, 26*64(%[out])\n"  \
  "vmovdqu64 %%zmm27, 27*64(%[out])\n"  \
  "vmovdqu64 %%zmm28, 28*64(%[out])\n"  \
  "vmovdqu64 %%zmm29, 29*64(%[out])\n"  \
  "vmovdqu64 %%zmm30, 30*64(%[out])\n"  \
  "vmovdqu64 %%zmm31, 31*64(%[out])\n"  \
  "kmovq %%k0, 2048+0(%[out])\n"  \
  "kmovq %%k1, 2048+8(%[out])\n"  \
  "kmovq %%k2, 2048+16(%[out])\n"  \
  "kmovq %%k3, 2048+24(%[out])\n"  \
  "kmovq %%k4, 2048+32(%[out])\n"  \
  "kmovq %%k5, 2048+40(%[out])\n"  \
  "kmovq %%k6, 2048+48(%[out])\n"  \
  "kmovq %%k7, 2048+56(%[out])\n"  \
  ""
#define VEC512_CLOBBERS "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31", "k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"

#pragma GCC push_options
#pragma GCC target("avx512f")
static void __attribute__((noinline)) hold512(const struct avx512_state* in, struct avx512_state* out,
                                                volatile int* flag, long nr, long a1, long a2, long a3) {
  asm volatile(VEC512_LOAD HOLD_SYSCALL_LOOP VEC512_STORE
               :
               : [in] "r"(in), [out] "r"(out), [flag] "r"(flag), [nr] "m"(nr), [a1] "m"(a1), [a2] "m"(a2),
                 [a3] "m"(a3)
               : "rax", "rcx", "rdx", "rdi", "rsi", "r10", "r11", "memory", VEC512_CLOBBERS);
}
static void __attribute__((noinline)) hold512_futex(const struct avx512_state* in, struct avx512_state* out,
                                                      volatile int* flag) {
  asm volatile(VEC512_LOAD HOLD_FUTEX_LOOP VEC512_STORE
               :
               : [in] "r"(in), [out] "r"(out), [flag] "r"(flag)
               : "rax", "rcx", "rdx", "rdi", "rsi", "r10", "r11", "memory", VEC512_CLOBBERS);
}
#pragma GCC pop_options

#define VEC256_LOAD \
  "vmovdqu 0*64(%[in]), %%ymm0\n"  \
  "vmovdqu 1*64(%[in]), %%ymm1\n"  \
  "vmovdqu 2*64(%[in]), %%ymm2\n"  \
  "vmovdqu 3*64(%[in]), %%ymm3\n"  \
  "vmovdqu 4*64(%[in]), %%ymm4\n"  \
  "vmovdqu 5*64(%[in]), %%ymm5\n"  \
  "vmovdqu 6*64(%[in]), %%ymm6\n"  \
  "vmovdqu 7*64(%[in]), %%ymm7\n"  \
  "vmovdqu 8*64(%[in]), %%ymm8\n"  \
  "vmovdqu 9*64(%[in]), %%ymm9\n"  \
  "vmovdqu 10*64(%[in]), %%ymm10\n"  \
  "vmovdqu 11*64(%[in]), %%ymm11\n"  \
  "vmovdqu 12*64(%[in]), %%ymm12\n"  \
  "vmovdqu 13*64(%[in]), %%ymm13\n"  \
  "vmovdqu 14*64(%[in]), %%ymm14\n"  \
  "vmovdqu 15*64(%[in]), %%ymm15\n"  \
  ""
#define VEC256_STORE \
  "vmovdqu %%ymm0, 0*64(%[out])\n"  \
  "vmovdqu %%ymm1, 1*64(%[out])\n"  \
  "vmovdqu %%ymm2, 2*64(%[out])\n"  \
  "vmovdqu %%ymm3, 3*64(%[out])\n"  \
  "vmovdqu %%ymm4, 4*64(%[out])\n"  \
  "vmovdqu %%ymm5, 5*64(%[out])\n"  \
  "vmovdqu %%ymm6, 6*64(%[out])\n"  \
  "vmovdqu %%ymm7, 7*64(%[out])\n"  \
  "vmovdqu %%ymm8, 8*64(%[out])\n"  \
  "vmovdqu %%ymm9, 9*64(%[out])\n"  \
  "vmovdqu %%ymm10, 10*64(%[out])\n"  \
  "vmovdqu %%ymm11, 11*64(%[out])\n"  \
  "vmovdqu %%ymm12, 12*64(%[out])\n"  \
  "vmovdqu %%ymm13, 13*64(%[out])\n"  \
  "vmovdqu %%ymm14, 14*64(%[out])\n"  \
  "vmovdqu %%ymm15, 15*64(%[out])\n"  \
  ""
#define VEC256_CLOBBERS "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"

#pragma GCC push_options
#pragma GCC target("avx")
static void __attribute__((noinline)) hold256(const struct avx512_state* in, struct avx512_state* out,
                                                volatile int* flag, long nr, long a1, long a2, long a3) {
  asm volatile(VEC256_LOAD HOLD_SYSCALL_LOOP VEC256_STORE
               :
               : [in] "r"(in), [out] "r"(out), [flag] "r"(flag), [nr] "m"(nr), [a1] "m"(a1), [a2] "m"(a2),
                 [a3] "m"(a3)
               : "rax", "rcx", "rdx", "rdi", "rsi", "r10", "r11", "memory", VEC256_CLOBBERS);
}
static void __attribute__((noinline)) hold256_futex(const struct avx512_state* in, struct avx512_state* out,
                                                      volatile int* flag) {
  asm volatile(VEC256_LOAD HOLD_FUTEX_LOOP VEC256_STORE
               :
               : [in] "r"(in), [out] "r"(out), [flag] "r"(flag)
               : "rax", "rcx", "rdx", "rdi", "rsi", "r10", "r11", "memory", VEC256_CLOBBERS);
}
#pragma GCC pop_options

#define VEC128_LOAD \
  "movdqu 0*64(%[in]), %%xmm0\n"  \
  "movdqu 1*64(%[in]), %%xmm1\n"  \
  "movdqu 2*64(%[in]), %%xmm2\n"  \
  "movdqu 3*64(%[in]), %%xmm3\n"  \
  "movdqu 4*64(%[in]), %%xmm4\n"  \
  "movdqu 5*64(%[in]), %%xmm5\n"  \
  "movdqu 6*64(%[in]), %%xmm6\n"  \
  "movdqu 7*64(%[in]), %%xmm7\n"  \
  "movdqu 8*64(%[in]), %%xmm8\n"  \
  "movdqu 9*64(%[in]), %%xmm9\n"  \
  "movdqu 10*64(%[in]), %%xmm10\n"  \
  "movdqu 11*64(%[in]), %%xmm11\n"  \
  "movdqu 12*64(%[in]), %%xmm12\n"  \
  "movdqu 13*64(%[in]), %%xmm13\n"  \
  "movdqu 14*64(%[in]), %%xmm14\n"  \
  "movdqu 15*64(%[in]), %%xmm15\n"  \
  ""
#define VEC128_STORE \
  "movdqu %%xmm0, 0*64(%[out])\n"  \
  "movdqu %%xmm1, 1*64(%[out])\n"  \
  "movdqu %%xmm2, 2*64(%[out])\n"  \
  "movdqu %%xmm3, 3*64(%[out])\n"  \
  "movdqu %%xmm4, 4*64(%[out])\n"  \
  "movdqu %%xmm5, 5*64(%[out])\n"  \
  "movdqu %%xmm6, 6*64(%[out])\n"  \
  "movdqu %%xmm7, 7*64(%[out])\n"  \
  "movdqu %%xmm8, 8*64(%[out])\n"  \
  "movdqu %%xmm9, 9*64(%[out])\n"  \
  "movdqu %%xmm10, 10*64(%[out])\n"  \
  "movdqu %%xmm11, 11*64(%[out])\n"  \
  "movdqu %%xmm12, 12*64(%[out])\n"  \
  "movdqu %%xmm13, 13*64(%[out])\n"  \
  "movdqu %%xmm14, 14*64(%[out])\n"  \
  "movdqu %%xmm15, 15*64(%[out])\n"  \
  ""
#define VEC128_CLOBBERS "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"

static void __attribute__((noinline)) hold128(const struct avx512_state* in, struct avx512_state* out,
                                                volatile int* flag, long nr, long a1, long a2, long a3) {
  asm volatile(VEC128_LOAD HOLD_SYSCALL_LOOP VEC128_STORE
               :
               : [in] "r"(in), [out] "r"(out), [flag] "r"(flag), [nr] "m"(nr), [a1] "m"(a1), [a2] "m"(a2),
                 [a3] "m"(a3)
               : "rax", "rcx", "rdx", "rdi", "rsi", "r10", "r11", "memory", VEC128_CLOBBERS);
}
static void __attribute__((noinline)) hold128_futex(const struct avx512_state* in, struct avx512_state* out,
                                                      volatile int* flag) {
  asm volatile(VEC128_LOAD HOLD_FUTEX_LOOP VEC128_STORE
               :
               : [in] "r"(in), [out] "r"(out), [flag] "r"(flag)
               : "rax", "rcx", "rdx", "rdi", "rsi", "r10", "r11", "memory", VEC128_CLOBBERS);
}

static inline void avx512_hold(const struct avx512_state* in, struct avx512_state* out, volatile int* flag, long nr,
                               long a1, long a2, long a3) {
  int width = vector_width();
  if (width == 512) hold512(in, out, flag, nr, a1, a2, a3);
  else if (width == 256) hold256(in, out, flag, nr, a1, a2, a3);
  else hold128(in, out, flag, nr, a1, a2, a3);
}

static inline void avx512_hold_futex(const struct avx512_state* in, struct avx512_state* out, volatile int* flag) {
  int width = vector_width();
  if (width == 512) hold512_futex(in, out, flag);
  else if (width == 256) hold256_futex(in, out, flag);
  else hold128_futex(in, out, flag);
}

#endif
