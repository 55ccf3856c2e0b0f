#include "fs/sparse_data.hpp"

#include <sys/sendfile.h>
#include <unistd.h>

namespace minicriu {

Status copy_range(int out, int in, int64_t* in_off, uint64_t len, const std::string& what) {
  off_t off = static_cast<off_t>(*in_off);
  while (len > 0) {
    ssize_t n = ::sendfile(out, in, &off, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return failf_errno("{}: copying data", what);
    if (n == 0) return failf("{}: data ends early", what);
    len -= static_cast<uint64_t>(n);
  }
  *in_off = off;
  return {};
}

Status seek_to(int fd, uint64_t offset, const std::string& what) {
  if (::lseek(fd, static_cast<off_t>(offset), SEEK_SET) < 0) return failf_errno("{}: seek", what);
  return {};
}

Result<std::vector<img::DataExtent>> data_extents(int fd, uint64_t size, const std::string& what) {
  std::vector<img::DataExtent> out;
  off_t pos = 0;
  while (static_cast<uint64_t>(pos) < size) {
    off_t data = ::lseek(fd, pos, SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;  // only a hole is left
    if (data < 0) return failf_errno("{}: SEEK_DATA", what);
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) return failf_errno("{}: SEEK_HOLE", what);
    img::DataExtent e;
    e.set_offset(static_cast<uint64_t>(data));
    e.set_length(static_cast<uint64_t>(hole - data));
    out.push_back(e);
    pos = hole;
  }
  return out;
}

Status copy_extents_out(int out, int in, const std::vector<img::DataExtent>& extents,
                        const std::string& what) {
  for (auto& e : extents) {
    int64_t off = static_cast<int64_t>(e.offset());
    TRY(copy_range(out, in, &off, e.length(), what));
  }
  return {};
}

}  // namespace minicriu
