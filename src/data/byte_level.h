// GPT-2's byte-to-unicode map, which byte-level BPE files (tokenizer.json)
// use to spell tokens as printable text: bytes 0x21..0x7E, 0xA1..0xAC and
// 0xAE..0xFF stand for themselves, the other 68 bytes become U+0100..U+0143
// in byte order (so a space is 'Ġ' U+0120, a newline 'Ċ' U+010A).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace intellect {

// The code point that spells byte b.
uint32_t byte_to_unicode(uint8_t b);

// Undoes the spelling: UTF-8 text of mapped code points -> raw bytes.
// Returns nullopt when a character is not one of the 256 spellings.
std::optional<std::string> byte_level_decode(std::string_view spelled);

// The spelling of raw bytes, as UTF-8 (used by tests and tools).
std::string byte_level_encode(std::string_view bytes);

}  // namespace intellect
