// What the anonymous-inode kinds (eventfd, timerfd, signalfd, epoll, pidfd)
// share: recognising their /proc link and reading the lines their kernel code
// adds to fdinfo. Their whole state is in fdinfo, so none of them reads or
// writes the object itself to dump it (reading an eventfd would consume it).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "base/error.hpp"
#include "kinds/kind.hpp"

namespace minicriu {

// The link of an fd of this anonymous-inode class: "anon_inode:[eventfd]".
bool is_anon_inode(const FdDumpInfo& fd, std::string_view name);

// The fdinfo text of the fd as it is now, read through our own copy of it
// (the same open file description), else the text listed before the parasite
// came. Kinds whose state moves while the tree is frozen (a timer) use this.
[[nodiscard]] Result<std::string> fdinfo_text_now(const FdDumpInfo& fd);

// A number on the fdinfo line "key: value" in the given base; a missing or
// malformed line is an error that names the fd and the key.
[[nodiscard]] Result<uint64_t> fdinfo_number(const FdDumpInfo& fd, const std::string& text,
                                             const std::string& key, int base);

}  // namespace minicriu
