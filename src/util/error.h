// Errors: every failure a user can cause is reported as intellect::Error
// with a message that says what was wrong, where, and what to do.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace intellect {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class... A>
std::string str(const A&... a) {
  std::ostringstream s;
  (s << ... << a);
  return s.str();
}

template <class... A>
[[noreturn]] void fail(const A&... a) {
  throw Error(str(a...));
}

// Internal invariant; a failure is a bug in intellect, not in the input.
#define INTELLECT_CHECK(cond, ...)                                                    \
  do {                                                                                \
    if (!(cond))                                                                      \
      ::intellect::fail("internal check failed at ", __FILE__, ":", __LINE__, ": ",  \
                        #cond, " ", ##__VA_ARGS__);                                  \
  } while (0)

}  // namespace intellect
