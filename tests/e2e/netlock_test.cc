// The network lock around real dumps and restores: no table of ours appears
// for a tree without TCP connections, none is left after a failed dump, a bad
// --network-lock is refused before the tree is touched, and a lock a dump
// kept is removed by the restore once the tree runs (left by a failed one).
// Tables are read from the kernel's ruleset through libnftables.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "base/log.hpp"
#include "e2e_util.hpp"
#include "images/image_io.hpp"
#include "minicriu.pb.h"
#include "net/network_lock.hpp"

using namespace e2e;
using minicriu::NetworkLock;
using minicriu::NetworkLockMode;

namespace {

std::vector<std::string> tables_with_prefix(const std::string& prefix) {
  auto tables = minicriu::network_lock_tables();
  EXPECT_TRUE(tables.has_value()) << tables.error().what();
  std::vector<std::string> out;
  if (tables)
    for (auto& t : *tables)
      if (t.starts_with(prefix)) out.push_back(t);
  return out;
}

// Reads the ruleset over and over while it lives, remembering every table of
// a dump of `pid` it ever saw.
class TableWatcher {
 public:
  explicit TableWatcher(pid_t pid)
      : prefix_("minicriu-" + std::to_string(pid) + "-"), thread_([this] {
          while (!stop_) {
            for (auto& t : tables_with_prefix(prefix_)) seen_.push_back(t);
            polls_++;
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
          }
        }) {}
  ~TableWatcher() { stop(); }
  std::vector<std::string> stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return seen_;
  }
  int polls() const { return polls_; }

 private:
  std::string prefix_;
  std::atomic<bool> stop_{false};
  std::atomic<int> polls_{0};
  std::vector<std::string> seen_;
  std::thread thread_;
};

std::string prefix_of(pid_t pid) { return "minicriu-" + std::to_string(pid) + "-"; }

}  // namespace

TEST(NetworkLockE2E, TreeWithoutTcpNeverGetsATable) {
  TempDir dir;
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  std::string images = images_dir(dir);
  {
    TableWatcher watch(p.pid());
    auto r = run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images, "--leave-running",
                           "--network-lock", "nftables"});
    ASSERT_EQ(r.status, 0) << r.output;
    auto seen = watch.stop();
    EXPECT_TRUE(seen.empty()) << seen.front();
    EXPECT_GT(watch.polls(), 0);
  }
  expect_intact(p);
}

TEST(NetworkLockE2E, KillingDumpAndRestoreOfATreeWithoutTcpLeaveNoTable) {
  TempDir dir;
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  std::string images = images_dir(dir);
  TableWatcher watch(pid);
  ASSERT_NO_FATAL_FAILURE(dump_and_reap(pid, images, &p));
  auto view = show_json(images);
  EXPECT_EQ(view.inventory().network_lock_table(), "");
  RestoredTree restored;
  restored.add_from(images);
  ASSERT_EQ(restore_detached(images), pid);
  auto seen = watch.stop();
  EXPECT_TRUE(seen.empty()) << seen.front();
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0);
}

TEST(NetworkLockE2E, DumpFailingMidwayLeavesNoTable) {
  TempDir dir;
  TmpfsMount small(dir / "small", "size=2m");
  if (!small.ok()) GTEST_SKIP() << "cannot mount tmpfs here (needs root)";
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  TableWatcher watch(p.pid());
  // 32 MiB of pattern cannot fit in 2 MiB: the dump fails with the tree frozen.
  expect_one_line_error(run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", dir / "small",
                                      "--network-lock", "nftables"}),
                        "No space left on device");
  auto seen = watch.stop();
  EXPECT_TRUE(seen.empty()) << seen.front();
  EXPECT_TRUE(tables_with_prefix(prefix_of(p.pid())).empty());
  expect_intact(p);
}

TEST(NetworkLockE2E, BogusModeIsOneLineAndTheTargetIsUntouched) {
  TempDir dir;
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  std::string images = images_dir(dir);
  expect_one_line_error(
      run_minicriu({"dump", "-t", std::to_string(p.pid()), "-D", images, "--network-lock", "bogus"}),
      "--network-lock \"bogus\": expected auto, nftables, iptables or skip");
  EXPECT_TRUE(std::filesystem::is_empty(images));
  // Never seized: no tracer, and it carries on.
  EXPECT_NE(read_text("/proc/" + std::to_string(p.pid()) + "/status").find("TracerPid:\t0\n"),
            std::string::npos);
  expect_intact(p);
}

TEST(NetworkLockE2E, CheckSaysWhetherNftablesWorks) {
  auto r = run_minicriu({"check"});
  EXPECT_NE(r.output.find("ok   nftables network lock (TCP connections): a probe table was created and deleted"),
            std::string::npos)
      << r.output;
  EXPECT_TRUE(tables_with_prefix("minicriu-check-").empty());
}

// A dump that killed a tree with connections to peers outside it keeps its
// lock and names it in the inventory (inetsk_test's --tcp-established test
// makes one for real). Here a real kept table is planted into a checkpoint's
// inventory, to fail a restore on purpose: a restore that fails leaves it,
// one that succeeds removes it.
TEST(NetworkLockE2E, RestoreRemovesAKeptLockOnceTheTreeRunsAndAFailedOneLeavesIt) {
  TempDir dir;
  Program p("basic", dir);
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  std::string images = images_dir(dir);
  ASSERT_NO_FATAL_FAILURE(dump_and_reap(pid, images, &p));

  minicriu::Logger log;
  NetworkLock::Kept kept;
  {
    auto lock = NetworkLock::create(NetworkLockMode::nftables, std::to_string(pid), log);
    ASSERT_TRUE(lock.has_value());
    minicriu::LockedConnection c;
    c.local = {127, 0, 0, 1};
    c.remote = {127, 0, 0, 1};
    c.local_port = 1;  // a connection nobody makes: only the table matters here
    c.remote_port = 2;
    c.peer_outside = true;
    ASSERT_TRUE((*lock)->add(c).has_value());
    auto k = (*lock)->keep();
    ASSERT_TRUE(k.has_value()) << k.error().what();
    kept = *k;
  }
  ASSERT_FALSE(kept.table.empty());
  struct Cleanup {
    std::string table;
    ~Cleanup() { (void)minicriu::network_unlock(NetworkLockMode::nftables, table, minicriu::Logger()); }
  } cleanup{kept.table};

  std::string inv_path = images + "/inventory.img";
  auto inv = minicriu::read_single_image<minicriu::img::Inventory>(inv_path, minicriu::ImageKind::inventory);
  ASSERT_TRUE(inv.has_value());
  auto write_inventory = [&](const minicriu::img::Inventory& i) {
    auto w = minicriu::ImageWriter::create(inv_path, minicriu::ImageKind::inventory);
    ASSERT_TRUE(w.has_value());
    ASSERT_TRUE(w->write(i).has_value());
    ASSERT_TRUE(w->commit().has_value());
  };
  inv->set_network_lock_backend("nftables");
  inv->set_network_lock_table(kept.table);
  auto bad = *inv;
  bad.set_page_size(65536);
  ASSERT_NO_FATAL_FAILURE(write_inventory(bad));

  auto shown = run_minicriu({"show", "-D", images});
  EXPECT_NE(shown.output.find("network lock: nftables table inet " + kept.table + " kept until the restore"),
            std::string::npos)
      << shown.output;

  auto failed = run_minicriu({"restore", "-v", "-d", "-D", images});
  EXPECT_EQ(failed.status, 1) << failed.output;
  EXPECT_NE(failed.output.find("the network lock (nftables " + kept.table + ") stays"), std::string::npos)
      << failed.output;
  EXPECT_EQ(tables_with_prefix(kept.table), std::vector<std::string>{kept.table});

  ASSERT_NO_FATAL_FAILURE(write_inventory(*inv));
  RestoredTree restored;
  restored.add_from(images);
  ASSERT_EQ(restore_detached(images), pid);
  EXPECT_TRUE(tables_with_prefix(kept.table).empty());
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0);
}

// With TCP connections in the tree: the lock is made while the tree is
// frozen (the -v log says so) and is gone after the dump, whether it left the
// tree running, killed it (both ends in the tree: nothing to keep), or failed
// midway with the connections locked.
TEST(NetworkLockE2E, TcpTreeIsLockedDuringTheDumpAndNoTableStaysAfterIt) {
  TempDir dir;
  Program p("tcpstream", dir, {"pair", "v4"});
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  {
    TableWatcher watch(pid);
    auto r = run_minicriu({"-v", "dump", "-t", std::to_string(pid), "-D", images_dir(dir, "running"),
                           "--leave-running", "--network-lock", "nftables"});
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("network lock: nftables table inet " + prefix_of(pid)), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("deleted"), std::string::npos) << r.output;
    watch.stop();
    EXPECT_TRUE(tables_with_prefix(prefix_of(pid)).empty());
  }
  expect_intact(p);
}

TEST(NetworkLockE2E, TcpTreeDumpFailingAfterTheLockLeavesNoTable) {
  TempDir dir;
  TmpfsMount small(dir / "small", "size=1m");
  if (!small.ok()) GTEST_SKIP() << "cannot mount tmpfs here (needs root)";
  Program p("tcpstream", dir, {"pair", "v4"});
  ASSERT_TRUE(p.wait_ready());
  // The fds (and their connections, locked) come before the pages, which
  // cannot fit in 1 MiB.
  auto r = run_minicriu({"-v", "dump", "-t", std::to_string(p.pid()), "-D", dir / "small", "--network-lock",
                         "nftables"});
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("network lock: nftables table inet " + prefix_of(p.pid())), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("No space left on device"), std::string::npos) << r.output;
  EXPECT_TRUE(tables_with_prefix(prefix_of(p.pid())).empty());
  expect_intact(p);
}

TEST(NetworkLockE2E, TcpTreeKilledAndRestoredLeavesNoTable) {
  TempDir dir;
  Program p("tcpstream", dir, {"pair", "v4"});
  ASSERT_TRUE(p.wait_ready());
  pid_t pid = p.pid();
  std::string images = images_dir(dir);
  RestoredTree restored;
  ASSERT_NO_FATAL_FAILURE(dump_and_reap(pid, images, &p));
  // Both ends in the tree: nothing to keep until the restore.
  EXPECT_EQ(show_json(images).inventory().network_lock_table(), "");
  EXPECT_TRUE(tables_with_prefix(prefix_of(pid)).empty());
  restored.add_from(images);
  ASSERT_EQ(restore_detached(images), pid);
  EXPECT_TRUE(tables_with_prefix(prefix_of(pid)).empty());
  ::kill(pid, SIGUSR1);
  EXPECT_EQ(wait_pid(pid).value_or(-1), 0) << read_text(dir / "tcpstream.log");
}
