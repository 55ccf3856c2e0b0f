// Looking inside a checkpoint without restoring it: `show --backtrace` names
// the function each thread of tests/programs/parked.c was parked in, `coredump`
// writes core files on which gdb shows the same threads and frames and prints
// a global and locals, a binary changed or gone since the dump is said per
// frame, and corrupted or partial images give one error line, never a crash.
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>

#include "e2e_util.hpp"
#include "images/image_io.hpp"
#include "minicriu.pb.h"

using namespace e2e;
namespace fs = std::filesystem;

namespace {

// The functions parked.c parks its threads in, one per thread: the main
// thread first, each of the others in one of the rest.
const std::vector<std::string> kParkedIn = {"park_main", "park_reader", "park_waiter", "park_spinner",
                                            "park_handler"};

minicriu::img::CheckpointView show_backtrace_json(const std::string& images) {
  auto r = run_minicriu({"show", "--json", "--backtrace", "-D", images});
  minicriu::img::CheckpointView view;
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(r.output, &view).ok()) << r.output;
  return view;
}

// Which of kParkedIn appear in a stack.
std::set<std::string> parked_functions(const minicriu::img::ThreadStack& stack) {
  std::set<std::string> out;
  for (auto& f : stack.frames())
    for (auto& name : kParkedIn)
      if (f.function() == name) out.insert(name);
  return out;
}

// A dump of parked, left running (the caller checks it is intact).
struct ParkedDump {
  TempDir dir;
  std::string images;
  std::unique_ptr<Program> program;

  explicit ParkedDump(const std::string& binary = "parked") {
    images = images_dir(dir);
    program = std::make_unique<Program>(binary, dir);
  }
  bool dump() {
    if (!program->wait_ready()) return false;
    dump_leave_running(*program, images);
    return !::testing::Test::HasFatalFailure();
  }
};

std::string gdb_bin() { return GDB_BIN; }

}  // namespace

TEST(Backtrace, ParkedProgramVerifiesItselfWithoutCheckpoint) {
  TempDir dir;
  Program p("parked", dir);
  ASSERT_TRUE(p.wait_ready());
  p.signal(SIGUSR1);
  EXPECT_EQ(p.wait_exit().value_or(-1), 0) << p.log();
}

TEST(Backtrace, ShowNamesTheFunctionEachThreadIsParkedIn) {
  ParkedDump d;
  ASSERT_TRUE(d.dump());
  auto view = show_backtrace_json(d.images);
  ASSERT_EQ(view.processes_size(), 1);
  const auto& proc = view.processes(0);
  ASSERT_EQ(proc.stacks_size(), 5);
  // The leader waits in park_main; every other thread is in a function of its
  // own (the signalled one in park_handler, above the signal frame).
  EXPECT_EQ(proc.stacks(0).tid(), proc.pstree().pid());
  EXPECT_EQ(parked_functions(proc.stacks(0)), std::set<std::string>{"park_main"});
  std::set<std::string> seen{"park_main"};
  for (int i = 1; i < proc.stacks_size(); i++) {
    auto names = parked_functions(proc.stacks(i));
    ASSERT_EQ(names.size(), 1u) << "thread " << proc.stacks(i).tid();
    EXPECT_TRUE(seen.insert(*names.begin()).second) << *names.begin() << " twice";
  }
  EXPECT_EQ(seen.size(), kParkedIn.size());
  for (auto& stack : proc.stacks()) {
    EXPECT_TRUE(stack.stop_reason().empty()) << stack.stop_reason();
    for (auto& f : stack.frames())
      if (f.function().rfind("park_", 0) == 0) {
        EXPECT_TRUE(f.source_file().ends_with("parked.c")) << f.function() << " in " << f.source_file();
        EXPECT_GT(f.line(), 0u) << f.function();
        EXPECT_TRUE(f.module().ends_with("/parked")) << f.module();
      }
  }
  // The same in words: function+offset (file:line) per frame, and the signal frame.
  auto text = run_minicriu({"show", "--backtrace", "-D", d.images});
  ASSERT_EQ(text.status, 0) << text.output;
  for (auto& name : kParkedIn) EXPECT_NE(text.output.find(name + "+0x"), std::string::npos) << name;
  EXPECT_NE(text.output.find("parked.c:"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("<signal handler called>"), std::string::npos) << text.output;
  expect_intact(*d.program);
}

TEST(Coredump, GdbShowsTheThreadsTheirFramesAGlobalAndLocals) {
  if (::access(gdb_bin().c_str(), X_OK) != 0) GTEST_SKIP() << "no gdb (scripts/setup installs it)";
  ParkedDump d;
  ASSERT_TRUE(d.dump());
  std::string cores = images_dir(d.dir, "cores");
  auto r = run_minicriu({"coredump", "-D", d.images, "--output-dir", cores});
  ASSERT_EQ(r.status, 0) << r.output;
  std::string core = cores + "/core." + std::to_string(d.program->pid());
  ASSERT_TRUE(fs::exists(core)) << r.output;
  std::vector<std::string> gdb{gdb_bin(), "-batch", "-nx", "-iex", "set debuginfod enabled off",
                               "-c", core, program("parked"), "-ex", "thread apply all bt",
                               "-ex", "print/x parked_global"};
  // Each local in the frame that has it, whichever thread that is.
  for (auto local : {"main_local", "reader_local", "waiter_local", "spinner_local", "handler_local",
                     "signalled_local"}) {
    gdb.push_back("-ex");
    gdb.push_back(std::string("thread apply all -s -q frame apply all -s -q print ") + local);
  }
  auto out = run(gdb);
  ASSERT_EQ(out.status, 0) << out.output;
  EXPECT_NE(out.output.find("Thread 5 "), std::string::npos) << out.output;
  for (auto& name : kParkedIn) EXPECT_NE(out.output.find(" in " + name + " ("), std::string::npos) << name;
  EXPECT_NE(out.output.find("<signal handler called>"), std::string::npos) << out.output;
  EXPECT_NE(out.output.find("= 0x5eed1234"), std::string::npos) << out.output;
  for (int v = 1000; v <= 1005; v++) EXPECT_NE(out.output.find("= " + std::to_string(v)), std::string::npos) << v;
  expect_intact(*d.program);
}

// The program runs from a copy that is replaced, then removed, after the
// dump: its frames say so; the others are still named; the core leaves
// the copy's memory out and says so.
TEST(Backtrace, ABinaryChangedOrGoneSinceTheDumpIsSaidPerFrame) {
  TempDir bin;
  std::string copy = bin / "parked";
  fs::copy_file(program("parked"), copy);
  fs::permissions(copy, fs::perms::owner_all);
  ParkedDump d(copy);
  ASSERT_TRUE(d.dump());
  fs::remove(copy);
  { std::ofstream(copy) << "not the binary that was mapped\n"; }
  auto changed = run_minicriu({"show", "--backtrace", "-D", d.images});
  ASSERT_EQ(changed.status, 0) << changed.output;
  EXPECT_NE(changed.output.find(copy + " changed since the dump"), std::string::npos) << changed.output;
  EXPECT_NE(changed.output.find("clock_nanosleep"), std::string::npos) << "libc frames are named still";
  std::string cores = images_dir(d.dir, "cores");
  auto core = run_minicriu({"coredump", "-D", d.images, "-o", cores});
  ASSERT_EQ(core.status, 0) << core.output;
  EXPECT_NE(core.output.find("left out"), std::string::npos) << core.output;
  EXPECT_NE(core.output.find(copy + " changed since the dump"), std::string::npos) << core.output;
  fs::remove(copy);
  auto gone = run_minicriu({"show", "--backtrace", "-D", d.images});
  ASSERT_EQ(gone.status, 0) << gone.output;
  EXPECT_NE(gone.output.find(copy + " is gone since the dump"), std::string::npos) << gone.output;
  expect_intact(*d.program);
}

// Registers that point nowhere (a damaged core image that still decodes):
// the unwinding stops with its reason, the core file is still written.
TEST(Backtrace, RegistersThatPointNowhereStopTheStackNotTheTool) {
  ParkedDump d;
  ASSERT_TRUE(d.dump());
  std::string path = d.images + "/core-" + std::to_string(d.program->pid()) + ".img";
  auto core = minicriu::read_single_image<minicriu::img::ProcessCore>(path, minicriu::ImageKind::core);
  ASSERT_TRUE(core) << core.error().what();
  for (auto& t : *core->mutable_threads()) {
    t.mutable_regs()->set_rip(0x1234);
    t.mutable_regs()->set_rsp(0x7ffffffff000 - 8);
    t.mutable_regs()->set_rbp(0xdeadbeef);
  }
  auto w = minicriu::ImageWriter::create(path, minicriu::ImageKind::core);
  ASSERT_TRUE(w);
  ASSERT_TRUE(w->write(*core));
  ASSERT_TRUE(w->commit());
  auto r = run_minicriu({"show", "--backtrace", "-D", d.images});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("#0  0x0000000000001234 ??"), std::string::npos) << r.output;
  EXPECT_EQ(run_minicriu({"coredump", "-D", d.images, "-o", d.dir.path()}).status, 0);
  expect_intact(*d.program);
}

// Each of show, show --backtrace and coredump on a damaged checkpoint: one
// line that names the directory and what is wrong.
TEST(InspectFails, CorruptedOrPartialImagesGiveOneLine) {
  ParkedDump d;
  ASSERT_TRUE(d.dump());
  std::string pid = std::to_string(d.program->pid());
  struct Damage {
    std::string name, needle;
    std::function<void(const std::string& dir)> apply;
  };
  std::vector<Damage> damages = {
      {"pages truncated", "truncated or mismatched page image",
       [&](const std::string& dir) { fs::resize_file(dir + "/pages-" + pid + ".img", fs::file_size(dir + "/pages-" + pid + ".img") - 4096); }},
      {"core image gone", "core-" + pid + ".img", [&](const std::string& dir) { fs::remove(dir + "/core-" + pid + ".img"); }},
      {"mm image cut short", "mm-" + pid + ".img",
       [&](const std::string& dir) { fs::resize_file(dir + "/mm-" + pid + ".img", fs::file_size(dir + "/mm-" + pid + ".img") / 2); }},
      {"no inventory", "not a complete checkpoint", [&](const std::string& dir) { fs::remove(dir + "/inventory.img"); }},
  };
  for (auto& damage : damages) {
    SCOPED_TRACE(damage.name);
    std::string dir = d.dir / ("damaged-" + std::to_string(&damage - damages.data()));
    fs::copy(d.images, dir);
    damage.apply(dir);
    for (auto args : std::vector<std::vector<std::string>>{
             {"show", "-D", dir}, {"show", "--backtrace", "-D", dir}, {"coredump", "-D", dir, "-o", d.dir.path()}}) {
      SCOPED_TRACE(args[0] + (args[1] == "--backtrace" ? " --backtrace" : ""));
      auto r = run_minicriu(args);
      expect_one_line_error(r, damage.needle);
      EXPECT_NE(r.output.find(dir + " is not a readable checkpoint"), std::string::npos) << r.output;
    }
  }
  expect_intact(*d.program);
}

// Bytes flipped and files cut at random: each command succeeds or says one
// line, none of them dies of a signal.
TEST(InspectFails, RandomDamageNeverCrashes) {
  ParkedDump d;
  ASSERT_TRUE(d.dump());
  std::vector<std::string> files;
  for (auto& e : fs::directory_iterator(d.images)) files.push_back(e.path().filename());
  std::sort(files.begin(), files.end());
  std::mt19937 rng(15);
  for (int round = 0; round < 24; round++) {
    std::string dir = d.dir / ("random-" + std::to_string(round));
    fs::copy(d.images, dir);
    std::string victim = dir + "/" + files[rng() % files.size()];
    auto size = fs::file_size(victim);
    if (round % 3 == 2) {
      fs::resize_file(victim, size ? rng() % size : 0);
    } else if (size) {
      std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
      for (int i = 0; i < 1 + round % 8; i++) {
        f.seekp(static_cast<std::streamoff>(rng() % size));
        f.put(static_cast<char>(rng()));
      }
    }
    SCOPED_TRACE(victim);
    for (auto args : std::vector<std::vector<std::string>>{
             {"show", "-D", dir}, {"show", "--backtrace", "-D", dir}, {"coredump", "-D", dir, "-o", dir}}) {
      auto r = run_minicriu(args);
      EXPECT_TRUE(r.status == 0 || r.status == 1) << args[0] << " exited " << r.status << ": " << r.output;
      if (r.status == 1) {
        EXPECT_EQ(r.output.rfind("minicriu: error: ", 0), 0u) << r.output;
        EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
      }
    }
  }
  expect_intact(*d.program);
}

// The summary counts what the kinds hold; the core files of two processes
// that map an unlinked 64 MiB pool carry the pool from its ghost's data.
TEST(Show, TheSummaryCountsEachKindAndCoresReadGhostData) {
  TempDir dir;
  std::string images = images_dir(dir);
  Program p("ghost", dir, {"shared"});
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images));
  auto view = show_json(images);
  EXPECT_EQ(view.schema_version(), 2u);
  const auto& s = view.summary();
  EXPECT_EQ(s.processes(), 2u);
  EXPECT_EQ(s.threads(), 2u);
  EXPECT_GT(s.image_bytes(), 64u << 20);
  std::map<std::string, uint32_t> fds;
  for (auto& f : s.fds()) fds[f.kind()] = f.fds();
  EXPECT_GE(fds["ghost file"], 1u);
  bool ghosts = false;
  for (auto& o : s.objects())
    if (o.what() == "ghost files") {
      ghosts = true;
      EXPECT_EQ(o.count(), 1u);
      EXPECT_EQ(o.bytes(), 64u << 20);
    }
  EXPECT_TRUE(ghosts);
  bool shared_files = false;
  for (auto& m : s.memory())
    if (m.kind() == "file-shared") shared_files = m.mapped_bytes() >= (64u << 20);
  EXPECT_TRUE(shared_files);
  auto text = run_minicriu({"show", "-D", images});
  ASSERT_EQ(text.status, 0);
  EXPECT_NE(text.output.find("summary: 2 process(es), 2 thread(s)"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("ghost files: 1, 64.0 MiB of data"), std::string::npos) << text.output;

  std::string cores = images_dir(dir, "cores");
  auto r = run_minicriu({"coredump", "-D", images, "-o", cores});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.find("left out"), std::string::npos) << r.output;
  for (auto& proc : view.processes()) {
    std::string core = cores + "/core." + std::to_string(proc.pstree().pid());
    ASSERT_TRUE(fs::exists(core)) << r.output;
    // The pool is written by both processes all over: its pages are data, not holes.
    struct stat st;
    ASSERT_EQ(::stat(core.c_str(), &st), 0);
    EXPECT_GE(static_cast<uint64_t>(st.st_blocks) * 512, 64u << 20) << core;
  }
  expect_intact(p);
}
