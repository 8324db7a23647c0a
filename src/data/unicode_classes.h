// Unicode character classes for the pre-tokenizer's regex (\p{L}, \p{N}, \s),
// and a strict UTF-8 decoder. The class tables are generated from the regex
// engine of HuggingFace `tokenizers` (tools/gen_unicode_tables.py), so a code
// point is a letter here exactly when it is a letter there.
#pragma once
#include <cstddef>
#include <cstdint>

namespace intellect {

enum class CharClass : uint8_t {
  kOther = 0,   // none of the below: punctuation, symbols, marks, controls, ...
  kLetter = 1,  // \p{L}
  kNumber = 2,  // \p{N}
  kSpace = 3,   // \s
};

CharClass char_class(uint32_t code_point);

// Decodes one UTF-8 sequence at p (p < end). Returns its length (1..4) and sets
// *cp, or returns 0 when the bytes at p do not start a valid sequence
// (stray continuation byte, overlong form, surrogate, > U+10FFFF, truncated).
inline size_t decode_utf8(const unsigned char* p, const unsigned char* end, uint32_t* cp) {
  const unsigned char b0 = p[0];
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  const size_t left = static_cast<size_t>(end - p);
  auto cont = [](unsigned char b) { return (b & 0xC0) == 0x80; };
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    if (left < 2 || !cont(p[1])) return 0;
    *cp = (uint32_t(b0 & 0x1F) << 6) | (p[1] & 0x3F);
    return 2;
  }
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (left < 3 || !cont(p[1]) || !cont(p[2])) return 0;
    const uint32_t c = (uint32_t(b0 & 0x0F) << 12) | (uint32_t(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    if (c < 0x800 || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    *cp = c;
    return 3;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (left < 4 || !cont(p[1]) || !cont(p[2]) || !cont(p[3])) return 0;
    const uint32_t c = (uint32_t(b0 & 0x07) << 18) | (uint32_t(p[1] & 0x3F) << 12) |
                       (uint32_t(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
    if (c < 0x10000 || c > 0x10FFFF) return 0;
    *cp = c;
    return 4;
  }
  return 0;
}

}  // namespace intellect
