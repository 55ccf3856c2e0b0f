// The network lock: while a tree is frozen, and after it is killed until it is
// restored, its TCP connections must stay silent: no RST, no data acked and
// then lost. Packets of each locked connection (both directions) are dropped
// by rules in a table of minicriu's own, removed again whatever happens.
//
// Backends: nftables through libnftables (needs no firewall command), the
// iptables commands when the user asks for them, or none ("skip").
#pragma once

#include <netinet/in.h>
#include <sys/types.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/log.hpp"

namespace minicriu {

enum class NetworkLockMode { automatic, nftables, iptables, skip };

// "auto", "nftables", "iptables", "skip" (for --network-lock).
[[nodiscard]] Result<NetworkLockMode> parse_network_lock_mode(const std::string& text);
const char* network_lock_mode_name(NetworkLockMode mode);

// One TCP connection, as seen from the socket being dumped: its local and
// remote address and port. IPv4 addresses (also v4-mapped ones on an AF_INET6
// socket) are stored as AF_INET in the first 4 bytes.
struct LockedConnection {
  int family = AF_INET;            // AF_INET or AF_INET6
  std::array<uint8_t, 16> local{};
  std::array<uint8_t, 16> remote{};
  uint16_t local_port = 0;         // host byte order
  uint16_t remote_port = 0;
  // The peer is outside the dumped tree (--tcp-established): after a dump
  // that kills the tree, the lock stays until the restore removes it.
  bool peer_outside = false;
  std::string what;                // "pid 12: fd 4: tcp 127.0.0.1:5000 -> 127.0.0.1:41000"
};

// One dump's lock. Created empty (no table yet); the first add() makes the
// table. The destructor removes the table unless keep() was called.
class NetworkLock {
 public:
  NetworkLock(const NetworkLock&) = delete;
  NetworkLock& operator=(const NetworkLock&) = delete;
  ~NetworkLock();

  // `name` makes the table name unique (the dumped root pid, say).
  [[nodiscard]] static Result<std::unique_ptr<NetworkLock>> create(NetworkLockMode mode,
                                                                   const std::string& name,
                                                                   const Logger& log);
  // Drops every packet of this connection from now on (both directions).
  [[nodiscard]] Status add(const LockedConnection& conn);
  // Removes the table now (leave-running dumps, failed dumps).
  [[nodiscard]] Status remove();
  // Leaves the table in place past this object (a dump that killed a tree
  // with connections to peers outside it); what restore needs to remove it.
  // With nftables the owned table (gone with our netlink socket) is replaced
  // by one that outlives us, in one transaction: this can fail. remove()
  // still removes a kept table (a dump that fails after keep()). No table
  // (nothing added, or skip): mode skip and an empty table.
  struct Kept {
    NetworkLockMode mode = NetworkLockMode::skip;
    std::string table;
  };
  [[nodiscard]] Result<Kept> keep();
  bool needs_keeping() const;  // some locked connection has peer_outside
  // The backend chosen ("auto" until the first add()) and its table or chain
  // ("" while there is none).
  NetworkLockMode mode() const;
  std::string table() const;

 private:
  NetworkLock() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The name is one a dump of this backend makes (images are checked with it).
bool is_network_lock_name(NetworkLockMode mode, const std::string& table);

// The restore side: removes a table a dump kept.
[[nodiscard]] Status network_unlock(NetworkLockMode mode, const std::string& table, const Logger& log);

// The nftables tables of minicriu ("minicriu-...") now in the ruleset, for
// tests and `minicriu check`.
[[nodiscard]] Result<std::vector<std::string>> network_lock_tables();
// Creates and deletes a probe table: nftables can hold a lock here.
[[nodiscard]] Status network_lock_probe_nftables();

}  // namespace minicriu
