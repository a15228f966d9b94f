/* The boundary every call goes through: lengths and counts that no memory
 * could hold are refused with KEEL_INVALID_ARGUMENT before keel reads a
 * byte, whatever the pointer (issue 11: an abort in debug builds, a
 * segfault in release, before). */
/* mkdtemp is POSIX.1-2008. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"

#define S(text) text, strlen(text)

static char dir[] = "/tmp/keel-c-boundary-XXXXXX";

/* A length one past what a Rust slice may span. */
static const size_t TOO_LONG = (size_t)PTRDIFF_MAX + 1;

static int error_mentions(const char *text) { return strstr(keel_last_error(), text) != NULL; }

static void test_string_lengths_above_isize_max(void) {
  keel_ops *ops = NULL;
  /* A real pointer, with a length no allocation can have. */
  CHECK_STATUS(keel_ops_open("x", TOO_LONG, NULL, &ops), KEEL_INVALID_ARGUMENT);
  CHECK(ops == NULL);
  CHECK(error_mentions("location"));
  CHECK_STATUS(keel_ops_open("x", SIZE_MAX, NULL, &ops), KEEL_INVALID_ARGUMENT);
  CHECK(ops == NULL);
}

static void test_counts_whose_byte_size_overflows(keel_ops *ops, keel_queue *queue) {
  keel_bytes names[] = {{(const uint8_t *)"a", 1}};
  /* count * sizeof(keel_bytes) wraps around size_t. */
  size_t wraps = SIZE_MAX / sizeof(keel_bytes) + 2;
  CHECK_STATUS(keel_ops_ready(ops, S("item"), names, wraps), KEEL_INVALID_ARGUMENT);
  CHECK(error_mentions("names"));
  /* count * sizeof(keel_bytes) does not wrap, but is above PTRDIFF_MAX. */
  size_t too_many = (size_t)PTRDIFF_MAX / sizeof(keel_bytes) + 1;
  CHECK_STATUS(keel_ops_ready(ops, S("item"), names, too_many), KEEL_INVALID_ARGUMENT);
  /* Nothing was made READY by the refused calls. */
  keel_buf states = {0};
  CHECK_OK(keel_ops_states(ops, S("item"), &states));
  CHECK(states.len == 2 && memcmp(states.ptr, "[]", 2) == 0);
  keel_buf_free(&states);

  keel_job job = {0};
  bool found = true;
  CHECK_STATUS(keel_queue_dequeue(queue, names, wraps, S("w"), 1000, &job, &found), KEEL_INVALID_ARGUMENT);
  CHECK(error_mentions("kinds"));

  /* A list whose count is fine but whose item has an impossible length. */
  keel_bytes bad[] = {{(const uint8_t *)"a", TOO_LONG}};
  CHECK_STATUS(keel_ops_ready(ops, S("item"), bad, 1), KEEL_INVALID_ARGUMENT);
  CHECK(error_mentions("names[0]"));
}

/* A callback returns a plain int32_t; a number that is no keel_status is
 * one rule for every callback: KEEL_INVALID_ARGUMENT naming the number. */
static int32_t returns_nonsense(void *userdata, keel_task_ctx *ctx) {
  (void)userdata;
  keel_task_ctx_set_output(ctx, (const uint8_t *)"why", 3);
  return 999;
}

static int32_t returns_busy(void *userdata, keel_task_ctx *ctx) {
  (void)userdata;
  (void)ctx;
  return KEEL_BUSY;
}

static void test_callback_statuses(void) {
  keel_pool *pool = NULL;
  keel_pool_options options = keel_pool_options_default();
  options.max_concurrency = 2;
  options.max_abandoned = 4;
  CHECK_OK(keel_pool_new(&options, NULL, 0, &pool));
  keel_task tasks[] = {
      {(const uint8_t *)"a", 1, returns_nonsense, NULL},
      {(const uint8_t *)"b", 1, returns_busy, NULL},
  };
  keel_outcome outcomes[2] = {{0}};
  CHECK_OK(keel_pool_run(pool, tasks, 2, 0, KEEL_POOL_TIMEOUT_DEFAULT, outcomes));
  CHECK(outcomes[0].kind == KEEL_OUTCOME_ERROR);
  CHECK(outcomes[0].status == KEEL_INVALID_ARGUMENT);
  CHECK(outcomes[0].message.ptr != NULL && strstr((const char *)outcomes[0].message.ptr, "returned 999") != NULL);
  CHECK(outcomes[0].message.ptr != NULL && strstr((const char *)outcomes[0].message.ptr, "why") != NULL);
  /* A keel_status is that kind of failure; with no output, the message names it. */
  CHECK(outcomes[1].status == KEEL_BUSY);
  CHECK(outcomes[1].message.ptr != NULL && strstr((const char *)outcomes[1].message.ptr, "KEEL_BUSY") != NULL);
  keel_outcomes_free(outcomes, 2);
  keel_pool_free(pool);
}

/* Special millisecond values are -1 and -2 only; any other negative is refused. */
static void test_negative_milliseconds_are_refused(keel_queue *queue) {
  keel_enqueue_options options = keel_enqueue_options_default();
  CHECK(options.run_at_ms == KEEL_RUN_NOW);
  options.run_at_ms = -5;
  uint64_t id = 0;
  CHECK_STATUS(keel_queue_enqueue(queue, S("k"), S("{}"), &options, &id, NULL), KEEL_INVALID_ARGUMENT);
  CHECK(error_mentions("run_at_ms"));
  CHECK(id == 0);
  options.run_at_ms = KEEL_RUN_NOW;
  CHECK_OK(keel_queue_enqueue(queue, S("k"), S("{}"), &options, &id, NULL));
  CHECK(id != 0);
  keel_locks *locks = NULL;
  CHECK_OK(keel_locks_new(NULL, 0, &locks));
  keel_lock_guard *guard = NULL;
  CHECK_STATUS(keel_locks_lock(locks, (const uint8_t *)"a", 1, KEEL_LOCK_EXCLUSIVE, -3, &guard), KEEL_INVALID_ARGUMENT);
  CHECK(guard == NULL);
  keel_locks_free(locks);
}

static void test_pool_arrays(void) {
  keel_pool *pool = NULL;
  keel_pool_options options = keel_pool_options_default();
  options.max_concurrency = 1;
  options.max_abandoned = 0;
  CHECK_OK(keel_pool_new(&options, NULL, 0, &pool));
  keel_task task = {0};
  keel_outcome outcome = {0};
  size_t wraps = SIZE_MAX / sizeof(keel_outcome) + 2;
  CHECK_STATUS(keel_pool_run(pool, &task, wraps, 0, KEEL_POOL_TIMEOUT_DEFAULT, &outcome), KEEL_INVALID_ARGUMENT);
  keel_pool_free(pool);
}

int main(void) {
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  char path[256];
  keel_ops *ops = NULL;
  keel_queue *queue = NULL;
  snprintf(path, sizeof path, "%s/ops.lmdb", dir);
  CHECK_OK(keel_ops_open(S(path), NULL, &ops));
  snprintf(path, sizeof path, "%s/queue.lmdb", dir);
  CHECK_OK(keel_queue_open(S(path), NULL, &queue));

  test_string_lengths_above_isize_max();
  test_counts_whose_byte_size_overflows(ops, queue);
  test_pool_arrays();
  test_negative_milliseconds_are_refused(queue);
  test_callback_statuses();

  keel_queue_free(queue);
  keel_ops_free(ops);
  char command[512];
  snprintf(command, sizeof command, "rm -rf '%s'", dir);
  if (system(command) != 0) {
    fprintf(stderr, "could not remove %s\n", dir);
  }
  FINISH();
}
