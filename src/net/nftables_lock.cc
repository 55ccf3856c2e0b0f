// The nftables backend of the network lock, through libnftables: no `nft`
// command is needed, only the kernel's nf_tables. It only ever creates and
// deletes a table of its own (family inet, named minicriu-...), never flushes
// or touches another table.
//
// The table is created with the "owner" flag (Linux 5.12): it belongs to the
// netlink socket of our libnftables context, and the kernel deletes it when
// that socket closes, so even a dump killed by SIGKILL leaves no table behind.
// Only that socket may change an owned table. A lock that must outlive the
// dump (keep()) is copied into a table without the flag, in the same
// transaction that deletes the owned one, so no packet slips through between.
#undef _GNU_SOURCE  // libnftables.h defines it again, without a value
#include <nftables/libnftables.h>

#include <dirent.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <sys/socket.h>

#include <cstdlib>
#include <set>
#include <string_view>
#include <vector>

#include "base/journal.hpp"
#include "net/network_lock_backend.hpp"

namespace minicriu {

namespace {

std::set<int> open_fds() {
  std::set<int> fds;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') fds.insert(std::atoi(e->d_name));
    fds.erase(::dirfd(d));  // free again once we return
    ::closedir(d);
  }
  return fds;
}

bool is_netfilter_socket(int fd) {
  int domain = 0, protocol = 0;
  socklen_t len = sizeof(int);
  if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_NETLINK) return false;
  len = sizeof(int);
  return ::getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) == 0 && protocol == NETLINK_NETFILTER;
}

// One libnftables context (and its netlink socket), output and errors
// buffered. Freeing it closes the socket, which drops the tables it owns.
class NftContext {
 public:
  NftContext() {
    // libnftables opens its netlink socket without close-on-exec: a program
    // the library's user starts meanwhile would hold it, and with it our
    // owned table, past our death. Marked here: the new netfilter sockets.
    std::set<int> before = open_fds();
    ctx_ = ::nft_ctx_new(NFT_CTX_DEFAULT);
    if (!ctx_) return;
    for (int fd : open_fds())
      if (!before.contains(fd) && is_netfilter_socket(fd)) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    ::nft_ctx_buffer_output(ctx_);
    ::nft_ctx_buffer_error(ctx_);
  }
  ~NftContext() {
    if (ctx_) ::nft_ctx_free(ctx_);
  }
  NftContext(const NftContext&) = delete;
  NftContext& operator=(const NftContext&) = delete;

  bool ok() const { return ctx_ != nullptr; }

  // Runs a batch of commands as one transaction; the output on success, the
  // first line of libnftables' error on failure ("Could not process rule:
  // Operation not permitted").
  Result<std::string> run(const std::string& commands) {
    if (!ctx_) return fail("nftables: cannot create a libnftables context");
    int r = ::nft_run_cmd_from_buffer(ctx_, commands.c_str());
    std::string out = ::nft_ctx_get_output_buffer(ctx_);
    std::string err = ::nft_ctx_get_error_buffer(ctx_);
    if (r == 0) return out;
    return fail(first_error_line(err));
  }

 private:
  static std::string first_error_line(std::string_view err) {
    while (!err.empty()) {
      size_t nl = err.find('\n');
      std::string_view line = err.substr(0, nl);
      err = nl == std::string_view::npos ? std::string_view{} : err.substr(nl + 1);
      if (line.starts_with("Error: ")) line.remove_prefix(7);
      if (!line.empty()) return std::string(line);
    }
    return "libnftables failed without a message";
  }

  nft_ctx* ctx_ = nullptr;
};

// priority -300 is "raw": before conntrack (-200), so a dropped packet is
// never tracked, and before any filter chain the user may have.
std::string table_commands(const std::string& table, bool owner) {
  return fmt::format(
      "add table inet {0}{1}\n"
      "add chain inet {0} input {{ type filter hook input priority -300; policy accept; }}\n"
      "add chain inet {0} output {{ type filter hook output priority -300; policy accept; }}\n",
      table, owner ? " { flags owner; }" : "");
}

// Whether nf_tables lets us in at all, asked first with the one command that
// needs no cache: libnftables prints "Operation not permitted (you must be
// root)" straight to stderr when it cannot fill its cache, which would break
// our one-line errors. The probe table is empty (no chain, no hook): it is
// deleted in the transaction that creates the real table. (Not owned: the
// owner flag makes libnftables fill its cache, which prints to stderr where
// we may not.) A dump notes it in its journal first: a dumper killed between
// the two leaves it to its guardian.
Status create_probe_table(NftContext& nft, const std::string& probe) {
  TRY(journal_note(fmt::format("nft nftables {}", probe)));
  auto r = nft.run(fmt::format("add table inet {}\n", probe));
  if (!r) return std::unexpected(r.error());
  return {};
}

std::string rule_commands(const std::string& table, const ConnectionMatch& m) {
  return fmt::format("add rule inet {0} output {1} drop\nadd rule inet {0} input {2} drop\n", table,
                     m.outgoing, m.incoming);
}

class NftablesLock final : public LockBackend {
 public:
  NftablesLock(std::string table, const Logger& log) : table_(std::move(table)), log_(log) {}
  // Kept or not, the dump's own table goes with this object; a kept one
  // (connections to peers outside) stays for the restore.
  ~NftablesLock() override {
    if (!created_) return;
    if (auto st = delete_own_table(); !st)
      log_.warn("network lock: {} (the table goes when minicriu exits: it is owned)", st.error().what());
  }

  NetworkLockMode mode() const override { return NetworkLockMode::nftables; }
  const std::string& table() const override { return kept_ ? kept_table_ : table_; }

  Status add(const LockedConnection& conn) override {
    ConnectionMatch m = nft_match(conn);
    if (!seen_.insert(m.outgoing).second) return {};
    std::string rules = rule_commands(table_, m);
    if (!created_) {
      std::string probe = table_ + "-probe";
      if (auto st = create_probe_table(nft_, probe); !st) {
        seen_.erase(m.outgoing);
        return failf("nftables: creating table inet {}: {}", table_, st.error().message());
      }
      std::string drop_probe = fmt::format("delete table inet {}\n", probe);
      auto r = nft_.run(drop_probe + table_commands(table_, true) + rules);
      if (r) (void)journal_note(fmt::format("nft-gone {}", probe));
      if (!r) {
        // A kernel before 5.12 has no owned tables: an ordinary one still
        // locks, and the destructor still removes it.
        auto plain = nft_.run(drop_probe + table_commands(table_, false) + rules);
        if (plain) (void)journal_note(fmt::format("nft-gone {}", probe));
        if (!plain) {
          if (nft_.run(drop_probe)) (void)journal_note(fmt::format("nft-gone {}", probe));
          seen_.erase(m.outgoing);
          return failf("nftables: creating table inet {}: {}", table_, r.error().message());
        }
        owner_ = false;
      }
      created_ = true;
      log_.info("network lock: nftables table inet {} created{}", table_, owner_ ? " (owned by minicriu)" : "");
    } else if (auto r = nft_.run(rules); !r) {
      seen_.erase(m.outgoing);
      return failf("nftables: adding a rule to table inet {}: {}", table_, r.error().message());
    }
    matches_.push_back(m);
    log_.debug("network lock: {} dropped", conn.what);
    return {};
  }

  Status remove() override {
    if (!kept_table_.empty()) {
      auto r = nft_.run(fmt::format("delete table inet {}\n", kept_table_));
      if (!r) return failf("nftables: deleting table inet {}: {}", kept_table_, r.error().message());
      log_.info("network lock: table inet {} deleted", kept_table_);
      kept_table_.clear();
      kept_ = false;
    }
    return delete_own_table();
  }

  // A table of no owner (it outlives us) with the rules of the connections
  // to peers outside the tree only. The dump's own table, with every
  // connection, stays until this object goes: after the tree is killed.
  Status keep() override {
    if (!created_ || kept_) {
      kept_ = true;
      return {};
    }
    std::string kept = table_ + "-kept";
    std::string batch = table_commands(kept, false);
    for (auto& m : matches_)
      if (m.peer_outside) batch += rule_commands(kept, m);
    auto r = nft_.run(batch);
    if (!r) return failf("nftables: keeping the lock in table inet {}: {}", kept, r.error().message());
    kept_table_ = kept;
    kept_ = true;
    log_.info("network lock: table inet {} stays until the restore", kept_table_);
    return {};
  }

 private:
  Status delete_own_table() {
    if (!created_) return {};
    auto r = nft_.run(fmt::format("delete table inet {}\n", table_));
    if (!r) return failf("nftables: deleting table inet {}: {}", table_, r.error().message());
    created_ = false;
    log_.info("network lock: table inet {} deleted", table_);
    return {};
  }

  NftContext nft_;
  std::string table_;
  std::string kept_table_;
  const Logger& log_;
  bool created_ = false;
  bool owner_ = true;
  bool kept_ = false;
  std::set<std::string> seen_;          // outgoing matches already locked
  std::vector<ConnectionMatch> matches_;
};

}  // namespace

Result<std::unique_ptr<LockBackend>> make_nftables_lock(const std::string& table, const Logger& log) {
  auto lock = std::make_unique<NftablesLock>(table, log);
  return std::unique_ptr<LockBackend>(std::move(lock));
}

Status nftables_unlock(const std::string& table) {
  NftContext nft;
  auto r = nft.run(fmt::format("delete table inet {}\n", table));
  if (!r) return failf("nftables: deleting table inet {}: {}", table, r.error().message());
  return {};
}

Result<std::vector<std::string>> network_lock_tables() {
  NftContext nft;
  ASSIGN_OR_RETURN(std::string out,
                   with_context(nft.run("list tables inet\n"), "nftables: listing tables"));
  std::vector<std::string> tables;
  std::string_view text = out;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    constexpr std::string_view kPrefix = "table inet minicriu-";
    if (line.starts_with(kPrefix)) tables.emplace_back(line.substr(11));
  }
  return tables;
}

Status network_lock_probe_nftables() {
  NftContext nft;
  std::string table = "minicriu-check-" + unique_suffix();
  TRY(with_context(create_probe_table(nft, table), fmt::format("nftables: creating table inet {}", table)));
  // A kernel before 5.12 knows no owned tables: the lock then makes one
  // without an owner, as add() does. Whatever fails, the probe goes.
  auto hooked = nft.run(fmt::format("delete table inet {}\n", table) + table_commands(table, true));
  if (!hooked)
    hooked = nft.run(fmt::format("delete table inet {}\n", table) + table_commands(table, false));
  if (!hooked) {
    (void)nft.run(fmt::format("delete table inet {}\n", table));
    return failf("nftables: creating table inet {} with hooks: {}", table, hooked.error().message());
  }
  TRY(with_context(nft.run(fmt::format("delete table inet {}\n", table)),
                   fmt::format("nftables: deleting table inet {}", table)));
  return {};
}

}  // namespace minicriu
