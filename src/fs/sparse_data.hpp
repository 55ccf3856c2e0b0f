// Copying the data of a sparse file (a ghost file, a shmem object) into an
// image and back: only allocated runs (SEEK_DATA/SEEK_HOLE) are copied, so
// holes stay holes; the bytes move in the kernel (sendfile).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.hpp"
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

}  // namespace minicriu
