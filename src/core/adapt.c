/* An adaptive concurrency limit: `limit_per_host = "auto"` (and `limit`).
 * Pure arithmetic, run in C as each request ends (docs/architecture.md,
 * "Adaptive limits", says why these rules and what they were tuned on).
 *
 * "gradient" (the default), after Netflix's Gradient2 and TCP Vegas: the
 * best latency seen is the server without a queue. An answer within
 * AV_TOLERANCE of it says there is room: the limit grows. A slower answer
 * means the server queues: the limit is cut to what is known to work.
 * "aimd" ignores latency: it grows the same way and only failures cut it.
 * Either way a 429, 503, timeout or reset halves the limit. One cut per
 * congestion: requests sent before the last cut cut nothing more, as TCP
 * reacts once per window, unless far slower than the one that cut. The
 * limit grows only while it is used (at least half of it in flight), so an
 * idle host's limit does not drift up.
 *
 * Growth is a limited slow start (RFC 3742's idea): x2 a round trip while
 * small, then at most AV_STEP_MAX more a round trip, because a latency
 * signal comes one round trip late and what was added meanwhile all
 * queues. After a cut it probes one slot a round trip up to the knee (what
 * was in flight when the queue showed); past it the lead over the knee
 * doubles a round trip (up to AV_STEP_MAX), so a server that grew is found
 * in a few round trips and a probe that finds nothing overshoots little. */
#include <math.h>

#include "private.h"

/* A latency up to this times the best, or up to AV_SLACK more than it,
 * is "no queue": the slack keeps a sub-millisecond server's jitter (a
 * busy machine's scheduling) from reading as queueing. */
#define AV_TOLERANCE 1.3
#define AV_SLACK 0.002
/* An answer this close to the best proves the in-flight count it was
 * sent under: a cut that ends a ramp goes no lower than that (if it is
 * below the cut's own bound). The proof lasts until a cut or the end of
 * the best latency's window. */
#define AV_PROVEN 1.1
/* ... and only when the answer that cuts is at most this slow: a ramp's
 * overshoot queues a little, while a server whose capacity fell (or a
 * stalled one) answers several times slower, and then what was proven
 * before no longer holds. */
#define AV_PROVEN_SLOW 2.0
/* The best latency is the smaller of the last two windows of this many
 * samples: a server that became slower for good is believed after two. */
#define AV_WINDOW 250
/* A window's best is its AV_LOW_N-th smallest sample, not its smallest: a
 * few answers of a cheaper kind (the list fetched before its items) are
 * not the items' server without a queue. Taken as that, one list request
 * made every item look queued, and the limit fell to its minimum. */
#define AV_LOW_N AV_ADAPT_LOW_N
/* The recent latency's moving average weight. */
#define AV_RECENT_WEIGHT 0.2
/* A failure's cut, and a slow answer's cut bounds. */
#define AV_DROP_CUT 0.5
#define AV_CUT_MIN 0.5
#define AV_CUT_MAX 0.9
/* An answer sent before the last cut cuts again only if it is this many
 * times slower than the answer that made that cut: the queue has grown
 * since (the server's capacity fell), and waiting for an answer sent after
 * the cut would mean waiting behind that whole queue. */
#define AV_RECUT 4.0
/* Slow start adds at most this many slots a round trip. */
#define AV_STEP_MAX 6

void av_adapt_init(av_adapt *a, const av_adapt_conf *c) {
  *a = (av_adapt){.limit = c->initial};
}

void av_adapt_measure(av_adapt *a, double latency) {
  if (!(latency > 0)) latency = 1e-6; /* a clock that did not move: as fast as can be */
  a->lat_recent = a->lat_recent > 0 ? a->lat_recent + (latency - a->lat_recent) * AV_RECENT_WEIGHT : latency;
  /* keep the window's AV_LOW_N smallest, ascending (0: a free place) */
  double *low = a->win_low;
  for (int i = 0; i < AV_LOW_N; i++) {
    if (low[i] == 0 || latency < low[i]) {
      for (int j = AV_LOW_N - 1; j > i; j--) low[j] = low[j - 1];
      low[i] = latency;
      break;
    }
  }
  double best = low[AV_LOW_N - 1]; /* 0 until the window has AV_LOW_N samples */
  if (a->prev_low > 0 && (best == 0 || a->prev_low < best)) best = a->prev_low;
  a->lat_min = best;
  if (++a->win_n >= AV_WINDOW) { /* the best of the last two windows */
    a->prev_low = low[AV_LOW_N - 1];
    for (int i = 0; i < AV_LOW_N; i++) low[i] = 0;
    a->win_n = 0;
    a->proven = 0; /* what a window ago proved is stale too */
  }
}

double av_adapt_slowness(const av_adapt *a, double latency) {
  if (!(a->lat_min > 0) || latency <= a->lat_min) return 1;
  /* latency / best, but with the excess over the best measured against
   * what is tolerated: for a best over AV_SLACK / (AV_TOLERANCE - 1) that
   * is the same, below it the slack stretches it (continuous: a fast
   * server's answer just past the slack is just past the tolerance) */
  double tolerated = fmax((AV_TOLERANCE - 1) * a->lat_min, AV_SLACK);
  return 1 + (AV_TOLERANCE - 1) * (latency - a->lat_min) / tolerated;
}

/* Whether the limit is ramping: in the first slow start, or past the
 * knee (the server grew). */
static bool av_adapt_ramping(const av_adapt *a) { return a->w_max == 0 || a->limit > a->w_max + 1; }

/* Cut to factor * base (at most the limit). A latency cut that ends a ramp
 * with a mild queue (slow: the cutting answer's slowness) keeps what the
 * answers since the last cut proved, up to AV_CUT_MAX * base: the ramp's
 * overshoot is not the server's capacity falling, and near the knee that
 * proof is stale (a server that got slower cuts from its old limit). */
static void av_adapt_cut(av_adapt *a, const av_adapt_conf *c, double base, double factor, double slow,
                         uint64_t started, uint64_t now) {
  if (started < a->last_cut) {
    /* sent under the old limit: already paid for, unless sent under the
     * limit the last cut cut (not under an older one: a ramp's overshoot
     * still draining) and far slower than the answer that cut it (a drop
     * never cuts twice) */
    if (!(started >= a->prev_cut && isfinite(slow) && slow >= AV_RECUT * a->cut_slow)) return;
    base = a->limit;
  }
  bool ramping = av_adapt_ramping(a);
  /* a cut that ends a ramp is never cut again by answers sent before it:
   * the overshoot's own answers grow slower as the queue it made drains */
  a->cut_slow = ramping ? INFINITY : slow;
  double to = base * factor;
  /* (the first ramp's cut keeps it whatever the answer: no capacity known
   * before it could have fallen, and its overshoot's answers are the
   * slowest, 2.5x the best at capacity 40, which cut to half) */
  if (ramping && (slow <= AV_PROVEN_SLOW || a->w_max == 0) && a->proven > to) to = fmin(a->proven, base * AV_CUT_MAX);
  a->w_max = fmin(a->limit, base); /* the knee: what was in flight when the queue showed */
  a->limit = fmin(a->limit, to);
  if (a->limit < c->min) a->limit = c->min;
  a->prev_cut = a->last_cut;
  a->last_cut = now;
  a->proven = 0;
}

static void av_adapt_grow(av_adapt *a, const av_adapt_conf *c, double in_flight) {
  if (2 * in_flight < a->limit) return; /* not used: no evidence there is room */
  double per_round_trip;
  if (a->w_max == 0) per_round_trip = a->limit; /* slow start: x2 */
  else if (a->limit > a->w_max + 1) per_round_trip = a->limit - a->w_max; /* past the knee: the lead doubles */
  else per_round_trip = 1; /* up to the knee: one more */
  a->limit += fmin(per_round_trip, AV_STEP_MAX) / a->limit;
  if (a->limit > c->max) a->limit = c->max;
}

void av_adapt_update(av_adapt *a, const av_adapt_conf *c, enum av_outcome out, double slow,
                     uint64_t started, double in_flight, uint64_t now) {
  if (out == AV_OUT_DROP) {
    av_adapt_cut(a, c, a->limit, AV_DROP_CUT, INFINITY, started, now);
  } else if (out == AV_OUT_SAMPLE) {
    if (c->algorithm == AV_ALGO_GRADIENT && slow > AV_TOLERANCE) {
      av_adapt_cut(a, c, in_flight, fmin(AV_CUT_MAX, fmax(AV_CUT_MIN, AV_TOLERANCE / slow)), slow, started, now);
      return;
    }
    if (slow <= AV_PROVEN && started >= a->last_cut && in_flight > a->proven) a->proven = in_flight;
    av_adapt_grow(a, c, in_flight);
  }
}

lua_Integer av_adapt_limit(const av_adapt *a) {
  /* (the limit stays within [min, max], which session.c caps at 1e6:
   * the cast is defined) */
  lua_Integer n = (lua_Integer)a->limit;
  return n < 1 ? 1 : n;
}
