// Socket options carried as differences from a fresh socket of the same kind.
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "base/unique_fd.hpp"
#include "net/socket_options.hpp"

using namespace minicriu;

namespace {

int get_int(int fd, int level, int name) {
  int v = -1;
  socklen_t len = sizeof v;
  EXPECT_EQ(::getsockopt(fd, level, name, &v, &len), 0);
  return v;
}

}  // namespace

TEST(SocketOptions, OnlyWhatDiffersFromAFreshSocketIsCarriedAndSetAgain) {
  UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, IPPROTO_UDP));
  int ttl = 9, prio = 5;
  ASSERT_EQ(::setsockopt(fd.get(), IPPROTO_IP, IP_TTL, &ttl, sizeof ttl), 0);
  ASSERT_EQ(::setsockopt(fd.get(), SOL_SOCKET, SO_PRIORITY, &prio, sizeof prio), 0);
  sock_filter code[] = {BPF_STMT(BPF_RET | BPF_K, 0)};
  sock_fprog prog{1, code};
  ASSERT_EQ(::setsockopt(fd.get(), SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog), 0);
  img::SocketOptions opts;
  ASSERT_TRUE(read_socket_options(fd.get(), AF_INET, SOCK_DGRAM, IPPROTO_UDP, 0, "test", opts));
  EXPECT_EQ(opts.options_size(), 2) << describe_socket_options(opts);
  EXPECT_EQ(opts.filter().size(), sizeof(sock_filter));
  EXPECT_EQ(describe_socket_options(opts), "SO_PRIORITY=5, IP_TTL=9, BPF filter (1 instructions)");

  UniqueFd fresh(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, IPPROTO_UDP));
  ASSERT_TRUE(set_socket_options(fresh.get(), opts, "test"));
  ASSERT_TRUE(attach_socket_filter(fresh.get(), opts, "test"));
  EXPECT_EQ(get_int(fresh.get(), IPPROTO_IP, IP_TTL), 9);
  EXPECT_EQ(get_int(fresh.get(), SOL_SOCKET, SO_PRIORITY), 5);
  socklen_t count = 0;
  ASSERT_EQ(::getsockopt(fresh.get(), SOL_SOCKET, SO_GET_FILTER, nullptr, &count), 0);
  EXPECT_EQ(count, 1u);
}

TEST(SocketOptions, AnOptionThisVersionDoesNotKnowIsRefusedAtRestore) {
  img::SocketOptions opts;
  auto* o = opts.add_options();
  o->set_level(SOL_SOCKET);
  o->set_name(9999);
  o->set_value(std::string(4, '\0'));
  UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  auto st = set_socket_options(fd.get(), opts, "socket:[1]");
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().what().find("socket:[1]: socket option 1:9999 is not one this version knows"),
            std::string::npos) << st.error().what();
}
