// A byte buffer sized without being zeroed, for buffers that are written in
// full before anyone reads them: a joiner's download (every chunk's length is
// checked) and a donor's snapshot (every byte copied from the state).
// std::vector<uint8_t>::resize zeroes on one thread first, which for the
// 150m config's 4.36 GB snapshot is seconds of page faults and stores, and
// for 10B's 160 GB a minute.
#pragma once
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

namespace intellect {

template <typename T>
struct UninitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = UninitAllocator<U>;
  };
  UninitAllocator() = default;
  template <typename U>
  UninitAllocator(const UninitAllocator<U>&) noexcept {}
  template <typename U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;  // default-, not value-initialised
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

using ByteBuffer = std::vector<uint8_t, UninitAllocator<uint8_t>>;

}  // namespace intellect
