/* The limiter: aiohttp's connection limits as a pure queue. `limit` counts
 * slots taken in total and `limit_per_host` per key (scheme://host:port);
 * each is fixed or adaptive (adapt.c), and token buckets (bucket.c) and a
 * key's pause (Retry-After) can hold a start back until a time.
 * What may not run waits in a FIFO of its key; when a slot frees, the
 * longest-waiting node whose key has room goes next, so one busy host
 * cannot starve another. It starts nothing itself: admit and next say what
 * may run, and the caller runs it. A request reaches libcurl only when it
 * runs: libcurl's own queueing costs far more and is not FIFO across hosts. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "private.h"

/* One key's state: slots taken, and its waiters. */
struct av_lkey {
  av_lkey *bnext;             /* hash chain */
  av_lkey *wprev, *wnext;     /* in l->waiting while it has waiters */
  lua_Integer in_flight;
  size_t queued;
  av_lnode *head, *tail;      /* FIFO of waiters */
  av_adapt adapt;             /* its adaptive limit, and its latencies in any case */
  av_bucket bucket;           /* rate_per_host's */
  uint64_t paused_until;      /* ns: Retry-After, under an adaptive limit */
  uint64_t used;              /* ns: its last admit (the least recently used idle key goes first) */
  lua_Integer shown;          /* the limit a trace was last shown ... */
  uint32_t shown_epoch;       /* ... in this trace, 0: none (av_limiter_show) */
  uint32_t hash;
  char name[];                /* "scheme://host:port" */
};

static uint32_t av_hash(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

/* Idle keys kept for their state (an adaptive limit, a bucket), at most. */
#define AV_KEYS_KEPT 256
/* The longest pause a Retry-After may ask for (s). */
#define AV_PAUSE_MAX 3600.0

static lua_Integer av_total_limit(const av_limiter *l) {
  return l->auto_total.on ? av_adapt_limit(&l->total) : l->limit;
}

static lua_Integer av_host_limit(const av_limiter *l, const av_lkey *k) {
  return l->auto_host.on ? av_adapt_limit(&k->adapt) : l->limit_per_host;
}

/* Room under the concurrency limits. */
static bool av_slots(const av_limiter *l, const av_lkey *k) {
  lua_Integer total = av_total_limit(l), host = av_host_limit(l, k);
  return (total == 0 || l->in_flight < total) && (host == 0 || k->in_flight < host);
}

/* Whether the clocks let k start now: 0, else when they will (ns). */
static uint64_t av_clock_wait(av_limiter *l, av_lkey *k, uint64_t now) {
  uint64_t at = 0;
  if (k->paused_until > now) at = k->paused_until;
  if (l->rate.n > 0 && !av_bucket_ready(&l->bucket, &l->rate, now)) {
    uint64_t t = av_bucket_ready_at(&l->bucket, &l->rate);
    if (t > at) at = t;
  }
  if (l->rate_per_host.n > 0 && !av_bucket_ready(&k->bucket, &l->rate_per_host, now)) {
    uint64_t t = av_bucket_ready_at(&k->bucket, &l->rate_per_host);
    if (t > at) at = t;
  }
  return at;
}

static bool av_room(av_limiter *l, av_lkey *k, uint64_t now) {
  return av_slots(l, k) && av_clock_wait(l, k, now) == 0;
}

void av_limiter_init(av_limiter *l) {
  av_adapt_init(&l->total, &l->auto_total);
}

static bool av_keys_grow(av_limiter *l) {
  size_t n = l->nbuckets ? l->nbuckets * 2 : 16;
  av_lkey **b = calloc(n, sizeof *b);
  if (!b) return false;
  for (size_t i = 0; i < l->nbuckets; i++) {
    for (av_lkey *k = l->buckets[i], *next; k; k = next) {
      next = k->bnext;
      k->bnext = b[k->hash & (n - 1)];
      b[k->hash & (n - 1)] = k;
    }
  }
  free(l->buckets);
  l->buckets = b;
  l->nbuckets = n;
  return true;
}

/* The state of a key, created on first use; NULL on OOM. */
/* Whether an idle key holds what must not be forgotten yet: a pause
 * (Retry-After) still running, or a rate bucket not full again. */
static bool av_key_fresh(const av_limiter *l, const av_lkey *k) {
  if (k->paused_until > l->clock) return true;
  return l->rate_per_host.n > 0 && !av_bucket_full(&k->bucket, &l->rate_per_host, l->clock);
}

static void av_key_free(av_limiter *l, av_lkey *k) {
  av_lkey **p = &l->buckets[k->hash & (l->nbuckets - 1)];
  while (*p != k) p = &(*p)->bnext;
  *p = k->bnext;
  l->nkeys--;
  free(k);
}

/* Past AV_KEYS_KEPT keys, make room for a new one: forget the least
 * recently used idle key whose state is not fresh. O(keys), and only when
 * a new host comes with the table full. */
static void av_keys_trim(av_limiter *l) {
  av_lkey *oldest = NULL;
  for (size_t b = 0; b < l->nbuckets; b++)
    for (av_lkey *k = l->buckets[b]; k; k = k->bnext)
      if (k->in_flight == 0 && !k->head && !av_key_fresh(l, k) && (!oldest || k->used < oldest->used)) oldest = k;
  if (oldest) av_key_free(l, oldest);
}

static av_lkey *av_key_get(av_limiter *l, const char *name) {
  uint32_t h = av_hash(name);
  if (l->nbuckets) {
    for (av_lkey *k = l->buckets[h & (l->nbuckets - 1)]; k; k = k->bnext)
      if (k->hash == h && strcmp(k->name, name) == 0) return k;
  }
  if (l->nkeys >= AV_KEYS_KEPT) av_keys_trim(l);
  if (l->nkeys >= l->nbuckets && !av_keys_grow(l)) return NULL;
  size_t len = strlen(name);
  av_lkey *k = calloc(1, sizeof *k + len + 1);
  if (!k) return NULL;
  memcpy(k->name, name, len + 1);
  k->hash = h;
  av_adapt_init(&k->adapt, &l->auto_host);
  k->bnext = l->buckets[h & (l->nbuckets - 1)];
  l->buckets[h & (l->nbuckets - 1)] = k;
  l->nkeys++;
  return k;
}

/* Forget a key that has nothing in flight and nobody waiting, unless its
 * state is fresh, or it learnt a limit or holds a rate_per_host bucket
 * (kept within AV_KEYS_KEPT keys: a bucket forgotten would start again
 * with one token, not the n a quiet spell gave it). */
static void av_key_maybe_free(av_limiter *l, av_lkey *k) {
  if (k->in_flight > 0 || k->head || av_key_fresh(l, k)) return;
  if ((l->auto_host.on || l->rate_per_host.n > 0) && l->nkeys <= AV_KEYS_KEPT) return;
  av_key_free(l, k);
}


static void av_key_push(av_limiter *l, av_lkey *k, av_lnode *n) {
  n->next = NULL;
  n->prev = k->tail;
  if (k->tail) {
    k->tail->next = n;
  } else {
    k->head = n;
    k->wprev = NULL; /* first waiter: the key joins the waiting list */
    k->wnext = l->waiting;
    if (l->waiting) l->waiting->wprev = k;
    l->waiting = k;
  }
  k->tail = n;
  n->queued = true;
  k->queued++;
  l->queued++;
}

static void av_key_unlink(av_limiter *l, av_lkey *k, av_lnode *n) {
  if (n->prev) n->prev->next = n->next; else k->head = n->next;
  if (n->next) n->next->prev = n->prev; else k->tail = n->prev;
  n->prev = n->next = NULL;
  n->queued = false;
  k->queued--;
  l->queued--;
  if (!k->head) {
    if (k->wprev) k->wprev->wnext = k->wnext; else l->waiting = k->wnext;
    if (k->wnext) k->wnext->wprev = k->wprev;
    k->wprev = k->wnext = NULL;
  }
}

/* n starts (av_room said it may): a slot, and a token from each bucket. */
static void av_take_slot(av_limiter *l, av_lnode *n) {
  av_lkey *k = n->key;
  if (l->rate.n > 0) av_bucket_take(&l->bucket);
  if (l->rate_per_host.n > 0) av_bucket_take(&k->bucket);
  n->total_in_flight = (double)++l->in_flight;
  n->host_in_flight = (double)++k->in_flight;
}

enum av_admit av_limiter_admit(av_limiter *l, av_lnode *n, const char *key, uint64_t now) {
  l->clock = now;
  av_lkey *k = av_key_get(l, key);
  if (!k) return AV_ADMIT_NO_MEMORY;
  n->key = k;
  k->used = now;
  /* a total rate is shared: with others already waiting for its next
   * token, a newcomer waits behind them (FIFO across hosts) */
  bool behind = l->rate.n > 0 && l->queued > 0;
  if (!k->head && !behind && av_room(l, k, now)) {
    av_take_slot(l, n);
    return AV_ADMIT_RUN;
  }
  n->seq = l->seq++;
  av_key_push(l, k, n);
  return AV_ADMIT_QUEUED;
}

void av_limiter_unqueue(av_limiter *l, av_lnode *n) {
  av_lkey *k = n->key;
  av_key_unlink(l, k, n);
  n->key = NULL;
  av_key_maybe_free(l, k);
}

void av_limiter_report(av_limiter *l, const av_lnode *n, enum av_outcome out, double latency, uint64_t started,
                       double pause, uint64_t now) {
  av_lkey *k = n->key;
  l->clock = now;
  if (out == AV_OUT_SAMPLE) av_adapt_measure(&k->adapt, latency);
  /* how much slower than its host's best: the total, over several hosts,
   * judges each answer by its own host's (a fast host's best is no
   * measure of a slow one) */
  double slow = out == AV_OUT_SAMPLE ? av_adapt_slowness(&k->adapt, latency) : 1;
  if (l->auto_host.on) av_adapt_update(&k->adapt, &l->auto_host, out, slow, started, n->host_in_flight, now);
  if (l->auto_total.on) av_adapt_update(&l->total, &l->auto_total, out, slow, started, n->total_in_flight, now);
  /* Retry-After: the host said when; an adaptive limit listens */
  if (out == AV_OUT_DROP && pause >= 0 && (l->auto_host.on || l->auto_total.on)) {
    uint64_t until = now + (uint64_t)(fmin(pause, AV_PAUSE_MAX) * 1e9);
    if (until > k->paused_until) k->paused_until = until;
  }
}

void av_limiter_release(av_limiter *l, av_lnode *n) {
  av_lkey *k = n->key;
  n->key = NULL;
  l->in_flight--;
  k->in_flight--;
  av_key_maybe_free(l, k);
}

void av_limiter_unstart(av_limiter *l, av_lnode *n) {
  if (l->rate.n > 0) av_bucket_give(&l->bucket, &l->rate);
  if (l->rate_per_host.n > 0) av_bucket_give(&n->key->bucket, &l->rate_per_host);
  av_limiter_release(l, n);
}

av_lnode *av_limiter_next(av_limiter *l, uint64_t now) {
  lua_Integer total = av_total_limit(l);
  if (!l->waiting || (total != 0 && l->in_flight >= total)) return NULL;
  av_lkey *best = NULL;
  for (av_lkey *k = l->waiting; k; k = k->wnext)
    if ((!best || k->head->seq < best->head->seq) && av_room(l, k, now)) best = k;
  if (!best) return NULL;
  av_lnode *n = best->head;
  av_key_unlink(l, best, n);
  av_take_slot(l, n);
  return n;
}

av_lnode *av_limiter_alarm(av_limiter *l, uint64_t now, uint64_t *at) {
  av_lnode *who = NULL;
  for (av_lkey *k = l->waiting; k; k = k->wnext) {
    if (!av_slots(l, k)) continue; /* a slot's release wakes it, not a clock */
    uint64_t t = av_clock_wait(l, k, now);
    if (t && (!who || t < *at)) {
      who = k->head;
      *at = t;
    }
  }
  return who;
}

void av_limiter_each(av_limiter *l, void (*fn)(void *ud, const av_lkey_info *info), void *ud) {
  for (size_t i = 0; i < l->nbuckets; i++) {
    for (av_lkey *k = l->buckets[i]; k; k = k->bnext) {
      av_lkey_info info = {k->name, av_host_limit(l, k), k->in_flight, k->queued, k->adapt.lat_min,
                           k->adapt.lat_recent};
      fn(ud, &info);
    }
  }
  if (l->total_given || l->auto_total.on) {
    av_lkey_info info = {NULL, av_total_limit(l), l->in_flight, l->queued, 0, 0};
    fn(ud, &info);
  }
}

/* Whether a limit now differs from what the trace epoch was last shown;
 * if so it is shown now. */
static bool av_show_moved(lua_Integer *shown, uint32_t *shown_epoch, lua_Integer now, uint32_t epoch) {
  if (*shown_epoch == epoch && *shown == now) return false;
  *shown = now;
  *shown_epoch = epoch;
  return true;
}

static void av_show_key(av_limiter *l, av_lkey *k, uint32_t epoch,
                        void (*fn)(void *ud, const char *key, lua_Integer limit), void *ud) {
  lua_Integer now = av_host_limit(l, k);
  if (av_show_moved(&k->shown, &k->shown_epoch, now, epoch)) fn(ud, k->name, now);
}

void av_limiter_show(av_limiter *l, const av_lnode *n, uint32_t epoch,
                     void (*fn)(void *ud, const char *key, lua_Integer limit), void *ud) {
  if (l->auto_host.on || l->host_set) {
    if (n && n->key) av_show_key(l, n->key, epoch, fn, ud);
    for (size_t i = 0; !n && i < l->nbuckets; i++)
      for (av_lkey *k = l->buckets[i]; k; k = k->bnext) av_show_key(l, k, epoch, fn, ud);
  }
  if (l->auto_total.on || l->total_set) {
    lua_Integer now = av_total_limit(l);
    if (av_show_moved(&l->total_shown, &l->total_shown_epoch, now, epoch)) fn(ud, NULL, now);
  }
}

av_lnode *av_limiter_drop(av_limiter *l) {
  if (!l->waiting) return NULL;
  av_lnode *n = l->waiting->head;
  av_limiter_unqueue(l, n);
  return n;
}

void av_limiter_free(av_limiter *l) {
  for (size_t i = 0; i < l->nbuckets; i++) {
    for (av_lkey *k = l->buckets[i], *next; k; k = next) {
      next = k->bnext;
      free(k);
    }
  }
  free(l->buckets);
  l->buckets = NULL;
  l->nbuckets = l->nkeys = 0;
}
