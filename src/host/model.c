/* model.c — a VAE / autoencoder assembled from the config's layer list,
 * executed through the backend table. Nothing here touches tensor memory
 * directly: every pointer below is backend memory.
 *
 * Buffers (B = batch capacity, A = largest per-sample activation):
 *   x      [B, D]          input batch in [0,1], also the reconstruction target
 *   layer->out [B, n_out]  each layer's output; ReLU after a parametric layer
 *                          runs in place on that layer's output (the parametric
 *                          layer's backward needs its input, not its output);
 *                          flatten/reshape alias their input
 *   head   [B, 2L]         mu | log-variance (VAE) or the code (AE)
 *   z, dz  [B, L]
 *   gbuf   2 x [B, A]      ping-pong gradients for the backward sweep
 *   recon, kl [B]          per-sample loss parts
 *   masks                  the backend's ReLU masks of the fused dense + relu
 *                          pairs that need one (below), one buffer, last
 *
 * Dense + ReLU fusion (fuse_plan): a dense layer followed by a relu is issued
 * as one dense_relu_forward writing the relu's output (the relu runs in place
 * on the dense output, so that is the dense layer's buffer); the relu layer
 * does nothing. When the next non-view layer above such a pair is dense, its
 * backward is dense_backward_relu: it applies the ReLU's derivative to its
 * input gradient and writes the lower dense layer's bias gradient, so the
 * relu does nothing in the backward either and the lower layer's
 * dense_backward runs with db = NULL. That backward may use the mask the
 * pair's forward wrote (relu_mask_bytes; the CPU backend wants none). Above
 * any other layer (reshape -> convT) the relu's backward is act_backward as
 * for an unfused relu. Each op computes what the unfused sequence computes
 * (bit for bit on the CPU).
 *
 * Conv / convT + activation fusion (fuse_plan, vae_layer.act_fused): a conv
 * or convT layer followed by a relu or leaky relu is issued as one
 * conv2d_act_forward / convt2d_act_forward (the activation runs in place on
 * the conv's output); in the backward the activation's act_backward_bias
 * also writes the conv's bias gradient, and the conv's backward runs with
 * db = NULL. On the CUDA backend that is one bias + activation kernel
 * instead of two, and one activation-backward + bias-gradient pass instead
 * of two.
 *
 * Side segments (a backend with side_begin, vae_backend.h; CUDA with
 * $VAE_CUDA_SIDE=1): in the backward sweep each parametric layer's weight and
 * bias gradients go into a side segment, which may run beside the chain of
 * input gradients that the next layers need. Before a layer writes its input
 * gradient, the main queue waits for every side segment but the newest
 * (side_wait keep 1): the one before it read, as its output gradient, the
 * ping-pong buffer about to be overwritten (the newest reads the other one,
 * and the in-place activation backward writes the one just filled). The
 * step waits for all of them (keep 0) before anything reads the gradients.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vae_model.h"

static int layer_has_params(vae_layer_kind k) {
    return k == VAE_LAYER_DENSE || k == VAE_LAYER_CONV || k == VAE_LAYER_CONVT;
}

static int is_activation(vae_layer_kind k) {
    return k == VAE_LAYER_RELU || k == VAE_LAYER_LEAKY_RELU;
}

static int is_view(vae_layer_kind k) {
    return k == VAE_LAYER_FLATTEN || k == VAE_LAYER_RESHAPE;
}

static int add_param(vae_model *m, const char *prefix, const char *what, int ndim,
                     const int64_t *shape, int fan_in) {
    VAE_ASSERT(m->n_params < VAE_MAX_PARAMS);
    vae_param *p = &m->params[m->n_params];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s.%s", prefix, what);
    p->ndim = ndim;
    p->count = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        p->count *= (size_t)shape[i];
    }
    p->offset = m->n_real;
    p->fan_in = fan_in;
    m->n_real += p->count;
    return m->n_params++;
}

/* Parameters of one layer, named as PyTorch's state_dict would name them. */
static void layer_params(vae_model *m, vae_layer *l, const char *prefix) {
    const vae_layer_spec *s = &l->spec;
    l->w = l->b = -1;
    if (s->kind == VAE_LAYER_DENSE) {
        int in = vae_shape_count(s->in_shape), out = s->out;
        int64_t ws[2] = {out, in}, bs[1] = {out};
        l->w = add_param(m, prefix, "weight", 2, ws, in);
        l->b = add_param(m, prefix, "bias", 1, bs, in);
    } else if (s->kind == VAE_LAYER_CONV) {
        vae_conv_geom *g = &l->cg;
        g->cin = s->in_shape.c, g->hin = s->in_shape.h, g->win = s->in_shape.w;
        g->cout = s->out_shape.c, g->hout = s->out_shape.h, g->wout = s->out_shape.w;
        g->k = s->k, g->stride = s->stride, g->pad = s->pad;
        int64_t ws[4] = {g->cout, g->cin, g->k, g->k}, bs[1] = {g->cout};
        int fan_in = g->cin * g->k * g->k;
        l->w = add_param(m, prefix, "weight", 4, ws, fan_in);
        l->b = add_param(m, prefix, "bias", 1, bs, fan_in);
    } else if (s->kind == VAE_LAYER_CONVT) {
        vae_convt_geom *g = &l->tg;
        g->cin = s->in_shape.c, g->hin = s->in_shape.h, g->win = s->in_shape.w;
        g->cout = s->out_shape.c, g->hout = s->out_shape.h, g->wout = s->out_shape.w;
        g->k = s->k, g->stride = s->stride, g->pad = s->pad, g->out_pad = s->out_pad;
        int64_t ws[4] = {g->cin, g->cout, g->k, g->k}, bs[1] = {g->cout};
        /* torch computes ConvTranspose2d's fan_in from weight dim 1 (= cout) */
        int fan_in = g->cout * g->k * g->k;
        l->w = add_param(m, prefix, "weight", 4, ws, fan_in);
        l->b = add_param(m, prefix, "bias", 1, bs, fan_in);
    }
}

static size_t umax(size_t a, size_t b) { return a > b ? a : b; }

static void *balloc(vae_model *m, size_t bytes, int *ok) {
    if (!*ok) return NULL;
    void *p = m->be->alloc(m->be, bytes ? bytes : 8);
    if (!p) *ok = 0;
    else m->bytes += bytes;
    return p;
}

/* Output buffers for a list of layers whose first input is `in`. */
static void alloc_outputs(vae_model *m, vae_layer *ls, int n, real *in, int first_may_alias,
                          int *ok) {
    real *prev = in;
    int prev_owned = first_may_alias; /* prev buffer may be overwritten in place */
    for (int i = 0; i < n; i++) {
        vae_layer *l = &ls[i];
        size_t cnt = (size_t)vae_shape_count(l->spec.out_shape);
        if (l->spec.kind == VAE_LAYER_FLATTEN || l->spec.kind == VAE_LAYER_RESHAPE) {
            l->out = prev; /* a view: same memory, new shape */
        } else if (is_activation(l->spec.kind) && prev_owned) {
            l->out = prev; /* in place */
        } else {
            l->out = balloc(m, (size_t)m->B * cnt * sizeof(real), ok);
            prev_owned = layer_has_params(l->spec.kind);
        }
        if (is_activation(l->spec.kind)) prev_owned = 0;
        prev = l->out;
    }
}

/* Marks the dense + relu pairs of ls[0..n) (vae_layer.relu_fused) and, of
 * those, the pairs whose next non-view layer above is dense (relu_bwd_fused);
 * see the header comment. After alloc_outputs: the relu is in place. */
static void fuse_plan(const vae_backend *be, vae_layer *ls, int n) {
    /* a backend table without the fused ops (one made elsewhere) runs unfused */
    if (!be->dense_relu_forward || !be->dense_backward_relu) return;
    for (int i = 0; i + 1 < n; i++) {
        vae_layer *d = &ls[i], *r = &ls[i + 1];
        if (d->spec.kind != VAE_LAYER_DENSE || r->spec.kind != VAE_LAYER_RELU) continue;
        VAE_ASSERT(r->out == d->out);
        d->relu_fused = r->relu_fused = 1;
        int j = i + 2;
        while (j < n && is_view(ls[j].spec.kind)) j++;
        if (j < n && ls[j].spec.kind == VAE_LAYER_DENSE) d->relu_bwd_fused = r->relu_bwd_fused = 1;
    }
}

/* Marks the conv / convT + activation pairs of ls[0..n) (vae_layer.act_fused;
 * see the header comment). After alloc_outputs: the activation is in place. */
static void fuse_plan_conv(const vae_backend *be, vae_layer *ls, int n) {
    if (!be->act_backward_bias) return;
    for (int i = 0; i + 1 < n; i++) {
        vae_layer *d = &ls[i], *a = &ls[i + 1];
        if (!is_activation(a->spec.kind) || d->b < 0) continue;
        if (!(d->spec.kind == VAE_LAYER_CONV && be->conv2d_act_forward) &&
            !(d->spec.kind == VAE_LAYER_CONVT && be->convt2d_act_forward))
            continue;
        VAE_ASSERT(a->out == d->out);
        d->act_fused = a->act_fused = 1;
    }
}

/* Mask bytes of the dense layers of ls[0..n) that need one, each rounded up
 * to 256 bytes; with `base`, also points each such layer's mask into it. */
static size_t fuse_masks(vae_model *m, vae_layer *ls, int n, void *base, size_t off) {
    vae_backend *be = m->be;
    for (int i = 0; i < n; i++) {
        vae_layer *l = &ls[i];
        l->mask = NULL;
        if (l->spec.kind != VAE_LAYER_DENSE || !l->relu_bwd_fused || !be->relu_mask_bytes)
            continue;
        size_t bytes = be->relu_mask_bytes(be, m->B, l->spec.out);
        if (!bytes) continue;
        /* integer arithmetic: vae_model_plan_bytes's buffer is a small stand-in */
        if (base) l->mask = (void *)((uintptr_t)base + off);
        off += (bytes + 255) & ~(size_t)255;
    }
    return off;
}

int vae_model_create(vae_model *m, const vae_config *cfg, vae_backend *be, int B) {
    memset(m, 0, sizeof *m);
    m->cfg = cfg;
    m->be = be;
    m->B = B;
    m->D = vae_shape_count(cfg->input);
    m->L = cfg->latent;
    m->head_out = cfg->type == VAE_MODEL_VAE ? 2 * cfg->latent : cfg->latent;
    char prefix[32];

    /* encoder + head */
    for (int i = 0; i < cfg->n_enc; i++) {
        m->enc[i].spec = cfg->enc[i];
        snprintf(prefix, sizeof prefix, "encoder.%d", i);
        layer_params(m, &m->enc[i], prefix);
    }
    vae_layer *head = &m->enc[cfg->n_enc];
    memset(head, 0, sizeof *head);
    head->spec.kind = VAE_LAYER_DENSE;
    head->spec.out = m->head_out;
    head->spec.in_shape = cfg->n_enc ? cfg->enc[cfg->n_enc - 1].out_shape : cfg->input;
    head->spec.out_shape = (vae_shape){m->head_out, 1, 1};
    layer_params(m, head, "head");
    m->n_enc = cfg->n_enc + 1;

    for (int i = 0; i < cfg->n_dec; i++) {
        m->dec[i].spec = cfg->dec[i];
        snprintf(prefix, sizeof prefix, "decoder.%d", i);
        layer_params(m, &m->dec[i], prefix);
    }
    m->n_dec = cfg->n_dec;

    /* largest per-sample activation, for the gradient ping-pong buffers */
    size_t A = umax((size_t)m->D, (size_t)m->head_out);
    for (int i = 0; i < m->n_enc; i++)
        A = umax(A, (size_t)vae_shape_count(m->enc[i].spec.out_shape));
    for (int i = 0; i < m->n_dec; i++)
        A = umax(A, (size_t)vae_shape_count(m->dec[i].spec.out_shape));
    m->max_act = A;

    int ok = 1;
    size_t P = m->n_real * sizeof(real);
    m->p = balloc(m, P, &ok);
    m->g = balloc(m, P, &ok);
    m->m = balloc(m, P, &ok);
    m->v = balloc(m, P, &ok);
    m->x = balloc(m, (size_t)B * m->D * sizeof(real), &ok);
    alloc_outputs(m, m->enc, m->n_enc, m->x, 0, &ok);
    if (cfg->type == VAE_MODEL_VAE) {
        m->z = balloc(m, (size_t)B * m->L * sizeof(real), &ok);
        m->dz = balloc(m, (size_t)B * m->L * sizeof(real), &ok);
        m->dhead = balloc(m, (size_t)B * m->head_out * sizeof(real), &ok);
    } else {
        /* AE: the code is the head output; its gradient is dz itself */
        m->dz = balloc(m, (size_t)B * m->L * sizeof(real), &ok);
        m->z = ok ? head->out : NULL;
        m->dhead = m->dz;
    }
    alloc_outputs(m, m->dec, m->n_dec, m->z, 0, &ok);
    m->recon = balloc(m, (size_t)B * sizeof(real), &ok);
    m->kl = balloc(m, (size_t)B * sizeof(real), &ok);
    m->gbuf[0] = balloc(m, (size_t)B * A * sizeof(real), &ok);
    m->gbuf[1] = balloc(m, (size_t)B * A * sizeof(real), &ok);
    /* acc and state each with their snapshot copy behind them */
    m->acc = balloc(m, 2 * VAE_ACC_N * sizeof(double), &ok);
    m->acc_snap = ok ? m->acc + VAE_ACC_N : NULL;
    m->state = balloc(m, 2 * VAE_STEP_STATE_N * sizeof(int), &ok);
    m->state_snap = ok ? m->state + VAE_STEP_STATE_N : NULL;
    m->step_vals = balloc(m, 2 * sizeof(vae_step_vals), &ok);
    m->aux_vals = ok ? m->step_vals + 1 : NULL;
    if (ok) {
        fuse_plan(be, m->enc, m->n_enc);
        fuse_plan(be, m->dec, m->n_dec);
        fuse_plan_conv(be, m->enc, m->n_enc);
        fuse_plan_conv(be, m->dec, m->n_dec);
        /* the masks last: one buffer, carved in 256-byte steps */
        size_t enc_bytes = fuse_masks(m, m->enc, m->n_enc, NULL, 0);
        size_t mask_bytes = fuse_masks(m, m->dec, m->n_dec, NULL, enc_bytes);
        if (mask_bytes) {
            m->masks = balloc(m, mask_bytes, &ok);
            if (ok) {
                fuse_masks(m, m->enc, m->n_enc, m->masks, 0);
                fuse_masks(m, m->dec, m->n_dec, m->masks, enc_bytes);
            }
        }
    }
    if (!ok) {
        vae_error_prefix(VAE_ENOMEM, "allocating the model for batch %d (%zu parameters)", B,
                         m->n_real);
        vae_model_free(m);
        return VAE_ENOMEM;
    }
    be->zero(be, m->g, P);
    be->zero(be, m->m, P);
    be->zero(be, m->v, P);
    be->zero(be, m->kl, (size_t)B * sizeof(real));
    be->zero(be, m->acc, 2 * VAE_ACC_N * sizeof(double));
    be->zero(be, m->state, 2 * VAE_STEP_STATE_N * sizeof(int));
    be->zero(be, m->step_vals, 2 * sizeof(vae_step_vals));
    return VAE_OK;
}

/* ------------------------------------------------------ memory plan */

/* A backend that only counts what vae_model_create allocates: every buffer
 * is the same small static block (never read or written: the plan backend's
 * zero/release do nothing), and the sizes are summed rounded up to 256
 * bytes, as the CUDA arena places them. */
typedef struct {
    size_t bytes;
} plan_ctx;
static _Alignas(256) unsigned char g_plan_block[4096];
static void *plan_alloc(vae_backend *be, size_t bytes) {
    ((plan_ctx *)be->ctx)->bytes += (bytes + 255) & ~(size_t)255;
    return g_plan_block;
}
static void plan_release(vae_backend *be, void *p) { (void)be, (void)p; }
static void plan_zero(vae_backend *be, void *dst, size_t bytes) { (void)be, (void)dst, (void)bytes; }
/* The plan counts what a backend with the fused dense + ReLU ops and their
 * masks allocates (the CUDA backend); these are never called. */
static size_t plan_mask_bytes(vae_backend *be, int B, int O) {
    (void)be;
    return vae_relu_mask_bytes(B, O);
}
static void plan_dense_relu_forward(vae_backend *be, real *out, void *mask, const real *in,
                                    const real *w, const real *b, int B, int I, int O) {
    (void)be, (void)out, (void)mask, (void)in, (void)w, (void)b, (void)B, (void)I, (void)O;
}
static void plan_dense_backward_relu(vae_backend *be, real *din, real *dbin, real *dw, real *db,
                                     const real *dout, const real *in, const void *mask,
                                     const real *w, int B, int I, int O) {
    (void)be, (void)din, (void)dbin, (void)dw, (void)db, (void)dout, (void)in, (void)mask;
    (void)w, (void)B, (void)I, (void)O;
}

static void plan_setup(vae_backend *be, plan_ctx *ctx) {
    memset(be, 0, sizeof *be);
    be->name = "plan";
    be->ctx = ctx;
    be->alloc = plan_alloc;
    be->release = plan_release;
    be->zero = plan_zero;
    be->relu_mask_bytes = plan_mask_bytes;
    be->dense_relu_forward = plan_dense_relu_forward;
    be->dense_backward_relu = plan_dense_backward_relu;
}

size_t vae_model_plan_bytes(const vae_config *cfg, int B) {
    plan_ctx ctx = {0};
    vae_backend be;
    plan_setup(&be, &ctx);
    vae_model m;
    if (vae_model_create(&m, cfg, &be, B)) return 0;
    vae_model_free(&m);
    return ctx.bytes;
}

static void plan_destroy(vae_backend *be) {
    if (!be) return;
    free(be->ctx);
    free(be);
}

vae_backend *vae_backend_plan_create(void) {
    vae_backend *be = vae_calloc(1, sizeof *be);
    plan_ctx *ctx = be ? vae_calloc(1, sizeof *ctx) : NULL;
    if (!ctx) {
        free(be);
        return NULL;
    }
    plan_setup(be, ctx);
    be->destroy = plan_destroy;
    return be;
}

void vae_model_free(vae_model *m) {
    if (!m->be) return;
    /* Release in reverse allocation order (arena backends free LIFO). */
    vae_backend *be = m->be;
    void *bufs[2 * VAE_MAX_LAYERS + 24];
    int n = 0;
    bufs[n++] = m->p, bufs[n++] = m->g, bufs[n++] = m->m, bufs[n++] = m->v, bufs[n++] = m->x;
    real *prev = m->x;
    for (int i = 0; i < m->n_enc; i++) {
        if (m->enc[i].out && m->enc[i].out != prev) bufs[n++] = m->enc[i].out;
        prev = m->enc[i].out;
    }
    if (m->cfg->type == VAE_MODEL_VAE) {
        bufs[n++] = m->z, bufs[n++] = m->dz, bufs[n++] = m->dhead;
    } else {
        bufs[n++] = m->dz;
    }
    prev = m->z;
    for (int i = 0; i < m->n_dec; i++) {
        if (m->dec[i].out && m->dec[i].out != prev) bufs[n++] = m->dec[i].out;
        prev = m->dec[i].out;
    }
    bufs[n++] = m->recon, bufs[n++] = m->kl, bufs[n++] = m->gbuf[0], bufs[n++] = m->gbuf[1];
    bufs[n++] = m->acc, bufs[n++] = m->state, bufs[n++] = m->step_vals, bufs[n++] = m->masks;
    for (int i = n - 1; i >= 0; i--)
        if (bufs[i]) be->release(be, bufs[i]);
    memset(m, 0, sizeof *m);
}

void vae_model_init_params(vae_model *m, uint64_t seed) {
    real *host = vae_malloc(m->n_real ? m->n_real : 1, sizeof(real));
    VAE_ASSERT(host);
    for (int t = 0; t < m->n_params; t++) {
        const vae_param *p = &m->params[t];
        double bound = 1.0 / sqrt((double)p->fan_in);
        for (size_t i = 0; i < p->count; i++) {
            double u = vae_uniform_at(seed, VAE_RNG_INIT, (uint64_t)t, i);
            host[p->offset + i] = (real)(bound * (2.0 * u - 1.0));
        }
    }
    size_t P = m->n_real * sizeof(real);
    m->be->upload(m->be, m->p, host, P);
    m->be->zero(m->be, m->m, P);
    m->be->zero(m->be, m->v, P);
    free(host);
}

/* ------------------------------------------------------------ forward */

static const real *param(const vae_model *m, int idx) {
    return idx >= 0 ? m->p + m->params[idx].offset : NULL;
}
static real *grad(const vae_model *m, int idx) {
    return idx >= 0 ? m->g + m->params[idx].offset : NULL;
}

/* The backend's activation of an activation layer (its slope: spec.slope;
 * a relu's is 0, unused). */
static vae_act act_of(const vae_layer *l) {
    return l->spec.kind == VAE_LAYER_RELU ? VAE_ACT_RELU : VAE_ACT_LEAKY_RELU;
}

static void layer_forward(vae_model *m, vae_layer *l, const real *in, int B) {
    vae_backend *be = m->be;
    const vae_layer_spec *s = &l->spec;
    size_t n = (size_t)B * vae_shape_count(s->out_shape);
    switch (s->kind) {
    case VAE_LAYER_DENSE:
        if (l->relu_fused) /* writes the relu's output: the same buffer (fuse_plan) */
            be->dense_relu_forward(be, l->out, l->mask, in, param(m, l->w), param(m, l->b), B,
                                   vae_shape_count(s->in_shape), s->out);
        else
            be->dense_forward(be, l->out, in, param(m, l->w), param(m, l->b), B,
                              vae_shape_count(s->in_shape), s->out);
        break;
    case VAE_LAYER_CONV:
        if (l->act_fused) /* the activation is the next layer (fuse_plan_conv) */
            be->conv2d_act_forward(be, l->out, in, param(m, l->w), param(m, l->b), &l->cg, B,
                                   act_of(&l[1]), (real)l[1].spec.slope);
        else
            be->conv2d_forward(be, l->out, in, param(m, l->w), param(m, l->b), &l->cg, B);
        break;
    case VAE_LAYER_CONVT:
        if (l->act_fused)
            be->convt2d_act_forward(be, l->out, in, param(m, l->w), param(m, l->b), &l->tg, B,
                                    act_of(&l[1]), (real)l[1].spec.slope);
        else
            be->convt2d_forward(be, l->out, in, param(m, l->w), param(m, l->b), &l->tg, B);
        break;
    case VAE_LAYER_RELU:
    case VAE_LAYER_LEAKY_RELU:
        if (!l->relu_fused && !l->act_fused)
            be->act_forward(be, l->out, in, n, act_of(l), (real)s->slope);
        break;
    case VAE_LAYER_FLATTEN:
    case VAE_LAYER_RESHAPE:
        break; /* views */
    }
}

/* The lower dense layer of a relu_bwd_fused pair whose output (through
 * views) is layer i's input, or NULL. */
static const vae_layer *fused_pair_below(const vae_layer *ls, int i) {
    int j = i - 1;
    while (j >= 0 && is_view(ls[j].spec.kind)) j--;
    if (j < 1 || ls[j].spec.kind != VAE_LAYER_RELU || !ls[j].relu_bwd_fused) return NULL;
    return &ls[j - 1];
}

/* 1 if some layer below index i has parameters, i.e. the gradient w.r.t.
 * layer i's input is needed by the sweep. */
static int param_below(const vae_layer *ls, int i) {
    for (int j = 0; j < i; j++)
        if (layer_has_params(ls[j].spec.kind)) return 1;
    return 0;
}

/* 1 if every layer below index i is a view, so layer i's input gradient is
 * the gradient w.r.t. the network input itself. */
static int only_views_below(const vae_layer *ls, int i) {
    for (int j = 0; j < i; j++)
        if (!is_view(ls[j].spec.kind)) return 0;
    return 1;
}

static real *other_gbuf(vae_model *m, const real *p) {
    return p == m->gbuf[0] ? m->gbuf[1] : m->gbuf[0];
}

enum { PART_W = 1, PART_X = 2 };

/* The backward of parametric layer ls[i] (input `in`, output gradient
 * `dout`): with PART_W its weight gradient and bias gradient, with PART_X its
 * input gradient into dx (NULL: not needed) and, above a relu_bwd_fused
 * pair, the lower dense layer's bias gradient. A bias gradient that another
 * op writes is skipped: a relu_bwd_fused dense layer's comes from the dense
 * layer above (dbin), an act_fused conv's from the activation above
 * (act_backward_bias). */
static void param_backward(vae_model *m, const vae_layer *ls, int i, real *dx, const real *dout,
                           const real *in, int B, int parts) {
    vae_backend *be = m->be;
    const vae_layer *l = &ls[i];
    const vae_layer_spec *s = &l->spec;
    real *dw = (parts & PART_W) ? grad(m, l->w) : NULL;
    real *db = (parts & PART_W) && !l->relu_bwd_fused && !l->act_fused ? grad(m, l->b) : NULL;
    if (!(parts & PART_X)) dx = NULL;
    switch (s->kind) {
    case VAE_LAYER_DENSE: {
        const int I = vae_shape_count(s->in_shape);
        const vae_layer *lo = (parts & PART_X) ? fused_pair_below(ls, i) : NULL;
        if (lo) {
            VAE_ASSERT(dx); /* a dense layer below needs it */
            be->dense_backward_relu(be, dx, grad(m, lo->b), dw, db, dout, in, lo->mask,
                                    param(m, l->w), B, I, s->out);
        } else if (dx || dw || db) {
            be->dense_backward(be, dx, dw, db, dout, in, param(m, l->w), B, I, s->out);
        }
        break;
    }
    case VAE_LAYER_CONV:
        if (dx || dw || db)
            be->conv2d_backward(be, dx, dw, db, dout, in, param(m, l->w), &l->cg, B);
        break;
    case VAE_LAYER_CONVT:
        if (dx || dw || db)
            be->convt2d_backward(be, dx, dw, db, dout, in, param(m, l->w), &l->tg, B);
        break;
    default:
        VAE_ASSERT(!"param_backward of a layer without parameters");
    }
}

/* Backward sweep over layers ls[0..n) whose input is `in0`, starting from the
 * gradient `dout` w.r.t. the last output. The gradient w.r.t. in0 lands in
 * `din0` when din0 != NULL (it is not needed for the encoder's input x).
 * Parametric layers write their input gradient into the ping-pong buffer
 * that does not hold dout; activations work in place; views pass through. */
static void sweep_backward(vae_model *m, vae_layer *ls, int n, const real *in0, real *dout,
                           real *din0, int B) {
    vae_backend *be = m->be;
    for (int i = n - 1; i >= 0; i--) {
        vae_layer *l = &ls[i];
        const vae_layer_spec *s = &l->spec;
        const real *in = i ? ls[i - 1].out : in0;
        int need = din0 ? 1 : param_below(ls, i);
        real *target = (din0 && only_views_below(ls, i)) ? din0 : other_gbuf(m, dout);
        size_t cnt = (size_t)B * vae_shape_count(s->out_shape);
        real *dx = need ? target : NULL;
        switch (s->kind) {
        case VAE_LAYER_DENSE:
        case VAE_LAYER_CONV:
        case VAE_LAYER_CONVT:
            if (be->side_begin) {
                /* the weight gradient beside the data gradient; dx's buffer
                 * was the dout of the parametric layer above this one, whose
                 * side segment must be done reading it (side_wait keep 1) */
                be->side_begin(be);
                param_backward(m, ls, i, NULL, dout, in, B, PART_W);
                be->side_end(be);
                be->side_wait(be, 1);
                param_backward(m, ls, i, dx, dout, in, B, PART_X);
            } else {
                param_backward(m, ls, i, dx, dout, in, B, PART_W | PART_X);
            }
            dout = dx;
            break;
        case VAE_LAYER_RELU:
        case VAE_LAYER_LEAKY_RELU:
            if (l->relu_bwd_fused) break; /* done by the dense layer above */
            if (l->act_fused) {
                /* in place, with the bias gradient of the conv below (i >= 1) */
                const vae_layer *lo = &ls[i - 1];
                const int C = lo->spec.kind == VAE_LAYER_CONV ? lo->cg.cout : lo->tg.cout;
                const int HW = lo->spec.kind == VAE_LAYER_CONV ? lo->cg.hout * lo->cg.wout
                                                               : lo->tg.hout * lo->tg.wout;
                VAE_ASSERT(need && target != din0);
                be->act_backward_bias(be, dout, grad(m, lo->b), dout, l->out, B, C, HW, act_of(l),
                                      (real)s->slope);
                break;
            }
            if (need) {
                /* in place, unless this is where the input gradient must land */
                real *d = (target == din0) ? din0 : dout;
                be->act_backward(be, d, dout, l->out, cnt,
                                 s->kind == VAE_LAYER_RELU ? VAE_ACT_RELU : VAE_ACT_LEAKY_RELU,
                                 (real)s->slope);
                dout = d;
            }
            break;
        case VAE_LAYER_FLATTEN:
        case VAE_LAYER_RESHAPE:
            break; /* views: same memory, same gradient */
        }
        if (!dout) return; /* nothing below needs a gradient */
    }
    /* A network made only of views would leave the gradient where it was. */
    if (din0 && dout != din0) {
        size_t bytes = (size_t)B * vae_shape_count(ls[0].spec.in_shape) * sizeof(real);
        real *tmp = vae_malloc(bytes / sizeof(real) + 1, sizeof(real));
        VAE_ASSERT(tmp);
        be->download(be, tmp, dout, bytes);
        be->upload(be, din0, tmp, bytes);
        free(tmp);
    }
}

static void encode(vae_model *m, int B) {
    const real *h = m->x;
    for (int i = 0; i < m->n_enc; i++) {
        layer_forward(m, &m->enc[i], h, B);
        h = m->enc[i].out;
    }
}

real *vae_model_decode(vae_model *m, const real *z, int B) {
    VAE_ASSERT(B <= m->B);
    const real *h = z;
    for (int i = 0; i < m->n_dec; i++) {
        const vae_layer *l = &m->dec[i];
        if (m->round_bits && l->w >= 0)
            /* reduced precision: the weight layer's input is rounded in place
             * (it is the previous output, or z; not needed again) */
            m->be->round_mantissa(m->be, (real *)h, (size_t)B * vae_shape_count(l->spec.in_shape),
                                  m->round_bits);
        layer_forward(m, &m->dec[i], h, B);
        h = m->dec[i].out;
    }
    return (real *)h;
}

real *vae_model_head(vae_model *m) { return m->enc[m->n_enc - 1].out; }
real *vae_model_output(vae_model *m) { return m->n_dec ? m->dec[m->n_dec - 1].out : m->z; }

const vae_step_vals *vae_model_put_vals(vae_model *m, const vae_step_vals *v) {
    m->be->upload(m->be, m->aux_vals, v, sizeof *v);
    return m->aux_vals;
}

static void sample_latent(vae_model *m, int B, uint64_t seed, uint32_t stream,
                          const vae_step_vals *sv) {
    if (m->cfg->type == VAE_MODEL_VAE)
        m->be->reparam_forward(m->be, m->z, vae_model_head(m), B, m->L, seed, stream, sv);
}

void vae_model_forward(vae_model *m, int B, uint64_t seed, uint32_t stream,
                       const vae_step_vals *sv) {
    VAE_ASSERT(B <= m->B);
    vae_backend *be = m->be;
    encode(m, B);
    sample_latent(m, B, seed, stream, sv);
    vae_model_decode(m, m->z, B);
    be->recon_loss(be, NULL, m->recon, vae_model_output(m), m->x, B, m->D, m->cfg->likelihood,
                   (real)m->cfg->sigma, 0);
    if (m->cfg->type == VAE_MODEL_VAE)
        /* KL per sample; the gradient written to gbuf[0] is not used */
        be->kl_backward(be, m->gbuf[0], m->kl, NULL, vae_model_head(m), B, m->L, seed, stream, sv);
}

void vae_model_forward_backward(vae_model *m, int B, uint64_t seed, uint32_t stream,
                                const vae_step_vals *sv) {
    VAE_ASSERT(B <= m->B);
    vae_backend *be = m->be;
    const real inv_b = (real)1 / (real)B;
    encode(m, B);
    sample_latent(m, B, seed, stream, sv);
    vae_model_decode(m, m->z, B);

    /* loss = mean_b (recon_b + beta kl_b): d/d out = (1/B) dl/dout */
    real *dout = m->gbuf[0];
    be->recon_loss(be, dout, m->recon, vae_model_output(m), m->x, B, m->D, m->cfg->likelihood,
                   (real)m->cfg->sigma, inv_b);

    /* decoder backward: the gradient w.r.t. z lands in dz */
    sweep_backward(m, m->dec, m->n_dec, m->z, dout, m->dz, B);

    /* latent: KL and reparameterisation backward fused into dhead
     * (for an AE dhead is dz itself) */
    if (m->cfg->type == VAE_MODEL_VAE)
        be->kl_backward(be, m->dhead, m->kl, m->dz, vae_model_head(m), B, m->L, seed, stream, sv);

    /* encoder backward, head first; the input gradient is not needed */
    sweep_backward(m, m->enc, m->n_enc, m->x, m->dhead, NULL, B);
    /* every weight gradient is done before anything reads the gradients */
    if (be->side_wait) be->side_wait(be, 0);

    /* this step's sums; step_commit decides whether the epoch gets them */
    vae_sum2_into(be, m->acc + VAE_ACC_STEP_RECON, m->recon, (size_t)B, m->acc + VAE_ACC_STEP_KL,
                  m->kl, (size_t)B);
}

void vae_model_adam(vae_model *m, const vae_config *cfg, real lr, const vae_step_vals *sv) {
    vae_adam_hp hp;
    hp.lr = lr;
    hp.beta1 = (real)cfg->beta1;
    hp.beta2 = (real)cfg->beta2;
    hp.eps = (real)cfg->eps;
    hp.weight_decay = (real)cfg->weight_decay;
    hp.decoupled = cfg->decoupled_weight_decay;
    m->be->sumsq(m->be, m->acc + VAE_ACC_GNORM2, m->g, m->n_real);
    m->be->adam_step(m->be, m->p, m->g, m->m, m->v, m->n_real, &hp, (real)cfg->clip_grad_norm,
                     m->acc + VAE_ACC_GNORM2, m->state + VAE_STEP_FLAGS, sv);
}

int vae_model_find_param(const vae_model *m, const char *name) {
    for (int i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0) return i;
    return -1;
}

double vae_layer_flops(const vae_layer *l) {
    const vae_layer_spec *s = &l->spec;
    switch (s->kind) {
    case VAE_LAYER_DENSE:
        return 2.0 * vae_shape_count(s->in_shape) * s->out;
    case VAE_LAYER_CONV:
        return 2.0 * l->cg.cout * l->cg.hout * l->cg.wout * l->cg.cin * l->cg.k * l->cg.k;
    case VAE_LAYER_CONVT:
        return 2.0 * l->tg.cin * l->tg.hin * l->tg.win * l->tg.cout * l->tg.k * l->tg.k;
    case VAE_LAYER_RELU:
    case VAE_LAYER_LEAKY_RELU:
        return (double)vae_shape_count(s->out_shape);
    default:
        return 0;
    }
}

size_t vae_layer_params(const vae_model *m, const vae_layer *l) {
    size_t n = 0;
    if (l->w >= 0) n += m->params[l->w].count;
    if (l->b >= 0) n += m->params[l->b].count;
    return n;
}
