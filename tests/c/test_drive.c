/* The drive from C: JSON in and out, ids as hex or 16 bytes, migration
 * callbacks with userdata, checked views and batches. */
#define _DEFAULT_SOURCE /* for mkdtemp */
#include <stdlib.h>
#include <unistd.h>

#include "check.h"

#define STR(s) (s), strlen(s)

/* The 32 hex characters of the first "id" in a JSON text (into out[33]). */
static void id_of(const keel_buf *json, char out[33]) {
  const char *at = strstr((const char *)json->ptr, "\"id\":\"");
  out[0] = 0;
  if (at) {
    memcpy(out, at + 6, 32);
    out[32] = 0;
  }
}

static void hex_to_bytes(const char *hex, uint8_t out[16]) {
  for (int i = 0; i < 16; i++) {
    unsigned byte;
    sscanf(hex + 2 * i, "%2x", &byte);
    out[i] = (uint8_t)byte;
  }
}

static int has(const keel_buf *buf, const char *text) {
  return buf->ptr && strstr((const char *)buf->ptr, text) != NULL;
}

typedef struct {
  int calls;
  int fail;
} migrate_state;

static int32_t migrate(void *userdata, const char *input, size_t input_len,
                           keel_drive_migration *output) {
  migrate_state *state = userdata;
  state->calls++;
  if (state->fail) return KEEL_CONFLICT;
  (void)input_len;
  /* {"data":{"title":"..."}...} -> {"name":"migrated"} */
  if (!strstr(input, "\"title\"")) return KEEL_INVALID_ARGUMENT;
  return keel_drive_migration_set(output, STR("{\"name\":\"migrated\"}"));
}

/* make_path, rename, the file's path, verify and stats: the calls C lacked. */
static void test_paths_and_file_calls(keel_drive *drive, const char *path) {
  keel_buf buf = {0};
  CHECK_OK(keel_drive_make_path(drive, STR("made/deeper/deepest"), &buf));
  CHECK(has(&buf, "\"name\":\"made\"") && has(&buf, "\"name\":\"deepest\""));
  keel_buf_free(&buf);
  /* Existing steps are kept: the same path again makes nothing new. */
  CHECK_OK(keel_drive_at_path(drive, STR("made/deeper"), &buf));
  char deeper[33];
  id_of(&buf, deeper);
  keel_buf_free(&buf);
  CHECK_OK(keel_drive_make_path(drive, STR("made/deeper"), &buf));
  CHECK(has(&buf, deeper));
  keel_buf_free(&buf);
  CHECK_STATUS(keel_drive_make_path(drive, STR("made/../x"), &buf), KEEL_INVALID_ARGUMENT);

  CHECK_OK(keel_drive_rename(drive, (const uint8_t *)deeper, 32, STR("renamed"), &buf));
  CHECK(has(&buf, "\"name\":\"renamed\"") && has(&buf, deeper));
  keel_buf_free(&buf);
  CHECK_OK(keel_drive_at_path(drive, STR("made/renamed/deepest"), &buf));
  keel_buf_free(&buf);
  CHECK_STATUS(keel_drive_at_path(drive, STR("made/deeper"), &buf), KEEL_NOT_FOUND);
  CHECK_STATUS(keel_drive_rename(drive, (const uint8_t *)deeper, 32, NULL, 0, &buf), KEEL_INVALID_ARGUMENT);

  CHECK_OK(keel_drive_path(drive, &buf));
  CHECK(buf.len > 0 && strstr(path, "drive.lmdb") && has(&buf, "drive.lmdb"));
  keel_buf_free(&buf);
  CHECK_OK(keel_drive_verify(drive, &buf));
  CHECK(has(&buf, "\"problems\":[]"));
  keel_buf_free(&buf);
  CHECK_OK(keel_drive_verify_file(STR(path), &buf));
  CHECK(has(&buf, "\"problems\":[]"));
  keel_buf_free(&buf);
  CHECK_STATUS(keel_drive_verify_file(STR("/nonexistent/keel.lmdb"), &buf), KEEL_NOT_FOUND);
  CHECK_OK(keel_drive_stats_json(drive, &buf));
  CHECK(has(&buf, "\"map_size\":") && has(&buf, "\"batches\":") && has(&buf, "\"queued_writes\":"));
  keel_buf_free(&buf);
  CHECK_STATUS(keel_drive_stats_json(NULL, &buf), KEEL_INVALID_ARGUMENT);
}

int main(void) {
  char dir[] = "/tmp/keel-c-drive-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char path[256];
  snprintf(path, sizeof path, "%s/drive.lmdb", dir);

  keel_drive *drive = NULL;
  CHECK_OK(keel_drive_open(STR(path), NULL, &drive));

  /* Create, find by path ignoring case, get by hex and by 16 bytes. */
  keel_buf buf = {0};
  CHECK_OK(keel_drive_create(drive, NULL, 0, STR("{\"name\":\"Docs\"}"), &buf));
  char docs[33];
  id_of(&buf, docs);
  CHECK(strlen(docs) == 32);
  keel_buf_free(&buf);
  CHECK_OK(keel_drive_create_at(drive, STR("docs"), STR("{\"name\":\"Note\",\"type\":\"note\"}"), &buf));
  char note[33];
  id_of(&buf, note);
  keel_buf_free(&buf);
  CHECK_OK(keel_drive_resolve(drive, STR("/DOCS/note"), &buf));
  CHECK(has(&buf, note) && has(&buf, "\"name\":\"Docs\""));
  keel_buf_free(&buf);
  uint8_t raw[16];
  hex_to_bytes(note, raw);
  CHECK_OK(keel_drive_get(drive, raw, 16, NULL, 0, &buf));
  CHECK(has(&buf, "\"type\":\"note\""));
  keel_buf_free(&buf);
  CHECK_STATUS(keel_drive_get(drive, (const uint8_t *)note, 32, STR("other"), &buf), KEEL_CONFLICT);
  CHECK_OK(keel_drive_at_path(drive, STR("docs/NOTE"), &buf));
  CHECK(has(&buf, note));
  keel_buf_free(&buf);
  CHECK_STATUS(keel_drive_at_path(drive, STR("docs/missing"), &buf), KEEL_NOT_FOUND);
  CHECK_OK(keel_drive_path_of(drive, (const uint8_t *)note, 32, &buf));
  CHECK(buf.len == 9 && memcmp(buf.ptr, "Docs/Note", 9) == 0);
  keel_buf_free(&buf);
  CHECK_OK(keel_drive_children(drive, (const uint8_t *)docs, 32, NULL, 0, 10, &buf));
  CHECK(has(&buf, note));
  keel_buf_free(&buf);
  CHECK_OK(keel_drive_walk(drive, NULL, 0, KEEL_WALK_PARENTS_FIRST, &buf));
  CHECK(has(&buf, docs) && has(&buf, note));
  keel_buf_free(&buf);
  CHECK_OK(keel_drive_by_type(drive, STR("note"), NULL, 0, 10, &buf));
  CHECK(has(&buf, note));
  keel_buf_free(&buf);

  /* Bad input is a status, never a crash. */
  CHECK_STATUS(keel_drive_create(drive, NULL, 0, STR("{\"name\":\"a/b\"}"), &buf), KEEL_INVALID_ARGUMENT);
  CHECK_STATUS(keel_drive_create(drive, NULL, 0, STR("{\"name\":\"DOCS\"}"), &buf), KEEL_ALREADY_EXISTS);
  CHECK_STATUS(keel_drive_create(drive, NULL, 0, STR("not json"), &buf), KEEL_INVALID_ARGUMENT);
  CHECK_STATUS(keel_drive_resolve(drive, STR("docs/missing"), &buf), KEEL_NOT_FOUND);
  CHECK(strstr(keel_last_error(), "missing") != NULL);
  CHECK_STATUS(keel_drive_get(drive, (const uint8_t *)"xyz", 3, NULL, 0, &buf), KEEL_INVALID_ARGUMENT);
  CHECK_STATUS(keel_drive_get(NULL, (const uint8_t *)note, 32, NULL, 0, &buf), KEEL_INVALID_ARGUMENT);
  CHECK_STATUS(keel_drive_resolve(drive, "\xff\xfe", 2, &buf), KEEL_INVALID_ARGUMENT);
  CHECK_STATUS(keel_drive_resolve(drive, STR("docs"), NULL), KEEL_INVALID_ARGUMENT);
  CHECK(buf.ptr == NULL);

  /* Versioned data and a schema migration through a C callback. */
  CHECK_OK(keel_drive_set_data(drive, (const uint8_t *)note, 32, STR("{\"title\":\"t\"}"), NULL, 0, &buf));
  CHECK(buf.len == 5 && memcmp(buf.ptr, "0.0.1", 5) == 0);
  keel_buf_free(&buf);
  CHECK_OK(keel_drive_set_data(drive, (const uint8_t *)note, 32, STR("{\"title\":\"u\"}"), STR("1.0.0"), &buf));
  keel_buf_free(&buf);
  /* A stored version: set_data refuses it, replace_data replaces it. */
  CHECK_STATUS(keel_drive_set_data(drive, (const uint8_t *)note, 32, STR("{\"title\":\"v\"}"), STR("1.0.0"), &buf),
               KEEL_ALREADY_EXISTS);
  CHECK(buf.ptr == NULL);
  CHECK_OK(keel_drive_replace_data(drive, (const uint8_t *)note, 32, STR("{\"title\":\"v\"}"), STR("1.0.0"), &buf));
  CHECK(buf.len == 5 && memcmp(buf.ptr, "1.0.0", 5) == 0);
  keel_buf_free(&buf);
  CHECK_OK(keel_drive_get_data(drive, (const uint8_t *)note, 32, STR("1.0.0"), &buf));
  CHECK(has(&buf, "\"title\":\"v\""));
  keel_buf_free(&buf);
  CHECK_STATUS(keel_drive_replace_data(drive, (const uint8_t *)note, 32, STR("{}"), NULL, 0, &buf),
               KEEL_INVALID_ARGUMENT);
  CHECK_STATUS(keel_drive_replace_data(drive, (const uint8_t *)note, 32, STR("{}"), STR("x.y"), &buf),
               KEEL_INVALID_ARGUMENT);
  const char *schema = "{\"type\":\"object\",\"required\":[\"name\"]}";
  migrate_state failing = {0, 1};
  bool changed = true;
  CHECK_STATUS(keel_drive_set_schema(drive, STR("note"), STR(schema), 1, migrate, &failing, &changed),
               KEEL_CONFLICT);
  CHECK(failing.calls == 1);
  CHECK_OK(keel_drive_schema(drive, STR("note"), &buf));
  CHECK(strcmp((const char *)buf.ptr, "null") == 0);
  keel_buf_free(&buf);
  migrate_state ok = {0, 0};
  CHECK_OK(keel_drive_set_schema(drive, STR("note"), STR(schema), 1, migrate, &ok, &changed));
  CHECK(changed && ok.calls == 2);
  CHECK_OK(keel_drive_set_schema(drive, STR("note"), STR(schema), 1, migrate, &ok, &changed));
  CHECK(!changed && ok.calls == 2);
  CHECK_OK(keel_drive_get_data(drive, (const uint8_t *)note, 32, STR("0.0.1"), &buf));
  CHECK(has(&buf, "\"migrated\"") && has(&buf, "\"version\":\"0.0.1\""));
  keel_buf_free(&buf);
  CHECK_STATUS(keel_drive_set_data(drive, (const uint8_t *)note, 32, STR("{\"title\":1}"), NULL, 0, &buf),
               KEEL_INVALID_ARGUMENT);
  CHECK_OK(keel_drive_versions(drive, (const uint8_t *)note, 32, &buf));
  CHECK(strstr((const char *)buf.ptr, "1.0.0") < strstr((const char *)buf.ptr, "0.0.1"));
  keel_buf_free(&buf);
  CHECK_OK(keel_drive_delete_data(drive, (const uint8_t *)note, 32, STR("1.0.0"), &buf));
  CHECK(buf.len == 5 && memcmp(buf.ptr, "0.0.1", 5) == 0);
  keel_buf_free(&buf);

  /* Permissions: a checked view. */
  CHECK_OK(keel_drive_set_permissions(drive, (const uint8_t *)docs, 32,
                                      STR("{\"default\":\"deny\",\"users\":{\"bob\":\"read\"}}"), &buf));
  keel_buf_free(&buf);
  keel_drive *bob = NULL, *eve = NULL;
  CHECK_OK(keel_drive_as_user(drive, STR("bob"), NULL, 0, &bob));
  keel_bytes staff[] = {{(const uint8_t *)"staff", 5}};
  CHECK_OK(keel_drive_as_user(drive, STR("eve"), staff, 1, &eve));
  CHECK_OK(keel_drive_get(bob, (const uint8_t *)note, 32, NULL, 0, &buf));
  keel_buf_free(&buf);
  CHECK_STATUS(keel_drive_get(eve, (const uint8_t *)note, 32, NULL, 0, &buf), KEEL_PERMISSION_DENIED);
  CHECK_STATUS(keel_drive_set_data(bob, (const uint8_t *)note, 32, STR("{\"name\":\"x\"}"), NULL, 0, &buf),
               KEEL_PERMISSION_DENIED);
  CHECK_STATUS(keel_drive_delete(bob, (const uint8_t *)docs, 32, NULL), KEEL_PERMISSION_DENIED);
  keel_drive *again = NULL;
  CHECK_STATUS(keel_drive_as_user(bob, STR("root"), NULL, 0, &again), KEEL_PERMISSION_DENIED);
  keel_drive_free(bob);
  keel_drive_free(eve);

  /* Many writes in one transaction, all or nothing. */
  CHECK_OK(keel_drive_apply(drive, STR("[{\"op\":\"make_path\",\"path\":\"bulk/a\"},"
                                       "{\"op\":\"create_at\",\"parent_path\":\"bulk\",\"item\":{\"name\":\"b\"}}]"), &buf));
  CHECK(has(&buf, "\"name\":\"a\"") && has(&buf, "\"name\":\"b\""));
  keel_buf_free(&buf);
  CHECK_STATUS(keel_drive_apply(drive, STR("[{\"op\":\"make_path\",\"path\":\"bulk2\"},"
                                           "{\"op\":\"create_at\",\"parent_path\":\"bulk\",\"item\":{\"name\":\"B\"}}]"), &buf),
               KEEL_ALREADY_EXISTS);
  CHECK(strstr(keel_last_error(), "write 1") != NULL);
  CHECK_STATUS(keel_drive_at_path(drive, STR("bulk2"), &buf), KEEL_NOT_FOUND);
  CHECK_STATUS(keel_drive_apply(drive, STR("{}"), &buf), KEEL_INVALID_ARGUMENT);

  /* A batch: all or nothing; a failing call changes nothing. */
  keel_drive_batch *batch = NULL;
  CHECK_OK(keel_drive_batch_begin(drive, &batch));
  CHECK_OK(keel_drive_batch_call(batch, STR("{\"op\":\"make_path\",\"path\":\"x/y\"}"), &buf));
  keel_buf_free(&buf);
  CHECK_STATUS(keel_drive_batch_call(batch, STR("{\"op\":\"create\",\"parent\":null,\"item\":{\"name\":\"X\"}}"), &buf),
               KEEL_ALREADY_EXISTS);
  CHECK_STATUS(keel_drive_create(drive, NULL, 0, STR("{\"name\":\"outside\"}"), &buf), KEEL_WOULD_DEADLOCK);
  CHECK_STATUS(keel_drive_batch_call(batch, STR("{\"op\":\"fly\"}"), &buf), KEEL_INVALID_ARGUMENT);
  CHECK_OK(keel_drive_batch_commit(batch));
  CHECK_OK(keel_drive_resolve(drive, STR("x/y"), &buf));
  keel_buf_free(&buf);
  CHECK_OK(keel_drive_batch_begin(drive, &batch));
  CHECK_OK(keel_drive_batch_call(batch, STR("{\"op\":\"create\",\"item\":{\"name\":\"gone\"}}"), &buf));
  keel_buf_free(&buf);
  keel_drive_batch_abort(batch);
  CHECK_STATUS(keel_drive_resolve(drive, STR("gone"), &buf), KEEL_NOT_FOUND);
  keel_drive_batch_abort(NULL);

  /* Move, delete, backup. */
  CHECK_STATUS(keel_drive_move(drive, (const uint8_t *)docs, 32, (const uint8_t *)note, 32, NULL, 0, &buf),
               KEEL_INVALID_ARGUMENT);
  CHECK_OK(keel_drive_move(drive, (const uint8_t *)note, 32, NULL, 0, STR("top"), &buf));
  keel_buf_free(&buf);
  uint64_t removed = 0;
  CHECK_OK(keel_drive_delete(drive, (const uint8_t *)docs, 32, &removed));
  CHECK(removed == 1);
  char copy[256];
  snprintf(copy, sizeof copy, "%s/copy.lmdb", dir);
  CHECK_OK(keel_drive_backup(drive, STR(copy)));
  keel_drive *restored = NULL;
  keel_drive_options no_sync = keel_drive_options_default();
  no_sync.durable = false;
  CHECK_OK(keel_drive_open(STR(copy), &no_sync, &restored));
  CHECK_OK(keel_drive_resolve(restored, STR("top"), &buf));
  keel_buf_free(&buf);
  keel_drive_free(restored);

  test_paths_and_file_calls(drive, path);
  keel_drive_free(drive);
  keel_drive_free(NULL);
  FINISH();
}
