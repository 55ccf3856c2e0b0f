// Checks of paths that come from images before they are used: an image is
// data, and a damaged or hostile one must not steer a restore to create,
// rename or remove files where the dump never put any.
#pragma once

#include <string_view>

namespace minicriu {

inline bool is_absolute_path(std::string_view p) { return !p.empty() && p[0] == '/'; }

// A "." or ".." component: a path the kernel gave us never has one (/proc
// links are canonical), so one in an image was put there.
inline bool has_dot_component(std::string_view p) {
  while (!p.empty()) {
    size_t slash = p.find('/');
    std::string_view part = p.substr(0, slash);
    if (part == "." || part == "..") return true;
    if (slash == std::string_view::npos) break;
    p.remove_prefix(slash + 1);
  }
  return false;
}

// An absolute path without "." or ".." components.
inline bool is_canonical_path(std::string_view p) { return is_absolute_path(p) && !has_dot_component(p); }

// The last component of a path.
inline std::string_view path_basename(std::string_view p) {
  size_t slash = p.rfind('/');
  return slash == std::string_view::npos ? p : p.substr(slash + 1);
}

}  // namespace minicriu
