#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "images/image_io.hpp"
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
