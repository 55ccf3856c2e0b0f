// The kinds of one dump, restore or show: one fresh instance of every kind
// the registry lists (kinds/registry.cc), in its order, which is the order of
// every phase. The orchestration walks them with each(); it asks which kind
// takes an fd or owns an entry, and never names one.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "base/error.hpp"
#include "kinds/kind.hpp"

namespace minicriu {

class KindSet {
 public:
  // Every registered kind, new.
  static KindSet make();

  KindSet(KindSet&&) = default;
  KindSet& operator=(KindSet&&) = default;

  // Runs phase on every kind in order; stops at the first error. name is the
  // phase's, for fault injection (base/fault.hpp): step NAME/KIND may fail
  // before each kind's call, so a walk of the steps covers every kind.
  [[nodiscard]] Status each(std::string_view name, const std::function<Status(Kind&)>& phase);
  // The same for phases that cannot fail.
  void each_void(const std::function<void(Kind&)>& phase);

  // The kind that takes an fd, or an error that says what the fd is and what
  // to do.
  [[nodiscard]] Result<Kind*> taker(const FdDumpInfo& fd) const;
  // The kind that owns an entry of files.img, or an error.
  [[nodiscard]] Result<Kind*> owner(const img::FileEntry& entry) const;
  // The kind that maps a VMA's object, or null (an ordinary file or memory).
  Kind* mapper(const img::Vma& vma) const;
  // The kind that holds the data of a VMA's object (reads()), or null.
  const Kind* reader(const img::Vma& vma) const;

  // An fd on the entry, opened by its kind.
  [[nodiscard]] Result<UniqueFd> open(const img::FileEntry& entry) const;
  // One line about an entry, by its kind.
  std::string describe(const img::FileEntry& entry) const;

  const std::vector<std::unique_ptr<Kind>>& kinds() const { return kinds_; }

 private:
  KindSet() = default;
  std::vector<std::unique_ptr<Kind>> kinds_;
};

// The registry: a new instance of every kind, in phase order.
std::vector<std::unique_ptr<Kind>> make_registered_kinds();

}  // namespace minicriu
