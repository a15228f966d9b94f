/* The mutation journal from C: commit, rollback, free-as-rollback, bad
 * paths, recovery and status. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

#define STR(s) (s), strlen(s)

static char root[256];

static int read_file(const char *rel, char *buf, size_t size) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", root, rel);
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  size_t n = fread(buf, 1, size - 1, f);
  buf[n] = '\0';
  fclose(f);
  return (int)n;
}

static int exists(const char *rel) {
  char path[512];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s", root, rel);
  return lstat(path, &st) == 0;
}

static void test_commit_and_rollback(keel_journal *journal) {
  char buf[64];
  keel_mutation *m = NULL;
  CHECK_OK(keel_journal_begin(journal, STR("add"), STR("doc.pdf"), &m));
  CHECK_OK(keel_mutation_write(m, STR("pages/a.md"), (const uint8_t *)"# A", 3));
  CHECK_OK(keel_mutation_create_dir(m, STR("empty/dir")));
  CHECK_OK(keel_mutation_commit(m));
  CHECK_STATUS(keel_mutation_commit(m), KEEL_CLOSED);
  keel_mutation_free(m);
  CHECK(read_file("pages/a.md", buf, sizeof buf) == 3 && strcmp(buf, "# A") == 0);
  CHECK(exists("empty/dir"));

  CHECK_OK(keel_journal_begin(journal, STR("edit"), NULL, 0, &m));
  CHECK_OK(keel_mutation_write(m, STR("pages/a.md"), (const uint8_t *)"# A v2", 6));
  CHECK_OK(keel_mutation_rename(m, STR("pages/a.md"), STR("pages/b.md")));
  CHECK_OK(keel_mutation_remove(m, STR("empty")));
  CHECK_OK(keel_mutation_rollback(m));
  keel_mutation_free(m);
  CHECK(read_file("pages/a.md", buf, sizeof buf) == 3);
  CHECK(!exists("pages/b.md"));
  CHECK(exists("empty/dir"));
}

static void test_free_rolls_back(keel_journal *journal) {
  char buf[64];
  keel_mutation *m = NULL;
  CHECK_OK(keel_journal_begin(journal, STR("edit"), NULL, 0, &m));
  const keel_bytes declared[] = {{(const uint8_t *)"pages", 5}};
  CHECK_OK(keel_mutation_declare(m, declared, 1));
  CHECK_OK(keel_mutation_write(m, STR("pages/a.md"), (const uint8_t *)"dropped", 7));
  keel_mutation_free(m);
  CHECK(read_file("pages/a.md", buf, sizeof buf) == 3 && strcmp(buf, "# A") == 0);
}

static void test_bad_arguments(keel_journal *journal) {
  keel_mutation *m = NULL;
  CHECK_OK(keel_journal_begin(journal, STR("edit"), NULL, 0, &m));
  CHECK_STATUS(keel_mutation_write(m, STR("../escape"), (const uint8_t *)"x", 1),
               KEEL_INVALID_ARGUMENT);
  CHECK_STATUS(keel_mutation_write(m, STR("/etc/passwd"), (const uint8_t *)"x", 1),
               KEEL_INVALID_ARGUMENT);
  CHECK_STATUS(keel_mutation_write(m, "\xff\xfe", 2, (const uint8_t *)"x", 1),
               KEEL_INVALID_ARGUMENT);
  CHECK_STATUS(keel_mutation_write(m, NULL, 3, (const uint8_t *)"x", 1), KEEL_INVALID_ARGUMENT);
  CHECK_STATUS(keel_mutation_write(NULL, STR("a"), (const uint8_t *)"x", 1), KEEL_INVALID_ARGUMENT);
  CHECK_STATUS(keel_mutation_remove(m, STR("missing")), KEEL_NOT_FOUND);
  CHECK(strstr(keel_last_error(), "missing") != NULL);
  CHECK_OK(keel_mutation_commit(m));
  keel_mutation_free(m);
  keel_mutation_free(NULL);
  keel_journal_free(NULL);
  keel_journal *none = NULL;
  CHECK_STATUS(keel_journal_open(STR("/nonexistent/keel/root"), &none), KEEL_NOT_FOUND);
  CHECK(none == NULL);
}

static void test_recover_and_status(keel_journal *journal) {
  keel_recovery_report report;
  memset(&report, 0xff, sizeof report);
  CHECK_OK(keel_journal_recover(journal, &report));
  CHECK(report.rolled_back == 0 && report.quarantined == 0);
  keel_journal_state status;
  CHECK_OK(keel_journal_status(journal, &status));
  CHECK(status.active == 0 && status.unreadable == 0 && !status.blocked);
  CHECK_STATUS(keel_journal_status(journal, NULL), KEEL_INVALID_ARGUMENT);
  CHECK_STATUS(keel_journal_resolve(journal, 12345), KEEL_NOT_FOUND);

  /* A mutation in progress shows as one active record. */
  keel_mutation *m = NULL;
  CHECK_OK(keel_journal_begin(journal, STR("edit"), NULL, 0, &m));
  CHECK_OK(keel_mutation_write(m, STR("pages/a.md"), (const uint8_t *)"x", 1));
  keel_mutation *second = NULL;
  CHECK_STATUS(keel_journal_try_begin(journal, STR("edit"), NULL, 0, &second), KEEL_WOULD_DEADLOCK);
  CHECK(second == NULL);
  uint64_t seq = 0;
  CHECK_OK(keel_mutation_seq(m, &seq));
  CHECK(seq > 0);
  CHECK_OK(keel_journal_status(journal, &status));
  CHECK(status.active == 1);
  CHECK_OK(keel_mutation_rollback(m));
  keel_mutation_free(m);
  CHECK_OK(keel_journal_try_begin(journal, STR("edit"), NULL, 0, &second));
  CHECK(second != NULL);
  keel_mutation_free(second);
}

/* The calls C lacked: symlink, declare-copy, staging and publish, the read
 * guard, and what opening recovered. */
static void test_parity_calls(keel_journal *journal) {
  char buf[64];
  keel_mutation *m = NULL;
  CHECK_OK(keel_journal_begin(journal, STR("parity"), NULL, 0, &m));
  CHECK_OK(keel_mutation_symlink(m, STR("latest"), STR("pages/a.md")));
  const keel_bytes copied[] = {{(const uint8_t *)"pages", 5}};
  CHECK_OK(keel_mutation_declare_copy(m, copied, 1));
  keel_buf staging = {0};
  CHECK_OK(keel_mutation_staging_dir(m, &staging));
  char path[600];
  snprintf(path, sizeof path, "%.*s/staged.md", (int)staging.len, (const char *)staging.ptr);
  keel_buf_free(&staging);
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  fputs("staged", f);
  fclose(f);
  CHECK_OK(keel_mutation_publish(m, STR("pages")));
  CHECK_OK(keel_mutation_commit(m));
  keel_mutation_free(m);
  CHECK(read_file("pages/staged.md", buf, sizeof buf) == 6);
  char target[64];
  snprintf(path, sizeof path, "%s/latest", root);
  ssize_t n = readlink(path, target, sizeof target - 1);
  CHECK(n == 10 && memcmp(target, "pages/a.md", 10) == 0);

  keel_read_guard *guard = NULL;
  CHECK_OK(keel_journal_read(journal, &guard));
  CHECK(guard != NULL);
  keel_mutation *blocked = NULL;
  CHECK_STATUS(keel_journal_try_begin(journal, STR("x"), NULL, 0, &blocked), KEEL_WOULD_DEADLOCK);
  keel_mutation *timed = NULL;
  CHECK_STATUS(keel_journal_begin_timeout(journal, STR("x"), NULL, 0, 10, &timed), KEEL_WOULD_DEADLOCK);
  keel_read_guard_release(guard);
  keel_read_guard_release(NULL);
  CHECK_STATUS(keel_journal_begin_timeout(journal, STR("x"), NULL, 0, -2, &timed), KEEL_INVALID_ARGUMENT);
  CHECK_OK(keel_journal_begin_timeout(journal, STR("x"), NULL, 0, 0, &timed));
  CHECK(timed != NULL);
  keel_mutation_free(timed);

  keel_recovery_report report;
  bool found = false;
  CHECK_OK(keel_journal_last_recovery(journal, &report, &found));
  CHECK(found && report.rolled_back == 0);
  CHECK_STATUS(keel_journal_last_recovery(journal, NULL, &found), KEEL_INVALID_ARGUMENT);
}

/* The root, inspect and stats: the calls C lacked. */
static void test_root_inspect_and_stats(keel_journal *journal) {
  keel_buf buf = {0};
  CHECK_OK(keel_journal_root(journal, &buf));
  CHECK(buf.len > 0 && strstr((const char *)buf.ptr, "keel-c-journal-") != NULL);
  keel_buf_free(&buf);

  /* An interrupted-looking state is reported, nothing is written. */
  keel_mutation *m = NULL;
  CHECK_OK(keel_journal_begin(journal, STR("inspected"), NULL, 0, &m));
  CHECK_OK(keel_mutation_write(m, STR("pages/inspected.md"), (const uint8_t *)"x", 1));
  CHECK_OK(keel_journal_inspect(root, strlen(root), &buf));
  CHECK(strstr((const char *)buf.ptr, "\"operation\":\"inspected\"") != NULL);
  CHECK(strstr((const char *)buf.ptr, "\"status\":\"active\"") != NULL);
  CHECK(strstr((const char *)buf.ptr, "\"problems\":[]") != NULL);
  keel_buf_free(&buf);
  CHECK_OK(keel_mutation_rollback(m));
  keel_mutation_free(m);
  CHECK_STATUS(keel_journal_inspect(STR("/nonexistent/keel-root"), &buf), KEEL_NOT_FOUND);
  CHECK_STATUS(keel_journal_inspect(NULL, 3, &buf), KEEL_INVALID_ARGUMENT);

  CHECK_OK(keel_journal_stats_json(journal, &buf));
  CHECK(strstr((const char *)buf.ptr, "\"rolled_back\":") != NULL);
  CHECK(strstr((const char *)buf.ptr, "\"fsyncs\":") != NULL);
  keel_buf_free(&buf);
}

/* Several files with one record write; all or nothing. */
static void test_write_many(keel_journal *journal) {
  keel_mutation *m = NULL;
  CHECK_OK(keel_journal_begin(journal, STR("many"), NULL, 0, &m));
  const keel_bytes paths[] = {{(const uint8_t *)"many/a.md", 9}, {(const uint8_t *)"many/b.md", 9}};
  const keel_bytes data[] = {{(const uint8_t *)"AA", 2}, {(const uint8_t *)"BBB", 3}};
  CHECK_OK(keel_mutation_write_many(m, paths, data, 2));
  const keel_bytes bad[] = {{(const uint8_t *)"many/c.md", 9}, {(const uint8_t *)"../x", 4}};
  CHECK_STATUS(keel_mutation_write_many(m, bad, data, 2), KEEL_INVALID_ARGUMENT);
  CHECK_STATUS(keel_mutation_write_many(m, NULL, data, 2), KEEL_INVALID_ARGUMENT);
  CHECK_OK(keel_mutation_commit(m));
  keel_mutation_free(m);
  char buf[8];
  CHECK(read_file("many/a.md", buf, sizeof buf) == 2 && memcmp(buf, "AA", 2) == 0);
  CHECK(read_file("many/b.md", buf, sizeof buf) == 3 && memcmp(buf, "BBB", 3) == 0);
  CHECK(read_file("many/c.md", buf, sizeof buf) < 0);
}

int main(void) {
  snprintf(root, sizeof root, "/tmp/keel-c-journal-XXXXXX");
  if (!mkdtemp(root)) return 2;
  keel_journal *journal = NULL;
  CHECK_OK(keel_journal_open(root, strlen(root), &journal));
  test_commit_and_rollback(journal);
  test_free_rolls_back(journal);
  test_bad_arguments(journal);
  test_recover_and_status(journal);
  test_parity_calls(journal);
  test_write_many(journal);
  test_root_inspect_and_stats(journal);
  keel_journal_free(journal);
  char command[600];
  snprintf(command, sizeof command, "rm -rf '%s'", root);
  if (system(command) != 0) return 2;
  FINISH();
}
