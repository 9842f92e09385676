/* csrc/evl_spawn.h
 *
 * The process spawner's C interface.  This file is both the cffi cdef (so it
 * holds declarations only: no includes, no macros) and the header
 * evl_spawn.c includes.
 *
 * evl_spawn() forks a child that hands one socket to the program it executes
 * as file descriptor EVL_SPAWN_FD, closes every other descriptor above the
 * standard three, resets its signal state and asks the kernel to signal it
 * when its parent dies.  Between fork and exec the child only makes
 * async-signal-safe system calls, so the caller may have other threads.
 */

/* The descriptor number the child finds its end of the socketpair on. */
enum { EVL_SPAWN_FD = 3 };

/* The step that failed, as stored in *stage_out. */
enum evl_spawn_stage {
    EVL_SPAWN_OK = 0,
    EVL_SPAWN_BADARG = 1,
    EVL_SPAWN_PIPE = 2,
    EVL_SPAWN_FORK = 3,
    EVL_SPAWN_PDEATHSIG = 4,
    EVL_SPAWN_DUP = 5,
    EVL_SPAWN_CHDIR = 6,
    EVL_SPAWN_EXEC = 7,
    EVL_SPAWN_REPORT = 8
};

/* Starts path with argv and envp (both NULL-terminated), in directory cwd
 * (NULL: the caller's), with sock_fd duplicated onto EVL_SPAWN_FD.  A
 * pdeathsig between 1 and 64 is delivered to the child when the thread that
 * called evl_spawn() exits; 0 asks for none.
 *
 * Returns the child's pid once it has successfully called execve().  Returns
 * -1 if anything failed before that: *stage_out names the step (an
 * evl_spawn_stage) and *errno_out its errno, and a child that was forked has
 * already been reaped.  On success both are set to 0. */
long evl_spawn(const char *path, char *const argv[], char *const envp[],
               const char *cwd, int sock_fd, int pdeathsig,
               int *stage_out, int *errno_out);
