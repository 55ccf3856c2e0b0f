// The manual page of the command line, made from the same CLI11 definitions
// as --help (the descriptions, their examples and each command's footer),
// so the two never disagree.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace minicriu::cli {

// A troff page for man(1), section 1.
std::string man_page(const CLI::App& app, const std::string& version);

}  // namespace minicriu::cli
