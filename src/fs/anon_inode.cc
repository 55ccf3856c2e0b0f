#include "fs/anon_inode.hpp"

#include <cstdlib>

namespace minicriu {

bool is_anon_inode(const FdDumpInfo& fd, std::string_view name) {
  constexpr std::string_view prefix = "anon_inode:[";
  std::string_view l = fd.link;
  return l.size() == prefix.size() + name.size() + 1 && l.starts_with(prefix) &&
         l.substr(prefix.size(), name.size()) == name && l.back() == ']';
}

Result<std::string> fdinfo_text_now(const FdDumpInfo& fd) {
  if (fd.local_fd < 0) return fd.fdinfo.text;
  auto text = proc::read_file(fmt::format("/proc/self/fdinfo/{}", fd.local_fd));
  if (!text) return std::unexpected(text.error().context(fd.what));
  return *text;
}

Result<uint64_t> fdinfo_number(const FdDumpInfo& fd, const std::string& text,
                               const std::string& key, int base) {
  auto v = proc::fdinfo_field(text, key);
  if (!v || v->empty())
    return failf("{} ({}): fdinfo has no \"{}:\" line; this kernel shows it in another "
                 "format than minicriu knows", fd.what, fd.link, key);
  errno = 0;
  char* end = nullptr;
  const char* s = v->c_str();
  while (*s == ' ') s++;  // eventfd pads its count to 16 columns
  uint64_t n = std::strtoull(s, &end, base);
  if (errno != 0 || end == s)
    return failf("{} ({}): cannot read \"{}: {}\" in its fdinfo", fd.what, fd.link, key, *v);
  return n;
}

}  // namespace minicriu
