// Incremental images: pages left in the parent images are found there, up
// the chain; a page the parent lacks, or a page image of the wrong size, is an
// error naming the images.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "images/image_chain.hpp"
#include "images/image_dir.hpp"
#include "images/image_io.hpp"

using namespace minicriu;

namespace {

constexpr pid_t kPid = 42;

img::PagemapEntry entry(uint64_t vaddr, uint32_t pages, bool in_parent = false) {
  img::PagemapEntry e;
  e.set_vaddr(vaddr);
  e.set_nr_pages(pages);
  e.set_in_parent(in_parent);
  return e;
}

class ImageChainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/minicriu-chain-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  // An images dir NAME whose pagemap is entries, page image sized to match
  // (own_pages), parent as its inventory names it.
  img::Inventory make(const std::string& name, const std::vector<img::PagemapEntry>& entries,
                      const std::string& parent, uint64_t own_pages) {
    std::string dir = root_ + "/" + name;
    std::filesystem::create_directory(dir);
    ImageDir d(dir);
    auto w = ImageWriter::create(d.pagemap(kPid), ImageKind::pagemap);
    EXPECT_TRUE(w);
    for (auto& e : entries) EXPECT_TRUE(w->write(e));
    EXPECT_TRUE(w->commit());
    img::Inventory inv;
    inv.set_parent_images(parent);
    inv.set_root_pid(kPid);
    auto iw = ImageWriter::create(d.inventory(), ImageKind::inventory);
    EXPECT_TRUE(iw);
    EXPECT_TRUE(iw->write(inv));
    EXPECT_TRUE(iw->commit());
    std::ofstream(d.pages(kPid)) << std::string(own_pages * 4096, 'x');
    return inv;
  }
  std::string path(const std::string& name) const { return root_ + "/" + name; }

  std::string root_;
};

}  // namespace

TEST_F(ImageChainTest, PagesInTheParentAreFoundUpTheChain) {
  make("1", {entry(0x10000, 4)}, "", 4);
  make("2", {entry(0x10000, 1), entry(0x11000, 3, true)}, "../1", 1);
  auto inv = make("3", {entry(0x12000, 1), entry(0x10000, 2, true), entry(0x13000, 1, true)}, "../2", 1);
  std::vector<img::PagemapEntry> pm = {entry(0x12000, 1), entry(0x10000, 2, true), entry(0x13000, 1, true)};
  auto r = resolve_pages(path("3"), inv, kPid, pm);
  ASSERT_TRUE(r) << r.error().what();
  ASSERT_EQ(r->files.size(), 3u);
  EXPECT_EQ(r->files[0], path("3") + "/pages-42.img");
  ASSERT_EQ(r->runs.size(), 4u);
  // 0x10000: the second image's own page; 0x11000: the first's page 1;
  // 0x12000: this one's; 0x13000: the first's page 3.
  EXPECT_EQ(r->runs[0].start, 0x10000u);
  EXPECT_EQ(r->files[r->runs[0].file], path("3") + "/../2/pages-42.img");
  EXPECT_EQ(r->runs[0].offset, 0u);
  EXPECT_EQ(r->runs[1].start, 0x11000u);
  EXPECT_EQ(r->files[r->runs[1].file], path("3") + "/../2/../1/pages-42.img");
  EXPECT_EQ(r->runs[1].offset, 0x1000u);
  EXPECT_EQ(r->runs[2].start, 0x12000u);
  EXPECT_EQ(r->runs[2].file, 0u);
  EXPECT_EQ(r->runs[3].start, 0x13000u);
  EXPECT_EQ(r->runs[3].offset, 0x3000u);
}

TEST_F(ImageChainTest, APageThatTheParentLacksIsAnError) {
  make("1", {entry(0x10000, 1)}, "", 1);
  std::vector<img::PagemapEntry> pm = {entry(0x10000, 2, true)};
  auto inv = make("2", pm, "../1", 0);
  auto r = resolve_pages(path("2"), inv, kPid, pm);
  ASSERT_FALSE(r);
  EXPECT_NE(std::string(r.error().what()).find("page 0x11000 is left in the parent images"), std::string::npos)
      << r.error().what();
}

TEST_F(ImageChainTest, PagesInAParentThatIsNotNamedAreAnError) {
  std::vector<img::PagemapEntry> pm = {entry(0x10000, 1, true)};
  auto inv = make("2", pm, "", 0);
  auto r = resolve_pages(path("2"), inv, kPid, pm);
  ASSERT_FALSE(r);
  EXPECT_NE(std::string(r.error().what()).find("the inventory names none"), std::string::npos) << r.error().what();
}

TEST_F(ImageChainTest, AParentPageImageOfTheWrongSizeIsAnError) {
  make("1", {entry(0x10000, 2)}, "", 1);  // one page short
  std::vector<img::PagemapEntry> pm = {entry(0x10000, 1, true)};
  auto inv = make("2", pm, "../1", 0);
  auto r = resolve_pages(path("2"), inv, kPid, pm);
  ASSERT_FALSE(r);
  EXPECT_NE(std::string(r.error().what()).find("truncated or mismatched page image"), std::string::npos)
      << r.error().what();
}
