// The byte-level tokenizer: every byte is its own token, plus BOS/EOS that
// frame documents. It needs no vocabulary file, so any text (or binary) can be
// trained on, and decode(encode(s)) == s for every byte string.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace intellect {

class ByteTokenizer {
 public:
  static constexpr uint32_t kBos = 256;
  static constexpr uint32_t kEos = 257;
  static constexpr uint32_t kVocab = 258;

  // Bytes only; callers that frame documents add kBos / kEos themselves.
  std::vector<uint32_t> encode(std::string_view text) const;
  // Skips BOS/EOS; an id >= kVocab fails, since it cannot come from this tokenizer.
  std::string decode(std::span<const uint32_t> ids) const;
};

}  // namespace intellect
