#pragma once

namespace minicriu {
inline constexpr const char* kVersion = "0.1.0";
}
