#include "core/enum_names.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace consent {

std::string EnumValueName(const google::protobuf::EnumDescriptor* type, int value,
                          absl::string_view prefix) {
  const auto* v = type->FindValueByNumber(value);
  if (v == nullptr) return absl::StrCat(value);
  absl::string_view name = v->name();
  absl::ConsumePrefix(&name, prefix);
  return std::string(name);
}

}  // namespace consent
