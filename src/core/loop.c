/* The loop: a libuv loop, libcurl's multi, the ops waiting on them, and
 * step(), which runs libuv until some op is ready and hands the ready ops
 * to the Lua scheduler. No Lua code ever runs from a libuv callback: the
 * callbacks only move ops to the ready list. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "private.h"

/* ------------------------------------------------------------------ ops */

void av_op_init(av_op *op, av_loop *loop, const av_op_vtable *vt) {
  memset(op, 0, sizeof *op);
  op->vt = vt;
  op->loop = loop;
  op->state = AV_OP_IDLE;
  op->ref = LUA_NOREF;
  op->heap_index = -1;
}

/* The anchor table is the loop userdata's user value; it keeps each pending
 * op (and, through the op's user value 1, its token) alive. An op keeps its
 * loop alive through its user value 2. */
void av_op_start(lua_State *L, av_op *op, int idx, int tidx, int loopidx) {
  idx = lua_absindex(L, idx);
  loopidx = lua_absindex(L, loopidx);
  lua_pushvalue(L, tidx);
  lua_setiuservalue(L, idx, AV_UV_TOKEN);
  lua_pushvalue(L, loopidx);
  lua_setiuservalue(L, idx, AV_UV_LOOP);
  lua_getiuservalue(L, loopidx, 1);
  lua_pushvalue(L, idx);
  op->ref = luaL_ref(L, -2);
  lua_pop(L, 1);
  op->state = AV_OP_PENDING;
  op->loop->n_pending++;
  op->loop->n_anchored++;
}

void av_op_finish(av_op *op) {
  av_loop *lp = op->loop;
  av_deadline_clear(op);
  op->state = AV_OP_READY;
  op->rnext = NULL;
  op->rprev = lp->ready_tail;
  if (lp->ready_tail)
    lp->ready_tail->rnext = op;
  else
    lp->ready_head = op;
  lp->ready_tail = op;
  lp->n_ready++;
}

static void av_ready_unlink(av_loop *lp, av_op *op) {
  if (op->rprev) op->rprev->rnext = op->rnext; else lp->ready_head = op->rnext;
  if (op->rnext) op->rnext->rprev = op->rprev; else lp->ready_tail = op->rprev;
  op->rprev = op->rnext = NULL;
  lp->n_ready--;
}

static void av_op_unanchor(lua_State *L, av_op *op, int idx) {
  lua_getiuservalue(L, idx, AV_UV_LOOP);
  lua_getiuservalue(L, -1, 1);
  luaL_unref(L, -1, op->ref);
  lua_pop(L, 2);
  op->ref = LUA_NOREF;
  op->state = AV_OP_IDLE;
  op->loop->n_pending--;
}

bool av_op_cancel(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  av_op *op = lua_touserdata(L, idx);
  if (!op->loop) return false;
  if (op->state == AV_OP_PENDING) {
    av_deadline_clear(op);
    op->vt->cancel(op);
  } else if (op->state == AV_OP_READY) {
    av_ready_unlink(op->loop, op);
  } else {
    return false;
  }
  av_op_unanchor(L, op, idx);
  return true;
}

/* ------------------------------------------------------------ deadlines
 * One uv timer serves every op deadline: a binary min-heap keyed by the
 * loop's millisecond clock. */

static void av_deadline_cb(uv_timer_t *t);

static bool heap_less(av_op *a, av_op *b) { return a->deadline < b->deadline; }

static void heap_place(av_loop *lp, size_t i, av_op *op) {
  lp->heap[i] = op;
  op->heap_index = (int)i;
}

static void heap_up(av_loop *lp, size_t i) {
  av_op *op = lp->heap[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!heap_less(op, lp->heap[p])) break;
    heap_place(lp, i, lp->heap[p]);
    i = p;
  }
  heap_place(lp, i, op);
}

static void heap_down(av_loop *lp, size_t i) {
  av_op *op = lp->heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= lp->heap_len) break;
    if (c + 1 < lp->heap_len && heap_less(lp->heap[c + 1], lp->heap[c])) c++;
    if (!heap_less(lp->heap[c], op)) break;
    heap_place(lp, i, lp->heap[c]);
    i = c;
  }
  heap_place(lp, i, op);
}

/* Keep the uv timer on the earliest deadline. */
static void av_deadline_rearm(av_loop *lp) {
  if (lp->heap_len == 0) {
    uv_timer_stop(&lp->deadline_timer);
    return;
  }
  uint64_t now = uv_now(&lp->uv);
  uint64_t at = lp->heap[0]->deadline;
  uv_timer_start(&lp->deadline_timer, av_deadline_cb, at > now ? at - now : 0, 0);
}

void av_deadline_clear(av_op *op) {
  av_loop *lp = op->loop;
  if (op->heap_index < 0) return;
  size_t i = (size_t)op->heap_index;
  op->heap_index = -1;
  av_op *last = lp->heap[--lp->heap_len];
  if (i < lp->heap_len) {
    heap_place(lp, i, last);
    heap_up(lp, i);
    heap_down(lp, (size_t)last->heap_index);
  }
  if (i == 0) av_deadline_rearm(lp);
}

void av_deadline_set(av_op *op, uint64_t ms) {
  av_loop *lp = op->loop;
  av_deadline_clear(op);
  if (lp->heap_len == lp->heap_cap) {
    size_t cap = lp->heap_cap ? lp->heap_cap * 2 : 64;
    av_op **h = realloc(lp->heap, cap * sizeof *h);
    if (!h) abort(); /* a deadline we cannot keep would hang a task */
    lp->heap = h;
    lp->heap_cap = cap;
  }
  op->deadline = av_loop_now_ms(lp) + ms;
  heap_place(lp, lp->heap_len, op);
  heap_up(lp, lp->heap_len++);
  if (op->heap_index == 0) av_deadline_rearm(lp);
}

static void av_deadline_cb(uv_timer_t *t) {
  av_loop *lp = t->data;
  uint64_t now = uv_now(&lp->uv);
  while (lp->heap_len > 0 && lp->heap[0]->deadline <= now) {
    av_op *op = lp->heap[0];
    av_deadline_clear(op);
    op->vt->expire(op); /* may set a new deadline or finish the op */
  }
  av_deadline_rearm(lp);
}

/* ----------------------------------------------------------------- loop */

uint64_t av_loop_now_ms(av_loop *lp) {
  uv_update_time(&lp->uv);
  return uv_now(&lp->uv);
}

av_loop *av_loop_check(lua_State *L, int idx) {
  av_loop *lp = luaL_checkudata(L, idx, AV_LOOP_MT);
  if (lp->closed) luaL_error(L, "avideo loop is closed");
  return lp;
}

static void av_close_walk_cb(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Cancel every op still owned by the loop, then close libcurl and libuv.
 * Ops' own finalizers may run later: they see op->loop == NULL. */
static void av_loop_shutdown(lua_State *L, av_loop *lp) {
  if (lp->closed) return;
  lp->closing = true;
  lua_getiuservalue(L, 1, 1);
  int anchor = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, anchor)) {
    if (lua_type(L, -1) == LUA_TUSERDATA) {
      av_op *op = lua_touserdata(L, -1);
      if (op->state == AV_OP_PENDING) {
        av_deadline_clear(op);
        op->vt->cancel(op);
      }
      op->state = AV_OP_IDLE;
      op->ref = LUA_NOREF;
      op->loop = NULL;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_newtable(L);
  lua_setiuservalue(L, 1, 1);
  lp->ready_head = lp->ready_tail = NULL;
  lp->n_ready = lp->n_pending = 0;
  av_curl_close(lp);
  uv_walk(&lp->uv, av_close_walk_cb, NULL);
  while (uv_run(&lp->uv, UV_RUN_DEFAULT) != 0) {
  }
  uv_loop_close(&lp->uv);
  free(lp->heap);
  free(lp->socks);
  lp->heap = NULL;
  lp->socks = NULL;
  lp->closed = true;
}

/* core.loop() -> loop */
static int av_loop_new(lua_State *L) {
  av_loop *lp = lua_newuserdatauv(L, sizeof *lp, 1);
  memset(lp, 0, sizeof *lp);
  lp->closed = true; /* until fully set up, so __gc does nothing */
  luaL_setmetatable(L, AV_LOOP_MT);
  int rc = uv_loop_init(&lp->uv);
  if (rc != 0) return luaL_error(L, "avideo: cannot create event loop: %s", uv_strerror(rc));
  uv_timer_init(&lp->uv, &lp->curl_timer);
  uv_timer_init(&lp->uv, &lp->deadline_timer);
  lp->curl_timer.data = lp;
  lp->deadline_timer.data = lp;
  lp->closed = false;
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  if (av_curl_init(lp) != 0) {
    av_loop_shutdown(L, lp);
    return luaL_error(L, "avideo: cannot create libcurl multi handle");
  }
  return 1;
}

/* loop:step(nowait, out) -> n
 * Run libuv until at least one op is ready (or, with nowait, once without
 * blocking), then store ready ops as out[2i-1] = token, out[2i] = op.
 * n == 0 without nowait means nothing is pending: waiting would be forever. */
static int av_loop_step(lua_State *L) {
  av_loop *lp = av_loop_check(L, 1);
  bool nowait = lua_toboolean(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  if (lp->ready_head == NULL) {
    if (nowait) {
      uv_run(&lp->uv, UV_RUN_NOWAIT);
    } else {
      while (lp->ready_head == NULL && uv_run(&lp->uv, UV_RUN_ONCE) != 0) {
      }
      if (lp->ready_head == NULL) {
        /* libuv had nothing left; let due timers/closes settle once more */
        uv_run(&lp->uv, UV_RUN_NOWAIT);
      }
    }
  }
  lua_getiuservalue(L, 1, 1);
  int anchor = lua_gettop(L);
  lua_Integer n = 0;
  while (lp->ready_head) {
    av_op *op = lp->ready_head;
    av_ready_unlink(lp, op);
    lua_rawgeti(L, anchor, op->ref);          /* op */
    lua_getiuservalue(L, -1, AV_UV_TOKEN);    /* op token */
    lua_rawseti(L, 3, 2 * n + 1);
    lua_rawseti(L, 3, 2 * n + 2);
    luaL_unref(L, anchor, op->ref);
    op->ref = LUA_NOREF;
    op->state = AV_OP_IDLE;
    lp->n_pending--;
    n++;
  }
  /* luaL_ref's table never shrinks: once empty after a large burst, replace it */
  if (lp->n_pending == 0 && lp->n_anchored > 4096) {
    lua_newtable(L);
    lua_setiuservalue(L, 1, 1);
    lp->n_anchored = 0;
  }
  lua_pushinteger(L, n);
  return 1;
}

/* loop:pending() -> ops owned by the loop, transfers inside libcurl, easy handles, sockets */
static int av_loop_pending(lua_State *L) {
  av_loop *lp = av_loop_check(L, 1);
  size_t socks = 0;
  for (size_t i = 0; i < lp->nsocks; i++) socks += lp->socks[i] != NULL;
  lua_pushinteger(L, (lua_Integer)lp->n_pending);
  lua_pushinteger(L, (lua_Integer)lp->n_running);
  lua_pushinteger(L, (lua_Integer)lp->n_easy);
  lua_pushinteger(L, (lua_Integer)socks);
  return 4;
}

static int av_loop_close(lua_State *L) {
  av_loop *lp = luaL_checkudata(L, 1, AV_LOOP_MT);
  av_loop_shutdown(L, lp);
  return 0;
}

static int av_loop_tostring(lua_State *L) {
  av_loop *lp = luaL_checkudata(L, 1, AV_LOOP_MT);
  lua_pushfstring(L, "avideo.loop (%s%p)", lp->closed ? "closed, " : "", (void *)lp);
  return 1;
}

/* core.now() -> monotonic seconds */
static int av_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
  return 1;
}

void av_loop_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"step", av_loop_step},   {"pending", av_loop_pending}, {"sleep", av_timer_new},
      {"close", av_loop_close}, {NULL, NULL}};
  luaL_newmetatable(L, AV_LOOP_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, av_loop_close);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, av_loop_close);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, av_loop_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  lua_pushcfunction(L, av_loop_new);
  lua_setfield(L, -2, "loop");
  lua_pushcfunction(L, av_now);
  lua_setfield(L, -2, "now");
}
