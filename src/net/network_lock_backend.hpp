// The backends behind NetworkLock (net/network_lock.hpp): one firewall each,
// nftables (nftables_lock.cc) and the iptables commands (iptables_lock.cc).
// A backend object is the rule guard: its destructor removes whatever it
// created, unless keep() made the rules outlive it.
#pragma once

#include <memory>
#include <string>

#include "base/error.hpp"
#include "base/log.hpp"
#include "net/network_lock.hpp"

namespace minicriu {

// The two rules of one connection: what it sends (output hook) and what it
// receives (input hook), as address/port matches in the backend's syntax.
struct ConnectionMatch {
  std::string outgoing;
  std::string incoming;
  // Only these stay locked past a dump that killed the tree: a connection
  // with both ends in the tree died silently at both ends (repair mode), and
  // its rules would only stand in the restore's way (a connection waiting to
  // be accepted is connected again, from the same address and port).
  bool peer_outside = false;
};
ConnectionMatch nft_match(const LockedConnection& conn);
ConnectionMatch iptables_match(const LockedConnection& conn);
std::string address_text(int family, const std::array<uint8_t, 16>& addr);

// 8 random hex digits: two dumps of the same pid never share a table.
std::string unique_suffix();

class LockBackend {
 public:
  LockBackend() = default;
  LockBackend(const LockBackend&) = delete;
  LockBackend& operator=(const LockBackend&) = delete;
  virtual ~LockBackend() = default;

  virtual NetworkLockMode mode() const = 0;
  // The table (nftables) or chain (iptables) that holds the rules.
  virtual const std::string& table() const = 0;
  // The first call creates the table; a connection already locked is a no-op.
  [[nodiscard]] virtual Status add(const LockedConnection& conn) = 0;
  [[nodiscard]] virtual Status remove() = 0;
  // The rules stay past this object and this process (restore removes them).
  [[nodiscard]] virtual Status keep() = 0;
};

// Creates nothing until the first add(). `table` is the table's name.
[[nodiscard]] Result<std::unique_ptr<LockBackend>> make_nftables_lock(const std::string& table,
                                                                      const Logger& log);
// Fails in one line when the iptables commands are not installed.
[[nodiscard]] Result<std::unique_ptr<LockBackend>> make_iptables_lock(const std::string& chain,
                                                                      const Logger& log);
bool iptables_available();

[[nodiscard]] Status nftables_unlock(const std::string& table);
[[nodiscard]] Status iptables_unlock(const std::string& chain);

}  // namespace minicriu
