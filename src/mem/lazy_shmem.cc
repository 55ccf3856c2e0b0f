#include "mem/lazy_shmem.hpp"

#include <fcntl.h>

#include <algorithm>
#include <set>

#include "images/image_io.hpp"
#include "mem/shmem.hpp"

namespace minicriu {

namespace {

// F_SEAL_WRITE, F_SEAL_FUTURE_WRITE: no writable mapping to register.
constexpr uint32_t kWriteSeals = F_SEAL_WRITE | F_SEAL_FUTURE_WRITE;

bool shared_kind(img::VmaKind k) { return k == img::VMA_ANON_SHARED || k == img::VMA_FILE_SHARED; }

// A mapping that lets its object be lazy (lazy_shmem.hpp).
bool lazy_mapping(const img::Vma& v) {
  return shared_kind(v.kind()) && !v.no_may_write() && !v.inherited() &&
         !(v.advice() & (img::ADVICE_LOCKED | img::ADVICE_LOCKONFAULT));
}

LazyRanges merged(LazyRanges r) {
  std::sort(r.begin(), r.end());
  LazyRanges out;
  for (auto& [s, e] : r) {
    if (!out.empty() && s <= out.back().second)
      out.back().second = std::max(out.back().second, e);
    else
      out.emplace_back(s, e);
  }
  return out;
}

}  // namespace

LazyShmemPlan plan_lazy_shmem(const ImageDir& dir, const Checkpoint& c, const std::vector<img::ShmemObject>& objects) {
  std::set<uint32_t> refused;
  for (auto& f : c.files)
    if (f.has_memfd()) refused.insert(f.memfd().shmem_id());
  std::map<uint32_t, LazyRanges> mapped;
  for (auto& p : c.processes) {
    if (p.entry.zombie()) continue;
    for (auto& v : p.mm.vmas()) {
      if (!v.shmem_id()) continue;
      if (!lazy_mapping(v)) {
        refused.insert(v.shmem_id());
        continue;
      }
      mapped[v.shmem_id()].emplace_back(v.pgoff(), v.pgoff() + (v.end() - v.start()));
    }
  }
  LazyShmemPlan plan;
  for (auto& o : objects) {
    if (refused.count(o.id()) || !mapped.count(o.id()) || (o.seals() & kWriteSeals) || !o.allocated()) continue;
    if (o.has_sysv()) continue;
    LazyShmemObject l;
    l.id = o.id();
    l.data = shmem_data_image(dir, o.id());
    l.size = o.size();
    l.mapped = merged(std::move(mapped[o.id()]));
    uint64_t at = 0;
    for (auto& e : o.extents()) {
      l.extents.push_back({e.offset(), e.length(), at});
      at += e.length();
      for (auto& [s, t] : l.mapped) {
        uint64_t a = std::max(s, e.offset()), b = std::min(t, e.offset() + e.length());
        if (a < b) l.lazy_bytes += b - a;
      }
    }
    if (!l.lazy_bytes) continue;
    plan.emplace(o.id(), std::move(l));
  }
  return plan;
}

Result<LazyShmemPlan> plan_lazy_shmem(const ImageDir& dir, const Checkpoint& c) {
  ASSIGN_OR_RETURN(auto objects, read_all_images<img::ShmemObject>(shmem_image(dir), kShmemImage));
  return plan_lazy_shmem(dir, c, objects);
}

bool maps_lazy_shmem(const img::Vma& v, const LazyShmemPlan& plan) {
  return v.shmem_id() && plan.count(v.shmem_id()) && lazy_mapping(v);
}

std::vector<LazyShmemVma> lazy_shmem_vmas(const ProcessImages& p, const LazyShmemPlan& plan) {
  std::vector<LazyShmemVma> out;
  for (auto& v : p.mm.vmas())
    if (maps_lazy_shmem(v, plan)) out.push_back({v.start(), v.end(), v.pgoff(), v.shmem_id()});
  return out;
}

}  // namespace minicriu
