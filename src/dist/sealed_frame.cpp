#include "dist/sealed_frame.h"

#include <cstring>

#include "util/error.h"

namespace intellect {

SealedFrame sealed_frame_header(FrameType type, size_t plaintext_size) {
  SealedFrame s{};
  s.header = encode_frame_header(type, plaintext_size + kAeadTagBytes, kAeadTagBytes);
  return s;
}

void seal_frame(const FrameCipher& tx, uint64_t position, std::vector<uint8_t>& payload, SealedFrame& sealed) {
  tx.seal(position, sealed.header.data(), sealed.header.size(), payload.data(), payload.size(), sealed.tag.data());
}

std::string open_frame(const FrameCipher& rx, uint64_t position, Frame& f) {
  std::vector<uint8_t>& p = f.payload;
  if (p.size() < kAeadTagBytes)
    return str("frame ", position, " (", frame_type_name(f.type), ", ", p.size(),
               " bytes) is shorter than its authentication tag: it was cut short or forged; closing the connection");
  const FrameHeader header = encode_frame_header(f.type, p.size(), kAeadTagBytes);
  if (!rx.open(position, header.data(), header.size(), p.data(), p.size() - kAeadTagBytes,
               p.data() + p.size() - kAeadTagBytes))
    return str("frame ", position, " (", frame_type_name(f.type), ", ", p.size(),
               " bytes) does not authenticate: it was altered, replayed, reordered or cut short on the way; "
               "closing the connection");
  p.resize(p.size() - kAeadTagBytes);
  return "";
}

std::vector<uint8_t> sealed_frame_bytes(const FrameCipher& tx, uint64_t position, Frame f) {
  SealedFrame s = sealed_frame_header(f.type, f.payload.size());
  seal_frame(tx, position, f.payload, s);
  std::vector<uint8_t> out(kFrameHeaderSize + f.payload.size() + kAeadTagBytes);
  std::memcpy(out.data(), s.header.data(), kFrameHeaderSize);
  if (!f.payload.empty()) std::memcpy(out.data() + kFrameHeaderSize, f.payload.data(), f.payload.size());
  std::memcpy(out.data() + kFrameHeaderSize + f.payload.size(), s.tag.data(), kAeadTagBytes);
  return out;
}

}  // namespace intellect
