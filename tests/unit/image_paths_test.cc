// Paths in images are checked before a restore uses them to create, rename
// or remove files.
#include <gtest/gtest.h>

#include "base/paths.hpp"
#include "images/checkpoint.hpp"
#include "kinds/kind_set.hpp"

using namespace minicriu;

namespace {

// Every kind loads what the checkpoint says; the first refusal, or none.
Status load_all(const Checkpoint& c) {
  RestoreOptions options;
  ImageDir dir("/nonexistent");
  Logger log;
  RestoreEnv env{options, dir, c, log};
  KindSet kinds = KindSet::make();
  for (auto& k : kinds.kinds()) {
    Status st = k->load(env);
    // Kinds with images of their own find none here: only the paths count.
    if (!st && st.error().what().find("cannot open image") != std::string::npos) continue;
    if (!st) return st;
  }
  return {};
}

}  // namespace

TEST(ImagePaths, CanonicalAbsolutePaths) {
  EXPECT_TRUE(is_canonical_path("/tmp/a/b"));
  EXPECT_FALSE(is_canonical_path("tmp/a"));
  EXPECT_FALSE(is_canonical_path("/tmp/../etc/passwd"));
  EXPECT_FALSE(is_canonical_path("/tmp/./x"));
  EXPECT_FALSE(is_canonical_path("/tmp/.."));
  EXPECT_TRUE(is_canonical_path("/tmp/..hidden"));
  EXPECT_EQ(path_basename("/a/b/.minicriu-link-1-2"), ".minicriu-link-1-2");
}

TEST(ImagePaths, OnlyALinkRemapMinicriuMadeIsRemovedAfterTheRestore) {
  Checkpoint c;
  img::FileEntry f;
  f.set_id(4);
  f.mutable_reg()->set_path("/tmp/.minicriu-link-801-1234");
  f.mutable_reg()->set_remove_after_restore(true);
  c.files.push_back(f);
  EXPECT_TRUE(load_all(c));
  for (const char* bad : {"/etc/passwd", "/tmp/../etc/.minicriu-link-1-2", "relative/.minicriu-link-1-2"}) {
    c.files[0].mutable_reg()->set_path(bad);
    auto st = load_all(c);
    ASSERT_FALSE(st) << bad;
    EXPECT_NE(st.error().what().find("is not a link remap minicriu makes"), std::string::npos) << st.error().what();
  }
}
