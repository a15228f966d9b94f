/* A job queue from C: enqueue durably, run a C handler on a keel worker,
 * stop gracefully, read the counts. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <keel.h>

#define S(text) text, strlen(text)

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int handled;

/* Runs on a worker thread: "send" the mail, fail for good on a bad address. */
static int32_t send_mail(void *userdata, keel_job_ctx *ctx) {
  (void)userdata;
  const uint8_t *payload;
  size_t len;
  keel_status status = keel_job_ctx_payload(ctx, &payload, &len);
  if (status == KEEL_OK && memchr(payload, '@', len) == NULL) {
    keel_job_ctx_set_output(ctx, (const uint8_t *)"no such address", 15);
    keel_job_ctx_set_retryable(ctx, false);
    status = KEEL_INVALID_ARGUMENT;
  }
  pthread_mutex_lock(&lock);
  handled++;
  pthread_cond_broadcast(&changed);
  pthread_mutex_unlock(&lock);
  return status;
}

static int fail(const char *what) {
  fprintf(stderr, "%s: %s\n", what, keel_last_error());
  return 1;
}

int main(void) {
  char dir[] = "/tmp/keel-example-ops-XXXXXX";
  char path[128];
  if (mkdtemp(dir) == NULL) return 1;
  snprintf(path, sizeof path, "%s/jobs.lmdb", dir);

  keel_queue *queue = NULL;
  if (keel_queue_open(S(path), NULL, &queue) != KEEL_OK) return fail("open");
  const char *payloads[] = {"{\"to\":\"ann@example.org\"}", "{\"to\":\"nobody\"}"};
  for (int i = 0; i < 2; i++)
    if (keel_queue_enqueue(queue, S("mail.send"), S(payloads[i]), NULL, NULL, NULL) != KEEL_OK)
      return fail("enqueue");

  keel_worker_builder *builder = NULL;
  keel_worker *worker = NULL;
  keel_worker_options options = keel_worker_options_default();
  options.poll_ms = 50;
  if (keel_worker_builder_new(queue, S("c-mailer"), &options, &builder) != KEEL_OK ||
      keel_worker_builder_handler(builder, S("mail.send"), 2, send_mail, NULL) != KEEL_OK ||
      keel_worker_start(builder, &worker) != KEEL_OK)
    return fail("start worker");

  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 30;
  pthread_mutex_lock(&lock);
  while (handled < 2 && pthread_cond_timedwait(&changed, &lock, &until) == 0) {
  }
  pthread_mutex_unlock(&lock);
  keel_worker_stop(worker, 30000, NULL);
  keel_worker_free(worker);

  keel_buf counts = {0};
  if (keel_queue_counts(queue, &counts) != KEEL_OK) return fail("counts");
  printf("%s\n", (const char *)counts.ptr);
  keel_buf_free(&counts);
  keel_queue_free(queue);
  return handled == 2 ? 0 : 1;
}
