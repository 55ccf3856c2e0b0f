#include "core/process_memory.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/page.hpp"
#include "fs/ghost_file.hpp"
#include "restorer/machine.hpp"

namespace minicriu {

namespace {

// Past this, reads go straight to their sources: the cache is for the
// unwinder's word-sized reads of stacks and unwind tables.
constexpr size_t kCachedReadMax = 256;
constexpr size_t kCachePages = 512;

// The index of the VMA that holds addr (VMAs are sorted: validated), or -1.
int vma_index(const img::MmCore& mm, uint64_t addr) {
  auto it = std::upper_bound(mm.vmas().begin(), mm.vmas().end(), addr,
                             [](uint64_t a, const img::Vma& v) { return a < v.end(); });
  return it != mm.vmas().end() && it->start() <= addr ? static_cast<int>(it - mm.vmas().begin()) : -1;
}

// This kernel's vDSO, if it is the one the checkpoint's processes had: the
// same kernel release and the same size. The vDSO is code the kernel maps;
// the images do not carry it.
std::vector<uint8_t> local_vdso(const Checkpoint& c, uint64_t size, std::string& why_not) {
  utsname u{};
  ::uname(&u);
  if (c.inventory.kernel() != u.release) {
    why_not = fmt::format("the vDSO of kernel {} (this is {}) is not in the images", c.inventory.kernel(), u.release);
    return {};
  }
  SpecialMappings here;
  if (auto text = proc::read_file("/proc/self/maps"))
    if (auto maps = proc::parse_maps(*text)) here = find_special_mappings(*maps);
  if (!here.has_vdso || here.vdso.end - here.vdso.start != size) {
    why_not = "this kernel's vDSO differs from the dump's";
    return {};
  }
  const auto* p = reinterpret_cast<const uint8_t*>(here.vdso.start);
  return std::vector<uint8_t>(p, p + size);
}

// Whether the file at path is still the one the VMA mapped (its inode and
// device): a binary rebuilt or upgraded since the dump is another file.
UniqueFd open_same_file(const img::Vma& v, std::string& why_not) {
  std::string path = strip_deleted_suffix(v.path());
  if (path != v.path()) {
    why_not = fmt::format("{} was deleted before the dump and its data is not in the images", path);
    return UniqueFd();
  }
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st{};
  if (!fd || ::fstat(fd.get(), &st) != 0) {
    why_not = fmt::format("{} is gone since the dump ({})", path, std::strerror(errno));
    return UniqueFd();
  }
  if (st.st_ino != v.ino() || (v.dev() && st.st_dev != v.dev())) {
    why_not = fmt::format("{} changed since the dump (inode {}, was {})", path, st.st_ino, v.ino());
    return UniqueFd();
  }
  return fd;
}

}  // namespace

Result<std::unique_ptr<ProcessMemory>> ProcessMemory::open(const Checkpoint& c, const ProcessImages& p,
                                                           const KindSet& kinds) {
  if (c.inventory.page_size() != kPageSize)
    return failf("the checkpoint was taken with {}-byte pages; its memory can be read with {}-byte pages only",
                 c.inventory.page_size(), kPageSize);
  std::unique_ptr<ProcessMemory> m(new ProcessMemory(c, p));
  // The chain of page images: this process, then each parent as long as
  // the one before it inherited memory from it.
  for (const ProcessImages* at = &p; at && !at->entry.zombie();) {
    Layer layer;
    layer.process = at;
    for (auto& path : at->page_files) {
      layer.files.emplace_back(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!layer.files.back()) return failf_errno("cannot open {}", path);
    }
    for (auto& r : at->page_runs)
      layer.runs.push_back({r.start, r.end, r.offset, layer.files.at(r.file).get()});
    bool inherits = std::any_of(at->mm.vmas().begin(), at->mm.vmas().end(), [](auto& v) { return v.inherited(); });
    m->layers_.push_back(std::move(layer));
    at = inherits ? c.process(static_cast<pid_t>(at->entry.ppid())) : nullptr;
  }

  for (auto& v : p.mm.vmas()) {
    Region r;
    r.vma = &v;
    if (const Kind* k = kinds.reader(v)) {
      r.source = Source::object;
      r.kind = k;
    } else {
      switch (v.kind()) {
        case img::VMA_ANON_PRIVATE:
          r.source = Source::zeros;
          break;
        case img::VMA_FILE_PRIVATE:
        case img::VMA_FILE_SHARED: {
          auto key = std::make_tuple(v.path(), v.ino(), v.dev());
          auto it = m->files_.find(key);
          if (it == m->files_.end()) it = m->files_.emplace(key, open_same_file(v, r.note)).first;
          else if (!it->second) open_same_file(v, r.note);  // the same reason again
          struct stat st{};
          if (it->second && ::fstat(it->second.get(), &st) == 0) {
            r.file = it->second.get();
            r.file_size = static_cast<uint64_t>(st.st_size);
            r.source = Source::file;
            r.note = v.path();
          }
          break;
        }
        case img::VMA_VDSO:
          if (m->vdso_.empty()) m->vdso_ = local_vdso(c, v.end() - v.start(), r.note);
          if (!m->vdso_.empty()) r.source = Source::local_vdso;
          break;
        case img::VMA_ANON_SHARED:
        case img::VMA_SYSV_SHM:
          r.note = fmt::format("shared memory object {} is not in the images", v.shmem_id());
          break;
        default:
          r.note = fmt::format("{} is the kernel's, not in the images", v.path());
          break;
      }
    }
    m->regions_.push_back(std::move(r));
  }
  return m;
}

const ProcessMemory::Region* ProcessMemory::region_at(uint64_t addr) const {
  int i = vma_index(process_.mm, addr);
  return i < 0 ? nullptr : &regions_[static_cast<size_t>(i)];
}

ProcessMemory::Hit ProcessMemory::find(uint64_t addr, uint64_t limit) const {
  Hit hit;
  hit.end = limit;
  for (const Layer& layer : layers_) {
    auto it = std::upper_bound(layer.runs.begin(), layer.runs.end(), addr,
                               [](uint64_t a, const Layer::Run& r) { return a < r.end; });
    if (it != layer.runs.end() && it->start <= addr) {
      hit.layer = &layer;
      hit.fd = it->fd;
      hit.offset = it->offset + (addr - it->start);
      hit.end = std::min(hit.end, it->end);
      return hit;
    }
    if (it != layer.runs.end()) hit.end = std::min(hit.end, it->start);
    // The parent's copy stands in only where this layer's VMA inherited it.
    int i = vma_index(layer.process->mm, addr);
    if (i < 0 || !layer.process->mm.vmas(i).inherited()) break;
  }
  return hit;
}

bool ProcessMemory::read_source(const Region& r, uint64_t addr, std::span<uint8_t> out) const {
  const img::Vma& v = *r.vma;
  uint64_t off = v.pgoff() + (addr - v.start());
  switch (r.source) {
    case Source::zeros:
      std::memset(out.data(), 0, out.size());
      return true;
    case Source::local_vdso:
      std::memcpy(out.data(), vdso_.data() + (addr - v.start()), out.size());
      return true;
    case Source::file: {
      // The last page of a file reads as zeros past its end; beyond that
      // page a mapping has nothing (SIGBUS).
      if (off + out.size() > page_up(r.file_size)) return false;
      std::memset(out.data(), 0, out.size());
      size_t want = off < r.file_size ? static_cast<size_t>(std::min<uint64_t>(out.size(), r.file_size - off)) : 0;
      return want == 0 || ::pread(r.file, out.data(), want, static_cast<off_t>(off)) == static_cast<ssize_t>(want);
    }
    case Source::object: {
      auto n = r.kind->read_mapped(v, off, out);
      return n && *n == out.size();
    }
    case Source::none:
      return false;
  }
  return false;
}

bool ProcessMemory::read_uncached(uint64_t addr, std::span<uint8_t> out) const {
  while (!out.empty()) {
    const Region* r = region_at(addr);
    if (!r) return false;
    uint64_t limit = std::min<uint64_t>(r->vma->end(), addr + out.size());
    Hit hit = find(addr, limit);
    size_t len = static_cast<size_t>(hit.end - addr);
    std::span<uint8_t> piece = out.first(len);
    if (hit.layer) {
      if (::pread(hit.fd, piece.data(), len, static_cast<off_t>(hit.offset)) !=
          static_cast<ssize_t>(len))
        return false;
    } else if (!read_source(*r, addr, piece)) {
      return false;
    }
    addr += len;
    out = out.subspan(len);
  }
  return true;
}

bool ProcessMemory::read(uint64_t addr, std::span<uint8_t> out) const {
  if (out.size() > kCachedReadMax || page_down(addr) != page_down(addr + out.size() - 1))
    return read_uncached(addr, out);
  uint64_t page = page_down(addr);
  auto it = cache_.find(page);
  if (it == cache_.end()) {
    std::vector<uint8_t> bytes(kPageSize);
    // A page that cannot be read whole (the end of a file) is read as asked.
    if (!read_uncached(page, bytes)) return read_uncached(addr, out);
    if (cache_.size() >= kCachePages) cache_.clear();
    it = cache_.emplace(page, std::move(bytes)).first;
  }
  std::memcpy(out.data(), it->second.data() + (addr - page), out.size());
  return true;
}

ProcessMemory::Ranges ProcessMemory::image_ranges(uint64_t start, uint64_t end) const {
  Ranges out;
  for (uint64_t at = start; at < end;) {
    Hit hit = find(at, end);
    if (hit.layer) {
      if (!out.empty() && out.back().second == at)
        out.back().second = hit.end;
      else
        out.emplace_back(at, hit.end);
    }
    at = hit.end;
  }
  return out;
}

ProcessMemory::Ranges ProcessMemory::readable_ranges(const Region& r) const {
  const img::Vma& v = *r.vma;
  uint64_t end = v.end();
  switch (r.source) {
    case Source::none:
      return image_ranges(v.start(), v.end());
    case Source::file: {
      // A mapping past the end of its file has nothing there, but for the
      // pages the process had copied before the file shrank.
      uint64_t file_end = page_up(r.file_size);
      end = file_end <= v.pgoff() ? v.start() : std::min(v.end(), v.start() + (file_end - v.pgoff()));
      break;
    }
    default:
      break;
  }
  Ranges out;
  if (end > v.start()) out.emplace_back(v.start(), end);
  for (auto& range : image_ranges(end, v.end())) {
    if (!out.empty() && out.back().second == range.first)
      out.back().second = range.second;
    else
      out.push_back(range);
  }
  return out;
}

}  // namespace minicriu
