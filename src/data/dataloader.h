// Deterministic loader over a mixture of datasets of token shards.
//
// Each batch row is one window of seq_len + 1 tokens (see dataset_windows.h
// for windows and partitions) from one dataset. Which dataset is a
// counter-based draw: row i (counting every row this loader has produced)
// takes u = uniform01(mix seed, i) and picks the first dataset whose
// cumulative normalised weight exceeds u, so over many rows each dataset
// supplies its weight's share, and the choice for row i is a pure function of
// (seed, partition, i). Each dataset keeps its own read position: the number
// of windows this loader has read from it.
//
// Weights are relative: they are divided by their sum, so {3, 1} means 75% /
// 25%. (The trainer prints the shares it uses, so a typo that makes the
// weights sum to 1.45 instead of 1 is visible.)
//
// The mix seed is a function of the seed and the partition, so partitions
// draw independently and a global batch over all nodes is closer to the
// weights than any one node's rows.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/batch.h"
#include "data/dataset_windows.h"

namespace intellect {

struct DatasetSource {
  std::string name;
  std::vector<std::string> shards;  // in order
  double weight = 1.0;              // relative; positive
};

struct LoaderOptions {
  std::vector<DatasetSource> datasets;
  int rows = 1;             // windows per batch
  int seq_len = 1;
  int64_t bos_id = -1;      // document starts for Batch::cu_seqlens; -1 = none
  int64_t vocab_size = 0;   // > 0: a token id >= vocab_size fails, naming shard and position
  uint64_t seed = 0;        // mixture draws
  uint64_t partition = 0, partitions = 1;
};

// Where the next batch starts: for each dataset, how many windows this
// partition has read from it, and how many rows the mixture has drawn. With
// the same options, a loader seeked to it produces exactly the batches that
// followed when it was taken. It serialises to JSON as
//   {"partition": 0, "partitions": 4, "seq_len": 8192, "rows": 1024,
//    "datasets": [{"name": "fineweb-edu", "windows_read": 570}, ...]}
struct DatasetPosition {
  std::string name;
  uint64_t windows_read = 0;
  bool operator==(const DatasetPosition&) const = default;
};

struct LoaderPosition {
  uint64_t partition = 0, partitions = 1, seq_len = 0;
  uint64_t rows = 0;  // the mixture generator's counter
  std::vector<DatasetPosition> datasets;

  nlohmann::json to_json() const;
  // Fails, saying which field is wrong, on anything to_json could not have written.
  static LoaderPosition from_json(const nlohmann::json& j);
  bool operator==(const LoaderPosition&) const = default;
};

class DataLoader {
 public:
  explicit DataLoader(const LoaderOptions& options);

  // Fills `batch` (resizing its vectors) with the next options.rows windows.
  void next(Batch& batch);

  LoaderPosition position() const;
  // Fails when the position does not belong to this loader: another
  // partitioning, seq_len or set of dataset names.
  void seek(const LoaderPosition& p);

  const std::vector<DatasetWindows>& datasets() const { return datasets_; }
  // Normalised weights, in dataset order; they sum to 1.
  const std::vector<double>& shares() const { return shares_; }
  const LoaderOptions& options() const { return options_; }
  // Which dataset row i of the stream draws (what next() uses).
  size_t draw(uint64_t row) const;

 private:
  LoaderOptions options_;
  std::vector<DatasetWindows> datasets_;
  std::vector<double> shares_, cumulative_;
  uint64_t mix_seed_ = 0;
  uint64_t rows_ = 0;
  std::vector<uint64_t> read_;  // windows read per dataset
};

// Entropy (nats) of the unigram token distribution of the mixture (sampled: see below): each
// dataset's token frequencies weighted by its normalised weight. It is the
// loss of a model that ignores context, which a trained model must beat.
// Fails on a token id >= vocab, naming the shard.
// At most kUnigramSampleTokens tokens per dataset are read (from its first
// shards), so a run over terabytes of data starts at once.
inline constexpr uint64_t kUnigramSampleTokens = uint64_t(1) << 25;
double unigram_entropy_nats(const std::vector<DatasetSource>& datasets, uint32_t vocab);
double unigram_entropy_nats(const std::vector<std::string>& shard_paths, uint32_t vocab);

}  // namespace intellect
