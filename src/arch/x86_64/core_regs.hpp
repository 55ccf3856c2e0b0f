// x86_64 registers as ELF core files (NT_PRSTATUS, NT_FPREGSET) and the
// unwinder (libunwind's register numbers) have them, from the images.
#pragma once

#include <elf.h>
#include <sys/procfs.h>

#include <cstddef>
#include <cstdint>
#include <optional>

#include "minicriu.pb.h"

namespace minicriu::arch {

inline constexpr uint16_t kElfMachine = EM_X86_64;

// pr_reg of NT_PRSTATUS: user_regs_struct, which elf_gregset_t is on x86_64.
void core_gregs(const img::X86Regs& regs, elf_gregset_t& out);

// NT_FPREGSET is the legacy FXSAVE region (user_fpregs_struct): the first
// 512 bytes of the xsave area. NT_X86_XSTATE is the whole area, as
// PTRACE_GETREGSET gave it (XCR0 in its software-reserved bytes, which gdb
// reads to know the layout).
inline constexpr size_t kFxsaveSize = sizeof(elf_fpregset_t);
static_assert(kFxsaveSize == 512);

// A register by libunwind's number (UNW_X86_64_RAX...RIP); nullopt for one
// a thread's saved state does not hold for the unwinder.
std::optional<uint64_t> unwind_register(const img::X86Regs& regs, int regnum);

}  // namespace minicriu::arch
