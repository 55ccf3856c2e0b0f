// NETLINK_SOCK_DIAG, the kernel's view of sockets by family (unix_diag,
// inet_diag): one request, its answer walked message by message. The unix
// and inet kinds build their requests and read their answers; the netlink
// exchange is here once.
#pragma once

#include <linux/netlink.h>

#include <cstdint>
#include <functional>
#include <string>

#include "base/error.hpp"

namespace minicriu {

// "socket:[INODE]": how /proc names a socket's fd, and the key of an
// external socket (--inherit-fd fd[N]:socket:[INODE]).
std::string socket_link(uint64_t ino);

// Sends req (a nlmsghdr followed by the family's request; NLM_F_DUMP for
// every socket, else one) and hands each answer message to `each`. An
// NLMSG_ERROR answer fails with not_found (and its errno); what names the
// request in other errors.
[[nodiscard]] Status sock_diag_exchange(const nlmsghdr& req, const std::string& what,
                                        const std::string& not_found,
                                        const std::function<Status(const nlmsghdr&)>& each);

}  // namespace minicriu
