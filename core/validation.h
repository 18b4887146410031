// Validation of request fields. Errors are absl::Status values of code
// kInvalidArgument carrying a google.rpc.BadRequest payload that names the
// field, which ToGrpcStatus (errors.h) turns into the status details.
#ifndef CONSENT_CORE_VALIDATION_H_
#define CONSENT_CORE_VALIDATION_H_

#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "consent/v1/types.pb.h"
#include "core/policy.h"
#include "google/protobuf/timestamp.pb.h"

namespace consent {

inline constexpr size_t kMaxIdBytes = 128;
inline constexpr size_t kMaxPurposeBytes = 64;
inline constexpr size_t kMaxSourceFieldBytes = 256;
// Content.sensitive_categories: at most one of each category.
inline constexpr int kMaxSensitiveCategories = v1::SensitiveCategory_ARRAYSIZE - 1;

// Violations reported in one error; the rest are counted ("and N more").
inline constexpr size_t kMaxReportedViolations = 100;
// The status message and its details together stay under this many bytes
// on the wire (gRPC's default limit for metadata, which carries both, is
// 8 KiB; the details, a google.rpc.Status, repeat the message).
inline constexpr size_t kMaxErrorBytes = 4096;
// How far a time the caller sends (a content's create_time, a notice's
// delivery_time) may be ahead of the server's clock: clock skew between
// the two, not a time in the future.
inline constexpr absl::Duration kMaxClockSkew = absl::Minutes(5);

// Collects field violations; one request may have several. What it keeps
// is bounded, whatever the request: kMaxReportedViolations, each field
// name and description cut to a few hundred bytes.
class Violations {
 public:
  void Add(std::string field, std::string description);
  bool empty() const { return items_.empty() && more_ == 0; }
  // OK when empty; otherwise kInvalidArgument naming the fields: as many
  // as fit in kMaxErrorBytes (message and details together), then "and N
  // more". The details (google.rpc.BadRequest) list the same violations
  // as the message. With `max_shown`, at most that many are named (a
  // batch's per-item error names one, so that 10,000 bad items still make
  // a response of a few MB).
  absl::Status ToStatus(size_t max_shown = kMaxReportedViolations) const;
  // The violations kept (field, description), in the order added.
  const std::vector<std::pair<std::string, std::string>>& items() const { return items_; }

 private:
  std::vector<std::pair<std::string, std::string>> items_;
  size_t more_ = 0;  // violations past kMaxReportedViolations
};

// kInvalidArgument for one field.
absl::Status FieldError(absl::string_view field, absl::string_view description);

// An id (user, content, request): 1-128 bytes of valid UTF-8 without
// control characters. Returns the problem, or "" when valid.
std::string IdProblem(absl::string_view id);

// A purpose name: [a-z0-9_]+(\.[a-z0-9_]+)*, at most 64 bytes.
std::string PurposeProblem(absl::string_view purpose);

// An ISO 3166 code: "GB" or "US-CA" (2 letters, optionally a dash and 1-3
// letters or digits), upper case.
std::string JurisdictionProblem(absl::string_view code);

// A calendar date that exists, from year 1900.
std::string DateProblem(const v1::Date& date);

// A birth date: DateProblem, or a day after `now`'s (UTC).
std::string BirthDateProblem(const v1::Date& date, absl::Time now);

// A Timestamp within protobuf's valid range.
std::string TimestampProblem(const google::protobuf::Timestamp& t);

// Validates the fields of a Content. `prefix` names it ("content" or
// "items[3].content"); it is called only to name a violation, so a valid
// item of a large batch costs no string building.
void ValidateContent(const v1::Content& content, absl::FunctionRef<std::string()> prefix,
                     Violations* violations);

void ValidateSource(const v1::Source& source, const std::string& prefix, Violations* violations);

// An id field (IdProblem); ValidateOptionalId accepts an empty one.
void ValidateId(absl::string_view id, const std::string& field, Violations* violations);
void ValidateOptionalId(absl::string_view id, const std::string& field, Violations* violations);

// Rule 1 of docs/decisions.md, for a purpose field: well formed
// (PurposeProblem) and defined by `policy`.
void ValidatePurpose(absl::string_view purpose, const std::string& field,
                     const CompiledPolicy& policy, Violations* violations);

// Rule 1, for reads: kInvalidArgument naming "purpose" unless `policy`
// (the one in force at the evaluation time) defines `purpose`; the
// purpose's syntax problem when it has one.
absl::Status CheckPurposeDefined(absl::string_view purpose, const CompiledPolicy& policy);

// Validates one check: the request's own fields (index -1) or those of
// items[index] (field names "items[i].user_id"). Field names are built
// only for violations. Shared by the server's checks and consent_offline.
void ValidateCheckItem(const std::string& user_id, bool has_content, const v1::Content& content,
                       int index, Violations* v);

// The content's create_time against the evaluation time `at`: more than
// kMaxClockSkew later is a violation of `field()`.create_time.
void ValidateCreateTime(const v1::Content& content, absl::Time at,
                        absl::FunctionRef<std::string()> field, Violations* v);

}  // namespace consent

#endif  // CONSENT_CORE_VALIDATION_H_
