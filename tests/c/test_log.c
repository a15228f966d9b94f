/* keel's events reach a C callback, with the level the host chose. */
#include <pthread.h>
#include <stdatomic.h>

#include "check.h"

static atomic_int lock_events;
static atomic_int other_events;
static keel_locks *locks;

static void on_event(void *userdata, keel_log_level level, const char *target,
                     size_t target_len, const char *message, size_t message_len) {
  (void)level;
  CHECK(userdata == (void *)&lock_events);
  CHECK(strlen(target) == target_len && strlen(message) == message_len);
  if (strcmp(target, "keel::locks") == 0 && strstr(message, "lock wait:") &&
      strstr(message, "outcome=timed_out")) {
    atomic_fetch_add(&lock_events, 1);
  } else {
    atomic_fetch_add(&other_events, 1);
  }
}

static void *wait_briefly(void *unused) {
  (void)unused;
  keel_lock_guard *guard = NULL;
  keel_status status = keel_locks_lock(locks, (const uint8_t *)"k", 1,
                                       KEEL_LOCK_EXCLUSIVE, 5, &guard);
  CHECK(status == KEEL_TIMEOUT);
  return NULL;
}

static void contend_once(void) {
  pthread_t thread;
  pthread_create(&thread, NULL, wait_briefly, NULL);
  pthread_join(thread, NULL);
}

int main(void) {
  CHECK_OK(keel_locks_new(NULL, 0, &locks));
  keel_lock_guard *held = NULL;
  CHECK_OK(keel_locks_lock(locks, (const uint8_t *)"k", 1, KEEL_LOCK_EXCLUSIVE,
                           KEEL_WAIT_FOREVER, &held));

  CHECK_STATUS(keel_set_log_callback(9, on_event, NULL), KEEL_INVALID_ARGUMENT);
  CHECK_OK(keel_set_log_callback(KEEL_LOG_DEBUG, on_event, &lock_events));
  contend_once();
  CHECK(atomic_load(&lock_events) == 1);

  /* Below the event's level: not called. */
  CHECK_OK(keel_set_log_callback(KEEL_LOG_INFO, on_event, &lock_events));
  contend_once();
  CHECK(atomic_load(&lock_events) == 1);

  /* NULL turns logging off. */
  CHECK_OK(keel_set_log_callback(KEEL_LOG_TRACE, NULL, NULL));
  contend_once();
  CHECK(atomic_load(&lock_events) == 1);

  keel_lock_guard_release(held);
  keel_locks_free(locks);
  FINISH();
}
