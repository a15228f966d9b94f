/* Crash-safe changes to a folder from C: write two files and commit, then
 * start a change that fails half-way and roll it back. After any crash, the
 * next keel_journal_open brings the tree back to its last committed state. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <keel.h>

#define STR(s) (s), strlen(s)
#define BYTES(s) (const uint8_t *)(s), strlen(s)

static int fail(const char *what) {
  fprintf(stderr, "%s: %s\n", what, keel_last_error());
  return 1;
}

int main(void) {
  char root[] = "/tmp/keel-c-journal-example-XXXXXX";
  if (!mkdtemp(root)) return 1;
  keel_journal *journal = NULL;
  if (keel_journal_open(root, strlen(root), &journal) != KEEL_OK) return fail("open");

  keel_mutation *m = NULL;
  if (keel_journal_begin(journal, STR("add"), STR("rivers"), &m) != KEEL_OK) return fail("begin");
  if (keel_mutation_write(m, STR("wiki/rivers.md"), BYTES("# Rivers\n")) != KEEL_OK) return fail("write");
  if (keel_mutation_write(m, STR("index.md"), BYTES("- rivers\n")) != KEEL_OK) return fail("write");
  if (keel_mutation_commit(m) != KEEL_OK) return fail("commit");
  keel_mutation_free(m);

  /* A change that fails half-way: the bad path is refused, so we roll back. */
  if (keel_journal_begin(journal, STR("add"), STR("lakes"), &m) != KEEL_OK) return fail("begin");
  keel_mutation_write(m, STR("index.md"), BYTES("- rivers\n- lakes\n"));
  keel_status status = keel_mutation_write(m, STR("../outside.md"), BYTES("no"));
  printf("writing outside the root: %s (%s)\n", keel_status_name(status), keel_last_error());
  keel_mutation_rollback(m);
  keel_mutation_free(m);

  keel_journal_state state;
  if (keel_journal_status(journal, &state) != KEEL_OK) return fail("status");
  printf("records left: %zu active, %zu finished\n", state.active, state.finished);
  keel_journal_free(journal);

  char command[128];
  snprintf(command, sizeof command, "cat '%s/index.md' && rm -rf '%s'", root, root);
  return system(command) == 0 ? 0 : 1;
}
