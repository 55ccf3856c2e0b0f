#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "images/image_io.hpp"
#include "images/image_set.hpp"
#include "minicriu.pb.h"

using namespace minicriu;

namespace {

class ImageIoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/minicriu-unit-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) { return dir_ + "/" + name; }

  void write_two_entries(const std::string& p) {
    auto w = ImageWriter::create(p, ImageKind::pagemap);
    ASSERT_TRUE(w) << w.error().what();
    img::PagemapEntry a, b;
    a.set_vaddr(0x1000);
    a.set_nr_pages(3);
    b.set_vaddr(0x7000);
    b.set_nr_pages(1);
    ASSERT_TRUE(w->write(a));
    ASSERT_TRUE(w->write(b));
    ASSERT_TRUE(w->commit());
  }

  std::string dir_;
};

}  // namespace

TEST_F(ImageIoTest, RoundTrip) {
  write_two_entries(path("pagemap.img"));
  auto all = read_all_images<img::PagemapEntry>(path("pagemap.img"), ImageKind::pagemap);
  ASSERT_TRUE(all) << all.error().what();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].vaddr(), 0x1000u);
  EXPECT_EQ((*all)[0].nr_pages(), 3u);
  EXPECT_EQ((*all)[1].vaddr(), 0x7000u);
}

TEST_F(ImageIoTest, NothingVisibleBeforeCommit) {
  {
    auto w = ImageWriter::create(path("x.img"), ImageKind::files);
    ASSERT_TRUE(w);
    img::FileEntry e;
    e.set_id(1);
    ASSERT_TRUE(w->write(e));
  }  // dropped without commit
  EXPECT_FALSE(std::filesystem::exists(path("x.img")));
  EXPECT_FALSE(std::filesystem::exists(path("x.img.part")));
}

TEST_F(ImageIoTest, WrongKindIsRefused) {
  write_two_entries(path("pagemap.img"));
  auto r = read_all_images<img::FileEntry>(path("pagemap.img"), ImageKind::files);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("holds kind"), std::string::npos) << r.error().what();
}

TEST_F(ImageIoTest, ForeignFileIsRefused) {
  std::ofstream(path("foreign.img")) << "this is not an image at all, just some text";
  auto r = read_all_images<img::PagemapEntry>(path("foreign.img"), ImageKind::pagemap);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("bad magic"), std::string::npos) << r.error().what();
}

TEST_F(ImageIoTest, TruncatedFileIsRefusedAtEveryLength) {
  write_two_entries(path("full.img"));
  auto size = std::filesystem::file_size(path("full.img"));
  std::ifstream in(path("full.img"), std::ios::binary);
  std::string data((std::istreambuf_iterator<char>(in)), {});
  // Every cut that is not on a message boundary must be an error, never a crash.
  int accepted = 0;
  for (size_t cut = 0; cut < size; cut++) {
    std::ofstream(path("cut.img"), std::ios::binary) << data.substr(0, cut);
    auto r = read_all_images<img::PagemapEntry>(path("cut.img"), ImageKind::pagemap);
    if (r) accepted++;
  }
  // Only the cuts right after the head and after the first message are whole.
  EXPECT_EQ(accepted, 2);
}

TEST_F(ImageIoTest, CorruptLengthIsRefused) {
  write_two_entries(path("c.img"));
  int fd = open(path("c.img").c_str(), O_WRONLY);
  uint32_t huge = 0x7fffffff;
  ASSERT_EQ(pwrite(fd, &huge, 4, 16), 4);
  close(fd);
  auto r = read_all_images<img::PagemapEntry>(path("c.img"), ImageKind::pagemap);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("truncated or corrupt"), std::string::npos) << r.error().what();
}

TEST_F(ImageIoTest, SingleImageMustHoldOneMessage) {
  write_two_entries(path("two.img"));
  EXPECT_FALSE(read_single_image<img::PagemapEntry>(path("two.img"), ImageKind::pagemap));
}

TEST_F(ImageIoTest, AHugeSparseImageIsRefusedBeforeAnythingIsAllocated) {
  write_two_entries(path("pagemap.img"));
  // 1 TiB of apparent size: refused by its size alone.
  ASSERT_EQ(::truncate(path("pagemap.img").c_str(), 1ll << 40), 0);
  auto r = read_all_images<img::PagemapEntry>(path("pagemap.img"), ImageKind::pagemap);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().what().find("more than any image minicriu writes"), std::string::npos) << r.error().what();
  // Within the limit, the hole after the messages reads as empty messages: corrupt, not a
  // long run of default messages.
  ASSERT_EQ(::truncate(path("pagemap.img").c_str(), 1ll << 20), 0);
  r = read_all_images<img::PagemapEntry>(path("pagemap.img"), ImageKind::pagemap);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().what().find("truncated or corrupt"), std::string::npos) << r.error().what();
}

TEST_F(ImageIoTest, AMessageLongerThanTheFileIsRefused) {
  write_two_entries(path("pagemap.img"));
  auto size = std::filesystem::file_size(path("pagemap.img"));
  ASSERT_EQ(::truncate(path("pagemap.img").c_str(), static_cast<off_t>(size - 1)), 0);
  auto r = read_all_images<img::PagemapEntry>(path("pagemap.img"), ImageKind::pagemap);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().what().find("truncated or corrupt"), std::string::npos) << r.error().what();
}

TEST_F(ImageIoTest, APartFileThatIsASymlinkIsReplacedNotFollowed) {
  std::string victim = path("victim");
  { std::ofstream(victim) << "keep me"; }
  ASSERT_EQ(::symlink(victim.c_str(), (path("pagemap.img") + ".part").c_str()), 0);
  write_two_entries(path("pagemap.img"));
  std::ifstream in(victim);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "keep me");
  EXPECT_TRUE(read_all_images<img::PagemapEntry>(path("pagemap.img"), ImageKind::pagemap));
}

TEST_F(ImageIoTest, PublishReplacesAPreviousCheckpointAndLeavesOtherFiles) {
  ImageDir dir(dir_);
  for (auto name : {"inventory.img", "core-5.img", "shmem-2.data"}) std::ofstream(path(name)) << "old";
  std::ofstream(path("notes.txt")) << "mine";
  {
    ImageSet images(dir);
    img::Inventory inv;
    inv.set_root_pid(7);
    img::ProcessCore core;
    core.set_pid(7);
    ASSERT_TRUE(images.write(dir.core(7), ImageKind::core, std::vector<img::ProcessCore>{core}));
    ASSERT_TRUE(images.write(dir.inventory(), ImageKind::inventory, std::vector<img::Inventory>{inv}));
    // Nothing changed before publish().
    EXPECT_TRUE(std::filesystem::exists(path("core-5.img")));
    EXPECT_FALSE(std::filesystem::exists(path("core-7.img")));
    ASSERT_TRUE(images.publish());
  }
  EXPECT_FALSE(std::filesystem::exists(path("core-5.img")));
  EXPECT_FALSE(std::filesystem::exists(path("shmem-2.data")));
  EXPECT_TRUE(std::filesystem::exists(path("core-7.img")));
  EXPECT_TRUE(std::filesystem::exists(path("notes.txt")));
  auto inv = read_single_image<img::Inventory>(path("inventory.img"), ImageKind::inventory);
  ASSERT_TRUE(inv) << inv.error().what();
  EXPECT_EQ(inv->root_pid(), 7u);
}

TEST_F(ImageIoTest, ASetNotPublishedLeavesNothing) {
  ImageDir dir(dir_);
  {
    ImageSet images(dir);
    img::ProcessCore core;
    core.set_pid(7);
    ASSERT_TRUE(images.write(dir.core(7), ImageKind::core, std::vector<img::ProcessCore>{core}));
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir_));
}
