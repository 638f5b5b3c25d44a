/*
 * ingot's exec shim: the last step of every process that enters a
 * container. ingot runs it from a sealed memfd (src/sealed.rs says why), so
 * that the binary a container could reach through /proc/PID/exe is this
 * sealed copy, never the host's ingot.
 *
 * argv: "ingot-exec" ERRFD PATH ARGV0 [ARGS...]. Executes PATH with ARGV0
 * ARGS and the environment. ERRFD is closed by that exec; if it fails,
 * "CODE\nexec \"ARGV0\": REASON" is written to it and the shim exits with
 * CODE: 127 when PATH does not exist, else 126 (as Docker). ERRFD "stderr"
 * says the reason on stderr instead (ingot exec).
 * Started any other way (as a script's interpreter, say) it does nothing.
 *
 * No libc: a few hundred bytes that start in microseconds (a static glibc
 * binary costs a millisecond more per container start). Built by build.rs
 * with -nostdlib for x86_64 and aarch64.
 */
#include <asm/unistd.h>

#define ENOENT 2
#define EACCES 13
#define ENOEXEC 8
#define F_SETFD 2
#define FD_CLOEXEC 1

#if defined(__x86_64__)
static long sys3(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
__asm__(".text\n.globl _start\n_start:\n xor %rbp, %rbp\n mov %rsp, %rdi\n and $-16, %rsp\n call shim_main\n hlt\n");
#elif defined(__aarch64__)
static long sys3(long n, long a, long b, long c) {
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
    return x0;
}
__asm__(".text\n.globl _start\n_start:\n mov x0, sp\n bl shim_main\n brk #0\n");
#else
#error "the exec shim is written for x86_64 and aarch64"
#endif

static void leave(long code) {
    for (;;)
        sys3(__NR_exit, code, 0, 0);
}

static int same(const char *a, const char *b) {
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

static char *put(char *at, char *end, const char *s) {
    while (*s && at < end)
        *at++ = *s++;
    return at;
}

void shim_main(long *sp) {
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;
    if (argc < 4 || !same(argv[0], "ingot-exec"))
        leave(127);
    long err = -1, plain = 0;
    if (argv[1][0] == 's') {
        /* "stderr": no error pipe; a failure is said on stderr. */
        err = 2;
        plain = 1;
    } else if (argv[1][0] >= '0' && argv[1][0] <= '9') {
        err = 0;
        for (const char *d = argv[1]; *d >= '0' && *d <= '9'; d++)
            err = err * 10 + (*d - '0');
        sys3(__NR_fcntl, err, F_SETFD, FD_CLOEXEC);
    }
    (void)plain;
    long r = sys3(__NR_execve, (long)argv[2], (long)(argv + 3), (long)envp);
    long code = r == -ENOENT ? 127 : 126;
    if (err >= 0) {
        char msg[512];
        char *end = msg + sizeof msg;
        char *at = put(msg, end, plain ? "ingot: exec \"" : code == 127 ? "127\nexec \"" : "126\nexec \"");
        at = put(at, end, argv[3]);
        at = put(at, end, "\": ");
        at = put(at, end,
                 r == -ENOENT    ? "no such file or directory"
                 : r == -EACCES  ? "permission denied"
                 : r == -ENOEXEC ? "exec format error"
                                 : "cannot execute");
        if (plain)
            at = put(at, end, "\n");
        sys3(__NR_write, err, (long)msg, at - msg);
    }
    leave(code);
}
