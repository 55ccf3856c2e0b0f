// What the notification kinds (inotify, fanotify) share: their fdinfo names a
// watched inode by a file handle (fs/notify/fdinfo.c: "fhandle-bytes:N
// fhandle-type:T f_handle:HEX") and a file system by its kernel dev_t
// ("sdev:", major << 20 | minor), a mount by its id; these find them again
// in our mount namespace (the target's, as long as minicriu does not handle
// mount namespaces).
#pragma once

#include <cstdint>
#include <string>

#include "base/error.hpp"
#include "base/unique_fd.hpp"

namespace minicriu {

// The bytes of fdinfo's hex (a pair of digits each); false if malformed.
bool unhex(const std::string& hex, std::string& out);

// The mount point of a mount of the file system sdev, preferring one that
// shows the whole file system (root "/"), so that every inode of it has a
// name under it.
[[nodiscard]] Result<std::string> mount_point_of_sdev(uint32_t sdev, const std::string& what);
// The mount point of the mount with this id (mountinfo's first field).
[[nodiscard]] Result<std::string> mount_point_of_id(int mnt_id, const std::string& what);

// An O_PATH fd on the inode of a file handle of file system sdev
// (open_by_handle_at, which needs CAP_DAC_READ_SEARCH); what names it.
[[nodiscard]] Result<UniqueFd> open_fdinfo_handle(uint32_t sdev, int handle_type, const std::string& handle,
                                                  const std::string& what);

}  // namespace minicriu
