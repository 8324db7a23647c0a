// One dataset (a list of token shards) cut into training windows, and the
// part of them one partition of a run reads.
//
// Windows: in a shard of n tokens, window i covers tokens [i*T, i*T + T + 1)
// for every i with i*T + T + 1 <= n (T = seq_len), so consecutive windows
// advance by T and share one token (the last target of one is the first
// input of the next). Windows never straddle shards. Numbering the windows of
// all shards in order gives the dataset's global windows 0 .. W-1.
//
// Partitions: with P partitions, partition p owns global windows p, p+P,
// p+2P, ... Its k-th read (k counts on across epochs) is its (k mod n_p)-th
// window, n_p being how many it owns, so each partition cycles over its own
// windows and never touches another's.
//
// Why windows rather than whole shards per partition: striding windows
// balances partitions to within one window whatever the shard sizes and works
// when there are more partitions than shards (a run with 200 possible joiners
// over 50 shards), and a partition's windows are spread over the whole
// dataset, so its sample of the data is as varied as the data. The cost is
// I/O locality: a node reads T+1 tokens then skips (P-1)*T, so it touches
// every shard; shards are memory-mapped, so it faults in only the pages it
// reads (plus read-ahead), and at T = 8192 a window is 32 KiB, far above a
// page. Assigning shards would let a node download only its own shards; that
// belongs with remote storage, which intellect does not have yet.
//
// A run that expects nodes to join later sets more partitions than it has
// nodes: partitions nobody owns are never read, so a joiner that takes one of
// them starts on data no node has consumed.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/token_shard.h"

namespace intellect {

class DatasetWindows {
 public:
  // Fails, naming the dataset and the shard, when a shard is shorter than one
  // window, and when the dataset has fewer windows than partitions.
  DatasetWindows(std::string name, const std::vector<std::string>& shard_paths, int seq_len,
                 uint64_t partition, uint64_t partitions);

  // The seq_len + 1 tokens of this partition's k-th read (any k >= 0), and
  // the shard they are in.
  const uint32_t* window(uint64_t k, size_t* shard = nullptr) const;
  // The global window index of read k (what partition tests compare).
  uint64_t global_window(uint64_t k) const;

  const std::string& name() const { return name_; }
  uint64_t windows_per_epoch() const { return own_windows_; }  // of this partition
  uint64_t total_windows() const { return total_windows_; }    // of all partitions
  uint64_t total_tokens() const { return total_tokens_; }
  const std::vector<TokenShard>& shards() const { return shards_; }

 private:
  std::string name_;
  std::vector<TokenShard> shards_;
  std::vector<uint64_t> first_window_;  // first global window of each shard; back() = total
  uint64_t seq_len_, partition_, partitions_;
  uint64_t total_windows_ = 0, total_tokens_ = 0, own_windows_ = 0;
};

}  // namespace intellect
