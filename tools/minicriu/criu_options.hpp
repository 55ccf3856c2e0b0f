// The command line of people coming from CRIU: CRIU's spellings that minicriu
// reads differently (-v0..-v4), and CRIU's options that minicriu does not
// have, each refused in one line that names it and says what minicriu does
// instead, rather than CLI11's "argument was not expected".
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <vector>

namespace minicriu::cli {

// CRIU writes its verbosity levels glued to the flag (-v0..-v4); CLI11 reads
// "-v4" as -v and -4. Each becomes "--verbosity=N" (the long name CRIU gives
// it too); every other argument is left as it is.
std::vector<std::string> rewrite_criu_spellings(int argc, char** argv);

// The one-line refusal of the first CRIU option in args that the command
// (a subcommand of app, named by the first argument that is one) does not
// define, or nothing.
std::optional<std::string> unsupported_criu_option(const CLI::App& app, const std::vector<std::string>& args);

// CRIU's level (0..4) as minicriu's: 0 and 1 errors, 2 warnings, 3 info, 4 debug.
int criu_level_to_verbosity(int level);

}  // namespace minicriu::cli
