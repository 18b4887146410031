// Conversions between absl::Time and google.protobuf.Timestamp, the one
// definition of each (nanosecond precision, Unix epoch, UTC).
#ifndef CONSENT_CORE_PROTO_TIME_H_
#define CONSENT_CORE_PROTO_TIME_H_

#include <cstdint>

#include "absl/time/time.h"
#include "google/protobuf/timestamp.pb.h"
#include "google/protobuf/util/time_util.h"

namespace consent {

// The time a Timestamp of `seconds` and `nanos` stands for (for decoders
// that read the two fields without a message).
inline absl::Time TimeOf(int64_t seconds, int32_t nanos) {
  return absl::FromUnixSeconds(seconds) + absl::Nanoseconds(nanos);
}

inline absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return TimeOf(t.seconds(), t.nanos());
}

// `t` as a Timestamp, to the nanosecond (ToUnixNanos: clock times, not
// the infinite ones).
inline google::protobuf::Timestamp ToProto(absl::Time t) {
  return google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(t));
}

}  // namespace consent

#endif  // CONSENT_CORE_PROTO_TIME_H_
