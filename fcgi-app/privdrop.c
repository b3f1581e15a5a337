/*
 * privdrop.c: see privdrop.h.
 */
#include <sys/types.h>

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fcgi-app/log.h"
#include "fcgi-app/privdrop.h"

int
ds_priv_lookup(const char *user, uid_t *uid, gid_t *gid)
{
	struct passwd *pw;
	char *end;
	unsigned long n;

	errno = 0;
	if ((pw = getpwnam(user)) == NULL && user[0] >= '0' &&
	    user[0] <= '9') {
		n = strtoul(user, &end, 10);
		if (*end == '\0' && n < (unsigned long)(uid_t)-1)
			pw = getpwuid((uid_t)n);
	}
	if (pw == NULL) {
		ds_app_log("--user %s: %s", user, errno ? strerror(errno) :
		    "no such user");
		return -1;
	}
	if (pw->pw_uid == 0) {
		ds_app_log("--user %s is root: name an unprivileged user",
		    user);
		return -1;
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	return 0;
}

int
ds_priv_drop(uid_t uid, gid_t gid)
{
	uid_t ru, eu, su;
	gid_t rg, eg, sg;

	if (geteuid() == 0) {
		if (setgroups(1, &gid) == -1) {
			ds_app_log("setgroups: %s", strerror(errno));
			return -1;
		}
		if (setresgid(gid, gid, gid) == -1) {
			ds_app_log("setresgid %ld: %s", (long)gid,
			    strerror(errno));
			return -1;
		}
		if (setresuid(uid, uid, uid) == -1) {
			ds_app_log("setresuid %ld: %s", (long)uid,
			    strerror(errno));
			return -1;
		}
	}
	if (getresuid(&ru, &eu, &su) == -1 ||
	    getresgid(&rg, &eg, &sg) == -1) {
		ds_app_log("getresuid: %s", strerror(errno));
		return -1;
	}
	if (ru != uid || eu != uid || su != uid || rg != gid || eg != gid ||
	    sg != gid) {
		ds_app_log("running as uid %ld/%ld/%ld gid %ld/%ld/%ld, not "
		    "%ld:%ld (not started as root?)", (long)ru, (long)eu,
		    (long)su, (long)rg, (long)eg, (long)sg, (long)uid,
		    (long)gid);
		return -1;
	}
	/* The drop must hold: root must be out of reach now. */
	if (setuid(0) != -1 || seteuid(0) != -1) {
		ds_app_log("could regain root after dropping to uid %ld",
		    (long)uid);
		return -1;
	}
	if (setgid(0) != -1 || setegid(0) != -1) {
		ds_app_log("could regain group 0 after dropping to gid %ld",
		    (long)gid);
		return -1;
	}
	return 0;
}
