/* An adaptive concurrency limit: `limit_per_host = "auto"` (and `limit`).
 * Pure arithmetic, run in C as each request ends (docs/architecture.md,
 * "Adaptive limits", says why these rules).
 *
 * "gradient" (the default), after Netflix's Gradient2 and TCP Vegas: the
 * best latency seen is the server without a queue. A request answered
 * within AV_TOLERANCE of it says there is room: the limit grows, by half a
 * slot a sample at first (x1.5 a round trip) until the first cut, then by
 * one slot a round trip. A slower answer means the server queues: the
 * limit becomes the number that was in flight when that request started
 * (what the server could not take at once) times the gradient
 * tolerance * best / latency, kept within [0.5, 0.9].
 * "aimd" ignores latency: it grows the same way and only failures cut it.
 * Either way a 429, 503, timeout or reset halves the limit. One cut per
 * congestion: requests sent before the last cut cut nothing more, as TCP
 * reacts once per window. The limit grows only while it is used (at least
 * half of it in flight), so an idle host's limit does not drift up. */
#include <math.h>

#include "private.h"

/* A latency up to this times the best is "no queue". */
#define AV_TOLERANCE 1.5
/* The best latency is the smaller of the last two windows of this many
 * samples: a server that became slower for good is believed after two. */
#define AV_WINDOW 250
/* The recent latency's moving average weight. */
#define AV_RECENT_WEIGHT 0.2
/* A failure's cut, and a slow answer's cut bounds. */
#define AV_DROP_CUT 0.5
/* Slow start's growth a sample: x1.5 a round trip. */
#define AV_SLOW_START 0.5
#define AV_CUT_MIN 0.5
#define AV_CUT_MAX 0.9

void av_adapt_init(av_adapt *a, const av_adapt_conf *c) {
  *a = (av_adapt){.limit = c->initial};
}

void av_adapt_measure(av_adapt *a, double latency) {
  if (!(latency > 0)) latency = 1e-6; /* a clock that did not move: as fast as can be */
  a->lat_recent = a->lat_recent > 0 ? a->lat_recent + (latency - a->lat_recent) * AV_RECENT_WEIGHT : latency;
  if (a->win_min == 0 || latency < a->win_min) a->win_min = latency;
  if (a->lat_min == 0 || latency < a->lat_min) a->lat_min = latency;
  if (++a->win_n >= AV_WINDOW) { /* the best of the last two windows */
    a->lat_min = a->win_min;
    a->win_min = 0;
    a->win_n = 0;
  }
}

/* Cut to factor * base (at most the limit). */
static void av_adapt_cut(av_adapt *a, const av_adapt_conf *c, double base, double factor, uint64_t started,
                         uint64_t now) {
  if (started < a->last_cut) return; /* sent under the old limit: already paid for */
  a->w_max = a->limit;
  a->limit = fmin(a->limit, base) * factor;
  if (a->limit < c->min) a->limit = c->min;
  a->last_cut = now;
}

static void av_adapt_grow(av_adapt *a, const av_adapt_conf *c, double in_flight) {
  if (2 * in_flight < a->limit) return; /* not used: no evidence there is room */
  double step;
  if (a->w_max == 0) step = AV_SLOW_START;  /* slow start */
  else step = 1 / a->limit;       /* probe: one more a round trip */
  a->limit += step;
  if (a->limit > c->max) a->limit = c->max;
}

void av_adapt_update(av_adapt *a, const av_adapt_conf *c, enum av_outcome out, double slow,
                     uint64_t started, double in_flight, uint64_t now) {
  if (out == AV_OUT_DROP) {
    av_adapt_cut(a, c, a->limit, AV_DROP_CUT, started, now);
  } else if (out == AV_OUT_SAMPLE) {
    if (c->algorithm == AV_ALGO_GRADIENT && slow > AV_TOLERANCE)
      av_adapt_cut(a, c, in_flight, fmin(AV_CUT_MAX, fmax(AV_CUT_MIN, AV_TOLERANCE / slow)), started, now);
    else
      av_adapt_grow(a, c, in_flight);
  }
}

lua_Integer av_adapt_limit(const av_adapt *a) {
  /* (the limit stays within [min, max], which session.c caps at 1e6:
   * the cast is defined) */
  lua_Integer n = (lua_Integer)a->limit;
  return n < 1 ? 1 : n;
}
