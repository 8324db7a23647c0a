#include "data/byte_tokenizer.h"

#include "util/error.h"

namespace intellect {

std::vector<uint32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<uint32_t> ids;
  ids.reserve(text.size());
  // Through unsigned char so bytes >= 0x80 map to 128..255, not negative ids.
  for (unsigned char c : text) ids.push_back(c);
  return ids;
}

std::string ByteTokenizer::decode(std::span<const uint32_t> ids) const {
  std::string text;
  text.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const uint32_t id = ids[i];
    if (id < 256) {
      text.push_back(static_cast<char>(static_cast<unsigned char>(id)));
    } else if (id == kBos || id == kEos) {
      continue;
    } else {
      fail("byte tokenizer cannot decode token id ", id, " at position ", i,
           ": the vocabulary has ", kVocab, " ids (0..255 bytes, ", kBos, " BOS, ", kEos, " EOS)");
    }
  }
  return text;
}

}  // namespace intellect
