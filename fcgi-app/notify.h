/*
 * notify.h: live-read wake-ups between worker processes.
 *
 * ds-notify is a small daemon on a Unix-domain SOCK_SEQPACKET socket. Each
 * worker process keeps one connection to it. A worker subscribes to a
 * stream id while at least one of its requests is parked on that stream;
 * an appender publishes the id after its commit; the daemon forwards the
 * id to every subscribed worker, which wakes its parked requests.
 *
 * An appender publishes only the ids some worker subscribed to, which it
 * reads from the interest table: shared memory the daemon makes and hands
 * every worker with NOTIFY_HELLO on connecting. Slot notify_slot(id)
 * counts the subscriptions of the ids that hash there: a worker adds one
 * before it sends NOTIFY_SUB (and before its request checks the store), the
 * daemon takes it away when it handles the NOTIFY_UNSUB or drops the
 * connection (and counts in itself a SUB its sender could not count:
 * NOTIFY_COUNTED). A reader counts itself in and then checks the store; an
 * appender commits and then reads the count (both with full barriers):
 * one of them sees the other. The daemon handles the connections in the
 * order epoll gives them, so a PUB may come before the SUB it raced: the
 * SUB carries the slot's publish generation as the reader saw it, and a
 * subscriber whose slot was published since is woken at once. A slot
 * shared with another watched id, or one left counted by a worker that
 * died between the two steps, only costs a publish nobody needed; a
 * worker that connects makes every subscriber look again, for the appends
 * it made before it could publish them.
 *
 * Wake-ups are hints, never the truth: a woken request re-reads the store.
 * When the daemon is unreachable, parked requests poll the store every
 * NOTIFY_POLL_MS instead and the worker reconnects in the background, so
 * losing the notifier costs latency, never data.
 */
#ifndef DS_NOTIFY_H
#define DS_NOTIFY_H

#include <stdint.h>

/* One message each way; SOCK_SEQPACKET keeps the boundaries. */
struct notify_msg {
	uint32_t	type;		/* NOTIFY_* */
	uint32_t	gen;		/* NOTIFY_SUB: NOTIFY_COUNTED and
					   the slot's publish generation when
					   counted in, or 0: not counted */
	uint64_t	id;		/* stream id */
};

enum {
	NOTIFY_SUB = 1,		/* worker -> daemon: wake me for id */
	NOTIFY_UNSUB,		/* worker -> daemon: no longer */
	NOTIFY_PUB,		/* worker -> daemon: id has a new tail */
	NOTIFY_WAKE,		/* daemon -> worker: id has a new tail */
	NOTIFY_HELLO		/* daemon -> worker, first: the interest
				   table's descriptor (SCM_RIGHTS), if any */
};

/*
 * The interest table: NOTIFY_SLOTS counters of 32 bits, then NOTIFY_SLOTS
 * publish generations. An appender that sees a slot counted bumps its
 * generation before it sends NOTIFY_PUB; a worker sends with NOTIFY_SUB the
 * generation it read after counting in, and the daemon wakes the new
 * subscriber at once when it has moved since: a PUB handled before the SUB
 * it raced (another connection, ahead in epoll) is not lost.
 */
#define NOTIFY_SLOTS	65536
#define NOTIFY_TABLE_BYTES (2 * NOTIFY_SLOTS * sizeof(uint32_t))

/*
 * A NOTIFY_SUB without it comes from a worker that has no table (its
 * mapping failed, the HELLO came late) or predates the table: the daemon
 * counts it in itself, so that other workers still publish to it.
 */
#define NOTIFY_COUNTED	0x80000000u
#define NOTIFY_GEN_MASK	0x7fffffffu

static inline uint32_t
notify_slot(uint64_t id)
{
	return (uint32_t)((id * 0x9e3779b97f4a7c15ull) >> 48);
}

/* id's subscription count in the interest table tbl. */
static inline _Atomic uint32_t *
notify_count(_Atomic uint32_t *tbl, uint64_t id)
{
	return &tbl[notify_slot(id)];
}

/* id's publish generation in the interest table tbl. */
static inline _Atomic uint32_t *
notify_gen(_Atomic uint32_t *tbl, uint64_t id)
{
	return &tbl[NOTIFY_SLOTS + notify_slot(id)];
}

#define NOTIFY_POLL_MS	100	/* poll interval while the daemon is away */
#define NOTIFY_SAFETY_MS 1000	/* re-check interval even when connected */

/*
 * Starts the process's connection to the daemon at path (a background
 * thread that connects, reads wake-ups and reconnects). NULL: no daemon,
 * parked requests poll. Returns 0, or -1 if the thread cannot start.
 */
int	notify_start(const char *path);

/* Tells every worker (this one included) that stream id has changed. */
void	notify_publish(uint64_t id);

/* How often a waiting request re-checks the store now: NOTIFY_SAFETY_MS
 * while the daemon is connected, NOTIFY_POLL_MS while it is not. */
int	notify_recheck_ms(void);

struct notify_watch;

/*
 * Registers interest in stream id before the caller checks the store, so
 * that no change between the check and the wait is missed. Returns NULL
 * only when out of memory (the caller then polls).
 */
struct notify_watch *notify_watch_begin(uint64_t id);

/* The change counter to pass to notify_watch_wait() after a check. */
uint64_t notify_watch_seen(struct notify_watch *);

/*
 * The watch's serial: no two watches of the process share one, so a
 * (serial, change counter) pair names one state of one stream's watch.
 */
uint64_t notify_watch_serial(const struct notify_watch *);

/*
 * Waits until the stream changes after seen, deadline_ms (CLOCK_MONOTONIC
 * milliseconds) passes, or a poll interval elapses (short while the daemon
 * is away). The caller re-checks the store after every return.
 */
void	notify_watch_wait(struct notify_watch *, uint64_t seen,
	    int64_t deadline_ms);

void	notify_watch_end(struct notify_watch *);

/*
 * Calls fn (with the table's mutex held: it must only signal) whenever a
 * watched stream changes or the daemon comes or goes.
 */
void	notify_on_change(void (*fn)(void));

/* CLOCK_MONOTONIC in milliseconds. */
int64_t	notify_mono_ms(void);

#endif /* DS_NOTIFY_H */
