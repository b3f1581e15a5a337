/*
 * log.h: the one logger of ds-fcgi and ds-notify. A line on stderr reads
 * "prog[pid]: function: message", as store/'s ds_log() writes for the
 * store; the front server or systemd keeps it.
 */
#ifndef DS_APP_LOG_H
#define DS_APP_LOG_H

void	ds_app_logf(const char *fn, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));

/* Logs fmt (no newline) for the calling function. */
#define ds_app_log(...)	ds_app_logf(__func__, __VA_ARGS__)

#endif /* DS_APP_LOG_H */
