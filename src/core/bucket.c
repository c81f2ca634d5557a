/* A token bucket: `rate = {n, per = s}` lets one start through every s/n
 * seconds, and holds up to n tokens, so that after a quiet spell n start at
 * once. A new bucket holds one token, not n: a fresh session paces itself
 * from its first request (100 at {20, per = 1} take 5 s, not 4), and a
 * script run twice in a row does not burst into a server's window that its
 * first run filled. Pure arithmetic on uv_hrtime nanoseconds; the limiter
 * asks it and the session's clock wakes the queue. */
#include "private.h"

static double av_bucket_per_token_ns(const av_rate *r) { return r->per * 1e9 / r->n; }

bool av_bucket_ready(av_bucket *b, const av_rate *r, uint64_t now) {
  if (b->at == 0) { /* never used: one token */
    b->tokens = 1;
    b->at = now;
  } else if (now > b->at) {
    b->tokens += (double)(now - b->at) / av_bucket_per_token_ns(r);
    if (b->tokens > r->n) b->tokens = r->n;
    b->at = now;
  }
  return b->tokens >= 1;
}

void av_bucket_take(av_bucket *b) { b->tokens -= 1; }

void av_bucket_give(av_bucket *b, const av_rate *r) {
  /* capped: a bucket that refilled meanwhile is full, not fuller */
  b->tokens = b->tokens + 1 > r->n ? r->n : b->tokens + 1;
}

bool av_bucket_full(const av_bucket *b, const av_rate *r, uint64_t now) {
  if (b->at == 0) return true; /* nothing to keep: it would start anew the same */
  double refilled = now > b->at ? (double)(now - b->at) / av_bucket_per_token_ns(r) : 0;
  return b->tokens + refilled >= r->n;
}

uint64_t av_bucket_ready_at(const av_bucket *b, const av_rate *r) {
  double missing = 1 - b->tokens;
  if (missing <= 0) return b->at;
  /* rounded up: woken early, the queue would find no token and sleep again */
  return b->at + (uint64_t)(missing * av_bucket_per_token_ns(r)) + 1;
}
