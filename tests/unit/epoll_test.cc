// epoll dumped from the test process's own fdinfo and restored in two passes
// (open, then open_after once the targets exist): the restored epoll
// reports the same events with the same data for the same targets. Entries
// whose fd was closed or reused are refused at dump.
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <map>
#include <set>

#include "own_fd.hpp"

using namespace minicriu;
using namespace minicriu::testing;

namespace {

// A process that has no fd and no file.
FdLookup none() { return FdLookup{[](int) { return -1; }, [](uint32_t) { return -1; }}; }

// What one epoll_wait reports, as (data, events) pairs.
std::set<std::pair<uint64_t, uint32_t>> ready(int epfd) {
  epoll_event evs[16];
  int n = ::epoll_wait(epfd, evs, 16, 0);
  EXPECT_GE(n, 0) << strerror(errno);
  std::set<std::pair<uint64_t, uint32_t>> out;
  for (int i = 0; i < n; i++) {
    uint64_t data = evs[i].data.u64;  // epoll_event is packed on x86_64
    uint32_t events = evs[i].events;
    out.insert({data, events});
  }
  return out;
}

void add(int epfd, int fd, uint32_t events, uint64_t data) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = data;
  ASSERT_EQ(::epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev), 0) << strerror(errno);
}

}  // namespace

TEST(Epoll, InterestListComesBackWithEventsAndData) {
  UniqueFd efd(::eventfd(0, EFD_NONBLOCK));
  int p[2];
  ASSERT_EQ(::pipe2(p, O_NONBLOCK), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  ASSERT_TRUE(efd && ep);
  add(ep.get(), efd.get(), EPOLLIN, 0x1111);
  add(ep.get(), rd.get(), EPOLLIN | EPOLLET, 0xdeadbeefcafef00dull);
  add(ep.get(), wr.get(), EPOLLOUT, 7);
  uint64_t one = 1;
  ASSERT_EQ(::write(efd.get(), &one, sizeof(one)), 8);
  ASSERT_EQ(::write(wr.get(), "x", 1), 1);

  DumpContextFixture fx;
  auto entry = dump_own_fd(ep.get(), fx);
  ASSERT_TRUE(entry) << entry.error().what();
  ASSERT_TRUE(entry->has_epoll());
  std::map<int, std::pair<uint32_t, uint64_t>> targets;
  for (auto& t : entry->epoll().targets()) targets[t.fd()] = {t.events(), t.data()};
  ASSERT_EQ(targets.size(), 3u);
  EXPECT_EQ(targets[efd.get()].second, 0x1111u);
  EXPECT_TRUE(targets[efd.get()].first & EPOLLIN);
  EXPECT_EQ(targets[rd.get()].second, 0xdeadbeefcafef00dull);
  EXPECT_TRUE(targets[rd.get()].first & EPOLLET);
  EXPECT_EQ(targets[wr.get()].second, 7u);
  EXPECT_TRUE(targets[wr.get()].first & EPOLLOUT);

  // The eventfd comes back as a new object, as in a restored process; the pipe
  // (not this kind's) stands for itself.
  auto efd_entry = dump_own_fd(efd.get(), fx);
  ASSERT_TRUE(efd_entry) << efd_entry.error().what();
  auto new_efd = open_entry(*efd_entry);
  ASSERT_TRUE(new_efd) << new_efd.error().what();

  auto restored = open_entry(*entry);
  ASSERT_TRUE(restored) << restored.error().what();
  EXPECT_TRUE(ready(restored->get()).empty()) << "open() must leave the interest list empty";
  Kind* kind = restore_kinds().owner(*entry).value();
  FdLookup lookup{[&](int dumped) { return dumped == efd.get() ? new_efd->get() : dumped; },
                  [](uint32_t) { return -1; }};
  auto st = kind->open_after(*entry, restored->get(), lookup);
  ASSERT_TRUE(st) << st.error().what();

  auto before = ready(ep.get());
  auto after = ready(restored->get());
  std::set<std::pair<uint64_t, uint32_t>> expected = {
      {0x1111, EPOLLIN}, {0xdeadbeefcafef00dull, EPOLLIN}, {7, EPOLLOUT}};
  EXPECT_EQ(before, expected);
  EXPECT_EQ(after, expected);
  // Level-triggered stays ready; the edge of the pipe was reported once.
  uint64_t v;
  ASSERT_EQ(::read(new_efd->get(), &v, sizeof(v)), 8);
  EXPECT_EQ(ready(restored->get()), (std::set<std::pair<uint64_t, uint32_t>>{{7, EPOLLOUT}}));
}

// An entry whose fd was closed is looked for among every fd the dump sees:
// refused at check() with its number when none holds its file, recorded as
// the file of the fd that does otherwise.
TEST(Epoll, EntryOfAClosedFdIsRefusedWithItsNumberWhenNoFdHoldsItsFile) {
  UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  UniqueFd efd(::eventfd(0, 0));
  add(ep.get(), efd.get(), EPOLLIN, 1);
  int number = efd.get();
  // The file stays open through a dup, so the entry stays; its fd goes.
  UniqueFd keep(::dup(efd.get()));
  efd.reset();
  {
    DumpContextFixture fx;
    auto entry = dump_own_fd(ep.get(), fx);
    ASSERT_TRUE(entry) << entry.error().what();
    Kind* kind = fx.kinds().taker(own_fd(ep.get())).value();
    auto st = kind->check(DumpTree{}, fx.env());
    ASSERT_FALSE(st);
    std::string msg = st.error().what();
    EXPECT_NE(msg.find(fmt::format("fd {}", ep.get())), std::string::npos) << msg;
    EXPECT_NE(msg.find(fmt::format("added as fd {}", number)), std::string::npos) << msg;
    EXPECT_NE(msg.find("no fd of the dumped tree holds that file"), std::string::npos) << msg;
    EXPECT_NE(msg.find("EPOLL_CTL_DEL"), std::string::npos) << msg;
    EXPECT_EQ(std::count(msg.begin(), msg.end(), '\n'), 0) << msg;
  }
  {
    // The dup is seen (after the epoll, as a later fd would be): the entry
    // is the dup's file, and added again under its old number.
    DumpContextFixture fx;
    auto entry = dump_own_fd(ep.get(), fx);
    ASSERT_TRUE(entry) << entry.error().what();
    fx.env().files->push_back(*entry);
    Kind* kind = fx.kinds().taker(own_fd(ep.get())).value();
    ASSERT_TRUE(kind->observe_fd(own_fd(keep.get()), 7, fx.env()));
    auto st = kind->check(DumpTree{}, fx.env());
    ASSERT_TRUE(st) << st.error().what();
    const img::EpollTarget& t = fx.env().files->back().epoll().targets(0);
    EXPECT_EQ(t.fd(), number);
    EXPECT_EQ(t.file_id(), 7u);
  }
}

TEST(Epoll, SameNumberAddedAgainAfterReuseIsTheLiveEntryOnly) {
  UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  UniqueFd a(::eventfd(0, 0));
  add(ep.get(), a.get(), EPOLLIN, 1);
  int number = a.get();
  // EPOLL_CTL_DEL before the close: nothing stale is left.
  ASSERT_EQ(::epoll_ctl(ep.get(), EPOLL_CTL_DEL, number, nullptr), 0);
  a.reset();
  UniqueFd b(::eventfd(0, 0));
  ASSERT_EQ(b.get(), number);
  add(ep.get(), b.get(), EPOLLIN, 2);
  DumpContextFixture fx;
  auto entry = dump_own_fd(ep.get(), fx);
  ASSERT_TRUE(entry) << entry.error().what();
  ASSERT_EQ(entry->epoll().targets_size(), 1);
  EXPECT_EQ(entry->epoll().targets(0).data(), 2u);
}

TEST(Epoll, RestoreAfterNamesATargetTheProcessLacks) {
  img::FileEntry entry;
  entry.set_id(3);
  auto* t = entry.mutable_epoll()->add_targets();
  t->set_fd(42);
  t->set_events(EPOLLIN);
  auto restored = open_entry(entry);
  ASSERT_TRUE(restored) << restored.error().what();
  auto st = restore_kinds().owner(entry).value()->open_after(entry, restored->get(), none());
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().what().find("fd 42"), std::string::npos) << st.error().what();
}

TEST(Epoll, OtherKindsHaveNothingToDoAfterwards) {
  img::FileEntry entry;
  entry.mutable_eventfd()->set_count(1);
  EXPECT_TRUE(restore_kinds().owner(entry).value()->open_after(entry, -1, none()));
}
