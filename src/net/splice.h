/* Pipes for relaying a body socket -> pipe -> socket with splice(2), so its bytes never cross
 * into user space (HAProxy's approach). A worker keeps a small pool of them: a pipe costs two
 * descriptors and its buffer, so only a bounded number are ever in use, and one is reused only
 * when it is empty (stale bytes would go to the wrong client). See docs/internals/tuning.md. */
#ifndef TT_NET_SPLICE_H
#define TT_NET_SPLICE_H

#include <stddef.h>
#include <sys/types.h>

/* Pipe capacity asked for with F_SETPIPE_SZ; a smaller one is kept when the system refuses. */
#define TT_PIPE_SIZE (1024 * 1024)
/* Pipes one worker holds at once, in use or kept empty for reuse (twice as many descriptors,
 * reserved for by max_client_connections = auto); past it a body takes the buffered path. */
#define TT_PIPES_MAX 32

typedef struct {
    int rfd, wfd;
    size_t size; /* capacity */
    size_t len;  /* bytes in it, spliced in and not yet out */
} tt_pipe_t;

typedef struct {
    tt_pipe_t *_free[TT_PIPES_MAX];
    size_t _nfree;
    size_t _nheld; /* open pipes: in use, or in _free */
} tt_pipepool_t;

void tt_pipepool_init(tt_pipepool_t *pp);
void tt_pipepool_destroy(tt_pipepool_t *pp);
/* An empty pipe, or NULL when none can be had (the cap, EMFILE, ENFILE, no memory). */
tt_pipe_t *tt_pipe_get(tt_pipepool_t *pp);
/* Gives the pipe back: kept for reuse when empty, else closed. */
void tt_pipe_put(tt_pipepool_t *pp, tt_pipe_t *p);

/* Moves up to n bytes from socket fd into the pipe (never more than its free space). Returns
 * the bytes moved, 0 at the socket's end, or -1 with errno (EAGAIN when nothing is waiting). */
ssize_t tt_pipe_fill(tt_pipe_t *p, int fd, size_t n);
/* Moves the pipe's bytes to socket fd. Returns the bytes moved or -1 with errno (EAGAIN when
 * the socket is full). */
ssize_t tt_pipe_drain(tt_pipe_t *p, int fd);

#endif
