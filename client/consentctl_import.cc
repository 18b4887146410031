// consentctl import: bulk onboarding of subjects (ImportSubjects) from a CSV
// or JSON lines file, resumable, with progress on stderr.
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/civil_time.h"
#include "absl/time/clock.h"
#include "client/consentctl_common.h"
#include "google/protobuf/struct.pb.h"

ABSL_FLAG(std::string, import_id, "",
          "import: names the import, whose progress the server keeps (default: the file's name "
          "and size, so running the same command again resumes it).");
ABSL_FLAG(int, import_attempts, 5,
          "import: calls in all when the server is unavailable (restarting, draining); each "
          "resumes where the last acknowledged one ended.");

namespace consent::consentctl {
namespace {

constexpr int kRecordsPerMessage = 1000;
// Rejected records printed, at most (all are counted).
constexpr int kMaxPrinted = 100;

// A CSV line's fields: comma-separated, each optionally in double quotes
// ("" inside quotes is a quote), surrounding whitespace trimmed outside
// quotes.
absl::StatusOr<std::vector<std::string>> SplitCsv(absl::string_view line) {
  std::vector<std::string> fields;
  size_t i = 0;
  for (;;) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    std::string field;
    if (i < line.size() && line[i] == '"') {
      ++i;
      for (;;) {
        if (i >= line.size()) return absl::InvalidArgumentError("a quoted field is not closed");
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            field.push_back('"');
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        field.push_back(line[i++]);
      }
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
      if (i < line.size() && line[i] != ',') {
        return absl::InvalidArgumentError("text after a quoted field");
      }
    } else {
      const size_t comma = line.find(',', i);
      const size_t end = comma == absl::string_view::npos ? line.size() : comma;
      field = std::string(absl::StripAsciiWhitespace(line.substr(i, end - i)));
      i = end;
    }
    fields.push_back(std::move(field));
    if (i >= line.size()) return fields;
    ++i;  // the comma
  }
}

absl::StatusOr<v1::Date> ParseBirthDate(absl::string_view text) {
  absl::CivilDay day;
  if (!absl::ParseCivilTime(text, &day) || absl::FormatCivilTime(day) != text) {
    return absl::InvalidArgumentError(
        absl::StrCat("birth_date \"", text, "\" is not a date (YYYY-MM-DD)"));
  }
  v1::Date date;
  date.set_year(static_cast<int32_t>(day.year()));
  date.set_month(day.month());
  date.set_day(day.day());
  return date;
}

// "OBJECTED" or "PREFERENCE_STATE_OBJECTED", any case.
absl::Status AddPreference(absl::string_view purpose, const std::string& state,
                           v1::ImportRecord* record) {
  v1::ImportedPreference* p = record->add_preferences();
  p->set_purpose(std::string(purpose));
  try {
    p->set_state(static_cast<v1::PreferenceState>(ParseEnum(
        v1::PreferenceState_descriptor(), "PREFERENCE_STATE_", state, absl::StrCat(purpose))));
  } catch (const UsageError& e) {
    return absl::InvalidArgumentError(absl::StrCat("preferences: ", e.message));
  }
  return absl::OkStatus();
}

// The columns of an import CSV, by its header line.
struct CsvLayout {
  int user_id = -1, jurisdiction = -1, birth_date = -1, preferences = -1;
  size_t columns = 0;
};

absl::StatusOr<CsvLayout> ParseHeader(absl::string_view line) {
  absl::StatusOr<std::vector<std::string>> fields = SplitCsv(line);
  if (!fields.ok()) return fields.status();
  CsvLayout layout;
  layout.columns = fields->size();
  for (size_t i = 0; i < fields->size(); ++i) {
    const std::string& name = (*fields)[i];
    int* column = name == "user_id"        ? &layout.user_id
                  : name == "jurisdiction" ? &layout.jurisdiction
                  : name == "birth_date"   ? &layout.birth_date
                  : name == "preferences"  ? &layout.preferences
                                           : nullptr;
    if (column == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("header column \"", name,
                       "\" is not one of user_id, jurisdiction, birth_date, preferences"));
    }
    if (*column >= 0) {
      return absl::InvalidArgumentError(absl::StrCat("header column \"", name, "\" repeats"));
    }
    *column = static_cast<int>(i);
  }
  if (layout.user_id < 0) return absl::InvalidArgumentError("the header has no user_id column");
  return layout;
}

// user_id,jurisdiction,birth_date,preferences (in the header's order);
// preferences as purpose=STATE separated by ';'. Empty cells set nothing.
absl::StatusOr<v1::ImportRecord> ParseCsvRecord(absl::string_view line, const CsvLayout& layout) {
  absl::StatusOr<std::vector<std::string>> fields = SplitCsv(line);
  if (!fields.ok()) return fields.status();
  if (fields->size() != layout.columns) {
    return absl::InvalidArgumentError(
        absl::StrCat(fields->size(), " columns; the header has ", layout.columns));
  }
  v1::ImportRecord record;
  record.set_user_id((*fields)[layout.user_id]);
  if (layout.jurisdiction >= 0) record.set_jurisdiction((*fields)[layout.jurisdiction]);
  if (layout.birth_date >= 0 && !(*fields)[layout.birth_date].empty()) {
    absl::StatusOr<v1::Date> date = ParseBirthDate((*fields)[layout.birth_date]);
    if (!date.ok()) return date.status();
    *record.mutable_birth_date() = *date;
  }
  if (layout.preferences >= 0) {
    for (absl::string_view item :
         absl::StrSplit((*fields)[layout.preferences], ';', absl::SkipWhitespace())) {
      std::vector<std::string> parts = absl::StrSplit(item, absl::MaxSplits('=', 1));
      if (parts.size() != 2) {
        return absl::InvalidArgumentError(
            absl::StrCat("preferences: \"", item, "\" is not purpose=STATE"));
      }
      if (absl::Status s =
              AddPreference(absl::StripAsciiWhitespace(parts[0]),
                            std::string(absl::StripAsciiWhitespace(parts[1])), &record);
          !s.ok()) {
        return s;
      }
    }
  }
  return record;
}

// {"user_id": .., "jurisdiction": .., "birth_date": "YYYY-MM-DD",
//  "preferences": {"purpose": "STATE", ..}}; null or absent sets nothing.
absl::StatusOr<v1::ImportRecord> ParseJsonRecord(const std::string& line) {
  google::protobuf::Struct object;
  auto parsed = google::protobuf::util::JsonStringToMessage(line, &object);
  if (!parsed.ok()) return absl::InvalidArgumentError(std::string(parsed.message()));
  v1::ImportRecord record;
  auto text = [](const google::protobuf::Value& value, absl::string_view key,
                 std::string* out) -> absl::Status {
    if (value.has_null_value()) return absl::OkStatus();
    if (!value.has_string_value()) {
      return absl::InvalidArgumentError(absl::StrCat(key, " must be a string"));
    }
    *out = value.string_value();
    return absl::OkStatus();
  };
  for (const auto& [key, value] : object.fields()) {
    absl::Status s;
    if (key == "user_id") {
      s = text(value, key, record.mutable_user_id());
    } else if (key == "jurisdiction") {
      s = text(value, key, record.mutable_jurisdiction());
    } else if (key == "birth_date") {
      std::string date_text;
      s = text(value, key, &date_text);
      if (s.ok() && !date_text.empty()) {
        absl::StatusOr<v1::Date> date = ParseBirthDate(date_text);
        if (!date.ok()) return date.status();
        *record.mutable_birth_date() = *date;
      }
    } else if (key == "preferences") {
      if (value.has_null_value()) continue;
      if (!value.has_struct_value()) {
        return absl::InvalidArgumentError(
            "preferences must be an object of purpose: STATE (OBJECTED, CONSENTED or CLEARED)");
      }
      for (const auto& [purpose, state] : value.struct_value().fields()) {
        if (!state.has_string_value()) {
          return absl::InvalidArgumentError(
              absl::StrCat("preferences.", purpose,
                           " must be a string: OBJECTED, CONSENTED or "
                           "CLEARED"));
        }
        s = AddPreference(purpose, state.string_value(), &record);
        if (!s.ok()) break;
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown field \"", key, "\" (user_id, jurisdiction, birth_date, preferences)"));
    }
    if (!s.ok()) return s;
  }
  return record;
}

// The default import id: the file's name and size, so the same command
// resumes the same import, and a file replaced by another is a new one.
std::string DefaultImportId(const std::string& path, size_t size) {
  const size_t slash = path.find_last_of('/');
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  if (name.size() > 100) name.resize(100);
  return absl::StrCat(name, "-", size);
}

}  // namespace

int ImportCommand(Client& client, const std::vector<std::string>& args) {
  if (args.size() != 2) Usage("import takes FILE");
  const std::string& path = args[1];
  std::string import_id = absl::GetFlag(FLAGS_import_id);
  if (import_id.empty()) {
    InputLines probe(path);
    if (probe.size() == 0) Usage("importing from stdin or a pipe needs --import_id");
    import_id = DefaultImportId(path, probe.size());
  }
  const int attempts = absl::GetFlag(FLAGS_import_attempts);
  if (attempts < 1) Usage("--import_attempts must be at least 1");

  absl::StatusOr<int64_t> acknowledged = client.ImportProgress(import_id);
  if (!acknowledged.ok()) return Fail(acknowledged.status());
  const int64_t resumed_at = *acknowledged;
  if (resumed_at > 0) {
    std::cerr << "import " << import_id << ": resuming after byte " << resumed_at
              << " (acknowledged by an earlier run)\n";
  }
  const absl::Time start = absl::Now();
  int64_t file_rejected = 0;
  int64_t acknowledged_lines = 0;  // records acknowledged before, not sent
  // A retry reads the file again: lines up to here are counted already.
  int64_t counted_through = 0;
  int printed = 0;
  absl::StatusOr<v1::ImportSubjectsResponse> response;
  for (int attempt = 1;; ++attempt) {
    InputLines input(path);
    Progress progress(input, absl::StrCat("import ", import_id), "records sent");
    std::optional<CsvLayout> layout;
    size_t sent = 0;
    const int64_t after = *acknowledged;
    absl::Status input_error;
    auto next = [&](v1::ImportSubjectsRequest* message) {
      std::string line;
      while (message->records_size() < kRecordsPerMessage) {
        if (!input.Next(&line)) {
          progress.Update(sent, true);
          return false;
        }
        if (input.csv() && !layout) {
          absl::StatusOr<CsvLayout> header = ParseHeader(line);
          if (!header.ok()) {
            input_error = absl::InvalidArgumentError(
                absl::StrCat(path, " line ", input.line_number(), ": ", header.status().message()));
            return false;
          }
          layout = *header;
          continue;
        }
        const int64_t offset = static_cast<int64_t>(input.bytes_read());
        if (offset <= after) {  // acknowledged already
          if (offset > counted_through) {
            counted_through = offset;
            ++acknowledged_lines;
          }
          continue;
        }
        absl::StatusOr<v1::ImportRecord> record =
            input.csv() ? ParseCsvRecord(line, *layout) : ParseJsonRecord(line);
        if (!record.ok()) {
          if (offset <= counted_through) continue;
          counted_through = offset;
          ++file_rejected;
          if (printed++ < kMaxPrinted) {
            std::cerr << "rejected: line " << input.line_number() << ": "
                      << record.status().message() << "\n";
          }
          continue;
        }
        record->set_offset(offset);
        *message->add_records() = *std::move(record);
        ++sent;
      }
      progress.Update(sent, false);
      return true;
    };
    response = client.ImportSubjects(import_id, next);
    if (!input_error.ok()) return Fail(input_error);
    if (response.ok()) break;
    const absl::StatusCode code = response.status().code();
    if ((code != absl::StatusCode::kUnavailable && code != absl::StatusCode::kCancelled) ||
        attempt >= attempts) {
      return Fail(response.status());
    }
    acknowledged = client.ImportProgress(import_id);
    if (!acknowledged.ok()) return Fail(acknowledged.status());
    std::cerr << "import " << import_id << ": " << response.status().message() << "\nimport "
              << import_id << ": resuming after byte " << *acknowledged << "\n";
  }
  for (const v1::ImportRejection& r : response->rejections()) {
    if (printed++ >= kMaxPrinted) break;
    std::cerr << "rejected: byte offset " << r.offset() << ", user " << r.user_id() << ": "
              << (r.field().empty() ? "" : r.field() + " ") << r.description() << "\n";
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(*response);
  } else {
    std::cout << "import " << import_id << ": " << response->imported() << " imported, "
              << response->rejected() + file_rejected << " rejected (" << file_rejected
              << " unreadable in the file), " << response->skipped() + acknowledged_lines
              << " acknowledged before; acknowledged through byte "
              << response->acknowledged_offset() << ", registry revision " << response->revision()
              << " (" << absl::StrFormat("%.1f", seconds) << " s)\n";
  }
  return response->rejected() + file_rejected == 0 ? 0 : 1;
}

}  // namespace consent::consentctl
