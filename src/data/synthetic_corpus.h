// The default training corpus, generated rather than shipped: intellect may
// ship no text it did not write. Documents come from a small English grammar
// with structure a model can learn and a unigram model cannot: subject-verb
// and pronoun agreement, a/an, plural forms, fixed facts and phrases, correct
// arithmetic in words, and stories whose names, objects and counts recur in
// later sentences and in questions about the story.
#pragma once
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace intellect {

// Deterministic for (seed, index) on every platform: the generator uses its own
// 64-bit PRNG and no std:: distributions (whose output differs between
// standard libraries).
std::string generate_document(uint64_t seed, uint64_t index);

// Validation documents are generate_document(seed, kValDocIndexBase + i), an
// index range training never reaches, so the validation set does not change
// with the number of training documents.
inline constexpr uint64_t kValDocIndexBase = uint64_t{1} << 63;

struct CorpusOptions {
  std::string out_dir;
  uint64_t docs = 20000;       // training documents to generate
  uint64_t seed = 1;
  uint64_t val_docs = 200;     // generated: extra documents; inputs: the last val_docs files
  uint64_t shard_tokens = 4000000;
  std::vector<std::string> inputs;  // non-empty: these text files, one document each
};

struct CorpusSummary {
  uint64_t train_docs = 0, val_docs = 0;
  uint64_t train_tokens = 0, val_tokens = 0;
  std::vector<std::string> train_shards, val_shards;  // full paths, in order
};

// Writes out_dir/train_NNNNNN.bin, out_dir/val_NNNNNN.bin (when there are
// validation documents) and out_dir/manifest.json. Each document is encoded
// with the ByteTokenizer as BOS + bytes + EOS; a document goes whole into one
// shard unless it is longer than a shard. Every file is written atomically,
// the manifest last (it is removed first, so a manifest always describes a
// complete corpus), and train_/val_ shards left from an earlier, larger run in
// the same directory are removed. Progress goes to `progress` when given.
CorpusSummary write_corpus(const CorpusOptions& options, std::ostream* progress = nullptr);

}  // namespace intellect
