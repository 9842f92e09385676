/* csrc/test_spawn.c
 *
 * Standalone test for evl_spawn.c, meant to run under AddressSanitizer +
 * UndefinedBehaviorSanitizer and under valgrind like test_codec.c:
 *
 *   cc -std=gnu11 -Wall -Wextra -Werror -g -fsanitize=address,undefined \
 *      -o test_spawn_asan.bin test_spawn.c evl_spawn.c && ./test_spawn_asan.bin
 *
 * It checks argument validation, the errno and step reported for a program
 * that is missing or a directory that is missing, that a started child finds
 * its socket on fd 3 and no other descriptor of ours, the corner cases where
 * the socket or the error pipe already sits on fd 3, and that no child is
 * ever left unreaped.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "evl_spawn.h"

static unsigned long evl__failures = 0;

/* Records a failed check with its location; main() exits non-zero at the end. */
#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
            evl__failures++;                                                 \
        }                                                                    \
    } while (0)

static char *const sh_env[] = {"PATH=/usr/bin:/bin", "EVLOOP_FD=3", NULL};

/* True when this process has no child left, reaped or not. */
static int no_children(void)
{
    return waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD;
}

/* Runs `script` under /bin/sh with sock_fd as the child's fd 3, closes
 * sock_fd (as spawn() does, so that the child's exit means end-of-file), reads
 * what the script writes to fd 3 into buf, and returns the child's exit
 * status (or -1 if it could not be started). */
static int run_sh(const char *script, int sock_fd, int peer_fd, char *buf, size_t cap)
{
    char *argv[] = {"sh", "-c", (char *)script, NULL};
    int stage = -1, err = -1, status = 0;
    size_t got = 0;
    long pid = evl_spawn("/bin/sh", argv, sh_env, NULL, sock_fd, SIGKILL, &stage, &err);

    close(sock_fd);
    if (pid < 0) {
        fprintf(stderr, "spawn failed: stage %d errno %d\n", stage, err);
        return -1;
    }
    CHECK(stage == EVL_SPAWN_OK && err == 0);
    for (;;) {
        ssize_t n = read(peer_fd, buf + got, cap - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || (got += (size_t)n) == cap - 1)
            break;
    }
    buf[got] = '\0';
    CHECK(waitpid((pid_t)pid, &status, 0) == (pid_t)pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void test_bad_arguments(void)
{
    char *argv[] = {"true", NULL};
    char *empty[] = {NULL};
    int stage = 0, err = 0;

    CHECK(evl_spawn("/bin/true", argv, sh_env, NULL, 0, 0, NULL, &err) == -1);
    CHECK(evl_spawn("/bin/true", argv, sh_env, NULL, 0, 0, &stage, NULL) == -1);
    CHECK(evl_spawn(NULL, argv, sh_env, NULL, 0, 0, &stage, &err) == -1);
    CHECK(stage == EVL_SPAWN_BADARG && err == EINVAL);
    CHECK(evl_spawn("/bin/true", empty, sh_env, NULL, 0, 0, &stage, &err) == -1);
    CHECK(evl_spawn("/bin/true", argv, NULL, NULL, 0, 0, &stage, &err) == -1);
    CHECK(evl_spawn("/bin/true", argv, sh_env, NULL, -1, 0, &stage, &err) == -1);
    CHECK(evl_spawn("/bin/true", argv, sh_env, NULL, 0, -1, &stage, &err) == -1);
    CHECK(evl_spawn("/bin/true", argv, sh_env, NULL, 0, 1000, &stage, &err) == -1);
    CHECK(stage == EVL_SPAWN_BADARG && err == EINVAL);
    CHECK(no_children());
}

static void test_failures_are_reported(void)
{
    char *argv[] = {"x", NULL};
    int stage = 0, err = 0;

    CHECK(evl_spawn("/nonexistent/program", argv, sh_env, NULL, 0, SIGKILL, &stage, &err) == -1);
    CHECK(stage == EVL_SPAWN_EXEC && err == ENOENT);
    CHECK(evl_spawn("/etc/passwd", argv, sh_env, NULL, 0, SIGKILL, &stage, &err) == -1);
    CHECK(stage == EVL_SPAWN_EXEC && err == EACCES);
    CHECK(evl_spawn("/bin/true", argv, sh_env, "/nonexistent/dir", 0, 0, &stage, &err) == -1);
    CHECK(stage == EVL_SPAWN_CHDIR && err == ENOENT);
    CHECK(no_children()); /* the failed children were reaped */
}

static void test_only_fd_3_is_inherited(void)
{
    int sv[2], low, high;
    char script[256], buf[256];

    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    /* Inheritable descriptors the child must not see: one numbered below
     * the error pipe evl_spawn() is about to make, one far above it. */
    low = dup(sv[0]);
    high = dup2(sv[0], 50);
    CHECK(low > 3 && low < 50 && high == 50);
    snprintf(script, sizeof script,
             "if [ -e /proc/self/fd/%d ] || [ -e /proc/self/fd/%d ]; then printf leak >&3;"
             " else printf ok:$EVLOOP_FD >&3; fi",
             low, high);
    CHECK(run_sh(script, sv[1], sv[0], buf, sizeof buf) == 0);
    CHECK(strcmp(buf, "ok:3") == 0);
    close(low);
    close(high);
    close(sv[0]);
}

static void test_socket_already_on_fd_3(void)
{
    int sv[2], parent_end;
    char buf[64];

    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    /* Put the child's end on 3 itself, close-on-exec like Python makes it,
     * and ours out of the way. */
    parent_end = fcntl(sv[0], F_DUPFD_CLOEXEC, 20);
    close(sv[0]);
    sv[0] = parent_end;
    if (sv[1] != 3) {
        CHECK(dup3(sv[1], 3, O_CLOEXEC) == 3);
        close(sv[1]);
        sv[1] = 3;
    }
    CHECK(run_sh("printf three >&3", 3, sv[0], buf, sizeof buf) == 0);
    CHECK(strcmp(buf, "three") == 0);
    close(sv[0]);
}

/* Leaves fd 3 (and, with free_stdin, fd 0) free, so that pipe2() in
 * evl_spawn() puts the error pipe's read end (or, when 0 is free too, its
 * write end) on 3, where the socket has to go. */
static void check_error_pipe_on_fd_3(int free_stdin)
{
    char *argv[] = {"x", NULL};
    int sv[2], a, b, saved_stdin = -1, stage = 0, err = 0;
    char buf[64];

    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    a = fcntl(sv[0], F_DUPFD_CLOEXEC, 20);
    b = fcntl(sv[1], F_DUPFD_CLOEXEC, 20);
    close(sv[0]);
    close(sv[1]);
    close(3);
    if (free_stdin) {
        saved_stdin = fcntl(0, F_DUPFD_CLOEXEC, 20);
        close(0);
    }
    CHECK(run_sh("printf moved >&3", b, a, buf, sizeof buf) == 0);
    CHECK(strcmp(buf, "moved") == 0);
    /* The same layout again, for a failure: it must still be reported. */
    close(3);
    CHECK(evl_spawn("/nonexistent/program", argv, sh_env, NULL, a, 0, &stage, &err) == -1);
    CHECK(stage == EVL_SPAWN_EXEC && err == ENOENT);
    if (saved_stdin >= 0) {
        CHECK(dup2(saved_stdin, 0) == 0);
        close(saved_stdin);
    }
    close(a);
}

static void test_error_pipe_on_fd_3(void)
{
    check_error_pipe_on_fd_3(0);
    check_error_pipe_on_fd_3(1);
}

int main(void)
{
    test_bad_arguments();
    test_failures_are_reported();
    test_only_fd_3_is_inherited();
    test_socket_already_on_fd_3();
    test_error_pipe_on_fd_3();
    CHECK(no_children());
    if (evl__failures != 0) {
        fprintf(stderr, "test_spawn: %lu checks failed\n", evl__failures);
        return 1;
    }
    printf("test_spawn: all checks passed\n");
    return 0;
}
