#include "man_page.hpp"

#include <sstream>

namespace minicriu::cli {

namespace {

// Text as troff prints it: backslashes escaped, hyphens as hyphens (not
// typographic dashes), a line that starts with a control character made
// plain.
std::string roff(const std::string& text) {
  std::string out;
  bool line_start = true;
  for (char c : text) {
    if (line_start && (c == '.' || c == '\'')) out += "\\&";
    if (c == '\\') out += "\\e";
    else if (c == '-') out += "\\-";
    else out += c;
    line_start = c == '\n';
  }
  return out;
}

void options(std::ostringstream& out, const CLI::App& app) {
  for (const CLI::Option* opt : app.get_options()) {
    if (opt->get_group().empty()) continue;  // hidden
    out << ".TP\n\\fB" << roff(opt->get_name(false, true)) << "\\fR";
    if (!opt->get_type_name().empty()) out << " \\fI" << roff(opt->get_type_name()) << "\\fR";
    out << "\n" << roff(opt->get_description()) << (opt->get_required() ? " (required)" : "") << "\n";
  }
}

// A footer of examples: one line each, kept as written.
void examples(std::ostringstream& out, const std::string& footer) {
  if (footer.empty()) return;
  out << ".PP\n.nf\n" << roff(footer) << "\n.fi\n";
}

}  // namespace

std::string man_page(const CLI::App& app, const std::string& version) {
  std::ostringstream out;
  out << ".TH MINICRIU 1 \"\" \"minicriu " << roff(version) << "\" \"User Commands\"\n";
  out << ".SH NAME\nminicriu \\- " << roff(app.get_description().substr(app.get_description().find(": ") + 2))
      << "\n";
  out << ".SH SYNOPSIS\n.B minicriu\n[\\fIoptions\\fR] \\fIcommand\\fR [\\fIcommand options\\fR]\n";
  out << ".SH DESCRIPTION\n" << roff(app.get_description()) << ".\n";
  out << ".SH OPTIONS\n";
  options(out, app);
  out << ".SH COMMANDS\n";
  for (const CLI::App* cmd : app.get_subcommands({})) {
    out << ".SS \"minicriu " << roff(cmd->get_name()) << "\"\n" << roff(cmd->get_description()) << ".\n";
    options(out, *cmd);
    examples(out, cmd->get_footer());
  }
  out << ".SH EXAMPLES\n";
  examples(out, app.get_footer());
  out << ".SH EXIT STATUS\n0 on success; 1 on failure, with one line on stderr that says what failed and "
         "what to do. \\fBrestore\\fR without \\fB\\-d\\fR exits with the restored root's status.\n";
  out << ".SH SEE ALSO\n\\fBgdb\\fR(1)\n";
  return out.str();
}

}  // namespace minicriu::cli
