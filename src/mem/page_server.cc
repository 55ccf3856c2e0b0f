// `minicriu page-server`: receives the pages (and the small metadata images)
// of `dump --page-server` into its directory, and serves the pages of that
// directory to restores (`restore --page-server`, lazy restores through
// connect_page_server()), each connection in a thread of its own, until it
// is cancelled. Protocol: mem/page_protocol.hpp.
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <arpa/inet.h>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "base/fault.hpp"
#include "base/log.hpp"
#include "base/page.hpp"
#include "images/image_chain.hpp"
#include "images/image_dir.hpp"
#include "images/image_io.hpp"
#include "images/image_set.hpp"
#include "mem/page_protocol.hpp"

namespace minicriu {

using namespace pagesrv;

namespace {

std::string peer_name(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  if (::getnameinfo(reinterpret_cast<sockaddr*>(&ss), len, host, sizeof(host), serv, sizeof(serv),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return "?";
  return Endpoint{host, static_cast<uint16_t>(std::atoi(serv))}.str();
}

// A file name a dump may send: one plain name of the directory.
bool plain_name(const std::string& n) {
  if (n.empty() || n.size() > kMaxName || n[0] == '.') return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
  });
}

// Moves n bytes from the socket into fd (a page or image file being written).
Status receive_into(int sock, int fd, uint64_t n, std::vector<char>& buf) {
  while (n) {
    size_t piece = static_cast<size_t>(std::min<uint64_t>(n, buf.size()));
    TRY(recv_all(sock, buf.data(), piece));
    size_t off = 0;
    while (off < piece) {
      ssize_t w = ::write(fd, buf.data() + off, piece - off);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return fail_errno("writing the received bytes");
      off += static_cast<size_t>(w);
    }
    n -= piece;
  }
  return {};
}

// One dump's images arriving: each written under IMAGE.part, published all
// at once at COMMIT (the inventory last, a previous checkpoint's images
// replaced); a connection that ends first takes them all back.
class DumpReceiver {
 public:
  DumpReceiver(int sock, const ImageDir& dir, const Logger& log, std::string peer)
      : sock_(sock), dir_(dir), log_(log), peer_(std::move(peer)), images_(dir_), buf_(1u << 20) {}

  Status run() {
    for (;;) {
      Header h;
      TRY(recv_all(sock_, &h, sizeof(h)));
      if (h.magic != kMagic) return fail("a message that is not of minicriu's page protocol");
      switch (h.op) {
        case OP_PAGES:
          TRY(pages(h));
          break;
        case OP_FILE:
          TRY(file(h));
          break;
        case OP_PAGES_END:
          // Synced now (the dump's own images come after): the sync at
          // COMMIT finds nothing left to write.
          for (auto& [pid, f] : pages_)
            if (::fsync(f->fd()) != 0) return failf_errno("cannot fsync {}", f->path());
          TRY(send_ok(sock_, 0));
          break;
        case OP_COMMIT:
          TRY(commit());
          return {};
        default:
          return failf("unexpected message {} in a dump", h.op);
      }
    }
  }

 private:
  Status pages(const Header& h) {
    if (h.count > kMaxRunsPerBatch) return failf("pid {}: a batch of {} runs", h.pid, h.count);
    std::vector<PageRunWire> runs(h.count);
    TRY(recv_all(sock_, runs.data(), runs.size() * sizeof(PageRunWire)));
    uint64_t total = 0;
    for (auto& r : runs) total += r.npages * kPageSize;
    if (total != h.bytes) return failf("pid {}: a batch of {} bytes whose runs hold {}", h.pid, h.bytes, total);
    auto& f = pages_[h.pid];
    if (!f) {
      ASSIGN_OR_RETURN(auto raw, RawImageFile::create(dir_.pages(static_cast<pid_t>(h.pid))));
      f = std::make_unique<RawImageFile>(std::move(raw));
    }
    bytes_ += h.bytes;
    return with_context(receive_into(sock_, f->fd(), h.bytes, buf_), f->path());
  }

  Status file(const Header& h) {
    if (h.count > kMaxName || h.bytes > kMaxFile) return fail("a malformed image file message");
    std::string name(h.count, '\0');
    TRY(recv_all(sock_, name.data(), name.size()));
    if (!plain_name(name) || name.starts_with("pages-")) return failf("an image named {:?} is refused", name);
    ASSIGN_OR_RETURN(auto raw, RawImageFile::create(dir_.file(name)));
    TRY(with_context(receive_into(sock_, raw.fd(), h.bytes, buf_), raw.path()));
    TRY(images_.commit(raw));
    files_++;
    return {};
  }

  Status commit() {
    bool has_inventory = false;
    for (auto& p : images_.pending()) has_inventory |= p == dir_.inventory();
    if (!has_inventory) return fail("the dump committed without an inventory");
    for (auto& [pid, f] : pages_) TRY(images_.commit(*f));
    TRY(images_.publish());
    log_.info("dump from {}: {} MiB of pages of {} process(es) and {} image(s) into {}", peer_, bytes_ >> 20,
              pages_.size(), files_, dir_.path());
    return send_ok(sock_, 0);
  }

  int sock_;
  const ImageDir& dir_;
  const Logger& log_;
  std::string peer_;
  ImageSet images_;
  std::map<uint32_t, std::unique_ptr<RawImageFile>> pages_;
  std::vector<char> buf_;
  uint64_t bytes_ = 0;
  unsigned files_ = 0;
};

// The pages of the directory as a restore asks for them: each process's
// pagemap followed up the --prev-images-dir chain, read once.
class PagesOfDir {
 public:
  explicit PagesOfDir(const ImageDir& dir) : dir_(dir) {}

  Result<std::string> inventory_bytes() {
    TRY(load_inventory());
    return inventory_.SerializeAsString();
  }

  Result<std::vector<RunWire>> runs(pid_t pid) {
    ASSIGN_OR_RETURN(Process * p, process(pid));
    std::vector<RunWire> out;
    for (auto& r : p->pages.runs) {
      if (!out.empty() && out.back().end == r.start) out.back().end = r.end;
      else out.push_back({r.start, r.end});
    }
    return out;
  }

  // Sends len bytes of pid's memory at vaddr (a reply first), straight from
  // the page files (sendfile).
  Status send(int sock, pid_t pid, uint64_t vaddr, uint64_t len) {
    ASSIGN_OR_RETURN(Process * p, process(pid));
    auto& runs = p->pages.runs;
    if (!page_aligned(vaddr) || !page_aligned(len) || len == 0 || len > kMaxRead || vaddr + len < vaddr)
      return failf("pid {}: a malformed read of {} bytes at {:#x}", pid, len, vaddr);
    // Every piece must be there before the reply says yes.
    auto first = std::upper_bound(runs.begin(), runs.end(), vaddr, [](uint64_t a, const PageRun& r) { return a < r.end; });
    uint64_t at = vaddr, end = vaddr + len;
    for (auto it = first; at < end; ++it) {
      if (it == runs.end() || it->start > at)
        return failf("pid {}: the page at {:#x} is not in the checkpoint {}", pid, at, dir_.path());
      at = std::min(end, it->end);
    }
    TRY(send_ok(sock, len));
    at = vaddr;
    for (auto it = first; at < end; ++it) {
      uint64_t piece_end = std::min(end, it->end);
      ASSIGN_OR_RETURN(int fd, file(*p, it->file));
      off_t off = static_cast<off_t>(it->offset + (at - it->start));
      uint64_t left = piece_end - at;
      while (left) {
        ssize_t n = ::sendfile(sock, fd, &off, left);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return failf_errno("pid {}: sending the pages at {:#x}", pid, at);
        if (n == 0) return failf("{} ends early at offset {}", p->pages.files[it->file], off);
        left -= static_cast<uint64_t>(n);
      }
      at = piece_end;
    }
    sent_ += len;
    return {};
  }

  uint64_t sent() const { return sent_; }

 private:
  struct Process {
    ResolvedPages pages;
    std::map<uint32_t, UniqueFd> fds;
  };

  Status load_inventory() {
    if (loaded_) return {};
    ASSIGN_OR_RETURN(inventory_, with_context(read_single_image<img::Inventory>(dir_.inventory(), ImageKind::inventory),
                                              fmt::format("{} holds no complete checkpoint", dir_.path())));
    ASSIGN_OR_RETURN(auto pstree, read_all_images<img::ProcessEntry>(dir_.pstree(), ImageKind::pstree));
    for (auto& e : pstree) pids_.insert(static_cast<pid_t>(e.pid()));
    loaded_ = true;
    return {};
  }

  Result<Process*> process(pid_t pid) {
    TRY(load_inventory());
    if (auto it = procs_.find(pid); it != procs_.end()) return &it->second;
    if (!pids_.count(pid)) return failf("pid {} is not in the checkpoint {}", pid, dir_.path());
    ASSIGN_OR_RETURN(auto pm, read_all_images<img::PagemapEntry>(dir_.pagemap(pid), ImageKind::pagemap));
    ASSIGN_OR_RETURN(auto resolved, resolve_pages(dir_.path(), inventory_, pid, pm));
    Process& p = procs_[pid];
    p.pages = std::move(resolved);
    return &p;
  }

  Result<int> file(Process& p, uint32_t i) {
    auto& fd = p.fds[i];
    if (!fd) {
      fd.reset(::open(p.pages.files[i].c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd) return failf_errno("cannot open {}", p.pages.files[i]);
    }
    return fd.get();
  }

  const ImageDir& dir_;
  bool loaded_ = false;
  img::Inventory inventory_;
  std::set<pid_t> pids_;
  std::map<pid_t, Process> procs_;
  uint64_t sent_ = 0;
};

// Answers a restore's requests until it hangs up. An error about what it
// asked for is answered and the connection goes on; a broken one ends.
Status serve(int sock, const ImageDir& dir, const Logger& log, const std::string& peer) {
  PagesOfDir pages(dir);
  for (;;) {
    Header h;
    auto got = recv_all(sock, &h, sizeof(h));
    if (!got) {
      log.info("restore from {}: {} MiB of pages served", peer, pages.sent() >> 20);
      return {};  // it hung up
    }
    if (h.magic != kMagic) return fail("a message that is not of minicriu's page protocol");
    auto answer = [&](Status st) -> Status {
      if (st) return {};
      log.info("restore from {}: {}", peer, st.error().what());
      return send_error(sock, st.error());
    };
    switch (h.op) {
      case OP_INVENTORY: {
        auto inv = pages.inventory_bytes();
        if (!inv) {
          TRY(answer(std::unexpected(inv.error())));
          break;
        }
        TRY(send_ok(sock, inv->size()));
        TRY(send_all(sock, inv->data(), inv->size()));
        break;
      }
      case OP_RUNS: {
        auto runs = pages.runs(static_cast<pid_t>(h.pid));
        if (!runs) {
          TRY(answer(std::unexpected(runs.error())));
          break;
        }
        TRY(send_ok(sock, runs->size() * sizeof(RunWire)));
        TRY(send_all(sock, runs->data(), runs->size() * sizeof(RunWire)));
        break;
      }
      case OP_READ: {
        // A failure after the reply said yes cannot be told: the connection goes.
        auto st = pages.send(sock, static_cast<pid_t>(h.pid), h.vaddr, h.bytes);
        if (!st && st.error().message().find("sending the pages") != std::string::npos) return st;
        TRY(answer(st));
        break;
      }
      default:
        return failf("unexpected message {} from a restore", h.op);
    }
  }
}

// The listening socket: address (empty: every address, IPv6 and IPv4) and port.
Result<UniqueFd> listen_on(const std::string& address, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* list = nullptr;
  std::string service = std::to_string(port);
  const char* host = address.empty() ? "::" : address.c_str();
  if (int r = ::getaddrinfo(host, service.c_str(), &hints, &list); r != 0 && address.empty())
    r = ::getaddrinfo("0.0.0.0", service.c_str(), &hints, &list);
  if (!list) return failf("page server: cannot resolve the address {:?}", address);
  Error last("no address");
  for (addrinfo* a = list; a; a = a->ai_next) {
    UniqueFd fd(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    if (!fd) {
      last = Error("socket", errno);
      continue;
    }
    int one = 1, zero = 0;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (a->ai_family == AF_INET6 && address.empty())
      ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    if (::bind(fd.get(), a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd.get(), 64) != 0) {
      last = Error("bind", errno);
      continue;
    }
    ::freeaddrinfo(list);
    return fd;
  }
  ::freeaddrinfo(list);
  return std::unexpected(last.context(fmt::format("page server: cannot listen on {}", Endpoint{address.empty() ? "*" : address, port}.str())));
}

uint16_t bound_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

// The connections being served, each in its thread: shut down and joined
// when the server stops.
class Connections {
 public:
  ~Connections() {
    {
      std::lock_guard l(mu_);
      for (auto& c : list_) ::shutdown(c.fd.get(), SHUT_RDWR);
    }
    for (auto& c : list_) c.thread.join();
  }
  template <typename F>
  void start(UniqueFd fd, F&& body) {
    std::lock_guard l(mu_);
    reap();
    auto& c = list_.emplace_back();
    c.fd = std::move(fd);
    int sock = c.fd.get();
    std::atomic<bool>* done = &c.done;
    c.thread = std::thread([sock, done, body = std::forward<F>(body)]() mutable {
      // A restore that hangs up mid-read is an EPIPE here, not a SIGPIPE
      // for the whole program.
      sigset_t pipe;
      sigemptyset(&pipe);
      sigaddset(&pipe, SIGPIPE);
      pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
      body(sock);
      done->store(true);
    });
  }

 private:
  struct Conn {
    UniqueFd fd;
    std::thread thread;
    std::atomic<bool> done{false};
  };
  void reap() {
    for (auto it = list_.begin(); it != list_.end();) {
      if (!it->done.load()) {
        ++it;
        continue;
      }
      it->thread.join();
      it = list_.erase(it);
    }
  }
  std::mutex mu_;
  std::list<Conn> list_;
};

}  // namespace

Status page_server(const PageServerOptions& options) {
  Logger log(options.log);
  ImageDir dir(options.images_dir);
  TRY(dir.check_writable());
  ASSIGN_OR_RETURN(UniqueFd listener, listen_on(options.address, options.port));
  uint16_t port = bound_port(listener.get());
  log.info("page server: listening on {} for dumps into and restores from {}",
           Endpoint{options.address.empty() ? "*" : options.address, port}.str(), dir.path());
  if (options.on_listening) options.on_listening(port);
  std::mutex dumping;  // one dump at a time writes the directory
  Connections conns;
  for (;;) {
    if (options.cancel && options.cancel->requested()) {
      log.info("page server: stopped");
      return {};
    }
    pollfd p{listener.get(), POLLIN, 0};
    int n = ::poll(&p, 1, 200);
    if (n < 0 && errno != EINTR) return fail_errno("page server: poll");
    if (n <= 0) continue;
    UniqueFd sock(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!sock) continue;
    // A peer that stops talking is let go after a while (a restore thinking
    // between requests is not: its reads come as its tasks need them).
    timeval tv{300, 0};
    ::setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(sock.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    conns.start(std::move(sock), [&dir, &log, &dumping](int fd) {
      std::string peer = peer_name(fd);
      Header h;
      if (!recv_all(fd, &h, sizeof(h)) || h.magic != kMagic) return;  // a probe, or not ours
      if (h.count != kProtocolVersion) {
        (void)send_error(fd, Error(fmt::format("the page server speaks protocol {}, the peer {}: use the same "
                                               "minicriu on both ends", kProtocolVersion, h.count)));
        return;
      }
      if (h.op == OP_HELLO_DUMP) {
        std::unique_lock lock(dumping, std::try_to_lock);
        if (!lock.owns_lock()) {
          (void)send_error(fd, Error(fmt::format("the page server is receiving another dump into {}; try again "
                                                 "once it is done", dir.path()), EBUSY));
          return;
        }
        if (!send_ok(fd, 0)) return;
        log.info("dump from {}: receiving into {}", peer, dir.path());
        DumpReceiver receiver(fd, dir, log, peer);
        if (auto st = receiver.run(); !st) {
          log.warn("dump from {} failed, its images were dropped: {}", peer, st.error().what());
          (void)send_error(fd, st.error());
        }
        return;
      }
      if (h.op == OP_HELLO_SERVE) {
        if (!send_ok(fd, 0)) return;
        log.info("restore from {}: serving the pages of {}", peer, dir.path());
        if (auto st = serve(fd, dir, log, peer); !st) log.warn("restore from {}: {}", peer, st.error().what());
        return;
      }
      (void)send_error(fd, Error(fmt::format("unknown first message {}", h.op)));
    });
  }
}

}  // namespace minicriu
