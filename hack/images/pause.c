/*
 * pause: the process that holds a pod's namespaces (the "sandbox" or "infra" container).
 * It does nothing but wait: it exits 0 on SIGTERM or SIGINT, and, being PID 1 of the
 * pod when the pod shares its PID namespace, reaps the zombies that orphaned processes
 * leave behind. Built statically (gcc -static) so that its image holds nothing else.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) {
	/* write(2) is async-signal-safe; printf is not. */
	static const char msg[] = "pause: shutting down on signal\n";
	(void)sig;
	(void)!write(STDERR_FILENO, msg, sizeof msg - 1);
	_exit(0);
}

static void reap(int sig) {
	int saved = errno;
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
	errno = saved;
}

int main(int argc, char **argv) {
	if (argc > 1) {
		if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
			printf("usage: pause\n"
			       "Waits until SIGTERM or SIGINT, then exits 0; reaps exited children meanwhile.\n"
			       "It holds a pod's namespaces as the pod sandbox's process.\n");
			return 0;
		}
		if (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0) {
			printf("pause (mla-controllers) 1\n");
			return 0;
		}
		fprintf(stderr, "pause: unknown argument %s (try --help)\n", argv[1]);
		return 2;
	}
	if (getpid() != 1) {
		fprintf(stderr, "pause: warning: not the first process of its PID namespace\n");
	}

	struct sigaction down = {0};
	down.sa_handler = stop;
	sigemptyset(&down.sa_mask);
	if (sigaction(SIGINT, &down, NULL) < 0 || sigaction(SIGTERM, &down, NULL) < 0) {
		perror("pause: sigaction");
		return 1;
	}
	struct sigaction child = {0};
	child.sa_handler = reap;
	sigemptyset(&child.sa_mask);
	child.sa_flags = SA_NOCLDSTOP | SA_RESTART;
	if (sigaction(SIGCHLD, &child, NULL) < 0) {
		perror("pause: sigaction");
		return 1;
	}

	for (;;) {
		pause();
	}
}
