#include "dist/frame.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "dist/message_buffers.h"
#include "util/error.h"

namespace intellect {

// One row per type. A new message type is one row here; its limit is the
// largest payload an honest peer sends, so memory per connection stays bounded.
static constexpr FrameTypeInfo kFrameTypes[] = {
    {FrameType::auth_challenge, "auth_challenge", 256, true},
    {FrameType::auth_response, "auth_response", 256, true},
    {FrameType::auth_confirm, "auth_confirm", 256, true},
    {FrameType::control, "control", 64u << 10, false},
    {FrameType::data, "data", 64u << 20, false},
    // kMaxEvidenceBytes of messages, their lengths, and the rest of a RingFailed.
    {FrameType::evidence, "evidence", (16u << 20) + (64u << 10), false},
};

const FrameTypeInfo* frame_type_info(uint16_t type) {
  for (const auto& t : kFrameTypes)
    if (static_cast<uint16_t>(t.type) == type) return &t;
  return nullptr;
}

const char* frame_type_name(FrameType type) {
  const FrameTypeInfo* info = frame_type_info(static_cast<uint16_t>(type));
  return info ? info->name : "unknown";
}

static void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
static void put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
static uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
static uint32_t get32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

FrameHeader encode_frame_header(FrameType type, size_t payload_size, size_t sealed) {
  const FrameTypeInfo* info = frame_type_info(static_cast<uint16_t>(type));
  if (!info) fail("cannot send a frame of unknown type ", static_cast<unsigned>(type));
  if (payload_size > info->max_payload + sealed)
    fail("cannot send a ", info->name, " frame of ", payload_size, " bytes: the limit for this type is ",
         info->max_payload, " bytes; split the payload");
  FrameHeader h;
  put32(h.data(), kFrameMagic);
  put16(h.data() + 4, kProtocolVersion);
  put16(h.data() + 6, static_cast<uint16_t>(type));
  put32(h.data() + 8, static_cast<uint32_t>(payload_size));
  return h;
}

std::vector<uint8_t> encode_frame(const Frame& frame) {
  FrameHeader h = encode_frame_header(frame.type, frame.payload.size());
  std::vector<uint8_t> out(h.size() + frame.payload.size());
  std::memcpy(out.data(), h.data(), h.size());
  if (!frame.payload.empty()) std::memcpy(out.data() + h.size(), frame.payload.data(), frame.payload.size());
  return out;
}

const char* decode_error_name(DecodeError e) {
  switch (e) {
    case DecodeError::none: return "none";
    case DecodeError::bad_magic: return "bad_magic";
    case DecodeError::unsupported_version: return "unsupported_version";
    case DecodeError::unknown_type: return "unknown_type";
    case DecodeError::type_not_allowed: return "type_not_allowed";
    case DecodeError::oversize: return "oversize";
  }
  return "invalid";
}

bool FrameDecoder::check_header() {
  uint32_t magic = get32(header_.data());
  uint16_t version = get16(header_.data() + 4);
  uint16_t type = get16(header_.data() + 6);
  uint32_t len = get32(header_.data() + 8);
  char hex[16];
  if (magic != kFrameMagic) {
    std::snprintf(hex, sizeof hex, "0x%08x", magic);
    error_ = DecodeError::bad_magic;
    message_ = str("bad frame magic ", hex, " (expected 0x4c544e49 \"INTL\"): the peer is not an "
                   "intellect node, or the stream is corrupt");
    return false;
  }
  if (version != kProtocolVersion) {
    error_ = DecodeError::unsupported_version;
    message_ = str("peer speaks mesh protocol version ", version, ", this build speaks ",
                   kProtocolVersion, ": run the same intellect release on every node");
    return false;
  }
  const FrameTypeInfo* info = frame_type_info(type);
  if (!info) {
    error_ = DecodeError::unknown_type;
    message_ = str("unknown frame type ", type, " (payload length ", len, ")");
    return false;
  }
  if (info->handshake != (phase_ == Phase::handshake)) {
    error_ = DecodeError::type_not_allowed;
    message_ = phase_ == Phase::handshake
                   ? str("a ", info->name, " frame arrived before the peer authenticated")
                   : str("a ", info->name, " frame arrived after the handshake had finished");
    return false;
  }
  const size_t limit = info->max_payload + (phase_ == Phase::established ? kSealedFrameOverhead : 0);
  if (len > limit) {
    error_ = DecodeError::oversize;
    message_ = str(info->name, " frame declares a payload of ", len, " bytes, above the limit of ", limit,
                   " for this type");
    return false;
  }
  frame_.type = info->type;
  // Reserved, not filled: a large payload's pages become resident only as its
  // bytes arrive, not when a header announces it (or they are a recycled
  // buffer's, resident already: message_buffers.h).
  frame_.payload = MessageBuffers::process().take_capacity(len);
  payload_len_ = len;
  return true;
}

size_t FrameDecoder::feed(const uint8_t* data, size_t n) {
  INTELLECT_CHECK(!ready_, "FrameDecoder::feed called before take()");
  if (failed()) return 0;
  size_t used = 0;
  if (header_have_ < kFrameHeaderSize) {
    size_t k = std::min(n, kFrameHeaderSize - header_have_);
    std::memcpy(header_.data() + header_have_, data, k);
    header_have_ += k;
    used += k;
    if (header_have_ < kFrameHeaderSize) return used;
    if (!check_header()) return used;
  }
  size_t k = std::min(n - used, payload_len_ - frame_.payload.size());
  frame_.payload.insert(frame_.payload.end(), data + used, data + used + k);
  used += k;
  if (frame_.payload.size() == payload_len_) ready_ = true;
  return used;
}

Frame FrameDecoder::take() {
  INTELLECT_CHECK(ready_, "FrameDecoder::take called without a complete frame");
  ready_ = false;
  header_have_ = 0;
  payload_len_ = 0;
  return std::move(frame_);
}

}  // namespace intellect
