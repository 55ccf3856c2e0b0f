#include "fs/file_handle.hpp"

#include <fcntl.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "proc/proc_parse.hpp"

namespace minicriu {

namespace {

// mountinfo escapes blanks and backslashes as \ooo.
std::string unescape_mountinfo(const std::string& s) {
  std::string path;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      path.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8)));
      i += 3;
    } else {
      path.push_back(s[i]);
    }
  }
  return path;
}

struct MountLine {
  std::string id, parent, devno, root, point;
};

template <typename F>
Status each_mount(F f) {
  ASSIGN_OR_RETURN(auto text, proc::read_file("/proc/self/mountinfo"));
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    MountLine m;
    fields >> m.id >> m.parent >> m.devno >> m.root >> m.point;
    if (f(m)) break;
  }
  return {};
}

}  // namespace

bool unhex(const std::string& hex, std::string& out) {
  if (hex.size() % 2) return false;
  out.clear();
  for (size_t i = 0; i < hex.size(); i += 2) {
    unsigned v;
    if (std::sscanf(hex.c_str() + i, "%2x", &v) != 1) return false;
    out.push_back(static_cast<char>(v));
  }
  return true;
}

Result<std::string> mount_point_of_sdev(uint32_t sdev, const std::string& what) {
  std::string want = fmt::format("{}:{}", sdev >> 20, sdev & 0xfffff);
  std::string best;
  TRY(each_mount([&](const MountLine& m) {
    if (m.devno != want) return false;
    if (best.empty() || m.root == "/") best = m.point;
    return m.root == "/";
  }));
  if (best.empty()) return failf("{} is on device {}, which no mount here shows", what, want);
  return unescape_mountinfo(best);
}

Result<std::string> mount_point_of_id(int mnt_id, const std::string& what) {
  std::string want = std::to_string(mnt_id), point;
  TRY(each_mount([&](const MountLine& m) {
    if (m.id != want) return false;
    point = m.point;
    return true;
  }));
  if (point.empty()) return failf("{}: mount {} is not among our mounts", what, mnt_id);
  return unescape_mountinfo(point);
}

Result<UniqueFd> open_fdinfo_handle(uint32_t sdev, int handle_type, const std::string& handle,
                                    const std::string& what) {
  ASSIGN_OR_RETURN(std::string path, mount_point_of_sdev(sdev, what));
  // Not O_PATH: open_by_handle_at wants a real open file as its mount fd.
  UniqueFd mount(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!mount) return failf_errno("{}: cannot open the mount {}", what, path);
  std::string buf(sizeof(file_handle) + handle.size(), '\0');
  auto* fh = reinterpret_cast<file_handle*>(buf.data());
  fh->handle_bytes = static_cast<unsigned>(handle.size());
  fh->handle_type = handle_type;
  std::copy(handle.begin(), handle.end(), reinterpret_cast<char*>(fh->f_handle));
  UniqueFd file(::open_by_handle_at(mount.get(), fh, O_PATH | O_CLOEXEC));
  if (!file)
    return failf_errno("{}: open_by_handle_at{}", what, errno == EPERM ? " (it needs CAP_DAC_READ_SEARCH)" : "");
  return file;
}

}  // namespace minicriu
