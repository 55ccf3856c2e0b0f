// copy_pages on this very process: the runs' bytes land in order at the
// image's offset whatever the number of workers; a run that cannot be read
// is zeros when the tree runs and an error naming the address when frozen.
#include "mem/page_copy.hpp"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "base/page.hpp"
#include "base/unique_fd.hpp"

namespace minicriu {
namespace {

struct Memory {
  explicit Memory(size_t pages) : size(pages * kPageSize) {
    base = static_cast<char*>(::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    for (size_t i = 0; base != MAP_FAILED && i < pages; i++)
      std::memset(base + i * kPageSize, static_cast<int>(i % 251 + 1), kPageSize);
  }
  ~Memory() { ::munmap(base, size); }
  RemoteRange pages(size_t first, size_t n) const {
    return {RemotePtr<>(reinterpret_cast<uint64_t>(base) + first * kPageSize), n * kPageSize};
  }
  char* base;
  size_t size;
};

std::vector<char> file_bytes(int fd, uint64_t offset, size_t len) {
  std::vector<char> out(len);
  EXPECT_EQ(::pread(fd, out.data(), len, static_cast<off_t>(offset)), static_cast<ssize_t>(len));
  return out;
}

UniqueFd image() { return UniqueFd(::memfd_create("pages", MFD_CLOEXEC)); }

TEST(PageCopy, RunsLandInOrderAtTheOffsetWhateverTheWorkers) {
  auto self = TraceeMemory::open(::getpid());
  ASSERT_TRUE(self) << self.error().what();
  Memory m(3 * 1024);  // 12 MiB: pieces of 1 MiB, runs not on their grid
  ASSERT_NE(m.base, MAP_FAILED);
  std::vector<RemoteRange> runs = {m.pages(1, 700), m.pages(900, 1), m.pages(1000, 2000), m.pages(3050, 20)};
  UniqueFd pagemap(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(pagemap);
  for (unsigned workers : {1u, 2u, 4u, 5u}) {
    UniqueFd fd = image();
    ASSERT_TRUE(fd);
    // 5: 4 workers, reading by the pagemap (pinned where only we map).
    auto st = copy_pages(PageCopy{.memory = &*self,
                                  .out_fd = fd.get(),
                                  .offset = kPageSize,
                                  .workers = std::min(workers, 4u),
                                  .pagemap_fd = workers == 5 ? pagemap.get() : -1},
                         runs);
    ASSERT_TRUE(st) << st.error().what();
    uint64_t at = kPageSize;
    for (auto& r : runs) {
      auto got = file_bytes(fd.get(), at, r.size);
      EXPECT_EQ(std::memcmp(got.data(), reinterpret_cast<const char*>(r.start.addr()), r.size), 0)
          << workers << " worker(s), run at " << r.start.addr();
      at += r.size;
    }
    EXPECT_EQ(::lseek(fd.get(), 0, SEEK_END), static_cast<off_t>(at)) << workers << " worker(s)";
  }
}

// Pages without PROT_READ, present and only ours: a pinning read refuses
// them, /proc/PID/mem reads them.
TEST(PageCopy, UnreadablePagesAreReadAlsoWhenChosenByThePagemap) {
  auto self = TraceeMemory::open(::getpid());
  ASSERT_TRUE(self) << self.error().what();
  UniqueFd pagemap(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  Memory m(64);
  ASSERT_NE(m.base, MAP_FAILED);
  ASSERT_EQ(::mprotect(m.base + 16 * kPageSize, 8 * kPageSize, PROT_NONE), 0);
  UniqueFd out = image();
  RemoteRange all = m.pages(0, 64);
  auto st = copy_pages(PageCopy{.memory = &*self, .out_fd = out.get(), .pagemap_fd = pagemap.get()},
                       std::span(&all, 1));
  ASSERT_TRUE(st) << st.error().what();
  ASSERT_EQ(::mprotect(m.base, m.size, PROT_READ | PROT_WRITE), 0);
  auto got = file_bytes(out.get(), 0, m.size);
  EXPECT_EQ(std::memcmp(got.data(), m.base, m.size), 0);
}

// Scattered pages (a run each, many to a piece), one of them without
// PROT_READ and one unmapped after the scan: read by the pagemap, in order;
// the unmapped one zeros with the tree running, an error when frozen.
TEST(PageCopy, ScatteredPagesManyToAPieceLandInOrder) {
  auto self = TraceeMemory::open(::getpid());
  ASSERT_TRUE(self) << self.error().what();
  UniqueFd pagemap(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  Memory m(2000);
  ASSERT_NE(m.base, MAP_FAILED);
  std::vector<RemoteRange> runs;
  for (size_t i = 0; i < 2000; i += 3) runs.push_back(m.pages(i, 1));
  ASSERT_EQ(::mprotect(m.base + 300 * kPageSize, kPageSize, PROT_NONE), 0);
  for (unsigned workers : {1u, 2u}) {
    UniqueFd out = image();
    auto st = copy_pages(
        PageCopy{.memory = &*self, .out_fd = out.get(), .workers = workers, .pagemap_fd = pagemap.get()}, runs);
    ASSERT_TRUE(st) << st.error().what();
    for (size_t k = 0; k < runs.size(); k++) {
      auto got = file_bytes(out.get(), k * kPageSize, kPageSize);
      char want = static_cast<char>((3 * k) % 251 + 1);
      ASSERT_EQ(got[0], want) << workers << " worker(s), run " << k;
      ASSERT_EQ(got[kPageSize - 1], want) << workers << " worker(s), run " << k;
    }
  }
  ASSERT_EQ(::munmap(m.base + 900 * kPageSize, kPageSize), 0);  // run 300
  UniqueFd running = image();
  auto st = copy_pages(PageCopy{.memory = &*self, .out_fd = running.get(), .vanished = Vanished::zeros}, runs);
  ASSERT_TRUE(st) << st.error().what();
  for (size_t k = 0; k < runs.size(); k++) {
    auto got = file_bytes(running.get(), k * kPageSize, kPageSize);
    char want = k == 300 ? 0 : static_cast<char>((3 * k) % 251 + 1);
    ASSERT_EQ(got[0], want) << "run " << k;
  }
  UniqueFd frozen = image();
  st = copy_pages(PageCopy{.memory = &*self, .out_fd = frozen.get(), .pagemap_fd = pagemap.get()}, runs);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().what().find(fmt::format("cannot read its memory at {:#x}",
                                               reinterpret_cast<uint64_t>(m.base) + 900 * kPageSize)),
            std::string::npos)
      << st.error().what();
}

TEST(PageCopy, AnUnmappedRunIsZerosWithTheTreeRunningAndAnErrorWhenFrozen) {
  auto self = TraceeMemory::open(::getpid());
  ASSERT_TRUE(self) << self.error().what();
  Memory m(600);
  ASSERT_NE(m.base, MAP_FAILED);
  std::vector<RemoteRange> runs = {m.pages(0, 600)};
  ASSERT_EQ(::munmap(m.base + 300 * kPageSize, 10 * kPageSize), 0);  // after the "scan"

  UniqueFd running = image();
  auto st = copy_pages(PageCopy{.memory = &*self, .out_fd = running.get(), .workers = 2, .vanished = Vanished::zeros},
                       runs);
  ASSERT_TRUE(st) << st.error().what();
  auto got = file_bytes(running.get(), 0, 600 * kPageSize);
  for (size_t i = 0; i < 600; i++) {
    char want = (i >= 300 && i < 310) ? 0 : static_cast<char>(i % 251 + 1);
    ASSERT_EQ(got[i * kPageSize], want) << "page " << i;
    ASSERT_EQ(got[i * kPageSize + kPageSize - 1], want) << "page " << i;
  }

  UniqueFd frozen = image();
  st = copy_pages(PageCopy{.memory = &*self, .out_fd = frozen.get(), .workers = 2, .vanished = Vanished::fail},
                  runs);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().what().find(fmt::format("pid {}: cannot read its memory at {:#x}", ::getpid(),
                                               reinterpret_cast<uint64_t>(m.base) + 300 * kPageSize)),
            std::string::npos)
      << st.error().what();
}

// The physical page of each page of [addr, addr + pages) in pid (root sees
// the PFNs), 0 where none.
std::vector<uint64_t> pfns(pid_t pid, uint64_t addr, size_t pages) {
  std::vector<uint64_t> out(pages);
  UniqueFd pm(::open(fmt::format("/proc/{}/pagemap", pid).c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_TRUE(pm);
  EXPECT_EQ(::pread(pm.get(), out.data(), pages * 8, static_cast<off_t>(addr / kPageSize * 8)),
            static_cast<ssize_t>(pages * 8));
  for (auto& e : out) e = (e >> 63) ? (e & ((1ull << 55) - 1)) : 0;
  return out;
}

// A tree of forked processes shares its pages copy-on-write: a dump must
// not give the child copies of its own (a pinning read such as
// process_vm_readv would, doubling the tree's memory).
TEST(PageCopy, PagesSharedCopyOnWriteWithTheParentStayShared) {
  Memory m(2048);
  ASSERT_NE(m.base, MAP_FAILED);
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  if (child == 0) {
    char c = 1;
    (void)!::write(ready[1], &c, 1);
    ::pause();
    ::_exit(0);
  }
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  ::close(ready[1]);
  uint64_t addr = reinterpret_cast<uint64_t>(m.base);
  auto before = pfns(child, addr, 2048);
  ASSERT_EQ(before, pfns(::getpid(), addr, 2048)) << "not shared after fork";
  UniqueFd child_pagemap(::open(fmt::format("/proc/{}/pagemap", child).c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(child_pagemap);
  for (int pm : {-1, child_pagemap.get()}) {  // the tree running; frozen, reading by the pagemap
    auto memory = TraceeMemory::open(child);
    ASSERT_TRUE(memory) << memory.error().what();
    UniqueFd out = image();
    RemoteRange all = m.pages(0, 2048);
    auto st = copy_pages(PageCopy{.memory = &*memory, .out_fd = out.get(), .workers = 2, .pagemap_fd = pm},
                         std::span(&all, 1));
    ASSERT_TRUE(st) << st.error().what();
    auto got = file_bytes(out.get(), 0, m.size);
    EXPECT_EQ(std::memcmp(got.data(), m.base, m.size), 0);
  }
  EXPECT_EQ(pfns(child, addr, 2048), before) << "the child's pages were copied by the read";
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
}

TEST(PageCopy, WorkersFollowTheSizeAndTheCpus) {
  EXPECT_EQ(copy_workers(0), 1u);
  EXPECT_EQ(copy_workers(4ull << 20), 1u);
  EXPECT_GE(copy_workers(1ull << 30), 1u);
  EXPECT_LE(copy_workers(1ull << 30), 4u);
}

}  // namespace
}  // namespace minicriu
