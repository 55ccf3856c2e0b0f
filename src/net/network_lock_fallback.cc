// Only for the branch that has no network lock yet: FileDumpContext::net_lock
// is always null there, so this is never called, but inet_socket.cc must link.
// Weak: network_lock.cc's definition replaces it. Delete this file once
// network_lock.cc is merged.
#include "net/network_lock.hpp"

namespace minicriu {

[[gnu::weak]] Status NetworkLock::add(const LockedConnection& conn) {
  return failf("{}: this build has no network lock", conn.what);
}

}  // namespace minicriu
