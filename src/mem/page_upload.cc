#include "mem/page_upload.hpp"

#include <fcntl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>

#include "base/page.hpp"

namespace minicriu {

using namespace pagesrv;

Result<PageUpload> PageUpload::connect(const std::string& spec) {
  ASSIGN_OR_RETURN(Endpoint where, parse_endpoint(spec, "--page-server"));
  ASSIGN_OR_RETURN(UniqueFd fd, connect_tcp(where.host, where.port));
  PageUpload up(std::move(fd), where);
  Header h;
  h.op = OP_HELLO_DUMP;
  h.count = kProtocolVersion;
  if (auto st = send_all(up.fd(), &h, sizeof(h)); !st) return std::unexpected(up.lost(st.error(), "hello").error());
  if (auto r = recv_reply(up.fd()); !r) return std::unexpected(up.lost(r.error(), "hello").error());
  return up;
}

Status PageUpload::lost(const Error& e, const std::string& what) const {
  Error out = e;
  return std::unexpected(out.context(fmt::format("{}: {}", describe(), what)));
}

Status PageUpload::begin_process(pid_t pid) { return begin_batch(pid, {}); }

Status PageUpload::begin_batch(pid_t pid, std::span<const std::pair<uint64_t, uint64_t>> runs) {
  std::vector<char> msg(sizeof(Header) + runs.size() * sizeof(PageRunWire));
  auto* h = new (msg.data()) Header();
  h->op = OP_PAGES;
  h->pid = static_cast<uint32_t>(pid);
  h->count = static_cast<uint32_t>(runs.size());
  auto* wire = reinterpret_cast<PageRunWire*>(msg.data() + sizeof(Header));
  for (size_t i = 0; i < runs.size(); i++) {
    wire[i] = PageRunWire{runs[i].first, runs[i].second / kPageSize};
    h->bytes += runs[i].second;
  }
  if (auto st = send_all(fd(), msg.data(), msg.size()); !st) return lost(st.error(), "sending pages");
  return {};
}

Status PageUpload::pages_end() {
  Header h;
  h.op = OP_PAGES_END;
  if (auto st = send_all(fd(), &h, sizeof(h)); !st) return lost(st.error(), "after the pages");
  if (auto r = recv_reply(fd()); !r) return lost(r.error(), "syncing the pages");
  return {};
}

Status PageUpload::send_file(const std::string& name, const std::string& path) {
  UniqueFd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return failf_errno("cannot open {} to send it", path);
  struct stat st{};
  if (::fstat(in.get(), &st) != 0) return failf_errno("cannot stat {}", path);
  Header h;
  h.op = OP_FILE;
  h.count = static_cast<uint32_t>(name.size());
  h.bytes = static_cast<uint64_t>(st.st_size);
  std::string what = "sending " + name;
  if (auto s = send_all(fd(), &h, sizeof(h)); !s) return lost(s.error(), what);
  if (auto s = send_all(fd(), name.data(), name.size()); !s) return lost(s.error(), what);
  off_t off = 0;
  while (off < st.st_size) {
    ssize_t n = ::sendfile(fd(), in.get(), &off, static_cast<size_t>(st.st_size - off));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return lost(Error("sendfile", errno), what);
    if (n == 0) return failf("{} shrank while it was sent", path);
  }
  return {};
}

Status PageUpload::commit() {
  Header h;
  h.op = OP_COMMIT;
  if (auto st = send_all(fd(), &h, sizeof(h)); !st) return lost(st.error(), "commit");
  if (auto r = recv_reply(fd()); !r) return lost(r.error(), "publishing the images");
  return {};
}

SigpipeBlock::SigpipeBlock() {
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  sigset_t pending;
  sigpending(&pending);
  was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  pthread_sigmask(SIG_BLOCK, &pipe, &old_);
}

SigpipeBlock::~SigpipeBlock() {
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  if (!was_pending_) {
    timespec zero{0, 0};
    while (sigtimedwait(&pipe, nullptr, &zero) == SIGPIPE) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old_, nullptr);
}

}  // namespace minicriu
