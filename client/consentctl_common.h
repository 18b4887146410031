// What consentctl's commands share: usage errors, JSON output, parsing of
// flags and input files. Private to consentctl.
#ifndef CONSENT_CLIENT_CONSENTCTL_COMMON_H_
#define CONSENT_CLIENT_CONSENTCTL_COMMON_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/consent_client.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/timestamp.pb.h"
#include "google/protobuf/util/json_util.h"

ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(std::string, format);
ABSL_DECLARE_FLAG(std::string, request_id);

namespace consent::consentctl {

// Bad usage: main prints it and exits 2.
struct UsageError {
  std::string message;
};
[[noreturn]] void Usage(const std::string& message);

// Prints a server or input error; returns the exit status (1).
int Fail(const absl::Status& status);

// Protobuf JSON with the .proto field names and every field shown, so
// scripts see stable keys.
std::string Json(const google::protobuf::Message& message);
void PrintJson(const google::protobuf::Message& message);

// "POST" or "CONTENT_TYPE_POST", any case; `flag` names the input in the
// usage error.
int ParseEnum(const google::protobuf::EnumDescriptor* descriptor, absl::string_view prefix,
              const std::string& text, absl::string_view flag);
google::protobuf::Timestamp ParseTimestamp(const std::string& text, absl::string_view what);
std::string FormatTimestamp(const google::protobuf::Timestamp& t);

// A batch input file (or stdin for "-"), read line by line, blank lines
// skipped. The format is --format, else "csv" for *.csv, else "jsonl".
class InputLines {
 public:
  explicit InputLines(const std::string& path);
  ~InputLines();
  // The next non-blank line; false at the end.
  bool Next(std::string* line);
  bool csv() const { return csv_; }
  size_t line_number() const { return line_number_; }
  // Bytes read so far, and the file's size (0 for stdin or a pipe): for
  // progress.
  size_t bytes_read() const { return bytes_read_; }
  size_t size() const { return size_; }

 private:
  struct Stream;
  Stream* stream_;
  bool csv_ = false;
  size_t line_number_ = 0;
  size_t bytes_read_ = 0;
  size_t size_ = 0;
};

// Progress of a bulk load on stderr, at most once a second (and at the
// end): "<what>: N <done>, the rate, and with a file of known size the
// share read and the time left.
class Progress {
 public:
  Progress(const InputLines& input, std::string what, std::string done);
  void Update(size_t done, bool last);

 private:
  const InputLines& input_;
  const std::string what_;
  const std::string done_;
  const absl::Time start_;
  absl::Time shown_ = absl::InfinitePast();
};

// Calls `item(line, line_number, csv)` for each line of an input file.
template <typename ItemFn>
void ReadItems(const std::string& path, ItemFn&& item) {
  InputLines input(path);
  std::string line;
  while (input.Next(&line)) item(line, input.line_number(), input.csv());
}

// Splits a CSV line into trimmed columns; `min` to `max` of them. Returns
// false for a header line (first column `header`).
bool CsvColumns(const std::string& line, size_t line_number, size_t min, size_t max,
                absl::string_view header, std::vector<std::string>* cols);

template <typename Message>
void ParseJsonLine(const std::string& line, size_t line_number, Message* message) {
  auto status = google::protobuf::util::JsonStringToMessage(line, message);
  if (!status.ok()) {
    Usage(absl::StrCat("line ", line_number, ": ", std::string(status.message())));
  }
}

// The notice commands (consentctl_notices.cc).
int NoticeCommand(Client& client, const std::vector<std::string>& args);
int NoticesCommand(Client& client, const std::vector<std::string>& args);
int SummaryCommand(Client& client, const std::vector<std::string>& args);
// Bulk import (consentctl_import.cc).
int ImportCommand(Client& client, const std::vector<std::string>& args);
int SnapshotCommand(Client& client, const std::vector<std::string>& args);

}  // namespace consent::consentctl

#endif  // CONSENT_CLIENT_CONSENTCTL_COMMON_H_
