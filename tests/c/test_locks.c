/* The lock registry from C: the same scenarios as the Rust and Python tests. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "check.h"

#define KEY(s) (const uint8_t *)(s), strlen(s)

static keel_locks *shared_locks;
static atomic_int holders_now;
static atomic_int overlaps;
static int counter; /* guarded by the key "counter" only */

static void *contend(void *arg) {
  (void)arg;
  for (int i = 0; i < 2000; i++) {
    keel_lock_guard *guard = NULL;
    if (keel_locks_lock(shared_locks, KEY("counter"), KEEL_LOCK_EXCLUSIVE,
                        KEEL_WAIT_FOREVER, &guard) != KEEL_OK) {
      atomic_fetch_add(&overlaps, 1000000);
      continue;
    }
    if (atomic_fetch_add(&holders_now, 1) != 0) atomic_fetch_add(&overlaps, 1);
    counter++;
    atomic_fetch_sub(&holders_now, 1);
    keel_lock_guard_release(guard);
  }
  return NULL;
}

static void *release_on_this_thread(void *guard) {
  keel_lock_guard_release((keel_lock_guard *)guard);
  return NULL;
}

static void *try_from_other_thread(void *result) {
  keel_lock_guard *guard = NULL;
  *(keel_status *)result =
      keel_locks_try_lock(shared_locks, KEY("held"), KEEL_LOCK_EXCLUSIVE, &guard);
  keel_lock_guard_release(guard);
  return NULL;
}

static void *lock_with_timeout(void *result) {
  keel_lock_guard *guard = NULL;
  *(keel_status *)result = keel_locks_lock(shared_locks, KEY("held"),
                                           KEEL_LOCK_EXCLUSIVE, 20, &guard);
  keel_lock_guard_release(guard);
  return NULL;
}

static void test_version(void) {
  char expected[64];
  snprintf(expected, sizeof expected, "%d.%d.%d", KEEL_VERSION_MAJOR,
           KEEL_VERSION_MINOR, KEEL_VERSION_PATCH);
  CHECK(strcmp(keel_version(), expected) == 0);
}

static void test_exclusion_and_no_leak(void) {
  CHECK_OK(keel_locks_new("sources", 7, &shared_locks));
  pthread_t threads[8];
  for (int i = 0; i < 8; i++) pthread_create(&threads[i], NULL, contend, NULL);
  for (int i = 0; i < 8; i++) pthread_join(threads[i], NULL);
  CHECK(atomic_load(&overlaps) == 0);
  CHECK(counter == 8 * 2000);
  keel_lock_stats stats = {1, 1, 1};
  CHECK_OK(keel_locks_stats(shared_locks, &stats));
  CHECK(stats.entries == 0 && stats.holders == 0 && stats.waiters == 0);
}

static void test_many_keys_leave_no_entry(void) {
  char key[32];
  for (int i = 0; i < 10000; i++) {
    keel_lock_guard *guard = NULL;
    int len = snprintf(key, sizeof key, "key-%d", i);
    CHECK_OK(keel_locks_lock(shared_locks, (const uint8_t *)key, (size_t)len,
                             i % 2 ? KEEL_LOCK_SHARED : KEEL_LOCK_EXCLUSIVE,
                             KEEL_WAIT_FOREVER, &guard));
    keel_lock_guard_release(guard);
  }
  keel_lock_stats stats;
  CHECK_OK(keel_locks_stats(shared_locks, &stats));
  CHECK(stats.entries == 0);
}

static void test_try_lock_timeout_and_cross_thread_release(void) {
  keel_lock_guard *held = NULL;
  CHECK_OK(keel_locks_lock(shared_locks, KEY("held"), KEEL_LOCK_EXCLUSIVE,
                           KEEL_WAIT_FOREVER, &held));

  keel_status busy = KEEL_OK, timed_out = KEEL_OK;
  pthread_t thread;
  pthread_create(&thread, NULL, try_from_other_thread, &busy);
  pthread_join(thread, NULL);
  CHECK(busy == KEEL_BUSY);
  pthread_create(&thread, NULL, lock_with_timeout, &timed_out);
  pthread_join(thread, NULL);
  CHECK(timed_out == KEEL_TIMEOUT);

  /* Re-entry on the holding thread is refused, not hung. */
  keel_lock_guard *again = NULL;
  CHECK_STATUS(keel_locks_lock(shared_locks, KEY("held"), KEEL_LOCK_SHARED,
                               KEEL_WAIT_FOREVER, &again),
               KEEL_WOULD_DEADLOCK);
  CHECK(again == NULL);
  CHECK(strstr(keel_last_error(), "WouldDeadlock") != NULL);
  CHECK(strstr(keel_last_error(), "sources") != NULL);

  keel_lock_stats stats;
  CHECK_OK(keel_locks_stats(shared_locks, &stats));
  CHECK(stats.entries == 1 && stats.holders == 1 && stats.waiters == 0);

  /* Released on another thread than the one that took it. */
  pthread_create(&thread, NULL, release_on_this_thread, held);
  pthread_join(thread, NULL);
  CHECK_OK(keel_locks_stats(shared_locks, &stats));
  CHECK(stats.entries == 0);
}

static void test_lock_many(void) {
  keel_bytes keys[] = {{(const uint8_t *)"b", 1},
                       {(const uint8_t *)"a", 1},
                       {(const uint8_t *)"b", 1}};
  keel_lock_guard *guard = NULL;
  CHECK_OK(keel_locks_lock_many(shared_locks, keys, 3, KEEL_LOCK_EXCLUSIVE,
                                KEEL_WAIT_FOREVER, &guard));
  keel_lock_stats stats;
  CHECK_OK(keel_locks_stats(shared_locks, &stats));
  CHECK(stats.entries == 2 && stats.holders == 2);
  keel_lock_guard_release(guard);
  CHECK_OK(keel_locks_stats(shared_locks, &stats));
  CHECK(stats.entries == 0);
}

static void test_bad_arguments(void) {
  keel_lock_guard *guard = NULL;
  keel_locks *locks = NULL;
  /* NULL where a value is required. */
  CHECK_STATUS(keel_locks_new(NULL, 0, NULL), KEEL_INVALID_ARGUMENT);
  CHECK_STATUS(keel_locks_lock(NULL, KEY("k"), KEEL_LOCK_EXCLUSIVE, 0, &guard),
               KEEL_INVALID_ARGUMENT);
  CHECK(strstr(keel_last_error(), "locks is NULL") != NULL);
  CHECK_STATUS(keel_locks_lock(shared_locks, NULL, 3, KEEL_LOCK_EXCLUSIVE, 0, &guard),
               KEEL_INVALID_ARGUMENT);
  CHECK_STATUS(keel_locks_lock(shared_locks, KEY("k"), KEEL_LOCK_EXCLUSIVE, 0, NULL),
               KEEL_INVALID_ARGUMENT);
  CHECK_STATUS(keel_locks_lock_many(shared_locks, NULL, 2, KEEL_LOCK_EXCLUSIVE, 0, &guard),
               KEEL_INVALID_ARGUMENT);
  CHECK_STATUS(keel_locks_stats(shared_locks, NULL), KEEL_INVALID_ARGUMENT);
  /* A negative timeout other than KEEL_WAIT_FOREVER is an error. */
  CHECK_STATUS(keel_locks_lock(shared_locks, KEY("k"), KEEL_LOCK_EXCLUSIVE, -5, &guard),
               KEEL_INVALID_ARGUMENT);
  /* An out-of-range mode is an error, not undefined behaviour. */
  CHECK_STATUS(keel_locks_lock(shared_locks, KEY("k"), 7, 0, &guard),
               KEEL_INVALID_ARGUMENT);
  CHECK(guard == NULL);
  /* Invalid UTF-8 in a string argument. */
  CHECK_STATUS(keel_locks_new("\xff\xfe", 2, &locks), KEEL_INVALID_ARGUMENT);
  CHECK(strstr(keel_last_error(), "UTF-8") != NULL);
  CHECK(locks == NULL);
  /* A success clears the last error. */
  CHECK_OK(keel_locks_new(NULL, 0, &locks));
  CHECK(strcmp(keel_last_error(), "") == 0);
  keel_locks_free(locks);
  /* Freeing NULL is a no-op. */
  keel_locks_free(NULL);
  keel_lock_guard_release(NULL);
}

static void test_stats_json(void) {
  keel_lock_guard *guard = NULL;
  CHECK_OK(keel_locks_lock(shared_locks, KEY("stats-key"), KEEL_LOCK_EXCLUSIVE, 0, &guard));
  keel_buf json = {0};
  CHECK_OK(keel_stats_json(&json));
  CHECK(json.ptr != NULL && strlen((const char *)json.ptr) == json.len);
  CHECK(strstr((const char *)json.ptr, "\"name\":\"sources\"") != NULL);
  CHECK(strstr((const char *)json.ptr, "\"entries\":1") != NULL);
  keel_buf_free(&json);
  CHECK(json.ptr == NULL && json.len == 0);
  keel_buf_free(&json); /* a zeroed buffer: no-op */
  keel_buf_free(NULL);
  CHECK_STATUS(keel_stats_json(NULL), KEEL_INVALID_ARGUMENT);
  keel_lock_guard_release(guard);
}

static void test_panic_is_contained(void) {
  CHECK_STATUS(keel_debug_panic(), KEEL_PANIC);
  CHECK(strstr(keel_last_error(), "keel_debug_panic was called") != NULL);
  CHECK(strcmp(keel_status_name(KEEL_PANIC), "KEEL_PANIC") == 0);
  CHECK(strcmp(keel_status_name(999), "KEEL_UNKNOWN") == 0);
}

int main(void) {
  test_version();
  test_exclusion_and_no_leak();
  test_many_keys_leave_no_entry();
  test_try_lock_timeout_and_cross_thread_release();
  test_lock_many();
  test_bad_arguments();
  test_stats_json();
  test_panic_is_contained();
  keel_locks_free(shared_locks);
  FINISH();
}
