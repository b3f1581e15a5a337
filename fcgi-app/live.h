/*
 * live.h: the live path, long-poll (PROTOCOL 5.7) and SSE (5.8).
 *
 * Every live read goes through the same steps:
 *
 *   watch      notify_watch_begin() registers interest in the stream before
 *              anything is read, so that no append after it can be missed.
 *   check      read the store past the offset: data, a closed tail, a
 *              deleted stream or a passed deadline are answered at once
 *              (ds_longpoll_check() in answer.c; the SSE loop in live.c).
 *   wait       otherwise sleep until the watch moves past the value taken
 *              before the check, or a re-check interval passes (notify.h),
 *              then check again.
 *   hand over  a long-poll does not wait in its thread when the worker has
 *              a lot: ds_lot_park() prepares the move, the handler returns,
 *              and the serving thread calls ds_lot_handover(). The lot's one
 *              thread then checks and waits for it (lot.c). An SSE request
 *              keeps its thread.
 *   answer or leave
 *              the request ends with an answer, or without one when the
 *              front server hangs up (client gone); either way the watch
 *              ends (notify_watch_end()) and the connection closes.
 *
 * Calls run one way: handlers.c -> live.c -> lot.c -> answer.c -> http.c
 * (t/06-layering.t checks that no two files call each other in a loop).
 */
#ifndef DS_LIVE_H
#define DS_LIVE_H

#include <stdint.h>

struct ds_req;
struct notify_watch;

/* How a GET reads: ?live= absent, long-poll or sse (PROTOCOL 5.6-5.8). */
enum ds_live_mode {
	DS_LIVE_NONE,		/* a catch-up read: not the live path's */
	DS_LIVE_LONGPOLL,
	DS_LIVE_SSE
};

/*
 * live.c: serves a live read from offset from (DS_POS_NOW: the tail) with
 * the client's cursor (or NULL), and always answers (or hands r over).
 */
void	ds_live_serve(struct ds_req *, enum ds_live_mode, uint64_t from,
	    const char *cursor);

/*
 * lot.c: long-polls that wait without a thread. ds_lot_start() starts the
 * lot's thread (-1: none; long-polls then wait in their threads).
 * ds_lot_park() prepares to hand r (with its FCGX_Request) and the watch
 * w, after a check that saw the watch at seen, to the lot, and sets
 * r->parked; it returns -1 when the lot takes r (app.h: the request
 * is no longer the caller's), 0, taking nothing, when there is no lot. Once the
 * handler has returned, the thread calls ds_lot_handover() and must not
 * touch r or its request again. ds_lot_drain() answers every waiting
 * long-poll at shutdown (204, as at its timeout), waiting at most wait_ms.
 */
int	ds_lot_start(void);
int	ds_lot_park(struct ds_req *, struct notify_watch *w, uint64_t seen,
	    uint64_t id, uint64_t from, const char *cursor, int64_t deadline);
void	ds_lot_handover(struct ds_req *);
void	ds_lot_drain(int wait_ms);

#endif /* DS_LIVE_H */
