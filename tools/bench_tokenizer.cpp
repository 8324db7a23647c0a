// bench_tokenizer: encoding speed of intellect's tokenizer on a text file, at
// 1 and N threads, in the form tools/bench_tokenizer_hf.py measures HF
// tokenizers and tiktoken (documents cut after every blank line, no BOS), plus
// encode_parallel of the whole file as one text.
//
//   bench_tokenizer FILE [--tokenizer SPEC] [--threads N] [--repeat R]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "data/tokenizer.h"
#include "util/error.h"
#include "util/file.h"

namespace {

constexpr const char* kUsage =
    "usage: bench_tokenizer FILE [--tokenizer SPEC] [--threads N] [--repeat R]\n"
    "  --tokenizer SPEC  default ../shared/data/llama3/tokenizer.json\n"
    "  --threads N       the multi-threaded runs' thread count (default 0 = all cores)\n"
    "  --repeat R        runs per measurement; the best is reported (default 3)\n";

// The same cut as bench_tokenizer_hf.py: re.split(r"(?<=\n\n)", text).
std::vector<std::string_view> split_documents(std::string_view text) {
  std::vector<std::string_view> docs;
  size_t begin = 0;
  for (size_t p = 2; p < text.size(); ++p)
    if (text[p - 1] == '\n' && text[p - 2] == '\n') {
      docs.push_back(text.substr(begin, p - begin));
      begin = p;
    }
  if (begin < text.size()) docs.push_back(text.substr(begin));
  return docs;
}

template <class F>
double best_seconds(int repeat, F&& f) {
  double best = 1e30;
  for (int r = 0; r < repeat; ++r) {
    const auto start = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::string file, spec = "../shared/data/llama3/tokenizer.json";
  int threads = 0, repeat = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "bench_tokenizer: " << a << " needs a value\n\n" << kUsage;
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--tokenizer") spec = value();
    else if (a == "--threads") threads = std::atoi(value().c_str());
    else if (a == "--repeat") repeat = std::max(1, std::atoi(value().c_str()));
    else if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    } else if (!a.empty() && a[0] != '-' && file.empty()) file = a;
    else {
      std::cerr << "bench_tokenizer: unknown argument '" << a << "'\n\n" << kUsage;
      return 2;
    }
  }
  if (file.empty()) {
    std::cerr << "bench_tokenizer: no input file\n\n" << kUsage;
    return 2;
  }
  try {
    const auto load_start = std::chrono::steady_clock::now();
    const auto tok = intellect::load_tokenizer(spec);
    const double load_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
    const std::string text = intellect::read_text_file(file);
    const auto docs = split_documents(text);
    const int n = intellect::resolve_threads(threads);
    const double mb = double(text.size()) / 1e6;
    std::printf("%s: %zu bytes, %zu documents; tokenizer %s (loaded in %.2f s)\n", file.c_str(),
                text.size(), docs.size(), tok->name().c_str(), load_s);

    size_t tokens = 0;
    auto report = [&](const char* what, int t, double s) {
      std::printf("intellect %-16s %2d thread%s: %8.2f MB/s  %6.2f Mtok/s  (%zu tokens, %.3f s)\n", what,
                  t, t == 1 ? " " : "s", mb / s, double(tokens) / s / 1e6, tokens, s);
    };
    for (int t : {1, n}) {
      const double s = best_seconds(repeat, [&] {
        const auto out = tok->encode_batch(docs, false, t);
        tokens = 0;
        for (const auto& d : out) tokens += d.size();
      });
      report("encode_batch", t, s);
      if (n == 1) break;
    }
    for (int t : {1, n}) {
      const double s = best_seconds(repeat, [&] { tokens = tok->encode_parallel(text, false, t).size(); });
      report("encode_parallel", t, s);
      if (n == 1) break;
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_tokenizer: " << e.what() << "\n";
    return 1;
  }
}
