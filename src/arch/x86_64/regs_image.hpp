// The x86_64 register set as the images carry it (img::X86Regs): the one list
// of registers that a dump saves and a restore puts back.
#pragma once

#include "arch/x86_64/regs.hpp"
#include "minicriu.pb.h"

namespace minicriu::arch {

void regs_to_image(const Regs& r, img::X86Regs& out);
Regs regs_from_image(const img::X86Regs& in);

}  // namespace minicriu::arch
