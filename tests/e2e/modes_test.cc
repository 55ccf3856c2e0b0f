// Every test program in the two modes that need no restore: plain (no
// checkpoint at all: proves the program and its own checks) and after a
// --leave-running dump (the dump changed nothing it can see). The restore mode
// of each is in restore_test.cc, ghost_test.cc, anonfds_test.cc and pty_test.cc.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "e2e_util.hpp"

using namespace e2e;

namespace {

struct Case {
  std::string program;
  std::vector<std::string> args;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.program;
  for (auto& a : c.args) *os << " " << a;
}

std::string name_of(const testing::TestParamInfo<Case>& info) {
  std::string n = info.param.program;
  for (auto& a : info.param.args) n += "_" + a;
  for (char& c : n)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return n;
}

class EveryProgram : public testing::TestWithParam<Case> {};

}  // namespace

TEST_P(EveryProgram, VerifiesItselfWithoutCheckpoint) {
  TempDir dir;
  Program p(GetParam().program, dir, GetParam().args);
  ASSERT_TRUE(p.wait_ready());
  expect_intact(p);
}

TEST_P(EveryProgram, IsIntactAfterALeaveRunningDump) {
  TempDir dir;
  Program p(GetParam().program, dir, GetParam().args);
  ASSERT_TRUE(p.wait_ready());
  ASSERT_NO_FATAL_FAILURE(dump_leave_running(p, images_dir(dir)));
  expect_intact(p);
}

// The dumps that read pages with the tree running: a pre-dump, then a
// background dump on top of it. Neither may harm the program (the "cow"
// program checks that its pages are still shared with its child: a read
// that pins pages would have copied them).
TEST_P(EveryProgram, IsIntactAfterAPreDumpThenABackgroundDump) {
  TempDir dir;
  Program p(GetParam().program, dir, GetParam().args);
  ASSERT_TRUE(p.wait_ready());
  std::string pid = std::to_string(p.pid());
  auto pre = run_minicriu({"pre-dump", "-t", pid, "-D", images_dir(dir, "pre")});
  ASSERT_EQ(pre.status, 0) << pre.output;
  auto bg = run_minicriu({"dump", "-t", pid, "-D", images_dir(dir), "-R", "--background", "--prev-images-dir",
                          "../pre"});
  ASSERT_EQ(bg.status, 0) << bg.output;
  expect_intact(p);
}

INSTANTIATE_TEST_SUITE_P(
    Programs, EveryProgram,
    testing::Values(Case{"basic", {}}, Case{"threads", {}}, Case{"tree", {"extras"}},
                    Case{"ghost", {"shared"}}, Case{"ghost", {"sparse"}}, Case{"ghost", {"linked-other"}},
                    Case{"pipes", {}}, Case{"shm", {}}, Case{"sysv", {}}, Case{"timers", {}},
                    Case{"kinds", {}}, Case{"anonfds", {"no-child"}}, Case{"creds", {}}, Case{"cow", {}}, Case{"many_threads", {}},
                    Case{"restore_single", {}}, Case{"restore_threads", {}},
                    Case{"tcpstream", {"pair", "v4"}}, Case{"tcpstream", {"pair", "v6"}},
                    Case{"tcpstream", {"pair", "mapped"}}, Case{"udp", {}}, Case{"tcphalf", {}},
                    Case{"pty", {}}, Case{"unixnamed", {"nopending"}}, Case{"unixdgram", {}},
                    Case{"opath", {}}, Case{"sockopts", {}}, Case{"locks", {}}, Case{"sigio", {}},
                    Case{"shared", {}}, Case{"seccomp", {}}, Case{"seccomp", {"strict"}},
                    Case{"procattr", {}}, Case{"timer_tid", {}},
                    Case{"memfdmore", {}}, Case{"madvise", {}}, Case{"mprot", {}}, Case{"filecow", {}},
                    Case{"unixscm", {}}, Case{"rawsocks", {}}, Case{"tcpsyn", {}}, Case{"unixgone", {}},
                    Case{"deleted", {}}, Case{"rootns", {}}, Case{"pidfds", {}}, Case{"epollgone", {}},
                    Case{"pty", {"queued"}}, Case{"ptyqueue", {"canon"}}, Case{"ptyqueue", {"raw"}}, Case{"aio", {}},
                    Case{"inotifygone", {}}, Case{"ksm", {}}, Case{"fanotify", {}}, Case{"pktring", {}}),
    name_of);
