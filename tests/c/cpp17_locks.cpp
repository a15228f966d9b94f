// keel from C++17: the header compiles cleanly as C++ (-std=c++17 -Wall
// -Wextra -pedantic -Werror) and its handles sit well in RAII wrappers.
#include <keel.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string_view>
#include <thread>
#include <vector>

namespace {

struct LocksFree {
  void operator()(keel_locks *locks) const noexcept { keel_locks_free(locks); }
};
struct GuardRelease {
  void operator()(keel_lock_guard *guard) const noexcept { keel_lock_guard_release(guard); }
};
using Locks = std::unique_ptr<keel_locks, LocksFree>;
using Guard = std::unique_ptr<keel_lock_guard, GuardRelease>;

int failures = 0;

void check(bool ok, const char *what) {
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s (%s)\n", what, keel_last_error());
    ++failures;
  }
}

const uint8_t *bytes(std::string_view text) { return reinterpret_cast<const uint8_t *>(text.data()); }

Guard lock(const Locks &locks, std::string_view key) {
  keel_lock_guard *raw = nullptr;
  keel_status status = keel_locks_lock(locks.get(), bytes(key), key.size(), KEEL_LOCK_EXCLUSIVE,
                                       KEEL_WAIT_FOREVER, &raw);
  check(status == KEEL_OK, "lock");
  return Guard(raw);
}

}  // namespace

int main() {
  constexpr std::string_view name = "cpp17";
  keel_locks *raw = nullptr;
  check(keel_locks_new(name.data(), name.size(), &raw) == KEEL_OK, "keel_locks_new");
  Locks locks(raw);

  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  int counter = 0;  // guarded by the key "counter"
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 500; ++i) {
        Guard held = lock(locks, "counter");
        if (inside.fetch_add(1) != 0) overlaps.fetch_add(1);
        ++counter;
        inside.fetch_sub(1);
      }  // released by the guard's destructor
    });
  }
  for (auto &thread : threads) thread.join();
  check(overlaps.load() == 0, "never two holders of one key");
  check(counter == 2000, "every increment counted");

  keel_lock_stats stats{};
  check(keel_locks_stats(locks.get(), &stats) == KEEL_OK, "keel_locks_stats");
  check(stats.entries == 0, "no entry left behind");
  check(std::strlen(keel_version()) > 0, "keel_version");

  if (failures == 0) std::printf("ok: C++17, %d increments, no overlap\n", counter);
  return failures == 0 ? 0 : 1;
}
