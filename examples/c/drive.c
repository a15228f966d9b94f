/* A catalogue in a drive from C: typed items, versioned JSON data, a schema
 * upgrade migrating every item in one transaction, and a checked view. */
#include <keel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S(text) text, strlen(text)

static int fail(const char *what) {
  fprintf(stderr, "%s: %s\n", what, keel_last_error());
  return 1;
}

/* The "id" (32 hex characters) of an item's JSON. */
static void id_of(const keel_buf *item, char id[33]) {
  const char *at = strstr((const char *)item->ptr, "\"id\":\"");
  memcpy(id, at ? at + 6 : "", 32);
  id[32] = '\0';
}

/* Migration to schema 2: {"title", "words"} becomes {"title", "word_count"}.
 * Called on the keel thread committing the write, inside its transaction. */
static int32_t upgrade(void *userdata, const char *input, size_t input_len,
                           keel_drive_migration *output) {
  (void)input_len;
  int *migrated = userdata;
  char title[64] = "", result[160];
  long words = 0;
  const char *t = strstr(input, "\"title\":\"");
  const char *w = strstr(input, "\"words\":");
  if (t) sscanf(t + 9, "%63[^\"]", title);
  if (w) words = strtol(w + 8, NULL, 10);
  snprintf(result, sizeof result, "{\"title\":\"%s\",\"word_count\":%ld}", title, words);
  (*migrated)++;
  return keel_drive_migration_set(output, S(result));
}

int main(void) {
  char path[64];
  snprintf(path, sizeof path, "/tmp/keel-example-drive-%d.lmdb", (int)getpid());
  keel_drive *drive = NULL;
  if (keel_drive_open(S(path), NULL, &drive) != KEEL_OK) return fail("open");

  const char *v1 = "{\"type\":\"object\",\"required\":[\"title\",\"words\"]}";
  const char *v2 = "{\"type\":\"object\",\"required\":[\"title\",\"word_count\"]}";
  if (keel_drive_set_schema(drive, S("document"), S(v1), 1, NULL, NULL, NULL) != KEEL_OK)
    return fail("schema v1");

  keel_buf item = {0}, out = {0};
  if (keel_drive_create(drive, NULL, 0, S("{\"name\":\"docs\"}"), &item) != KEEL_OK) return fail("create");
  keel_buf_free(&item);
  if (keel_drive_create_at(drive, S("docs"), S("{\"name\":\"design\",\"type\":\"document\"}"), &item) != KEEL_OK)
    return fail("create_at");
  char id[33];
  id_of(&item, id);
  keel_buf_free(&item);
  if (keel_drive_set_data(drive, (const uint8_t *)id, 32, S("{\"title\":\"design\",\"words\":800}"), NULL, 0,
                          &out) != KEEL_OK)
    return fail("set_data");
  keel_buf_free(&out);

  int migrated = 0;
  bool changed = false;
  if (keel_drive_set_schema(drive, S("document"), S(v2), 2, upgrade, &migrated, &changed) != KEEL_OK)
    return fail("schema v2");
  if (keel_drive_get_data(drive, (const uint8_t *)id, 32, NULL, 0, &out) != KEEL_OK) return fail("get_data");
  printf("migrated %d version(s); docs/design is now %s\n", migrated, (const char *)out.ptr);
  keel_buf_free(&out);

  /* Everyone may read, nobody but ada may edit: bob's view is refused. */
  keel_drive *bob = NULL;
  if (keel_drive_set_permissions(drive, (const uint8_t *)id, 32, S("{\"default\":\"read\",\"users\":{\"ada\":\"edit\"}}"),
                                 &out) != KEEL_OK)
    return fail("set_permissions");
  keel_buf_free(&out);
  if (keel_drive_as_user(drive, S("bob"), NULL, 0, &bob) != KEEL_OK) return fail("as_user");
  keel_status refused = keel_drive_set_data(bob, (const uint8_t *)id, 32, S("{\"title\":\"x\",\"word_count\":1}"),
                                            NULL, 0, &out);
  printf("bob's write: %s (%s)\n", keel_status_name(refused), keel_last_error());

  keel_drive_free(bob);
  keel_drive_free(drive);
  unlink(path);
  return refused == KEEL_PERMISSION_DENIED && changed && migrated == 1 ? 0 : 1;
}
