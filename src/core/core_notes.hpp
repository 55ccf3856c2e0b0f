// The notes of an ELF core file for one process of a checkpoint, as the
// kernel writes them (fs/binfmt_elf.c) and gdb reads them: per thread
// NT_PRSTATUS (registers), NT_FPREGSET and NT_X86_XSTATE; for the process
// NT_PRPSINFO, NT_AUXV and NT_FILE (which file each mapping maps), after the
// first thread's NT_PRSTATUS.
#pragma once

#include <cstdint>
#include <vector>

#include "core/process_memory.hpp"
#include "images/checkpoint.hpp"

namespace minicriu {

// The PT_NOTE segment's bytes.
std::vector<uint8_t> core_notes(const ProcessImages& p, const ProcessMemory& memory);

}  // namespace minicriu
