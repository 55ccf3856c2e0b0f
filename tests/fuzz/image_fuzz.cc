// Hostile images: every reader of a checkpoint (the directory reader, each
// kind's load, show in text and JSON, --backtrace, coredump) is fed images
// that are real ones mutated, and must answer with an error, never crash,
// leak, hang or read out of bounds (built with ASan and UBSan by
// scripts/fuzz).
//
// LLVMFuzzerTestOneInput is libFuzzer's entry point: with clang,
// -fsanitize=fuzzer drives it. Built with g++ (no libFuzzer), main() below
// drives it instead: it replays a corpus (the regression test ctest runs),
// then mutates real images at random for a bounded time (not guided by
// coverage: the honest name is a mutation fuzzer).
//
//   image_fuzz --make-seed DIR             dump a small tree of many kinds into DIR
//   image_fuzz --seed DIR [--image KIND] [--corpus DIR] [--seconds N] [--save DIR]
//   image_fuzz --seed DIR --list           the image kinds of the seed
//
// The input stands for one image file of the seed checkpoint: the first of
// KIND ("core", "mm", "files"...: one target per image kind), or, without
// --image, the file chosen by the input's first byte (the whole-directory
// target).
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "minicriu/minicriu.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define MINICRIU_HAVE_SANITIZER_IFACE 1
#endif

namespace fs = std::filesystem;

namespace {

struct Target {
  std::string work;                 // a copy of the seed, one file replaced per input
  std::vector<std::string> images;  // its image files, sorted
  std::string fixed;                // --image NAME, or empty
  std::vector<std::string> originals;
  unsigned long execs = 0;
};

Target g;

// The kind of an image file: its name without the pid and ".img"
// ("core-1234.img" is "core"), so that a target names the same image in
// every seed.
std::string image_kind(const std::string& name) {
  std::string k = name.size() > 4 && name.ends_with(".img") ? name.substr(0, name.size() - 4) : name;
  auto dash = k.find_last_of('-');
  if (dash != std::string::npos && dash + 1 < k.size() &&
      std::all_of(k.begin() + static_cast<long>(dash) + 1, k.end(), [](char c) { return c >= '0' && c <= '9'; }))
    k.resize(dash);
  return k;
}

// The index of the first image of kind `kind`, or npos.
size_t image_of_kind(const std::string& kind) {
  for (size_t i = 0; i < g.images.size(); ++i)
    if (image_kind(g.images[i]) == kind) return i;
  return std::string::npos;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const fs::path& p, const uint8_t* data, size_t size) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

// The input being run, kept where a crash handler can write it out.
const uint8_t* g_input = nullptr;
size_t g_input_size = 0;
std::string g_save_dir = ".";

void save_input(const char* why) {
  std::string path = g_save_dir + "/" + why + "-input";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd >= 0) {
    if (g_input_size && ::write(fd, g_input, g_input_size) < 0) {}
    ::close(fd);
  }
  std::fprintf(stderr, "image_fuzz: %s; input saved as %s (%zu bytes)\n", why, path.c_str(), g_input_size);
}

void on_alarm(int) {
  save_input("hang");
  std::_Exit(3);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (g.images.empty()) return 0;
  size_t which = 0;
  if (!g.fixed.empty()) {
    which = image_of_kind(g.fixed);
    if (which == std::string::npos) return 0;
  } else {
    if (size == 0) return 0;
    which = data[0] % g.images.size();
    ++data;
    --size;
  }
  fs::path file = fs::path(g.work) / g.images[which];
  write_file(file, data, size);

  minicriu::ShowOptions show;
  show.images_dir = g.work;
  (void)minicriu::show(show);  // an error is the right answer; a crash is not
  show.json = true;
  (void)minicriu::show(show);
  ++g.execs;
  if (g.execs % 8 == 0) {  // the slower readers, less often
    show.json = false;
    show.backtrace = true;
    (void)minicriu::show(show);
    minicriu::CoredumpOptions core;
    core.images_dir = g.work;
    core.output_dir = g.work + ".cores";
    (void)minicriu::coredump(core);
  }
  const std::string& orig = g.originals[which];
  write_file(file, reinterpret_cast<const uint8_t*>(orig.data()), orig.size());
  return 0;
}

namespace {

// A tree holding one of many kinds each, dumped (and killed) to give real
// images to start from.
int make_seed(const std::string& dir) {
  fs::create_directories(dir);
  int ready[2];
  if (::pipe(ready) != 0) return 2;
  pid_t child = ::fork();
  if (child == 0) {
    // Only what it makes itself: no fd of whoever started us (a shell's pipes
    // would be external objects).
    int null = ::open("/dev/null", O_RDWR);
    if (null < 0 || ::dup2(null, 0) < 0 || ::dup2(null, 1) < 0 || ::dup2(null, 2) < 0) ::_exit(2);
    if (::dup2(ready[1], 3) < 0) ::_exit(2);
    ready[1] = 3;
    ::close_range(4, ~0U, 0);
    ::setpgid(0, 0);  // its own group: a failed dump kills the whole of it
    int p[2], s[2];
    if (::pipe(p) != 0 || ::socketpair(AF_UNIX, SOCK_STREAM, 0, s) != 0) ::_exit(2);
    if (::write(p[1], "pipe bytes", 10) != 10 || ::write(s[0], "socket bytes", 12) != 12) ::_exit(2);
    int efd = ::eventfd(7, 0);
    int tfd = ::timerfd_create(CLOCK_MONOTONIC, 0);
    itimerspec its{{1, 0}, {1, 0}};
    ::timerfd_settime(tfd, 0, &its, nullptr);
    (void)efd;
    std::string tmp = dir + ".file";
    int ffd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (ffd < 0 || ::write(ffd, "file data", 9) != 9) ::_exit(2);
    std::thread t([] { for (;;) ::pause(); });
    t.detach();
    pid_t grandchild = ::fork();
    if (grandchild == 0) for (;;) ::pause();
    if (::write(ready[1], "R", 1) != 1) ::_exit(2);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char c;
  if (::read(ready[0], &c, 1) != 1) return 2;
  ::close(ready[0]);
  minicriu::DumpOptions opt;
  opt.pid = child;
  opt.images_dir = dir;
  auto r = minicriu::dump(opt);
  if (!r) {
    std::fprintf(stderr, "image_fuzz: seed dump failed: %s\n", r.error().what().c_str());
    ::kill(-child, SIGKILL);
    ::kill(child, SIGKILL);
  }
  // The grandchild is reparented to us (a subreaper): every process of the
  // tree is dead (the dump killed it, or the kill above), reap them all.
  while (::waitpid(-1, nullptr, 0) > 0) {}
  fs::remove(dir + ".file");
  return r ? 0 : 1;
}

void mutate(std::string& s, std::mt19937_64& rng) {
  auto pick = [&](size_t n) { return n ? static_cast<size_t>(rng() % n) : 0; };
  unsigned rounds = 1 + static_cast<unsigned>(rng() % 4);
  for (unsigned i = 0; i < rounds; ++i) {
    switch (rng() % 8) {
      case 0:  // flip a bit
        if (!s.empty()) s[pick(s.size())] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1: {  // an interesting byte
        static const unsigned char v[] = {0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe};
        if (!s.empty()) s[pick(s.size())] = static_cast<char>(v[rng() % sizeof(v)]);
        break;
      }
      case 2:  // truncate
        s.resize(pick(s.size() + 1));
        break;
      case 3: {  // a varint that says "huge" (lengths, counts)
        static const char huge[] = "\xff\xff\xff\xff\x0f";
        size_t at = pick(s.size() + 1);
        s.insert(at, huge, 5);
        break;
      }
      case 4: {  // duplicate a chunk
        if (s.empty()) break;
        size_t a = pick(s.size()), n = 1 + pick(std::min<size_t>(64, s.size() - a));
        s.insert(pick(s.size() + 1), s.substr(a, n));
        break;
      }
      case 5: {  // erase a chunk
        if (s.empty()) break;
        size_t a = pick(s.size()), n = 1 + pick(std::min<size_t>(64, s.size() - a));
        s.erase(a, n);
        break;
      }
      case 6:  // random bytes
        for (unsigned k = 0, n = 1 + static_cast<unsigned>(rng() % 8); k < n && !s.empty(); ++k)
          s[pick(s.size())] = static_cast<char>(rng());
        break;
      default: {  // a 32-bit field set to a boundary
        if (s.size() < 4) break;
        static const uint32_t v[] = {0, 1, 0x7fffffff, 0x80000000u, 0xffffffffu, 4096, 65536};
        uint32_t x = v[rng() % (sizeof(v) / sizeof(v[0]))];
        std::memcpy(&s[pick(s.size() - 3)], &x, 4);
        break;
      }
    }
  }
}

int run(int argc, char** argv) {
  std::string seed, corpus;
  unsigned seconds = 0;
  bool list = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--make-seed") return make_seed(next());
    else if (a == "--seed") seed = next();
    else if (a == "--image") g.fixed = next();
    else if (a == "--corpus") corpus = next();
    else if (a == "--seconds") seconds = static_cast<unsigned>(std::stoul(next()));
    else if (a == "--save") g_save_dir = next();
    else if (a == "--list") list = true;
    else {
      std::fprintf(stderr, "usage: image_fuzz --make-seed DIR | --seed DIR [--list] [--image KIND] [--corpus DIR] "
                           "[--seconds N] [--save DIR]\n");
      return 2;
    }
  }
  if (seed.empty()) return 2;
  g.work = seed + ".work." + std::to_string(::getpid());
  fs::remove_all(g.work);
  fs::copy(seed, g.work, fs::copy_options::recursive);
  fs::create_directories(g.work + ".cores");
  for (auto& e : fs::directory_iterator(g.work))
    if (e.is_regular_file()) g.images.push_back(e.path().filename().string());
  std::sort(g.images.begin(), g.images.end());
  for (auto& n : g.images) g.originals.push_back(read_file(fs::path(g.work) / n));
  if (list) {
    std::vector<std::string> kinds;
    for (auto& n : g.images) kinds.push_back(image_kind(n));
    std::sort(kinds.begin(), kinds.end());
    kinds.erase(std::unique(kinds.begin(), kinds.end()), kinds.end());
    for (auto& k : kinds) std::printf("%s\n", k.c_str());
    fs::remove_all(g.work);
    fs::remove_all(g.work + ".cores");
    return 0;
  }
  if (!g.fixed.empty() && image_of_kind(g.fixed) == std::string::npos) {
    std::fprintf(stderr, "image_fuzz: %s is not an image of %s\n", g.fixed.c_str(), seed.c_str());
    return 2;
  }
  ::signal(SIGALRM, on_alarm);
#ifdef MINICRIU_HAVE_SANITIZER_IFACE
  __sanitizer_set_death_callback([] { save_input("crash"); });
#endif

  auto one = [&](const std::string& input) {
    g_input = reinterpret_cast<const uint8_t*>(input.data());
    g_input_size = input.size();
    itimerval t{{0, 0}, {10, 0}};  // a hang is a failure too
    ::setitimer(ITIMER_REAL, &t, nullptr);
    LLVMFuzzerTestOneInput(g_input, g_input_size);
    itimerval off{};
    ::setitimer(ITIMER_REAL, &off, nullptr);
  };

  // The starting points: the seed's own images (as the whole-directory target
  // sees them, with their selector byte), and the corpus.
  std::vector<std::string> pool;
  for (size_t i = 0; i < g.images.size(); ++i) {
    if (!g.fixed.empty() && i != image_of_kind(g.fixed)) continue;
    pool.push_back(g.fixed.empty() ? std::string(1, static_cast<char>(i)) + g.originals[i] : g.originals[i]);
  }
  unsigned replayed = 0;
  if (!corpus.empty() && fs::is_directory(corpus)) {
    std::vector<fs::path> files;
    for (auto& e : fs::directory_iterator(corpus))
      if (e.is_regular_file() && !e.path().filename().string().starts_with(".")) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (auto& f : files) {
      std::string in = read_file(f);
      one(in);
      pool.push_back(std::move(in));
      ++replayed;
    }
  }
  for (auto& p : pool) one(p);

  std::mt19937_64 rng(static_cast<uint64_t>(::getpid()) * 7919 + static_cast<uint64_t>(::time(nullptr)));
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  unsigned long mutated = 0;
  while (seconds && std::chrono::steady_clock::now() < end && !pool.empty()) {
    std::string in = pool[rng() % pool.size()];
    if (g.fixed.empty() && !in.empty()) {
      char sel = in[0];
      std::string body = in.substr(1);
      mutate(body, rng);
      in = std::string(1, sel) + body;
    } else {
      mutate(in, rng);
    }
    one(in);
    ++mutated;
  }
  fs::remove_all(g.work);
  fs::remove_all(g.work + ".cores");
  std::printf("image_fuzz %s: %zu images, %u corpus inputs replayed, %lu mutated inputs, %lu executions, "
              "crashes 0\n",
              g.fixed.empty() ? "whole directory" : g.fixed.c_str(), g.images.size(), replayed, mutated, g.execs);
  return 0;
}

}  // namespace

#ifndef MINICRIU_LIBFUZZER
int main(int argc, char** argv) {
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  return run(argc, argv);
}
#endif
