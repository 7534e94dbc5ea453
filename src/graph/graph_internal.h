/* The graph's internal representation, shared by the builders (graph.c),
 * the planner (plan.c) and the CPU backend (exec_cpu.c). */
#ifndef TM_GRAPH_INTERNAL_H
#define TM_GRAPH_INTERNAL_H

#include <stdarg.h>

#include "trimodal/graph.h"

#define TM_MAX_SRC 16 /* most inputs of one op (concat) */

struct tm_node {
    int id;    /* creation order, which is a topological order */
    tm_op op;
    tm_dtype dtype;
    int ndim;
    int64_t shape[TM_MAX_DIMS];
    int64_t numel;
    int nsrc;
    tm_node *src[TM_MAX_SRC];
    int ip[8];      /* integer settings of the op (axes, strides, ...) */
    float fp[4];    /* float settings (eps, scale, ...) */
    uint64_t seed;  /* dropout, drop-path */
    int64_t lparam; /* rope: the position offset */
    char *name;     /* inputs and parameters */

    int requires_grad; /* set at compile time */
    int frozen;        /* parameters only */
    int keep;
    int output;        /* a side output (tm_graph_add_output) */
    int in_plan;       /* computed: an ancestor of the root or of an output */
    int on_loss;       /* an ancestor of the root (only these get gradients) */
    int seg;           /* checkpoint segment index, or -1 */
    int recompute;     /* set by the planner: recomputed before its backward */
    tm_node *storage;  /* the node whose memory this one shares (itself, or a
                          reshape's source's storage) */

    /* sizes decided by the builder */
    size_t aux_bytes;   /* saved for backward (mean/rstd, lse, argmax...) */
    size_t fwd_work;    /* scratch floats for forward */
    size_t bwd_work;    /* scratch floats for backward */

    /* memory, set by the planner */
    size_t param_off;   /* parameters: offset in floats into params/grads */
    void *value;
    float *grad;
    void *aux;
    float *work;        /* forward scratch */
    float *bwork;       /* backward scratch */
    uint64_t dropout_stream; /* the forward call number, for the mask */
    tm_allgather_fn gather; /* allgather: the collective and its context */
    void *gather_ctx;
    void *prepared;     /* matmul in an inference graph: src[1] (a frozen
                           weight) in a prepared form, or NULL; run by
                           tm_prepared_matmul (prepared.c) */
};

/* A gradient-checkpoint segment: the nodes with ids first..last. */
typedef struct {
    int first, last;
    int top;    /* set by the planner: the highest id of the segment in the
                   plan; its recompute runs just before that node's backward */
    int active; /* set by the planner: holds a node that needs a gradient */
} tm_segment;

/* Time spent per op (TRIMODAL_PROFILE set; printed by tm_graph_free). */
typedef struct {
    double fwd_s, bwd_s;
    int64_t fwd_n, bwd_n;
} tm_prof_row;

/* Prints g->prof to stderr, largest first (tm_graph_free). */
void tm_prof_print(const tm_graph *g);

struct tm_graph {
    tm_node **nodes;
    int n, cap;
    tm_status status;       /* first build error */
    char error[512];
    int compiled;
    tm_graph_mode mode;
    tm_node *root;
    size_t n_params;        /* floats */
    float *params, *grads;
    float *ext_params, *ext_grads; /* shared buffers (tm_graph_share_params) */
    size_t ext_count;
    int shared;
    unsigned char *arena;
    size_t arena_bytes, unplanned_bytes;
    void **input_bufs;      /* one per input node, persistent */
    int n_input_bufs;
    unsigned char *grad_ready; /* per node, during backward */
    uint64_t rng_counter;   /* call number of the next forward pass */
    int shard;              /* tm_graph_set_shard: masks drawn at rows shard * B ... */
    int forwarded;          /* a forward pass completed since the last backward */
    int recomputing;        /* inside a segment's recompute */
    tm_segment *segs;
    int n_segs, cap_segs;
    int seg_open;           /* segs[n_segs - 1] is still open */
    tm_dtype precision;     /* GEMM operand precision: TM_F32, TM_BF16, TM_F16 */
    float *prec_buf;        /* rounded GEMM operands (precision != TM_F32) */
    size_t prec_floats;
    float loss_scale;       /* backward seeds d root = loss_scale (default 1) */
    /* prepared weights (prepared.c, tm_graph_prepare_weights) */
    tm_weights weights;     /* the format of every n->prepared */
    int n_prepared;         /* matmuls with n->prepared */
    size_t prepared_bytes;  /* held by the prepared weights and prep_work */
    void *prep_work;        /* int8: quantised activations of the largest one */
    tm_prof_row *prof;      /* TRIMODAL_PROFILE: per op, [TM_OP_COUNT] = grad zeroing */
};

/* A matmul whose weight operand was prepared for inference (packed, int8,
 * bf16): computes n from n->src[0] and n->prepared. */
void tm_prepared_matmul(tm_graph *g, tm_node *n);
/* Frees every n->prepared and g->prep_work (tm_graph_free). */
void tm_prepared_free_all(tm_graph *g);

/* Records the first build error of g (see tm_graph_fail); returns NULL. */
tm_node *tm_graph_fail_v(tm_graph *g, tm_status s, const char *fmt, va_list ap);

/* Per-op facts used by the planner. */
typedef struct {
    const char *name;
    unsigned bwd_src;  /* bit i: backward reads the value of src i (bit 15: all) */
    int bwd_out;       /* backward reads the node's own output */
} tm_op_info;

extern const tm_op_info tm_op_table[TM_OP_COUNT];

tm_status tm_plan(tm_graph *g);
tm_status tm_cpu_forward(tm_graph *g, tm_node *n);
tm_status tm_cpu_backward(tm_graph *g, tm_node *n);

#endif
