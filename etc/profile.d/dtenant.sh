# dtenant: DOCKER_HOST for login shells whose PAM stack has no session line of dtenant's.
# Debian's runuser and runuser-l stacks include no common-session, so `runuser -l USER`
# gets nothing from pam_env; a socket of the user's own (provisioned, owner the user)
# means dtenant gives them a daemon there. Whatever the login set stays as it is.
if [ -z "${DOCKER_HOST-}" ] && [ -z "${DOCKER_CONTEXT-}" ] && user="$(id -un 2>/dev/null)"; then
    if [ -S "/run/docker-$user.sock" ] && [ -O "/run/docker-$user.sock" ]; then
        DOCKER_HOST="unix:///run/docker-$user.sock"
        export DOCKER_HOST
    fi
fi
unset user
