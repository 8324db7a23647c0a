// Token shards in llm.c's Llama-3 format, so shards made by llm.c's data
// scripts (fineweb, tinystories, ...) and by make_corpus are interchangeable:
//   header: 256 x int32 little-endian  [0] = 20240801 (magic)
//                                      [1] = 7        (version: uint32 tokens)
//                                      [2] = token count
//   body:   count x uint32 little-endian tokens
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace intellect {

inline constexpr int32_t kShardMagic = 20240801;
inline constexpr int32_t kShardVersion = 7;
inline constexpr int32_t kGpt2ShardMagic = 20240520;  // llm.c's older uint16 format
inline constexpr size_t kShardHeaderInts = 256;
inline constexpr size_t kShardHeaderBytes = kShardHeaderInts * sizeof(int32_t);

// A validated shard mapped read-only. Mapping (rather than reading) makes
// opening many large shards cheap: pages are faulted in as the loader reaches
// them and the kernel may drop them again under memory pressure.
class TokenShard {
 public:
  static TokenShard open(const std::string& path);

  TokenShard(TokenShard&& other) noexcept;
  TokenShard& operator=(TokenShard&& other) noexcept;
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;
  ~TokenShard();

  size_t size() const { return count_; }
  std::span<const uint32_t> tokens() const { return {tokens_, count_}; }
  const std::string& path() const { return path_; }

 private:
  TokenShard() = default;
  void unmap();

  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const uint32_t* tokens_ = nullptr;
  size_t count_ = 0;
};

// Writes a shard atomically (temporary name, fsync, rename).
void write_token_shard(const std::string& path, std::span<const uint32_t> tokens);

// Resolves what the user named as training data into a sorted list of files:
//   a directory -> every *.bin directly inside it, sorted by name
//   a pattern with * ? or [ -> its glob(3) matches, sorted
//   anything else -> that single file, which must exist
// Fails, naming the pattern, when nothing matches.
std::vector<std::string> expand_shard_pattern(const std::string& pattern);

}  // namespace intellect
