/*
 * privdrop.h: dropping root for good, as OpenBSD httpd's proc.c does, for
 * ds-fcgi and ds-notify (--user NAME).
 */
#ifndef DS_PRIVDROP_H
#define DS_PRIVDROP_H

#include <sys/types.h>

/*
 * Looks user up (a name, or a number) for the configuration check, before
 * anything is acquired. Returns 0 with its uid and primary gid, or -1
 * after logging.
 */
int	ds_priv_lookup(const char *user, uid_t *uid, gid_t *gid);

/*
 * Becomes uid:gid for good: supplementary groups cleared to gid alone,
 * then setresgid() and setresuid() (real, effective and saved), then
 * checks that every id is the new one and that setuid(0) and setgid(0)
 * now fail. Run as that user already, it only checks. Returns 0, or -1
 * after logging: the caller must exit, never run on with root.
 */
int	ds_priv_drop(uid_t uid, gid_t gid);

#endif /* DS_PRIVDROP_H */
