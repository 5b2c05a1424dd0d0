/* /usr/lib/dtenant/check-tenant USER: ExecStartPre of docker@USER.service, run as root
 * in the daemon's cgroup before every start. Exit 0 lets the daemon start; 1 refuses it,
 * with one line per problem on stderr (the daemon's journal); 2 is a wrong call.
 *
 * Why a program of its own: the checks (dtenant_session/prestart.py) in a fresh
 * interpreter cost ~40 ms of every first command after an idle stop, nearly all of it the
 * interpreter, its imports and nft's start. dtenant-check.service keeps them warm
 * (dtenant_session/checkserver.py); this asks it and passes its answer on.
 *
 * The daemon's traffic filter can only be probed from the daemon's cgroup, so the probe
 * is made here: a connection to the host's loopback must be refused ("no route to host").
 * When it is not (the filter does not hold for a cgroup made anew: the table must be
 * loaded again from here) or the server does not answer in time, the checks run in a
 * process of their own, check-tenant-direct, as they did before the server existed. */
#define _GNU_SOURCE /* setns */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

/* Fixed at build time; tests/unit builds a copy with stand-ins. */
#ifndef SERVER
#define SERVER "/run/dtenant/check.sock"
#endif
#ifndef DIRECT
#define DIRECT "/usr/lib/dtenant/check-tenant-direct"
#endif
#ifndef HOST_NAMESPACE /* the registry and every data-root are hidden in the unit's own */
#define HOST_NAMESPACE "/proc/1/ns/mnt"
#endif
#define PROBE_PORT 9        /* egress.PROBE: never open to a daemon */
#define PROBE_SECONDS 2     /* a refusal is immediate; anything else is "not filtered" */
#ifndef ANSWER_SECONDS
#define ANSWER_SECONDS 25   /* then the direct check, within the unit's TimeoutStartSec */
#endif
#define ANSWER_MAX 65536    /* findings are a few lines; more is not an answer */
#define NAME_MAX_LEN 32

/* tenant.supported_name: 1-32 of A-Z a-z 0-9 _ . -, not starting with '.' or '-'. */
static int supported_name(const char *name)
{
    size_t length = strlen(name);
    if (length == 0 || length > NAME_MAX_LEN || name[0] == '.' || name[0] == '-')
        return 0;
    return strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
           == length;
}

static void set_timeouts(int fd, int seconds)
{
    struct timeval limit = {.tv_sec = seconds};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit); /* connect() too */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
}

/* Whether dtenant's filter refuses this process the host's loopback. Non-blocking, as
 * egress.refused_from_here: a blocking connect() sees the refusal only at the SYN's first
 * retransmission, a second later. */
static int filtered(void)
{
    struct sockaddr_in probe = {.sin_family = AF_INET, .sin_port = htons(PROBE_PORT)};
    struct pollfd ready = {.events = POLLOUT};
    int error = 0;
    socklen_t length = sizeof error;
    probe.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ready.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ready.fd < 0)
        return 0;
    if (connect(ready.fd, (struct sockaddr *)&probe, sizeof probe) == 0)
        error = 0;
    else if (errno != EINPROGRESS)
        error = errno;
    else if (poll(&ready, 1, PROBE_SECONDS * 1000) != 1
             || getsockopt(ready.fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0)
        error = 0;
    close(ready.fd);
    return error == EHOSTUNREACH;
}

static int enter_host_namespace(void)
{
    int fd = open(HOST_NAMESPACE, O_RDONLY | O_CLOEXEC);
    int entered;
    if (fd < 0)
        return -1;
    entered = setns(fd, CLONE_NEWNS);
    close(fd);
    return entered;
}

/* The server's exit status, its text written to stderr; -1 if it gave no whole answer. */
static int ask_server(const char *user)
{
    static char answer[ANSWER_MAX];
    struct sockaddr_un server = {.sun_family = AF_UNIX};
    char request[NAME_MAX_LEN + 2];
    size_t length = 0;
    ssize_t got = 1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int sent = snprintf(request, sizeof request, "%s\n", user);
    if (fd < 0)
        return -1;
    snprintf(server.sun_path, sizeof server.sun_path, "%s", SERVER);
    set_timeouts(fd, ANSWER_SECONDS);
    if (connect(fd, (struct sockaddr *)&server, sizeof server) != 0
        || send(fd, request, (size_t)sent, MSG_NOSIGNAL) != sent) {
        close(fd);
        return -1;
    }
    while (length < sizeof answer && (got = recv(fd, answer + length, sizeof answer - length, 0)) > 0)
        length += (size_t)got;
    close(fd);
    /* A whole answer: the connection closed, a status line of 0, 1 or 2, then text. */
    if (got != 0 || length < 2 || answer[1] != '\n' || answer[0] < '0' || answer[0] > '2')
        return -1;
    if (length > 2 && write(STDERR_FILENO, answer + 2, length - 2) < 0)
        return -1;
    return answer[0] - '0';
}

int main(int argc, char **argv)
{
    const char *debug = getenv("DTENANT_DEBUG");
    char debug_setting[sizeof "DTENANT_DEBUG=1"] = "DTENANT_DEBUG=";
    int probed_filtered, status;
    if (argc != 2 || !supported_name(argv[1])) {
        fprintf(stderr, "usage: check-tenant USER (a user name dtenant handles)\n");
        return 2;
    }
    probed_filtered = filtered(); /* here, before anything changes namespace */
    if (enter_host_namespace() != 0) {
        fprintf(stderr, "dtenant: cannot check %s's daemon: cannot enter the host's mount "
                        "namespace (%s): %s\n", argv[1], HOST_NAMESPACE, strerror(errno));
        return 1;
    }
    if (probed_filtered) {
        status = ask_server(argv[1]);
        if (status >= 0)
            return status;
        fprintf(stderr, "dtenant: the check server (%s) gave no answer: checking %s here\n",
                SERVER, argv[1]);
    }
    if (debug && strcmp(debug, "1") == 0)
        strcat(debug_setting, "1");
    char *const environment[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", debug_setting, NULL};
    char *const direct[] = {DIRECT, argv[1], NULL};
    execve(direct[0], direct, environment);
    fprintf(stderr, "dtenant: cannot check %s's daemon: cannot run %s: %s\n", argv[1], DIRECT,
            strerror(errno));
    return 1;
}
