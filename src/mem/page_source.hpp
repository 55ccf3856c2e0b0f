// src/mem/page_source.hpp
// Where a restore's pages come from: the images dir (through its parent
// chain) or a page server (minicriu page-server). Lazy restore asks it for
// pages on first touch; both sources serve many readers one after another.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/error.hpp"

namespace minicriu {

class PageSource {
 public:
  virtual ~PageSource() = default;
  // The address ranges [start, end) of pid's memory that the checkpoint holds
  // bytes for, sorted and not overlapping (pages outside them read as zero).
  [[nodiscard]] virtual Result<std::vector<std::pair<uint64_t, uint64_t>>> runs(pid_t pid) = 0;
  // Reads out.size() bytes of pid's dumped memory at vaddr; vaddr and the size
  // are page aligned and lie inside runs(pid).
  [[nodiscard]] virtual Status read(pid_t pid, uint64_t vaddr, std::span<std::byte> out) = 0;
  // Where the pages come from ("images /x/y", "page server 10.0.0.1:27"), for messages.
  [[nodiscard]] virtual std::string describe() const = 0;
};

// The pages of the checkpoint in dir, followed up its --prev-images-dir chain.
[[nodiscard]] Result<std::unique_ptr<PageSource>> open_local_pages(const std::string& dir);
// The pages served by `minicriu page-server` at host:port.
[[nodiscard]] Result<std::unique_ptr<PageSource>> connect_page_server(const std::string& host, uint16_t port);

}  // namespace minicriu
