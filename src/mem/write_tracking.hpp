// The userfaultfds that keep a tree's memory write-tracked between the
// rounds of a pre-dump chain. Closing the last fd of one unregisters its
// memory and forgets what was written, so between two rounds someone holds
// them: the library's caller (MemoryTracking, include/minicriu/minicriu.hpp),
// or a holder process that the pre-dump leaves behind, detached, listening
// on a unix socket in the images dir until the next round takes them (or
// until a timeout, or until the tree's root exits).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/log.hpp"
#include "base/unique_fd.hpp"

namespace minicriu {

struct WriteTracking {
  pid_t root = 0;
  // The images dir of the round that armed it: only a dump against those
  // images may trust it (library-held; a holder is reached through it).
  std::string images_dir;
  std::map<pid_t, std::vector<UniqueFd>> uffds;  // per process of the tree
  bool empty() const { return uffds.empty(); }
};

// The holder's socket, in the images dir of the pre-dump.
inline constexpr const char* kTrackingSocket = "tracking.sock";

// Leaves a holder process for tracking (the caller's fds are closed in the
// caller); it exits once a dump took the fds, after timeout, or when the
// root exits.
[[nodiscard]] Status spawn_tracking_holder(const std::string& images_dir, WriteTracking tracking,
                                           std::chrono::seconds timeout, const Logger& log);

// Takes the fds from the holder of images_dir, which then exits; nullopt if
// no holder answers there (it timed out, was killed, or there never was one).
[[nodiscard]] Result<std::optional<WriteTracking>> take_tracking_from_holder(const std::string& images_dir);

}  // namespace minicriu

namespace minicriu {
// The library's holder (DumpOptions::tracking): what MemoryTracking wraps.
class MemoryTracking {
 public:
  WriteTracking held;
};
}  // namespace minicriu
