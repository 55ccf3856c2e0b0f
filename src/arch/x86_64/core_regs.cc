#include "arch/x86_64/core_regs.hpp"

#include <libunwind.h>

#include <cstring>

#include "arch/x86_64/regs_image.hpp"

namespace minicriu::arch {

static_assert(sizeof(elf_gregset_t) == sizeof(Regs), "pr_reg is user_regs_struct on x86_64");

void core_gregs(const img::X86Regs& regs, elf_gregset_t& out) {
  Regs r = regs_from_image(regs);
  std::memcpy(&out, &r, sizeof(r));
}

std::vector<RegisterNote> extended_register_notes(const img::ThreadCore& t) {
  constexpr size_t kFxsaveSize = sizeof(elf_fpregset_t);
  static_assert(kFxsaveSize == 512);
  if (t.xsave().size() < kFxsaveSize) return {};
  std::string_view xsave = t.xsave();
  return {{"CORE", NT_FPREGSET, xsave.substr(0, kFxsaveSize)}, {"LINUX", NT_X86_XSTATE, xsave}};
}

std::optional<uint64_t> unwind_register(const img::X86Regs& r, int regnum) {
  switch (regnum) {
    case UNW_X86_64_RAX: return r.rax();
    case UNW_X86_64_RDX: return r.rdx();
    case UNW_X86_64_RCX: return r.rcx();
    case UNW_X86_64_RBX: return r.rbx();
    case UNW_X86_64_RSI: return r.rsi();
    case UNW_X86_64_RDI: return r.rdi();
    case UNW_X86_64_RBP: return r.rbp();
    case UNW_X86_64_RSP: return r.rsp();
    case UNW_X86_64_R8: return r.r8();
    case UNW_X86_64_R9: return r.r9();
    case UNW_X86_64_R10: return r.r10();
    case UNW_X86_64_R11: return r.r11();
    case UNW_X86_64_R12: return r.r12();
    case UNW_X86_64_R13: return r.r13();
    case UNW_X86_64_R14: return r.r14();
    case UNW_X86_64_R15: return r.r15();
    case UNW_X86_64_RIP: return r.rip();
    default: return std::nullopt;
  }
}

}  // namespace minicriu::arch
