/* Four threads sync sources that share keys; one lock per source, none left. */
#include <keel.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static keel_locks *locks;
static const char *sources[] = {"alpha", "beta", "alpha", "gamma", "beta", "alpha"};

static void *sync_sources(void *arg) {
  (void)arg;
  for (size_t i = 0; i < sizeof sources / sizeof *sources; i++) {
    keel_lock_guard *guard = NULL;
    keel_status status = keel_locks_lock(locks, (const uint8_t *)sources[i], strlen(sources[i]),
                                         KEEL_LOCK_EXCLUSIVE, 5000, &guard);
    if (status != KEEL_OK) {
      fprintf(stderr, "lock %s: %s\n", sources[i], keel_last_error());
      continue;
    }
    /* ... fetch the source ... */
    keel_lock_guard_release(guard);
  }
  return NULL;
}

int main(void) {
  if (keel_locks_new("sources", 7, &locks) != KEEL_OK) {
    fprintf(stderr, "keel_locks_new: %s\n", keel_last_error());
    return 1;
  }
  pthread_t threads[4];
  for (int i = 0; i < 4; i++) pthread_create(&threads[i], NULL, sync_sources, NULL);
  for (int i = 0; i < 4; i++) pthread_join(threads[i], NULL);
  keel_lock_stats stats;
  keel_locks_stats(locks, &stats);
  printf("keel %s: entries left after syncing: %zu\n", keel_version(), stats.entries);
  keel_locks_free(locks);
  return stats.entries == 0 ? 0 : 1;
}
