// O_PATH fds of the test process dumped and opened again: the same place,
// the same flags; one whose file has no name left is refused.
#include <fcntl.h>
#include <sys/stat.h>

#include <filesystem>

#include "own_fd.hpp"

using namespace minicriu;
using namespace minicriu::testing;

namespace {

struct TempTree {
  std::string root;
  TempTree() {
    char tmpl[] = "/tmp/minicriu-opath-XXXXXX";
    root = ::mkdtemp(tmpl);
    UniqueFd f(::open((root + "/file").c_str(), O_WRONLY | O_CREAT, 0600));
    EXPECT_TRUE(f);
    EXPECT_EQ(::symlink("file", (root + "/link").c_str()), 0);
  }
  ~TempTree() { std::filesystem::remove_all(root); }
};

ino_t path_ino_of(int fd) {
  struct stat st {};
  EXPECT_EQ(::fstatat(fd, "", &st, AT_EMPTY_PATH), 0);
  return st.st_ino;
}

}  // namespace

TEST(PathFd, FileDirectoryAndSymlinkComeBackAsTheyWere) {
  TempTree t;
  struct Case {
    std::string path;
    int flags;
  };
  for (const Case& c : {Case{t.root + "/file", O_PATH}, Case{t.root, O_PATH | O_DIRECTORY},
                        Case{t.root + "/link", O_PATH | O_NOFOLLOW}}) {
    UniqueFd fd(::open(c.path.c_str(), c.flags | O_CLOEXEC));
    ASSERT_TRUE(fd) << c.path;
    DumpContextFixture fx;
    auto entry = dump_own_fd(fd.get(), fx);
    ASSERT_TRUE(entry) << entry.error().what();
    ASSERT_TRUE(entry->has_path()) << c.path;
    EXPECT_EQ(entry->path().path(), c.path);
    auto restored = open_entry(*entry);
    ASSERT_TRUE(restored) << restored.error().what();
    EXPECT_EQ(path_ino_of(restored->get()), path_ino_of(fd.get())) << c.path;
    int fl = ::fcntl(restored->get(), F_GETFL);
    EXPECT_EQ(fl & (O_PATH | O_NOFOLLOW | O_DIRECTORY), c.flags) << c.path;
    EXPECT_NE(restore_kinds().describe(*entry).find("O_PATH " + c.path), std::string::npos)
        << restore_kinds().describe(*entry);
  }
}

TEST(PathFd, AFileWithNoNameLeftIsRefused) {
  TempTree t;
  UniqueFd fd(::open((t.root + "/file").c_str(), O_PATH | O_CLOEXEC));
  ASSERT_TRUE(fd);
  ASSERT_EQ(::unlink((t.root + "/file").c_str()), 0);
  DumpContextFixture fx;
  auto entry = dump_own_fd(fd.get(), fx);
  ASSERT_FALSE(entry);
  EXPECT_NE(entry.error().what().find("has no name left"), std::string::npos) << entry.error().what();
}

TEST(PathFd, ARestoreWhereAnotherTypeOfFileStandsIsRefused) {
  TempTree t;
  UniqueFd fd(::open((t.root + "/file").c_str(), O_PATH | O_CLOEXEC));
  DumpContextFixture fx;
  auto entry = dump_own_fd(fd.get(), fx);
  ASSERT_TRUE(entry) << entry.error().what();
  ASSERT_EQ(::unlink((t.root + "/file").c_str()), 0);
  ASSERT_EQ(::mkdir((t.root + "/file").c_str(), 0700), 0);
  auto restored = open_entry(*entry);
  ASSERT_FALSE(restored);
  EXPECT_NE(restored.error().what().find("is a directory now, it was a file"), std::string::npos)
      << restored.error().what();
}
