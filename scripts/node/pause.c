/* The sandbox ("pause") container's process: holds a pod's namespaces and does nothing.
 *
 * As PID 1 of the pod's PID namespace (shared-PID pods) it reaps orphaned children; it
 * exits on SIGINT or SIGTERM. Built statically by scripts/build-node-images.sh into the
 * image localhost/pause (from scratch), the node's sandbox image: no registry needed. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signo) {
    (void)signo;
    _exit(0);
}

static void reap(int signo) {
    (void)signo;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(int argc, char **argv) {
    struct sigaction action;
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("damon-k8s pause");
        return 0;
    }
    if (getpid() != 1) {
        fprintf(stderr, "pause: warning: not PID 1\n");
    }
    memset(&action, 0, sizeof(action));
    action.sa_handler = stop;
    if (sigaction(SIGINT, &action, NULL) < 0 || sigaction(SIGTERM, &action, NULL) < 0) {
        return 1;
    }
    action.sa_handler = reap;
    action.sa_flags = SA_NOCLDSTOP;
    if (sigaction(SIGCHLD, &action, NULL) < 0) {
        return 2;
    }
    for (;;) {
        pause();
    }
}
