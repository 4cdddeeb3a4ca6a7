#include "core/identity.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

int identity_resolve(const struct cfg *c, uv_uid_t *uid, uv_gid_t *gid)
{
    if (!c->user && !c->group)
        return 0;
    struct passwd *pw = c->user ? getpwnam(c->user) : NULL;
    struct group *gr = c->group ? getgrnam(c->group) : NULL;
    *uid = pw ? pw->pw_uid : getuid();
    *gid = gr ? gr->gr_gid : pw ? pw->pw_gid : getgid();
    return (pw ? UV_PROCESS_SETUID : 0) | UV_PROCESS_SETGID;
}
