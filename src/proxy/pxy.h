/*
 * The proxy handler's private declarations, shared by its files:
 *
 *   proxy.c     the handler: a request's life, attempts and retries,
 *               timeouts, the module (groups, pools, state messages)
 *   request.c   the request head sent upstream, the client's body to it
 *   response.c  the response head and body relayed to the client
 *   tunnel.c    after 101: bytes both ways
 *
 * A proxied request (struct pxy) goes through states:
 *
 *   CONNECT  connecting to the picked server            timeouts.connect
 *   SEND     request head sent, its body streaming      timeouts.idle
 *   WAIT     request sent, no response byte yet         timeouts.first_byte
 *   BODY     response arriving (head, then body)        timeouts.idle
 *   TUNNEL   after 101: bytes both ways                 timeouts.idle
 *
 * and sits in the group's timeout list for that state (core/timeouts.h);
 * a sweep every 100 ms looks only at the lists' heads.
 *
 * Calls into the engine can call back into us (a client that goes away
 * while we hand it bytes): `depth` counts our frames on the stack, and a
 * request whose client went away meanwhile is torn down when the
 * outermost frame returns (pxy_leave).
 */
#ifndef COHORT_PROXY_PXY_H
#define COHORT_PROXY_PXY_H

#include <string.h>
#include <strings.h>

#include "core/freelist.h"
#include "core/timeouts.h"
#include "http/server.h"
#include "proxy/pool.h"
#include "proxy/proxy.h"
#include "proxy/upstream.h"

#define UP_BUF (16 * 1024)       /* response read buffer */
#define UP_HEAD_MAX (64 * 1024)  /* a response head may grow it to this */
#define RESP_FIELDS 128
#define HIGH_MARK (256 * 1024)   /* queued bytes above which the source pauses */
#define LOW_MARK (64 * 1024)     /* and below which it resumes */
#define SWEEP_MS 100
#define TUNNEL_BUF (16 * 1024)

enum pstate { PS_NEW, PS_CONNECT, PS_SEND, PS_WAIT, PS_BODY, PS_TUNNEL, PS_DONE };
enum { TL_CONNECT, TL_WAIT, TL_IDLE, TL_COUNT, TL_NONE = TL_COUNT };

struct pgroup {
    struct up_group g;
    struct proxy *px;
    struct tl_list lists[TL_COUNT];
};

struct proxy {
    uv_loop_t *loop;
    const struct cfg *cfg;
    struct metrics_slot *slot;
    proxy_report_fn report;
    struct pgroup *groups;
    size_t ngroups;
    struct up_pool *pools;     /* one per server, all groups */
    size_t npools;
    uv_timer_t sweep;
    struct freelist free_pxy, free_buf;
    char *scratch;             /* request heads are built here */
    size_t scratch_cap;
    int stopping;
    void (*stopped)(void *arg);
    void *stopped_arg;
};

struct pxy {
    struct proxy *px;
    struct pgroup *pg;
    struct http_exchange *x;   /* NULL once the client went away */
    struct up_conn *uc;        /* the current attempt's connection */
    struct up_server *s;       /* the current attempt's server */
    int tried[UP_MAX_TRIES];
    uint8_t why[UP_MAX_TRIES];
    int ntried, full;
    uint8_t state, tl;
    struct tl_node tn;         /* in pg->lists[tl] */
    uint64_t t_attempt;        /* ns: the current attempt's start */
    const char *key;
    size_t key_len;
    char keybuf[64];
    int depth;
    unsigned sent_any : 1;     /* a byte of the request reached this attempt's socket */
    unsigned body_consumed : 1;/* a byte of the client's body was taken: no retry */
    unsigned req_done : 1;     /* the whole request was sent */
    unsigned retrying : 1;     /* counted in the group's retries in flight */
    unsigned head_sent : 1;    /* the response head went to the client */
    unsigned chunked_req : 1;  /* the body goes upstream chunked */
    unsigned upgrade : 1;      /* Connection: Upgrade was asked for */
    unsigned dead : 1;         /* the client went away while we were busy */
    unsigned head_parsed : 1;
    unsigned released : 1;     /* only its memory is left (client writes pending) */
    int cw;                    /* tunnel: writes to the client not yet called back */
    /* the response */
    struct http_response res;
    enum http_body_kind body;
    uint64_t body_left;
    struct http_chunked dec;
    size_t seen;               /* bytes of the head found incomplete */
    /* tunnel */
    uv_stream_t *client;
    char *tbuf;
    char log[128];
    struct http_header rhdrs[RESP_FIELDS];
};

/* --- small helpers ---------------------------------------------------------- */

/* Moves the request to the timeout list `tl` (TL_NONE: off every list). */
static inline void pxy_set_list(struct pxy *p, int tl)
{
    p->tl = (uint8_t)tl;
    if (tl == TL_NONE)
        tl_remove(&p->tn);
    else
        tl_add(&p->pg->lists[tl], &p->tn, uv_now(p->px->loop));
}

/* Progress: the idle clock starts again. */
static inline void pxy_touch(struct pxy *p)
{
    if (p->tl == TL_IDLE)
        pxy_set_list(p, TL_IDLE);
}

static inline struct metrics_upstream_counts *pxy_counts(const struct pxy *p)
{
    int i = p->s ? p->s->stats : -1;
    return i >= 0 ? &p->px->slot->upstream[i] : NULL;
}

/* A field name (a, an) is `lit`, ignoring case. */
static inline int pxy_eq(const char *a, size_t an, const char *lit)
{
    size_t n = strlen(lit);
    return an == n && strncasecmp(a, lit, n) == 0;
}

/* --- proxy.c ------------------------------------------------------------------ */

char *pxy_buf_get(struct proxy *px);
void pxy_put(struct pxy *p);
/* Names the server that answered, the attempts and the skipped servers
 * in p->log, the exchange's `upstream` (the access log's). */
void pxy_describe(struct pxy *p, const char *answered);
/* Ends the current attempt: its connection back to the pool (`reuse`) or
 * closed. */
void pxy_detach(struct pxy *p, int reuse);
/* The request is over for us; deferred while our frames are on the stack. */
void pxy_release(struct pxy *p);
void pxy_enter(struct pxy *p);
/* Leaves a frame; 1 when the request was torn down (do not touch it). */
int pxy_leave(struct pxy *p);
/* An answer of our own (no server's): 5xx with a JSON error. */
void pxy_answer_error(struct pxy *p, int status, const char *msg);
void pxy_count_failure(struct pxy *p, enum up_fail why);
/* The attempt failed: another server when that is safe, else an error. */
void pxy_attempt_failed(struct pxy *p, enum up_fail why);

/* --- request.c ---------------------------------------------------------------- */

/* Fields named by Connection are hop-by-hop too. */
int request_named_by_connection(const struct http_header *hs, size_t nh, const struct http_header *h);
/* The connection is ready: the head goes, then the body as it comes. */
void request_send(struct pxy *p);
/* The server took what was queued: the client's body flows again. */
void request_on_up_drain(struct up_conn *uc);

/* --- response.c --------------------------------------------------------------- */

/* Bytes from the server (or its end): the response to the client. */
void response_on_up_read(struct up_conn *uc, ssize_t n);

/* --- tunnel.c ----------------------------------------------------------------- */

/* After 101: takes the client's connection over; head_len bytes of the
 * server's buffer were the response head. */
void tunnel_start(struct pxy *p, size_t head_len);
void tunnel_end(struct pxy *p);
/* What the server sent: to the client. */
void tunnel_up_read(struct pxy *p, ssize_t n);
/* The server took the client's bytes: read from the client again. */
void tunnel_resume_client(struct pxy *p);

#endif
