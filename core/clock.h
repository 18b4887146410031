// Time source for the server, injected so tests never sleep to make time
// pass (tests/fake_clock.h).
#ifndef CONSENT_CORE_CLOCK_H_
#define CONSENT_CORE_CLOCK_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace consent {

// Thread safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

// The system clock (absl::Now), what consentd runs on.
class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

}  // namespace consent

#endif  // CONSENT_CORE_CLOCK_H_
