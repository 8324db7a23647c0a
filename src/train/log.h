// What the training loop and its components (OuterSync) print on stderr, and
// the wall clock they time their parts with. Owned by no thread: plain
// functions, safe from any.
#pragma once
#include <chrono>
#include <cstdio>
#include <string>

namespace intellect {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// One "intellect: ..." line on stderr.
inline void note(const std::string& msg) { std::fprintf(stderr, "intellect: %s\n", msg.c_str()); }

}  // namespace intellect
