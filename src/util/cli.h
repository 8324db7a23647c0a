// Command-line parsing shared by the tools: "--flag value" and "--flag=value"
// alike, list values ("--input a b c"), and counts with clear messages.
#pragma once
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace intellect {

// A bad command line: the tool prints the message and its usage, exits 2.
struct UsageError {
  std::string message;
};

inline uint64_t parse_count(std::string_view flag, const std::string& value) {
  if (value.empty() || value.find_first_not_of("0123456789") != std::string::npos)
    throw UsageError{std::string(flag) + " needs a non-negative integer, got '" + value + "'"};
  errno = 0;
  const unsigned long long v = std::strtoull(value.c_str(), nullptr, 10);
  if (errno == ERANGE) throw UsageError{std::string(flag) + " value '" + value + "' is too large"};
  return v;
}

class ArgCursor {
 public:
  ArgCursor(int argc, char** argv) : args_(argv + 1, argv + argc) {}

  // Moves to the next argument; false when there is none.
  bool next() {
    if (++i_ >= args_.size()) return false;
    flag_ = args_[i_];
    inline_.clear();
    has_inline_ = false;
    if (const size_t eq = flag_.find('='); flag_.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_ = flag_.substr(eq + 1);
      flag_ = flag_.substr(0, eq);
      has_inline_ = true;
    }
    return true;
  }
  const std::string& flag() const { return flag_; }
  const std::string& raw() const { return args_[i_]; }
  // The flag's value: after '=' or the next argument.
  std::string value() {
    if (has_inline_) return inline_;
    if (i_ + 1 >= args_.size()) throw UsageError{flag_ + " needs a value"};
    return args_[++i_];
  }
  // Every value up to the next flag ("--input a b c"); at least one.
  std::vector<std::string> values(const std::string& what = "value") {
    std::vector<std::string> v;
    if (has_inline_) v.push_back(inline_);
    while (i_ + 1 < args_.size() && args_[i_ + 1].rfind("--", 0) != 0) v.push_back(args_[++i_]);
    if (v.empty()) throw UsageError{flag_ + " needs at least one " + what};
    return v;
  }

 private:
  std::vector<std::string> args_;
  size_t i_ = static_cast<size_t>(-1);
  std::string flag_, inline_;
  bool has_inline_ = false;
};

}  // namespace intellect
