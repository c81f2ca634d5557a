/* What the server has seen: connections accepted and open, requests
 * received and in flight, the most in flight at once. GET /stats answers
 * them, so a client can check from the server's side how many connections
 * it used and how many requests it had in flight (the talk's overload is
 * the server seeing 100 at once instead of 10). */
#include "server.h"

void av_stats_connection(void *cls, struct MHD_Connection *conn,
                         void **socket_context,
                         enum MHD_ConnectionNotificationCode code)
{
  struct av_stats *stats = &((struct av_server *)cls)->stats;
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    stats->connections++;
    stats->open++;
  } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && stats->open > 0) {
    stats->open--;
  }
}

void av_stats_request_begin(struct av_stats *stats)
{
  stats->requests++;
  if (++stats->in_flight > stats->max_in_flight)
    stats->max_in_flight = stats->in_flight;
}

void av_stats_reset_max(struct av_stats *stats)
{
  stats->max_in_flight = stats->in_flight;
}

void av_stats_request_end(struct av_stats *stats)
{
  if (stats->in_flight > 0)
    stats->in_flight--;
}

json_t *av_stats_json(const struct av_stats *stats)
{
  return json_pack("{s:I,s:I,s:I,s:I,s:I}",
                   "connections", (json_int_t)stats->connections,
                   "open_connections", (json_int_t)stats->open,
                   "requests", (json_int_t)stats->requests,
                   "in_flight", (json_int_t)stats->in_flight,
                   "max_in_flight", (json_int_t)stats->max_in_flight);
}
