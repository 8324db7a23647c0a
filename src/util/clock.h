// The wall clock components time their parts with. Plain functions, safe
// from any thread.
#pragma once
#include <chrono>

namespace intellect {

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace intellect
