// Copying the data of a sparse file (a ghost file, a shmem object) into an
// image and back: only allocated runs (SEEK_DATA/SEEK_HOLE) are copied, so
// holes stay holes; the bytes move in the kernel (sendfile).
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/unique_fd.hpp"
#include "minicriu.pb.h"

namespace minicriu {

// The data runs of the file open as fd (our own description: lseek moves it).
[[nodiscard]] Result<std::vector<img::DataExtent>> data_extents(int fd, uint64_t size,
                                                                const std::string& what);

// Appends the bytes of every extent of in to out (at its position).
[[nodiscard]] Status copy_extents_out(int out, int in, const std::vector<img::DataExtent>& extents,
                                      const std::string& what);

// Writes back: the extents' bytes, read in order from data, to their offsets in
// out; what no extent covers is left as it is (a hole, after ftruncate).
template <typename Extents>
[[nodiscard]] Status copy_extents_in(int out, int data, const Extents& extents, const std::string& what);

// Moves len bytes from in (at *in_off) to out (at its position).
[[nodiscard]] Status copy_range(int out, int in, int64_t* in_off, uint64_t len, const std::string& what);

[[nodiscard]] Status seek_to(int fd, uint64_t offset, const std::string& what);

template <typename Extents>
Status copy_extents_in(int out, int data, const Extents& extents, const std::string& what) {
  int64_t in = 0;
  for (const img::DataExtent& e : extents) {
    TRY(seek_to(out, e.offset(), what));
    TRY(copy_range(out, data, &in, e.length(), what));
  }
  return {};
}

// Reads out.size() bytes at `offset` of a sparse object of `size` bytes whose
// extents' bytes lie back to back in data (an image's .data file); what no
// extent covers reads as zeros. Returns how many bytes it read: fewer only at
// the object's end.
template <typename Extents>
[[nodiscard]] Result<size_t> read_sparse(int data, const Extents& extents, uint64_t size, uint64_t offset,
                                         std::span<uint8_t> out, const std::string& what) {
  if (offset >= size) return 0;
  size_t n = static_cast<size_t>(std::min<uint64_t>(out.size(), size - offset));
  std::memset(out.data(), 0, n);
  uint64_t end = offset + n;
  uint64_t data_off = 0;  // where the extent's bytes start in data
  for (const img::DataExtent& e : extents) {
    uint64_t from = std::max(offset, e.offset()), to = std::min(end, e.offset() + e.length());
    if (from < to) {
      size_t len = static_cast<size_t>(to - from);
      ssize_t got = ::pread(data, out.data() + (from - offset), len, static_cast<off_t>(data_off + from - e.offset()));
      if (got < 0) return failf_errno("{}: reading its data", what);
      if (static_cast<size_t>(got) != len) return failf("{}: its data ends early", what);
    }
    data_off += e.length();
  }
  return n;
}

// The data files of a kind's sparse objects (ghost-ID.data, shmem-ID.data),
// each opened on its first read and kept, as show and coredump read them.
class SparseDataFiles {
 public:
  template <typename Extents>
  [[nodiscard]] Result<size_t> read(const std::string& path, const Extents& extents, uint64_t size,
                                    uint64_t offset, std::span<uint8_t> out) {
    auto it = fds_.find(path);
    if (it == fds_.end()) {
      UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd) return failf_errno("cannot open {}", path);
      it = fds_.emplace(path, std::move(fd)).first;
    }
    return read_sparse(it->second.get(), extents, size, offset, out, path);
  }

 private:
  std::map<std::string, UniqueFd> fds_;
};

}  // namespace minicriu
