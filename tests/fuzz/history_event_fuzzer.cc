// Change events (as history stores them) folded into a subject's state, as
// as_of checks do: never a crash, whatever the events say.
#include <cstddef>
#include <cstdint>

#include "consent/v1/types.pb.h"
#include "core/history.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Several events: each a length byte and that many bytes.
  consent::SubjectAsOf state;
  size_t at = 0;
  while (at < size) {
    const size_t length = data[at++];
    if (length > size - at) break;
    consent::v1::ChangeEvent event;
    if (event.ParseFromArray(data + at, static_cast<int>(length))) {
      consent::ApplyEvent(event, &state);
    }
    at += length;
  }
  return 0;
}
