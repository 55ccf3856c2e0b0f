// Restore orchestration: lands with issue 3.
#include "core/error.hpp"

namespace minicriu {

Result<RestoreResult> restore(const RestoreOptions&) {
  return fail("restore is not implemented yet");
}

}  // namespace minicriu
