// The channel between `minicriu restore` and a process being restored: a
// SOCK_SEQPACKET socket pair carrying rst::Msg records. The restoring process
// (minicriu code first, then the blob) reports warnings, one error or "ready";
// the parent answers "go" once every process of the tree is ready.
#pragma once

#include <string>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "restorer/restorer_args.hpp"

namespace minicriu {

struct ChannelPair {
  UniqueFd parent;
  UniqueFd child;
};
[[nodiscard]] Result<ChannelPair> make_channel();

// Parent side. Reads one message; an end of file (the child died) is an error.
[[nodiscard]] Result<rst::Msg> receive(int fd);
[[nodiscard]] Status send_go(int fd);
// After go: the restored process closes its end before resuming; true at EOF.
[[nodiscard]] Result<bool> wait_closed(int fd);

// Child side, best effort: if the parent is gone there is nobody to tell.
void send_warn(int fd, const std::string& text);
void send_error(int fd, const Error& e);

}  // namespace minicriu
