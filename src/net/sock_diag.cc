#include "net/sock_diag.hpp"

#include <linux/sock_diag.h>
#include <sys/socket.h>

#include "base/unique_fd.hpp"

namespace minicriu {

std::string socket_link(uint64_t ino) { return fmt::format("socket:[{}]", ino); }

Status sock_diag_exchange(const nlmsghdr& req, const std::string& what, const std::string& not_found,
                          const std::function<Status(const nlmsghdr&)>& each) {
  UniqueFd nl(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!nl) return fail_errno("NETLINK_SOCK_DIAG socket");
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(nl.get(), &req, req.nlmsg_len, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0)
    return failf_errno("{}: sock_diag request", what);
  bool dump = (req.nlmsg_flags & NLM_F_DUMP) != 0;
  alignas(nlmsghdr) char buf[65536];
  for (;;) {
    ssize_t n;
    do n = ::recv(nl.get(), buf, sizeof buf, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) return failf_errno("{}: sock_diag answer", what);
    if (n == 0) return failf("{}: the sock_diag answer ended early", what);
    int len = static_cast<int>(n);
    auto* h = reinterpret_cast<const nlmsghdr*>(buf);
    if (!NLMSG_OK(h, static_cast<unsigned>(len))) return failf("{}: short sock_diag answer", what);
    for (; NLMSG_OK(h, static_cast<unsigned>(len)); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_type == NLMSG_DONE) return {};
      if (h->nlmsg_type == NLMSG_ERROR) {
        auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
        // Error 0 is the acknowledgement a request without an answer
        // (SOCK_DESTROY, with NLM_F_ACK) gets.
        if (e->error == 0) return {};
        return std::unexpected(Error(not_found, -e->error));
      }
      TRY(each(*h));
      if (!dump) return {};
    }
  }
}

}  // namespace minicriu
