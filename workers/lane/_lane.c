/* The accelerated steady state of the request path: workers/lane/fastpath.py says what it is and
 * when it runs; workers/exchange/responses.py and workers/exchange/requests.py are the reference it
 * follows, step for step, for the one case it handles.
 *
 * That case: a keep-alive connection of one of the worker's plain-TCP targets, whose
 * response arrives whole in one recv, is framed by Content-Length, is a success, and
 * is followed by the next request on the same connection (RENEW): the same client's in
 * the closed loop (one target), the oldest one of its target due in the open loop's
 * schedule (any number).
 * Everything else -- a partial or unusual response, EOF, an error, a partial write, a
 * response after which the connection is not renewed -- is handed to the Python path
 * with the bytes already read, before anything is counted, and the Python path does
 * what it always does.  So the counters are the Python path's by construction: the
 * C path only ever counts what the Python path would have counted the same way.
 *
 * Speed shaped all of it: one recv into a fixed buffer, a framer that only scans, the
 * counters written through a pointer into the worker's shared-memory slot, the Python
 * objects written back only when the loop returns to Python (the "sync"), never per
 * request.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <time.h>

#define RECV_SIZE 65536 /* the Python path's recv size (workers.exchange.responses.RECV_SIZE) */
#define MAX_EVENTS 1023 /* select.epoll.poll's default maxevents */

/* Word indexes into the slot and the region, handed in by workers/lane/fastpath.py from the
 * one place each is defined (workers.shared.slotstats, workers.shared.shm). */
typedef struct {
    Py_ssize_t status_base, lat_sum, lat_max, hist_base, req_ok, req_sent, sending;
    Py_ssize_t bytes_in, bytes_out, reused;
    Py_ssize_t hist2_base, lat2_max, late, lag_max; /* the open loop's */
    Py_ssize_t t_resp_ok; /* a target's own block: its requests ok (several targets) */
    uint64_t code_mask;
} Words;

/* One target of the worker (workers.pool.target.Target): what the lane reads of it at each
 * call, and the open loop's share of the schedule that is its own. */
typedef struct {
    PyObject *target, *pool, *request; /* the Target, its pool, its prebuilt request */
    const char *req;
    Py_ssize_t req_size;
    Py_ssize_t breaker_word, ok_word; /* in the region's words */
    Py_ssize_t resp_ok, hist;         /* its own block's (own: several targets), else -1 */
    int steady;                       /* its pool and streak let the lane renew (steady()) */
    long long max_requests;
    double idle_timeout, validate_after, health_after; /* the pool's, for a parked member */
    double last_ok;
    int any_ok;
    /* Open loop: its cursor (the schedule's k[t]) and its spots in one period of the
     * schedule's picks (Schedule.index) */
    long long k, k_read;
    long long *spots;
    long long nspots;
    int *parked; /* its parked members, a stack (the last parked goes first, as the pool's
                  * LIFO idle list would) */
    int nparked;
} Target;

typedef struct {
    PyObject *conn;   /* NULL: no member on this fd */
    PyObject *client; /* the client that keeps it */
    double start;     /* client.start of the request in flight */
    double sent_at;   /* client.sent_at (open loop: its actual send) */
    double deadline;  /* conn.deadline */
    double last_used; /* conn.last_used */
    double expires;   /* conn.expires (0: none) */
    long long requests; /* conn.requests */
    int dirty;        /* written since the last sync */
    int parked;       /* open loop: its response counted, it waits here for a due request */
    int t;            /* its target (conn.target) */
} Member;

typedef struct {
    PyObject_HEAD
    int ep;
    Member *members; /* indexed by fd */
    int cap;
    int *dirty; /* fds of the dirty members */
    int ndirty;
    int *burst; /* fds renewed in this wakeup, sent back to back after it */
    int nburst;
    Target *tg; /* the worker's targets, by index */
    int ntg;
    int nparked; /* open loop: the parked members, of every target */
    Py_buffer slot_buf, words_buf;
    int have_bufs;
    uint64_t *s, *w;
    Words i;
    unsigned char success[600];
    int count_5xx;
    Py_ssize_t max_head;
    double read_timeout;
    PyObject *run, *arm, *busy, *sending_state;
    PyObject *taken; /* list of (conn, kind, value) for the Python path */
    long long issued;
    double issue_cap;
    char *buf;
    struct epoll_event *evs;
    long long handled; /* responses handled here (tests, repr) */
    double spin;       /* seconds of busy polling before a blocking wait */
    double waited;     /* seconds spent waiting for events (epoll_wait, the spin) */
    /* Open loop (workers.loop.loadshape.Schedule): the schedule's terms, read at each call,
     * and its cursors (Target.k), advanced here and written back at the sync. */
    int open;
    PyObject *cursor; /* run.schedule's list ``k`` (NULL: closed loop) */
    PyObject *sched_seen; /* the schedule whose spots the targets hold (a reference: its
                           * identity must not be reused while the spots stand) */
    double base, rate, ramp, end_at;
    long long stride, phase, period;
    long long in_flight, in_flight_read; /* run.in_flight (parking changes it) */
} Lane;

static PyObject *s_state, *s_retire, *s_conn, *s_fd, *s_out, *s_requests, *s_deadline,
    *s_last_used, *s_expires, *s_start, *s_heap_when, *s_keeping, *s_stopping, *s_paused,
    *s_schedule, *s_inject, *s_stop_requested, *s_issued, *s_issue_cap, *s_consec,
    *s_backoff, *s_attempt, *s_waiters, *s_size, *s_max_size, *s_max_requests, *s_settings,
    *s_last_ok, *s_retried, *s_trial, *s_sent_at, *s_base, *s_rate, *s_ramp, *s_stride,
    *s_phase, *s_k, *s_period, *s_end_at, *s_in_flight, *s_idle_timeout, *s_validate_after,
    *s_health_after, *s_spots, *s_target, *s_pool, *s_request, *s_breaker_word, *s_ok_word,
    *s_own, *s_block, *s_hist;

#define LATE 0.001 /* workers.exchange.requests.LATE: sent this long after its time, it is late */

static inline double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* time.monotonic()'s clock */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* workers.loop.loadshape.Schedule.due for this worker's request k, term for term (the same
 * doubles in the same order: the same instants as the Python path's). */
static inline double due(const Lane *self, long long k) {
    long long j = self->phase + k * self->stride;
    if (self->ramp > 0) {
        double in_ramp = self->rate * self->ramp / 2;
        if ((double)j < in_ramp) return self->base + sqrt(2 * self->ramp * (double)j / self->rate);
        return self->base + self->ramp + ((double)j - in_ramp) / self->rate;
    }
    return self->base + (double)j / self->rate;
}

/* Schedule.due_of: the intended time of target ``t``'s next request, its request number
 * Schedule.index(t, k[t]) (one target: k itself). */
static inline double due_of(const Lane *self, const Target *t) {
    if (self->period == 1) return due(self, t->k);
    long long q = t->k / t->nspots, r = t->k % t->nspots;
    return due(self, q * self->period + t->spots[r]);
}

/* workers.shared.histogram.bucket_of, for the non-negative values latencies are. */
#define SUB_BITS 7
#define BUCKETS (64 * (32 - SUB_BITS) + (1 << SUB_BITS))
static inline Py_ssize_t bucket_of(long long v) {
    if (v < 128) return v > 0 ? (Py_ssize_t)v : 0;
    int bits = 64 - __builtin_clzll((unsigned long long)v);
    int shift = bits - SUB_BITS;
    long long index = ((long long)shift << 6) + (v >> shift);
    return index < BUCKETS ? (Py_ssize_t)index : BUCKETS - 1;
}

/* The framer ------------------------------------------------------------------------
 * Recognises the one response shape handled here and nothing else: "HTTP/1.1 ddd
 * reason", status 200-599 but not 204 or 304, header lines of token names and plain
 * printable values ending in CRLF, one Content-Length, no Transfer-Encoding, Upgrade
 * or Proxy-Connection, a Connection header (if any) that says exactly keep-alive, and
 * exactly the body's bytes after the head.  It is a strict subset of what llhttp
 * accepts (tests/unit/test_lane.py checks every acceptance against httptools): what it
 * does not recognise goes to the Python path, which parses it with llhttp. */
static const unsigned char TCHAR[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1,
    ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
    ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1,
    ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1,
    ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1,
    ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1,
    ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1,
    ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

static inline int plain(unsigned char c) { return c == '\t' || (c >= 0x20 && c < 0x7f); }

static int name_is(const char *p, size_t n, const char *lower) {
    size_t k = strlen(lower);
    if (n != k) return 0;
    for (size_t j = 0; j < n; j++) {
        char c = p[j];
        if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
        if (c != lower[j]) return 0;
    }
    return 1;
}

/* 1 and the status and head length when ``p[0:n]`` is one whole response of the shape
 * above, with keep-alive; 0 otherwise (the Python path decides). */
static int frame(const char *p, size_t n, size_t max_head, int *status, size_t *head_len) {
    if (n < 16 || memcmp(p, "HTTP/1.1 ", 9) != 0) return 0;
    unsigned char d0 = (unsigned char)p[9], d1 = (unsigned char)p[10], d2 = (unsigned char)p[11];
    if (d0 < '2' || d0 > '5' || d1 < '0' || d1 > '9' || d2 < '0' || d2 > '9' || p[12] != ' ')
        return 0;
    int code = (d0 - '0') * 100 + (d1 - '0') * 10 + (d2 - '0');
    if (code == 204 || code == 304) return 0;
    size_t at = 13;
    if (at >= n || p[at] == '\r') return 0; /* a reason phrase, at least one character */
    while (at < n && p[at] != '\r') {
        if (!plain((unsigned char)p[at])) return 0;
        at++;
    }
    if (at + 1 >= n || p[at + 1] != '\n') return 0;
    at += 2;
    long long length = -1;
    for (;;) {
        if (at + 1 >= n) return 0;
        if (p[at] == '\r') { /* the empty line: the head ends */
            if (p[at + 1] != '\n') return 0;
            at += 2;
            break;
        }
        size_t name = at;
        while (at < n && TCHAR[(unsigned char)p[at]]) at++;
        if (at == name || at >= n || p[at] != ':') return 0;
        size_t name_len = at - name;
        at++;
        while (at < n && (p[at] == ' ' || p[at] == '\t')) at++;
        size_t value = at;
        while (at < n && p[at] != '\r') {
            if (!plain((unsigned char)p[at])) return 0;
            at++;
        }
        if (at + 1 >= n || p[at + 1] != '\n') return 0;
        size_t end = at;
        while (end > value && (p[end - 1] == ' ' || p[end - 1] == '\t')) end--;
        at += 2;
        const char *np = p + name;
        switch (np[0] | 0x20) { /* only names starting so need a look */
        case 'c':
            if (name_is(np, name_len, "content-length")) {
                if (length >= 0 || end == value || end - value > 15) return 0;
                length = 0;
                for (size_t j = value; j < end; j++) {
                    if (p[j] < '0' || p[j] > '9') return 0;
                    length = length * 10 + (p[j] - '0');
                }
            } else if (name_is(np, name_len, "connection")) {
                if (!name_is(p + value, end - value, "keep-alive")) return 0;
            }
            break;
        case 't':
            if (name_is(np, name_len, "transfer-encoding")) return 0;
            break;
        case 'u':
            if (name_is(np, name_len, "upgrade")) return 0;
            break;
        case 'p':
            if (name_is(np, name_len, "proxy-connection")) return 0;
            break;
        }
    }
    if (length < 0 || at > max_head || (size_t)length != n - at) return 0;
    *status = code;
    *head_len = at;
    return 1;
}

/* Members ---------------------------------------------------------------------------- */
static void drop(Lane *self, int fd) {
    Member *m = &self->members[fd];
    if (m->parked) { /* (rare: a parked member leaves the lane) */
        Target *t = &self->tg[m->t];
        for (int k = 0; k < t->nparked; k++) {
            if (t->parked[k] == fd) {
                t->parked[k] = t->parked[--t->nparked];
                self->nparked--;
                break;
            }
        }
        m->parked = 0;
    }
    Py_CLEAR(m->conn);
    Py_CLEAR(m->client);
    m->dirty = 0;
}

/* Whether o.name is true: 1, 0, or -1 with the exception set. */
static int truth_attr(PyObject *o, PyObject *name) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL) return -1;
    int t = PyObject_IsTrue(v);
    Py_DECREF(v);
    return t;
}

/* o.name as a C integer: 0, or -1 with the exception set. */
static int int_attr(PyObject *o, PyObject *name, long long *out) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL) return -1;
    *out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int set_double(PyObject *o, PyObject *name, double v) {
    PyObject *f = PyFloat_FromDouble(v);
    if (f == NULL) return -1;
    int r = PyObject_SetAttr(o, name, f);
    Py_DECREF(f);
    return r;
}

static int set_ll(PyObject *o, PyObject *name, long long v) {
    PyObject *f = PyLong_FromLongLong(v);
    if (f == NULL) return -1;
    int r = PyObject_SetAttr(o, name, f);
    Py_DECREF(f);
    return r;
}

static double get_double(PyObject *o, PyObject *name, int *err) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL) {
        *err = 1;
        return 0.0;
    }
    double d = PyFloat_AsDouble(v);
    Py_DECREF(v);
    if (d == -1.0 && PyErr_Occurred()) *err = 1;
    return d;
}

/* Write one member's figures back to its Python objects. */
static int sync_member(Lane *self, Member *m) {
    m->dirty = 0;
    PyObject *conn = m->conn;
    if (set_ll(conn, s_requests, m->requests) < 0 ||
        set_double(conn, s_last_used, m->last_used) < 0 ||
        set_double(m->client, s_start, m->start) < 0 ||
        (self->open && set_double(m->client, s_sent_at, m->sent_at) < 0))
        return -1;
    if (m->deadline == 0.0) /* a failed send: disarmed, as response_done leaves it */
        return set_double(conn, s_deadline, 0.0);
    /* The read deadline, as workers.loop.timers re-arms it: a later one is an attribute
     * write (the heap's entry fires early and re-arms), an earlier one or none in the
     * heap is a push. */
    int err = 0;
    double when = get_double(conn, s_heap_when, &err);
    if (err) return -1;
    if (when != 0.0 && m->deadline >= when) return set_double(conn, s_deadline, m->deadline);
    PyObject *r = PyObject_CallFunction(self->arm, "Od", conn, m->deadline);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* Write the members' and the run's figures back to the Python objects: the Python
 * path then sees exactly what it would have written itself, request by request. */
static int sync_all(Lane *self) {
    int rc = 0;
    for (int k = 0; k < self->ndirty; k++) {
        Member *m = &self->members[self->dirty[k]];
        if (m->conn != NULL && m->dirty && sync_member(self, m) < 0) rc = -1;
    }
    self->ndirty = 0;
    if (set_ll(self->run, s_issued, self->issued) < 0) rc = -1;
    if (self->in_flight != self->in_flight_read) {
        if (set_ll(self->run, s_in_flight, self->in_flight) < 0) rc = -1;
        self->in_flight_read = self->in_flight;
    }
    for (int j = 0; j < self->ntg; j++) {
        Target *t = &self->tg[j];
        if (self->cursor != NULL && t->k != t->k_read) {
            PyObject *k = PyLong_FromLongLong(t->k);
            if (k == NULL || PyList_SetItem(self->cursor, j, k) < 0) rc = -1; /* steals k */
            t->k_read = t->k;
        }
        if (t->any_ok) {
            t->any_ok = 0;
            if (set_double(t->target, s_last_ok, t->last_ok) < 0) rc = -1;
        }
    }
    return rc;
}

static void mark(Lane *self, int fd) {
    Member *m = &self->members[fd];
    if (!m->dirty) {
        m->dirty = 1;
        self->dirty[self->ndirty++] = fd;
    }
}

/* Hand ``fd``'s connection to the Python path (its figures written back first) with
 * what was read or went wrong: ``value`` (a new reference) is the bytes read (b"" at
 * EOF), an errno, or how much of a request went out. */
static int take(Lane *self, int fd, const char *kind, PyObject *value) {
    Member *m = &self->members[fd];
    if (value == NULL) return -1;
    int r = m->dirty ? sync_member(self, m) : 0;
    if (r < 0) {
        Py_DECREF(value);
        drop(self, fd);
        return -1;
    }
    PyObject *item = Py_BuildValue("(OsN)", m->conn, kind, value);
    if (item == NULL) {
        r = -1;
    } else {
        r = PyList_Append(self->taken, item);
        Py_DECREF(item);
    }
    drop(self, fd);
    return r;
}

/* The request path ------------------------------------------------------------------ */

/* Each target's spots in one period of the schedule's picks (Schedule.spots): 1 read,
 * 0 not a schedule the lane follows (a target with none), -1 an error. */
static int read_spots(Lane *self, PyObject *sched) {
    PyObject *spots = PyObject_GetAttr(sched, s_spots);
    if (spots == NULL) return -1;
    int rc = PyList_Check(spots) && PyList_GET_SIZE(spots) == self->ntg;
    for (int j = 0; rc == 1 && j < self->ntg; j++) {
        PyObject *mine = PyList_GET_ITEM(spots, j);
        Py_ssize_t n = PyList_Check(mine) ? PyList_GET_SIZE(mine) : 0;
        Target *t = &self->tg[j];
        long long *a = n > 0 ? PyMem_Realloc(t->spots, sizeof(long long) * (size_t)n) : NULL;
        if (a == NULL) {
            if (n > 0) PyErr_NoMemory();
            rc = n > 0 ? -1 : 0;
            break;
        }
        t->spots = a;
        t->nspots = n;
        for (Py_ssize_t r = 0; r < n && rc == 1; r++) {
            a[r] = PyLong_AsLongLong(PyList_GET_ITEM(mine, r));
            if (a[r] == -1 && PyErr_Occurred()) rc = -1;
        }
    }
    Py_DECREF(spots);
    return rc;
}

/* The open loop's schedule, as workers.loop.loadshape.Schedule holds it: 1 read, 0 not one the
 * lane follows, -1 an error.  The spots are read once per schedule (a new rate or a
 * pause makes a new one); the terms and the cursors at every call. */
static int read_schedule(Lane *self, PyObject *sched) {
    int err = 0;
    if (int_attr(sched, s_period, &self->period) < 0) return -1;
    self->base = get_double(sched, s_base, &err);
    self->rate = get_double(sched, s_rate, &err);
    self->ramp = get_double(sched, s_ramp, &err);
    self->end_at = get_double(self->run, s_end_at, &err);
    if (err || int_attr(sched, s_stride, &self->stride) < 0 ||
        int_attr(sched, s_phase, &self->phase) < 0)
        return -1;
    if (self->period < 1) return 0;
    if (sched != self->sched_seen) {
        Py_CLEAR(self->sched_seen);
        int t = self->period == 1 && self->ntg == 1 ? 1 : read_spots(self, sched);
        if (t <= 0) return t;
        self->sched_seen = Py_NewRef(sched);
    }
    PyObject *cursor = PyObject_GetAttr(sched, s_k);
    if (cursor == NULL) return -1;
    if (!PyList_Check(cursor) || PyList_GET_SIZE(cursor) != self->ntg) {
        Py_DECREF(cursor);
        return 0;
    }
    for (int j = 0; j < self->ntg; j++) {
        Target *t = &self->tg[j];
        t->k = PyLong_AsLongLong(PyList_GET_ITEM(cursor, j));
        if (t->k == -1 && PyErr_Occurred()) {
            Py_DECREF(cursor);
            return -1;
        }
        t->k_read = t->k;
    }
    self->cursor = cursor;
    return 1;
}

/* Whether ``t``'s pool and streak let the lane renew its connections (pool.renew's
 * pool-wide inputs, and no failure streak or backoff: the target's next success is then
 * the Python path's, which ends them), and what a parked member's checkout would read:
 * 0, or -1 with the exception set. */
static int read_target(Lane *self, Target *t) {
    long long consec, attempt, size, max_size;
    if (int_attr(t->target, s_consec, &consec) < 0) return -1;
    PyObject *backoff = PyObject_GetAttr(t->pool, s_backoff);
    if (backoff == NULL) return -1;
    int rc = int_attr(backoff, s_attempt, &attempt);
    Py_DECREF(backoff);
    if (rc < 0) return -1;
    PyObject *v = PyObject_GetAttr(t->pool, s_waiters); /* nobody waits */
    if (v == NULL) return -1;
    Py_ssize_t waiters = PyObject_Length(v);
    Py_DECREF(v);
    if (waiters < 0 || int_attr(t->pool, s_size, &size) < 0) return -1;
    PyObject *settings = PyObject_GetAttr(t->pool, s_settings);
    if (settings == NULL) return -1;
    rc = int_attr(settings, s_max_size, &max_size);
    if (rc == 0) rc = int_attr(settings, s_max_requests, &t->max_requests);
    int err = 0;
    if (self->open) {
        t->idle_timeout = get_double(settings, s_idle_timeout, &err);
        t->validate_after = get_double(settings, s_validate_after, &err);
        t->health_after = get_double(settings, s_health_after, &err);
    }
    Py_DECREF(settings);
    if (rc < 0 || err) return -1;
    t->steady = consec == 0 && attempt == 0 && waiters == 0 && size <= max_size;
    return 0;
}

/* Whether the steady state holds for this call (workers.exchange.decide.after_response's run-wide
 * inputs, which only the Python path changes): 1 yes, 0 no, -1 an error.  Each target's
 * own part of it is its ``steady`` (read_target): a member of a target that is not
 * steady goes back to the Python path at its next event. */
static int steady(Lane *self) {
    PyObject *run = self->run;
    static PyObject **falsy[] = {&s_stopping, &s_paused, &s_inject, &s_stop_requested, NULL};
    Py_CLEAR(self->cursor);
    self->open = 0;
    PyObject *v = PyObject_GetAttr(run, s_schedule);
    if (v == NULL) return -1;
    int t;
    if (v != Py_None) { /* open loop: renewed from the schedule when a request is due */
        t = read_schedule(self, v);
        Py_DECREF(v);
        if (t <= 0) return t;
        self->open = 1;
    } else { /* closed loop: while the worker renews (workers.exchange.decide.after_response) */
        Py_DECREF(v);
        t = truth_attr(run, s_keeping);
        if (t <= 0) return t;
    }
    for (int k = 0; falsy[k]; k++) {
        if ((t = truth_attr(run, *falsy[k])) != 0) return t < 0 ? -1 : 0;
    }
    int any = 0;
    for (int j = 0; j < self->ntg; j++) {
        if (read_target(self, &self->tg[j]) < 0) return -1;
        any |= self->tg[j].steady;
    }
    return any;
}

/* A member may be handled here: still BUSY, its client still keeps it and stays. */
static int member_valid(Lane *self, Member *m) {
    PyObject *v = PyObject_GetAttr(m->conn, s_state);
    if (v == NULL) return -1;
    int ok = v == self->busy;
    Py_DECREF(v);
    if (!ok) return 0;
    v = PyObject_GetAttr(m->client, s_conn);
    if (v == NULL) return -1;
    ok = v == m->conn;
    Py_DECREF(v);
    if (!ok) return 0;
    int t = truth_attr(m->client, s_retire);
    return t < 0 ? -1 : !t;
}

/* Read ``fd``'s response: counted and renewed here (the burst sends the next request),
 * or handed to the Python path uncounted.  Follows Responses.readable and
 * Responses.response_done's RENEW path. */
static int on_readable(Lane *self, int fd, Member *m) {
    ssize_t n;
    do {
        n = recv(fd, self->buf, RECV_SIZE, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        return take(self, fd, "error", PyLong_FromLong(errno));
    }
    int status;
    size_t head;
    if (n == 0 || !frame(self->buf, (size_t)n, (size_t)self->max_head, &status, &head))
        return take(self, fd, "data", PyBytes_FromStringAndSize(self->buf, n));
    double now = mono();
    /* the decision before anything is counted: renewed, or the Python path's */
    uint64_t *s = self->s, *w = self->w;
    const Words *i = &self->i;
    Target *t = &self->tg[m->t];
    long long budget = t->max_requests;
    /* open loop: renewed by its target's request due, parked here until it is due
     * (counted now, as the Python path would count it and check the connection in), or
     * the Python path's once nothing more falls due in the run */
    double next = self->open ? due_of(self, t) : 0.0;
    int park = self->open && next > now;
    if ((self->open && self->end_at != 0.0 && next >= self->end_at) ||
        !self->success[status] || (status >= 500 && self->count_5xx) ||
        (double)self->issued >= self->issue_cap || (w[t->breaker_word] & i->code_mask) ||
        (budget && m->requests + 1 >= budget) || (m->expires != 0.0 && now >= m->expires))
        return take(self, fd, "data", PyBytes_FromStringAndSize(self->buf, n));
    long long us = (long long)((now - m->start) * 1000000.0);
    if (us < 0) us = 0; /* (a monotonic clock: never) */
    s[i->bytes_in] += (uint64_t)n;
    s[i->status_base + status] += 1;
    s[i->lat_sum] += (uint64_t)us;
    if ((uint64_t)us > s[i->lat_max]) s[i->lat_max] = (uint64_t)us;
    s[i->hist_base + bucket_of(us)] += 1;
    if (self->open) { /* also from the actual send (uncorrected) */
        long long raw = (long long)((now - m->sent_at) * 1000000.0);
        if (raw < 0) raw = 0;
        s[i->hist2_base + bucket_of(raw)] += 1;
        if ((uint64_t)raw > s[i->lat2_max]) s[i->lat2_max] = (uint64_t)raw;
    }
    s[i->req_ok] += 1;
    w[t->ok_word] += 1;
    if (t->resp_ok >= 0) { /* several targets: the target's own figures too */
        w[t->resp_ok] += 1;
        w[t->hist + bucket_of(us)] += 1;
    }
    t->last_ok = now;
    t->any_ok = 1;
    m->requests += 1;
    m->last_used = now;
    m->deadline = 0.0; /* disarmed until its next request goes */
    self->handled += 1;
    mark(self, fd);
    if (park) { /* the request is over; the connection waits for the next one due */
        m->parked = 1;
        t->parked[t->nparked++] = fd;
        self->nparked++;
        self->in_flight -= 1;
        return 0;
    }
    if (self->open) { /* the oldest request due takes the connection */
        m->start = next;
        t->k += 1;
    }
    self->issued += 1;
    self->burst[self->nburst++] = fd;
    return 0;
}

/* Open loop: give the requests that are due to parked members, target by target in
 * index order and the last parked first, as Backlog.fire_due and the pool's checkout
 * would (a LIFO idle list, nothing to probe or check). A member that the pool would
 * probe, check or evict first (idle too long, worn) goes back to the Python path,
 * which does. Returns 1 when one did. */
static int fire_target(Lane *self, Target *t, double now) {
    int back = 0;
    const Words *i = &self->i;
    while (t->nparked > 0) {
        double next = due_of(self, t);
        if (next > now || (self->end_at != 0.0 && next >= self->end_at) ||
            (double)self->issued >= self->issue_cap || (self->w[t->breaker_word] & i->code_mask))
            break;
        int fd = t->parked[--t->nparked];
        self->nparked--;
        Member *m = &self->members[fd];
        m->parked = 0;
        int valid = member_valid(self, m);
        if (valid <= 0) { /* closed by the Python path meanwhile: not ours any more */
            drop(self, fd);
            if (valid < 0) return -1;
            continue;
        }
        double idle_for = now - m->last_used;
        if ((t->idle_timeout > 0 && idle_for >= t->idle_timeout) ||
            (t->health_after > 0 && idle_for >= t->health_after) ||
            idle_for >= t->validate_after || (m->expires != 0.0 && now >= m->expires)) {
            if (take(self, fd, "parked", Py_NewRef(Py_None)) < 0) return -1;
            back = 1;
            continue;
        }
        m->start = next;
        t->k += 1;
        self->issued += 1;
        self->in_flight += 1;
        mark(self, fd);
        self->burst[self->nburst++] = fd;
    }
    return back;
}

static int fire_parked(Lane *self, double now) {
    int back = 0;
    for (int j = 0; j < self->ntg; j++) {
        if (self->tg[j].nparked == 0) continue;
        int r = fire_target(self, &self->tg[j], now);
        if (r < 0) return -1;
        back |= r;
    }
    return back;
}

/* Hand ``t``'s parked members back to the Python path (the steady state ended, for the
 * run or for the target); one the Python path closed meanwhile is only forgotten. */
static int unpark_target(Lane *self, Target *t) {
    while (t->nparked > 0) {
        int fd = t->parked[t->nparked - 1];
        int valid = member_valid(self, &self->members[fd]);
        if (valid < 0) return -1;
        if (!valid) {
            drop(self, fd);
        } else if (take(self, fd, "parked", Py_NewRef(Py_None)) < 0) {
            return -1;
        }
    }
    return 0;
}

static int unpark_all(Lane *self) {
    for (int j = 0; j < self->ntg; j++)
        if (unpark_target(self, &self->tg[j]) < 0) return -1;
    return 0;
}

/* The burst: the renewed requests, back to back (Requests._send with ``stamp``). */
static int send_burst(Lane *self) {
    if (self->nburst == 0) return 0;
    uint64_t *s = self->s;
    const Words *i = &self->i;
    uint64_t sent = s[i->req_sent];
    uint64_t out = 0;
    int rc = 0;
    double deadline = mono() + self->read_timeout;
    s[i->sending] = 1;
    for (int k = 0; k < self->nburst; k++) {
        int fd = self->burst[k];
        Member *m = &self->members[fd];
        if (!self->open) {
            m->start = mono(); /* closed loop: latency from its own send */
        } else { /* open loop: from its intended time; how late it went */
            double now = mono(), lag = now - m->start;
            m->sent_at = now;
            if (lag > LATE) {
                s[i->late] += 1;
                if (lag * 1e6 > (double)s[i->lag_max]) s[i->lag_max] = (uint64_t)(lag * 1e6);
            }
        }
        sent += 1;
        s[i->req_sent] = sent; /* counted before the send that writes its last byte */
        const Target *t = &self->tg[m->t];
        ssize_t n;
        do {
            n = send(fd, t->req, (size_t)t->req_size, 0);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                sent -= 1;
                s[i->req_sent] = sent;
                if (take(self, fd, "send_error", PyLong_FromLong(errno)) < 0) rc = -1;
                continue;
            }
            n = 0;
        }
        out += (uint64_t)n;
        m->deadline = deadline;
        if (n != t->req_size) { /* the rest goes when the socket is writable */
            sent -= 1;
            s[i->req_sent] = sent;
            if (take(self, fd, "partial", PyLong_FromSsize_t(n)) < 0) rc = -1;
        }
    }
    s[i->sending] = 0;
    s[i->reused] += (uint64_t)self->nburst;
    s[i->bytes_out] += out;
    self->nburst = 0;
    return rc;
}

static void drop_all(Lane *self) {
    for (int fd = 0; fd < self->cap; fd++)
        if (self->members[fd].conn != NULL) drop(self, fd);
    self->ndirty = 0;
}

static int grow(Lane *self, int fd) {
    if (fd < self->cap) return 0;
    int cap = self->cap ? self->cap : 64;
    while (cap <= fd) cap *= 2;
    Member *members = PyMem_Realloc(self->members, sizeof(Member) * (size_t)cap);
    if (members == NULL) return -1;
    memset(members + self->cap, 0, sizeof(Member) * (size_t)(cap - self->cap));
    self->members = members;
    int *dirty = PyMem_Realloc(self->dirty, sizeof(int) * (size_t)cap);
    if (dirty == NULL) return -1;
    self->dirty = dirty;
    int *burst = PyMem_Realloc(self->burst, sizeof(int) * (size_t)cap);
    if (burst == NULL) return -1;
    self->burst = burst;
    for (int j = 0; j < self->ntg; j++) { /* each target's stack holds all its members */
        int *parked = PyMem_Realloc(self->tg[j].parked, sizeof(int) * (size_t)cap);
        if (parked == NULL) return -1;
        self->tg[j].parked = parked;
    }
    self->cap = cap;
    return 0;
}

/* Wait for events until ``until`` (monotonic), to the nanosecond where the kernel has
 * epoll_pwait2 (a parked member's request is due at an instant, not a millisecond),
 * else rounded up to epoll_wait's milliseconds. ``spin``: busy-poll for self->spin
 * first (see Lane_poll). No Python API: called with the GIL released. */
static int have_pwait2 = 1;

static int wait_events(Lane *self, double now, double until, int spin) {
    int n = 0;
    if (spin && self->spin > 0 && until > now) {
        double spin_until = now + self->spin < until ? now + self->spin : until;
        do {
            n = epoll_wait(self->ep, self->evs, MAX_EVENTS, 0);
        } while (n == 0 && mono() < spin_until);
        if (n != 0 || until <= spin_until) return n; /* waited enough */
        now = mono();                               /* what is left of the timeout */
    }
    double left = until > now ? until - now : 0.0;
#ifdef SYS_epoll_pwait2
    if (have_pwait2) {
        struct timespec ts;
        ts.tv_sec = (time_t)left;
        ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
        n = (int)syscall(SYS_epoll_pwait2, self->ep, self->evs, MAX_EVENTS, &ts, NULL, 0);
        if (n >= 0 || errno != ENOSYS) return n;
        have_pwait2 = 0; /* an older kernel: milliseconds from here on */
    }
#endif
    double ms = ceil(left * 1000.0);
    return epoll_wait(self->ep, self->evs, MAX_EVENTS, ms > 2147483647.0 ? 2147483647 : (int)ms);
}

/* The Lane object ------------------------------------------------------------------- */

static PyObject *Lane_poll(Lane *self, PyObject *arg) {
    double timeout = PyFloat_AsDouble(arg);
    if (timeout == -1.0 && PyErr_Occurred()) return NULL;
    if (self->ep < 0) {
        PyErr_SetString(PyExc_ValueError, "the lane is closed");
        return NULL;
    }
    int active = steady(self);
    if (active < 0) return NULL;
    if (!active) { /* in sync since the last return: nothing to write */
        if (unpark_all(self) < 0) return NULL; /* the parked go back to be checked in */
        drop_all(self);
    }
    for (int j = 0; active && j < self->ntg; j++) /* a target's streak, backoff or waiter */
        if (!self->tg[j].steady && unpark_target(self, &self->tg[j]) < 0) return NULL;
    if (int_attr(self->run, s_issued, &self->issued) < 0) return NULL;
    if (self->open && int_attr(self->run, s_in_flight, &self->in_flight) < 0) return NULL;
    self->in_flight_read = self->in_flight; /* (parking changes it: the open loop only) */
    PyObject *v = PyObject_GetAttr(self->run, s_issue_cap);
    if (v == NULL) return NULL;
    self->issue_cap = PyFloat_AsDouble(v);
    Py_DECREF(v);
    if (PyErr_Occurred()) return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    double now = mono(), until = now + (timeout > 0 ? timeout : 0);
    if (PyList_GET_SIZE(self->taken)) until = now; /* handed back: the Python path's turn */
    int failed = 0;
    for (;;) {
        /* a parked member: wake when its request is due */
        double wake = until;
        for (int j = 0; self->nparked > 0 && j < self->ntg; j++) {
            if (self->tg[j].nparked == 0) continue;
            double next = due_of(self, &self->tg[j]);
            if (next < wake) wake = next;
        }
        /* Busy polling (busy_poll_us): non-blocking waits for a while before a blocking
         * one, while the steady state holds, so that a response arriving soon finds
         * this worker awake: waking a sleeper costs the target's core (workers/lane/fastpath.py).
         * Not while a member is parked: the open loop is ahead of its schedule, and a
         * spin between requests would cost more (measured: 52 against 30 us of CPU per
         * request at 20,000/s) than the target's wakeups it saves. */
        int n;
        double began = now;
        Py_BEGIN_ALLOW_THREADS
        n = wait_events(self, now, wake, active && self->nparked == 0);
        self->waited += mono() - began;
        Py_END_ALLOW_THREADS
        if (n < 0) {
            if (errno != EINTR) {
                PyErr_SetFromErrno(PyExc_OSError);
                failed = 1;
            } else if (PyErr_CheckSignals() < 0) {
                failed = 1;
            }
            break; /* a signal: the loop acts on what its handler recorded */
        }
        for (int k = 0; k < n && !failed; k++) {
            int fd = self->evs[k].data.fd;
            uint32_t ev = self->evs[k].events;
            Member *m = fd < self->cap ? &self->members[fd] : NULL;
            if (m != NULL && m->conn != NULL && m->parked) {
                /* bytes, EOF or an error on an idle connection: checked in first, the
                 * Python path then sees the event (level-triggered: it is still there) */
                if (take(self, fd, "parked", Py_NewRef(Py_None)) < 0) failed = 1;
                continue;
            }
            if (m != NULL && m->conn != NULL) {
                int valid = (ev & EPOLLOUT) || !self->tg[m->t].steady ? 0 : member_valid(self, m);
                if (valid < 0) {
                    failed = 1;
                    break;
                }
                if (valid) {
                    if (on_readable(self, fd, m) < 0) failed = 1;
                    continue;
                }
                if (m->dirty && sync_member(self, m) < 0) failed = 1;
                drop(self, fd); /* the Python path's now */
            }
            PyObject *item = Py_BuildValue("(iI)", fd, ev);
            if (item == NULL || PyList_Append(out, item) < 0) failed = 1;
            Py_XDECREF(item);
        }
        if (!failed && self->nparked > 0 && fire_parked(self, mono()) < 0) failed = 1;
        if (send_burst(self) < 0) failed = 1;
        if (failed || PyList_GET_SIZE(out) || PyList_GET_SIZE(self->taken)) break;
        now = mono();
        if (now >= until) break;
        if (PyErr_CheckSignals() < 0) {
            failed = 1;
            break;
        }
        int stop = truth_attr(self->run, s_stop_requested);
        if (stop < 0) failed = 1;
        if (stop) break;
    }
    /* Every member's figures go back before the Python path runs. */
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    int synced = sync_all(self);
    if (failed) {
        if (synced < 0) PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        Py_DECREF(out);
        return NULL;
    }
    if (synced < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

static PyObject *Lane_admit(Lane *self, PyObject *batch) {
    PyObject *seq = PySequence_Fast(batch, "admit() takes a sequence of clients");
    if (seq == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    long admitted = 0;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *client = PySequence_Fast_GET_ITEM(seq, k);
        PyObject *conn = PyObject_GetAttr(client, s_conn);
        if (conn == NULL) goto fail;
        if (conn == Py_None) {
            Py_DECREF(conn);
            continue;
        }
        PyObject *state = PyObject_GetAttr(conn, s_state);
        PyObject *cstate = PyObject_GetAttr(client, s_state);
        PyObject *out = PyObject_GetAttr(conn, s_out);
        PyObject *fdo = PyObject_GetAttr(conn, s_fd);
        /* a re-sent request (retried) or a breaker trial stays the Python path's: the
         * lane's renewals leave both as a renewal in the Python path sets them */
        PyObject *retried = PyObject_GetAttr(client, s_retried);
        PyObject *trial = PyObject_GetAttr(client, s_trial);
        PyObject *to = PyObject_GetAttr(conn, s_target);
        long tix = to != NULL && PyLong_Check(to) ? PyLong_AsLong(to) : -1;
        int ok = state == self->busy && cstate == self->sending_state && out == Py_None &&
                 fdo != NULL && retried == Py_False && trial != NULL && PyLong_Check(trial) &&
                 PyLong_AsLong(trial) == 0 && tix >= 0 && tix < self->ntg;
        Py_XDECREF(retried);
        Py_XDECREF(trial);
        Py_XDECREF(to);
        long fd = ok ? PyLong_AsLong(fdo) : -1;
        Py_XDECREF(state);
        Py_XDECREF(cstate);
        Py_XDECREF(out);
        Py_XDECREF(fdo);
        if (PyErr_Occurred() || !ok || fd < 0 || fd > 1 << 24 || grow(self, (int)fd) < 0) {
            Py_DECREF(conn);
            if (PyErr_Occurred()) goto fail;
            continue;
        }
        Member *m = &self->members[fd];
        if (m->conn != NULL) drop(self, (int)fd); /* a closed one whose fd was reused */
        int err = 0;
        m->start = get_double(client, s_start, &err);
        m->sent_at = get_double(client, s_sent_at, &err);
        m->deadline = get_double(conn, s_deadline, &err);
        m->last_used = get_double(conn, s_last_used, &err);
        m->expires = get_double(conn, s_expires, &err);
        if (err || int_attr(conn, s_requests, &m->requests) < 0) {
            Py_DECREF(conn);
            goto fail;
        }
        m->conn = conn; /* the reference taken by GetAttr */
        Py_INCREF(client);
        m->client = client;
        m->dirty = 0;
        m->t = (int)tix;
        admitted++;
    }
    Py_DECREF(seq);
    return PyLong_FromLong(admitted);
fail:
    Py_DECREF(seq);
    return NULL;
}

static PyObject *Lane_unpark(Lane *self, PyObject *Py_UNUSED(ignored)) {
    if (unpark_all(self) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Lane_take(Lane *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *taken = self->taken;
    if (PyList_GET_SIZE(taken) == 0) return PyList_New(0);
    PyObject *fresh = PyList_New(0);
    if (fresh == NULL) return NULL;
    self->taken = fresh;
    return taken;
}

static long count_members(Lane *self) {
    long count = 0;
    for (int fd = 0; fd < self->cap; fd++) count += self->members[fd].conn != NULL;
    return count;
}

static PyObject *Lane_members(Lane *self, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromLong(count_members(self));
}

static void release(Lane *self) {
    if (self->members != NULL) drop_all(self);
    if (self->have_bufs) {
        PyBuffer_Release(&self->slot_buf);
        PyBuffer_Release(&self->words_buf);
        self->have_bufs = 0;
    }
    self->ep = -1;
}

static PyObject *Lane_close(Lane *self, PyObject *Py_UNUSED(ignored)) {
    release(self); /* the epoll fd is the loop's: not closed here */
    Py_RETURN_NONE;
}

static int get_index(PyObject *map, const char *name, Py_ssize_t *out) {
    PyObject *v = PyMapping_GetItemString(map, name);
    if (v == NULL) return -1;
    *out = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int in_slot(const Words *i, Py_ssize_t slot_words) {
    Py_ssize_t words[] = {i->lat_sum, i->lat_max, i->req_ok, i->req_sent, i->sending,
                          i->bytes_in, i->bytes_out, i->reused, i->lat2_max, i->late,
                          i->lag_max};
    for (size_t k = 0; k < sizeof words / sizeof words[0]; k++)
        if (words[k] < 0 || words[k] >= slot_words) return 0;
    return 1;
}

/* Target ``j`` of the lane from its Target object (workers.pool.target.Target): 0, or -1
 * with the exception set (an index out of the region's range: ValueError). */
static int init_target(Lane *self, int j, PyObject *target, Py_ssize_t all_words) {
    Target *t = &self->tg[j];
    long long breaker, ok, block, hist;
    int own = truth_attr(target, s_own);
    if (own < 0 || int_attr(target, s_breaker_word, &breaker) < 0 ||
        int_attr(target, s_ok_word, &ok) < 0 || int_attr(target, s_block, &block) < 0 ||
        int_attr(target, s_hist, &hist) < 0)
        return -1;
    t->target = Py_NewRef(target);
    t->pool = PyObject_GetAttr(target, s_pool);
    t->request = PyObject_GetAttr(target, s_request);
    if (t->pool == NULL || t->request == NULL) return -1;
    if (!PyBytes_Check(t->request)) {
        PyErr_SetString(PyExc_TypeError, "a target's request: bytes");
        return -1;
    }
    t->req = PyBytes_AS_STRING(t->request);
    t->req_size = PyBytes_GET_SIZE(t->request);
    t->breaker_word = (Py_ssize_t)breaker;
    t->ok_word = (Py_ssize_t)ok;
    t->resp_ok = own ? (Py_ssize_t)(block + self->i.t_resp_ok) : -1;
    t->hist = own ? (Py_ssize_t)hist : -1;
    t->parked = PyMem_Malloc(sizeof(int) * (size_t)self->cap);
    if (t->parked == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (breaker < 0 || breaker >= all_words || ok < 0 || ok >= all_words ||
        (own && (t->resp_ok < 0 || t->resp_ok >= all_words || hist < 0 ||
                 hist + BUCKETS > all_words))) {
        PyErr_SetString(PyExc_ValueError, "a target's words: indexes in range");
        return -1;
    }
    return 0;
}

static int Lane_init(Lane *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"ep", "slot", "words", "index", "success", "count_5xx",
                             "max_head", "read_timeout", "run", "targets", "arm", "busy",
                             "sending", "spin", NULL};
    int ep, count_5xx;
    PyObject *slot, *words, *index, *run, *targets, *arm, *busy, *sending;
    Py_buffer success;
    Py_ssize_t max_head;
    double read_timeout, spin = 0.0;
    if (self->ep >= 0 || self->have_bufs || self->tg != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a lane is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iOOOy*pndOOOOO|d", kwlist, &ep, &slot,
                                     &words, &index, &success, &count_5xx, &max_head,
                                     &read_timeout, &run, &targets, &arm, &busy, &sending,
                                     &spin))
        return -1;
    int bad = success.len != 600;
    if (!bad) memcpy(self->success, success.buf, 600);
    PyBuffer_Release(&success);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "success: one byte per status 0-599");
        return -1;
    }
    Py_ssize_t code_mask;
    Words *i = &self->i;
    if (get_index(index, "status_base", &i->status_base) < 0 ||
        get_index(index, "lat_sum", &i->lat_sum) < 0 ||
        get_index(index, "lat_max", &i->lat_max) < 0 ||
        get_index(index, "hist_base", &i->hist_base) < 0 ||
        get_index(index, "hist2_base", &i->hist2_base) < 0 ||
        get_index(index, "lat2_max", &i->lat2_max) < 0 ||
        get_index(index, "late", &i->late) < 0 ||
        get_index(index, "lag_max", &i->lag_max) < 0 ||
        get_index(index, "req_ok", &i->req_ok) < 0 ||
        get_index(index, "req_sent", &i->req_sent) < 0 ||
        get_index(index, "sending", &i->sending) < 0 ||
        get_index(index, "bytes_in", &i->bytes_in) < 0 ||
        get_index(index, "bytes_out", &i->bytes_out) < 0 ||
        get_index(index, "reused", &i->reused) < 0 ||
        get_index(index, "t_resp_ok", &i->t_resp_ok) < 0 ||
        get_index(index, "code_mask", &code_mask) < 0)
        return -1;
    i->code_mask = (uint64_t)code_mask;
    if (PyObject_GetBuffer(slot, &self->slot_buf, PyBUF_CONTIG | PyBUF_FORMAT) < 0) return -1;
    if (PyObject_GetBuffer(words, &self->words_buf, PyBUF_CONTIG | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&self->slot_buf);
        return -1;
    }
    self->have_bufs = 1;
    Py_ssize_t slot_words = self->slot_buf.len / 8, all_words = self->words_buf.len / 8;
    if (self->slot_buf.itemsize != 8 || self->words_buf.itemsize != 8 ||
        !PyBuffer_IsContiguous(&self->slot_buf, 'C') ||
        !PyBuffer_IsContiguous(&self->words_buf, 'C') ||
        i->hist_base < 0 || i->hist_base + BUCKETS > slot_words || i->hist2_base < 0 ||
        i->hist2_base + BUCKETS > slot_words || i->status_base < 0 ||
        i->status_base + 600 > slot_words || !in_slot(i, slot_words)) {
        release(self);
        PyErr_SetString(PyExc_ValueError, "slot or words: 8-byte words, indexes in range");
        return -1;
    }
    PyObject *seq = PySequence_Fast(targets, "targets: a sequence of targets");
    if (seq == NULL) {
        release(self);
        return -1;
    }
    Py_ssize_t ntg = PySequence_Fast_GET_SIZE(seq);
    self->tg = ntg > 0 && ntg < 1 << 16 ? PyMem_Calloc((size_t)ntg, sizeof(Target)) : NULL;
    if (self->tg == NULL) {
        Py_DECREF(seq);
        release(self);
        if (ntg > 0 && ntg < 1 << 16)
            PyErr_NoMemory();
        else
            PyErr_SetString(PyExc_ValueError, "targets: one at least");
        return -1;
    }
    self->ntg = (int)ntg;
    for (int j = 0; j < self->ntg; j++) {
        if (init_target(self, j, PySequence_Fast_GET_ITEM(seq, j), all_words) < 0) {
            Py_DECREF(seq);
            release(self);
            return -1;
        }
    }
    Py_DECREF(seq);
    self->s = self->slot_buf.buf;
    self->w = self->words_buf.buf;
    self->ep = ep;
    self->count_5xx = count_5xx;
    self->max_head = max_head;
    self->read_timeout = read_timeout;
    self->spin = spin > 0 ? spin : 0.0;
    self->run = Py_NewRef(run);
    self->arm = Py_NewRef(arm);
    self->busy = Py_NewRef(busy);
    self->sending_state = Py_NewRef(sending);
    return 0;
}

static PyObject *Lane_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kw)) {
    Lane *self = (Lane *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->ep = -1;
    self->taken = PyList_New(0);
    self->buf = PyMem_Malloc(RECV_SIZE);
    self->evs = PyMem_Malloc(sizeof(struct epoll_event) * MAX_EVENTS);
    if (self->taken == NULL || self->buf == NULL || self->evs == NULL || grow(self, 255) < 0) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void free_targets(Lane *self) {
    for (int j = 0; self->tg != NULL && j < self->ntg; j++) {
        Target *t = &self->tg[j];
        Py_XDECREF(t->target);
        Py_XDECREF(t->pool);
        Py_XDECREF(t->request);
        PyMem_Free(t->spots);
        PyMem_Free(t->parked);
    }
    PyMem_Free(self->tg);
    self->tg = NULL;
    self->ntg = 0;
}

static void Lane_dealloc(Lane *self) {
    release(self);
    free_targets(self);
    PyMem_Free(self->members);
    PyMem_Free(self->dirty);
    PyMem_Free(self->burst);
    PyMem_Free(self->buf);
    PyMem_Free(self->evs);
    Py_XDECREF(self->taken);
    Py_XDECREF(self->run);
    Py_XDECREF(self->arm);
    Py_XDECREF(self->busy);
    Py_XDECREF(self->sending_state);
    Py_XDECREF(self->cursor);
    Py_XDECREF(self->sched_seen);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Lane_repr(Lane *self) {
    long count = count_members(self);
    return PyUnicode_FromFormat("<Lane ep=%d members=%ld handled=%lld spin=%ldus>", self->ep,
                                count, self->handled, (long)(self->spin * 1e6));
}

static PyObject *Lane_get_handled(Lane *self, void *Py_UNUSED(closure)) {
    return PyLong_FromLongLong(self->handled);
}

static PyMethodDef Lane_methods[] = {
    {"poll", (PyCFunction)Lane_poll, METH_O,
     "poll(timeout) -> [(fd, events)]: epoll.poll's contract, for the events the lane "
     "leaves to the Python path; the members' responses are handled and renewed here."},
    {"admit", (PyCFunction)Lane_admit, METH_O,
     "admit(clients) -> int: take the clients whose renewed request just went out whole."},
    {"unpark", (PyCFunction)Lane_unpark, METH_NOARGS,
     "unpark(): hand every parked member back (take() then has them, kind 'parked')."},
    {"take", (PyCFunction)Lane_take, METH_NOARGS,
     "take() -> [(conn, kind, value)]: connections handed back, with what happened."},
    {"members", (PyCFunction)Lane_members, METH_NOARGS, "members() -> int"},
    {"close", (PyCFunction)Lane_close, METH_NOARGS, "close(): drop every member."},
    {NULL, NULL, 0, NULL},
};

static PyObject *Lane_get_parked(Lane *self, void *Py_UNUSED(closure)) {
    return PyLong_FromLong(self->nparked);
}

static PyObject *Lane_get_waited(Lane *self, void *Py_UNUSED(closure)) {
    return PyFloat_FromDouble(self->waited);
}

static PyObject *Lane_get_spin(Lane *self, void *Py_UNUSED(closure)) {
    return PyFloat_FromDouble(self->spin);
}

static int Lane_set_spin(Lane *self, PyObject *value, void *Py_UNUSED(closure)) {
    double spin = value == NULL ? 0.0 : PyFloat_AsDouble(value);
    if (spin == -1.0 && PyErr_Occurred()) return -1;
    self->spin = spin > 0 ? spin : 0.0;
    return 0;
}

static PyGetSetDef Lane_getset[] = {
    {"handled", (getter)Lane_get_handled, NULL, "responses handled by the lane", NULL},
    {"parked", (getter)Lane_get_parked, NULL,
     "open loop: members waiting for a request to fall due (idle, to the pool)", NULL},
    {"waited", (getter)Lane_get_waited, NULL,
     "seconds spent waiting for events (epoll_wait and the spin)", NULL},
    {"spin", (getter)Lane_get_spin, (setter)Lane_set_spin,
     "seconds of busy polling before a blocking wait (0: none)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "workers.lane._lane.Lane",
    .tp_basicsize = sizeof(Lane),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The request path's steady state in C (see workers/lane/fastpath.py).",
    .tp_new = Lane_new,
    .tp_init = (initproc)Lane_init,
    .tp_dealloc = (destructor)Lane_dealloc,
    .tp_repr = (reprfunc)Lane_repr,
    .tp_methods = Lane_methods,
    .tp_getset = Lane_getset,
};

/* Module functions, for the tests that hold the lane to the Python path. */
static PyObject *py_frame(PyObject *Py_UNUSED(mod), PyObject *args) {
    Py_buffer data;
    Py_ssize_t max_head;
    if (!PyArg_ParseTuple(args, "y*n", &data, &max_head)) return NULL;
    int status;
    size_t head;
    int ok = frame(data.buf, (size_t)data.len, (size_t)max_head, &status, &head);
    PyBuffer_Release(&data);
    if (!ok) Py_RETURN_NONE;
    return Py_BuildValue("(in)", status, (Py_ssize_t)head);
}

static PyObject *py_bucket_of(PyObject *Py_UNUSED(mod), PyObject *arg) {
    long long v = PyLong_AsLongLong(arg);
    if (v == -1 && PyErr_Occurred()) return NULL;
    return PyLong_FromSsize_t(bucket_of(v));
}

static PyMethodDef module_methods[] = {
    {"frame", py_frame, METH_VARARGS,
     "frame(data, max_head) -> (status, head_len) | None: the lane's framer."},
    {"bucket_of", py_bucket_of, METH_O, "bucket_of(us) -> int: the lane's histogram bucket."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "workers.lane._lane", "The request path's steady state in C.", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

#define INTERN(var, text) \
    if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL

PyMODINIT_FUNC PyInit__lane(void) {
    INTERN(s_state, "state");
    INTERN(s_retire, "retire");
    INTERN(s_conn, "conn");
    INTERN(s_fd, "fd");
    INTERN(s_out, "out");
    INTERN(s_requests, "requests");
    INTERN(s_deadline, "deadline");
    INTERN(s_last_used, "last_used");
    INTERN(s_expires, "expires");
    INTERN(s_start, "start");
    INTERN(s_heap_when, "heap_when");
    INTERN(s_keeping, "keeping");
    INTERN(s_stopping, "stopping");
    INTERN(s_paused, "paused");
    INTERN(s_schedule, "schedule");
    INTERN(s_inject, "inject_requests");
    INTERN(s_stop_requested, "stop_requested");
    INTERN(s_issued, "issued");
    INTERN(s_issue_cap, "issue_cap");
    INTERN(s_consec, "consec");
    INTERN(s_backoff, "backoff");
    INTERN(s_attempt, "attempt");
    INTERN(s_waiters, "waiters");
    INTERN(s_size, "size");
    INTERN(s_max_size, "max_size");
    INTERN(s_max_requests, "max_requests");
    INTERN(s_settings, "settings");
    INTERN(s_last_ok, "last_ok");
    INTERN(s_retried, "retried");
    INTERN(s_trial, "trial");
    INTERN(s_sent_at, "sent_at");
    INTERN(s_base, "base");
    INTERN(s_rate, "rate");
    INTERN(s_ramp, "ramp");
    INTERN(s_stride, "stride");
    INTERN(s_phase, "phase");
    INTERN(s_k, "k");
    INTERN(s_period, "period");
    INTERN(s_end_at, "end_at");
    INTERN(s_in_flight, "in_flight");
    INTERN(s_idle_timeout, "idle_timeout");
    INTERN(s_validate_after, "validate_after");
    INTERN(s_health_after, "health_after");
    INTERN(s_spots, "spots");
    INTERN(s_target, "target");
    INTERN(s_pool, "pool");
    INTERN(s_request, "request");
    INTERN(s_breaker_word, "breaker_word");
    INTERN(s_ok_word, "ok_word");
    INTERN(s_own, "own");
    INTERN(s_block, "block");
    INTERN(s_hist, "hist");
    if (PyType_Ready(&LaneType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&LaneType);
    if (PyModule_AddObject(m, "Lane", (PyObject *)&LaneType) < 0) {
        Py_DECREF(&LaneType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
