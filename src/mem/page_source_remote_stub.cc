// Stands in for the page server client (branch pagesrv) in this build; the
// lead drops this file when both branches meet.
#include "mem/page_source.hpp"

namespace minicriu {

Result<std::unique_ptr<PageSource>> connect_page_server(const std::string&, uint16_t) {
  return fail("page server support is not in this build");
}

}  // namespace minicriu
