#include "storage/jetstream_log.h"

#include <nats/nats.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"

namespace consent::storage {
namespace {

// JetStream's API error codes that change what a caller should do.
constexpr int kStreamNameInUse = 10058;       // the stream exists, other settings
constexpr int kNoMessageFound = 10037;        // nothing at that sequence
constexpr int kMessageTooLarge = 10054;       // over the stream's max_msg_size
constexpr int kJetStreamUnavailable = 10008;  // no meta leader yet
// The meta leader does not know enough servers yet to place the stream's
// replicas: a cluster still forming.
constexpr int kNoSuitablePeers = 10005;

int Millis(absl::Duration d) {
  const int64_t ms = absl::ToInt64Milliseconds(d);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(ms, 1 << 30)));
}

// A status from what libnats returned: `what` names the operation.
absl::Status FromNats(natsStatus s, jsErrCode js_error, absl::string_view what) {
  const std::string detail = absl::StrCat(
      what, ": ", natsStatus_GetText(s),
      js_error != 0 ? absl::StrCat(" (JetStream error ", js_error, ")") : "",
      nats_GetLastError(nullptr) != nullptr ? absl::StrCat(": ", nats_GetLastError(nullptr)) : "");
  if (js_error == kNoMessageFound || s == NATS_NOT_FOUND) return absl::NotFoundError(detail);
  if (js_error == kMessageTooLarge || s == NATS_MAX_PAYLOAD) {
    return absl::InvalidArgumentError(detail);
  }
  switch (s) {
    case NATS_TIMEOUT:
    case NATS_NO_SERVER:
    case NATS_NO_RESPONDERS:
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_STALE_CONNECTION:
    case NATS_IO_ERROR:
      return absl::UnavailableError(detail);
    default:
      break;
  }
  if (js_error == kJetStreamUnavailable) return absl::UnavailableError(detail);
  return absl::InternalError(detail);
}

// The command `msg` holds, at stream sequence `sequence`; frees `msg`.
LoggedCommand TakeCommand(uint64_t sequence, natsMsg* msg) {
  LoggedCommand command;
  command.sequence = sequence;
  const char* id = nullptr;
  if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) == NATS_OK && id != nullptr) command.msg_id = id;
  command.bytes.assign(natsMsg_GetData(msg), static_cast<size_t>(natsMsg_GetDataLength(msg)));
  natsMsg_Destroy(msg);
  return command;
}

class NatsReader final : public JetStreamLog::Reader {
 public:
  explicit NatsReader(natsSubscription* sub) : sub_(sub) {}
  ~NatsReader() override { natsSubscription_Destroy(sub_); }

  absl::StatusOr<std::optional<LoggedCommand>> Next(absl::Duration wait) override {
    natsMsg* msg = nullptr;
    const natsStatus s = natsSubscription_NextMsg(&msg, sub_, Millis(wait));
    if (s == NATS_TIMEOUT) return std::nullopt;
    if (s != NATS_OK) return FromNats(s, static_cast<jsErrCode>(0), "reading the command stream");
    jsMsgMetaData* meta = nullptr;
    const natsStatus m = natsMsg_GetMetaData(&meta, msg);
    if (m != NATS_OK) {
      natsMsg_Destroy(msg);
      return FromNats(m, static_cast<jsErrCode>(0), "reading a command's sequence");
    }
    const uint64_t sequence = meta->Sequence.Stream;
    jsMsgMetaData_Destroy(meta);
    return TakeCommand(sequence, msg);
  }

 private:
  natsSubscription* const sub_;
};

class NatsJetStreamLog final : public JetStreamLog {
 public:
  NatsJetStreamLog(JetStreamLogOptions options, natsOptions* nats_options, natsConnection* nc,
                   jsCtx* js)
      : options_(std::move(options)), nats_options_(nats_options), nc_(nc), js_(js) {}
  ~NatsJetStreamLog() override {
    jsCtx_Destroy(js_);
    natsConnection_Destroy(nc_);
    natsOptions_Destroy(nats_options_);
  }

  // Creates the stream, retrying while the cluster elects its JetStream
  // leader, until `deadline`.
  absl::Status EnsureStream(absl::Time deadline) {
    const char* subjects[] = {options_.subject.c_str()};
    jsStreamConfig config;
    jsStreamConfig_Init(&config);
    config.Name = options_.stream.c_str();
    config.Subjects = subjects;
    config.SubjectsLen = 1;
    config.Storage = js_FileStorage;
    config.Replicas = options_.replicas;
    config.MaxMsgSize = static_cast<int32_t>(options_.max_message_bytes);
    config.Duplicates = absl::ToInt64Nanoseconds(options_.duplicate_window);
    config.MaxAge = absl::ToInt64Nanoseconds(options_.max_age);
    // Short attempts: a request sent before the cluster has a JetStream
    // leader is never answered, and must not use up the whole wait.
    jsOptions attempt;
    jsOptions_Init(&attempt);
    attempt.Wait = Millis(std::min(options_.timeout, absl::Seconds(1)));
    absl::Status last;
    while (true) {
      jsStreamInfo* info = nullptr;
      jsErrCode js_error = static_cast<jsErrCode>(0);
      const natsStatus s = js_AddStream(&info, js_, &config, &attempt, &js_error);
      if (info != nullptr) jsStreamInfo_Destroy(info);
      if (s == NATS_OK) return absl::OkStatus();
      if (js_error == kStreamNameInUse) {
        return absl::FailedPreconditionError(absl::StrCat(
            "stream ", options_.stream, " exists with other settings than these (replicas ",
            options_.replicas, ", max message bytes ", options_.max_message_bytes, ", subject ",
            options_.subject, ", max age ",
            options_.max_age == absl::ZeroDuration() ? "none"
                                                     : absl::FormatDuration(options_.max_age),
            "); change it with the NATS tools or use another stream name"));
      }
      last = FromNats(s, js_error, absl::StrCat("creating stream ", options_.stream));
      const bool forming = js_error == kNoSuitablePeers;
      if ((!absl::IsUnavailable(last) && !forming) || absl::Now() >= deadline) return last;
      absl::SleepFor(absl::Milliseconds(100));
    }
  }

  absl::StatusOr<Appended> Append(absl::string_view msg_id, absl::string_view bytes) override {
    if (static_cast<int64_t>(bytes.size()) > options_.max_message_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("a command of ", bytes.size(),
                                                     " bytes; the stream takes at most ",
                                                     options_.max_message_bytes));
    }
    const std::string id(msg_id);
    jsPubOptions publish;
    jsPubOptions_Init(&publish);
    publish.MaxWait = Millis(options_.timeout);
    if (!id.empty()) publish.MsgId = id.c_str();
    jsPubAck* ack = nullptr;
    jsErrCode js_error = static_cast<jsErrCode>(0);
    const natsStatus s = js_Publish(&ack, js_, options_.subject.c_str(), bytes.data(),
                                    static_cast<int>(bytes.size()), &publish, &js_error);
    if (s != NATS_OK) {
      if (ack != nullptr) jsPubAck_Destroy(ack);
      return FromNats(s, js_error, "appending a command");
    }
    Appended appended{ack->Sequence, ack->Duplicate};
    jsPubAck_Destroy(ack);
    return appended;
  }

  // Get and LastSequence wait as long as the JetStream context does
  // (options.timeout, set when it was made).
  absl::StatusOr<LoggedCommand> Get(uint64_t sequence) override {
    natsMsg* msg = nullptr;
    jsErrCode js_error = static_cast<jsErrCode>(0);
    const natsStatus s =
        js_GetMsg(&msg, js_, options_.stream.c_str(), sequence, nullptr, &js_error);
    if (s != NATS_OK) {
      return FromNats(s, js_error, absl::StrCat("reading command ", sequence));
    }
    return TakeCommand(sequence, msg);
  }

  absl::StatusOr<uint64_t> LastSequence() override {
    auto state = GetState();
    if (!state.ok()) return state.status();
    return state->last_sequence;
  }

  absl::StatusOr<State> GetState() override {
    jsStreamInfo* info = nullptr;
    jsErrCode js_error = static_cast<jsErrCode>(0);
    const natsStatus s = js_GetStreamInfo(&info, js_, options_.stream.c_str(), nullptr, &js_error);
    if (s != NATS_OK) return FromNats(s, js_error, "reading the stream's state");
    State state;
    state.first_sequence = info->State.FirstSeq;
    state.last_sequence = info->State.LastSeq;
    if (info->Cluster != nullptr && info->Cluster->Leader != nullptr) {
      state.leader = info->Cluster->Leader;
    }
    jsStreamInfo_Destroy(info);
    return state;
  }

  absl::StatusOr<std::unique_ptr<Reader>> ReadFrom(uint64_t sequence) override {
    jsSubOptions sub_options;
    jsSubOptions_Init(&sub_options);
    sub_options.Stream = options_.stream.c_str();
    sub_options.Ordered = true;
    sub_options.Config.Heartbeat = absl::ToInt64Nanoseconds(options_.reader_heartbeat);
    if (sequence > 1) {
      sub_options.Config.DeliverPolicy = js_DeliverByStartSequence;
      sub_options.Config.OptStartSeq = sequence;
    } else {
      sub_options.Config.DeliverPolicy = js_DeliverAll;
    }
    natsSubscription* sub = nullptr;
    jsErrCode js_error = static_cast<jsErrCode>(0);
    const natsStatus s =
        js_SubscribeSync(&sub, js_, options_.subject.c_str(), nullptr, &sub_options, &js_error);
    if (s != NATS_OK) {
      return FromNats(s, js_error, absl::StrCat("reading commands from ", sequence));
    }
    return std::make_unique<NatsReader>(sub);
  }

 private:
  const JetStreamLogOptions options_;
  natsOptions* const nats_options_;
  natsConnection* const nc_;
  jsCtx* const js_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<JetStreamLog>> JetStreamLog::Open(
    const JetStreamLogOptions& options) {
  if (options.urls.empty()) return absl::InvalidArgumentError("no NATS server URL");
  if (options.replicas < 1 || options.replicas > 5) {
    return absl::InvalidArgumentError(
        absl::StrCat("replicas must be 1 to 5, not ", options.replicas));
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty() ||
      (!options.tls_cert_file.empty() && options.tls_ca_file.empty())) {
    return absl::InvalidArgumentError(
        "a NATS client certificate needs its key, and TLS (its CA file), and the other way round");
  }
  if (options.nkey.empty() != options.nkey_seed_file.empty()) {
    return absl::InvalidArgumentError("a NATS NKey needs its seed file, and the other way round");
  }
  if (!options.nkey.empty() && !options.token.empty()) {
    return absl::InvalidArgumentError("a NATS connection takes a token or an NKey, not both");
  }
  if (!options.nkey.empty() && (options.nkey.size() != 56 || options.nkey[0] != 'U')) {
    // Not echoed: it may be a seed.
    return absl::InvalidArgumentError(
        "a NATS user NKey is its public key, 56 characters starting with U (the seed, S..., goes "
        "in a file)");
  }
  if (options.max_message_bytes < 1 || options.max_message_bytes > (64 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_message_bytes must be 1 to 64 MiB, not ", options.max_message_bytes));
  }
  const absl::Time deadline = absl::Now() + options.open_timeout;
  natsOptions* nats_options = nullptr;
  if (natsOptions_Create(&nats_options) != NATS_OK) {
    return absl::InternalError("cannot create NATS options");
  }
  std::vector<const char*> urls;
  for (const std::string& url : options.urls) urls.push_back(url.c_str());
  natsStatus s = natsOptions_SetServers(nats_options, urls.data(), static_cast<int>(urls.size()));
  if (s == NATS_OK) s = natsOptions_SetTimeout(nats_options, Millis(options.timeout));
  // Keep reconnecting while the cluster is away: a write waits for it
  // (and times out), it does not lose the connection for good.
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(nats_options, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(nats_options, 100);
  if (s == NATS_OK && !options.tls_ca_file.empty()) {
    s = natsOptions_SetSecure(nats_options, true);
    if (s == NATS_OK) {
      s = natsOptions_LoadCATrustedCertificates(nats_options, options.tls_ca_file.c_str());
    }
    if (s == NATS_OK && !options.tls_cert_file.empty()) {
      s = natsOptions_LoadCertificatesChain(nats_options, options.tls_cert_file.c_str(),
                                            options.tls_key_file.c_str());
    }
  }
  if (s == NATS_OK && !options.token.empty()) {
    s = natsOptions_SetToken(nats_options, options.token.c_str());
  }
  if (s == NATS_OK && !options.nkey.empty()) {
    s = natsOptions_SetNKeyFromSeed(nats_options, options.nkey.c_str(),
                                    options.nkey_seed_file.c_str());
  }
  if (s != NATS_OK) {
    natsOptions_Destroy(nats_options);
    return FromNats(s, static_cast<jsErrCode>(0), "setting NATS options");
  }
  natsConnection* nc = nullptr;
  s = natsConnection_Connect(&nc, nats_options);
  if (s != NATS_OK) {
    natsOptions_Destroy(nats_options);
    return FromNats(s, static_cast<jsErrCode>(0),
                    absl::StrCat("connecting to ", absl::StrJoin(options.urls, ",")));
  }
  jsOptions js_options;
  jsOptions_Init(&js_options);
  js_options.Wait = Millis(options.timeout);
  jsCtx* js = nullptr;
  s = natsConnection_JetStream(&js, nc, &js_options);
  if (s != NATS_OK) {
    natsConnection_Destroy(nc);
    natsOptions_Destroy(nats_options);
    return FromNats(s, static_cast<jsErrCode>(0), "opening JetStream");
  }
  auto log = std::make_unique<NatsJetStreamLog>(options, nats_options, nc, js);
  if (absl::Status ensured = log->EnsureStream(deadline); !ensured.ok()) return ensured;
  return log;
}

}  // namespace consent::storage
