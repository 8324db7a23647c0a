// Byte-level BPE, encoding exactly as HuggingFace `tokenizers` does for the
// tokenizer.json files of Llama 3, GPT-2 and their relatives:
//   1. added (special) tokens are found in the raw text, leftmost-longest, and
//      become their ids; the text between them is encoded on its own;
//   2. the pre-tokenizer cuts that text into pieces (pretokenizer.h);
//   3. each piece's bytes become byte tokens and are merged pair by pair, the
//      lowest-ranked pair first (leftmost on ties), as HF's BPE model does;
//      with `ignore_merges` a piece that is itself a vocabulary entry is taken
//      whole first (as tiktoken always does).
// Tokens are kept as raw bytes; the GPT-2 byte-to-unicode spelling of
// tokenizer.json is undone when loading (byte_level.h).
//
// Invalid UTF-8 (which HF cannot take) is encoded byte-level like any other
// bytes, so decode(encode(x)) == x for every byte string; see pretokenizer.h
// for how it is cut into pieces.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "data/pretokenizer.h"
#include "data/tokenizer.h"

namespace intellect {

struct AddedToken {
  uint32_t id = 0;
  std::string content;  // matched verbatim in the raw text
};

// Everything a loader extracts from a tokenizer file.
struct BpeSpec {
  std::string name;                                     // the file, for messages
  std::vector<std::pair<std::string, uint32_t>> vocab;  // raw token bytes -> id
  std::vector<std::pair<uint32_t, uint32_t>> merges;    // (left, right) ids, highest priority first
  std::vector<AddedToken> added;
  std::unique_ptr<PreTokenizer> pre_tokenizer;          // null: the whole text is one piece
  bool ignore_merges = false;
  std::vector<uint32_t> bos_prefix;  // what encode(text, true) puts first
  std::optional<uint32_t> bos, eos;
};

class BpeTokenizer final : public Tokenizer {
 public:
  explicit BpeTokenizer(BpeSpec spec);
  ~BpeTokenizer() override;

  std::vector<uint32_t> encode(std::string_view text, bool add_bos) const override;
  std::string decode(std::span<const uint32_t> ids) const override;
  uint32_t vocab_size() const override { return static_cast<uint32_t>(tokens_.size()); }
  uint32_t bos_id() const override;
  uint32_t eos_id() const override;
  std::string name() const override { return name_; }
  std::vector<uint32_t> encode_parallel(std::string_view text, bool add_bos,
                                        int threads) const override;

  // Appends the ids of `text`, which contains no added tokens (steps 2 and 3).
  void encode_ordinary(std::string_view text, std::vector<uint32_t>& out) const;
  // The id of a token by its exact bytes (model vocabulary or added token).
  std::optional<uint32_t> token_id(std::string_view bytes) const;
  size_t merge_count() const;

 private:
  struct Tables;  // hash tables for vocabulary and merges
  struct SpecialMatch {
    size_t pos = std::string_view::npos, len = 0;
    uint32_t id = 0;
  };
  SpecialMatch find_special(std::string_view text, size_t from) const;
  void encode_piece(std::string_view piece, std::vector<uint32_t>& out) const;
  void merge_short(std::string_view piece, std::vector<uint32_t>& out) const;
  void merge_long(std::string_view piece, std::vector<uint32_t>& out) const;

  std::string name_;
  std::vector<std::string> tokens_;  // id -> bytes
  std::vector<uint8_t> is_token_;    // id -> whether the id exists
  std::unique_ptr<Tables> tables_;
  uint32_t byte_ids_[256] = {};
  std::unique_ptr<PreTokenizer> pre_;
  bool ignore_merges_ = false;
  std::vector<uint32_t> bos_prefix_;
  std::optional<uint32_t> bos_, eos_;
  // Added tokens by first byte, longest first, for leftmost-longest matching.
  std::vector<std::vector<AddedToken>> added_by_first_byte_;
  bool added_first_byte_[256] = {};
  int single_first_byte_ = -1;  // the only first byte among added tokens, or -1
  uint64_t cache_owner_id_ = 0;  // distinguishes tokenizers in the per-thread word cache
};

// tokenizer.json (HuggingFace): BPE model, byte-level, see the .cpp for what is accepted.
std::unique_ptr<BpeTokenizer> load_hf_tokenizer_json(const std::string& path);
// tokenizer.model (tiktoken "base64 rank" lines) with Llama 3's pattern and special tokens.
std::unique_ptr<BpeTokenizer> load_tiktoken_model(const std::string& path);

}  // namespace intellect
