/* The queue and operations opened by URL on PostgreSQL, from C. The server
 * is the one in KEEL_TEST_PG_URL (scripts/test starts it with scripts/pg). */
#include <stdlib.h>

#include "check.h"

#define S(text) text, strlen(text)

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
  FINISH();
}
