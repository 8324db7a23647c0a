// prepare_data's library half: tokenizes text corpora into token shards.
//
// Inputs are read sequentially in bounded batches; worker threads parse the
// JSON lines and tokenize; the results are written back in input order, so
// the output does not depend on the thread count. Each document becomes
// BOS + ids + EOS and is never split across shards, unless it alone is longer
// than a shard. Shards are DIR/shard_NNNNNN.bin (llm.c format, written
// atomically); DIR/manifest.json is written last, so a directory with a
// manifest is complete.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace intellect {

struct PrepareOptions {
  std::string tokenizer = "byte";  // load_tokenizer spec
  std::vector<std::string> inputs;
  std::string output_dir;
  uint64_t shard_tokens = 100'000'000;
  int threads = 0;                  // 0 = all cores
  bool overwrite = false;           // remove earlier shards/manifest in output_dir first
  std::ostream* log = nullptr;      // bad lines and progress; null = silent
  bool progress_bar = false;        // redraw one line (a terminal) rather than print lines
  double progress_interval_s = 10;  // between plain progress lines
  size_t batch_bytes = 4 << 20;     // input bytes per unit of work
};

struct PrepareSource {
  std::string path, format;
  uint64_t bytes = 0, documents = 0, bad_lines = 0, tokens = 0;
};

struct PrepareShard {
  std::string file;  // name inside output_dir
  uint64_t tokens = 0;
};

struct PrepareSummary {
  std::vector<PrepareSource> sources;
  std::vector<PrepareShard> shards;
  uint64_t documents = 0, bad_lines = 0, tokens = 0, split_documents = 0;
  double seconds = 0;
};

PrepareSummary prepare_data(const PrepareOptions& options);

// Hex SHA-256 of a file's bytes (libsodium).
std::string sha256_file(const std::string& path);

// Set from a signal handler: prepare_data stops at the next batch, writes no
// manifest, and fails with "interrupted".
void request_prepare_stop();

}  // namespace intellect
