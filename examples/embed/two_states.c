/* Two Lua states in two threads of one process, each with its own avideo,
 * gathering requests at the same time:
 *
 *   two_states API_URL [VIDEOS [ROUNDS]]
 *
 * avideo keeps no process-global state but libcurl's one-time global init,
 * so nothing needs a lock here. Each thread opens its own lua_State,
 * requires avideo and runs ROUNDS gathers of VIDEOS videos; a barrier
 * starts the two together. The check: every gather returned all its
 * videos, each state ended with nothing left in flight, and the two
 * threads' gathers overlapped in time. Prints "N passed, N failed".
 * The Lua is the same on 5.4, 5.3, 5.1 and LuaJIT: the session is closed
 * by session:close() (after an error, by the GC), not by 5.4's <close>. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lualib.h>

#ifndef LUA_OK /* Lua 5.1 and LuaJIT */
#define LUA_OK 0
#endif

#define NTHREADS 2

typedef struct worker {
  int id;
  const char *url;
  int videos, rounds;
  pthread_barrier_t *barrier;
  double start, end;   /* monotonic seconds around the gathers */
  int gathered;        /* videos over all rounds */
  char error[512];
} worker;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The Lua side: returns a function that runs one gather and returns how
 * many videos came back, and a function that checks nothing is left. */
static const char worker_chunk[] =
    "local avideo = require 'avideo'\n"
    "local url, n = ...\n"
    "local function gather()\n"
    "  return avideo.run(function()\n"
    "    local session = avideo.session { limit_per_host = 10 }\n"
    "    local ids = session:get(url .. '/videos?n=' .. n):raise_for_status():json()\n"
    "    local tasks = {}\n"
    "    for i, id in ipairs(ids) do\n"
    "      tasks[i] = function() return session:get(url .. '/videos/' .. id):json().id end\n"
    "    end\n"
    "    local got = avideo.gather(tasks)\n"
    "    session:close()\n"
    "    for i, id in ipairs(ids) do assert(got[i] == id, 'wrong video at ' .. i) end\n"
    "    return #got\n"
    "  end)\n"
    "end\n"
    "local function settled()\n"
    "  local s = avideo.stats()\n"
    "  assert(s.tasks == 0 and s.ops == 0 and s.transfers == 0,\n"
    "         ('left in flight: %d tasks, %d ops, %d transfers'):format(s.tasks, s.ops, s.transfers))\n"
    "end\n"
    "return gather, settled\n";

static void *worker_main(void *arg) {
  worker *w = arg;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  char n[32];
  snprintf(n, sizeof n, "%d", w->videos);
  int ok = luaL_loadbuffer(L, worker_chunk, sizeof worker_chunk - 1, "=two_states") == LUA_OK;
  if (ok) {
    lua_pushstring(L, w->url);
    lua_pushstring(L, n);
    ok = lua_pcall(L, 2, 2, 0) == LUA_OK; /* gather, settled */
  }
  pthread_barrier_wait(w->barrier); /* even on failure: the other thread waits */
  w->start = now();
  for (int r = 0; ok && r < w->rounds; r++) {
    lua_pushvalue(L, 1);
    ok = lua_pcall(L, 0, 1, 0) == LUA_OK;
    if (ok) {
      w->gathered += (int)lua_tointeger(L, -1);
      lua_pop(L, 1);
    }
  }
  w->end = now();
  if (ok) {
    lua_pushvalue(L, 2);
    ok = lua_pcall(L, 0, 0, 0) == LUA_OK;
  }
  if (!ok) snprintf(w->error, sizeof w->error, "%s", lua_tostring(L, -1));
  lua_close(L);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s API_URL [VIDEOS [ROUNDS]]\n", argv[0]);
    return 2;
  }
  int videos = argc > 2 ? atoi(argv[2]) : 40;
  int rounds = argc > 3 ? atoi(argv[3]) : 3;
  pthread_barrier_t barrier;
  pthread_barrier_init(&barrier, NULL, NTHREADS);
  worker w[NTHREADS];
  pthread_t t[NTHREADS];
  for (int i = 0; i < NTHREADS; i++) {
    w[i] = (worker){.id = i, .url = argv[1], .videos = videos, .rounds = rounds, .barrier = &barrier};
    if (pthread_create(&t[i], NULL, worker_main, &w[i]) != 0) {
      fprintf(stderr, "two_states: cannot start a thread\n");
      return 1;
    }
  }
  for (int i = 0; i < NTHREADS; i++) pthread_join(t[i], NULL);
  pthread_barrier_destroy(&barrier);

  int passed = 0, failed = 0;
  for (int i = 0; i < NTHREADS; i++) {
    int want = videos * rounds;
    if (w[i].error[0] || w[i].gathered != want) {
      printf("FAIL state %d: %d of %d videos%s%s\n", i, w[i].gathered, want,
             w[i].error[0] ? ": " : "", w[i].error);
      failed++;
    } else {
      printf("ok   state %d: %d videos in %.3f s\n", i, w[i].gathered, w[i].end - w[i].start);
      passed++;
    }
  }
  /* both ran at once: each started before the other ended */
  double overlap = (w[0].end < w[1].end ? w[0].end : w[1].end) -
                   (w[0].start > w[1].start ? w[0].start : w[1].start);
  if (overlap > 0) {
    printf("ok   the two states ran at the same time for %.3f s\n", overlap);
    passed++;
  } else {
    printf("FAIL the two states did not overlap in time\n");
    failed++;
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
