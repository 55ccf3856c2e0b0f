// What tests/mpi/mpi_ring prints at the end of an undisturbed run.
#pragma once

#include <fmt/format.h>

#include <string>

namespace e2e {

// Sum over iterations and ranks of (rank+1)(it+1)/2, and the tokens: each
// iteration's token comes back as it + 1 + ... + (ranks-1).
inline std::string mpi_ring_answer(int ranks, int iterations) {
  double total = 0.5 * (ranks * (ranks + 1) / 2) * (iterations * (iterations + 1) / 2.0);
  long tokens = static_cast<long>(iterations) * (iterations - 1) / 2 +
                static_cast<long>(iterations) * (ranks * (ranks - 1) / 2);
  return fmt::format("answer {:.1f} tokens {}", total, tokens);
}

}  // namespace e2e
