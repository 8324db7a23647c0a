// make_corpus: writes a byte-tokenized training corpus as llm.c-format token
// shards, either generated (the default corpus intellect trains on out of the
// box) or from the user's own text files.
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "util/cli.h"
#include "data/synthetic_corpus.h"
#include "util/error.h"

namespace {

constexpr const char* kUsage =
    "usage: make_corpus --out DIR [--docs N] [--seed S] [--val-docs M] [--shard-tokens T]\n"
    "       make_corpus --out DIR --input FILE... [--val-docs M] [--shard-tokens T]\n"
    "\n"
    "Writes DIR/train_000000.bin ..., DIR/val_000000.bin ... (llm.c Llama-3 token\n"
    "shards, byte tokens, each document as BOS + bytes + EOS) and DIR/manifest.json.\n"
    "\n"
    "  --out DIR           output directory (created if missing)\n"
    "  --docs N            generated training documents (default 20000)\n"
    "  --seed S            generator seed (default 1)\n"
    "  --val-docs M        validation documents (default 200 when generating;\n"
    "                      with --input, the last M files, default 0)\n"
    "  --shard-tokens T    tokens per shard at most (default 4000000)\n"
    "  --input FILE...     use these text files, one document each, instead of\n"
    "                      the generated corpus\n";

using intellect::ArgCursor;
using intellect::UsageError;
using intellect::parse_count;

intellect::CorpusOptions parse_args(int argc, char** argv) {
  intellect::CorpusOptions o;
  bool have_out = false, have_docs = false, have_seed = false, have_val = false;
  ArgCursor args(argc, argv);
  while (args.next()) {
    const std::string flag = args.flag();
    auto take = [&] { return args.value(); };
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else if (flag == "--out") {
      o.out_dir = take();
      have_out = true;
    } else if (flag == "--docs") {
      o.docs = parse_count(flag, take());
      have_docs = true;
    } else if (flag == "--seed") {
      o.seed = parse_count(flag, take());
      have_seed = true;
    } else if (flag == "--val-docs") {
      o.val_docs = parse_count(flag, take());
      have_val = true;
    } else if (flag == "--shard-tokens") {
      o.shard_tokens = parse_count(flag, take());
    } else if (flag == "--input") {
      for (std::string& f : args.values("file")) o.inputs.push_back(std::move(f));
    } else {
      throw UsageError{"unknown argument '" + args.raw() + "'"};
    }
  }
  if (!have_out || o.out_dir.empty()) throw UsageError{"--out DIR is required"};
  if (!o.inputs.empty()) {
    if (have_docs || have_seed)
      throw UsageError{"--docs and --seed are for the generated corpus; they do not go with --input"};
    if (!have_val) o.val_docs = 0;
  } else if (o.docs == 0) {
    throw UsageError{"--docs must be at least 1"};
  }
  if (o.shard_tokens == 0) throw UsageError{"--shard-tokens must be at least 1"};
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  intellect::CorpusOptions options;
  try {
    options = parse_args(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "make_corpus: " << e.message << "\n\n" << kUsage;
    return 2;
  }
  try {
    const auto start = std::chrono::steady_clock::now();
    const intellect::CorpusSummary s = intellect::write_corpus(options, &std::cerr);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr,
                 "make_corpus: wrote %llu training documents (%llu tokens, shards: %zu) and %llu "
                 "validation documents (%llu tokens, shards: %zu) to %s in %.1f s\n",
                 static_cast<unsigned long long>(s.train_docs),
                 static_cast<unsigned long long>(s.train_tokens), s.train_shards.size(),
                 static_cast<unsigned long long>(s.val_docs),
                 static_cast<unsigned long long>(s.val_tokens), s.val_shards.size(),
                 options.out_dir.c_str(), seconds);
    if (s.val_docs == 0)
      std::fprintf(stderr, "make_corpus: no validation set (give --val-docs M to hold out the last M files)\n");
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "make_corpus: " << e.what() << "\n";
    return 1;
  }
}
