/* The simulator's hot path compiled: the event loop, the workers' continuous batching, the links and the
 * coordinator's per-token cycle (sink, metrics, next iteration), for the runs simulator.fast_engine accepts.
 * It is the same model as simulator/engine.py, worker.py, forwarding.py, arrivals.py and the token path of
 * coordinator.py, step for step: the same events in the same order with the same sequence numbers and the
 * same floating-point operations, so a run gives the same figures bit for bit (tests/simulator/
 * test_fast_engine.py runs both). Admission, routing, KV books and feeding stay in Python: they run once
 * per query, not once per token and hop. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { EV_WAKE = 0, EV_FINISH = 1, EV_SINK = 2, EV_ISSUE = 3, EV_PY = 4 };

typedef struct {
    double t;
    long long seq;
    int kind;
    int a;
    double x;
    PyObject *fn;   /* EV_PY: owned */
    PyObject *args; /* EV_PY: owned tuple */
} Event;

/* A query as a worker's batching sees it: what the limits read, so that batching touches no Query. */
typedef struct {
    int slot;
    int prompt;        /* iteration 0 */
    long long need;    /* the prompt's input length, or a decode's context */
    long long seq_len; /* tokens this iteration carries (the first layer's CPU cost) */
} Item;

typedef struct {
    double t;
    long long qid;
    int entry;
    Item item;
} Pend;

typedef struct {
    Item *v;
    int n, cap;
} IntVec;

typedef struct {
    int w, entry, link, layers;
} Hop;

typedef struct {
    double *v;
    int n;
} Tab; /* a lazily filled table of step seconds; NaN: not asked yet */

typedef struct {
    int nseg;
    int *seg_layers;
    IntVec *queues;
    int pointer, busy, carried;
    IntVec batch;
    int batch_seg;
    long long batch_tokens, batch_pt, batch_np, batch_ctx;
    Pend *pend;
    int npend, cappend;
    int has_wake;
    double wake_at;
    long long cpu_tokens, kv_real, kv_real_peak;
    long long pmax_r, pmax_t, dmax_s, dmax_c;
    double cpu_s_per_token, step_overhead_s, busy_s;
    long long steps, decode_seqs, prompt_tokens;
    int tables; /* index into Core.tables */
} Worker;

/* A profile's step seconds, shared by the workers of that GPU type (and head or none). */
typedef struct {
    PyObject *pfun, *dfun, *hfun; /* owned; hfun may be NULL (no LM head) */
    Tab ptab, dtab, htab;
} Tables;

typedef struct {
    double s_per_token, latency_s, free_at;
} Link;

typedef struct {
    double **load; /* into an IWRR table's loads (an array('d') whose buffer the core holds) */
    double *inv;
    int n;
} Account;

typedef struct {
    /* What every hop reads first, in one cache line (queries are read in random order: each line a wait) */
    int hop_i, nhops;
    Hop *route;
    long long qid, seq_len, iteration, input_len, context;
    int sink_link, live;
    /* what the sink reads */
    long long output_len;
    double t_issue, t_arrive;
    Account acct;
    PyObject *on_decode; /* owned or NULL */
    PyObject *obj;       /* owned: handed to on_finish */
} __attribute__((aligned(64))) Query;

typedef struct {
    long long *counts;
    long long n;
    double total;
} Hist;

#define LO_S 1e-5
#define GROWTH 1.002

typedef struct {
    PyObject_HEAD double now;
    long long seq, handled;
    Event *heap;
    int nheap, capheap;
    Worker *workers;
    int nworkers, capworkers;
    Tables *tables;
    int ntables, captables;
    Link *links;
    int nlinks, caplinks;
    Query *queries;
    int nqueries, capqueries;
    int *free_slots;
    int nfree, capfree;
    PyObject *on_finish, *on_prompt_done; /* owned or NULL */
    /* The loads arrays the max-flow accounting writes: their buffers, held (so none can be resized) */
    PyObject *held;                       /* dict: array -> index into views */
    Py_buffer *views;
    int nviews, capviews;
    /* metrics */
    double ws, we, bin_s, inv_log;
    int nbins;
    long long total_tokens, total_decode_tokens, window_decode_tokens, window_prompt_tokens;
    double last_finish_s;
    long long *series, *decode_series;
    int nseries, capseries;
    Hist prompt, decode, ttft;
} Core;

static PyObject *Error;

/* ---- small containers ------------------------------------------------------------------------------ */
static int grow(void **p, int *cap, int need, size_t size) {
    if (need <= *cap) return 0;
    int c = *cap ? *cap : 8;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * size);
    if (!q) {
        PyErr_NoMemory();
        return -1;
    }
    *p = q;
    *cap = c;
    return 0;
}

/* grow() for the queries: their array starts on a cache line, as the struct's alignment promises. */
static int grow_aligned(void **p, int *cap, int need, size_t size) {
    if (need <= *cap) return 0;
    int c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = NULL;
    if (posix_memalign(&q, 64, (size_t)c * size) != 0) {
        PyErr_NoMemory();
        return -1;
    }
    if (*p) {
        memcpy(q, *p, (size_t)*cap * size);
        free(*p);
    }
    *p = q;
    *cap = c;
    return 0;
}

static int ivec_push(IntVec *v, Item x) {
    if (v->n == v->cap && grow((void **)&v->v, &v->cap, v->n + 1, sizeof(Item)) < 0) return -1;
    v->v[v->n++] = x;
    return 0;
}

static int ivec_extend(IntVec *v, const Item *x, int n) {
    if (grow((void **)&v->v, &v->cap, v->n + n, sizeof(Item)) < 0) return -1;
    memcpy(v->v + v->n, x, (size_t)n * sizeof(Item));
    v->n += n;
    return 0;
}

/* ---- binary heaps (heapq's order: the least first; keys are unique, so ties never arise) ------------- */
/* HEAP(name, T, less): name_push(T **v, int *n, int *cap, T x) and name_pop(T *v, int *n). */
#define HEAP(name, T, less)                                                                                \
    static int name##_push(T **v, int *n, int *cap, T x) {                                                 \
        if (*n == *cap && grow((void **)v, cap, *n + 1, sizeof(T)) < 0) return -1;                         \
        T *h = *v;                                                                                         \
        int i = (*n)++;                                                                                    \
        while (i > 0) {                                                                                    \
            int parent = (i - 1) >> 1;                                                                     \
            if (!less(&x, &h[parent])) break;                                                              \
            h[i] = h[parent];                                                                              \
            i = parent;                                                                                    \
        }                                                                                                  \
        h[i] = x;                                                                                          \
        return 0;                                                                                          \
    }                                                                                                      \
    static T name##_pop(T *h, int *n) {                                                                    \
        T top = h[0];                                                                                      \
        T last = h[--*n];                                                                                  \
        int m = *n, i = 0;                                                                                 \
        if (m > 0) {                                                                                       \
            for (;;) {                                                                                     \
                int l = 2 * i + 1;                                                                         \
                if (l >= m) break;                                                                         \
                int r = l + 1;                                                                             \
                int k = (r < m && less(&h[r], &h[l])) ? r : l;                                             \
                if (!less(&h[k], &last)) break;                                                            \
                h[i] = h[k];                                                                               \
                i = k;                                                                                     \
            }                                                                                              \
            h[i] = last;                                                                                   \
        }                                                                                                  \
        return top;                                                                                        \
    }

/* The event heap: (t, seq), as heapq on the Python engine's (t, seq, fn, args). */
static inline int ev_less(const Event *a, const Event *b) {
    return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}
HEAP(events, Event, ev_less)

static int heap_push(Core *c, double t, int kind, int a, double x, PyObject *fn, PyObject *args) {
    Event e = {t, ++c->seq, kind, a, x, fn, args};
    return events_push(&c->heap, &c->nheap, &c->capheap, e);
}

static Event heap_pop(Core *c) { return events_pop(c->heap, &c->nheap); }

/* A worker's arrivals: (t, qid), as the Python engine's pending heap (a query is in one place at a time). */
static inline int pend_less(const Pend *a, const Pend *b) {
    return a->t < b->t || (a->t == b->t && a->qid < b->qid);
}
HEAP(pends, Pend, pend_less)

static int pend_push(Worker *w, Pend p) { return pends_push(&w->pend, &w->npend, &w->cappend, p); }

static Pend pend_pop(Worker *w) { return pends_pop(w->pend, &w->npend); }

/* ---- step tables ------------------------------------------------------------------------------------ */
static int tab_get(Tab *tab, PyObject *fn, long long k, double *out) {
    if (k < tab->n && !isnan(tab->v[k])) {
        *out = tab->v[k];
        return 0;
    }
    if (k == 0) { /* the Python caches start with {0: 0.0} */
        *out = 0.0;
        return 0;
    }
    PyObject *r = PyObject_CallFunction(fn, "L", k);
    if (!r) return -1;
    double v = PyFloat_AsDouble(r);
    Py_DECREF(r);
    if (v == -1.0 && PyErr_Occurred()) return -1;
    if (k >= tab->n) {
        long long n = tab->n ? tab->n : 64;
        while (n <= k) n *= 2;
        double *p = realloc(tab->v, (size_t)n * sizeof(double));
        if (!p) {
            PyErr_NoMemory();
            return -1;
        }
        for (long long i = tab->n; i < n; i++) p[i] = NAN;
        tab->v = p;
        tab->n = (int)n;
    }
    tab->v[k] = v;
    *out = v;
    return 0;
}

/* ---- metrics (simulator.metrics.Metrics.record / record_ttft) --------------------------------------- */
static int hist_add(Core *c, Hist *h, double value) {
    int i;
    if (value <= LO_S) {
        i = 0;
    } else {
        double b = floor(log(value / LO_S) * c->inv_log); /* int() of a non-negative float */
        if (!isfinite(b)) { /* as int() of an infinite or NaN latency in the Python engine */
            PyErr_Format(PyExc_OverflowError, "latency %g s cannot be binned", value);
            return -1;
        }
        long long k = (long long)b + 1;
        i = k < c->nbins - 1 ? (int)k : c->nbins - 1;
    }
    h->counts[i]++;
    h->n++;
    h->total += value;
    return 0;
}

static int record(Core *c, int prompt, double latency, long long tokens, double now) {
    c->total_tokens += tokens;
    if (now > c->last_finish_s) c->last_finish_s = now;
    long long b = (long long)(now / c->bin_s);
    if (b >= c->nseries) {
        int need = (int)b + 1;
        int cap = c->capseries;
        if (grow((void **)&c->series, &cap, need, sizeof(long long)) < 0) return -1;
        int cap2 = c->capseries;
        if (grow((void **)&c->decode_series, &cap2, need, sizeof(long long)) < 0) return -1;
        c->capseries = cap;
        for (int i = c->nseries; i < need; i++) c->series[i] = c->decode_series[i] = 0;
        c->nseries = need;
    }
    c->series[b] += tokens;
    if (!prompt) {
        c->total_decode_tokens++;
        c->decode_series[b]++;
    }
    if (c->ws <= now && now <= c->we) {
        if (prompt) {
            if (hist_add(c, &c->prompt, latency) < 0) return -1;
            c->window_prompt_tokens += tokens;
        } else {
            if (hist_add(c, &c->decode, latency) < 0) return -1;
            c->window_decode_tokens++;
        }
    }
    return 0;
}

/* ---- the workers (simulator.worker.SimWorker) ------------------------------------------------------- */
static int schedule_wake(Core *c, int wi, double t) {
    Worker *w = &c->workers[wi];
    w->has_wake = 1;
    w->wake_at = t;
    return heap_push(c, t, EV_WAKE, wi, t, NULL, NULL);
}

/* SimWorker.arrive with `t` not before the clock (links never deliver early). */
static int arrive(Core *c, int wi, double t, Query *q, int slot, int entry) {
    Worker *w = &c->workers[wi];
    Pend p = {t, q->qid, entry, {slot, q->iteration == 0, q->iteration == 0 ? q->input_len : q->context, q->seq_len}};
    if (pend_push(w, p) < 0) return -1;
    if (!w->busy && (!w->has_wake || t < w->wake_at)) return schedule_wake(c, wi, t);
    return 0;
}

static int worker_start(Core *c, int wi, double now) {
    Worker *w = &c->workers[wi];
    while (w->npend && w->pend[0].t <= now) {
        Pend p = pend_pop(w);
        if (ivec_push(&w->queues[p.entry], p.item) < 0) return -1;
        w->cpu_tokens += p.item.seq_len;
    }
    int n = w->nseg, p = w->pointer;
    if (!w->queues[p].n) {
        int found = 0;
        for (int k = 0; k < n - 1; k++) {
            p = p + 1 < n ? p + 1 : 0;
            if (w->queues[p].n) {
                found = 1;
                break;
            }
        }
        if (!found) {
            w->busy = 0;
            if (w->npend && (!w->has_wake || w->pend[0].t < w->wake_at))
                return schedule_wake(c, wi, w->pend[0].t);
            return 0;
        }
    }
    w->pointer = p;
    IntVec *queue = &w->queues[p];
    long long pmax_r = w->pmax_r, pmax_t = w->pmax_t, dmax_s = w->dmax_s, dmax_c = w->dmax_c;
    long long np_ = 0, pt = 0, nd = 0, ctx = 0;
    IntVec *batch = &w->batch;
    batch->n = 0;
    int from = 0;
    if (w->carried) {
        /* the previous segment's batch heads this queue: taken whole again */
        int carried = w->carried;
        w->carried = 0;
        np_ = w->batch_np;
        pt = w->batch_pt;
        ctx = w->batch_ctx;
        nd = w->batch_tokens - pt;
        if (ivec_extend(batch, queue->v, carried) < 0) return -1;
        from = carried;
    }
    int kept = 0;
    for (int i = from; i < queue->n; i++) {
        Item it = queue->v[i];
        if (it.prompt) {
            if (np_ < pmax_r && (pt + it.need <= pmax_t || (np_ == 0 && nd == 0 && batch->n == 0))) {
                np_++;
                pt += it.need;
                if (ivec_push(batch, it) < 0) return -1;
                continue;
            }
        } else if (nd < dmax_s && ctx + it.need <= dmax_c) {
            nd++;
            ctx += it.need;
            if (ivec_push(batch, it) < 0) return -1;
            continue;
        }
        queue->v[kept++] = it; /* kept <= i: in place */
    }
    queue->n = kept;
    int layers = w->seg_layers[p];
    Tables *tb = &c->tables[w->tables];
    double d_s, p_s, duration;
    if (tab_get(&tb->dtab, tb->dfun, nd, &d_s) < 0) return -1;
    if (pt) {
        if (tab_get(&tb->ptab, tb->pfun, pt, &p_s) < 0) return -1;
        duration = layers * (p_s + d_s);
    } else {
        duration = layers * d_s;
    }
    if (p == 0 && w->cpu_tokens) {
        duration += w->cpu_tokens * w->cpu_s_per_token;
        w->cpu_tokens = 0;
    }
    if (p == n - 1) {
        if (tb->hfun) {
            double h;
            if (tab_get(&tb->htab, tb->hfun, nd + np_, &h) < 0) return -1;
            duration += h;
        }
        duration += w->step_overhead_s;
    }
    w->busy = 1;
    w->batch_seg = p;
    w->batch_tokens = pt + nd;
    w->batch_pt = pt;
    w->batch_np = np_;
    w->batch_ctx = ctx;
    if (!(duration >= 0.0)) {
        PyErr_Format(Error, "event at %g s is before the clock (%g s)", now + duration, now);
        return -1;
    }
    w->busy_s += duration;
    return heap_push(c, now + duration, EV_FINISH, wi, 0.0, NULL, NULL);
}

static int issue(Core *c, int slot, double now);

/* SimCoordinator._depart: over the link to the sink. */
static int depart(Core *c, int slot, double now) {
    Query *q = &c->queries[slot];
    Link *link = &c->links[q->sink_link];
    double free = link->free_at;
    free = link->free_at = (free > now ? free : now) + q->seq_len * link->s_per_token;
    double t = free + link->latency_s;
    if (!(t >= now)) {
        PyErr_Format(Error, "event at %g s is before the clock (%g s)", t, now);
        return -1;
    }
    return heap_push(c, t, EV_SINK, slot, 0.0, NULL, NULL);
}

/* simulator.forwarding.forward_each. A batch's queries, their routes and the links and workers they go to
 * lie anywhere in memory and the loop would wait on each in turn: a few passes ask for them all first (the
 * reads overlap), then the loop does its work in order. */
static int forward(Core *c, IntVec *batch, double now) {
    Query *qs = c->queries;
    int n = batch->n;
    Item *v = batch->v;
    for (int i = 0; i < n; i++) __builtin_prefetch(&qs[v[i].slot]);
    for (int i = 0; i < n; i++) {
        Query *q = &qs[v[i].slot];
        __builtin_prefetch(&q->route[q->hop_i + 1]);
    }
    for (int i = 0; i < n; i++) {
        Query *q = &qs[v[i].slot];
        if (q->hop_i + 1 < q->nhops) {
            Hop *h = &q->route[q->hop_i + 1];
            __builtin_prefetch(&c->links[h->link]);
            __builtin_prefetch(&c->workers[h->w]);
        }
    }
    for (int i = 0; i < n; i++) {
        int s = v[i].slot;
        Query *q = &qs[s];
        int hop = ++q->hop_i;
        if (hop < q->nhops) {
            Hop *h = &q->route[hop];
            Link *link = &c->links[h->link];
            double free = link->free_at;
            free = (free > now ? free : now) + q->seq_len * link->s_per_token;
            link->free_at = free;
            double t = free + link->latency_s;
            if (arrive(c, h->w, t, q, s, h->entry) < 0) return -1;
        } else if (depart(c, s, now) < 0) {
            return -1;
        }
    }
    return 0;
}

static int worker_finish(Core *c, int wi) {
    Worker *w = &c->workers[wi];
    double now = c->now;
    int p = w->batch_seg;
    long long kv = w->kv_real = w->kv_real + w->seg_layers[p] * w->batch_tokens;
    if (kv > w->kv_real_peak) w->kv_real_peak = kv;
    if (p + 1 < w->nseg) {
        IntVec *following = &w->queues[p + 1];
        if (following->n) {
            if (ivec_extend(following, w->batch.v, w->batch.n) < 0) return -1;
        } else {
            if (ivec_extend(following, w->batch.v, w->batch.n) < 0) return -1;
            w->carried = w->batch.n;
        }
        w->pointer = p + 1;
    } else {
        w->pointer = 0;
        w->steps++;
        w->prompt_tokens += w->batch_pt;
        w->decode_seqs += w->batch_tokens - w->batch_pt;
        if (forward(c, &w->batch, now) < 0) return -1;
    }
    w->batch.n = 0;
    return worker_start(c, wi, now);
}

static int worker_wake(Core *c, int wi, double token) {
    Worker *w = &c->workers[wi];
    if (!w->has_wake || w->wake_at != token || w->busy) return 0;
    w->has_wake = 0;
    return worker_start(c, wi, c->now);
}

/* ---- the coordinator's token path (SimCoordinator._issue / _emit / _finish) ------------------------- */
static int issue(Core *c, int slot, double now) {
    Query *q = &c->queries[slot];
    q->t_issue = now;
    q->hop_i = 0;
    Link *link = &c->links[q->route[0].link];
    double free = link->free_at;
    free = link->free_at = (free > now ? free : now) + q->seq_len * link->s_per_token;
    return arrive(c, q->route[0].w, free + link->latency_s, q, slot, q->route[0].entry);
}

static void query_clear(Query *q) {
    free(q->acct.load);
    free(q->acct.inv);
    memset(&q->acct, 0, sizeof(Account));
    free(q->route);
    q->route = NULL;
    Py_CLEAR(q->on_decode);
    Py_CLEAR(q->obj);
    q->live = 0;
}

static int emit(Core *c, int slot) {
    double now = c->now;
    Query *q = &c->queries[slot];
    int prompt = q->iteration == 0;
    if (record(c, prompt, now - q->t_issue, q->seq_len, now) < 0) return -1;
    if (prompt && c->ws <= q->t_arrive && q->t_arrive <= c->we && hist_add(c, &c->ttft, now - q->t_arrive) < 0)
        return -1;
    if (q->iteration < q->output_len) {
        q->iteration++;
        q->seq_len = 1;
        q->context = q->input_len + q->iteration - 1;
        q->hop_i = 0;
        for (int i = 0; i < q->acct.n; i++) *q->acct.load[i] += q->acct.inv[i];
        if (q->on_decode) {
            PyObject *r = PyObject_CallNoArgs(q->on_decode);
            if (!r) return -1;
            Py_DECREF(r);
        }
        if (issue(c, slot, now) < 0) return -1;
        if (prompt && c->on_prompt_done) {
            PyObject *r = PyObject_CallFunction(c->on_prompt_done, "d", now);
            if (!r) return -1;
            Py_DECREF(r);
        }
        return 0;
    }
    long long total = q->input_len + q->output_len;
    for (int h = 0; h < q->nhops; h++) {
        Worker *w = &c->workers[q->route[h].w];
        long long left = w->kv_real - total * q->route[h].layers;
        w->kv_real = left > 0 ? left : 0;
    }
    if (!c->on_finish) {
        PyErr_SetString(PyExc_RuntimeError, "the core has no on_finish callback (set_callbacks)");
        return -1;
    }
    PyObject *obj = q->obj;
    q->obj = NULL;
    query_clear(q);
    if (grow((void **)&c->free_slots, &c->capfree, c->nfree + 1, sizeof(int)) < 0) {
        Py_DECREF(obj);
        return -1;
    }
    c->free_slots[c->nfree++] = slot;
    PyObject *r = PyObject_CallFunction(c->on_finish, "Od", obj, now);
    Py_DECREF(obj);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

/* ---- the Python type -------------------------------------------------------------------------------- */
/* The core and what it holds form cycles (a query's Python object reaches the coordinator, which holds the
 * loop, which holds the core): the collector must see them, or every run would stay in memory. */
static int core_traverse(Core *c, visitproc visit, void *arg) {
    for (int i = 0; i < c->nheap; i++) {
        Py_VISIT(c->heap[i].fn);
        Py_VISIT(c->heap[i].args);
    }
    for (int i = 0; i < c->ntables; i++) {
        Py_VISIT(c->tables[i].pfun);
        Py_VISIT(c->tables[i].dfun);
        Py_VISIT(c->tables[i].hfun);
    }
    for (int i = 0; i < c->nqueries; i++) {
        if (!c->queries[i].live) continue;
        Py_VISIT(c->queries[i].on_decode);
        Py_VISIT(c->queries[i].obj);
    }
    for (int i = 0; i < c->nviews; i++) Py_VISIT(c->views[i].obj);
    Py_VISIT(c->on_finish);
    Py_VISIT(c->on_prompt_done);
    Py_VISIT(c->held);
    return 0;
}

/* Drops every reference (the collector breaking a cycle): the core cannot run after this. */
static int core_clear(Core *c) {
    for (int i = 0; i < c->nheap; i++) {
        Py_CLEAR(c->heap[i].fn);
        Py_CLEAR(c->heap[i].args);
    }
    c->nheap = 0;
    for (int i = 0; i < c->ntables; i++) {
        Py_CLEAR(c->tables[i].pfun);
        Py_CLEAR(c->tables[i].dfun);
        Py_CLEAR(c->tables[i].hfun);
    }
    for (int i = 0; i < c->nqueries; i++) {
        if (!c->queries[i].live) continue;
        Py_CLEAR(c->queries[i].on_decode);
        Py_CLEAR(c->queries[i].obj);
    }
    for (int i = 0; i < c->nviews; i++) PyBuffer_Release(&c->views[i]);
    c->nviews = 0;
    Py_CLEAR(c->on_finish);
    Py_CLEAR(c->on_prompt_done);
    Py_CLEAR(c->held);
    return 0;
}

static void core_dealloc(Core *c) {
    PyObject_GC_UnTrack(c);
    for (int i = 0; i < c->nheap; i++) {
        Py_XDECREF(c->heap[i].fn);
        Py_XDECREF(c->heap[i].args);
    }
    free(c->heap);
    for (int i = 0; i < c->nworkers; i++) {
        Worker *w = &c->workers[i];
        for (int k = 0; k < w->nseg; k++) free(w->queues[k].v);
        free(w->queues);
        free(w->seg_layers);
        free(w->batch.v);
        free(w->pend);
    }
    free(c->workers);
    for (int i = 0; i < c->ntables; i++) {
        Tables *tb = &c->tables[i];
        free(tb->ptab.v);
        free(tb->dtab.v);
        free(tb->htab.v);
        Py_XDECREF(tb->pfun);
        Py_XDECREF(tb->dfun);
        Py_XDECREF(tb->hfun);
    }
    free(c->tables);
    free(c->links);
    for (int i = 0; i < c->nqueries; i++)
        if (c->queries[i].live) query_clear(&c->queries[i]);
    free(c->queries);
    free(c->free_slots);
    free(c->series);
    free(c->decode_series);
    free(c->prompt.counts);
    free(c->decode.counts);
    free(c->ttft.counts);
    Py_XDECREF(c->on_finish);
    Py_XDECREF(c->on_prompt_done);
    for (int i = 0; i < c->nviews; i++) PyBuffer_Release(&c->views[i]);
    free(c->views);
    Py_XDECREF(c->held);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static int core_init(Core *c, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"start_s", "window_start_s", "window_end_s", "bin_s", "nbins", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ddddi", kwlist, &c->now, &c->ws, &c->we, &c->bin_s,
                                     &c->nbins))
        return -1;
    if (!(c->bin_s > 0) || c->nbins < 2) {
        PyErr_SetString(PyExc_ValueError, "bin_s must be > 0 and nbins >= 2");
        return -1;
    }
    c->inv_log = 1.0 / log(GROWTH);
    c->held = PyDict_New();
    if (!c->held) return -1;
    Hist *hs[3] = {&c->prompt, &c->decode, &c->ttft};
    for (int i = 0; i < 3; i++) {
        hs[i]->counts = calloc((size_t)c->nbins, sizeof(long long));
        if (!hs[i]->counts) {
            PyErr_NoMemory();
            return -1;
        }
    }
    return 0;
}

static int check_index(long v, int n, const char *what) {
    if (v < 0 || v >= n) {
        PyErr_Format(PyExc_IndexError, "%s index %ld out of range", what, v);
        return -1;
    }
    return 0;
}

static PyObject *core_add_worker(Core *c, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"seg_layers", "limits", "cpu_s_per_token", "step_overhead_s", "kv_real",
                             "tables", NULL};
    PyObject *segs;
    long long pr, ptk, ds, dc, kv;
    double cpu, over;
    int tables;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O(LLLL)ddLi", kwlist, &segs, &pr, &ptk, &ds, &dc, &cpu, &over,
                                     &kv, &tables))
        return NULL;
    if (check_index(tables, c->ntables, "tables") < 0) return NULL;
    PyObject *seq = PySequence_Fast(segs, "seg_layers must be a sequence");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "a worker has at least one segment");
        return NULL;
    }
    if (grow((void **)&c->workers, &c->capworkers, c->nworkers + 1, sizeof(Worker)) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    Worker *w = &c->workers[c->nworkers];
    memset(w, 0, sizeof(Worker));
    w->nseg = (int)n;
    w->seg_layers = calloc((size_t)n, sizeof(int));
    w->queues = calloc((size_t)n, sizeof(IntVec));
    if (!w->seg_layers || !w->queues) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) w->seg_layers[i] = (int)PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
    Py_DECREF(seq);
    if (PyErr_Occurred()) return NULL;
    w->pmax_r = pr;
    w->pmax_t = ptk;
    w->dmax_s = ds;
    w->dmax_c = dc;
    w->cpu_s_per_token = cpu;
    w->step_overhead_s = over;
    w->kv_real = w->kv_real_peak = kv;
    w->tables = tables;
    return PyLong_FromLong(c->nworkers++);
}

/* add_tables(prompt_s, decode_s, head_s): a profile's step seconds per layer for a number of prompt tokens
 * or decodes, and its LM head's for a number of sampled sequences (None: no head). */
static PyObject *core_add_tables(Core *c, PyObject *args) {
    PyObject *pfun, *dfun, *hfun;
    if (!PyArg_ParseTuple(args, "OOO", &pfun, &dfun, &hfun)) return NULL;
    if (grow((void **)&c->tables, &c->captables, c->ntables + 1, sizeof(Tables)) < 0) return NULL;
    Tables *tb = &c->tables[c->ntables];
    memset(tb, 0, sizeof(Tables));
    tb->pfun = Py_NewRef(pfun);
    tb->dfun = Py_NewRef(dfun);
    tb->hfun = hfun == Py_None ? NULL : Py_NewRef(hfun);
    return PyLong_FromLong(c->ntables++);
}

static PyObject *core_add_link(Core *c, PyObject *args) {
    double spt, lat, free_at;
    if (!PyArg_ParseTuple(args, "ddd", &spt, &lat, &free_at)) return NULL;
    if (grow((void **)&c->links, &c->caplinks, c->nlinks + 1, sizeof(Link)) < 0) return NULL;
    c->links[c->nlinks] = (Link){spt, lat, free_at};
    return PyLong_FromLong(c->nlinks++);
}


/* The first double of `loads` (an array('d')), its buffer held for the core's life. */
static double *loads_of(Core *c, PyObject *loads, Py_ssize_t *len) {
    /* keyed by address (arrays are unhashable): the held buffer keeps the array, so the address stays its */
    PyObject *key = PyLong_FromVoidPtr(loads);
    if (!key) return NULL;
    PyObject *at = PyDict_GetItemWithError(c->held, key);
    if (!at && PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    int i;
    if (at) {
        i = (int)PyLong_AsLong(at);
    } else {
        if (grow((void **)&c->views, &c->capviews, c->nviews + 1, sizeof(Py_buffer)) < 0) {
            Py_DECREF(key);
            return NULL;
        }
        Py_buffer *v = &c->views[c->nviews];
        if (PyObject_GetBuffer(loads, v, PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
            Py_DECREF(key);
            return NULL;
        }
        if (v->itemsize != sizeof(double) || !v->format || strcmp(v->format, "d") != 0) {
            PyBuffer_Release(v);
            Py_DECREF(key);
            PyErr_SetString(PyExc_TypeError, "IWRR loads must be an array('d')");
            return NULL;
        }
        PyObject *k = PyLong_FromLong(c->nviews);
        if (!k || PyDict_SetItem(c->held, key, k) < 0) {
            Py_XDECREF(k);
            Py_DECREF(key);
            PyBuffer_Release(v);
            return NULL;
        }
        Py_DECREF(k);
        i = c->nviews++;
    }
    Py_DECREF(key);
    *len = c->views[i].len / (Py_ssize_t)sizeof(double);
    return (double *)c->views[i].buf;
}

/* add_query(obj, qid, input_len, output_len, iteration, t_arrive, route, sink_link, account, on_decode):
 * route is ((worker, entry, link, layers), ...); account ((loads list, j, 1/weight), ...) is what the
 * max-flow policy adds per decode (MaxFlowPolicy.decode_steps); on_decode, a callable, any other policy's. */
static PyObject *core_add_query(Core *c, PyObject *args) {
    PyObject *obj, *route, *account, *on_decode;
    long long qid, in_len, out_len, iteration;
    double t_arrive;
    int sink;
    if (!PyArg_ParseTuple(args, "OLLLLdOiOO", &obj, &qid, &in_len, &out_len, &iteration, &t_arrive, &route,
                          &sink, &account, &on_decode))
        return NULL;
    if (check_index(sink, c->nlinks, "link") < 0) return NULL;
    PyObject *hops = PySequence_Fast(route, "route must be a sequence");
    if (!hops) return NULL;
    Py_ssize_t nh = PySequence_Fast_GET_SIZE(hops);
    if (nh < 1) {
        Py_DECREF(hops);
        PyErr_SetString(PyExc_ValueError, "a route has at least one hop");
        return NULL;
    }
    PyObject *acc = PySequence_Fast(account, "account must be a sequence");
    if (!acc) {
        Py_DECREF(hops);
        return NULL;
    }
    Py_ssize_t na = PySequence_Fast_GET_SIZE(acc);
    int slot;
    if (c->nfree) {
        slot = c->free_slots[--c->nfree];
    } else {
        if (grow_aligned((void **)&c->queries, &c->capqueries, c->nqueries + 1, sizeof(Query)) < 0) goto fail;
        slot = c->nqueries++;
        memset(&c->queries[slot], 0, sizeof(Query));
    }
    Query *q = &c->queries[slot];
    q->route = calloc((size_t)(nh ? nh : 1), sizeof(Hop));
    q->acct.load = calloc((size_t)(na ? na : 1), sizeof(double *));
    q->acct.inv = calloc((size_t)(na ? na : 1), sizeof(double));
    if (!q->route || !q->acct.load || !q->acct.inv) {
        PyErr_NoMemory();
        goto undo;
    }
    q->live = 1;
    q->nhops = (int)nh;
    for (Py_ssize_t i = 0; i < nh; i++) {
        long wi, en, li, la;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(hops, i), "llll", &wi, &en, &li, &la)) goto undo;
        if (check_index(wi, c->nworkers, "worker") < 0 || check_index(li, c->nlinks, "link") < 0 ||
            check_index(en, c->workers[wi].nseg, "entry") < 0)
            goto undo;
        q->route[i] = (Hop){(int)wi, (int)en, (int)li, (int)la};
    }
    for (Py_ssize_t i = 0; i < na; i++) {
        PyObject *loads;
        long j;
        double inv;
        Py_ssize_t len;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(acc, i), "Old", &loads, &j, &inv)) goto undo;
        double *base = loads_of(c, loads, &len);
        if (!base || check_index(j, (int)len, "load") < 0) goto undo;
        q->acct.load[q->acct.n] = base + j;
        q->acct.inv[q->acct.n] = inv;
        q->acct.n++;
    }
    q->qid = qid;
    q->input_len = in_len;
    q->output_len = out_len;
    q->iteration = 0;
    q->seq_len = in_len;
    q->context = 0;
    if (iteration > 0) { /* Query.advance_to */
        q->iteration = iteration;
        q->seq_len = 1;
        q->context = in_len + iteration - 1;
    }
    q->sink_link = sink;
    q->t_issue = q->t_arrive = t_arrive;
    if (on_decode != Py_None) {
        Py_INCREF(on_decode);
        q->on_decode = on_decode;
    }
    Py_INCREF(obj);
    q->obj = obj;
    Py_DECREF(hops);
    Py_DECREF(acc);
    return PyLong_FromLong(slot);
undo:
    query_clear(q);
    if (grow((void **)&c->free_slots, &c->capfree, c->nfree + 1, sizeof(int)) == 0)
        c->free_slots[c->nfree++] = slot;
fail:
    Py_DECREF(hops);
    Py_DECREF(acc);
    return NULL;
}

static int live_slot(Core *c, int slot) {
    if (slot < 0 || slot >= c->nqueries || !c->queries[slot].live) {
        PyErr_Format(PyExc_IndexError, "no live query in slot %d", slot);
        return -1;
    }
    return 0;
}

static PyObject *core_issue(Core *c, PyObject *args) {
    int slot;
    if (!PyArg_ParseTuple(args, "i", &slot) || live_slot(c, slot) < 0) return NULL;
    if (issue(c, slot, c->now) < 0) return NULL;
    Py_RETURN_NONE;
}

/* A warm start: the query's KV is on its chain already; its next iteration is issued at `t`. */
static PyObject *core_issue_at(Core *c, PyObject *args) {
    int slot;
    double t;
    if (!PyArg_ParseTuple(args, "id", &slot, &t) || live_slot(c, slot) < 0) return NULL;
    if (t < c->now || t != t) {
        PyErr_Format(Error, "event at %g s is before the clock (%g s)", t, c->now);
        return NULL;
    }
    Query *q = &c->queries[slot];
    for (int h = 0; h < q->nhops; h++) c->workers[q->route[h].w].kv_real += q->context * q->route[h].layers;
    if (heap_push(c, t, EV_ISSUE, slot, 0.0, NULL, NULL) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *core_set_arrive(Core *c, PyObject *args) {
    int slot;
    double t;
    if (!PyArg_ParseTuple(args, "id", &slot, &t) || live_slot(c, slot) < 0) return NULL;
    c->queries[slot].t_arrive = t;
    Py_RETURN_NONE;
}

static PyObject *core_schedule(Core *c, PyObject *args) {
    double t;
    PyObject *fn, *rest;
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (n < 2) {
        PyErr_SetString(PyExc_TypeError, "schedule(time_s, fn, *args)");
        return NULL;
    }
    t = PyFloat_AsDouble(PyTuple_GET_ITEM(args, 0));
    if (t == -1.0 && PyErr_Occurred()) return NULL;
    if (t < c->now || t != t) {
        PyErr_Format(Error, "event at %R s is before the clock (%R s)", PyTuple_GET_ITEM(args, 0),
                     PyFloat_FromDouble(c->now));
        return NULL;
    }
    fn = PyTuple_GET_ITEM(args, 1);
    rest = PyTuple_GetSlice(args, 2, n);
    if (!rest) return NULL;
    Py_INCREF(fn);
    if (heap_push(c, t, EV_PY, 0, 0.0, fn, rest) < 0) {
        Py_DECREF(fn);
        Py_DECREF(rest);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *core_set_callbacks(Core *c, PyObject *args) {
    PyObject *fin, *pd;
    if (!PyArg_ParseTuple(args, "OO", &fin, &pd)) return NULL;
    Py_XSETREF(c->on_finish, Py_NewRef(fin));
    Py_XSETREF(c->on_prompt_done, pd == Py_None ? NULL : Py_NewRef(pd));
    Py_RETURN_NONE;
}

static int dispatch(Core *c, Event *e) {
    switch (e->kind) {
    case EV_WAKE:
        return worker_wake(c, e->a, e->x);
    case EV_FINISH:
        return worker_finish(c, e->a);
    case EV_SINK:
        return emit(c, e->a);
    case EV_ISSUE:
        return issue(c, e->a, c->now);
    default: {
        PyObject *r = PyObject_Call(e->fn, e->args, NULL);
        Py_DECREF(e->fn);
        Py_DECREF(e->args);
        if (!r) return -1;
        Py_DECREF(r);
        return 0;
    }
    }
}

/* run(until_s, stop): EventLoop.run */
static PyObject *core_run(Core *c, PyObject *args) {
    PyObject *until_o, *stop;
    if (!PyArg_ParseTuple(args, "OO", &until_o, &stop)) return NULL;
    double limit = INFINITY;
    if (until_o != Py_None) {
        limit = PyFloat_AsDouble(until_o);
        if (limit == -1.0 && PyErr_Occurred()) return NULL;
    }
    int stopped = 0;
    while (c->nheap && c->heap[0].t < limit) {
        Event e = heap_pop(c);
        c->now = e.t;
        c->handled++;
        if (dispatch(c, &e) < 0) return NULL;
        if (stop != Py_None) {
            PyObject *r = PyObject_CallNoArgs(stop);
            if (!r) return NULL;
            int truth = PyObject_IsTrue(r);
            Py_DECREF(r);
            if (truth < 0) return NULL;
            if (truth) {
                stopped = 1;
                break;
            }
        }
    }
    if (!stopped && until_o != Py_None && (!c->nheap || c->heap[0].t >= limit) && limit > c->now)
        c->now = limit;
    Py_RETURN_NONE;
}

static PyObject *core_queued(Core *c, PyObject *args) {
    int wi;
    if (!PyArg_ParseTuple(args, "i", &wi)) return NULL;
    if (check_index(wi, c->nworkers, "worker") < 0) return NULL;
    Worker *w = &c->workers[wi];
    long long n = 0;
    for (int k = 0; k < w->nseg; k++) n += w->queues[k].n;
    for (int k = 0; k < w->npend; k++) n += w->pend[k].t <= c->now;
    return PyLong_FromLongLong(n);
}

static PyObject *core_worker(Core *c, PyObject *args) {
    int wi;
    if (!PyArg_ParseTuple(args, "i", &wi)) return NULL;
    if (check_index(wi, c->nworkers, "worker") < 0) return NULL;
    Worker *w = &c->workers[wi];
    return Py_BuildValue("{s:L,s:d,s:L,s:L,s:L,s:L}", "steps", w->steps, "busy_s", w->busy_s, "decode_seqs",
                         w->decode_seqs, "prompt_tokens", w->prompt_tokens, "kv_real", w->kv_real,
                         "kv_real_peak", w->kv_real_peak);
}

static PyObject *core_link_free_at(Core *c, PyObject *args) {
    int li;
    if (!PyArg_ParseTuple(args, "i", &li)) return NULL;
    if (check_index(li, c->nlinks, "link") < 0) return NULL;
    return PyFloat_FromDouble(c->links[li].free_at);
}

static PyObject *hist_dict(Hist *h, int nbins) {
    PyObject *counts = PyDict_New();
    if (!counts) return NULL;
    for (int i = 0; i < nbins; i++) {
        if (!h->counts[i]) continue;
        PyObject *k = PyLong_FromLong(i), *v = PyLong_FromLongLong(h->counts[i]);
        int bad = !k || !v || PyDict_SetItem(counts, k, v) < 0;
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (bad) {
            Py_DECREF(counts);
            return NULL;
        }
    }
    return Py_BuildValue("(NLd)", counts, h->n, h->total);
}

static PyObject *long_list(long long *v, int n) {
    PyObject *l = PyList_New(n);
    if (!l) return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *x = PyLong_FromLongLong(v[i]);
        if (!x) {
            Py_DECREF(l);
            return NULL;
        }
        PyList_SET_ITEM(l, i, x);
    }
    return l;
}

/* What Metrics holds, for simulator.fast_engine to copy into it. */
static PyObject *core_metrics(Core *c, PyObject *unused) {
    return Py_BuildValue("{s:L,s:L,s:L,s:L,s:d,s:N,s:N,s:N,s:N,s:N}", "total_tokens", c->total_tokens,
                         "total_decode_tokens", c->total_decode_tokens, "window_decode_tokens",
                         c->window_decode_tokens, "window_prompt_tokens", c->window_prompt_tokens,
                         "last_finish_s", c->last_finish_s, "series", long_list(c->series, c->nseries),
                         "decode_series", long_list(c->decode_series, c->nseries), "prompt",
                         hist_dict(&c->prompt, c->nbins), "decode", hist_dict(&c->decode, c->nbins), "ttft",
                         hist_dict(&c->ttft, c->nbins));
}

static PyObject *core_get_now(Core *c, void *unused) { return PyFloat_FromDouble(c->now); }
static PyObject *core_get_handled(Core *c, void *unused) { return PyLong_FromLongLong(c->handled); }
static PyObject *core_get_pending(Core *c, void *unused) { return PyLong_FromLong(c->nheap); }
static PyObject *core_get_next(Core *c, void *unused) {
    if (!c->nheap) Py_RETURN_NONE;
    return PyFloat_FromDouble(c->heap[0].t);
}

static PyGetSetDef core_getset[] = {
    {"now", (getter)core_get_now, NULL, "the clock (s)", NULL},
    {"handled", (getter)core_get_handled, NULL, "events handled", NULL},
    {"pending", (getter)core_get_pending, NULL, "events waiting", NULL},
    {"next_time", (getter)core_get_next, NULL, "the next event's time, or None", NULL},
    {NULL}};

static PyMethodDef core_methods[] = {
    {"add_worker", (PyCFunction)(void (*)(void))core_add_worker, METH_VARARGS | METH_KEYWORDS, NULL},
    {"add_link", (PyCFunction)core_add_link, METH_VARARGS, NULL},
    {"add_tables", (PyCFunction)core_add_tables, METH_VARARGS, NULL},
    {"add_query", (PyCFunction)core_add_query, METH_VARARGS, NULL},
    {"issue", (PyCFunction)core_issue, METH_VARARGS, NULL},
    {"issue_at", (PyCFunction)core_issue_at, METH_VARARGS, NULL},
    {"set_arrive", (PyCFunction)core_set_arrive, METH_VARARGS, NULL},
    {"schedule", (PyCFunction)core_schedule, METH_VARARGS, NULL},
    {"set_callbacks", (PyCFunction)core_set_callbacks, METH_VARARGS, NULL},
    {"run", (PyCFunction)core_run, METH_VARARGS, NULL},
    {"queued", (PyCFunction)core_queued, METH_VARARGS, NULL},
    {"worker", (PyCFunction)core_worker, METH_VARARGS, NULL},
    {"link_free_at", (PyCFunction)core_link_free_at, METH_VARARGS, NULL},
    {"metrics", (PyCFunction)core_metrics, METH_NOARGS, NULL},
    {NULL}};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "simulator._fastcore.Core",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)core_init,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_methods = core_methods,
    .tp_getset = core_getset,
};

static struct PyModuleDef fastcore_module = {PyModuleDef_HEAD_INIT, "simulator._fastcore",
                                             "The simulator's compiled hot path.", -1, NULL};

PyMODINIT_FUNC PyInit__fastcore(void) {
    if (PyType_Ready(&CoreType) < 0) return NULL;
    PyObject *m = PyModule_Create(&fastcore_module);
    if (!m) return NULL;
    Error = PyErr_NewException("simulator._fastcore.ClockError", PyExc_ValueError, NULL);
#ifndef CORE_SOURCE_SHA
#define CORE_SOURCE_SHA ""
#endif
    if (!Error || PyModule_AddObjectRef(m, "ClockError", Error) < 0 ||
        PyModule_AddStringConstant(m, "SOURCE_SHA", CORE_SOURCE_SHA) < 0 ||
        PyModule_AddObjectRef(m, "Core", (PyObject *)&CoreType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
