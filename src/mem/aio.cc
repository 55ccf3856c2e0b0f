// AIO contexts (io_setup(2)): the ring the kernel maps for each one ("/[aio]
// (deleted)", a file of the aio pseudo file system), whose address is the
// context's id (aio_context_t) that the application passes to io_submit.
//
// Dump: the ring's header (struct aio_ring), read from the frozen process,
// gives its size in events; a ring with completions not yet reaped (head !=
// tail) is refused, as CRIU does: the kernel's own tail cannot be set, and
// the events would have to be queued again ahead of it. Read again once the
// whole tree is seen, for requests that completed during the dump.
// Restore: io_setup() in the restored process makes a ring of the same number
// of events, mremap()ed into the VMA's premap slot; the restorer blob moves it
// to its address as any premapped VMA, and the kernel follows each move
// (aio_ring_mremap, Linux 3.19: the context's id becomes the new address).
// Its pages hold nothing to carry: head == tail, no event to read.
#include <sys/mman.h>

#include "base/remote_ptr.hpp"
#include "base/syscalls.hpp"
#include "kinds/kind.hpp"
#include "mem/vma.hpp"
#include "ptrace/tracee_memory.hpp"

namespace minicriu {

namespace {

// fs/aio.c's struct aio_ring (not in the uapi headers): the ring's first
// bytes, then its io_events.
struct AioRingHeader {
  uint32_t id;
  uint32_t nr;    // io_events in the ring
  uint32_t head;  // the next event to reap (userland may move it)
  uint32_t tail;  // where the kernel writes the next completion
  uint32_t magic;
  uint32_t compat_features;
  uint32_t incompat_features;
  uint32_t header_length;
};
static_assert(sizeof(AioRingHeader) == 32);
constexpr uint32_t kAioRingMagic = 0xa10a10a1;

struct Ring {
  pid_t pid;
  uint64_t start, end;
  std::string what;
};

Result<AioRingHeader> read_header(const Ring& r) {
  ASSIGN_OR_RETURN(auto mem, TraceeMemory::open(r.pid));
  ASSIGN_OR_RETURN(AioRingHeader h, with_context(mem.read(RemotePtr<AioRingHeader>(r.start)), r.what));
  if (h.magic != kAioRingMagic || h.header_length != sizeof(AioRingHeader))
    return failf("{}: the ring of an AIO context with an unknown header (magic {:#x}, {} bytes)", r.what, h.magic,
                 h.header_length);
  if (h.head != h.tail)
    return failf("{}: the ring of an AIO context (io_setup) holds {} completion event(s) not yet reaped, which "
                 "minicriu cannot queue again; reap them (io_getevents) before the dump",
                 r.what, (h.tail + h.nr - h.head % h.nr) % h.nr);
  return h;
}

// Destroys a context made here unless released (the ring was moved where
// it belongs).
class ContextGuard {
 public:
  explicit ContextGuard(uint64_t ctx) : ctx_(ctx) {}
  ContextGuard(const ContextGuard&) = delete;
  ContextGuard& operator=(const ContextGuard&) = delete;
  void* operator new(size_t) = delete;
  ~ContextGuard() {
    if (ctx_) sys::io_destroy(ctx_);
  }
  void release() { ctx_ = 0; }

 private:
  uint64_t ctx_;
};

class AioKind final : public Kind {
 public:
  const char* name() const override { return "aio"; }

  Status take_vma(pid_t pid, VmaInfo& v, DumpEnv&) override {
    if (v.vma.kind() != img::VMA_AIO_RING) return {};
    Ring r{pid, v.vma.start(), v.vma.end(),
           fmt::format("pid {}: mapping {:x}-{:x} ({})", pid, v.vma.start(), v.vma.end(), v.maps.path)};
    ASSIGN_OR_RETURN(AioRingHeader h, read_header(r));
    v.vma.set_aio_ring_nr(h.nr);
    rings_.push_back(std::move(r));
    return {};
  }

  // A request that completed since take_vma() left an event in the ring.
  Status check(const DumpTree&, DumpEnv&) override {
    for (auto& r : rings_) TRY(read_header(r));
    return {};
  }

  bool maps(const img::Vma& v) const override { return v.kind() == img::VMA_AIO_RING; }

  Status map(const img::Vma& v, void* at, int prot) override {
    uint64_t size = v.end() - v.start();
    std::string what = fmt::format("the AIO context {:#x} ({} events)", v.start(), v.aio_ring_nr());
    // io_setup makes max(nr_events, 4 * CPUs) * 2 + 2 events of it, rounded
    // up to whole pages: this asks for what grows back to the ring's nr.
    unsigned want = v.aio_ring_nr() > 4 ? (v.aio_ring_nr() - 2) / 2 : 1;
    uint64_t ctx = 0;
    if (sys::io_setup(want, &ctx) != 0) return failf_errno("{}: io_setup({})", what, want);
    ContextGuard guard(ctx);
    auto* ring = reinterpret_cast<const AioRingHeader*>(ctx);
    if (ring->nr != v.aio_ring_nr())
      return failf("{}: io_setup({}) makes a ring of {} events here (a machine with more CPUs?); it cannot be "
                   "made again at its size", what, want, ring->nr);
    void* got = ::mremap(reinterpret_cast<void*>(ctx), size, size, MREMAP_MAYMOVE | MREMAP_FIXED, at);
    if (got == MAP_FAILED) return failf_errno("{}: mremap of its ring", what);
    guard.release();
    if (prot != (PROT_READ | PROT_WRITE) && ::mprotect(at, size, prot) != 0)
      return failf_errno("{}: mprotect of its ring", what);
    return {};
  }

 private:
  std::vector<Ring> rings_;
};

}  // namespace

std::unique_ptr<Kind> make_aio_kind() { return std::make_unique<AioKind>(); }

}  // namespace minicriu
