// After a dumper was killed midway (SIGKILL, the OOM killer): putting its
// tree back by hand (`minicriu check --cleanup`). Each dump has a guardian
// process that does this by itself; this is for when the guardian died too.
#pragma once

#include <string>
#include <vector>

#include "minicriu/minicriu.hpp"

namespace minicriu {

// Replays the journal of every dump whose dumper and guardian both died
// midway ($MINICRIU_JOURNAL_DIR, else /run/minicriu): the tree's threads get
// their registers and code back, the parasite's leftovers go, TCP repair mode
// goes off, the processes the dump stopped are continued. A journal whose
// dumper or guardian still runs is left alone. One line per journal.
[[nodiscard]] Result<std::vector<std::string>> cleanup_dead_dumps(const LogOptions& log = {});

}  // namespace minicriu
