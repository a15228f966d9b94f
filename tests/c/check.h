/* A tiny test harness for keel's C tests: CHECK records failures and goes on;
 * FINISH prints "N passed, N failed" and gives the exit code. */
#ifndef KEEL_TEST_CHECK_H
#define KEEL_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

#include "keel.h"

static int checks_passed = 0;
static int checks_failed = 0;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (cond) {                                                                \
      checks_passed++;                                                         \
    } else {                                                                   \
      checks_failed++;                                                         \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__,  \
              __LINE__, #cond, keel_last_error());                             \
    }                                                                          \
  } while (0)

#define CHECK_STATUS(call, expected) CHECK((call) == (expected))
#define CHECK_OK(call) CHECK_STATUS(call, KEEL_OK)

#define FINISH()                                                               \
  do {                                                                         \
    printf("%d passed, %d failed\n", checks_passed, checks_failed);           \
    return checks_failed == 0 ? 0 : 1;                                         \
  } while (0)

#endif
