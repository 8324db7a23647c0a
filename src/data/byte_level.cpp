#include "data/byte_level.h"

#include <array>

#include "data/unicode_classes.h"

namespace intellect {
namespace {

constexpr bool stands_for_itself(int b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct Maps {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 0x144> to_byte{};  // every spelling is below U+0144
  constexpr Maps() {
    for (auto& v : to_byte) v = -1;
    uint32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      to_cp[b] = stands_for_itself(b) ? static_cast<uint32_t>(b) : next++;
      to_byte[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};
constexpr Maps kMaps;

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else {  // spellings are below U+0800: two bytes
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace

uint32_t byte_to_unicode(uint8_t b) { return kMaps.to_cp[b]; }

std::optional<std::string> byte_level_decode(std::string_view spelled) {
  std::string out;
  out.reserve(spelled.size());
  const auto* p = reinterpret_cast<const unsigned char*>(spelled.data());
  const auto* end = p + spelled.size();
  while (p < end) {
    uint32_t cp = 0;
    const size_t n = decode_utf8(p, end, &cp);
    if (n == 0 || cp >= kMaps.to_byte.size() || kMaps.to_byte[cp] < 0) return std::nullopt;
    out.push_back(static_cast<char>(kMaps.to_byte[cp]));
    p += n;
  }
  return out;
}

std::string byte_level_encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) append_utf8(out, kMaps.to_cp[b]);
  return out;
}

}  // namespace intellect
