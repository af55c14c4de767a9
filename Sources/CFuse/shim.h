#ifndef UPGRADEFS_CFUSE_SHIM_H
#define UPGRADEFS_CFUSE_SHIM_H
#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>
#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/statvfs.h>

// Small `static inline` helpers around the parts of libfuse that Swift cannot
// see (function-like macros, versioned symbols) so that FuseKit stays stable
// across libfuse releases. Every helper is prefixed `cfuse_`.

/// Capability bits, re-exported as constants (the macros are shifts).
static const unsigned cfuse_cap_async_read = FUSE_CAP_ASYNC_READ;
static const unsigned cfuse_cap_splice_write = FUSE_CAP_SPLICE_WRITE;
static const unsigned cfuse_cap_splice_move = FUSE_CAP_SPLICE_MOVE;
static const unsigned cfuse_cap_splice_read = FUSE_CAP_SPLICE_READ;
static const unsigned cfuse_cap_readdirplus = FUSE_CAP_READDIRPLUS;
static const unsigned cfuse_cap_readdirplus_auto = FUSE_CAP_READDIRPLUS_AUTO;
static const unsigned cfuse_cap_parallel_dirops = FUSE_CAP_PARALLEL_DIROPS;
static const unsigned cfuse_cap_auto_inval_data = FUSE_CAP_AUTO_INVAL_DATA;
static const unsigned cfuse_cap_atomic_o_trunc = FUSE_CAP_ATOMIC_O_TRUNC;

static const int cfuse_set_attr_mode = FUSE_SET_ATTR_MODE;
static const int cfuse_set_attr_uid = FUSE_SET_ATTR_UID;
static const int cfuse_set_attr_gid = FUSE_SET_ATTR_GID;
static const int cfuse_set_attr_size = FUSE_SET_ATTR_SIZE;
static const int cfuse_set_attr_atime = FUSE_SET_ATTR_ATIME;
static const int cfuse_set_attr_mtime = FUSE_SET_ATTR_MTIME;
static const int cfuse_set_attr_atime_now = FUSE_SET_ATTR_ATIME_NOW;
static const int cfuse_set_attr_mtime_now = FUSE_SET_ATTR_MTIME_NOW;

/// Builds `fuse_args` (FUSE_ARGS_INIT is a macro) from a program name and one
/// comma-separated `-o` option string, and creates a low-level session.
/// Returns NULL on failure (libfuse logs the reason).
static inline struct fuse_session *cfuse_session_new(const char *progname,
                                                     const char *options,
                                                     const struct fuse_lowlevel_ops *ops,
                                                     void *userdata) {
    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    if (fuse_opt_add_arg(&args, progname) != 0) {
        fuse_opt_free_args(&args);
        return NULL;
    }
    if (options != NULL && options[0] != '\0') {
        if (fuse_opt_add_arg(&args, "-o") != 0 || fuse_opt_add_arg(&args, options) != 0) {
            fuse_opt_free_args(&args);
            return NULL;
        }
    }
    struct fuse_session *se = fuse_session_new(&args, ops, sizeof(*ops), userdata);
    fuse_opt_free_args(&args);
    return se;
}

/// The multi-threaded loop (`fuse_session_loop_mt` is a versioned macro) with
/// an explicit configuration: at most `max_threads` workers, no clone_fd.
static inline int cfuse_session_loop_mt(struct fuse_session *se, unsigned max_threads) {
    struct fuse_loop_config *config = fuse_loop_cfg_create();
    if (config == NULL) {
        return -ENOMEM;
    }
    fuse_loop_cfg_set_clone_fd(config, 0);
    fuse_loop_cfg_set_max_threads(config, max_threads);
    /* Keep workers alive between requests: otherwise libfuse 3.14 ends an idle
       worker and starts a new one (with a new splice pipe) for each request,
       which cost a clone3 + pipe2 per 1 MiB read and halved read throughput. */
    fuse_loop_cfg_set_idle_threads(config, max_threads);
    int res = fuse_session_loop_mt(se, config);
    fuse_loop_cfg_destroy(config);
    return res;
}

/// Replies to a read with `count` bytes of `fd` starting at `offset`, through
/// splice when the kernel allows (zero copy). The descriptor is not closed.
static inline int cfuse_reply_fd(fuse_req_t req, int fd, off_t offset, size_t count) {
    struct fuse_bufvec bufv = FUSE_BUFVEC_INIT(count);
    bufv.buf[0].flags = (enum fuse_buf_flags)(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    bufv.buf[0].fd = fd;
    bufv.buf[0].pos = offset;
    return fuse_reply_data(req, &bufv, FUSE_BUF_SPLICE_MOVE);
}

/// statvfs(2) on a path: makes the kernel send a STATFS request to a live
/// FUSE mount (never answered from a cache), which wakes a worker thread.
static inline int cfuse_statvfs_path(const char *path) {
    struct statvfs buf;
    return statvfs(path, &buf);
}

/// libfuse's log messages, formatted, go to one Swift function.
typedef void (*cfuse_log_sink)(int level, const char *message);

static inline cfuse_log_sink *cfuse_log_sink_slot(void) {
    static cfuse_log_sink sink = NULL;
    return &sink;
}

static inline void cfuse_log_trampoline(enum fuse_log_level level, const char *fmt, va_list ap) {
    char message[1024];
    vsnprintf(message, sizeof(message), fmt, ap);
    cfuse_log_sink sink = __atomic_load_n(cfuse_log_sink_slot(), __ATOMIC_ACQUIRE);
    if (sink != NULL) {
        sink((int)level, message);
    } else {
        fputs(message, stderr);
    }
}

/// Routes libfuse's messages to `sink` (NULL: back to stderr).
static inline void cfuse_set_log_sink(cfuse_log_sink sink) {
    __atomic_store_n(cfuse_log_sink_slot(), sink, __ATOMIC_RELEASE);
    fuse_set_log_func(cfuse_log_trampoline);
}

#endif
