/* csrc/evl_spawn.c
 *
 * fork + exec for evloop's workers, with the few things Python's subprocess
 * module cannot do without running Python code in the child: put one socket
 * on a fixed descriptor number, set PR_SET_PDEATHSIG, and check that the
 * parent did not die before that took effect.
 *
 * The child is made with vfork(): it borrows the parent's memory until it
 * calls execve() or _exit(), so the cost of starting it does not grow with
 * the parent's size (fork() copies the page tables: about 20 ms for a 400 MB
 * parent, against a constant fraction of a millisecond here).  That puts
 * strict rules on the child, which runs only evl__child(): it makes system
 * calls that are async-signal-safe (or raw system calls with no user-space
 * state: prctl, close_range), writes no memory but its own stack frame, only
 * reads the arguments prepared by the parent, and never returns.  The parent
 * blocks every signal around vfork() so that no handler of the parent's
 * (Python's among them) can run in the child, on the shared memory, before
 * the child has reset the dispositions to their defaults.  Only the calling
 * thread is suspended meanwhile; the others go on running.
 *
 * A failure in the child is reported through a pipe whose write end is
 * close-on-exec: the parent reads either end-of-file (execve() succeeded and
 * closed the pipe) or two ints, the failing step and its errno.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2() and F_DUPFD_CLOEXEC need it in glibc. */
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "evl_spawn.h"

/* Signals are numbered 1..EVL__NSIG-1; glibc's _NSIG is 65 on Linux. */
#ifdef _NSIG
#define EVL__NSIG _NSIG
#else
#define EVL__NSIG 65
#endif

/* Without close_range() the child closes descriptors one by one, up to the
 * soft RLIMIT_NOFILE but never more than this many, so that a huge limit
 * cannot make every spawn take seconds. */
#define EVL__CLOSE_LOOP_MAX (1L << 20)

/* Sends the failing step and errno to the parent, then exits.  A short or
 * failed write is not retried beyond EINTR: the parent treats a short report
 * as a failure of unknown cause. */
__attribute__((noreturn)) static void
evl__child_fail(int errfd, int stage, int err)
{
    int report[2];
    const char *p = (const char *)report;
    size_t left = sizeof report;

    report[0] = stage;
    report[1] = err;
    while (left > 0) {
        ssize_t n = write(errfd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        p += n;
        left -= (size_t)n;
    }
    _exit(127);
}

/* Closes every descriptor in [lo, hi], using close_range() when the kernel
 * has it (Linux 5.9) and a loop up to max_fd otherwise. */
static void evl__close_fds(unsigned int lo, unsigned int hi, long max_fd)
{
    long fd;

    if (lo > hi)
        return;
#ifdef SYS_close_range
    if (syscall(SYS_close_range, lo, hi, 0u) == 0)
        return;
#endif
    for (fd = (long)lo; fd <= (long)hi && fd < max_fd; fd++)
        close((int)fd);
}

/* What the child needs, prepared by the parent before vfork().  The child
 * only reads it. */
struct evl__child_args {
    const char *path;
    char *const *argv;
    char *const *envp;
    const char *cwd;
    int sock_fd;
    int pdeathsig;
    pid_t parent;
    int errfd;
    long max_fd;
};

/* The child's side, between vfork() and execve().  It never returns, and it
 * is never inlined, so that its locals live in a frame of its own below the
 * parent's instead of in slots of evl_spawn()'s frame that the parent reads
 * again once it resumes. */
__attribute__((noreturn, noinline)) static void
evl__child(const struct evl__child_args *a)
{
    struct sigaction dfl;
    sigset_t none;
    int errfd = a->errfd;
    int sig;

    /* Ask to die with the parent first, then make sure the parent did not
     * die before the request was made: if it did, we have been reparented
     * and nobody will ever read our report, so leave quietly. */
    if (a->pdeathsig > 0 &&
        prctl(PR_SET_PDEATHSIG, (unsigned long)a->pdeathsig, 0UL, 0UL, 0UL) < 0)
        evl__child_fail(errfd, EVL_SPAWN_PDEATHSIG, errno);
    if (getppid() != a->parent)
        _exit(127);

    /* The error pipe must not sit on the number the socket is moved to. */
    if (errfd == EVL_SPAWN_FD) {
        int moved = fcntl(errfd, F_DUPFD_CLOEXEC, EVL_SPAWN_FD + 1);
        if (moved < 0)
            evl__child_fail(errfd, EVL_SPAWN_DUP, errno);
        errfd = moved;
    }

    /* dup2() onto the same number is a no-op that keeps close-on-exec set,
     * so that case clears the flag by hand instead. */
    if (a->sock_fd == EVL_SPAWN_FD) {
        int flags = fcntl(a->sock_fd, F_GETFD);
        if (flags < 0 || fcntl(a->sock_fd, F_SETFD, flags & ~FD_CLOEXEC) < 0)
            evl__child_fail(errfd, EVL_SPAWN_DUP, errno);
    } else if (dup2(a->sock_fd, EVL_SPAWN_FD) < 0) {
        evl__child_fail(errfd, EVL_SPAWN_DUP, errno);
    }

    /* Everything above the socket goes, except the error pipe, which is
     * close-on-exec and so disappears with a successful execve(). */
    if (errfd > EVL_SPAWN_FD) {
        evl__close_fds(EVL_SPAWN_FD + 1, (unsigned int)errfd - 1u, a->max_fd);
        evl__close_fds((unsigned int)errfd + 1u, UINT_MAX, a->max_fd);
    } else {
        evl__close_fds(EVL_SPAWN_FD + 1, UINT_MAX, a->max_fd);
    }

    if (a->cwd != NULL && chdir(a->cwd) < 0)
        evl__child_fail(errfd, EVL_SPAWN_CHDIR, errno);

    /* execve() keeps ignored signals ignored and the blocked mask blocked;
     * the new program should start from the defaults instead (the Python
     * parent ignores SIGPIPE, for one).  sigaction() fails harmlessly for
     * SIGKILL, SIGSTOP and the signals glibc reserves for itself. */
    dfl.sa_handler = SIG_DFL;
    dfl.sa_flags = 0;
    sigemptyset(&dfl.sa_mask);
    for (sig = 1; sig < EVL__NSIG; sig++)
        sigaction(sig, &dfl, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    execve(a->path, a->argv, a->envp);
    evl__child_fail(errfd, EVL_SPAWN_EXEC, errno);
}

/* Starts the child.  Kept apart from evl_spawn() so that nothing but the
 * returned pid is live across vfork(). */
static pid_t evl__start(const struct evl__child_args *a)
{
    pid_t pid = vfork();
    if (pid == 0)
        evl__child(a);
    return pid;
}

/* Returns the soft RLIMIT_NOFILE, capped at EVL__CLOSE_LOOP_MAX. */
static long evl__fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)EVL__CLOSE_LOOP_MAX)
        return (long)rl.rlim_cur;
    return EVL__CLOSE_LOOP_MAX;
}

/* Reads the child's report into report[0..1].  Returns the number of bytes
 * read: 0 means execve() succeeded. */
static size_t evl__read_report(int fd, int report[2])
{
    char *p = (char *)report;
    size_t got = 0;

    while (got < 2 * sizeof(int)) {
        ssize_t n = read(fd, p + got, 2 * sizeof(int) - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    return got;
}

long evl_spawn(const char *path, char *const argv[], char *const envp[],
               const char *cwd, int sock_fd, int pdeathsig,
               int *stage_out, int *errno_out)
{
    struct evl__child_args args;
    int errpipe[2];
    int report[2];
    sigset_t all, saved;
    pid_t pid;
    size_t got;
    int status, fork_errno;

    if (stage_out == NULL || errno_out == NULL)
        return -1;
    *stage_out = EVL_SPAWN_OK;
    *errno_out = 0;
    if (path == NULL || argv == NULL || argv[0] == NULL || envp == NULL ||
        sock_fd < 0 || pdeathsig < 0 || pdeathsig >= EVL__NSIG) {
        *stage_out = EVL_SPAWN_BADARG;
        *errno_out = EINVAL;
        return -1;
    }
    if (pipe2(errpipe, O_CLOEXEC) < 0) {
        *stage_out = EVL_SPAWN_PIPE;
        *errno_out = errno;
        return -1;
    }

    args.path = path;
    args.argv = argv;
    args.envp = envp;
    args.cwd = cwd;
    args.sock_fd = sock_fd;
    args.pdeathsig = pdeathsig;
    args.parent = getpid();
    args.errfd = errpipe[1];
    /* Only needed if the kernel lacks close_range(); computed here because
     * getrlimit() is not on the async-signal-safe list. */
    args.max_fd = evl__fd_limit();

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    pid = evl__start(&args);
    fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    close(errpipe[1]);

    if (pid < 0) {
        close(errpipe[0]);
        *stage_out = EVL_SPAWN_FORK;
        *errno_out = fork_errno;
        return -1;
    }

    /* The child has called execve() or _exit() by now (vfork() resumes the
     * parent only then), so this read does not wait. */
    got = evl__read_report(errpipe[0], report);
    close(errpipe[0]);
    if (got == 0)
        return (long)pid;

    /* The child failed before execve() and has exited: collect it so that
     * no zombie is left behind. */
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (got == sizeof report) {
        *stage_out = report[0];
        *errno_out = report[1];
    } else {
        *stage_out = EVL_SPAWN_REPORT;
        *errno_out = EIO;
    }
    return -1;
}
