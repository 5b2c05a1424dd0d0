# dtenant, for login shells (sourced by /etc/profile).
if user="$(id -un 2>/dev/null)"; then
    # DOCKER_HOST where the login's PAM stack has no session line of dtenant's: Debian's
    # runuser and runuser-l stacks include no common-session, so `runuser -l USER` gets
    # nothing from pam_env. Under runuser only: every other way in has dtenant's PAM
    # lines, whose verdict (eligibility, the list) stands. A socket of the user's own
    # means a daemon of their own there. Whatever the login set stays as it is.
    parent=""
    { read -r parent < "/proc/$PPID/comm"; } 2>/dev/null
    if [ "$parent" = runuser ] && [ -z "${DOCKER_HOST-}" ] && [ -z "${DOCKER_CONTEXT-}" ] &&
        [ -S "/run/docker-$user.sock" ] && [ -O "/run/docker-$user.sock" ]; then
        DOCKER_HOST="unix:///run/docker-$user.sock"
        export DOCKER_HOST
    fi
    # Why the reaper stopped the user's containers, once (the file is root's notice,
    # readable by the user alone; the mark is the user's own).
    if [ -r "/run/dtenant-notices/$user" ] && [ -n "${HOME-}" ]; then
        if [ ! -e "$HOME/.cache/dtenant-notice-seen" ] ||
            [ "/run/dtenant-notices/$user" -nt "$HOME/.cache/dtenant-notice-seen" ]; then
            cat "/run/dtenant-notices/$user" >&2
            mkdir -p "$HOME/.cache" 2>/dev/null && touch "$HOME/.cache/dtenant-notice-seen" 2>/dev/null
        fi
    fi
fi
unset user parent
