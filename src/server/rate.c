/* --rate-limit N/S: a token bucket per client address, burst N, refilled
 * at N per S seconds (GCRA). A bucket and not a sliding window, so that a
 * client pacing itself with the same bucket (avideo's `rate`) is never
 * refused. Buckets live in a small fixed table: memory stays bounded
 * however many addresses come; past AV_RATE_CLIENTS at once the least
 * recently seen address is forgotten (it starts full again). Not scaled
 * by --time-scale: Retry-After is whole seconds. */
#include <math.h>
#include <string.h>

#include "server.h"

/* Seconds of arrival jitter forgiven (see av_rate_take). */
#define AV_RATE_JITTER 0.025

void av_rate_init(struct av_rate *rate, unsigned n, double seconds)
{
  *rate = (struct av_rate){ .n = n, .seconds = seconds };
}

/* The bucket of addr (len bytes), found or taken over. */
static struct av_rate_client *av_rate_find(struct av_rate *rate,
                                           const void *addr, size_t len,
                                           uint64_t now)
{
  struct av_rate_client *oldest = &rate->clients[0];
  if (len > sizeof oldest->addr)
    len = sizeof oldest->addr;
  for (size_t i = 0; i < AV_RATE_CLIENTS; i++) {
    struct av_rate_client *c = &rate->clients[i];
    if (c->used && c->len == len && memcmp(c->addr, addr, len) == 0)
      return c;
    if (!c->used || (oldest->used && c->seen < oldest->seen))
      oldest = c;
  }
  *oldest = (struct av_rate_client){ .used = true, .len = len,
                                     .tokens = rate->n, .seen = now };
  memcpy(oldest->addr, addr, len);
  return oldest;
}

unsigned av_rate_take(struct av_rate *rate, const void *addr, size_t len,
                      uint64_t now)
{
  if (rate->n == 0)
    return 0;
  struct av_rate_client *c = av_rate_find(rate, addr, len, now);
  double per_token = rate->seconds / rate->n;
  c->tokens += (double)(now - c->seen) / 1e9 / per_token;
  if (c->tokens > rate->n)
    c->tokens = rate->n;
  c->seen = now;
  /* A request up to AV_RATE_JITTER early is let through (the token goes
   * below zero): a client pacing itself exactly sees its requests arrive
   * out of order by a few ms (a new connection's handshake, scheduling). */
  if (c->tokens >= 1 - AV_RATE_JITTER / per_token) {
    c->tokens -= 1;
    return 0;
  }
  /* The time until one token is back, in whole seconds, at least 1. */
  double wait = (1 - c->tokens) * per_token;
  unsigned after = (unsigned)ceil(wait);
  return after ? after : 1;
}
