// What the regular file and ghost file kinds share: a file reached by a path
// (img::RegFile), described at dump and reopened at restore.
#pragma once

#include <string>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "kinds/kind.hpp"
#include "minicriu.pb.h"

namespace minicriu {

// The RegFile of an fd reached by path.
void describe_reg_file(const FdDumpInfo& fd, const std::string& path, img::RegFile& reg);

// Reopens a file by path with its dumped flags and offset.
[[nodiscard]] Result<UniqueFd> reopen_reg_file(const std::string& path, const img::RegFile& reg);

// "/path (flags 02, pos 5, ghost 1)", for `show`.
std::string reg_file_summary(const img::RegFile& reg);

}  // namespace minicriu
