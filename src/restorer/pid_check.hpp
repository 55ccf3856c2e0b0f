// Restore gives every task its dumped PID/TID (clone3 set_tid): each must be
// free in our PID namespace, or restore stops before creating anything.
#pragma once

#include "base/error.hpp"
#include "images/checkpoint.hpp"

namespace minicriu {

[[nodiscard]] Status check_ids_free(const Checkpoint& c);

}  // namespace minicriu
