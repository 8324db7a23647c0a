// The tokenizer interface the data pipeline uses, and the factory that picks an
// implementation from a spec string:
//   "byte"                     the byte tokenizer (258 ids, no file)
//   PATH/tokenizer.json        a HuggingFace byte-level BPE tokenizer
//   PATH/tokenizer.model       a tiktoken BPE file (Meta's Llama 3 format)
//   a directory                its tokenizer.json, else its tokenizer.model
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace intellect {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Ids of `text`, with the tokenizer's BOS first when add_bos is set.
  virtual std::vector<uint32_t> encode(std::string_view text, bool add_bos) const = 0;
  // The bytes the ids stand for, special tokens included as their text (so
  // decode(encode(x)) == x for every byte string x). Fails on an unknown id.
  virtual std::string decode(std::span<const uint32_t> ids) const = 0;
  virtual uint32_t vocab_size() const = 0;
  virtual uint32_t bos_id() const = 0;
  virtual uint32_t eos_id() const = 0;
  // What was loaded, for messages and manifests ("byte", or the file path).
  virtual std::string name() const = 0;

  // encode() of one long text on up to `threads` threads (0 = all cores),
  // with exactly encode()'s result: the text is cut only where the
  // pre-tokenizer always cuts. Tokenizers without such places use one thread.
  virtual std::vector<uint32_t> encode_parallel(std::string_view text, bool add_bos,
                                                int threads) const;

  // encode() of each text on its own, on up to `threads` threads (0 = all cores).
  std::vector<std::vector<uint32_t>> encode_batch(std::span<const std::string_view> texts,
                                                  bool add_bos, int threads) const;
};

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec);

// 0 means "all cores"; the result is at least 1.
int resolve_threads(int threads);

}  // namespace intellect
