#include "server/wire.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "core/decision_engine.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/slice.h"
#include "server/errors.h"

namespace consent {
namespace {

// A field's tag byte: its number (below 16, so the tag is one byte) and
// wire type.
constexpr char Tag(int field_number, int wire_type) {
  return static_cast<char>(field_number << 3 | wire_type);
}
constexpr int kVarint = 0;
constexpr int kLengthDelimited = 2;
using Decision = v1::Decision;
constexpr char kAllowedTag = Tag(Decision::kAllowedFieldNumber, kVarint);
constexpr char kReasonTag = Tag(Decision::kReasonFieldNumber, kVarint);
constexpr char kPolicyVersionTag = Tag(Decision::kPolicyVersionFieldNumber, kLengthDelimited);
constexpr char kRevisionTag = Tag(Decision::kRevisionFieldNumber, kVarint);
constexpr char kDecisionsTag = Tag(v1::BatchCheckResponse::kDecisionsFieldNumber, kLengthDelimited);
static_assert(Decision::kAllowedFieldNumber < Decision::kReasonFieldNumber &&
                  Decision::kReasonFieldNumber < Decision::kPolicyVersionFieldNumber &&
                  Decision::kPolicyVersionFieldNumber < Decision::kRevisionFieldNumber,
              "Add writes the fields in this order, protobuf's");
constexpr char kResponseRevisionTag = Tag(v1::BatchCheckResponse::kRevisionFieldNumber, kVarint);
static_assert(static_cast<int>(v1::StreamCheckResponse::kDecisionsFieldNumber) ==
                      static_cast<int>(v1::BatchCheckResponse::kDecisionsFieldNumber) &&
                  static_cast<int>(v1::StreamCheckResponse::kRevisionFieldNumber) ==
                      static_cast<int>(v1::BatchCheckResponse::kRevisionFieldNumber),
              "StreamCheck's responses are encoded the same way");
static_assert(v1::BatchCheckResponse::kDecisionsFieldNumber <
                  v1::BatchCheckResponse::kRevisionFieldNumber,
              "Finish writes the revision after the decisions, protobuf's order");

// Writes `value` as protobuf's varint at `out`; returns the end.
char* PutVarint(uint64_t value, char* out) {
  while (value >= 0x80) {
    *out++ = static_cast<char>(value | 0x80);
    value >>= 7;
  }
  *out++ = static_cast<char>(value);
  return out;
}

}  // namespace

void EncodedDecisions::Reserve(int n, absl::string_view version) {
  // Decision.policy_version (left out when empty, as proto3 leaves out
  // default values).
  version_field_.clear();
  if (!version.empty()) {
    char head[11];
    head[0] = kPolicyVersionTag;
    version_field_.append(head, PutVarint(version.size(), head + 1));
    version_field_.append(version.data(), version.size());
  }
  // A decision: tag and length, allowed, reason, version, revision.
  bytes_.reserve(bytes_.size() + static_cast<size_t>(n) * (2 + 2 + 6 + version_field_.size() + 11));
}

void EncodedDecisions::Add(const Verdict& verdict, int64_t revision) {
  // BatchCheckResponse.decisions, each a Decision: allowed, reason,
  // policy_version, revision; fields holding their default value left
  // out, in field order, as protobuf writes them.
  char head[2 + 11 + 2 + 11];  // the decision's tag and length, allowed, reason
  char revision_field[11];
  char* flags = head + 11;
  char* flags_end = flags;
  if (IsAllowed(verdict.reason)) {
    *flags_end++ = kAllowedTag;
    *flags_end++ = 1;
  }
  if (verdict.reason != 0) {
    *flags_end++ = kReasonTag;
    flags_end = PutVarint(static_cast<uint64_t>(static_cast<int64_t>(verdict.reason)), flags_end);
  }
  char* revision_end = revision_field;
  if (revision != 0) {
    *revision_end++ = kRevisionTag;
    revision_end = PutVarint(static_cast<uint64_t>(revision), revision_end);
  }
  const size_t size = static_cast<size_t>(flags_end - flags) + version_field_.size() +
                      static_cast<size_t>(revision_end - revision_field);
  char tag[11];
  tag[0] = kDecisionsTag;
  bytes_.append(tag, PutVarint(size, tag + 1));
  bytes_.append(flags, flags_end);
  bytes_.append(version_field_);
  bytes_.append(revision_field, revision_end);
  if (verdict.reason >= 0 && verdict.reason < static_cast<int>(tally_.size())) {
    ++tally_[verdict.reason];
  }
}

void EncodedDecisions::AddInvalid(const absl::Status& problem) {
  v1::Decision decision;
  *decision.mutable_error() = ToRpcStatus(problem);
  const std::string encoded = decision.SerializeAsString();
  char tag[11];
  tag[0] = kDecisionsTag;
  bytes_.append(tag, PutVarint(encoded.size(), tag + 1));
  bytes_.append(encoded);
  ++tally_[v1::DECISION_REASON_UNSPECIFIED];
}

void EncodedDecisions::Finish(int64_t revision) {
  if (revision == 0) return;  // proto3 leaves a default value out
  char field[11];
  field[0] = kResponseRevisionTag;
  bytes_.append(field, PutVarint(static_cast<uint64_t>(revision), field + 1));
}

google::protobuf::ArenaOptions BatchArenaOptions() {
  google::protobuf::ArenaOptions options;
  options.start_block_size = 64 << 10;
  options.max_block_size = 1 << 20;
  return options;
}

v1::BatchCheckRequest* ParseBatchCheck(const grpc::ByteBuffer& bytes,
                                       google::protobuf::Arena* arena) {
  auto* message = google::protobuf::Arena::CreateMessage<v1::BatchCheckRequest>(arena);
  grpc::ByteBuffer copy(bytes);  // shares the slices; Deserialize clears it
  if (!grpc::SerializationTraits<v1::BatchCheckRequest>::Deserialize(&copy, message).ok()) {
    return nullptr;
  }
  return message;
}

grpc::Status BadBatchCheckRequest() {
  // The client's bytes (gRPC's generated handlers say INTERNAL).
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      "the request is not a well-formed consent.v1.BatchCheckRequest");
}

void SetResponseBytes(const std::string& bytes, grpc::ByteBuffer* response) {
  grpc::Slice slice(bytes);
  grpc::ByteBuffer buffer(&slice, 1);
  response->Swap(&buffer);
}

int StreamCheckMethodIndex() {
  return v1::StreamCheckRequest::descriptor()
      ->file()
      ->FindServiceByName("ConsentRegistry")
      ->FindMethodByName("StreamCheck")
      ->index();
}

grpc::internal::MethodHandler* NewRawStreamCheckHandler(
    grpc::Service* service,
    std::function<grpc::Status(grpc::ServerContext*, RawCheckStream*)> serve) {
  return new grpc::internal::BidiStreamingHandler<grpc::Service, grpc::ByteBuffer,
                                                  grpc::ByteBuffer>(
      [serve = std::move(serve)](grpc::Service*, grpc::ServerContext* context,
                                 RawCheckStream* stream) { return serve(context, stream); },
      service);
}

grpc::Status BadStreamCheckMessage(int64_t index) {
  return grpc::Status(
      grpc::StatusCode::INVALID_ARGUMENT,
      absl::StrCat("message ", index, ": not a well-formed consent.v1.StreamCheckRequest"));
}

StreamArena::StreamArena()
    : first_block_(new char[kFirstBlock]), arena_([this] {
        google::protobuf::ArenaOptions options = BatchArenaOptions();
        options.initial_block = first_block_.get();
        options.initial_block_size = kFirstBlock;
        return options;
      }()) {}

}  // namespace consent
