// The page server's protocol and its refusals, against a page_server() run
// in a thread on a free loopback port: what a damaged or hostile peer sends
// is answered with an error and writes nothing outside its directory.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "mem/page_protocol.hpp"
#include "mem/page_source_remote.hpp"
#include "minicriu/minicriu.hpp"

using namespace minicriu;
using namespace minicriu::pagesrv;

TEST(PageProtocol, EndpointsParseOrSayWhatIsExpected) {
  auto a = parse_endpoint("10.0.0.2:27027", "--page-server");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host, "10.0.0.2");
  EXPECT_EQ(a->port, 27027);
  auto b = parse_endpoint("[::1]:5", "--page-server");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->host, "::1");
  EXPECT_EQ(b->str(), "[::1]:5");
  for (const char* bad : {"host", "host:", ":27", "host:0", "host:70000", "host:2x"}) {
    auto r = parse_endpoint(bad, "--page-server");
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().message().find("--page-server"), std::string::npos);
  }
}

namespace {

class ServerThread {
 public:
  explicit ServerThread(const std::string& dir) {
    PageServerOptions o;
    o.images_dir = dir;
    o.address = "127.0.0.1";
    o.cancel = &cancel_;
    o.on_listening = [this](uint16_t p) { port_.store(p); };
    thread_ = std::thread([this, o] { status_ = page_server(o); });
    for (int i = 0; i < 500 && !port_.load(); i++) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ~ServerThread() {
    cancel_.request();
    thread_.join();
  }
  uint16_t port() const { return port_.load(); }
  Status status_;

 private:
  Cancel cancel_;
  std::atomic<uint16_t> port_{0};
  std::thread thread_;
};

UniqueFd hello(uint16_t port, uint32_t op) {
  auto fd = connect_tcp("127.0.0.1", port, 5000);
  EXPECT_TRUE(fd) << fd.error().what();
  Header h;
  h.op = op;
  h.count = kProtocolVersion;
  EXPECT_TRUE(send_all(fd->get(), &h, sizeof(h)));
  EXPECT_TRUE(recv_reply(fd->get()));
  return std::move(*fd);
}

}  // namespace

TEST(PageProtocol, ADumpNamingAFileOutsideItsDirectoryIsRefusedAndLeavesNothing) {
  char tmpl[] = "/tmp/minicriu-unit-ps-XXXXXX";
  std::string root = ::mkdtemp(tmpl);
  std::string dir = root + "/served";
  std::filesystem::create_directory(dir);
  {
    ServerThread server(dir);
    ASSERT_NE(server.port(), 0);
    UniqueFd fd = hello(server.port(), OP_HELLO_DUMP);
    std::string name = "../evil.img";
    Header h;
    h.op = OP_FILE;
    h.count = static_cast<uint32_t>(name.size());
    h.bytes = 4;
    ASSERT_TRUE(send_all(fd.get(), &h, sizeof(h)));
    ASSERT_TRUE(send_all(fd.get(), name.data(), name.size()));
    // (Its 4 bytes never sent: the name alone is refused.)
    auto r = recv_reply(fd.get());
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("refused"), std::string::npos) << r.error().what();
    EXPECT_FALSE(std::filesystem::exists(root + "/evil.img"));

    // A batch whose runs do not add up to its bytes.
    UniqueFd fd2 = hello(server.port(), OP_HELLO_DUMP);
    Header p;
    p.op = OP_PAGES;
    p.pid = 7;
    p.count = 1;
    p.bytes = 4096;
    PageRunWire run{0x10000, 2};
    ASSERT_TRUE(send_all(fd2.get(), &p, sizeof(p)));
    ASSERT_TRUE(send_all(fd2.get(), &run, sizeof(run)));
    auto r2 = recv_reply(fd2.get());
    ASSERT_FALSE(r2);
    EXPECT_NE(r2.error().message().find("whose runs hold"), std::string::npos) << r2.error().what();
  }
  // Nothing of either dump is left (no .part, no image).
  EXPECT_TRUE(std::filesystem::is_empty(dir));
  std::filesystem::remove_all(root);
}

TEST(PageProtocol, ARestoreAskingADirectoryWithoutCheckpointGetsOneLineAndTheConnectionGoesOn) {
  char tmpl[] = "/tmp/minicriu-unit-ps-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  {
    ServerThread server(dir);
    ASSERT_NE(server.port(), 0);
    auto src = RemotePageSource::connect("127.0.0.1", server.port());
    ASSERT_TRUE(src) << src.error().what();
    for (int i = 0; i < 2; i++) {
      auto runs = (*src)->runs(1);
      ASSERT_FALSE(runs);
      EXPECT_NE(runs.error().what().find("holds no complete checkpoint"), std::string::npos) << runs.error().what();
    }
    EXPECT_FALSE((*src)->inventory());
  }
  std::filesystem::remove_all(dir);
}
