/* The queue, operations and keyed locks opened by URL on PostgreSQL, from C.
 * The server is the one in KEEL_TEST_PG_URL (scripts/test starts it with
 * scripts/pg). */
#include <stdlib.h>

#include "check.h"

#define S(text) text, strlen(text)

#define KEY(s) (const uint8_t *)(s), strlen(s)

/* Two handles on one database, as two hosts would have: exclusion, shared
 * holders, timeouts, all-or-none lock_many, fencing tokens, check. */
static void test_locks(const char *url) {
  keel_locks *a = NULL, *b = NULL;
  CHECK_OK(keel_locks_open(url, strlen(url), &a));
  CHECK_OK(keel_locks_open(url, strlen(url), &b));
  if (a == NULL || b == NULL) return;

  keel_lock_guard *held = NULL, *other = NULL;
  CHECK_OK(keel_locks_lock(a, KEY("c-pg-k"), KEEL_LOCK_EXCLUSIVE, KEEL_WAIT_FOREVER, &held));
  CHECK_STATUS(keel_locks_try_lock(b, KEY("c-pg-k"), KEEL_LOCK_SHARED, &other), KEEL_BUSY);
  CHECK(other == NULL);
  CHECK_STATUS(keel_locks_lock(b, KEY("c-pg-k"), KEEL_LOCK_EXCLUSIVE, 100, &other), KEEL_TIMEOUT);
  /* All or none: c-pg-j is not left held by the timed-out call. */
  keel_bytes both[] = {{(const uint8_t *)"c-pg-j", 6}, {(const uint8_t *)"c-pg-k", 6}};
  CHECK_STATUS(keel_locks_lock_many(b, both, 2, KEEL_LOCK_EXCLUSIVE, 100, &other), KEEL_TIMEOUT);
  keel_lock_guard *j = NULL;
  CHECK_OK(keel_locks_try_lock(a, KEY("c-pg-j"), KEEL_LOCK_EXCLUSIVE, &j));
  keel_lock_guard_release(j);

  keel_lock_stats stats;
  CHECK_OK(keel_locks_stats(a, &stats));
  CHECK(stats.entries == 1 && stats.holders == 1 && stats.waiters == 0);
  CHECK_OK(keel_lock_guard_check(held));
  uint64_t first = 0, second = 0;
  CHECK_OK(keel_lock_guard_token(held, &first));
  CHECK(first > 0);
  keel_lock_guard_release(held);

  keel_lock_guard *one = NULL, *two = NULL;
  CHECK_OK(keel_locks_lock_many(b, both, 2, KEEL_LOCK_SHARED, 1000, &one));
  CHECK_OK(keel_locks_lock(a, KEY("c-pg-k"), KEEL_LOCK_SHARED, 1000, &two));
  CHECK_OK(keel_lock_guard_token(two, &second));
  CHECK(second > first);
  keel_lock_guard_release(one);
  keel_lock_guard_release(two);
  CHECK_OK(keel_locks_stats(b, &stats));
  CHECK(stats.entries == 0 && stats.holders == 0 && stats.waiters == 0);

  /* Keys are UTF-8 on PostgreSQL; an in-process guard has no token. */
  CHECK_STATUS(keel_locks_try_lock(a, (const uint8_t *)"\xff", 1, KEEL_LOCK_EXCLUSIVE, &other),
               KEEL_INVALID_ARGUMENT);
  keel_locks_free(a);
  keel_locks_free(b);

  keel_locks *local = NULL;
  CHECK_OK(keel_locks_open(S("sources"), &local));
  keel_lock_guard *mine = NULL;
  CHECK_OK(keel_locks_lock(local, KEY("x"), KEEL_LOCK_EXCLUSIVE, 0, &mine));
  CHECK_STATUS(keel_lock_guard_token(mine, &first), KEEL_UNSUPPORTED);
  CHECK_OK(keel_lock_guard_check(mine));
  keel_lock_guard_release(mine);
  keel_locks_free(local);
  local = NULL;
  CHECK_STATUS(keel_locks_open(S("mysql://db/app"), &local), KEEL_INVALID_ARGUMENT);
  CHECK(local == NULL);
}

int main(void) {
  const char *url = getenv("KEEL_TEST_PG_URL");
  if (url == NULL || *url == '\0') {
    fprintf(stderr, "KEEL_TEST_PG_URL is not set: start a server with `scripts/pg start`, "
                    "export KEEL_TEST_PG_URL=\"$(scripts/pg url)\" (scripts/test does both); "
                    "install the server with `apt-get install postgresql`\n");
    return 1;
  }
  keel_queue *queue = NULL;
  CHECK_OK(keel_queue_open(url, strlen(url), NULL, &queue));
  uint64_t id = 0;
  bool created = false;
  CHECK_OK(keel_queue_enqueue(queue, S("c.pg.mail"), S("{\"to\":\"a\"}"), NULL, &id, &created));
  CHECK(created && id != 0);
  keel_bytes kinds[] = {{(const uint8_t *)"c.pg.mail", 9}};
  keel_job job;
  bool found = false;
  CHECK_OK(keel_queue_dequeue(queue, kinds, 1, S("c"), 60000, &job, &found));
  CHECK(found && job.attempt == 1);
  if (found) {
    CHECK_STATUS(keel_queue_complete(queue, job.id, job.token + 1, S("")), KEEL_CONFLICT);
    CHECK_OK(keel_queue_complete(queue, job.id, job.token, S("")));
    keel_job_free(&job);
  }
  keel_queue_free(queue);

  keel_ops *ops = NULL;
  CHECK_OK(keel_ops_open(url, strlen(url), NULL, &ops));
  keel_bytes unpack[] = {{(const uint8_t *)"c.pg.unpack", 11}};
  CHECK_OK(keel_ops_ready(ops, S("c-ds-1"), unpack, 1));
  keel_ops_free(ops);

  /* An unknown scheme is refused, not taken for a file name. */
  queue = NULL;
  CHECK_STATUS(keel_queue_open(S("mysql://db/app"), NULL, &queue), KEEL_INVALID_ARGUMENT);
  CHECK(queue == NULL);

  test_locks(url);
  FINISH();
}
