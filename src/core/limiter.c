/* The limiter: aiohttp's connection limits as a pure queue. `limit` counts
 * slots taken in total and `limit_per_host` per key (scheme://host:port).
 * What may not run waits in a FIFO of its key; when a slot frees, the
 * longest-waiting node whose key has room goes next, so one busy host
 * cannot starve another. It starts nothing itself: admit and next say what
 * may run, and the caller runs it. A request reaches libcurl only when it
 * runs: libcurl's own queueing costs far more and is not FIFO across hosts. */
#include <stdlib.h>
#include <string.h>

#include "private.h"

/* One key's state: slots taken, and its waiters. */
struct av_lkey {
  av_lkey *bnext;             /* hash chain */
  av_lkey *wprev, *wnext;     /* in l->waiting while it has waiters */
  lua_Integer in_flight;
  av_lnode *head, *tail;      /* FIFO of waiters */
  uint32_t hash;
  char name[];                /* "scheme://host:port" */
};

static uint32_t av_hash(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

static bool av_room(const av_limiter *l, const av_lkey *k) {
  return (l->limit == 0 || l->in_flight < l->limit) && (l->limit_per_host == 0 || k->in_flight < l->limit_per_host);
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
static av_lkey *av_key_get(av_limiter *l, const char *name) {
  uint32_t h = av_hash(name);
  if (l->nbuckets) {
    for (av_lkey *k = l->buckets[h & (l->nbuckets - 1)]; k; k = k->bnext)
      if (k->hash == h && strcmp(k->name, name) == 0) return k;
  }
  if (l->nkeys >= l->nbuckets && !av_keys_grow(l)) return NULL;
  size_t len = strlen(name);
  av_lkey *k = calloc(1, sizeof *k + len + 1);
  if (!k) return NULL;
  memcpy(k->name, name, len + 1);
  k->hash = h;
  k->bnext = l->buckets[h & (l->nbuckets - 1)];
  l->buckets[h & (l->nbuckets - 1)] = k;
  l->nkeys++;
  return k;
}

/* Forget a key that has nothing in flight and nobody waiting. */
static void av_key_maybe_free(av_limiter *l, av_lkey *k) {
  if (k->in_flight > 0 || k->head) return;
  av_lkey **p = &l->buckets[k->hash & (l->nbuckets - 1)];
  while (*p != k) p = &(*p)->bnext;
  *p = k->bnext;
  l->nkeys--;
  free(k);
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
  l->queued++;
}

static void av_key_unlink(av_limiter *l, av_lkey *k, av_lnode *n) {
  if (n->prev) n->prev->next = n->next; else k->head = n->next;
  if (n->next) n->next->prev = n->prev; else k->tail = n->prev;
  n->prev = n->next = NULL;
  n->queued = false;
  l->queued--;
  if (!k->head) {
    if (k->wprev) k->wprev->wnext = k->wnext; else l->waiting = k->wnext;
    if (k->wnext) k->wnext->wprev = k->wprev;
    k->wprev = k->wnext = NULL;
  }
}

static void av_take_slot(av_limiter *l, av_lnode *n) {
  l->in_flight++;
  n->key->in_flight++;
}

enum av_admit av_limiter_admit(av_limiter *l, av_lnode *n, const char *key) {
  av_lkey *k = av_key_get(l, key);
  if (!k) return AV_ADMIT_NO_MEMORY;
  n->key = k;
  if (!k->head && av_room(l, k)) {
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

void av_limiter_release(av_limiter *l, av_lnode *n) {
  av_lkey *k = n->key;
  n->key = NULL;
  l->in_flight--;
  k->in_flight--;
  av_key_maybe_free(l, k);
}

av_lnode *av_limiter_next(av_limiter *l) {
  if (!l->waiting || (l->limit != 0 && l->in_flight >= l->limit)) return NULL;
  av_lkey *best = NULL;
  for (av_lkey *k = l->waiting; k; k = k->wnext)
    if (av_room(l, k) && (!best || k->head->seq < best->head->seq)) best = k;
  if (!best) return NULL;
  av_lnode *n = best->head;
  av_key_unlink(l, best, n);
  av_take_slot(l, n);
  return n;
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
