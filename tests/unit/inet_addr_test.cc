// Inet endpoints: formatting, v4-mapped normalization, sockaddr round trips,
// matching a connection with its reverse, and which listener takes what.
#include <gtest/gtest.h>
#include <arpa/inet.h>

#include "net/inet_addr.hpp"
#include "net/inet_socket.hpp"

using namespace minicriu;

namespace {

InetEndpoint ep(const char* text, uint16_t port) {
  InetEndpoint e;
  if (::inet_pton(AF_INET, text, e.addr.data()) == 1) e.family = AF_INET;
  else {
    e.family = AF_INET6;
    EXPECT_EQ(::inet_pton(AF_INET6, text, e.addr.data()), 1) << text;
  }
  e.port = port;
  return e;
}

}  // namespace

TEST(InetAddr, FormatsBothFamilies) {
  EXPECT_EQ(format_endpoint(ep("127.0.0.1", 5000)), "127.0.0.1:5000");
  EXPECT_EQ(format_endpoint(ep("::1", 80)), "[::1]:80");
  EXPECT_EQ(format_endpoint(ep("::ffff:10.0.0.1", 7)), "[::ffff:10.0.0.1]:7");
  EXPECT_EQ(format_connection({ep("127.0.0.1", 1), ep("127.0.0.2", 2)}), "127.0.0.1:1 -> 127.0.0.2:2");
}

TEST(InetAddr, V4MappedNormalizesToIpv4) {
  EXPECT_EQ(ep("::ffff:127.0.0.1", 9).normalized(), ep("127.0.0.1", 9));
  EXPECT_EQ(ep("::1", 9).normalized(), ep("::1", 9));
  EXPECT_EQ(ep("10.1.2.3", 9).normalized(), ep("10.1.2.3", 9));
  EXPECT_TRUE(ep("0.0.0.0", 1).is_any());
  EXPECT_TRUE(ep("::", 1).is_any());
  EXPECT_FALSE(ep("::1", 1).is_any());
}

TEST(InetAddr, BothEndsOfAConnectionMatchAcrossFamilies) {
  // The server's AF_INET6 socket sees a v4-mapped client; the client's
  // AF_INET socket sees plain IPv4: one connection.
  Connection server = make_connection(ep("::ffff:127.0.0.1", 5000), ep("::ffff:127.0.0.1", 41000));
  Connection client = make_connection(ep("127.0.0.1", 41000), ep("127.0.0.1", 5000));
  EXPECT_EQ(server.reversed(), client);
  EXPECT_NE(server, client);
  EXPECT_NE(make_connection(ep("127.0.0.1", 41001), ep("127.0.0.1", 5000)), server.reversed());
}

TEST(InetAddr, BytesAndSockaddrsRoundTrip) {
  auto v4 = ep("192.168.1.2", 443);
  auto back = endpoint_from_bytes(v4.addr_bytes(), 443);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, v4);
  EXPECT_EQ(v4.addr_bytes().size(), 4u);
  EXPECT_FALSE(endpoint_from_bytes("abc", 1));
  EXPECT_FALSE(endpoint_from_bytes(v4.addr_bytes(), 70000));
  // An IPv4 endpoint on an AF_INET6 socket becomes v4-mapped.
  sockaddr_storage ss;
  EXPECT_EQ(endpoint_to_sockaddr(v4, AF_INET6, ss), sizeof(sockaddr_in6));
  EXPECT_EQ(endpoint_from_sockaddr(ss), ep("::ffff:192.168.1.2", 443));
  EXPECT_EQ(endpoint_to_sockaddr(v4, AF_INET, ss), sizeof(sockaddr_in));
  EXPECT_EQ(endpoint_from_sockaddr(ss), v4);
}

TEST(InetAddr, ListenerTakesWhatArrivesAtItsAddress) {
  EXPECT_TRUE(listener_takes(ep("127.0.0.1", 80), false, ep("127.0.0.1", 80)));
  EXPECT_FALSE(listener_takes(ep("127.0.0.1", 80), false, ep("127.0.0.1", 81)));
  EXPECT_FALSE(listener_takes(ep("127.0.0.1", 80), false, ep("127.0.0.2", 80)));
  EXPECT_TRUE(listener_takes(ep("0.0.0.0", 80), false, ep("127.0.0.2", 80)));
  EXPECT_FALSE(listener_takes(ep("0.0.0.0", 80), false, ep("::1", 80)));
  EXPECT_TRUE(listener_takes(ep("::", 80), false, ep("127.0.0.1", 80)));
  EXPECT_FALSE(listener_takes(ep("::", 80), true, ep("127.0.0.1", 80)));
  EXPECT_TRUE(listener_takes(ep("::", 80), true, ep("::1", 80)));
  // A listener on a v4-mapped address is the IPv4 address.
  EXPECT_TRUE(listener_takes(ep("::ffff:127.0.0.1", 80), false, ep("127.0.0.1", 80)));
}

TEST(InetAddr, TcpStatesByName) {
  EXPECT_EQ(tcp_state_name(1), "ESTABLISHED");
  EXPECT_EQ(tcp_state_name(10), "LISTEN");
  EXPECT_EQ(tcp_state_name(8), "CLOSE_WAIT");
  EXPECT_EQ(tcp_state_name(99), "state-99");
}

TEST(InetSocketDescribe, NamesFamilyAddressesAndState) {
  img::InetSocketFile sk;
  sk.set_family(AF_INET6);
  sk.set_protocol(IPPROTO_TCP);
  sk.set_state(1);
  sk.set_local_addr(ep("::1", 0).addr_bytes());
  sk.set_local_port(5000);
  sk.set_remote_addr(ep("::1", 0).addr_bytes());
  sk.set_remote_port(41000);
  EXPECT_EQ(describe_inet_socket(sk), "tcp6 [::1]:5000 -> [::1]:41000 ESTABLISHED");
  img::InetSocketFile u;
  u.set_family(AF_INET);
  u.set_protocol(IPPROTO_UDP);
  u.set_local_addr(ep("0.0.0.0", 0).addr_bytes());
  u.set_local_port(53);
  EXPECT_EQ(describe_inet_socket(u), "udp 0.0.0.0:53");
}

namespace {

img::FileEntry tcp_entry(uint32_t state) {
  img::FileEntry f;
  f.set_id(3);
  auto* sk = f.mutable_inet_sk();
  sk->set_ino(77);
  sk->set_family(AF_INET);
  sk->set_type(SOCK_STREAM);
  sk->set_protocol(IPPROTO_TCP);
  sk->set_state(state);
  sk->set_local_addr(std::string(4, '\0'));
  sk->set_remote_addr(std::string(4, '\1'));
  sk->set_remote_port(80);
  sk->mutable_tcp()->set_send_queue("abc");
  return f;
}

std::string validate_error(const img::FileEntry& f) {
  auto st = InetSocketRestorer::validate({f});
  return st ? "" : st.error().what();
}

}  // namespace

TEST(InetSocketValidate, AcceptsAGoodEntryAndNamesWhatIsWrong) {
  EXPECT_EQ(validate_error(tcp_entry(1)), "");
  EXPECT_EQ(validate_error(tcp_entry(8)), "");  // CLOSE_WAIT
  EXPECT_EQ(validate_error(tcp_entry(2)), "");  // SYN_SENT: connects again
  auto bad_state = tcp_entry(3);
  EXPECT_NE(validate_error(bad_state).find("file 3: inet socket socket:[77]: TCP state SYN_RECV cannot be restored"),
            std::string::npos) << validate_error(bad_state);
  auto bad_addr = tcp_entry(1);
  bad_addr.mutable_inet_sk()->set_local_addr("12345");
  EXPECT_NE(validate_error(bad_addr).find("addresses of the wrong size"), std::string::npos);
  auto bad_unsent = tcp_entry(1);
  bad_unsent.mutable_inet_sk()->mutable_tcp()->set_unsent(4);
  EXPECT_NE(validate_error(bad_unsent).find("4 unsent bytes in a send queue of 3"), std::string::npos);
  auto raw = tcp_entry(1);
  raw.mutable_inet_sk()->set_type(SOCK_RAW);
  EXPECT_NE(validate_error(raw).find("neither TCP nor UDP"), std::string::npos);
  auto no_tcp = tcp_entry(1);
  no_tcp.mutable_inet_sk()->clear_tcp();
  EXPECT_NE(validate_error(no_tcp).find("without its TCP state"), std::string::npos);
}
