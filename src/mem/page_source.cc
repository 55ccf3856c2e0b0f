// The local PageSource: the page images of a dump, followed up its
// --prev-images-dir chain (image_chain.hpp resolves every run of pages to a
// file and an offset once per process, when first asked for it).
#include "mem/page_source.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <map>

#include "base/unique_fd.hpp"
#include "images/image_chain.hpp"

namespace minicriu {

namespace {

class LocalPages final : public PageSource {
 public:
  explicit LocalPages(ChainLink link) : link_(std::move(link)) {}

  Result<std::vector<std::pair<uint64_t, uint64_t>>> runs(pid_t pid) override {
    ASSIGN_OR_RETURN(const Process* p, process(pid));
    std::vector<std::pair<uint64_t, uint64_t>> out;
    for (auto& r : p->pages.runs) {
      if (!out.empty() && out.back().second == r.start)
        out.back().second = r.end;
      else
        out.emplace_back(r.start, r.end);
    }
    return out;
  }

  Status read(pid_t pid, uint64_t vaddr, std::span<std::byte> out) override {
    ASSIGN_OR_RETURN(const Process* p, process(pid));
    const auto& runs = p->pages.runs;
    uint64_t at = vaddr, end = vaddr + out.size();
    auto it = std::upper_bound(runs.begin(), runs.end(), at, [](uint64_t a, const PageRun& r) { return a < r.end; });
    while (at < end) {
      if (it == runs.end() || it->start > at)
        return failf("pid {}: {}: no page at {:#x} in the images", pid, describe(), at);
      uint64_t piece = std::min(end, it->end) - at;
      int fd = p->fds[it->file].get();
      uint64_t off = it->offset + (at - it->start);
      std::byte* dst = out.data() + (at - vaddr);
      for (uint64_t done = 0; done < piece;) {
        ssize_t n = ::pread(fd, dst + done, piece - done, static_cast<off_t>(off + done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0)
          return failf_errno("pid {}: cannot read the page at {:#x} from {}", pid, at + done,
                             p->pages.files[it->file]);
        if (n == 0)
          return failf("pid {}: the page at {:#x} is missing: {} ends at offset {}", pid, at + done,
                       p->pages.files[it->file], off + done);
        done += static_cast<uint64_t>(n);
      }
      at += piece;
      ++it;
    }
    return {};
  }

  std::string describe() const override { return fmt::format("images {}", link_.dir); }

 private:
  struct Process {
    ResolvedPages pages;
    std::vector<UniqueFd> fds;  // per pages.files
  };

  Result<const Process*> process(pid_t pid) {
    if (auto it = procs_.find(pid); it != procs_.end()) return &it->second;
    auto pm = link_.pagemap.find(pid);
    if (pm == link_.pagemap.end()) return failf("pid {} is not in the images {}", pid, link_.dir);
    Process p;
    ASSIGN_OR_RETURN(p.pages, resolve_pages(link_.dir, link_.inventory, pid, pm->second));
    for (auto& f : p.pages.files) {
      UniqueFd fd(::open(f.c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd) return failf_errno("pid {}: cannot open {}", pid, f);
      p.fds.push_back(std::move(fd));
    }
    return &procs_.emplace(pid, std::move(p)).first->second;
  }

  ChainLink link_;
  std::map<pid_t, Process> procs_;
};

}  // namespace

Result<std::unique_ptr<PageSource>> open_local_pages(const std::string& dir) {
  ASSIGN_OR_RETURN(ChainLink link, load_chain_link(dir));
  return std::unique_ptr<PageSource>(std::make_unique<LocalPages>(std::move(link)));
}

}  // namespace minicriu
