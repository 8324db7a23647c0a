// prepare_data: tokenizes text corpora (.txt, .jsonl, .jsonl.gz, .jsonl.zst)
// into llm.c-format token shards plus a manifest; see src/data/prepare.h.
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "util/cli.h"
#include "data/prepare.h"
#include "util/error.h"

namespace {

constexpr const char* kUsage =
    "usage: prepare_data --tokenizer TOKENIZER --input PATH... --output DIR\n"
    "                    [--shard-tokens N] [--threads N] [--force]\n"
    "\n"
    "Tokenizes documents into DIR/shard_000000.bin ... (llm.c Llama-3 token shards,\n"
    "each document as BOS + ids + EOS, never split across shards unless longer than\n"
    "one) and DIR/manifest.json, written last.\n"
    "\n"
    "  --tokenizer T      \"byte\", a HuggingFace tokenizer.json, a tiktoken\n"
    "                     tokenizer.model, or a directory holding one\n"
    "  --input PATH...    .txt (one document per file), .jsonl, .jsonl.gz, .jsonl.zst\n"
    "                     (one JSON object per line; the document is its \"text\";\n"
    "                     bad lines are reported and skipped)\n"
    "  --output DIR       output directory (created if missing; must hold no shards)\n"
    "  --shard-tokens N   tokens per shard at most (default 100000000)\n"
    "  --threads N        worker threads (default 0 = all cores)\n"
    "  --force            replace shards and manifest already in DIR\n";

using intellect::ArgCursor;
using intellect::UsageError;
using intellect::parse_count;

intellect::PrepareOptions parse_args(int argc, char** argv) {
  intellect::PrepareOptions o;
  bool have_tokenizer = false;
  ArgCursor args(argc, argv);
  while (args.next()) {
    const std::string flag = args.flag();
    auto take = [&] { return args.value(); };
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else if (flag == "--tokenizer") {
      o.tokenizer = take();
      have_tokenizer = true;
    } else if (flag == "--input") {
      for (std::string& f : args.values("file")) o.inputs.push_back(std::move(f));
    } else if (flag == "--output") {
      o.output_dir = take();
    } else if (flag == "--shard-tokens") {
      o.shard_tokens = parse_count(flag, take());
      if (o.shard_tokens == 0) throw UsageError{"--shard-tokens must be at least 1"};
      if (o.shard_tokens > 0x7FFFFFFF) throw UsageError{"--shard-tokens must be at most 2147483647"};
    } else if (flag == "--threads") {
      const uint64_t t = parse_count(flag, take());
      if (t > 4096) throw UsageError{"--threads must be at most 4096"};
      o.threads = static_cast<int>(t);
    } else if (flag == "--force") {
      o.overwrite = true;
    } else {
      throw UsageError{"unknown argument '" + args.raw() + "'"};
    }
  }
  if (!have_tokenizer || o.tokenizer.empty()) throw UsageError{"--tokenizer is required"};
  if (o.inputs.empty()) throw UsageError{"--input PATH... is required"};
  if (o.output_dir.empty()) throw UsageError{"--output DIR is required"};
  return o;
}

extern "C" void on_signal(int sig) {
  intellect::request_prepare_stop();
  std::signal(sig, SIG_DFL);  // a second Ctrl-C ends the process at once
}

}  // namespace

int main(int argc, char** argv) {
  intellect::PrepareOptions options;
  try {
    options = parse_args(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "prepare_data: " << e.message << "\n\n" << kUsage;
    return 2;
  }
  options.log = &std::cerr;
  options.progress_bar = ::isatty(STDERR_FILENO) != 0;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  try {
    const intellect::PrepareSummary s = intellect::prepare_data(options);
    std::fprintf(stderr,
                 "prepare_data: %llu documents, %llu tokens in %zu shards to %s in %.1f s "
                 "(%llu bad lines skipped, %llu documents longer than a shard split)\n",
                 static_cast<unsigned long long>(s.documents),
                 static_cast<unsigned long long>(s.tokens), s.shards.size(),
                 options.output_dir.c_str(), s.seconds,
                 static_cast<unsigned long long>(s.bad_lines),
                 static_cast<unsigned long long>(s.split_documents));
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "\nprepare_data: " << e.what() << "\n";
    return 1;
  }
}
