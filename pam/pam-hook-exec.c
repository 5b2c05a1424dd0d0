/* /usr/lib/dtenant/pam-hook: the first program pam_exec runs, as root, at every login.
 *
 * Why it exists: pam_exec hands its program the PAM environment, and users can write
 * into it (~/.pam_environment through pam_env user_readenv=1, sshd's AcceptEnv, ...).
 * LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, GCONV_PATH and their kind would run the user's
 * code inside the first dynamically linked program, as root. This one is linked
 * statically (no dynamic loader reads the environment): it keeps only PAM_USER and
 * PAM_TYPE, checked, and runs the hook script with nothing else but a fixed PATH.
 *
 * It always exits 0: a login never fails because of dtenant. Names it rejects (empty,
 * longer than a user name may be, with '/' or control characters) are not tenants.
 */
#define _GNU_SOURCE /* setresuid, setresgid */
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#ifndef SCRIPT /* fixed at build time; tests/unit builds a copy with a stand-in */
#define SCRIPT "/usr/lib/dtenant/pam-hook.sh"
#endif
#define NAME_MAX_LEN 32 /* what dtenant accepts as a user name (tenant.py) */

/* The last NAME=value: pam_exec appends its own PAM_USER and PAM_TYPE after the PAM
 * environment, where a user may have put the same names first. */
static const char *last_value(char **env, const char *name)
{
    size_t length = strlen(name);
    const char *value = NULL;
    for (; env && *env; env++)
        if (strncmp(*env, name, length) == 0 && (*env)[length] == '=')
            value = *env + length + 1;
    return value;
}

static int plain(const char *value)
{
    size_t length = 0;
    if (!value)
        return 0;
    for (; value[length]; length++)
        if ((unsigned char)value[length] < 0x20 || value[length] == 0x7f
            || value[length] == '/' || length >= NAME_MAX_LEN)
            return 0;
    return length > 0;
}

int main(int argc, char **argv, char **envp)
{
    char user[sizeof "PAM_USER=" + NAME_MAX_LEN], type[sizeof "PAM_TYPE=" + NAME_MAX_LEN];
    const char *user_value = last_value(envp, "PAM_USER");
    const char *type_value = last_value(envp, "PAM_TYPE");
    (void)argc;
    (void)argv;
    if (!plain(user_value) || !plain(type_value))
        return 0;
    snprintf(user, sizeof user, "PAM_USER=%s", user_value);
    snprintf(type, sizeof type, "PAM_TYPE=%s", type_value);
    clearenv(); /* syslog below reads TZ */
    /* su started by a user runs us with her real uid and groups, root only in effect:
     * /bin/sh would drop to them, and she could signal us. All root, or nothing. */
    if (geteuid() == 0 && (setgroups(0, NULL) != 0 || setresgid(0, 0, 0) != 0
                           || setresuid(0, 0, 0) != 0))
        return 0;
    if (chdir("/") != 0) /* nothing relative resolves in a directory the user chose */
        return 0;
    char *const environment[] = {user, type, "PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    char *const script[] = {"/bin/sh", SCRIPT, NULL};
    execve(script[0], script, environment);
    openlog("dtenant", LOG_PID, LOG_AUTHPRIV);
    syslog(LOG_ERR, "login hook: cannot run %s for user %s: %s", SCRIPT, user + 9,
           strerror(errno));
    return 0;
}
