// The network lock's front: the mode, the choice of a backend at the first
// connection (none is made for a tree without TCP connections), and the
// matches both backends write. The backends are nftables_lock.cc and
// iptables_lock.cc.
#include "net/network_lock.hpp"

#include <arpa/inet.h>
#include <sys/random.h>
#include <unistd.h>

#include <ctime>
#include <regex>

#include "net/network_lock_backend.hpp"

namespace minicriu {

Result<NetworkLockMode> parse_network_lock_mode(const std::string& text) {
  if (text == "auto") return NetworkLockMode::automatic;
  if (text == "nftables") return NetworkLockMode::nftables;
  if (text == "iptables") return NetworkLockMode::iptables;
  if (text == "skip") return NetworkLockMode::skip;
  return failf("--network-lock {:?}: expected auto, nftables, iptables or skip", text);
}

const char* network_lock_mode_name(NetworkLockMode mode) {
  switch (mode) {
    case NetworkLockMode::automatic: return "auto";
    case NetworkLockMode::nftables: return "nftables";
    case NetworkLockMode::iptables: return "iptables";
    case NetworkLockMode::skip: return "skip";
  }
  return "?";
}

std::string address_text(int family, const std::array<uint8_t, 16>& addr) {
  char buf[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(family == AF_INET6 ? AF_INET6 : AF_INET, addr.data(), buf, sizeof(buf));
  return buf;
}

ConnectionMatch nft_match(const LockedConnection& c) {
  const char* ip = c.family == AF_INET6 ? "ip6" : "ip";
  std::string local = address_text(c.family, c.local), remote = address_text(c.family, c.remote);
  return {fmt::format("{0} saddr {1} tcp sport {2} {0} daddr {3} tcp dport {4}", ip, local, c.local_port,
                      remote, c.remote_port),
          fmt::format("{0} saddr {1} tcp sport {2} {0} daddr {3} tcp dport {4}", ip, remote, c.remote_port,
                      local, c.local_port),
          c.peer_outside};
}

ConnectionMatch iptables_match(const LockedConnection& c) {
  std::string local = address_text(c.family, c.local), remote = address_text(c.family, c.remote);
  return {fmt::format("-p tcp -s {} --sport {} -d {} --dport {}", local, c.local_port, remote, c.remote_port),
          fmt::format("-p tcp -s {} --sport {} -d {} --dport {}", remote, c.remote_port, local, c.local_port),
          c.peer_outside};
}

std::string unique_suffix() {
  uint32_t r = 0;
  if (::getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
    r = static_cast<uint32_t>(::getpid()) * 2654435761u ^ static_cast<uint32_t>(::time(nullptr));
  return fmt::format("{:08x}", r);
}

struct NetworkLock::Impl {
  NetworkLockMode mode;
  std::string name;  // minicriu-<name>-<suffix>
  Logger log;
  bool skip_warned = false;
  bool kept = false;
  std::vector<LockedConnection> connections;
  std::unique_ptr<LockBackend> backend;  // after log: it holds a reference to it

  Result<std::unique_ptr<LockBackend>> choose(const LockedConnection& first) {
    std::string table = fmt::format("minicriu-{}-{}", name, unique_suffix());
    std::string chain = "MINICRIU-" + unique_suffix();
    if (mode == NetworkLockMode::nftables) return make_nftables_lock(table, log);
    if (mode == NetworkLockMode::iptables) return make_iptables_lock(chain, log);
    // auto: nftables if it can create our table (made by this first add).
    ASSIGN_OR_RETURN(auto nft, make_nftables_lock(table, log));
    auto st = nft->add(first);
    if (st) return nft;
    if (iptables_available()) {
      log.info("network lock: {}; using iptables", st.error().what());
      return make_iptables_lock(chain, log);
    }
    return failf("cannot lock the tree's TCP connections: {}, and no iptables command is installed; "
                 "--network-lock skip dumps without a lock", st.error().what());
  }
};

NetworkLock::~NetworkLock() {
  // The backend goes: its own rules with it; kept ones (keep()) stay.
}

Result<std::unique_ptr<NetworkLock>> NetworkLock::create(NetworkLockMode mode, const std::string& name,
                                                         const Logger& log) {
  std::unique_ptr<NetworkLock> lock(new NetworkLock());
  lock->impl_ = std::make_unique<Impl>(Impl{mode, name, log, false, false, {}, nullptr});
  return lock;
}

Status NetworkLock::add(const LockedConnection& conn) {
  Impl& d = *impl_;
  if (d.mode == NetworkLockMode::skip) {
    if (!d.skip_warned)
      d.log.warn("--network-lock skip: TCP connections are not locked during the dump ({})", conn.what);
    d.skip_warned = true;
    return {};
  }
  if (!d.backend) {
    ASSIGN_OR_RETURN(d.backend, with_context(d.choose(conn), fmt::format("locking {}", conn.what)));
  }
  TRY(with_context(d.backend->add(conn), fmt::format("locking {}", conn.what)));
  d.connections.push_back(conn);
  return {};
}

Status NetworkLock::remove() {
  Impl& d = *impl_;
  if (!d.backend) return {};
  TRY(d.backend->remove());
  d.backend.reset();
  return {};
}

Result<NetworkLock::Kept> NetworkLock::keep() {
  Impl& d = *impl_;
  if (!d.backend) return Kept{};
  TRY(d.backend->keep());
  d.kept = true;
  return Kept{d.backend->mode(), d.backend->table()};
}

bool NetworkLock::needs_keeping() const {
  if (!impl_->backend) return false;
  for (auto& c : impl_->connections)
    if (c.peer_outside) return true;
  return false;
}

NetworkLockMode NetworkLock::mode() const {
  return impl_->backend ? impl_->backend->mode() : impl_->mode;
}

std::string NetworkLock::table() const { return impl_->backend ? impl_->backend->table() : ""; }

bool is_network_lock_name(NetworkLockMode mode, const std::string& table) {
  // What choose() and keep() make: minicriu-ROOTPID-8HEX[-kept|-probe],
  // MINICRIU-8HEX: nothing that could end a command of the firewall's script.
  static const std::regex nft("minicriu-[A-Za-z0-9_]+-[0-9a-f]{8}(-kept|-probe)?"), ipt("MINICRIU-[0-9a-f]{8}");
  if (mode == NetworkLockMode::nftables) return std::regex_match(table, nft);
  if (mode == NetworkLockMode::iptables) return std::regex_match(table, ipt);
  return false;
}

Status network_unlock(NetworkLockMode mode, const std::string& table, const Logger& log) {
  if (table.empty() || mode == NetworkLockMode::skip) return {};
  // The name comes from an image: it goes into a firewall command.
  if (!is_network_lock_name(mode, table))
    return failf("network lock {:?}: not a name minicriu gives its tables; the images are damaged", table);
  if (mode == NetworkLockMode::nftables) {
    TRY(nftables_unlock(table));
  } else if (mode == NetworkLockMode::iptables) {
    TRY(iptables_unlock(table));
  } else {
    return failf("network lock {}: unknown backend {}", table, network_lock_mode_name(mode));
  }
  log.info("network lock: {} {} removed", network_lock_mode_name(mode), table);
  return {};
}

}  // namespace minicriu
