/*
 * store_int.h: what the store's files share and nobody else sees.
 */
#ifndef DS_STORE_INT_H
#define DS_STORE_INT_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>

#include <lmdb.h>

#include "store/store.h"

/* Logs where a failure happens: function, message, errno text. */
#define ds_log(...) ds_logf(__func__, __VA_ARGS__)
void	ds_logf(const char *fn, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));

struct ds_store {
	MDB_env		*env;
	MDB_dbi		 streams;	/* path -> record */
	MDB_dbi		 ids;		/* id (8 bytes) -> path */
	MDB_dbi		 producers;	/* id (8 bytes) + producer id -> state */
	char		*segdir;	/* <dir>/segments */
	int		 segdirfd;	/* open directory, for fsync */
	unsigned	 psize;		/* LMDB page size */
	uint64_t	 reserved;	/* data.mdb pages known allocated */
	int		 no_reserve;	/* fallocate() unsupported here */
};

/*
 * Pages of the LMDB data file kept allocated past its last used page, so
 * that a delete on a full disk can commit (see ds_meta_reserve()).
 */
#define DS_META_RESERVE	256

/*
 * The decoded stream record. The fixed part is stored as-is in LMDB (the
 * environment is not portable across architectures anyway), followed by the
 * content type, the last Stream-Seq and the id of the producer whose request
 * closed the stream.
 */
struct ds_rec {
	struct ds_stream_info info;	/* info.src_id: forked from */
	uint64_t	refs;		/* live forks of this stream */
	int64_t		created_ms;
	uint64_t	closer_epoch;	/* closing producer request */
	uint64_t	closer_seq;
	size_t		seqlen;
	size_t		closerlen;	/* 0: not closed by a producer */
	char		seq[DS_SEQ_MAX + 1];
	char		closer[DS_PRODUCER_MAX + 1];
};

/* Producer state, stored as-is. */
struct ds_pstate {
	uint64_t	epoch;
	uint64_t	seq;		/* last accepted seq in epoch */
	int64_t		access_ms;
};

int	ds_rec_decode(const MDB_val *, struct ds_rec *);
size_t	ds_rec_encode(const struct ds_rec *, char *buf, size_t bufsz);
#define DS_REC_BUFSZ 1024

/* segment.c */
int	ds_seg_path(const struct ds_store *, uint64_t id, char *buf, size_t sz);
int	ds_seg_create(struct ds_store *, uint64_t id, const void *body,
	    size_t len);
int	ds_seg_open(const struct ds_store *, uint64_t id, int flags);
int	ds_seg_write(int fd, uint64_t at, const void *buf, size_t len);
int	ds_seg_read(int fd, uint64_t at, void *buf, size_t len);
int	ds_seg_unlink(const struct ds_store *, uint64_t id);

#endif /* DS_STORE_INT_H */
