/* The loop layer: the loop's clock, ops and their deadlines. An op is one thing a task can wait for; when
 * it finishes (from any libuv or libcurl callback) it moves to the loop's
 * ready list, which loop:step hands to the Lua scheduler: no Lua code
 * runs from a callback. Deadlines (pool, sock_read, sleeps) share one uv
 * timer through a min-heap. */
#include <stdlib.h>
#include <string.h>

#include "private.h"

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
  /* An op finished before libuv's poll phase (by a timer due when the turn
   * began) must not wait for that poll to time out: uv_stop makes this
   * turn's poll return at once, and step hand the op to Lua. */
  uv_stop(&lp->uv);
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

void av_ready_unlink(av_loop *lp, av_op *op) {
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
