// The dump's side of a page server (`dump --page-server HOST:PORT`): the
// pages go into the TCP connection (spliced from the parasite's pipe, a
// header per batch of runs), the metadata images follow once written, and
// the server publishes them all at COMMIT. Protocol: mem/page_protocol.hpp.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <cstdint>
#include <span>
#include <string>
#include <utility>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "mem/page_protocol.hpp"

namespace minicriu {

class PageUpload {
 public:
  [[nodiscard]] static Result<PageUpload> connect(const std::string& spec);
  // Where the bytes of each batch go, after begin_batch().
  int fd() const { return fd_.get(); }
  std::string describe() const { return "page server " + where_.str(); }
  const pagesrv::Endpoint& where() const { return where_; }
  // The page image of pid exists on the server (a process may have no page).
  [[nodiscard]] Status begin_process(pid_t pid);
  // The header of a batch: runs as (address, bytes); their bytes follow on fd().
  [[nodiscard]] Status begin_batch(pid_t pid, std::span<const std::pair<uint64_t, uint64_t>> runs);
  // Every page sent: the server syncs them and says so.
  [[nodiscard]] Status pages_end();
  // A metadata image (name in the directory, read from path).
  [[nodiscard]] Status send_file(const std::string& name, const std::string& path);
  // The server publishes the images (the inventory last) and says so.
  [[nodiscard]] Status commit();

 private:
  PageUpload(UniqueFd fd, pagesrv::Endpoint where) : fd_(std::move(fd)), where_(std::move(where)) {}
  [[nodiscard]] Status lost(const Error& e, const std::string& what) const;
  UniqueFd fd_;
  pagesrv::Endpoint where_;
};

// SIGPIPE held off this thread while it writes into a connection the peer
// may have dropped (splice into a socket raises it, as write does): the
// write fails with EPIPE instead; a SIGPIPE it caused is taken away at the
// end, one that was pending before is left.
class SigpipeBlock {
 public:
  SigpipeBlock();
  ~SigpipeBlock();
  SigpipeBlock(const SigpipeBlock&) = delete;
  SigpipeBlock& operator=(const SigpipeBlock&) = delete;
  static void* operator new(size_t) = delete;

 private:
  sigset_t old_{};
  bool was_pending_ = false;
};

}  // namespace minicriu
