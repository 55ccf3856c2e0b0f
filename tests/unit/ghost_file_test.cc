// The ghost store and its recreation on real files: sparse extents in, the
// same contents and holes out, and the recreated file unlinked again.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "fs/ghost_file.hpp"

using namespace minicriu;

namespace {

class GhostFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/minicriu-ghost-XXXXXX";
    root_ = mkdtemp(tmpl);
    std::filesystem::create_directory(root_ + "/images");
    std::filesystem::create_directory(root_ + "/data");
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  std::string root_;
};

}  // namespace

TEST_F(GhostFileTest, SparseRoundTripKeepsDataHolesAndMode) {
  std::string path = root_ + "/data/pool";
  int fd = open(path.c_str(), O_RDWR | O_CREAT, 0640);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 64 << 20), 0);
  std::string a(8192, 'a'), b(4096, 'b');
  ASSERT_EQ(pwrite(fd, a.data(), a.size(), 0), (ssize_t)a.size());
  ASSERT_EQ(pwrite(fd, b.data(), b.size(), 32 << 20), (ssize_t)b.size());
  ASSERT_EQ(lseek(fd, 100, SEEK_SET), 100);
  unlink(path.c_str());
  struct stat st;
  ASSERT_EQ(fstat(fd, &st), 0);

  ImageDir dir(root_ + "/images");
  Logger log;
  GhostStore store(dir, GhostPolicy(), log);
  auto id = store.add("test: fd 3", fd, path + " (deleted)", st);
  ASSERT_TRUE(id) << id.error().what();
  EXPECT_EQ(lseek(fd, 0, SEEK_CUR), 100) << "the holder's offset moved";
  // The same inode again: the same ghost, no second copy.
  EXPECT_EQ(store.add("test: fd 4", fd, path + " (deleted)", st).value(), *id);
  ASSERT_EQ(store.entries().size(), 1u);
  const auto& g = store.entries()[0];
  EXPECT_EQ(g.path(), path);
  EXPECT_EQ(g.allocated(), 8192u + 4096u);
  ASSERT_EQ(g.extents_size(), 2);
  ImageSet images(dir);
  ASSERT_TRUE(store.commit(images));
  ASSERT_TRUE(images.publish());
  EXPECT_EQ(std::filesystem::file_size(ghost_data_image(dir, *id)), 8192u + 4096u);
  EXPECT_TRUE(std::filesystem::exists(ghosts_image(dir)));

  std::vector<img::GhostFile> ghosts(store.entries().begin(), store.entries().end());
  std::string recreated;
  {
    auto r = RecreatedGhosts::recreate(dir, ghosts, "");
    ASSERT_TRUE(r) << r.error().what();
    recreated = r->paths().at(*id);
    EXPECT_EQ(std::filesystem::path(recreated).parent_path(), root_ + "/data") << "not beside its old path";
    struct stat rst;
    ASSERT_EQ(stat(recreated.c_str(), &rst), 0);
    EXPECT_EQ(rst.st_size, 64 << 20);
    EXPECT_EQ(rst.st_mode & 07777, 0640u);
    EXPECT_LE(rst.st_blocks, st.st_blocks + 2 * 8) << "holes were filled";
    int rfd = open(recreated.c_str(), O_RDONLY);
    std::string got(8192, 0);
    ASSERT_EQ(pread(rfd, got.data(), got.size(), 0), 8192);
    EXPECT_EQ(got, a);
    got.assign(4096, 0);
    ASSERT_EQ(pread(rfd, got.data(), got.size(), 32 << 20), 4096);
    EXPECT_EQ(got, b);
    close(rfd);
  }
  EXPECT_FALSE(std::filesystem::exists(recreated)) << "not unlinked again";
  close(fd);
}

TEST_F(GhostFileTest, OverThePolicyIsRefusedAndNothingIsWritten) {
  std::string path = root_ + "/data/big";
  int fd = open(path.c_str(), O_RDWR | O_CREAT, 0600);
  std::string block(1 << 20, 'x');
  ASSERT_EQ(pwrite(fd, block.data(), block.size(), 0), (ssize_t)block.size());
  unlink(path.c_str());
  struct stat st;
  fstat(fd, &st);
  ImageDir dir(root_ + "/images");
  Logger log;
  GhostStore store(dir, GhostPolicy(4096, {}), log);
  auto r = store.add("pid 1: fd 3", fd, path + " (deleted)", st);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(),
            "pid 1: fd 3: ghost file " + path +
                ": 1 MiB of data, over the ghost file limit of 4 KiB; raise it with --ghost-limit "
                "SIZE or let this path through with --ghost-policy 'PATTERN:copy'");
  EXPECT_TRUE(std::filesystem::is_empty(root_ + "/images"));
  close(fd);
}

// A ghost whose directory is gone comes back in --ghost-dir if given, else
// in the nearest directory above that exists.
TEST_F(GhostFileTest, MissingDirectoryGoesToTheGhostDirOrTheNearestDirectoryAbove) {
  img::GhostFile g;
  g.set_id(1);
  g.set_path(root_ + "/gone/file");
  g.set_size(10);
  ImageDir dir(root_ + "/images");
  {
    int fd = open(ghost_data_image(dir, 1).c_str(), O_WRONLY | O_CREAT, 0600);
    close(fd);
  }
  g.set_path(root_ + "/gone/deeper/file");
  g.set_mode(S_IFREG | 0600);
  auto r = RecreatedGhosts::recreate(dir, {g}, "");
  ASSERT_TRUE(r) << r.error().what();
  EXPECT_EQ(std::filesystem::path(r->paths().at(1)).parent_path(), root_);
  auto ok = RecreatedGhosts::recreate(dir, {g}, root_ + "/data");
  ASSERT_TRUE(ok) << ok.error().what();
  EXPECT_EQ(std::filesystem::path(ok->paths().at(1)).parent_path(), root_ + "/data");
}
