// The iterative dump (libcriu's criu_dump_iters): pre-dump rounds, each the
// parent of the next, the write tracking held here between them, then the
// final dump against the last one.
#include <sys/stat.h>

#include "base/error.hpp"
#include "mem/write_tracking.hpp"
#include "minicriu/minicriu.hpp"

namespace minicriu {

Result<DumpItersResult> dump_iters(const DumpOptions& options, const DumpItersCallback& more) {
  if (options.pre_dump || !options.prev_images_dir.empty() || options.tracking)
    return fail("dump_iters: pre_dump, prev_images_dir and tracking are the rounds' own; leave them unset");
  if (!more) return fail("dump_iters: no callback");
  DumpItersResult out;
  auto tracking = std::make_shared<MemoryTracking>();
  for (unsigned round = 1;; round++) {
    DumpOptions o = options;
    o.images_dir = options.images_dir + "/" + std::to_string(round);
    if (::mkdir(o.images_dir.c_str(), 0700) != 0 && errno != EEXIST)
      return failf_errno("cannot create {}", o.images_dir);
    if (round > 1) o.prev_images_dir = "../" + std::to_string(round - 1);
    o.tracking = tracking;
    bool final = false;
    if (round > 1) {
      int next = more(out.rounds.back());
      if (next < 0) return failf("the iterative dump was aborted after round {}; the tree runs on", round - 1);
      final = next == 0;
    }
    o.pre_dump = !final;
    if (o.pre_dump) o.leave_running = true;
    ASSIGN_OR_RETURN(DumpStats st,
                     with_context(dump(o), fmt::format("round {} ({})", round, final ? "final dump" : "pre-dump")));
    DumpRound r;
    r.round = round;
    r.final = final;
    r.images_dir = o.images_dir;
    r.pages_written = st.pages_dumped;
    r.pages_changed = st.pages_changed;
    r.pages_in_parent = st.pages_in_parent;
    r.frozen_ns = st.frozen_ns;
    out.rounds.push_back(r);
    if (final) {
      out.stats = st;
      out.images_dir = o.images_dir;
      return out;
    }
  }
}

}  // namespace minicriu
