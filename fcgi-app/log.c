/*
 * log.c: see log.h. One fprintf() a line, so that lines of threads and
 * processes sharing stderr do not interleave; errno is left as it was.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "fcgi-app/log.h"

void
ds_app_logf(const char *fn, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s[%ld]: %s: %s\n", program_invocation_short_name,
	    (long)getpid(), fn, buf);
	errno = saved;
}
