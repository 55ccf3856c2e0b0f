// x86_64 registers as ELF core files (NT_PRSTATUS, NT_FPREGSET) and the
// unwinder (libunwind's register numbers) have them, from the images.
#pragma once

#include <elf.h>
#include <sys/procfs.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "minicriu.pb.h"

namespace minicriu::arch {

inline constexpr uint16_t kElfMachine = EM_X86_64;

// pr_reg of NT_PRSTATUS: user_regs_struct, which elf_gregset_t is on x86_64.
void core_gregs(const img::X86Regs& regs, elf_gregset_t& out);

// The notes that follow a thread's NT_PRSTATUS with the rest of its state:
// NT_FPREGSET, the legacy FXSAVE region (user_fpregs_struct, the first 512
// bytes of the xsave area), and NT_X86_XSTATE, the whole area as
// PTRACE_GETREGSET gave it (XCR0 in its software-reserved bytes, which gdb
// reads to know the layout). None for an xsave area too short to hold them.
struct RegisterNote {
  const char* name;  // the note's owner: "CORE", "LINUX"
  uint32_t type;
  std::string_view desc;
};
std::vector<RegisterNote> extended_register_notes(const img::ThreadCore& thread);

// A register by libunwind's number (UNW_X86_64_RAX...RIP); nullopt for one
// a thread's saved state does not hold for the unwinder.
std::optional<uint64_t> unwind_register(const img::X86Regs& regs, int regnum);

}  // namespace minicriu::arch
