/*
 * metrics.h: the worker pool's counters, in one file every worker maps.
 *
 * Each ds-fcgi process claims a slot of the file (metrics.c) and counts into
 * it with relaxed atomic adds: no lock and no system call on a request's
 * path. A scrape (scrape.c) sums the slots, so it sees the pool however the
 * front server spread the requests. Counters of a slot outlive its process:
 * the worker multiwatch starts in place of a dead one takes the dead one's
 * slot and counts on, so the sums never go back. Gauges (readers waiting,
 * the notifier connection) are the slot owner's and count only while it
 * lives.
 *
 * Calls into this file come from everywhere in fcgi-app; it calls nothing
 * of fcgi-app but the logger.
 */
#ifndef DS_METRICS_H
#define DS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

#define DS_METRICS_PATH	"/metrics"	/* never under DS_ROUTE_PREFIX */

#define DSM_MAGIC	"DSMETRC3"	/* changes with the layout */
#define DSM_SLOTS	256		/* scripts/run allows 256 workers */
#define DSM_METHODS	7		/* GET HEAD POST PUT DELETE OPTIONS,
					   other */
#define DSM_CLASSES	5		/* 1xx .. 5xx */

enum ds_gauge {
	DS_G_LONGPOLL,		/* long-polls waiting for data */
	DS_G_SSE,		/* SSE readers connected */
	DS_G_NOTIFIER,		/* 1 while connected to ds-notify */
	DS_G_COUNT
};

/* One worker process's share; 64-byte aligned so slots share no line. */
struct dsm_slot {
	int32_t		 pid;		/* owner, 0: free */
	uint32_t	 pad;
	uint64_t	 requests[DSM_METHODS][DSM_CLASSES];
	uint64_t	 bytes_read;	/* stream bytes answered to reads */
	uint64_t	 notify_pubs;	/* publishes sent to ds-notify */
	uint64_t	 reads_cut;	/* answers cut short (answer.c) */
	struct ds_store_stats store;	/* the store counts here */
	int64_t		 gauge[DS_G_COUNT]; /* zeroed for a new owner */
} __attribute__((aligned(64)));

/* The file: a header, then the slots. All integers native-endian. */
struct dsm_file {
	char		 magic[8];	/* DSM_MAGIC */
	uint32_t	 size;		/* sizeof(struct dsm_file) */
	uint32_t	 nslots;	/* DSM_SLOTS */
	int64_t		 created_ms;	/* when the first worker made it */
	uint64_t	 starts;	/* worker processes that took a slot */
	uint64_t	 restarts;	/* ...of them, in place of one that
					   died without giving it back */
	uint64_t	 no_slot;	/* workers that found every slot taken
					   (they count privately) */
	struct dsm_slot	 slot[DSM_SLOTS] __attribute__((aligned(64)));
};

/*
 * Maps the file at path (creating it if needed) and claims a slot, taking
 * one whose process died first. Makes the store count into the slot.
 * path NULL, or a file that cannot be used (logged): the process counts
 * into private memory, and a scrape sees this process only. Returns 0, or
 * -1 when it fell back to private memory. Call before threads start.
 */
int	ds_metrics_open(const char *path);

/* Gives the slot back at a clean exit (a restart is not counted then). */
void	ds_metrics_close(void);

/* Hooks, one relaxed atomic add each; no-ops before ds_metrics_open(). */
void	ds_metrics_request(const char *method, int status);
void	ds_metrics_bytes_read(size_t n);
void	ds_metrics_notify_pub(void);
void	ds_metrics_read_cut(void);
void	ds_metrics_gauge_add(enum ds_gauge, int delta);
void	ds_metrics_gauge_set(enum ds_gauge, int value);

/*
 * The Prometheus text exposition (format 0.0.4) of the sums over every slot,
 * with the LMDB map's use read from store s. Returns a malloc'd buffer the
 * caller frees, its length in *len; NULL when out of memory.
 */
char	*ds_metrics_text(struct ds_store *s, size_t *len);

#endif /* DS_METRICS_H */
