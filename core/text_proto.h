// Reading protobuf text-format files (the policy, the auth file): the file's
// bytes, and parse errors with their lines.
#ifndef CONSENT_CORE_TEXT_PROTO_H_
#define CONSENT_CORE_TEXT_PROTO_H_

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/io/tokenizer.h"

namespace consent {

// Collects a text-format parser's errors and warnings as "line L:C: message".
class TextErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    // Lines and columns are 0-based in protobuf.
    errors_.push_back(absl::StrCat("line ", line + 1, ":", column + 1, ": ", message));
  }
  void AddWarning(int line, int column, const std::string& message) override {
    AddError(line, column, message);
  }
  const std::vector<std::string>& errors() const { return errors_; }

 private:
  std::vector<std::string> errors_;
};

// The whole of file `path`; NOT_FOUND "cannot read <what> <path>" when it
// cannot be opened.
inline absl::StatusOr<std::string> ReadTextFile(const std::string& path, absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", what, " ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace consent

#endif  // CONSENT_CORE_TEXT_PROTO_H_
