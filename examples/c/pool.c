/* OPAL's boot from C: 60 scopes over 20 sources, one source that hangs.
 *
 * Each task is a function pointer plus a void *userdata, run on keel's
 * threads. The first scope of a source fetches it; the others reuse it. The
 * dead source's fetch never returns: it is reported timed out after 0.5 s,
 * its later scopes are refused at once, and the boot finishes. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <keel.h>

static pthread_mutex_t dead_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t dead_cond = PTHREAD_COND_INITIALIZER;
static int dead_released;

struct scope {
  int number;
  char source[16];
};

static int32_t sync_scope(void *userdata, keel_task_ctx *ctx) {
  const struct scope *scope = userdata;
  if (keel_task_ctx_is_first_of_key(ctx)) {
    if (strcmp(scope->source, "source-13") == 0) { /* an unreachable repository */
      pthread_mutex_lock(&dead_lock);
      while (!dead_released) pthread_cond_wait(&dead_cond, &dead_lock);
      pthread_mutex_unlock(&dead_lock);
    }
    keel_task_ctx_sleep_ms(ctx, 20); /* the fetch; wakes early if cancelled */
  }
  char out[64];
  int len = snprintf(out, sizeof out, "scope-%d synced from %s", scope->number, scope->source);
  return keel_task_ctx_set_output(ctx, (const uint8_t *)out, (size_t)len);
}

int main(void) {
  enum { COUNT = 60 };
  static struct scope scopes[COUNT];
  keel_task tasks[COUNT];
  for (int i = 0; i < COUNT; i++) {
    scopes[i].number = i;
    snprintf(scopes[i].source, sizeof scopes[i].source, "source-%d", i % 20);
    tasks[i] = (keel_task){(const uint8_t *)scopes[i].source, strlen(scopes[i].source), sync_scope, &scopes[i]};
  }
  keel_pool *pool = NULL;
  keel_pool_options options = keel_pool_options_default();
  options.timeout_ms = 500;
  if (keel_pool_new(&options, "boot", 4, &pool) != KEEL_OK) {
    fprintf(stderr, "keel_pool_new: %s\n", keel_last_error());
    return 1;
  }
  keel_outcome outcomes[COUNT];
  if (keel_pool_run(pool, tasks, COUNT, 0, KEEL_POOL_TIMEOUT_DEFAULT, outcomes) != KEEL_OK) {
    fprintf(stderr, "keel_pool_run: %s\n", keel_last_error());
    return 1;
  }
  int synced = 0, timed_out = 0, refused = 0;
  for (int i = 0; i < COUNT; i++) {
    synced += outcomes[i].kind == KEEL_OUTCOME_VALUE;
    timed_out += outcomes[i].kind == KEEL_OUTCOME_TIMED_OUT;
    refused += outcomes[i].kind == KEEL_OUTCOME_REFUSED;
  }
  printf("%d synced, %d timed out, %d refused; %s\n", synced, timed_out, refused,
         (const char *)outcomes[0].output.ptr);
  keel_outcomes_free(outcomes, COUNT);
  keel_pool_free(pool); /* returns at once, though the hung fetch still runs */
  pthread_mutex_lock(&dead_lock);
  dead_released = 1;
  pthread_cond_broadcast(&dead_cond);
  pthread_mutex_unlock(&dead_lock);
  return synced == 57 && timed_out == 1 && refused == 2 ? 0 : 1;
}
