/* Operations, the job queue and a worker with C handlers, from C. Handlers
 * signal through a condition variable; nothing waits on timing. */
/* mkdtemp is POSIX.1-2008. */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define S(text) text, strlen(text)
#define PATIENCE_S 60

static char dir[] = "/tmp/keel-c-ops-XXXXXX";

static const char *path_in_dir(char *buf, size_t size, const char *name) {
  snprintf(buf, size, "%s/%s", dir, name);
  return buf;
}

/* The number after `"field":` in a JSON text (0 if missing). */
static uint64_t json_u64(const keel_buf *buf, const char *field) {
  char needle[64];
  snprintf(needle, sizeof needle, "\"%s\":", field);
  const char *at = strstr((const char *)buf->ptr, needle);
  return at ? strtoull(at + strlen(needle), NULL, 10) : 0;
}

static int contains(const keel_buf *buf, const char *text) {
  return buf->ptr != NULL && strstr((const char *)buf->ptr, text) != NULL;
}

static void test_operations(void) {
  char path[256];
  keel_ops *ops = NULL;
  CHECK_OK(keel_ops_open(S(path_in_dir(path, sizeof path, "ops.lmdb")), NULL, &ops));
  keel_bytes unpack[] = {{(const uint8_t *)"unpack", 6}};
  CHECK_OK(keel_ops_ready(ops, S("ds-1"), unpack, 1));
  CHECK_OK(keel_ops_ready(ops, S("ds-2"), unpack, 1));

  keel_buf claims = {0};
  CHECK_OK(keel_ops_claim(ops, S("unpack"), 1, S("c-worker"), 60000, &claims));
  CHECK(contains(&claims, "\"item\":\"ds-1\""));
  uint64_t token = json_u64(&claims, "token");
  CHECK(token != 0);
  keel_buf_free(&claims);

  keel_bytes enable[] = {{(const uint8_t *)"index", 5}};
  CHECK_STATUS(keel_ops_update(ops, S("ds-1"), S("unpack"), token + 1000, KEEL_OP_OK, S("late"), enable, 1),
               KEEL_CONFLICT);
  CHECK_STATUS(keel_ops_update(ops, S("ds-1"), S("unpack"), token, 99, S(""), NULL, 0), KEEL_INVALID_ARGUMENT);
  CHECK_OK(keel_ops_update(ops, S("ds-1"), S("unpack"), token, KEEL_OP_OK, S("done"), enable, 1));

  keel_buf states = {0};
  CHECK_OK(keel_ops_states(ops, S("ds-1"), &states));
  CHECK(contains(&states, "\"op\":\"index\""));
  CHECK(contains(&states, "\"state\":\"OK\""));
  keel_buf_free(&states);

  keel_buf next = {0};
  CHECK_OK(keel_ops_next(ops, S("unpack"), 10, &next));
  CHECK(contains(&next, "ds-2") && !contains(&next, "ds-1"));
  keel_buf_free(&next);

  CHECK_STATUS(keel_ops_error(ops, NULL, 3, S("unpack"), 0, S("x")), KEEL_INVALID_ARGUMENT);
  CHECK_STATUS(keel_ops_ready(ops, "bad\0item", 8, unpack, 1), KEEL_INVALID_ARGUMENT);
  keel_ops_free(ops);
  keel_ops_free(NULL);
}

static void test_queue(void) {
  char path[256];
  keel_queue *queue = NULL;
  CHECK_OK(keel_queue_open(S(path_in_dir(path, sizeof path, "queue.lmdb")), NULL, &queue));
  keel_enqueue_options options = keel_enqueue_options_default();
  options.unique_key = "mail:1";
  options.unique_key_len = 6;
  uint64_t id = 0, again = 0;
  bool created = false;
  CHECK_OK(keel_queue_enqueue(queue, S("mail"), S("{\"to\":\"a\"}"), &options, &id, &created));
  CHECK(created && id != 0);
  CHECK_OK(keel_queue_enqueue(queue, S("mail"), S("{}"), &options, &again, &created));
  CHECK(!created && again == id);
  CHECK_STATUS(keel_queue_enqueue(queue, S("mail"), S("{nope"), NULL, NULL, NULL), KEEL_INVALID_ARGUMENT);

  keel_bytes kinds[] = {{(const uint8_t *)"mail", 4}};
  keel_job job;
  bool found = false;
  CHECK_OK(keel_queue_dequeue(queue, kinds, 1, S("c"), 60000, &job, &found));
  CHECK(found && job.id == id && job.attempt == 1);
  CHECK(job.payload.len == 10 && memcmp(job.payload.ptr, "{\"to\":\"a\"}", 10) == 0);
  CHECK_OK(keel_queue_heartbeat(queue, job.id, job.token, 60000));
  CHECK_STATUS(keel_queue_complete(queue, job.id, job.token + 1, S("")), KEEL_CONFLICT);
  CHECK_OK(keel_queue_complete(queue, job.id, job.token, S("{\"sent\":1}")));
  keel_job_free(&job);
  keel_job_free(NULL);

  CHECK_OK(keel_queue_dequeue(queue, kinds, 1, S("c"), 60000, &job, &found));
  CHECK(!found);

  keel_buf record = {0};
  CHECK_OK(keel_queue_get(queue, id, &record));
  CHECK(contains(&record, "\"state\":\"completed\""));
  CHECK(contains(&record, "\"result\":{\"sent\":1}"));
  keel_buf_free(&record);
  CHECK_STATUS(keel_queue_get(queue, 424242, &record), KEEL_NOT_FOUND);

  keel_buf counts = {0};
  CHECK_OK(keel_queue_counts(queue, &counts));
  CHECK(contains(&counts, "\"mail\":{\"completed\":1}"));
  keel_buf_free(&counts);
  keel_queue_free(queue);
}

/* ---- a worker with C handlers ----------------------------------------- */

static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;
static int handled;

static void note_handled(void) {
  pthread_mutex_lock(&done_lock);
  handled++;
  pthread_cond_broadcast(&done_cond);
  pthread_mutex_unlock(&done_lock);
}

static int wait_handled(int target) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += PATIENCE_S;
  pthread_mutex_lock(&done_lock);
  while (handled < target) {
    if (pthread_cond_timedwait(&done_cond, &done_lock, &until) != 0) break;
  }
  int reached = handled >= target;
  pthread_mutex_unlock(&done_lock);
  return reached;
}

static atomic_int saw_payload;

static int32_t work(void *userdata, keel_job_ctx *ctx) {
  const uint8_t *payload = NULL;
  size_t len = 0;
  if (keel_job_ctx_payload(ctx, &payload, &len) == KEEL_OK && len > 0 && payload[0] == '{' &&
      userdata == (void *)&saw_payload && keel_job_ctx_attempt(ctx) == 1)
    atomic_fetch_add(&saw_payload, 1);
  keel_job_ctx_set_output(ctx, (const uint8_t *)"{\"ok\":true}", 11);
  note_handled();
  return KEEL_OK;
}

static int32_t refuse(void *userdata, keel_job_ctx *ctx) {
  (void)userdata;
  keel_job_ctx_set_output(ctx, (const uint8_t *)"cannot do it", 12);
  keel_job_ctx_set_retryable(ctx, false);
  note_handled();
  return KEEL_IO;
}

static void test_worker(void) {
  char path[256];
  keel_queue *queue = NULL;
  CHECK_OK(keel_queue_open(S(path_in_dir(path, sizeof path, "worker.lmdb")), NULL, &queue));
  for (int i = 0; i < 10; i++) CHECK_OK(keel_queue_enqueue(queue, S("c.work"), S("{\"n\":1}"), NULL, NULL, NULL));
  uint64_t refused_id = 0;
  CHECK_OK(keel_queue_enqueue(queue, S("c.fail"), S("{}"), NULL, &refused_id, NULL));

  keel_worker_builder *builder = NULL;
  keel_worker_options options = keel_worker_options_default();
  CHECK(options.lease_ms == 30000 && options.poll_ms == 1000 && options.job_timeout_ms == -1);
  options.poll_ms = 50;
  CHECK_OK(keel_worker_builder_new(queue, S("c-worker"), &options, &builder));
  CHECK_OK(keel_worker_builder_handler(builder, S("c.work"), 3, work, &saw_payload));
  CHECK_OK(keel_worker_builder_handler(builder, S("c.fail"), 1, refuse, NULL));
  CHECK_STATUS(keel_worker_builder_handler(builder, S("c.null"), 1, NULL, NULL), KEEL_INVALID_ARGUMENT);
  keel_worker *worker = NULL;
  CHECK_OK(keel_worker_start(builder, &worker));
  CHECK(wait_handled(11));
  uint64_t released = 99;
  CHECK_OK(keel_worker_stop(worker, 30000, &released));
  CHECK(released == 0);
  keel_worker_stats counters;
  CHECK_OK(keel_worker_get_stats(worker, &counters));
  CHECK(counters.completed == 10 && counters.failed == 1);
  CHECK(atomic_load(&saw_payload) == 10);
  keel_worker_free(worker);

  keel_buf record = {0};
  CHECK_OK(keel_queue_get(queue, refused_id, &record));
  CHECK(contains(&record, "\"state\":\"dead\""));
  CHECK(contains(&record, "cannot do it"));
  keel_buf_free(&record);

  /* An allow-list naming a kind without a handler fails start-up. */
  /* Numbers out of range are refused, never clamped or defaulted. */
  keel_worker_options bad = keel_worker_options_default();
  bad.lease_ms = 0;
  CHECK_STATUS(keel_worker_builder_new(queue, NULL, 0, &bad, &builder), KEEL_INVALID_ARGUMENT);
  bad = keel_worker_options_default();
  bad.job_timeout_ms = -5;
  CHECK_STATUS(keel_worker_builder_new(queue, NULL, 0, &bad, &builder), KEEL_INVALID_ARGUMENT);
  CHECK_OK(keel_worker_builder_new(queue, NULL, 0, NULL, &builder));
  CHECK_OK(keel_worker_builder_handler(builder, S("c.work"), 1, work, NULL));
  keel_bytes typo[] = {{(const uint8_t *)"c.wrok", 6}};
  CHECK_OK(keel_worker_builder_allow(builder, typo, 1));
  CHECK_STATUS(keel_worker_start(builder, &worker), KEEL_INVALID_ARGUMENT);
  keel_queue_free(queue);
}

static void test_batches_and_parity(void) {
  char path[256];
  keel_queue_options queue_options = keel_queue_options_default();
  CHECK(queue_options.max_resets == 5);
  queue_options.max_resets = 0;
  keel_queue *queue = NULL;
  CHECK_OK(keel_queue_open(S(path_in_dir(path, sizeof path, "batch.lmdb")), &queue_options, &queue));

  keel_job_spec specs[3];
  for (int i = 0; i < 3; i++) {
    specs[i].kind = "b";
    specs[i].kind_len = 1;
    specs[i].payload = "{}";
    specs[i].payload_len = 2;
    specs[i].options = keel_enqueue_options_default();
  }
  specs[2].options.delay_ms = 3600000; /* not ready for an hour */
  uint64_t ids[3] = {0};
  bool created[3] = {false};
  CHECK_OK(keel_queue_enqueue_many(queue, specs, 3, ids, created));
  CHECK(ids[0] && ids[1] > ids[0] && ids[2] > ids[1] && created[0] && created[2]);
  specs[0].options.delay_ms = -7;
  CHECK_STATUS(keel_queue_enqueue_many(queue, specs, 1, NULL, NULL), KEEL_INVALID_ARGUMENT);
  specs[0].options.delay_ms = 10;
  specs[0].options.run_at_ms = 10;
  CHECK_STATUS(keel_queue_enqueue_many(queue, specs, 1, NULL, NULL), KEEL_INVALID_ARGUMENT);

  keel_bytes kinds[] = {{(const uint8_t *)"b", 1}};
  keel_job job;
  bool found = false;
  CHECK_OK(keel_queue_dequeue(queue, kinds, 1, S("c"), 60000, &job, &found));
  CHECK(found && job.id == ids[0]);
  CHECK_OK(keel_queue_release(queue, job.id, job.token));
  CHECK_STATUS(keel_queue_release(queue, job.id, job.token), KEEL_CONFLICT);
  keel_job_free(&job);
  CHECK_OK(keel_queue_cancel(queue, ids[1], S("no")));
  CHECK_OK(keel_queue_retry(queue, ids[1]));
  CHECK_STATUS(keel_queue_retry(queue, ids[1]), KEEL_CONFLICT);

  keel_buf list = {0};
  CHECK_OK(keel_queue_list(queue, S("b"), S("queued"), 10, &list));
  CHECK(json_u64(&list, "id") == ids[0] && contains(&list, "\"run_at\""));
  keel_buf_free(&list);
  CHECK_STATUS(keel_queue_list(queue, S("b"), S("done"), 10, &list), KEEL_INVALID_ARGUMENT);
  CHECK_OK(keel_queue_list(queue, S("b"), NULL, 0, 10, &list));
  keel_buf_free(&list);

  /* max_resets 0: the first lapsed lease kills the job. */
  CHECK_OK(keel_queue_dequeue(queue, kinds, 1, S("c"), 1, &job, &found));
  CHECK(found);
  keel_job_free(&job);
  uint64_t dead = 0;
  for (int i = 0; i < 100000 && dead == 0; i++) CHECK_OK(keel_queue_reset_expired(queue, NULL, &dead));
  CHECK(dead == 1);
  keel_queue_free(queue);

  keel_ops_options ops_options = keel_ops_options_default();
  CHECK(ops_options.max_lapses == 5);
  keel_ops *ops = NULL;
  CHECK_OK(keel_ops_open(S(path_in_dir(path, sizeof path, "ops-order.lmdb")), &ops_options, &ops));
  keel_bytes unpack[] = {{(const uint8_t *)"unpack", 6}};
  CHECK_OK(keel_ops_ready(ops, S("zz"), unpack, 1));
  CHECK_OK(keel_ops_ready(ops, S("aa"), unpack, 1));
  keel_buf next = {0};
  CHECK_OK(keel_ops_next_in(ops, S("unpack"), 1, KEEL_NEXT_ITEM, &next));
  CHECK(contains(&next, "\"aa\"") && !contains(&next, "\"zz\""));
  keel_buf_free(&next);
  CHECK_STATUS(keel_ops_next_in(ops, S("unpack"), 1, 7, &next), KEEL_INVALID_ARGUMENT);
  uint64_t ready = 9, failed = 9;
  CHECK_OK(keel_ops_reset_expired(ops, &ready, &failed));
  CHECK(ready == 0 && failed == 0);
  keel_ops_free(ops);
}

/* A cancelled job's handler learns it through its context. */
static atomic_int lost_seen;
static int32_t wait_for_loss(void *userdata, keel_job_ctx *ctx) {
  (void)userdata;
  note_handled();
  struct timespec pause = {0, 2000000};
  for (int i = 0; i < PATIENCE_S * 500 && !keel_job_ctx_lease_lost(ctx); i++) nanosleep(&pause, NULL);
  atomic_store(&lost_seen, keel_job_ctx_lease_lost(ctx) && keel_job_ctx_should_stop(ctx));
  note_handled();
  return KEEL_OK;
}

static void test_lost_lease(void) {
  char path[256];
  keel_queue *queue = NULL;
  CHECK_OK(keel_queue_open(S(path_in_dir(path, sizeof path, "lost.lmdb")), NULL, &queue));
  uint64_t id = 0;
  CHECK_OK(keel_queue_enqueue(queue, S("c.slow"), S("{}"), NULL, &id, NULL));
  keel_worker_builder *builder = NULL;
  keel_worker_options options = keel_worker_options_default();
  options.lease_ms = 300;
  options.poll_ms = 50;
  CHECK_OK(keel_worker_builder_new(queue, S("c-lost"), &options, &builder));
  CHECK_OK(keel_worker_builder_handler(builder, S("c.slow"), 1, wait_for_loss, NULL));
  keel_worker *worker = NULL;
  handled = 0;
  CHECK_OK(keel_worker_start(builder, &worker));
  CHECK(wait_handled(1));
  CHECK_OK(keel_queue_cancel(queue, id, S("operator")));
  CHECK(wait_handled(2));
  CHECK(atomic_load(&lost_seen) == 1);
  keel_worker_stats counters;
  CHECK_OK(keel_worker_get_stats(worker, &counters));
  CHECK(counters.lost == 1);
  keel_worker_free(worker);
  keel_queue_free(queue);
}

/* Operators find an operation's FAILED items, by item key, reading only. */
static void test_list_by_state(void) {
  char path[256];
  keel_ops *ops = NULL;
  CHECK_OK(keel_ops_open(S(path_in_dir(path, sizeof path, "ops-list.lmdb")), NULL, &ops));
  keel_bytes unpack[] = {{(const uint8_t *)"unpack", 6}};
  const char *items[] = {"ds-c", "ds-a", "ds-b"};
  for (int i = 0; i < 3; i++) CHECK_OK(keel_ops_ready(ops, S(items[i]), unpack, 1));
  CHECK_OK(keel_ops_error(ops, S("ds-c"), S("unpack"), 0, S("bad tarball")));
  CHECK_OK(keel_ops_error(ops, S("ds-a"), S("unpack"), 0, S("bad checksum")));
  keel_buf failed = {0};
  CHECK_OK(keel_ops_list(ops, S("unpack"), KEEL_OP_FAILED, 10, &failed));
  const char *a = strstr((const char *)failed.ptr, "\"ds-a\"");
  const char *c = strstr((const char *)failed.ptr, "\"ds-c\"");
  CHECK(a != NULL && c != NULL && a < c && !contains(&failed, "\"ds-b\""));
  keel_buf_free(&failed);
  keel_buf one = {0};
  CHECK_OK(keel_ops_list(ops, S("unpack"), KEEL_OP_FAILED, 1, &one));
  CHECK(contains(&one, "\"ds-a\"") && !contains(&one, "\"ds-c\""));
  keel_buf_free(&one);
  keel_buf every = {0};
  CHECK_OK(keel_ops_list(ops, S("unpack"), 0, 10, &every));
  CHECK(contains(&every, "\"ds-b\"") && contains(&every, "\"READY\""));
  keel_buf_free(&every);
  keel_buf bad = {0};
  CHECK_STATUS(keel_ops_list(ops, S("unpack"), 9, 10, &bad), KEEL_INVALID_ARGUMENT);
  CHECK_STATUS(keel_ops_list(ops, S("unpack"), 0, 0, &bad), KEEL_INVALID_ARGUMENT);
  CHECK_STATUS(keel_ops_list(ops, NULL, 3, KEEL_OP_FAILED, 10, &bad), KEEL_INVALID_ARGUMENT);
  keel_ops_free(ops);
}

/* Flips a bit of every copy of `needle` in the file at `path` (the live
 * record's and any stale page's): a damaged record, as a scribbled disk
 * leaves it. Returns how many copies it changed. */
static int flip_in_file(const char *path, const char *needle) {
  FILE *file = fopen(path, "r+b");
  if (file == NULL) return 0;
  fseek(file, 0, SEEK_END);
  long size = ftell(file);
  fseek(file, 0, SEEK_SET);
  char *bytes = malloc((size_t)size);
  int flipped = 0;
  if (bytes != NULL && fread(bytes, 1, (size_t)size, file) == (size_t)size) {
    size_t len = strlen(needle);
    for (long at = 0; at + (long)len <= size; at++) {
      if (memcmp(bytes + at, needle, len) == 0) {
        bytes[at + 1] ^= 0x20;
        flipped++;
      }
    }
    fseek(file, 0, SEEK_SET);
    if (fwrite(bytes, 1, (size_t)size, file) != (size_t)size) flipped = 0;
  }
  free(bytes);
  fclose(file);
  return flipped;
}

/* A damaged job record reads as KEEL_CORRUPT naming its table (records are
 * checksummed), never as a wrong job; the others still read. */
static void test_damaged_record(void) {
  char path[256];
  path_in_dir(path, sizeof path, "damaged.lmdb");
  keel_queue *queue = NULL;
  CHECK_OK(keel_queue_open(S(path), NULL, &queue));
  uint64_t damaged = 0, intact = 0;
  CHECK_OK(keel_queue_enqueue(queue, S("mail"), S("{\"to\":\"damage-me\"}"), NULL, &damaged, NULL));
  CHECK_OK(keel_queue_enqueue(queue, S("mail"), S("{\"to\":\"keep-me\"}"), NULL, &intact, NULL));
  keel_queue_free(queue);
  CHECK(flip_in_file(path, "damage-me") >= 1);
  CHECK_OK(keel_queue_open(S(path), NULL, &queue));
  keel_buf job = {0};
  CHECK_STATUS(keel_queue_get(queue, damaged, &job), KEEL_CORRUPT);
  CHECK(strstr(keel_last_error(), "keel.jobs.records") != NULL);
  CHECK(job.ptr == NULL);
  CHECK_OK(keel_queue_get(queue, intact, &job));
  CHECK(contains(&job, "keep-me"));
  keel_buf_free(&job);
  keel_queue_free(queue);
}

int main(void) {
  if (mkdtemp(dir) == NULL) return 2;
  test_list_by_state();
  test_operations();
  test_queue();
  test_worker();
  test_batches_and_parity();
  test_lost_lease();
  test_damaged_record();
  FINISH();
}
