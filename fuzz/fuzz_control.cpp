// libFuzzer target: coordinator protocol messages (control frames' payloads).
// Any byte string must decode to a message or raise intellect::Error; a
// decoded message must re-encode to the same bytes, and what the ring order
// reads of it stays within its limits (link rates, member names).
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "dist/control.h"
#include "dist/run_settings.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> bytes(data, data + size);
  try {
    const intellect::control::Message m = intellect::control::decode(bytes, "fuzz");
    if (intellect::control::encode(m) != bytes) std::abort();  // decode accepted bytes it would not write
    // A joiner's settings are compared with the run's by the coordinator: any text.
    if (const auto* j = std::get_if<intellect::control::Join>(&m))
      (void)intellect::run_settings_difference(R"({"diloco":{"outer_lr":0.7},"model":{"dim":48}})", j->settings);
    if (const auto* r = std::get_if<intellect::control::Ready>(&m))
      if (!(r->link_mbit >= 0.0f && r->link_mbit <= 1e7f)) std::abort();  // the coordinator orders rings by it
    if (const auto* a = std::get_if<intellect::control::RingAnnounce>(&m))
      for (const auto& member : a->members)
        if (member.name.size() > intellect::control::kMaxName || member.address.size() > intellect::control::kMaxName)
          std::abort();
  } catch (const intellect::Error&) {
  }
  return 0;
}
