/* A host program that embeds Lua and avideo (include/avideo.h).
 *
 *   host uv   SCRIPT [ARGS...]   the host runs a libuv loop and hands it over
 *   host poll SCRIPT [ARGS...]   the host's loop is plain poll(2)
 *
 * It opens avideo in its own lua_State, loads SCRIPT, which returns a
 * function, starts that function as an avideo task with ARGS, drives it
 * from its own loop until it ends, and prints the task's results. Meanwhile
 * the host does work of its own (a timer in the uv style, loop turns in the
 * poll style) and says how much, to show that neither side blocked the
 * other. Exit status 0 when the task succeeded. */
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>
#include <uv.h>

#include "avideo.h"

typedef struct host {
  lua_State *L;
  uv_loop_t loop;
  uv_timer_t tick;   /* the host's own work: counts while avideo runs */
  uv_check_t check;  /* steps avideo once per loop turn */
  unsigned ticks;
  int failed;
} host;

/* Print the error message on top of the stack and pop it. */
static void host_report(lua_State *L, const char *what) {
  fprintf(stderr, "host: %s: %s\n", what, lua_tostring(L, -1));
  lua_pop(L, 1);
}

static void host_tick_cb(uv_timer_t *t) {
  host *h = t->data;
  h->ticks++;
}

/* After each turn of the host's loop: let avideo resume what is ready.
 * avideo never calls Lua from a loop callback of its own; this one is the
 * host's, and it is where the host chose to run Lua. */
static void host_check_cb(uv_check_t *c) {
  host *h = c->data;
  int more = avideo_step(h->L);
  if (more < 0) {
    host_report(h->L, "avideo.step");
    h->failed = 1;
  }
  if (more <= 0) { /* the task ended: stop the host's own handles too */
    uv_close((uv_handle_t *)&h->tick, NULL);
    uv_close((uv_handle_t *)&h->check, NULL);
  }
}

/* Style 1: avideo's watchers on the host's libuv loop. */
static int host_run_uv(host *h) {
  uv_timer_init(&h->loop, &h->tick);
  uv_check_init(&h->loop, &h->check);
  h->tick.data = h->check.data = h;
  uv_timer_start(&h->tick, host_tick_cb, 5, 5);
  uv_check_start(&h->check, host_check_cb);
  uv_run(&h->loop, UV_RUN_DEFAULT);
  printf("host: uv loop, %u host timer ticks while avideo ran\n", h->ticks);
  return h->failed ? -1 : 0;
}

/* Style 2: any loop that can wait on a file descriptor with a timeout. */
static int host_run_poll(host *h) {
  unsigned turns = 0;
  int fd = avideo_backend_fd(h->L);
  if (fd < 0) {
    host_report(h->L, "avideo.backend_fd");
    return -1;
  }
  for (;;) {
    int more = avideo_step(h->L);
    if (more < 0) {
      host_report(h->L, "avideo.step");
      return -1;
    }
    if (more == 0) break;
    int ms = avideo_backend_timeout(h->L);
    if (ms < -1) {
      host_report(h->L, "avideo.backend_timeout");
      return -1;
    }
    struct pollfd p = {.fd = fd, .events = POLLIN};
    poll(&p, 1, ms); /* a real host would wait on its own descriptors too */
    turns++;
  }
  printf("host: poll loop, %u turns\n", turns);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3 || (strcmp(argv[1], "uv") != 0 && strcmp(argv[1], "poll") != 0)) {
    fprintf(stderr, "usage: %s uv|poll SCRIPT [ARGS...]\n", argv[0]);
    return 2;
  }
  bool use_uv = strcmp(argv[1], "uv") == 0;
  host h = {0};
  if (uv_loop_init(&h.loop) != 0) return 1;
  h.L = luaL_newstate();
  luaL_openlibs(h.L);
  lua_State *L = h.L;
  int rc = 1;

  /* Before the script requires avideo, so avideo's loop attaches at once. */
  if (use_uv && avideo_set_loop(L, &h.loop) != LUA_OK) {
    host_report(L, "avideo_set_loop");
    goto done;
  }
  if (luaL_loadfile(L, argv[2]) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
    host_report(L, argv[2]);
    goto done;
  }
  for (int i = 3; i < argc; i++) lua_pushstring(L, argv[i]);
  if (avideo_start(L, argc - 3) != LUA_OK) {
    host_report(L, "avideo.start");
    goto done;
  }
  int task = lua_gettop(L);
  if ((use_uv ? host_run_uv(&h) : host_run_poll(&h)) != 0) goto done;

  /* task:result() returns the function's results or raises its error */
  int base = lua_gettop(L);
  lua_getfield(L, task, "result");
  lua_pushvalue(L, task);
  if (lua_pcall(L, 1, LUA_MULTRET, 0) != LUA_OK) {
    host_report(L, "the task failed");
    goto done;
  }
  int top = lua_gettop(L);
  printf("host: task results:");
  for (int i = base + 1; i <= top; i++) {
    /* Lua's tostring (luaL_tolstring is 5.2+); it cannot fail on these */
    lua_getglobal(L, "tostring");
    lua_pushvalue(L, i);
    lua_call(L, 1, 1);
    printf(" %s", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  printf("\n");
  rc = 0;

done:
  lua_close(L);
  /* avideo closed its handles on the host loop with the Lua state; one more
   * turn lets libuv finish that, and then the loop closes cleanly */
  uv_run(&h.loop, UV_RUN_NOWAIT);
  if (uv_loop_close(&h.loop) != 0) {
    fprintf(stderr, "host: handles left open on the host loop\n");
    rc = 1;
  }
  return rc;
}
