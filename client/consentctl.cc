// consentctl: command-line client of consentd. `consentctl --help` lists
// the commands; docs in README.md.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "client/consent_client.h"
#include "client/consentctl_common.h"
#include "client/credential_flags.h"
#include "core/enum_names.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"

ABSL_FLAG(std::string, target, "",
          "consentd address, host:port. Empty: $CONSENT_TARGET when set, else 127.0.0.1:50051.");
ABSL_FLAG(bool, json, false, "Print responses as JSON (one document per line).");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(10), "Deadline of each call.");
// Credentials: client/credential_flags.h.
// Writes.
ABSL_FLAG(std::string, request_id, "", "Idempotency key of a write.");
ABSL_FLAG(int64_t, expected_revision, -1,
          "Write only if the subject is at this revision (0: does not exist yet); "
          "-1: no check.");
ABSL_FLAG(std::string, effective_time, "", "Preference in effect from (RFC 3339).");
ABSL_FLAG(std::string, expire_time, "", "Preference in effect until (RFC 3339).");
ABSL_FLAG(std::string, channel, "", "Source channel of a write (settings_page, import...).");
ABSL_FLAG(std::string, notice_id, "", "Privacy notice shown.");
ABSL_FLAG(std::string, notice_version, "", "Version of the privacy notice.");
ABSL_FLAG(std::string, actor, "", "Who acted (user, or an operator id).");
// Subject attributes (subject set): only the flags given are updated.
ABSL_FLAG(std::optional<std::string>, jurisdiction, std::nullopt,
          "ISO 3166 code, e.g. GB or US-CA.");
ABSL_FLAG(std::optional<std::string>, birth_date, std::nullopt, "YYYY-MM-DD.");
ABSL_FLAG(std::optional<std::string>, account_state, std::nullopt, "ACTIVE or DEACTIVATED.");
ABSL_FLAG(std::vector<std::string>, clear, {},
          "subject set: comma-separated attributes to clear (jurisdiction, birth_date, "
          "account_state).");
// Checks.
ABSL_FLAG(std::string, content_type, "POST",
          "POST, COMMENT, PHOTO, VIDEO, STORY, PROFILE or MESSAGE.");
ABSL_FLAG(std::string, visibility, "PUBLIC", "PUBLIC, FOLLOWERS, FRIENDS, CUSTOM or PRIVATE.");
ABSL_FLAG(std::string, create_time, "", "When the content was created (RFC 3339).");
ABSL_FLAG(std::string, sensitive, "",
          "Comma-separated sensitive categories (HEALTH, BIOMETRIC, ...).");
ABSL_FLAG(bool, explain, false, "check: print how each decision rule came out.");
ABSL_FLAG(std::string, as_of, "",
          "check, batch-check: answer as the registry would have at this past time (RFC 3339).");
ABSL_FLAG(int64_t, start_revision, 0,
          "watch: first revision to show (0: the oldest kept); verify: first revision to check.");
ABSL_FLAG(int64_t, end_revision, 0, "verify: last revision to check (0: the current one).");
ABSL_FLAG(std::string, purpose, "", "watch: only changes that affect this purpose.");
ABSL_FLAG(std::string, format, "",
          "batch-check, batch-set, notices and import input: jsonl or csv (default: csv for *.csv, "
          "else jsonl).");

namespace consent::consentctl {
namespace {

constexpr char kUsage[] = R"(consentctl: command-line client of consentd.

Usage: consentctl [flags] COMMAND ARGS...

Commands:
  object   USER PURPOSE        record an objection        (SetPreference OBJECTED)
  consent  USER PURPOSE        record a consent           (SetPreference CONSENTED)
  clear    USER PURPOSE        withdraw either, back to the policy default
  subject get USER             current attributes, preferences and notices
  subject set USER [--jurisdiction=GB] [--birth_date=1990-01-31] [--account_state=ACTIVE]
                   [--clear=birth_date,...]
  subject delete USER          account deleted: every later check is denied
  exclude  USER CONTENT_ID PURPOSE   the user excludes one content item (and sub-purposes)
  include  USER CONTENT_ID PURPOSE   ... and includes it again
  check PURPOSE USER CONTENT_ID [--content_type=POST] [--visibility=PUBLIC]
                               [--create_time=RFC3339] [--sensitive=HEALTH,...]
                               [--as_of=RFC3339] [--explain]
  batch-check PURPOSE FILE     FILE of JSON lines ({"user_id":..,"content":{..}})
                               or CSV (user_id,content_id,content_type,visibility,
                               create_time,sensitive); - reads stdin
  batch-set FILE               import preferences (BatchSetPreferences, 1,000 per
                               atomic batch): JSON lines of SetPreferenceRequest or
                               CSV (user_id,purpose,state,effective_time,expire_time)
  import FILE [--import_id=ID] bulk onboarding (ImportSubjects): CSV with a header of
                               user_id,jurisdiction,birth_date,preferences (any order,
                               all but user_id optional; preferences purpose=STATE
                               separated by ';') or JSON lines {"user_id":..,
                               "jurisdiction":..,"birth_date":"YYYY-MM-DD",
                               "preferences":{"ai_training":"OBJECTED"}}. Resumable: the
                               same command again goes on after the last acknowledged
                               record; exit 1 if any record was rejected
  notice USER NOTICE_ID VERSION PURPOSE[,PURPOSE...] --notice_channel=EMAIL|IN_APP|BANNER
                               [--delivery_time=RFC3339] [--backfill]
                               record that the user was given a privacy notice
  notices FILE                 record notices in bulk (BatchRecordNotices, --batch_size
                               per atomic batch, progress on stderr): JSON lines of
                               RecordNoticeRequest or CSV (user_id,notice_id,
                               notice_version,purposes separated by ';',channel,
                               delivery_time[,backfill])
  summary USER                 for each purpose: used or not, why, the legal basis, the
                               user's preference and the notice (--json for a page)
  history USER                 the user's change events, oldest first; with --json one
                               document (subject and every event) for an access request
  watch [--start_revision=N] [--purpose=P]
                               follow the change feed (JSON lines with --json)
  verify [--start_revision=N] [--end_revision=M]
                               walk the audit hash chain; exit 1 if broken
  policy get | policy reload
  health [SERVICE]             gRPC health of the server (or of SERVICE, e.g.
                               consent.v1.ConsentRegistry: NOT_SERVING while writes
                               are refused); exit 0 only when SERVING (exec probes)
  backup NAME                  consistent copy of the registry into a new directory NAME
                               under the server's --backup_dir; restore: consentd
                               --data_dir=<a copy of that directory>
  snapshot export FILE [--pseudonymize]
                               signed snapshot of every subject for offline decisions
                               (ExportSnapshot; docs/offline.md), progress on stderr
  snapshot verify FILE --public_key=PEM
                               check a snapshot as a job loads it: signature, structure,
                               policy; exit 1 if any check fails

Exit status: 0 on success, 1 on an error from the server or the input,
2 on bad usage.)";

v1::Date ParseDate(const std::string& text) {
  absl::CivilDay day;
  if (!absl::ParseCivilTime(text, &day)) {
    Usage(absl::StrCat("--birth_date \"", text, "\" is not YYYY-MM-DD"));
  }
  v1::Date date;
  date.set_year(static_cast<int32_t>(day.year()));
  date.set_month(day.month());
  date.set_day(day.day());
  return date;
}

v1::Source SourceFromFlags() {
  v1::Source source;
  source.set_channel(absl::GetFlag(FLAGS_channel));
  source.set_notice_id(absl::GetFlag(FLAGS_notice_id));
  source.set_notice_version(absl::GetFlag(FLAGS_notice_version));
  source.set_actor(absl::GetFlag(FLAGS_actor));
  return source;
}

void FillContent(v1::Content* content, const std::string& content_id,
                 const std::string& content_type, const std::string& visibility,
                 const std::string& create_time, const std::string& sensitive) {
  content->set_content_id(content_id);
  content->set_content_type(static_cast<v1::ContentType>(
      ParseEnum(v1::ContentType_descriptor(), "CONTENT_TYPE_", content_type, "content_type")));
  content->set_visibility(static_cast<v1::Visibility>(
      ParseEnum(v1::Visibility_descriptor(), "VISIBILITY_", visibility, "visibility")));
  if (!create_time.empty()) {
    *content->mutable_create_time() = ParseTimestamp(create_time, "create_time");
  }
  for (absl::string_view c : absl::StrSplit(sensitive, ';', absl::SkipWhitespace())) {
    for (absl::string_view part : absl::StrSplit(c, ',', absl::SkipWhitespace())) {
      content->add_sensitive_categories(static_cast<v1::SensitiveCategory>(
          ParseEnum(v1::SensitiveCategory_descriptor(), "SENSITIVE_CATEGORY_",
                    std::string(absl::StripAsciiWhitespace(part)), "sensitive")));
    }
  }
}

std::string DescribeDecision(const v1::Decision& d) {
  // A batch item whose own fields are invalid: its error, no decision.
  if (d.has_error()) return absl::StrCat("INVALID  ", d.error().message());
  return absl::StrCat(
      d.allowed() ? "ALLOWED " : "DENIED  ",
      EnumValueName(v1::DecisionReason_descriptor(), d.reason(), "DECISION_REASON_"), "  (policy ",
      d.policy_version(), ", revision ", d.revision(), ")");
}

int SetPreference(Client& client, v1::PreferenceState state, const std::vector<std::string>& args) {
  if (args.size() != 3) Usage(absl::StrCat(args[0], " takes USER PURPOSE"));
  v1::SetPreferenceRequest request;
  request.set_user_id(args[1]);
  request.set_purpose(args[2]);
  request.set_state(state);
  if (!absl::GetFlag(FLAGS_effective_time).empty()) {
    *request.mutable_effective_time() =
        ParseTimestamp(absl::GetFlag(FLAGS_effective_time), "--effective_time");
  }
  if (!absl::GetFlag(FLAGS_expire_time).empty()) {
    *request.mutable_expire_time() =
        ParseTimestamp(absl::GetFlag(FLAGS_expire_time), "--expire_time");
  }
  v1::Source source = SourceFromFlags();
  if (source.ByteSizeLong() > 0) *request.mutable_source() = source;
  request.set_request_id(absl::GetFlag(FLAGS_request_id));
  if (absl::GetFlag(FLAGS_expected_revision) >= 0) {
    request.set_expected_revision(absl::GetFlag(FLAGS_expected_revision));
  }
  auto response = client.SetPreference(request);
  if (!response.ok()) return Fail(response.status());
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(*response);
  } else {
    std::cout << args[0] << " recorded for " << args[1] << " / " << args[2] << " at revision "
              << response->revision() << "\n";
  }
  return 0;
}

int SubjectCommand(Client& client, const std::vector<std::string>& args) {
  if (args.size() != 3) Usage("subject takes get|set|delete USER");
  const std::string& verb = args[1];
  const std::string& user = args[2];
  if (verb == "get") {
    v1::GetSubjectRequest request;
    request.set_user_id(user);
    auto response = client.GetSubject(request);
    if (!response.ok()) return Fail(response.status());
    if (absl::GetFlag(FLAGS_json)) {
      PrintJson(*response);
      return 0;
    }
    const v1::Subject& s = response->subject();
    const v1::SubjectAttributes& a = s.attributes();
    std::cout << "user " << s.user_id() << "  revision " << s.revision() << "\n"
              << "  jurisdiction  " << (a.jurisdiction().empty() ? "(unknown)" : a.jurisdiction())
              << "\n  birth_date    "
              << (a.has_birth_date()
                      ? absl::StrCat(a.birth_date().year(), "-",
                                     absl::Dec(a.birth_date().month(), absl::kZeroPad2), "-",
                                     absl::Dec(a.birth_date().day(), absl::kZeroPad2))
                      : "(unknown)")
              << "\n  account_state "
              << EnumValueName(v1::AccountState_descriptor(), a.account_state(), "ACCOUNT_STATE_")
              << "\n";
    for (const v1::Preference& p : s.preferences()) {
      std::cout << "  " << p.purpose() << ": "
                << EnumValueName(v1::PreferenceState_descriptor(), p.state(), "PREFERENCE_STATE_")
                << " (revision " << p.revision() << ")\n";
    }
    for (const v1::NoticeDelivery& n : s.notices()) {
      std::cout << "  notice " << n.notice_id() << " version " << n.notice_version() << " for "
                << absl::StrJoin(n.purposes(), ",") << ": delivered "
                << FormatTimestamp(n.delivery_time()) << " (revision " << n.revision() << ")\n";
    }
    return 0;
  }
  if (verb == "set") {
    v1::UpdateSubjectRequest request;
    request.set_user_id(user);
    v1::SubjectAttributes* a = request.mutable_attributes();
    if (auto j = absl::GetFlag(FLAGS_jurisdiction)) {
      a->set_jurisdiction(*j);
      request.mutable_update_mask()->add_paths("jurisdiction");
    }
    if (auto b = absl::GetFlag(FLAGS_birth_date)) {
      *a->mutable_birth_date() = ParseDate(*b);
      request.mutable_update_mask()->add_paths("birth_date");
    }
    if (auto state = absl::GetFlag(FLAGS_account_state)) {
      a->set_account_state(static_cast<v1::AccountState>(
          ParseEnum(v1::AccountState_descriptor(), "ACCOUNT_STATE_", *state, "account_state")));
      request.mutable_update_mask()->add_paths("account_state");
    }
    // Named but left unset in `attributes`: the server clears them.
    for (const std::string& field : absl::GetFlag(FLAGS_clear)) {
      request.mutable_update_mask()->add_paths(field);
    }
    if (request.update_mask().paths_size() == 0) {
      Usage("subject set needs --jurisdiction, --birth_date, --account_state or --clear");
    }
    v1::Source source = SourceFromFlags();
    if (source.ByteSizeLong() > 0) *request.mutable_source() = source;
    request.set_request_id(absl::GetFlag(FLAGS_request_id));
    if (absl::GetFlag(FLAGS_expected_revision) >= 0) {
      request.set_expected_revision(absl::GetFlag(FLAGS_expected_revision));
    }
    auto response = client.UpdateSubject(request);
    if (!response.ok()) return Fail(response.status());
    if (absl::GetFlag(FLAGS_json)) {
      PrintJson(*response);
    } else {
      std::cout << "subject " << user << " updated at revision " << response->revision() << "\n";
    }
    return 0;
  }
  if (verb == "delete") {
    v1::DeleteSubjectRequest request;
    request.set_user_id(user);
    request.set_request_id(absl::GetFlag(FLAGS_request_id));
    v1::Source source = SourceFromFlags();
    if (source.ByteSizeLong() > 0) *request.mutable_source() = source;
    if (absl::GetFlag(FLAGS_expected_revision) >= 0) {
      request.set_expected_revision(absl::GetFlag(FLAGS_expected_revision));
    }
    auto response = client.DeleteSubject(request);
    if (!response.ok()) return Fail(response.status());
    if (absl::GetFlag(FLAGS_json)) {
      PrintJson(*response);
    } else {
      std::cout << "subject " << user << " deleted at revision " << response->revision() << "\n";
    }
    return 0;
  }
  Usage(absl::StrCat("unknown subject command \"", verb, "\""));
}

int CheckCommand(Client& client, const std::vector<std::string>& args) {
  if (args.size() != 4) Usage("check takes PURPOSE USER CONTENT_ID");
  v1::CheckRequest request;
  request.set_purpose(args[1]);
  request.set_user_id(args[2]);
  FillContent(request.mutable_content(), args[3], absl::GetFlag(FLAGS_content_type),
              absl::GetFlag(FLAGS_visibility), absl::GetFlag(FLAGS_create_time),
              absl::GetFlag(FLAGS_sensitive));
  if (!absl::GetFlag(FLAGS_as_of).empty()) {
    *request.mutable_as_of() = ParseTimestamp(absl::GetFlag(FLAGS_as_of), "--as_of");
  }
  request.set_explain(absl::GetFlag(FLAGS_explain));
  auto response = client.Check(request);
  if (!response.ok()) return Fail(response.status());
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(*response);
    return 0;
  }
  std::cout << DescribeDecision(response->decision()) << "\n";
  for (const v1::RuleEvaluation& e : response->explanation()) {
    std::cout << "  " << (e.rule() < 10 ? " " : "") << e.rule() << ". " << e.name() << ": "
              << (e.outcome() == v1::RULE_OUTCOME_DECIDED ? "DECIDED" : "passed") << " - "
              << e.detail() << "\n";
  }
  return 0;
}

int ExclusionCommand(Client& client, const std::vector<std::string>& args) {
  if (args.size() != 4) Usage(absl::StrCat(args[0], " takes USER CONTENT_ID PURPOSE"));
  v1::SetContentExclusionRequest request;
  request.set_user_id(args[1]);
  request.set_content_id(args[2]);
  request.set_purpose(args[3]);
  request.set_excluded(args[0] == "exclude");
  request.set_request_id(absl::GetFlag(FLAGS_request_id));
  v1::Source source = SourceFromFlags();
  if (source.ByteSizeLong() > 0) *request.mutable_source() = source;
  if (absl::GetFlag(FLAGS_expected_revision) >= 0) {
    request.set_expected_revision(absl::GetFlag(FLAGS_expected_revision));
  }
  auto response = client.SetContentExclusion(request);
  if (!response.ok()) return Fail(response.status());
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(*response);
  } else {
    std::cout << args[2] << (request.excluded() ? " excluded" : " included") << " for " << args[3]
              << " at revision " << response->revision() << "\n";
  }
  return 0;
}

int BatchCheckCommand(Client& client, const std::vector<std::string>& args) {
  if (args.size() != 3) Usage("batch-check takes PURPOSE FILE");
  // Items go to the server in batches of up to its limit, in file order.
  constexpr int kChunk = 10000;
  v1::BatchCheckRequest request;
  request.set_purpose(args[1]);
  if (!absl::GetFlag(FLAGS_as_of).empty()) {
    *request.mutable_as_of() = ParseTimestamp(absl::GetFlag(FLAGS_as_of), "--as_of");
  }
  size_t last_line = 0, index = 0, allowed = 0, denied = 0, invalid = 0;
  // The lowest revision a batch was read at: every write up to it is
  // reflected in every decision printed.
  int64_t read_at = -1;
  int rc = 0;
  auto flush = [&]() {
    if (request.items_size() == 0 || rc != 0) return;
    auto response = client.BatchCheck(request);
    if (!response.ok()) {
      std::cerr << "consentctl: batch ending at input line " << last_line << " failed\n";
      rc = Fail(response.status());
      return;
    }
    if (read_at < 0 || response->revision() < read_at) read_at = response->revision();
    for (int i = 0; i < response->decisions_size(); ++i, ++index) {
      const v1::Decision& d = response->decisions(i);
      (d.has_error() ? invalid : d.allowed() ? allowed : denied)++;
      if (absl::GetFlag(FLAGS_json)) {
        PrintJson(d);
      } else {
        std::cout << index << "\t" << request.items(i).user_id() << "\t"
                  << request.items(i).content().content_id() << "\t" << DescribeDecision(d) << "\n";
      }
    }
    request.clear_items();
  };
  ReadItems(args[2], [&](const std::string& line, size_t line_number, bool csv) {
    if (rc != 0) return;
    last_line = line_number;
    v1::CheckItem item;
    if (csv) {
      // user_id,content_id,content_type,visibility[,create_time[,sensitive]]
      std::vector<std::string> cols;
      if (!CsvColumns(line, line_number, 4, 6, "user_id", &cols)) return;
      item.set_user_id(cols[0]);
      FillContent(item.mutable_content(), cols[1], cols[2], cols[3], cols.size() > 4 ? cols[4] : "",
                  cols.size() > 5 ? cols[5] : "");
    } else {
      ParseJsonLine(line, line_number, &item);
    }
    *request.add_items() = std::move(item);
    if (request.items_size() == kChunk) flush();
  });
  flush();
  if (rc == 0 && !absl::GetFlag(FLAGS_json)) {
    std::cerr << index << " checked: " << allowed << " allowed, " << denied << " denied";
    if (invalid > 0) std::cerr << ", " << invalid << " invalid";
    std::cerr << " (registry revision " << read_at << ")\n";
  }
  return rc;
}

int BatchSetCommand(Client& client, const std::vector<std::string>& args) {
  if (args.size() != 2) Usage("batch-set takes FILE");
  // Each batch of up to the server's limit is atomic; batches go in order
  // and the first failure stops the import (earlier batches stay written).
  constexpr int kChunk = 1000;
  v1::BatchSetPreferencesRequest request;
  size_t last_line = 0, written = 0, batches = 0;
  int rc = 0;
  auto flush = [&]() {
    if (request.requests_size() == 0 || rc != 0) return;
    if (!absl::GetFlag(FLAGS_request_id).empty()) {
      request.set_request_id(absl::StrCat(absl::GetFlag(FLAGS_request_id), "/", batches));
    }
    auto response = client.BatchSetPreferences(request);
    if (!response.ok()) {
      std::cerr << "consentctl: batch ending at input line " << last_line << " failed; " << written
                << " preferences written before it\n";
      rc = Fail(response.status());
      return;
    }
    ++batches;
    written += static_cast<size_t>(request.requests_size());
    if (absl::GetFlag(FLAGS_json)) {
      PrintJson(*response);
    } else {
      std::cout << request.requests_size() << " preferences written up to revision "
                << response->revision() << "\n";
    }
    request.clear_requests();
  };
  ReadItems(args[1], [&](const std::string& line, size_t line_number, bool csv) {
    if (rc != 0) return;
    last_line = line_number;
    v1::SetPreferenceRequest item;
    if (csv) {
      // user_id,purpose,state[,effective_time[,expire_time]]
      std::vector<std::string> cols;
      if (!CsvColumns(line, line_number, 3, 5, "user_id", &cols)) return;
      item.set_user_id(cols[0]);
      item.set_purpose(cols[1]);
      item.set_state(static_cast<v1::PreferenceState>(
          ParseEnum(v1::PreferenceState_descriptor(), "PREFERENCE_STATE_", cols[2], "state")));
      if (cols.size() > 3 && !cols[3].empty()) {
        *item.mutable_effective_time() = ParseTimestamp(cols[3], "effective_time");
      }
      if (cols.size() > 4 && !cols[4].empty()) {
        *item.mutable_expire_time() = ParseTimestamp(cols[4], "expire_time");
      }
      v1::Source source = SourceFromFlags();
      if (source.ByteSizeLong() > 0) *item.mutable_source() = source;
    } else {
      ParseJsonLine(line, line_number, &item);
    }
    *request.add_requests() = std::move(item);
    if (request.requests_size() == kChunk) flush();
  });
  flush();
  if (rc == 0 && !absl::GetFlag(FLAGS_json)) {
    std::cerr << written << " preferences written in " << batches << " batches\n";
  }
  return rc;
}

// One line describing an event, for people.
std::string DescribeEvent(const v1::ChangeEvent& e) {
  std::string what;
  switch (e.change_case()) {
    case v1::ChangeEvent::kPreference: {
      const auto& p = e.preference();
      auto state = [](const v1::Preference* pref) {
        return pref == nullptr ? std::string("none")
                               : EnumValueName(v1::PreferenceState_descriptor(), pref->state(),
                                               "PREFERENCE_STATE_");
      };
      what = absl::StrCat("preference ", p.purpose(), ": ",
                          state(p.has_before() ? &p.before() : nullptr), " -> ",
                          state(p.has_after() ? &p.after() : nullptr));
      break;
    }
    case v1::ChangeEvent::kAttributes:
      what = absl::StrCat(
          "attributes: jurisdiction ",
          e.attributes().after().jurisdiction().empty() ? "(unknown)"
                                                        : e.attributes().after().jurisdiction(),
          e.attributes().after().has_birth_date() ? ", birth date set" : ", birth date unknown");
      break;
    case v1::ChangeEvent::kExclusion:
      what = absl::StrCat("exclusion of ", e.exclusion().content_id(), " for ",
                          e.exclusion().purpose(), ": ",
                          e.exclusion().excluded_after() ? "excluded" : "included");
      break;
    case v1::ChangeEvent::kDeletion:
      what = "account deleted";
      break;
    case v1::ChangeEvent::kNotice: {
      const v1::NoticeDelivery& n = e.notice().notice();
      what = absl::StrCat(
          "notice ", n.notice_id(), " version ", n.notice_version(), " for ",
          absl::StrJoin(n.purposes(), ","), ": delivered ", FormatTimestamp(n.delivery_time()),
          " by ", EnumValueName(v1::NoticeChannel_descriptor(), n.channel(), "NOTICE_CHANNEL_"),
          e.notice().backfill() ? " (backfill)" : "");
      break;
    }
    case v1::ChangeEvent::CHANGE_NOT_SET:
      what = "(empty)";
      break;
  }
  return absl::StrCat(e.revision(), "\t", FormatTimestamp(e.event_time()), "\t", e.user_id(), "\t",
                      what, "\tcaller=", e.caller(),
                      e.source().channel().empty() ? "" : " channel=" + e.source().channel(),
                      e.request_id().empty() ? "" : " request_id=" + e.request_id());
}

int HistoryCommand(Client& client, const std::vector<std::string>& args) {
  if (args.size() != 2) Usage("history takes USER");
  v1::ListHistoryRequest request;
  request.set_user_id(args[1]);
  request.set_page_size(1000);
  std::vector<v1::ChangeEvent> events;
  do {
    auto page = client.ListHistory(request);
    if (!page.ok()) return Fail(page.status());
    for (const auto& e : page->events()) events.push_back(e);
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty());
  if (!absl::GetFlag(FLAGS_json)) {
    for (const auto& e : events) std::cout << DescribeEvent(e) << "\n";
    std::cerr << events.size() << " events\n";
    return 0;
  }
  // One document: the current state and every change, for an access request.
  v1::GetSubjectRequest get;
  get.set_user_id(args[1]);
  auto subject = client.GetSubject(get);
  if (!subject.ok() && !absl::IsNotFound(subject.status())) return Fail(subject.status());
  std::cout << "{\"user_id\":" << Json([&] {
    google::protobuf::Value v;
    v.set_string_value(args[1]);
    return v;
  }())
            << ",\"subject\":" << (subject.ok() ? Json(subject->subject()) : "null")
            << ",\"events\":[";
  for (size_t i = 0; i < events.size(); ++i) std::cout << (i ? "," : "") << Json(events[i]);
  std::cout << "]}\n";
  return 0;
}

int VerifyCommand(Client& client, const std::vector<std::string>& args) {
  if (args.size() != 1) Usage("verify takes no arguments");
  v1::VerifyAuditLogRequest request;
  request.set_start_revision(absl::GetFlag(FLAGS_start_revision));
  request.set_end_revision(absl::GetFlag(FLAGS_end_revision));
  auto response = client.VerifyAuditLog(request);
  if (!response.ok()) return Fail(response.status());
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(*response);
  } else if (response->ok()) {
    std::cout << "audit chain OK: " << response->verified_count() << " events verified\n";
  } else {
    std::cout << "audit chain BROKEN at revision " << response->first_broken_revision() << ": "
              << response->detail() << " (" << response->verified_count()
              << " events verified before it)\n";
  }
  return response->ok() ? 0 : 1;
}

int WatchCommand(Client& client, const std::vector<std::string>& args) {
  if (args.size() != 1) Usage("watch takes no arguments");
  v1::WatchChangesRequest request;
  request.set_start_revision(absl::GetFlag(FLAGS_start_revision));
  request.set_purpose(absl::GetFlag(FLAGS_purpose));
  absl::Status status = client.Watch(request, [](const v1::WatchChangesResponse& message) {
    if (absl::GetFlag(FLAGS_json)) {
      std::cout << Json(message) << std::endl;
    } else if (message.has_event()) {
      std::cout << DescribeEvent(message.event()) << std::endl;
    } else {
      std::cout << "# checkpoint: up to date at revision " << message.checkpoint().revision()
                << std::endl;
    }
    return true;
  });
  return status.ok() ? 0 : Fail(status);
}

int PolicyCommand(Client& client, const std::vector<std::string>& args) {
  if (args.size() != 2) Usage("policy takes get or reload");
  if (args[1] == "get") {
    auto response = client.GetPolicy();
    if (!response.ok()) return Fail(response.status());
    if (absl::GetFlag(FLAGS_json)) {
      PrintJson(*response);
    } else {
      std::cout << "# active policy version " << response->version() << "\n" << response->text();
    }
    return 0;
  }
  if (args[1] == "reload") {
    auto response = client.ReloadPolicy();
    if (!response.ok()) return Fail(response.status());
    if (absl::GetFlag(FLAGS_json)) {
      PrintJson(*response);
    } else {
      std::cout << "policy version " << response->version() << " active (was "
                << response->previous_version() << ")\n";
    }
    return 0;
  }
  Usage(absl::StrCat("unknown policy command \"", args[1], "\""));
}

int BackupCommand(Client& client, const std::vector<std::string>& args) {
  if (args.size() != 2) Usage("backup takes NAME");
  auto response = client.CreateBackup(args[1]);
  if (!response.ok()) return Fail(response.status());
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(*response);
  } else {
    std::cout << "backup of revision " << response->revision();
    if (response->applied_log_sequence() > 0) {
      std::cout << " (replicated command log applied through " << response->applied_log_sequence()
                << ")";
    }
    std::cout << " written to " << response->directory() << "\n";
  }
  return 0;
}

int HealthCommand(Client& client, const std::vector<std::string>& args) {
  if (args.size() > 2) Usage("health takes at most one SERVICE");
  const std::string service = args.size() == 2 ? args[1] : "";
  auto status = client.Health(service);
  if (!status.ok()) return Fail(status.status());
  const std::string& name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(*status);
  if (absl::GetFlag(FLAGS_json)) {
    grpc::health::v1::HealthCheckResponse response;
    response.set_status(*status);
    PrintJson(response);
  } else {
    std::cout << (service.empty() ? "consentd" : service) << ": " << name << "\n";
  }
  return *status == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

int Run(const std::vector<std::string>& args) {
  if (args.empty()) Usage("no command given");
  ClientOptions options;
  options.timeout = absl::GetFlag(FLAGS_timeout);
  absl::StatusOr<ClientCredentials> flag_credentials = CredentialsFromFlags();
  if (!flag_credentials.ok()) return Fail(flag_credentials.status());
  ClientCredentials credentials = *std::move(flag_credentials);
  if (const char* token = std::getenv("CONSENT_TOKEN");
      token != nullptr && absl::GetFlag(FLAGS_token_file).empty()) {
    credentials.token = token;
  }
  std::string target = absl::GetFlag(FLAGS_target);
  if (target.empty()) {
    const char* from_env = std::getenv("CONSENT_TARGET");
    target = from_env != nullptr && *from_env != '\0' ? from_env : "127.0.0.1:50051";
  }
  auto connected = Client::Connect(target, credentials, options);
  if (!connected.ok()) return Fail(connected.status());
  std::unique_ptr<Client> client = *std::move(connected);
  const std::string& command = args[0];
  if (command == "object") return SetPreference(*client, v1::PREFERENCE_STATE_OBJECTED, args);
  if (command == "consent") {
    return SetPreference(*client, v1::PREFERENCE_STATE_CONSENTED, args);
  }
  if (command == "clear") return SetPreference(*client, v1::PREFERENCE_STATE_CLEARED, args);
  if (command == "subject") return SubjectCommand(*client, args);
  if (command == "exclude" || command == "include") return ExclusionCommand(*client, args);
  if (command == "check") return CheckCommand(*client, args);
  if (command == "batch-check") return BatchCheckCommand(*client, args);
  if (command == "batch-set") return BatchSetCommand(*client, args);
  if (command == "policy") return PolicyCommand(*client, args);
  if (command == "history") return HistoryCommand(*client, args);
  if (command == "verify") return VerifyCommand(*client, args);
  if (command == "watch") return WatchCommand(*client, args);
  if (command == "backup") return BackupCommand(*client, args);
  if (command == "notice") return NoticeCommand(*client, args);
  if (command == "notices") return NoticesCommand(*client, args);
  if (command == "summary") return SummaryCommand(*client, args);
  if (command == "import") return ImportCommand(*client, args);
  if (command == "snapshot") return SnapshotCommand(*client, args);
  if (command == "health") return HealthCommand(*client, args);
  Usage(absl::StrCat("unknown command \"", command, "\""));
}

}  // namespace
}  // namespace consent::consentctl

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(consent::consentctl::kUsage);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  std::vector<std::string> args(positional.begin() + 1, positional.end());
  try {
    return consent::consentctl::Run(args);
  } catch (const consent::consentctl::UsageError& e) {
    std::cerr << "consentctl: " << e.message << "\n(consentctl --help for usage)\n";
    return 2;
  }
}
