#!/bin/sh
# dtenant's PAM session hook at open_session. pam_exec runs /usr/lib/dtenant/pam-hook
# (pam/pam-hook-exec.c), which clears the environment and runs this with PAM_USER,
# PAM_TYPE and a fixed PATH only: root never runs with what a user put in the PAM
# environment.
#
# Hot path, in the shell's own builtins (no interpreter to start): the user's tenant is
# provisioned (its stamp exists, its socket listens) and no configuration file changed
# since the stamp was written -> done. Otherwise the cold path provisions, in Python,
# within hook.time_limit. dtenant_session/stamp.py applies the same rule. Whatever
# happens, the exit status is 0: a login never fails because of dtenant. Logouts are
# not seen here: the reaper asks logind who has a session.
user="$PAM_USER"
case "$user" in
    "" | root | */* | .* | -*) exit 0 ;;
esac
[ "$PAM_TYPE" = open_session ] || exit 0
stamp="/run/dtenant/stamps/$user"
if [ -S "/run/docker-$user.sock" ] && [ -e "$stamp" ] \
    && ! [ /etc/dtenant/dtenant.toml -nt "$stamp" ] \
    && ! [ /etc/dtenant/dtenant.toml.d -nt "$stamp" ]; then
    current=yes
    for file in /etc/dtenant/dtenant.toml.d/*.toml; do
        if [ "$file" -nt "$stamp" ]; then current=no; fi
    done
    if [ "$current" = yes ]; then exit 0; fi
fi
exec /usr/lib/dtenant/provision-at-login
