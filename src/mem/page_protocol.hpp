// The wire protocol of `minicriu page-server` (TCP), shared by the server,
// the dump that streams its pages to it (page_upload) and the restores that
// read pages from it (page_source_remote).
//
// Every message is a fixed Header, maybe followed by bytes; the server
// answers some with a Reply, maybe followed by bytes (or, for an error, by
// the text of the error). Both ends run on x86-64: fields are in its byte
// order. A connection says what it is for in its first message:
//
//   dump:  HELLO_DUMP, then for each batch of pages PAGES (pid, count runs,
//          bytes: their total) + count PageRunWire + the bytes; FILE (count:
//          name length, bytes: size) + name + the contents, for each
//          metadata image; PAGES_END and COMMIT, each answered once what
//          came before is synced (COMMIT: published, the inventory last).
//          A connection that ends before COMMIT leaves the directory as it was.
//   serve: HELLO_SERVE, then any number of INVENTORY (the inventory image's
//          bytes), RUNS pid (count RunWire [start, end)), READ pid vaddr
//          bytes (the bytes), each answered.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <string>

#include "base/error.hpp"
#include "base/unique_fd.hpp"

namespace minicriu::pagesrv {

constexpr uint32_t kMagic = 0x5350434d;  // "MCPS"
constexpr uint32_t kProtocolVersion = 1;

enum Op : uint32_t {
  OP_HELLO_DUMP = 1,
  OP_HELLO_SERVE = 2,
  OP_PAGES = 3,
  OP_PAGES_END = 4,
  OP_FILE = 5,
  OP_COMMIT = 6,
  OP_INVENTORY = 7,
  OP_RUNS = 8,
  OP_READ = 9,
};

struct Header {
  uint32_t magic = kMagic;
  uint32_t op = 0;
  uint32_t pid = 0;
  uint32_t count = 0;  // HELLO: the protocol version
  uint64_t vaddr = 0;
  uint64_t bytes = 0;
};
static_assert(sizeof(Header) == 32);

struct Reply {
  uint32_t magic = kMagic;
  int32_t err = 0;        // 0, or the errno of the failure (text follows)
  uint32_t text_len = 0;  // an error's one line
  uint32_t ok = 1;        // 1: success (bytes follow), 0: an error (text follows)
  uint64_t bytes = 0;
};
static_assert(sizeof(Reply) == 24);

struct PageRunWire {  // in PAGES: a run of the batch
  uint64_t vaddr = 0;
  uint64_t npages = 0;
};
struct RunWire {  // in a RUNS reply
  uint64_t start = 0;
  uint64_t end = 0;
};

// The largest batch of pages or file one message carries: bounds what a
// damaged or hostile peer makes the other end allocate or expect.
constexpr uint64_t kMaxRunsPerBatch = 1u << 16;
constexpr uint64_t kMaxFile = 64ull << 30;
constexpr uint32_t kMaxName = 255;
constexpr uint64_t kMaxRead = 1ull << 30;

// "HOST:PORT" (HOST may be "[v6]"), for messages and options.
struct Endpoint {
  std::string host;
  uint16_t port = 0;
  std::string str() const;
};
[[nodiscard]] Result<Endpoint> parse_endpoint(const std::string& spec, const std::string& option);

// A TCP connection to host:port (close-on-exec, TCP_NODELAY), or an error
// naming it; timeout_ms bounds the connect and every send and receive after.
[[nodiscard]] Result<UniqueFd> connect_tcp(const std::string& host, uint16_t port, int timeout_ms = 30000);

// All of buf, or an error (EPIPE, ECONNRESET: the peer is gone; a receive
// that meets the end of the stream: ECONNRESET too). No SIGPIPE.
[[nodiscard]] Status send_all(int fd, const void* buf, size_t len);
[[nodiscard]] Status recv_all(int fd, void* buf, size_t len);
// The Reply to a request, its error (with the server's text) as ours.
[[nodiscard]] Result<Reply> recv_reply(int fd);
// Sends an error reply (the server side).
[[nodiscard]] Status send_error(int fd, const Error& e);
[[nodiscard]] Status send_ok(int fd, uint64_t bytes);

}  // namespace minicriu::pagesrv
