#include "mem/page_source_remote.hpp"

#include "base/page.hpp"

namespace minicriu {

using namespace pagesrv;

Result<std::unique_ptr<RemotePageSource>> RemotePageSource::connect(const std::string& host, uint16_t port) {
  Endpoint where{host, port};
  ASSIGN_OR_RETURN(UniqueFd fd, connect_tcp(host, port));
  std::unique_ptr<RemotePageSource> src(new RemotePageSource(std::move(fd), where));
  Header h;
  h.op = OP_HELLO_SERVE;
  h.count = kProtocolVersion;
  TRY(src->ask(h, "hello"));
  return src;
}

Result<Reply> RemotePageSource::ask(const Header& h, const std::string& what) {
  auto context = [&](Error e) { return std::unexpected(e.context(fmt::format("{}: {}", describe(), what))); };
  if (auto st = send_all(fd_.get(), &h, sizeof(h)); !st) return context(st.error());
  auto r = recv_reply(fd_.get());
  if (!r) return context(r.error());
  return *r;
}

Result<std::vector<std::pair<uint64_t, uint64_t>>> RemotePageSource::runs(pid_t pid) {
  Header h;
  h.op = OP_RUNS;
  h.pid = static_cast<uint32_t>(pid);
  ASSIGN_OR_RETURN(Reply r, ask(h, fmt::format("the pages of pid {}", pid)));
  if (r.bytes % sizeof(RunWire) || r.bytes > (kMaxRunsPerBatch << 8) * sizeof(RunWire))
    return failf("{}: a malformed answer for the pages of pid {}", describe(), pid);
  std::vector<RunWire> wire(r.bytes / sizeof(RunWire));
  if (auto st = recv_all(fd_.get(), wire.data(), r.bytes); !st)
    return std::unexpected(st.error().context(fmt::format("{}: the pages of pid {}", describe(), pid)));
  std::vector<std::pair<uint64_t, uint64_t>> out;
  out.reserve(wire.size());
  for (auto& w : wire) {
    if (w.end <= w.start || !page_aligned(w.start) || !page_aligned(w.end) ||
        (!out.empty() && w.start < out.back().second))
      return failf("{}: pid {}: malformed page runs", describe(), pid);
    out.emplace_back(w.start, w.end);
  }
  return out;
}

Status RemotePageSource::read(pid_t pid, uint64_t vaddr, std::span<std::byte> out) {
  // Pieces of at most 256 MiB: one answer each.
  constexpr uint64_t kPiece = 256ull << 20;
  uint64_t done = 0;
  while (done < out.size()) {
    uint64_t n = std::min<uint64_t>(kPiece, out.size() - done);
    Header h;
    h.op = OP_READ;
    h.pid = static_cast<uint32_t>(pid);
    h.vaddr = vaddr + done;
    h.bytes = n;
    std::string what = fmt::format("pid {}: {} page(s) at {:#x}", pid, n / kPageSize, vaddr + done);
    ASSIGN_OR_RETURN(Reply r, ask(h, what));
    if (r.bytes != n) return failf("{}: {}: {} bytes came instead", describe(), what, r.bytes);
    if (auto st = recv_all(fd_.get(), out.data() + done, n); !st)
      return std::unexpected(st.error().context(fmt::format("{}: {}", describe(), what)));
    done += n;
  }
  return {};
}

Result<img::Inventory> RemotePageSource::inventory() {
  Header h;
  h.op = OP_INVENTORY;
  ASSIGN_OR_RETURN(Reply r, ask(h, "the inventory"));
  if (r.bytes > (1u << 20)) return failf("{}: an inventory of {} bytes", describe(), r.bytes);
  std::string bytes(r.bytes, '\0');
  TRY(recv_all(fd_.get(), bytes.data(), bytes.size()));
  img::Inventory inv;
  if (!inv.ParseFromString(bytes)) return failf("{}: a damaged inventory", describe());
  return inv;
}

Result<std::unique_ptr<PageSource>> connect_page_server(const std::string& host, uint16_t port) {
  ASSIGN_OR_RETURN(auto src, RemotePageSource::connect(host, port));
  return std::unique_ptr<PageSource>(std::move(src));
}

}  // namespace minicriu
