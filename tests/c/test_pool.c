/* The bounded sync pool from C: the same scenarios as the Rust and Python
 * tests. Hung tasks block on a condition variable until the test releases
 * them; overlap is proven by a rendezvous, never by timing. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "check.h"

#define N 4
#define PATIENCE_S 20

/* A pool of `max_concurrency` with `timeout_ms` per task and `max_abandoned`. */
static keel_status new_pool(size_t max_concurrency, int64_t timeout_ms, size_t max_abandoned, const char *name,
                            size_t name_len, keel_pool **out) {
  keel_pool_options options = keel_pool_options_default();
  options.max_concurrency = max_concurrency;
  options.timeout_ms = timeout_ms;
  options.max_abandoned = max_abandoned;
  return keel_pool_new(&options, name, name_len, out);
}

/* ---- exclusion and concurrency ---------------------------------------- */

static atomic_int per_key_holders[3];
static atomic_int overlaps;
static atomic_int running_now;
static atomic_int running_peak;

static pthread_mutex_t meet_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t meet_cond = PTHREAD_COND_INITIALIZER;
static int meet_inside;
static int meet_target;

/* Waits until `meet_target` tasks are inside together (or PATIENCE_S pass). */
static int meet(void) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += PATIENCE_S;
  pthread_mutex_lock(&meet_lock);
  meet_inside++;
  pthread_cond_broadcast(&meet_cond);
  while (meet_inside < meet_target) {
    if (pthread_cond_timedwait(&meet_cond, &meet_lock, &until) != 0) break;
  }
  int met = meet_inside >= meet_target;
  pthread_mutex_unlock(&meet_lock);
  return met;
}

static void enter(int key) {
  int now = atomic_fetch_add(&running_now, 1) + 1;
  int peak = atomic_load(&running_peak);
  while (now > peak && !atomic_compare_exchange_weak(&running_peak, &peak, now)) {
  }
  if (atomic_fetch_add(&per_key_holders[key], 1) != 0) atomic_fetch_add(&overlaps, 1);
}

static void leave(int key) {
  atomic_fetch_sub(&per_key_holders[key], 1);
  atomic_fetch_sub(&running_now, 1);
}

static int32_t keyed_work(void *userdata, keel_task_ctx *ctx) {
  int key = (int)(intptr_t)userdata;
  enter(key);
  for (int i = 0; i < 1000; i++) sched_yield();
  leave(key);
  char out[32];
  int len = snprintf(out, sizeof out, "%zu", keel_task_ctx_index(ctx));
  return keel_task_ctx_set_output(ctx, (const uint8_t *)out, (size_t)len);
}

static int32_t meeting_work(void *userdata, keel_task_ctx *ctx) {
  (void)ctx;
  int key = (int)(intptr_t)userdata;
  enter(key % 3);
  int met = meet();
  leave(key % 3);
  return met ? KEEL_OK : KEEL_TIMEOUT;
}

static const char *KEYS[] = {"a", "b", "c", "d"};

static void test_exclusion_and_order(void) {
  keel_pool *pool = NULL;
  CHECK_OK(new_pool(N, KEEL_POOL_NO_TIMEOUT, 64, "c-pool", 6, &pool));
  enum { COUNT = 120 };
  keel_task tasks[COUNT];
  for (int i = 0; i < COUNT; i++) {
    tasks[i] = (keel_task){(const uint8_t *)KEYS[i % 3], 1, keyed_work, (void *)(intptr_t)(i % 3)};
  }
  keel_outcome outcomes[COUNT];
  CHECK_OK(keel_pool_run(pool, tasks, COUNT, 0, KEEL_POOL_TIMEOUT_DEFAULT, outcomes));
  int in_order = 1;
  for (int i = 0; i < COUNT; i++) {
    char expected[32];
    snprintf(expected, sizeof expected, "%d", i);
    if (outcomes[i].kind != KEEL_OUTCOME_VALUE || strcmp((const char *)outcomes[i].output.ptr, expected) != 0)
      in_order = 0;
  }
  CHECK(in_order);
  CHECK(atomic_load(&overlaps) == 0);
  keel_outcomes_free(outcomes, COUNT);
  keel_pool_free(pool);
}

static void test_concurrency_reaches_and_never_exceeds_the_limit(void) {
  keel_pool *pool = NULL;
  CHECK_OK(new_pool(N, KEEL_POOL_NO_TIMEOUT, 64, NULL, 0, &pool));
  atomic_store(&running_peak, 0);
  meet_target = N;
  enum { COUNT = 3 * N };
  keel_task tasks[COUNT];
  for (int i = 0; i < COUNT; i++) tasks[i] = (keel_task){NULL, 0, meeting_work, (void *)(intptr_t)i};
  keel_outcome outcomes[COUNT];
  CHECK_OK(keel_pool_run(pool, tasks, COUNT, KEEL_POOL_UNKEYED, KEEL_POOL_TIMEOUT_DEFAULT, outcomes));
  for (int i = 0; i < N; i++) CHECK(outcomes[i].kind == KEEL_OUTCOME_VALUE);
  CHECK(atomic_load(&running_peak) == N);
  keel_pool_stats stats;
  CHECK_OK(keel_pool_get_stats(pool, &stats));
  CHECK(stats.peak_concurrency == N);
  keel_outcomes_free(outcomes, COUNT);
  keel_pool_free(pool);
}

/* ---- first of key, singleflight, failures ----------------------------- */

static atomic_int runs_of_key[4];

static int32_t flag_work(void *userdata, keel_task_ctx *ctx) {
  int key = (int)(intptr_t)userdata;
  atomic_fetch_add(&runs_of_key[key], 1);
  const char *flag = keel_task_ctx_is_first_of_key(ctx) ? "first" : "follower";
  keel_task_ctx_set_output(ctx, (const uint8_t *)flag, strlen(flag));
  if (key == 3) {
    const char *message = "source d is gone";
    keel_task_ctx_set_output(ctx, (const uint8_t *)message, strlen(message));
    return KEEL_NOT_FOUND;
  }
  return KEEL_OK;
}

static void test_first_of_key_singleflight_and_failures(void) {
  keel_pool *pool = NULL;
  CHECK_OK(new_pool(N, KEEL_POOL_NO_TIMEOUT, 64, NULL, 0, &pool));
  int keys[] = {0, 1, 0, 3, 0, 3};
  enum { COUNT = 6 };
  keel_task tasks[COUNT];
  for (int i = 0; i < COUNT; i++)
    tasks[i] = (keel_task){(const uint8_t *)KEYS[keys[i]], 1, flag_work, (void *)(intptr_t)keys[i]};
  keel_outcome outcomes[COUNT];

  CHECK_OK(keel_pool_run(pool, tasks, COUNT, 0, KEEL_POOL_TIMEOUT_DEFAULT, outcomes));
  CHECK(strcmp((const char *)outcomes[0].output.ptr, "first") == 0);
  CHECK(strcmp((const char *)outcomes[2].output.ptr, "follower") == 0);
  CHECK(outcomes[3].kind == KEEL_OUTCOME_ERROR && outcomes[3].status == KEEL_NOT_FOUND);
  CHECK(strstr((const char *)outcomes[3].message.ptr, "source d is gone") != NULL);
  CHECK(outcomes[4].kind == KEEL_OUTCOME_VALUE); /* a failure never stops the others */
  keel_outcomes_free(outcomes, COUNT);

  for (int k = 0; k < 4; k++) atomic_store(&runs_of_key[k], 0);
  CHECK_OK(keel_pool_run(pool, tasks, COUNT, KEEL_POOL_SINGLEFLIGHT, KEEL_POOL_TIMEOUT_DEFAULT, outcomes));
  CHECK(atomic_load(&runs_of_key[0]) == 1 && atomic_load(&runs_of_key[3]) == 1);
  CHECK(strcmp((const char *)outcomes[4].output.ptr, "first") == 0); /* the leader's copy */
  CHECK(outcomes[5].status == KEEL_NOT_FOUND);
  keel_outcomes_free(outcomes, COUNT);

  tasks[1].run = NULL;
  CHECK_STATUS(keel_pool_run(pool, tasks, COUNT, 0, KEEL_POOL_TIMEOUT_DEFAULT, outcomes), KEEL_INVALID_ARGUMENT);
  CHECK_STATUS(keel_pool_run(NULL, tasks, COUNT, 0, KEEL_POOL_TIMEOUT_DEFAULT, outcomes), KEEL_INVALID_ARGUMENT);
  keel_pool_free(pool);
}

/* ---- hung tasks ------------------------------------------------------- */

static pthread_mutex_t hang_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hang_cond = PTHREAD_COND_INITIALIZER;
static int released;
static int hung_started;

static int32_t hang(void *userdata, keel_task_ctx *ctx) {
  (void)userdata;
  (void)ctx;
  pthread_mutex_lock(&hang_lock);
  hung_started++;
  pthread_cond_broadcast(&hang_cond);
  while (!released) pthread_cond_wait(&hang_cond, &hang_lock);
  pthread_mutex_unlock(&hang_lock);
  return KEEL_OK;
}

static int32_t quick(void *userdata, keel_task_ctx *ctx) {
  (void)userdata;
  (void)ctx;
  return KEEL_OK;
}

static void release_hung(void) {
  pthread_mutex_lock(&hang_lock);
  released = 1;
  pthread_cond_broadcast(&hang_cond);
  pthread_mutex_unlock(&hang_lock);
}

static void test_hung_task_times_out_and_frees_its_slot(void) {
  keel_pool *pool = NULL;
  /* One slot: if the hung task kept it, nothing after it could run. */
  CHECK_OK(new_pool(1, 100, 64, NULL, 0, &pool));
  keel_task tasks[] = {
      {(const uint8_t *)"dead", 4, hang, NULL},
      {(const uint8_t *)"dead", 4, quick, NULL},
      {(const uint8_t *)"live", 4, quick, NULL},
  };
  keel_outcome outcomes[3];
  CHECK_OK(keel_pool_run(pool, tasks, 3, 0, KEEL_POOL_TIMEOUT_DEFAULT, outcomes));
  CHECK(outcomes[0].kind == KEEL_OUTCOME_TIMED_OUT && outcomes[0].status == KEEL_TIMEOUT);
  CHECK(outcomes[1].kind == KEEL_OUTCOME_REFUSED && outcomes[1].status == KEEL_BUSY);
  CHECK(outcomes[2].kind == KEEL_OUTCOME_VALUE);
  keel_pool_stats stats;
  CHECK_OK(keel_pool_get_stats(pool, &stats));
  CHECK(stats.abandoned == 1 && stats.timed_out == 1);
  keel_outcomes_free(outcomes, 3);
  keel_pool_free(pool); /* returns although the hung thread lives */
}

struct batch_call {
  keel_pool *pool;
  keel_task *tasks;
  size_t count;
  keel_outcome *outcomes;
  keel_status status;
};

static void *run_batch_thread(void *arg) {
  struct batch_call *call = arg;
  call->status = keel_pool_run(call->pool, call->tasks, call->count, KEEL_POOL_UNKEYED,
                               KEEL_POOL_TIMEOUT_DEFAULT, call->outcomes);
  return NULL;
}

static void test_shutdown_returns_while_hung_threads_live(void) {
  keel_pool *pool = NULL;
  CHECK_OK(new_pool(2, KEEL_POOL_NO_TIMEOUT, 64, NULL, 0, &pool));
  pthread_mutex_lock(&hang_lock);
  hung_started = 0;
  pthread_mutex_unlock(&hang_lock);
  keel_task tasks[] = {{NULL, 0, hang, NULL}, {NULL, 0, hang, NULL}, {NULL, 0, quick, NULL}};
  keel_outcome outcomes[3];
  struct batch_call call = {pool, tasks, 3, outcomes, KEEL_IO};
  pthread_t batch;
  pthread_create(&batch, NULL, run_batch_thread, &call);
  pthread_mutex_lock(&hang_lock);
  while (hung_started < 2) pthread_cond_wait(&hang_cond, &hang_lock);
  pthread_mutex_unlock(&hang_lock);
  CHECK_OK(keel_pool_shutdown(pool));
  pthread_join(batch, NULL); /* returns although both hung tasks still run */
  CHECK_OK(call.status);
  for (int i = 0; i < 3; i++) CHECK(outcomes[i].kind == KEEL_OUTCOME_CANCELLED);
  keel_outcomes_free(outcomes, 3);
  keel_outcome later[1];
  CHECK_OK(keel_pool_run(pool, tasks + 2, 1, 0, KEEL_POOL_TIMEOUT_DEFAULT, later));
  CHECK(later[0].kind == KEEL_OUTCOME_REFUSED && later[0].status == KEEL_CLOSED);
  keel_outcomes_free(later, 1);
  keel_pool_free(pool);
}

/* ---- pipeline --------------------------------------------------------- */

static size_t committed[32];
static size_t committed_count;

static int32_t prepare_item(void *userdata, keel_task_ctx *ctx) {
  (void)ctx;
  int item = (int)(intptr_t)userdata;
  if (item == 5) return KEEL_CORRUPT;
  char out[16];
  int len = snprintf(out, sizeof out, "p%d", item);
  return keel_task_ctx_set_output(ctx, (const uint8_t *)out, (size_t)len);
}

static int32_t commit_item(void *userdata, size_t index, const uint8_t *prepared, size_t len,
                               keel_task_ctx *ctx) {
  (void)userdata;
  committed[committed_count++] = index;
  char out[32];
  int n = snprintf(out, sizeof out, "c:%.*s", (int)len, (const char *)prepared);
  return keel_task_ctx_set_output(ctx, (const uint8_t *)out, (size_t)n);
}

static void test_pipeline_commits_in_order_and_isolates_failures(void) {
  keel_pool *pool = NULL;
  CHECK_OK(new_pool(N, KEEL_POOL_NO_TIMEOUT, 64, NULL, 0, &pool));
  enum { COUNT = 20 };
  keel_task items[COUNT];
  for (int i = 0; i < COUNT; i++) items[i] = (keel_task){NULL, 0, prepare_item, (void *)(intptr_t)i};
  keel_outcome outcomes[COUNT];
  CHECK_OK(keel_pool_pipeline(pool, items, COUNT, commit_item, NULL, 3, false, outcomes));
  CHECK(committed_count == COUNT - 1);
  int ordered = 1;
  for (size_t i = 1; i < committed_count; i++)
    if (committed[i] <= committed[i - 1]) ordered = 0;
  CHECK(ordered);
  CHECK(outcomes[5].kind == KEEL_OUTCOME_ERROR && outcomes[5].status == KEEL_CORRUPT);
  CHECK(strcmp((const char *)outcomes[6].output.ptr, "c:p6") == 0);
  keel_outcomes_free(outcomes, COUNT);
  CHECK_STATUS(keel_pool_pipeline(pool, items, COUNT, NULL, NULL, 0, false, outcomes), KEEL_INVALID_ARGUMENT);
  keel_pool_free(pool);
}

/* ---- options, failure backoff, checked numbers ------------------------ */

static void test_failure_backoff_skips_a_failing_key(void) {
  keel_pool_options options = keel_pool_options_default();
  CHECK(options.max_concurrency == 10 && options.backoff_base_ms == 0);
  options.max_concurrency = 2;
  options.backoff_base_ms = 3600 * 1000; /* an hour: nothing can expire during the test */
  options.backoff_max_ms = 2 * 3600 * 1000;
  keel_pool *pool = NULL;
  CHECK_OK(keel_pool_new(&options, "backoff", 7, &pool));
  for (int k = 0; k < 4; k++) atomic_store(&runs_of_key[k], 0);
  /* Key d (3) fails; its duplicates in the batch cost one attempt. */
  enum { COUNT = 3 };
  keel_task tasks[COUNT];
  for (int i = 0; i < COUNT; i++) tasks[i] = (keel_task){(const uint8_t *)KEYS[3], 1, flag_work, (void *)(intptr_t)3};
  keel_outcome outcomes[COUNT];
  CHECK_OK(keel_pool_run(pool, tasks, COUNT, 0, KEEL_POOL_TIMEOUT_DEFAULT, outcomes));
  CHECK(outcomes[0].kind == KEEL_OUTCOME_ERROR && outcomes[0].status == KEEL_NOT_FOUND);
  CHECK(outcomes[1].kind == KEEL_OUTCOME_SKIPPED && outcomes[1].status == KEEL_BUSY);
  CHECK(outcomes[1].retry_in_ms > 0 && outcomes[1].retry_in_ms <= 3600 * 1000);
  CHECK(strstr((const char *)outcomes[1].message.ptr, "skipped") != NULL);
  CHECK(atomic_load(&runs_of_key[3]) == 1);
  keel_outcomes_free(outcomes, COUNT);
  /* An explicit retry bypasses the pause. */
  CHECK_OK(keel_pool_run(pool, tasks, 1, KEEL_POOL_BYPASS_BACKOFF, KEEL_POOL_TIMEOUT_DEFAULT, outcomes));
  CHECK(outcomes[0].kind == KEEL_OUTCOME_ERROR && atomic_load(&runs_of_key[3]) == 2);
  keel_outcomes_free(outcomes, 1);
  keel_pool_stats stats;
  CHECK_OK(keel_pool_get_stats(pool, &stats));
  CHECK(stats.skipped == 2 && stats.paused_keys == 1);
  keel_pool_free(pool);

  /* (size_t)-5 is out of range, not clamped; max_abandoned 0 is no cap. */
  options = keel_pool_options_default();
  options.max_concurrency = (size_t)-5;
  CHECK_STATUS(keel_pool_new(&options, NULL, 0, &pool), KEEL_INVALID_ARGUMENT);
  options = keel_pool_options_default();
  options.backoff_base_ms = -1;
  CHECK_STATUS(keel_pool_new(&options, NULL, 0, &pool), KEEL_INVALID_ARGUMENT);
  CHECK_OK(new_pool(4, KEEL_POOL_NO_TIMEOUT, 0, NULL, 0, &pool));
  keel_pool_free(pool);
  /* NULL options are the defaults. */
  CHECK_OK(keel_pool_new(NULL, NULL, 0, &pool));
  keel_pool_free(pool);
}

int main(void) {
  test_exclusion_and_order();
  test_concurrency_reaches_and_never_exceeds_the_limit();
  test_first_of_key_singleflight_and_failures();
  test_failure_backoff_skips_a_failing_key();
  test_pipeline_commits_in_order_and_isolates_failures();
  test_hung_task_times_out_and_frees_its_slot();
  test_shutdown_returns_while_hung_threads_live();
  release_hung();
  FINISH();
}
