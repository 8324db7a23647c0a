// What the training loop and its components (OuterSync) print on stderr, and
// the wall clock they time their parts with. Owned by no thread: plain
// functions, safe from any.
#pragma once
#include <chrono>
#include <cstdio>
#include <string>

#include "util/clock.h"

namespace intellect {

using Clock = std::chrono::steady_clock;

// One "intellect: ..." line on stderr.
inline void note(const std::string& msg) { std::fprintf(stderr, "intellect: %s\n", msg.c_str()); }

}  // namespace intellect
