// consentctl, the binary, against a real consentd: output, order and exit
// codes as a script would see them.
#include <algorithm>
#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace consent {
namespace {

using ::consent::testing::CommandResult;
using ::consent::testing::ConsentdProcess;
using ::consent::testing::RunCommand;
using ::consent::testing::TempDir;
using ::testing::HasSubstr;

class ConsentctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ConsentdProcess::Options options;
    options.data_dir = dir_.Sub("data");
    auto process = ConsentdProcess::Start(options);
    ASSERT_TRUE(process.ok()) << process.status();
    server_ = *std::move(process);
  }

  CommandResult Ctl(std::vector<std::string> args, const std::string& input = "") {
    args.insert(args.begin(), {CONSENTCTL_PATH, "--target=" + server_->address()});
    return RunCommand(args, input);
  }

  TempDir dir_;
  std::unique_ptr<ConsentdProcess> server_;
};

TEST_F(ConsentctlTest, WalkThrough) {
  EXPECT_EQ(Ctl({"subject", "set", "alice", "--jurisdiction=GB", "--birth_date=1990-04-01"}).out,
            "subject alice updated at revision 1\n");
  const std::vector<std::string> check = {"check", "ai_training", "alice", "post-1",
                                          "--create_time=2024-05-01T12:00:00Z"};
  EXPECT_EQ(Ctl(check).out, "ALLOWED ALLOWED_DEFAULT  (policy 2026-11-27.1, revision 1)\n");
  EXPECT_EQ(Ctl({"object", "alice", "ai_training", "--channel=settings_page"}).out,
            "object recorded for alice / ai_training at revision 2\n");
  EXPECT_EQ(Ctl(check).out, "DENIED  DENIED_OBJECTION  (policy 2026-11-27.1, revision 2)\n");
  CommandResult json = Ctl(
      {"check", "ai_training", "alice", "post-1", "--json", "--create_time=2024-05-01T12:00:00Z"});
  EXPECT_EQ(json.out,
            "{\"decision\":{\"allowed\":false,\"reason\":\"DECISION_REASON_DENIED_OBJECTION\","
            "\"policy_version\":\"2026-11-27.1\",\"revision\":\"2\"},\"explanation\":[]}\n");
  EXPECT_EQ(Ctl({"clear", "alice", "ai_training"}).exit_code, 0);
  EXPECT_EQ(Ctl(check).out, "ALLOWED ALLOWED_DEFAULT  (policy 2026-11-27.1, revision 3)\n");
  CommandResult get = Ctl({"subject", "get", "alice"});
  EXPECT_THAT(get.out, HasSubstr("jurisdiction  GB"));
  EXPECT_THAT(get.out, HasSubstr("birth_date    1990-04-01"));
}

TEST_F(ConsentctlTest, BatchCheckCsvAndJsonLinesKeepOrder) {
  ASSERT_EQ(
      Ctl({"subject", "set", "alice", "--jurisdiction=GB", "--birth_date=1990-04-01"}).exit_code,
      0);
  const std::string csv =
      "user_id,content_id,content_type,visibility,create_time,sensitive\n"
      "alice,p1,POST,PUBLIC,2024-05-01T12:00:00Z,\n"
      "alice,p2,POST,PUBLIC,2024-05-01T12:00:00Z,HEALTH\n"
      "\n"
      "bob,p3,PHOTO,PUBLIC,2024-05-01T12:00:00Z,\n"
      "alice,p4,MESSAGE,PUBLIC,2024-05-01T12:00:00Z,\n"
      ",p5,POST,PUBLIC,2024-05-01T12:00:00Z,\n";
  CommandResult result = Ctl({"batch-check", "ai_training", "-", "--format=csv"}, csv);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out,
            "0\talice\tp1\tALLOWED ALLOWED_DEFAULT  (policy 2026-11-27.1, revision 1)\n"
            "1\talice\tp2\tDENIED  DENIED_SENSITIVE  (policy 2026-11-27.1, revision 1)\n"
            "2\tbob\tp3\tDENIED  DENIED_MINOR  (policy 2026-11-27.1, revision 1)\n"
            "3\talice\tp4\tDENIED  DENIED_CONTENT_TYPE  (policy 2026-11-27.1, revision 1)\n"
            "4\t\tp5\tINVALID  items[4].user_id: is required\n");
  EXPECT_EQ(result.err, "5 checked: 1 allowed, 3 denied, 1 invalid (registry revision 1)\n");

  const std::string jsonl =
      R"({"user_id":"bob","content":{"content_id":"x","content_type":"CONTENT_TYPE_POST","visibility":"VISIBILITY_PUBLIC"}})"
      "\n"
      R"({"user_id":"alice","content":{"content_id":"y","content_type":"CONTENT_TYPE_POST","visibility":"VISIBILITY_FRIENDS","create_time":"2024-05-01T12:00:00Z"}})"
      "\n"
      R"({"user_id":"alice"})"
      "\n";
  result = Ctl({"batch-check", "ai_training", "-", "--json"}, jsonl);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out,
            "{\"allowed\":false,\"reason\":\"DECISION_REASON_DENIED_MINOR\",\"policy_version\":"
            "\"2026-11-27.1\",\"revision\":\"1\"}\n"
            "{\"allowed\":false,\"reason\":\"DECISION_REASON_DENIED_NOT_PUBLIC\","
            "\"policy_version\":\"2026-11-27.1\",\"revision\":\"1\"}\n"
            "{\"allowed\":false,\"reason\":\"DECISION_REASON_UNSPECIFIED\",\"policy_version\":"
            "\"\",\"revision\":\"0\",\"error\":{\"code\":3,\"message\":\"items[2].content: is "
            "required\",\"details\":"
            "[{\"@type\":\"type.googleapis.com/google.rpc.BadRequest\",\"field_violations\":"
            "[{\"field\":\"items[2].content\",\"description\":\"is required\"}]}]}}\n");
}

TEST_F(ConsentctlTest, BatchSetImportsAtomicallyPerBatch) {
  const std::string csv =
      "user_id,purpose,state,effective_time,expire_time\n"
      "alice,ai_training,OBJECTED\n"
      "bob,ai_training.generative,CONSENTED,2024-01-01T00:00:00Z,2030-01-01T00:00:00Z\n";
  CommandResult result = Ctl({"batch-set", "-", "--format=csv"}, csv);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "2 preferences written up to revision 2\n");
  EXPECT_EQ(result.err, "2 preferences written in 1 batches\n");
  CommandResult bob = Ctl({"subject", "get", "bob"});
  EXPECT_THAT(bob.out, HasSubstr("ai_training.generative: CONSENTED (revision 2)"));

  // A bad item fails its whole batch: nothing of it is written.
  result = Ctl({"batch-set", "-", "--format=csv"},
               "carol,ai_training,OBJECTED\ncarol,no_such_purpose,OBJECTED\n");
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr("requests[1].purpose: \"no_such_purpose\" is not defined"));
  EXPECT_EQ(Ctl({"subject", "get", "carol"}).exit_code, 1);
}

TEST_F(ConsentctlTest, ExcludeAndExplain) {
  ASSERT_EQ(
      Ctl({"subject", "set", "alice", "--jurisdiction=GB", "--birth_date=1990-04-01"}).exit_code,
      0);
  EXPECT_EQ(Ctl({"exclude", "alice", "post-9", "ai_training"}).out,
            "post-9 excluded for ai_training at revision 2\n");
  CommandResult explained = Ctl({"check", "ai_training.generative", "alice", "post-9",
                                 "--create_time=2024-05-01T12:00:00Z", "--explain"});
  ASSERT_EQ(explained.exit_code, 0) << explained.err;
  EXPECT_EQ(explained.out,
            "DENIED  DENIED_CONTENT_EXCLUDED  (policy 2026-11-27.1, revision 2)\n"
            "   1. purpose defined: passed - \"ai_training.generative\" is defined by policy "
            "2026-11-27.1\n"
            "   2. account deleted: passed - account not deleted\n"
            "   3. policy rule: passed - jurisdiction GB: rules of group uk, rule for ai_training: "
            "LEGITIMATE_INTEREST\n"
            "   4. content type: passed - POST is not excluded\n"
            "   5. visibility: passed - PUBLIC is allowed\n"
            "   6. sensitive data: passed - none present\n"
            "   7. minimum age: passed - min_age 18, age must be known; author was 34 at "
            "create_time 2024-05-01T12:00:00Z\n"
            "   8. content exclusion: DECIDED - content post-9 excluded for ai_training\n");
  EXPECT_EQ(Ctl({"include", "alice", "post-9", "ai_training"}).out,
            "post-9 included for ai_training at revision 3\n");
  EXPECT_EQ(
      Ctl({"check", "ai_training", "alice", "post-9", "--create_time=2024-05-01T12:00:00Z"}).out,
      "ALLOWED ALLOWED_DEFAULT  (policy 2026-11-27.1, revision 3)\n");
  CommandResult future =
      Ctl({"check", "ai_training", "alice", "post-9", "--as_of=2999-01-01T00:00:00Z"});
  EXPECT_EQ(future.exit_code, 1);
  EXPECT_THAT(future.err, HasSubstr("INVALID_ARGUMENT: as_of: is in the future"));
}

TEST_F(ConsentctlTest, HistoryExportAndVerify) {
  ASSERT_EQ(Ctl({"subject", "set", "alice", "--jurisdiction=GB", "--request_id=r1"}).exit_code, 0);
  ASSERT_EQ(Ctl({"object", "alice", "ai_training", "--channel=settings_page", "--request_id=r2"})
                .exit_code,
            0);
  // A replay writes nothing and answers with the first revision.
  EXPECT_EQ(
      Ctl({"object", "alice", "ai_training", "--channel=settings_page", "--request_id=r2"}).out,
      "object recorded for alice / ai_training at revision 2\n");
  CommandResult history = Ctl({"history", "alice"});
  ASSERT_EQ(history.exit_code, 0) << history.err;
  EXPECT_THAT(history.out, HasSubstr("\talice\tattributes: jurisdiction GB, birth date unknown"));
  EXPECT_THAT(history.out, HasSubstr("\talice\tpreference ai_training: none -> OBJECTED"));
  EXPECT_THAT(history.out, HasSubstr("channel=settings_page request_id=r2"));
  EXPECT_EQ(history.err, "2 events\n");

  // The access-request export is one JSON document with subject and events.
  CommandResult json = Ctl({"history", "alice", "--json"});
  ASSERT_EQ(json.exit_code, 0);
  EXPECT_EQ(json.out.rfind("{\"user_id\":\"alice\",\"subject\":{", 0), 0u) << json.out;
  EXPECT_THAT(json.out, HasSubstr("\"events\":[{\"revision\":\"1\""));
  EXPECT_THAT(json.out, HasSubstr("\"kind\":\"CHANGE_KIND_PREFERENCE\""));
  EXPECT_EQ(std::count(json.out.begin(), json.out.end(), '\n'), 1);
  EXPECT_EQ(Ctl({"history", "nobody", "--json"}).out,
            "{\"user_id\":\"nobody\",\"subject\":null,\"events\":[]}\n");

  EXPECT_EQ(Ctl({"verify"}).out, "audit chain OK: 2 events verified\n");
}

TEST_F(ConsentctlTest, NoticesAndSummary) {
  ASSERT_EQ(
      Ctl({"subject", "set", "alice", "--jurisdiction=GB", "--birth_date=1990-04-01"}).exit_code,
      0);
  CommandResult one = Ctl({"notice", "alice", "ai-notice", "2026-11", "ai_training"});
  EXPECT_EQ(one.exit_code, 2);
  EXPECT_THAT(one.err, HasSubstr("notice needs --notice_channel=EMAIL, IN_APP or BANNER"));
  one = Ctl({"notice", "alice", "ai-notice", "2026-11", "ai_training", "--notice_channel=email"});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_THAT(one.out, ::testing::StartsWith(
                           "alice: notice ai-notice version 2026-11 for ai_training delivered "));
  EXPECT_THAT(one.out, ::testing::EndsWith(" by EMAIL, recorded at revision 2 (revision 2)\n"));

  // A file in batches of 2: progress on stderr, in file order.
  const std::string csv_path = dir_.Sub("notices.csv");
  testing::WriteFile(csv_path,
                     "user_id,notice_id,notice_version,purposes,channel,delivery_time\n"
                     "bob,ai-notice,2026-11,ai_training,IN_APP,\n"
                     "carol,ai-notice,2026-11,ai_training;ai_training.generative,,\n"
                     "dave,ai-notice,2026-11,ai_training,BANNER,\n");
  CommandResult bulk = Ctl({"notices", csv_path, "--batch_size=2", "--notice_channel=EMAIL"});
  ASSERT_EQ(bulk.exit_code, 0) << bulk.err;
  EXPECT_EQ(bulk.out, "");
  EXPECT_THAT(bulk.err, HasSubstr("notices: 2 recorded, "));
  EXPECT_THAT(bulk.err, HasSubstr("notices: 3 recorded, "));
  EXPECT_THAT(bulk.err, HasSubstr("100% of the file (done)\n"));
  EXPECT_THAT(bulk.err, ::testing::EndsWith("3 notices recorded in 2 batches\n"));
  EXPECT_THAT(
      Ctl({"subject", "get", "carol"}).out,
      HasSubstr("\n  notice ai-notice version 2026-11 for ai_training,ai_training.generative: "
                "delivered "));
  CommandResult carol = Ctl({"history", "carol"});
  EXPECT_THAT(carol.out, HasSubstr("\tcarol\tnotice ai-notice version 2026-11 for "
                                   "ai_training,ai_training.generative: delivered "));
  EXPECT_THAT(carol.out, HasSubstr(" by EMAIL\tcaller="));

  // JSON lines; a bad item stops the load, naming the batch's last line.
  const std::string jsonl =
      R"({"user_id":"erin","notice_id":"n","notice_version":"1","purposes":["ai_training"],"channel":"NOTICE_CHANNEL_EMAIL"})"
      "\n"
      R"({"user_id":"fay","notice_id":"n","notice_version":"1","purposes":["marketing"],"channel":"NOTICE_CHANNEL_EMAIL"})"
      "\n";
  CommandResult bad = Ctl({"notices", "-", "--format=jsonl"}, jsonl);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.err, HasSubstr("batch ending at input line 2 failed; 0 notices recorded before "
                                 "it"));
  EXPECT_THAT(bad.err, HasSubstr("requests[1].purposes[0]: \"marketing\" is not defined"));
  CommandResult bad_csv = Ctl({"notices", "-", "--format=csv"}, "gus,n,1,ai_training,LOUD,\n");
  EXPECT_EQ(bad_csv.exit_code, 2);
  EXPECT_THAT(bad_csv.err, HasSubstr("is not one of EMAIL, IN_APP, BANNER"));

  CommandResult summary = Ctl({"summary", "alice"});
  ASSERT_EQ(summary.exit_code, 0) << summary.err;
  EXPECT_THAT(summary.out,
              HasSubstr("# alice, jurisdiction GB, policy 2026-11-27.1, revision 5, at "));
  EXPECT_THAT(summary.out,
              HasSubstr("ai_training\tUSED\tALLOWED_DEFAULT\tLEGITIMATE_INTEREST\n  Used: the "
                        "platform relies on its legitimate interest, and you have not objected. "
                        "You can object at any time. You were told about it on "));
  EXPECT_THAT(summary.out, HasSubstr("  notice ai-notice version 2026-11 for ai_training "));
  CommandResult json = Ctl({"summary", "alice", "--json"});
  EXPECT_THAT(json.out, HasSubstr("\"recorded\":true"));
  EXPECT_THAT(json.out, HasSubstr("\"reason\":\"DECISION_REASON_ALLOWED_DEFAULT\""));
}

TEST_F(ConsentctlTest, ImportCsvAndJsonLinesResumes) {
  const std::string csv_path = dir_.Sub("accounts.csv");
  testing::WriteFile(csv_path,
                     "user_id,preferences,birth_date,jurisdiction\n"
                     "alice,ai_training=objected,1990-05-01,GB\n"
                     "\"carol, jr\",ai_training=CONSENTED;ai_training.generative=OBJECTED,"
                     "1980-02-29,US-CA\n"
                     "bob,,2015-01-01,GB\n"
                     "erin,,1990-02-30,GB\n"
                     "frank,nosuch=OBJECTED,,GB\n");
  CommandResult first = Ctl({"import", csv_path});
  EXPECT_EQ(first.exit_code, 1) << first.err;  // two records rejected
  EXPECT_THAT(first.out,
              ::testing::StartsWith(
                  "import accounts.csv-233: 3 imported, 2 rejected (1 unreadable in the file), 0 "
                  "acknowledged before; acknowledged through byte 233, registry revision 6 ("));
  EXPECT_THAT(first.err, HasSubstr("rejected: line 5: birth_date \"1990-02-30\" is not a date "
                                   "(YYYY-MM-DD)\n"));
  EXPECT_THAT(first.err, HasSubstr("rejected: byte offset 233, user frank: preferences[0].purpose "
                                   "\"nosuch\" is not defined by policy version 2026-11-27.1\n"));
  EXPECT_THAT(first.err, HasSubstr("import accounts.csv-233: 4 records sent, "));
  const std::vector<std::string> check = {"check", "ai_training", "", "post-1",
                                          "--create_time=2024-05-01T12:00:00Z"};
  auto reason = [&](const std::string& user, const std::string& purpose = "ai_training") {
    std::vector<std::string> args = check;
    args[1] = purpose;
    args[2] = user;
    return Ctl(args).out;
  };
  EXPECT_THAT(reason("alice"), HasSubstr("DENIED_OBJECTION"));
  EXPECT_THAT(reason("carol, jr"), HasSubstr("ALLOWED_CONSENT"));
  EXPECT_THAT(reason("carol, jr", "ai_training.generative"), HasSubstr("DENIED_OBJECTION"));
  EXPECT_THAT(reason("bob"), HasSubstr("DENIED_MINOR"));
  EXPECT_THAT(Ctl({"history", "alice"}).out,
              HasSubstr("channel=import request_id=accounts.csv-233:"));

  // The same command again: everything was acknowledged, nothing is sent.
  CommandResult again = Ctl({"import", csv_path});
  EXPECT_THAT(again.err, HasSubstr("import accounts.csv-233: resuming after byte 233"));
  EXPECT_THAT(again.out, HasSubstr(": 0 imported, 0 rejected (0 unreadable in the file), 5 "
                                   "acknowledged before; acknowledged through byte 233, registry "
                                   "revision 6 ("));

  // JSON lines from stdin need an import id.
  const std::string jsonl =
      R"({"user_id":"gina","jurisdiction":"GB","birth_date":"1985-03-03","preferences":{"ai_training":"OBJECTED"}})"
      "\n"
      R"({"user_id":"hal","extra":1})"
      "\n";
  CommandResult no_id = Ctl({"import", "-"}, jsonl);
  EXPECT_EQ(no_id.exit_code, 2);
  EXPECT_THAT(no_id.err, HasSubstr("importing from stdin or a pipe needs --import_id"));
  CommandResult json = Ctl({"import", "-", "--import_id=feed-1", "--json"}, jsonl);
  EXPECT_EQ(json.exit_code, 1);
  EXPECT_THAT(json.out, HasSubstr("\"imported\":\"1\""));
  EXPECT_THAT(json.err, HasSubstr("rejected: line 2: unknown field \"extra\" (user_id, "
                                  "jurisdiction, birth_date, preferences)"));
  EXPECT_THAT(reason("gina"), HasSubstr("DENIED_OBJECTION"));
}

TEST_F(ConsentctlTest, SnapshotExportAndVerify) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"/usr/bin/openssl", "genpkey", "-algorithm", "ed25519", "-out", dir_.Sub("sign.pem")},
           {"/usr/bin/openssl", "pkey", "-in", dir_.Sub("sign.pem"), "-pubout", "-out",
            dir_.Sub("sign.pub")},
           {"/usr/bin/openssl", "genpkey", "-algorithm", "ed25519", "-out", dir_.Sub("other.pem")},
           {"/usr/bin/openssl", "pkey", "-in", dir_.Sub("other.pem"), "-pubout", "-out",
            dir_.Sub("other.pub")}}) {
    ASSERT_EQ(RunCommand(args).exit_code, 0) << args[1];
  }
  testing::WriteFile(dir_.Sub("pseudonym.key"), "sixteen-or-more-bytes");
  // Without the signing key, consentd refuses.
  CommandResult refused = Ctl({"snapshot", "export", dir_.Sub("none.snap")});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_EQ(refused.err,
            "consentctl: FAILED_PRECONDITION: snapshots are signed: consentd runs without "
            "--snapshot_signing_key_file\n");
  server_.reset();
  ConsentdProcess::Options options;
  options.data_dir = dir_.Sub("data");
  options.extra_args = {"--snapshot_signing_key_file=" + dir_.Sub("sign.pem"),
                        "--pseudonymize_key_file=" + dir_.Sub("pseudonym.key")};
  auto process = ConsentdProcess::Start(options);
  ASSERT_TRUE(process.ok()) << process.status();
  server_ = *std::move(process);
  ASSERT_EQ(
      Ctl({"subject", "set", "alice", "--jurisdiction=GB", "--birth_date=1990-01-01"}).exit_code,
      0);
  ASSERT_EQ(Ctl({"exclude", "carol", "post-1", "ai_training"}).exit_code, 0);

  const std::string path = dir_.Sub("registry.snap");
  CommandResult exported = Ctl({"snapshot", "export", path});
  EXPECT_EQ(exported.exit_code, 0) << exported.err;
  EXPECT_THAT(exported.out, ::testing::StartsWith("snapshot of revision 2: 2 subjects, "));
  EXPECT_THAT(exported.out, HasSubstr(", written to " + path + "\n"));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);

  CommandResult verified =
      Ctl({"snapshot", "verify", path, "--public_key=" + dir_.Sub("sign.pub")});
  EXPECT_EQ(verified.exit_code, 0) << verified.err;
  EXPECT_THAT(verified.out, ::testing::StartsWith(path + ": signature good (Ed25519 "));
  EXPECT_THAT(verified.out, HasSubstr("; revision 2 taken "));
  EXPECT_THAT(verified.out,
              HasSubstr("; 2 subjects, 1 exclusions; policy version 2026-11-27.1; loaded in "));

  CommandResult other = Ctl({"snapshot", "verify", path, "--public_key=" + dir_.Sub("other.pub")});
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_THAT(other.err, HasSubstr("signed by another key"));
  std::string bytes = testing::ReadFile(path);
  bytes[10] ^= 1;
  testing::WriteFile(dir_.Sub("changed.snap"), bytes);
  CommandResult changed =
      Ctl({"snapshot", "verify", dir_.Sub("changed.snap"), "--public_key=" + dir_.Sub("sign.pub")});
  EXPECT_EQ(changed.exit_code, 1);
  EXPECT_THAT(changed.err, HasSubstr("it was changed after signing"));
  CommandResult no_key = Ctl({"snapshot", "verify", path});
  EXPECT_EQ(no_key.exit_code, 2);
  EXPECT_THAT(no_key.err, HasSubstr("snapshot verify needs --public_key=PEM_FILE"));

  CommandResult pseudonymized =
      Ctl({"snapshot", "export", dir_.Sub("pseudonymized.snap"), "--pseudonymize"});
  EXPECT_EQ(pseudonymized.exit_code, 0) << pseudonymized.err;
  EXPECT_THAT(pseudonymized.out, HasSubstr(" bytes a subject), pseudonymized, in "));
  EXPECT_THAT(testing::ReadFile(dir_.Sub("pseudonymized.snap")),
              ::testing::Not(HasSubstr("alice")));
}

TEST_F(ConsentctlTest, ExitCodes) {
  CommandResult bad_usage = Ctl({"check", "ai_training"});
  EXPECT_EQ(bad_usage.exit_code, 2);
  EXPECT_THAT(bad_usage.err, HasSubstr("check takes PURPOSE USER CONTENT_ID"));
  CommandResult bad_enum = Ctl({"check", "ai_training", "alice", "p", "--visibility=LOUD"});
  EXPECT_EQ(bad_enum.exit_code, 2);
  EXPECT_THAT(bad_enum.err,
              HasSubstr("--visibility=LOUD is not one of PUBLIC, FOLLOWERS, FRIENDS, CUSTOM, "
                        "PRIVATE"));
  CommandResult invalid = Ctl({"object", "alice", "Not A Purpose"});
  EXPECT_EQ(invalid.exit_code, 1);
  EXPECT_EQ(invalid.err,
            "consentctl: INVALID_ARGUMENT: purpose: must match [a-z0-9_]+(.[a-z0-9_]+)*\n");
  CommandResult not_found = Ctl({"subject", "get", "nobody"});
  EXPECT_EQ(not_found.exit_code, 1);
  EXPECT_EQ(not_found.err, "consentctl: NOT_FOUND: nothing was ever recorded for this user_id\n");
}

}  // namespace
}  // namespace consent
