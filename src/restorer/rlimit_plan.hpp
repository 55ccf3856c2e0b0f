// Which resource limits a restored process gets. Lowering is always allowed;
// raising a hard limit needs CAP_SYS_RESOURCE, which restore may lack: then the
// current hard limit stays and the user is warned. Pure, for unit tests.
#pragma once

#include <sys/resource.h>

#include <string>
#include <vector>

#include "minicriu.pb.h"
#include "restorer/restorer_args.hpp"

namespace minicriu {

struct RlimitPlan {
  std::vector<rst::RLimit> limits;
  std::vector<std::string> warnings;
};

// current[r]: the limit the restoring process has now for resource r.
RlimitPlan plan_rlimits(const google::protobuf::RepeatedPtrField<img::RLimit>& dumped,
                        const std::vector<rlimit>& current, bool can_raise_hard);

}  // namespace minicriu
