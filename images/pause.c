/* The pod sandbox's process (images/pause.Dockerfile): holds the pod's namespaces, reaps
 * orphans, and exits 0 on SIGTERM or SIGINT. Signals need handlers: PID 1 ignores the
 * default ones. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) { _exit(sig == SIGTERM || sig == SIGINT ? 0 : 1); }

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, 0, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction stop = {.sa_handler = on_stop};
    struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
    sigaction(SIGTERM, &stop, 0);
    sigaction(SIGINT, &stop, 0);
    sigaction(SIGCHLD, &child, 0);
    for (;;) pause();
}
