/*
 * admin.h: what ds-admin's files share (ds-admin.c: the commands;
 * print.c: how a stream is shown, as a table row, a block, or JSON).
 */
#ifndef DS_ADMIN_H
#define DS_ADMIN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "store/store.h"

/* A stream as ds-admin shows it: its metadata and its relations. */
struct admin_stream {
	char		*path;		/* owned */
	struct ds_stream_info info;
	unsigned	 forks;		/* streams forked from this one */
	const char	*src;		/* the source's path (borrowed from
					   the list), NULL: not a fork */
};

/* Every stream of the store, in path order. */
struct admin_list {
	struct admin_stream *v;
	size_t		 n, cap;
	int		 oom;
};

void	admin_json_str(FILE *, const char *);
void	admin_print_header(void);
void	admin_print_row(const struct admin_stream *, int64_t now_ms);
void	admin_print_stat(const struct admin_stream *, int64_t now_ms);
void	admin_print_json(FILE *, const struct admin_stream *, int64_t now_ms);

#endif /* DS_ADMIN_H */
