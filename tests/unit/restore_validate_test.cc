// Restore's image validation on checkpoints built in memory.
#include <cstring>

#include "kinds/kind_set.hpp"
#include "restorer/validate.hpp"

// After the images' headers: <signal.h> (through gtest) defines a sigmask() macro.
#include <gtest/gtest.h>

namespace minicriu {
namespace {

constexpr uint64_t kXcr0 = 0xe7;
constexpr uint32_t kXsave = 1024;

MachineInfo machine() {
  MachineInfo m;
  m.page_size = 4096;
  m.xcr0 = kXcr0;
  m.xsave_size = kXsave;
  m.vdso_size = 0x2000;
  m.vvar_size = 0x4000;
  m.vvar_vclock_size = 0x2000;
  return m;
}

img::Vma* add_vma(img::MmCore& mm, uint64_t start, uint64_t end, img::VmaKind kind, bool pages,
                  const char* path = "") {
  img::Vma* v = mm.add_vmas();
  v->set_start(start);
  v->set_end(end);
  v->set_kind(kind);
  v->set_has_pages(pages);
  v->set_prot(3);
  v->set_path(path);
  return v;
}

img::ThreadCore* add_thread(ProcessImages& p, uint32_t tid) {
  p.entry.add_tids(tid);
  img::ThreadCore* t = p.core.add_threads();
  t->set_tid(tid);
  t->mutable_regs()->set_cs(0x33);
  t->mutable_regs()->set_ss(0x2b);
  std::string xs(kXsave, '\0');
  std::memcpy(xs.data() + 464, &kXcr0, sizeof(kXcr0));
  t->set_xsave(xs);
  return t;
}

Checkpoint valid() {
  Checkpoint c;
  c.inventory.set_root_pid(100);
  c.inventory.set_page_size(4096);
  c.inventory.set_xsave_size(kXsave);
  c.inventory.set_xsave_features(kXcr0);
  img::FileEntry root;
  root.set_id(1);
  root.mutable_reg()->set_path("/");
  c.files.push_back(root);
  img::FileEntry data;
  data.set_id(2);
  data.mutable_reg()->set_path("/tmp/data");
  c.files.push_back(data);

  ProcessImages p;
  p.entry.set_pid(100);
  p.core.set_pid(100);
  p.core.set_cwd_file_id(1);
  p.core.set_root_file_id(1);
  add_thread(p, 100);
  add_thread(p, 101);
  add_vma(p.mm, 0x400000, 0x402000, img::VMA_ANON_PRIVATE, true);
  add_vma(p.mm, 0x402000, 0x404000, img::VMA_ANON_PRIVATE, true);
  add_vma(p.mm, 0x500000, 0x501000, img::VMA_FILE_PRIVATE, false, "/bin/true");
  add_vma(p.mm, 0x7f0000000000, 0x7f0000004000, img::VMA_VVAR, false, "[vvar]");
  add_vma(p.mm, 0x7f0000004000, 0x7f0000006000, img::VMA_VVAR_VCLOCK, false, "[vvar_vclock]");
  add_vma(p.mm, 0x7f0000006000, 0x7f0000008000, img::VMA_VDSO, false, "[vdso]");
  img::PagemapEntry run;
  run.set_vaddr(0x401000);  // spans the two adjacent anonymous VMAs
  run.set_nr_pages(2);
  p.pagemap.push_back(run);
  p.pages_file_size = 2 * 4096;
  p.pages_path = "pages-100.img";
  img::FdEntry fd;
  fd.set_fd(3);
  fd.set_file_id(2);
  p.fds.push_back(fd);
  c.processes.push_back(std::move(p));
  return c;
}

std::string error_of(const Checkpoint& c, const MachineInfo& m = machine()) {
  auto st = validate_checkpoint(c, m, KindSet::make());
  return st ? "" : st.error().message();
}

TEST(RestoreValidate, AcceptsAConsistentCheckpoint) { EXPECT_EQ(error_of(valid()), ""); }

TEST(RestoreValidate, RejectsAnEmptyPstree) {
  Checkpoint c = valid();
  c.processes.clear();
  EXPECT_NE(error_of(c).find("no process"), std::string::npos);
}

TEST(RestoreValidate, RejectsATruncatedPageImage) {
  Checkpoint c = valid();
  c.processes[0].pages_file_size -= 4096;
  EXPECT_NE(error_of(c).find("truncated or mismatched page image"), std::string::npos);
}

TEST(RestoreValidate, RejectsARunOutsideEveryVma) {
  Checkpoint c = valid();
  c.processes[0].pagemap[0].set_vaddr(0x403000);  // runs past 0x404000
  EXPECT_NE(error_of(c).find("not inside VMAs"), std::string::npos);
}

TEST(RestoreValidate, RejectsARunInAVmaWithoutPages) {
  Checkpoint c = valid();
  c.processes[0].pagemap[0].set_vaddr(0x500000);
  c.processes[0].pagemap[0].set_nr_pages(1);
  c.processes[0].pages_file_size = 4096;
  EXPECT_NE(error_of(c).find("marked without pages"), std::string::npos);
}

TEST(RestoreValidate, RejectsOverlappingVmas) {
  Checkpoint c = valid();
  c.processes[0].mm.mutable_vmas(1)->set_start(0x401000);
  EXPECT_NE(error_of(c).find("overlaps"), std::string::npos);
}

TEST(RestoreValidate, RejectsAThreadCountMismatch) {
  Checkpoint c = valid();
  c.processes[0].entry.add_tids(102);
  EXPECT_NE(error_of(c).find("thread(s) in the core image"), std::string::npos);
}

TEST(RestoreValidate, RejectsAnotherCpusXsaveLayout) {
  MachineInfo m = machine();
  m.xcr0 = 0x7;
  EXPECT_NE(error_of(valid(), m).find("does not match this CPU"), std::string::npos);
  m = machine();
  m.xsave_size = 2432;
  EXPECT_NE(error_of(valid(), m).find("does not match this CPU"), std::string::npos);
}

TEST(RestoreValidate, RejectsAThreadXsaveOfAnotherXcr0) {
  Checkpoint c = valid();
  std::string xs = c.processes[0].core.threads(1).xsave();
  xs[464] = 0x07;
  c.processes[0].core.mutable_threads(1)->set_xsave(xs);
  EXPECT_NE(error_of(c).find("saved with XCR0"), std::string::npos);
}

TEST(RestoreValidate, RejectsADifferentVdsoSize) {
  MachineInfo m = machine();
  m.vdso_size = 0x3000;
  EXPECT_NE(error_of(valid(), m).find("vDSO proxy"), std::string::npos);
}

TEST(RestoreValidate, RejectsAnFdOfAMissingFile) {
  Checkpoint c = valid();
  c.processes[0].fds[0].set_file_id(9);
  EXPECT_NE(error_of(c).find("not in files.img"), std::string::npos);
}

TEST(RestoreValidate, RejectsA32BitThread) {
  Checkpoint c = valid();
  c.processes[0].core.mutable_threads(0)->mutable_regs()->set_cs(0x23);
  EXPECT_NE(error_of(c).find("32-bit"), std::string::npos);
}

}  // namespace
}  // namespace minicriu
