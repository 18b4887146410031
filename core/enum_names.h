// Short names of the API's enum values, for messages, explanations and the
// command line: VISIBILITY_PUBLIC -> PUBLIC.
#ifndef CONSENT_CORE_ENUM_NAMES_H_
#define CONSENT_CORE_ENUM_NAMES_H_

#include <string>

#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"

namespace consent {

// The name of enum value `value` of `type` without `prefix`
// (VISIBILITY_PUBLIC -> PUBLIC), or the number when `type` has no such
// value.
std::string EnumValueName(const google::protobuf::EnumDescriptor* type, int value,
                          absl::string_view prefix);

}  // namespace consent

#endif  // CONSENT_CORE_ENUM_NAMES_H_
