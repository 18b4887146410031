#include "core/validation.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/civil_time.h"
#include "core/proto_time.h"
#include "core/status_details.h"
#include "google/rpc/error_details.pb.h"

namespace consent {
namespace {

// Returns the length of the UTF-8 sequence at s[i], or 0 when invalid.
size_t Utf8SequenceLength(absl::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  size_t len;
  uint32_t cp;
  if (c < 0x80) return 1;
  if ((c & 0xe0) == 0xc0) {
    len = 2;
    cp = c & 0x1f;
  } else if ((c & 0xf0) == 0xe0) {
    len = 3;
    cp = c & 0x0f;
  } else if ((c & 0xf8) == 0xf0) {
    len = 4;
    cp = c & 0x07;
  } else
    return 0;
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3f);
  }
  // Overlong encodings, surrogates and values past U+10FFFF are invalid.
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
    return 0;
  }
  // C1 control characters (U+0080 to U+009F).
  if (cp >= 0x80 && cp <= 0x9f) return 0;
  return len;
}

}  // namespace

namespace {

// Cuts `s` to at most `max` bytes, at a UTF-8 character boundary, marking
// the cut.
std::string Bounded(std::string s, size_t max) {
  if (s.size() <= max) return s;
  size_t end = max - 3;
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xc0) == 0x80) --end;
  s.resize(end);
  s += "...";
  return s;
}

constexpr size_t kMaxFieldBytes = 160;
constexpr size_t kMaxDescriptionBytes = 320;

}  // namespace

void Violations::Add(std::string field, std::string description) {
  if (items_.size() >= kMaxReportedViolations) {
    ++more_;
    return;
  }
  items_.emplace_back(Bounded(std::move(field), kMaxFieldBytes),
                      Bounded(std::move(description), kMaxDescriptionBytes));
}

absl::Status Violations::ToStatus(size_t max_shown) const {
  if (empty()) return absl::OkStatus();
  // The message travels twice (grpc-message, and google.rpc.Status.message
  // in the details trailer) and the violations once: 2 x 1,150 + 1,450
  // bytes, with room for "and N more" and the framing.
  constexpr size_t kMessageBudget = 1150;
  constexpr size_t kDetailsBudget = 1450;
  static_assert(2 * (kMessageBudget + 32) + kDetailsBudget + 128 < kMaxErrorBytes);
  google::rpc::BadRequest bad_request;
  std::string message;
  size_t shown = 0;
  for (const auto& [field, description] : items_) {
    const size_t message_bytes = message.size() + field.size() + description.size() + 4;
    // A field violation's encoding: two length-delimited strings in a
    // length-delimited message, a few bytes of tags and lengths each.
    const size_t detail_bytes = bad_request.ByteSizeLong() + field.size() + description.size() + 8;
    if (shown == max_shown) break;
    if (shown > 0 && (message_bytes > kMessageBudget || detail_bytes > kDetailsBudget)) break;
    auto* v = bad_request.add_field_violations();
    v->set_field(field);
    v->set_description(description);
    if (!message.empty()) message += "; ";
    absl::StrAppend(&message, field, ": ", description);
    ++shown;
  }
  const size_t hidden = items_.size() - shown + more_;
  if (hidden > 0) absl::StrAppend(&message, "; and ", hidden, " more");
  absl::Status status = absl::InvalidArgumentError(message);
  AttachDetail(status, bad_request);
  return status;
}

absl::Status FieldError(absl::string_view field, absl::string_view description) {
  Violations v;
  v.Add(std::string(field), std::string(description));
  return v.ToStatus();
}

std::string IdProblem(absl::string_view id) {
  if (id.empty()) return "is required";
  if (id.size() > kMaxIdBytes) {
    return absl::StrCat("is ", id.size(), " bytes; at most ", kMaxIdBytes, " allowed");
  }
  // Printable ASCII, the common case, in one pass the compiler vectorizes
  // (the byte-by-byte decoding below was 2.3% of the machine's samples under
  // the BatchCheck load: docs/performance.md).
  bool printable_ascii = true;
  for (char ch : id) {
    const auto c = static_cast<unsigned char>(ch);
    printable_ascii &= c >= 0x20 && c < 0x7f;
  }
  if (printable_ascii) return "";
  for (size_t i = 0; i < id.size();) {
    const auto c = static_cast<unsigned char>(id[i]);
    if (c < 0x20 || c == 0x7f) return "contains a control character";
    size_t len = Utf8SequenceLength(id, i);
    if (len == 0) return "is not valid UTF-8 or contains a control character";
    i += len;
  }
  return "";
}

std::string PurposeProblem(absl::string_view purpose) {
  if (purpose.empty()) return "is required";
  if (purpose.size() > kMaxPurposeBytes) {
    return absl::StrCat("is ", purpose.size(), " bytes; at most ", kMaxPurposeBytes, " allowed");
  }
  bool segment_empty = true;
  for (char c : purpose) {
    if (c == '.') {
      if (segment_empty) break;
      segment_empty = true;
    } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_') {
      segment_empty = false;
    } else {
      return "must match [a-z0-9_]+(.[a-z0-9_]+)*";
    }
  }
  if (segment_empty) return "must match [a-z0-9_]+(.[a-z0-9_]+)*";
  return "";
}

std::string JurisdictionProblem(absl::string_view code) {
  auto upper = [](char c) { return c >= 'A' && c <= 'Z'; };
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  bool ok = code.size() >= 2 && upper(code[0]) && upper(code[1]);
  if (ok && code.size() > 2) {
    ok = code[2] == '-' && code.size() >= 4 && code.size() <= 6;
    for (size_t i = 3; ok && i < code.size(); ++i) {
      ok = upper(code[i]) || digit(code[i]);
    }
  }
  return ok ? "" : "must be an ISO 3166 code such as GB or US-CA";
}

std::string DateProblem(const v1::Date& date) {
  if (date.year() < 1900 || date.year() > 9999) return "year must be 1900 to 9999";
  absl::CivilDay day(date.year(), date.month(), date.day());
  if (date.month() < 1 || date.month() > 12 || day.month() != date.month() ||
      day.day() != date.day()) {
    return "is not a calendar date";
  }
  return "";
}

std::string BirthDateProblem(const v1::Date& date, absl::Time now) {
  if (std::string problem = DateProblem(date); !problem.empty()) return problem;
  if (absl::CivilDay(date.year(), date.month(), date.day()) >
      absl::ToCivilDay(now, absl::UTCTimeZone())) {
    return "is in the future";
  }
  return "";
}

std::string TimestampProblem(const google::protobuf::Timestamp& t) {
  // Protobuf's Timestamp range: 0001-01-01 to 9999-12-31.
  if (t.seconds() < -62135596800 || t.seconds() > 253402300799 || t.nanos() < 0 ||
      t.nanos() > 999999999) {
    return "is out of range";
  }
  return "";
}

void ValidateContent(const v1::Content& content, absl::FunctionRef<std::string()> prefix,
                     Violations* violations) {
  if (std::string p = IdProblem(content.content_id()); !p.empty()) {
    violations->Add(prefix() + ".content_id", p);
  }
  if (content.content_type() == v1::CONTENT_TYPE_UNSPECIFIED) {
    violations->Add(prefix() + ".content_type", "is required");
  } else if (!v1::ContentType_IsValid(content.content_type())) {
    violations->Add(prefix() + ".content_type", "is not a known content type");
  }
  if (content.visibility() == v1::VISIBILITY_UNSPECIFIED) {
    violations->Add(prefix() + ".visibility", "is required");
  } else if (!v1::Visibility_IsValid(content.visibility())) {
    violations->Add(prefix() + ".visibility", "is not a known visibility");
  }
  if (content.has_create_time()) {
    if (std::string p = TimestampProblem(content.create_time()); !p.empty()) {
      violations->Add(prefix() + ".create_time", p);
    }
  }
  if (content.sensitive_categories_size() > kMaxSensitiveCategories) {
    violations->Add(prefix() + ".sensitive_categories",
                    absl::StrCat(content.sensitive_categories_size(), " categories; at most ",
                                 kMaxSensitiveCategories, " (one of each) allowed"));
    return;
  }
  for (int i = 0; i < content.sensitive_categories_size(); ++i) {
    int c = content.sensitive_categories(i);
    if (c == v1::SENSITIVE_CATEGORY_UNSPECIFIED || !v1::SensitiveCategory_IsValid(c)) {
      violations->Add(absl::StrCat(prefix(), ".sensitive_categories[", i, "]"),
                      "is not a known sensitive category");
    }
  }
}

void ValidateSource(const v1::Source& source, const std::string& prefix, Violations* violations) {
  auto check = [&](const std::string& value, const char* name) {
    if (value.size() > kMaxSourceFieldBytes) {
      violations->Add(absl::StrCat(prefix, ".", name),
                      absl::StrCat("at most ", kMaxSourceFieldBytes, " bytes allowed"));
    } else if (!value.empty()) {
      if (std::string p = IdProblem(value.substr(0, kMaxIdBytes)); !p.empty()) {
        violations->Add(absl::StrCat(prefix, ".", name), p);
      }
    }
  };
  check(source.channel(), "channel");
  check(source.notice_id(), "notice_id");
  check(source.notice_version(), "notice_version");
  check(source.actor(), "actor");
}

void ValidateId(absl::string_view id, const std::string& field, Violations* v) {
  if (std::string problem = IdProblem(id); !problem.empty()) v->Add(field, problem);
}

void ValidateOptionalId(absl::string_view id, const std::string& field, Violations* v) {
  if (!id.empty()) ValidateId(id, field, v);
}

// Rule 1 of docs/decisions.md: a purpose must be well formed and defined.
void ValidatePurpose(absl::string_view purpose, const std::string& field,
                     const CompiledPolicy& policy, Violations* v) {
  if (std::string problem = PurposeProblem(purpose); !problem.empty()) {
    v->Add(field, problem);
  } else if (!policy.HasPurpose(purpose)) {
    v->Add(field,
           absl::StrCat("\"", purpose, "\" is not defined by policy version ", policy.version()));
  }
}

absl::Status CheckPurposeDefined(absl::string_view purpose, const CompiledPolicy& policy) {
  if (policy.HasPurpose(purpose)) return absl::OkStatus();
  Violations v;
  ValidatePurpose(purpose, "purpose", policy, &v);
  return v.ToStatus();
}

// Validates one check: the request's own fields (index -1) or those of
// items[index]. Field names are built only for violations: a batch of
// 10,000 valid items builds none.
void ValidateCheckItem(const std::string& user_id, bool has_content, const v1::Content& content,
                       int index, Violations* v) {
  auto field = [index](absl::string_view name) {
    return index < 0 ? std::string(name) : absl::StrCat("items[", index, "].", name);
  };
  if (std::string p = IdProblem(user_id); !p.empty()) v->Add(field("user_id"), p);
  if (!has_content) {
    v->Add(field("content"), "is required");
  } else {
    ValidateContent(
        content, [&] { return field("content"); }, v);
  }
}

// The content's create_time against the evaluation time `at` (now, or
// as_of). A create_time later than it would make a minor of today old
// enough (rule 7); up to kMaxClockSkew later is taken as clock skew, and
// the decision then takes the evaluation time. `field` names the content,
// built only for a violation.
void ValidateCreateTime(const v1::Content& content, absl::Time at,
                        absl::FunctionRef<std::string()> field, Violations* v) {
  if (!content.has_create_time()) return;
  const absl::Time created = FromProto(content.create_time());
  if (created > at + kMaxClockSkew) {
    v->Add(absl::StrCat(field(), ".create_time"),
           absl::StrCat("is ", absl::FormatTime(created, absl::UTCTimeZone()),
                        ", more than 5 minutes after the evaluation time ",
                        absl::FormatTime(at, absl::UTCTimeZone())));
  }
}

}  // namespace consent
