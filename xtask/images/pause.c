/* The lab's pod sandbox ("pause") process: holds the pod's namespaces, reaps orphans as PID 1,
 * and exits on SIGTERM or SIGINT. Built static by `cargo xtask image`. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) {
  (void)sig;
  _exit(0);
}

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  signal(SIGTERM, stop);
  signal(SIGINT, stop);
  signal(SIGCHLD, reap);
  for (;;) {
    pause();
  }
}
