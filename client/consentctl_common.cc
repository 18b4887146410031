#include "client/consentctl_common.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/time_util.h"

namespace consent::consentctl {

void Usage(const std::string& message) { throw UsageError{message}; }

int Fail(const absl::Status& status) {
  std::cerr << "consentctl: " << absl::StatusCodeToString(status.code()) << ": " << status.message()
            << "\n";
  return 1;
}

std::string Json(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(message, &out, options).ok()) return "{}";
  return out;
}

void PrintJson(const google::protobuf::Message& message) { std::cout << Json(message) << "\n"; }

int ParseEnum(const google::protobuf::EnumDescriptor* descriptor, absl::string_view prefix,
              const std::string& text, absl::string_view flag) {
  std::string name = absl::AsciiStrToUpper(text);
  if (!absl::StartsWith(name, prefix)) name = absl::StrCat(prefix, name);
  const auto* value = descriptor->FindValueByName(name);
  if (value == nullptr || value->number() == 0) {
    std::vector<std::string> names;
    for (int i = 1; i < descriptor->value_count(); ++i) {
      names.push_back(std::string(absl::StripPrefix(descriptor->value(i)->name(), prefix)));
    }
    Usage(absl::StrCat("--", flag, "=", text, " is not one of ", absl::StrJoin(names, ", ")));
  }
  return value->number();
}

google::protobuf::Timestamp ParseTimestamp(const std::string& text, absl::string_view what) {
  google::protobuf::Timestamp t;
  if (!google::protobuf::util::TimeUtil::FromString(text, &t)) {
    Usage(
        absl::StrCat(what, " \"", text, "\" is not an RFC 3339 time such as 2024-05-01T12:00:00Z"));
  }
  return t;
}

std::string FormatTimestamp(const google::protobuf::Timestamp& t) {
  return google::protobuf::util::TimeUtil::ToString(t);
}

struct InputLines::Stream {
  std::ifstream file;
  std::istream* in = &std::cin;
};

InputLines::InputLines(const std::string& path) : stream_(new Stream) {
  std::string format = absl::GetFlag(FLAGS_format);
  if (format.empty()) format = absl::EndsWith(path, ".csv") ? "csv" : "jsonl";
  if (format != "csv" && format != "jsonl") Usage("--format must be jsonl or csv");
  csv_ = format == "csv";
  if (path != "-") {
    stream_->file.open(path);
    if (!stream_->file) Usage(absl::StrCat("cannot read ", path));
    stream_->in = &stream_->file;
    std::error_code error;
    if (std::filesystem::is_regular_file(path, error)) {
      size_ = static_cast<size_t>(std::filesystem::file_size(path, error));
      if (error) size_ = 0;
    }
  }
}

InputLines::~InputLines() { delete stream_; }

bool InputLines::Next(std::string* line) {
  while (std::getline(*stream_->in, *line)) {
    ++line_number_;
    bytes_read_ += line->size() + 1;
    if (!absl::StripAsciiWhitespace(*line).empty()) return true;
  }
  return false;
}

Progress::Progress(const InputLines& input, std::string what, std::string done)
    : input_(input), what_(std::move(what)), done_(std::move(done)), start_(absl::Now()) {}

void Progress::Update(size_t done, bool last) {
  const absl::Time now = absl::Now();
  if (!last && now - shown_ < absl::Seconds(1)) return;
  shown_ = now;
  const double seconds = absl::ToDoubleSeconds(now - start_);
  const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0;
  std::cerr << what_ << ": " << done << " " << done_ << ", " << static_cast<int64_t>(rate) << "/s";
  if (input_.size() > 0) {
    const double share = static_cast<double>(input_.bytes_read()) / input_.size();
    std::cerr << ", " << static_cast<int>(100 * std::min(share, 1.0)) << "% of the file";
    if (!last && share > 0) {
      std::cerr << ", about " << static_cast<int64_t>(seconds / share - seconds) << " s left";
    }
  }
  std::cerr << (last ? " (done)" : "") << "\n";
}

bool CsvColumns(const std::string& line, size_t line_number, size_t min, size_t max,
                absl::string_view header, std::vector<std::string>* cols) {
  *cols = absl::StrSplit(line, ',');
  if (cols->size() < min || cols->size() > max) {
    Usage(absl::StrCat("line ", line_number, ": expected ", min, " to ", max,
                       " comma-separated columns"));
  }
  for (auto& c : *cols) absl::StripAsciiWhitespace(&c);
  return (*cols)[0] != header;
}

}  // namespace consent::consentctl
