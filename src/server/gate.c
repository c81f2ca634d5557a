/* The overload model of one endpoint: `capacity` slots and a FIFO queue.
 * A request that takes a slot sleeps
 *   scale * (min_delay + factor * min(waiting, 10))
 * where waiting is the queue length behind it at that moment. The
 * capacity may change at run time (POST /capacity): busy may then be above
 * it until the extra requests are done. Pure bookkeeping: timers and
 * connections are request.c's business. */
#include "server.h"

/* Beyond this many waiting, the delay grows no more. */
#define AV_GATE_WAITING_CAP 10

void av_gate_init(struct av_gate *gate, unsigned capacity, double min_delay,
                  double factor, double scale)
{
  *gate = (struct av_gate){ .capacity = capacity, .min_delay = min_delay,
                            .factor = factor, .scale = scale };
}

static double av_gate_delay(const struct av_gate *gate)
{
  size_t waiting = gate->waiting < AV_GATE_WAITING_CAP ? gate->waiting
                                                       : AV_GATE_WAITING_CAP;
  return gate->scale * (gate->min_delay + gate->factor * (double)waiting);
}

bool av_gate_pass(struct av_gate *gate)
{
  /* Taking and releasing at once leaves the counts as they were. */
  return gate->scale == 0 && gate->busy < gate->capacity;
}

bool av_gate_take(struct av_gate *gate, double *delay)
{
  if (gate->busy >= gate->capacity)
    return false;
  gate->busy++;
  *delay = av_gate_delay(gate);
  return true;
}

void av_gate_push(struct av_gate *gate, struct av_waiter *waiter)
{
  waiter->next = NULL;
  waiter->prev = gate->tail;
  if (gate->tail)
    gate->tail->next = waiter;
  else
    gate->head = waiter;
  gate->tail = waiter;
  gate->waiting++;
}

void av_gate_remove(struct av_gate *gate, struct av_waiter *waiter)
{
  if (waiter->prev)
    waiter->prev->next = waiter->next;
  else
    gate->head = waiter->next;
  if (waiter->next)
    waiter->next->prev = waiter->prev;
  else
    gate->tail = waiter->prev;
  waiter->prev = waiter->next = NULL;
  gate->waiting--;
}

struct av_waiter *av_gate_release(struct av_gate *gate, double *delay)
{
  struct av_waiter *head = gate->head;
  /* Past a capacity that shrank, the slot is gone rather than passed on. */
  if (head == NULL || gate->busy > gate->capacity) {
    gate->busy--;
    return NULL;
  }
  /* The slot passes straight to the head: busy stays the same. */
  av_gate_remove(gate, head);
  *delay = av_gate_delay(gate);
  return head;
}

struct av_waiter *av_gate_admit(struct av_gate *gate, double *delay)
{
  struct av_waiter *head = gate->head;
  if (head == NULL || gate->busy >= gate->capacity)
    return NULL;
  av_gate_remove(gate, head);
  gate->busy++;
  *delay = av_gate_delay(gate);
  return head;
}
