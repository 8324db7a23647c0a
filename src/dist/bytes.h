// Bounds-checked little-endian readers and writers for message payloads.
// Every field read names itself, so a malformed message from a peer fails
// with an Error that says which field of which message was short, instead of
// reading past the end of a buffer.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace intellect {

// A received header field against what the schedule expects: fails naming the
// message, the field, both values and a hint at the likely cause.
void expect_header_field(const std::string& what, const char* field, uint64_t got, uint64_t want, const char* hint);


class ByteWriter {
 public:
  ByteWriter() = default;
  explicit ByteWriter(size_t reserve) { buf_.reserve(reserve); }

  void u8(uint8_t v) { buf_.push_back(v); }
  void u16(uint16_t v);
  void u32(uint32_t v);
  void u64(uint64_t v);
  void f32(float v);
  void bytes(const void* data, size_t n);  // raw, no length: the reader must know n
  void str(std::string_view s);            // u32 length, then the bytes

  size_t size() const { return buf_.size(); }
  const std::vector<uint8_t>& data() const { return buf_; }
  std::vector<uint8_t> take() { return std::move(buf_); }

 private:
  std::vector<uint8_t> buf_;
};

class ByteReader {
 public:
  // `what` names the message in errors ("control frame from 10.0.0.2:4000").
  ByteReader(const uint8_t* data, size_t n, std::string what = "message")
      : p_(data), n_(n), what_(std::move(what)) {}
  explicit ByteReader(const std::vector<uint8_t>& v, std::string what = "message")
      : ByteReader(v.data(), v.size(), std::move(what)) {}

  uint8_t u8(const char* field);
  uint16_t u16(const char* field);
  uint32_t u32(const char* field);
  uint64_t u64(const char* field);
  float f32(const char* field);
  void bytes(const char* field, void* out, size_t n);
  // A view into the buffer: valid while the buffer lives.
  const uint8_t* view(const char* field, size_t n);
  // A u32 length then that many bytes; a length above max_len is refused
  // before anything is copied.
  std::string str(const char* field, size_t max_len);

  size_t offset() const { return off_; }
  size_t remaining() const { return n_ - off_; }
  // Fails unless every byte was read: trailing bytes mean the peer and we
  // disagree about the message layout.
  void expect_end() const;

 private:
  const uint8_t* take(const char* field, size_t n);
  const uint8_t* p_;
  size_t n_, off_ = 0;
  std::string what_;
};

}  // namespace intellect
