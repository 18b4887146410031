// Protobuf's base-128 varints, read by hand where a parser of our own
// reads them (the subject view's decoder, the snapshot reader).
#ifndef CONSENT_CORE_VARINT_H_
#define CONSENT_CORE_VARINT_H_

#include <cstdint>

namespace consent {

// Reads a varint from [*p, end) into `value` and moves *p past it. False
// when it runs past `end` or is longer than 10 bytes (then *p is
// somewhere inside it).
inline bool ReadVarint(const char** p, const char* end, uint64_t* value) {
  uint64_t result = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*p == end) return false;
    const uint8_t byte = static_cast<uint8_t>(*(*p)++);
    result |= uint64_t{byte & 0x7fu} << shift;
    if ((byte & 0x80u) == 0) {
      *value = result;
      return true;
    }
  }
  return false;
}

}  // namespace consent

#endif  // CONSENT_CORE_VARINT_H_
