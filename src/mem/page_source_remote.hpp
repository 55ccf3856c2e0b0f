// The pages a `minicriu page-server` serves (page_source.hpp), over one TCP
// connection: one request at a time, so one source per reader (each task of
// a restore connects on its own).
#pragma once

#include "mem/page_protocol.hpp"
#include "mem/page_source.hpp"
#include "minicriu.pb.h"

namespace minicriu {

class RemotePageSource : public PageSource {
 public:
  [[nodiscard]] static Result<std::unique_ptr<RemotePageSource>> connect(const std::string& host, uint16_t port);

  Result<std::vector<std::pair<uint64_t, uint64_t>>> runs(pid_t pid) override;
  Status read(pid_t pid, uint64_t vaddr, std::span<std::byte> out) override;
  std::string describe() const override { return "page server " + where_.str(); }
  // The inventory of the checkpoint the server serves: which dump it is.
  [[nodiscard]] Result<img::Inventory> inventory();

 private:
  RemotePageSource(UniqueFd fd, pagesrv::Endpoint where) : fd_(std::move(fd)), where_(std::move(where)) {}
  [[nodiscard]] Result<pagesrv::Reply> ask(const pagesrv::Header& h, const std::string& what);

  UniqueFd fd_;
  pagesrv::Endpoint where_;
};

}  // namespace minicriu
