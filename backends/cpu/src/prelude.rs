//! The C prelude every generated library starts with: a thin vector layer
//! (`vf`, `VADD`, `VFMA`, ...) mapped to each target's intrinsics, and
//! vectorized math (exp, erf, tanh, sigmoid) built on it, so kernel
//! templates are written once for all targets.

use crate::target::{Isa, Target};

const AVX512: &str = r#"
#include <immintrin.h>
typedef __m512 vf;
#define VW 16
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps((p), (v))
#define VSET1(x) _mm512_set1_ps(x)
#define VZERO() _mm512_setzero_ps()
#define VADD(a, b) _mm512_add_ps(a, b)
#define VSUB(a, b) _mm512_sub_ps(a, b)
#define VMUL(a, b) _mm512_mul_ps(a, b)
#define VDIV(a, b) _mm512_div_ps(a, b)
#define VMAX(a, b) _mm512_max_ps(a, b)
#define VMIN(a, b) _mm512_min_ps(a, b)
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VSQRT(a) _mm512_sqrt_ps(a)
#define VFLOOR(a) _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)
#define VCEIL(a) _mm512_roundscale_ps(a, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC)
#define VROUND(a) _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define VABS(a) _mm512_abs_ps(a)
#define VNEG(a) _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), _mm512_set1_epi32((int)0x80000000u)))
/* a < b ? x : y */
#define VSEL_LT(a, b, x, y) _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), y, x)
/* 2^n for integral n in [-126, 127] */
#define VPOW2I(n) _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23))
/* p[0], p[2], ..., p[2 * VW - 2]: a stride-2 load (reads 2 * VW floats) */
#define VLOAD_EVEN(p) _mm512_permutex2var_ps(_mm512_loadu_ps(p), _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), _mm512_loadu_ps((p) + 16))
#define VHSUM(v) _mm512_reduce_add_ps(v)
#define VHMAX(v) _mm512_reduce_max_ps(v)
/* stores lanes 0..n-1 (0 < n < VW) */
#define VSTORE_PART(p, v, n) _mm512_mask_storeu_ps((p), (__mmask16)((1u << (n)) - 1u), (v))
/* loads lanes 0..n-1 (0 < n < VW), the rest zero, touching no memory past p[n-1] */
#define VLOAD_PART(p, n) _mm512_maskz_loadu_ps((__mmask16)((1u << (n)) - 1u), (p))
/* int32 lane vectors, gathers and scatters of floats at base + idx[lane] (Winograd tiles) */
typedef __m512i vi;
#define VI_LOAD(p) _mm512_loadu_si512((const void *)(p))
#define VGATHER(base, idx) _mm512_i32gather_ps((idx), (base), 4)
/* lanes whose bit in m is set, the rest zero */
#define VGATHER_MASK(base, idx, m) _mm512_mask_i32gather_ps(_mm512_setzero_ps(), (__mmask16)(m), (idx), (base), 4)
#define VSCATTER_MASK(base, idx, v, m) _mm512_mask_i32scatter_ps((base), (__mmask16)(m), (idx), (v), 4)
"#;

const AVX2: &str = r#"
#include <immintrin.h>
typedef __m256 vf;
#define VW 8
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps((p), (v))
#define VSET1(x) _mm256_set1_ps(x)
#define VZERO() _mm256_setzero_ps()
#define VADD(a, b) _mm256_add_ps(a, b)
#define VSUB(a, b) _mm256_sub_ps(a, b)
#define VMUL(a, b) _mm256_mul_ps(a, b)
#define VDIV(a, b) _mm256_div_ps(a, b)
#define VMAX(a, b) _mm256_max_ps(a, b)
#define VMIN(a, b) _mm256_min_ps(a, b)
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VSQRT(a) _mm256_sqrt_ps(a)
#define VFLOOR(a) _mm256_floor_ps(a)
#define VCEIL(a) _mm256_ceil_ps(a)
#define VROUND(a) _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define VABS(a) _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a)
#define VNEG(a) _mm256_xor_ps(_mm256_set1_ps(-0.0f), a)
#define VSEL_LT(a, b, x, y) _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_LT_OQ))
static inline vf VLOAD_EVEN(const float *p) {
    __m256 e = _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), 0x88);
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8));
}
#define VPOW2I(n) _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23))
static inline float VHSUM(vf v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline float VHMAX(vf v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline void VSTORE_PART(float *p, vf v, int n) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_maskstore_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), lane), v);
}
static inline vf VLOAD_PART(const float *p, int n) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), lane));
}
/* int32 lane vectors, gathers and scatters of floats at base + idx[lane] (Winograd tiles) */
typedef __m256i vi;
#define VI_LOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#define VGATHER(base, idx) _mm256_i32gather_ps((base), (idx), 4)
static inline vf VGATHER_MASK(const float *base, vi idx, unsigned m) {
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i on = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)m), bit), bit);
    return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), base, idx, _mm256_castsi256_ps(on), 4);
}
static inline void VSCATTER_MASK(float *base, vi idx, vf v, unsigned m) {
    float t[8];
    int o[8];
    _mm256_storeu_ps(t, v);
    _mm256_storeu_si256((__m256i *)o, idx);
    for (int l = 0; l < 8; l++)
        if ((m >> l) & 1u) base[o[l]] = t[l];
}
"#;

const NEON: &str = r#"
#include <arm_neon.h>
typedef float32x4_t vf;
#define VW 4
#define VLOAD(p) vld1q_f32(p)
#define VSTORE(p, v) vst1q_f32((p), (v))
#define VSET1(x) vdupq_n_f32(x)
#define VZERO() vdupq_n_f32(0.0f)
#define VADD(a, b) vaddq_f32(a, b)
#define VSUB(a, b) vsubq_f32(a, b)
#define VMUL(a, b) vmulq_f32(a, b)
#define VDIV(a, b) vdivq_f32(a, b)
#define VMAX(a, b) vmaxq_f32(a, b)
#define VMIN(a, b) vminq_f32(a, b)
#define VFMA(a, b, c) vfmaq_f32(c, a, b)
#define VSQRT(a) vsqrtq_f32(a)
#define VFLOOR(a) vrndmq_f32(a)
#define VCEIL(a) vrndpq_f32(a)
#define VROUND(a) vrndnq_f32(a)
#define VABS(a) vabsq_f32(a)
#define VNEG(a) vnegq_f32(a)
#define VSEL_LT(a, b, x, y) vbslq_f32(vcltq_f32(a, b), x, y)
#define VPOW2I(n) vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)), 23))
#define VLOAD_EVEN(p) (vld2q_f32(p).val[0])
#define VHSUM(v) vaddvq_f32(v)
#define VHMAX(v) vmaxvq_f32(v)
static inline void VSTORE_PART(float *p, vf v, int n) {
    float t[4];
    vst1q_f32(t, v);
    for (int i = 0; i < n; i++) p[i] = t[i];
}
static inline vf VLOAD_PART(const float *p, int n) {
    float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int i = 0; i < n; i++) t[i] = p[i];
    return vld1q_f32(t);
}
/* int32 lane vectors, gathers and scatters of floats at base + idx[lane] (Winograd tiles) */
typedef int32x4_t vi;
#define VI_LOAD(p) vld1q_s32(p)
static inline vf VGATHER(const float *base, vi idx) {
    vf r = vld1q_dup_f32(base + vgetq_lane_s32(idx, 0));
    r = vld1q_lane_f32(base + vgetq_lane_s32(idx, 1), r, 1);
    r = vld1q_lane_f32(base + vgetq_lane_s32(idx, 2), r, 2);
    return vld1q_lane_f32(base + vgetq_lane_s32(idx, 3), r, 3);
}
static inline vf VGATHER_MASK(const float *base, vi idx, unsigned m) {
    int32_t o[4];
    float t[4];
    vst1q_s32(o, idx);
    for (int l = 0; l < 4; l++) t[l] = ((m >> l) & 1u) ? base[o[l]] : 0.0f;
    return vld1q_f32(t);
}
static inline void VSCATTER_MASK(float *base, vi idx, vf v, unsigned m) {
    float t[4];
    int32_t o[4];
    vst1q_f32(t, v);
    vst1q_s32(o, idx);
    for (int l = 0; l < 4; l++)
        if ((m >> l) & 1u) base[o[l]] = t[l];
}
"#;

/// Target-independent vector and scalar math over the macro layer.
const MATH: &str = r#"
#include <stdint.h>
#include <string.h>
#include <math.h>

/* e^x: range reduction to r in [-ln2/2, ln2/2], degree-7 Taylor (rel. error < 1e-7). */
static inline vf v_exp(vf x) {
    x = VMIN(VMAX(x, VSET1(-87.3f)), VSET1(88.3f));
    vf n = VROUND(VMUL(x, VSET1(1.44269504088896341f)));
    vf r = VFMA(n, VSET1(-0.693145751953125f), x);
    r = VFMA(n, VSET1(-1.428606765330187045e-06f), r);
    vf p = VSET1(1.0f / 5040.0f);
    p = VFMA(p, r, VSET1(1.0f / 720.0f));
    p = VFMA(p, r, VSET1(1.0f / 120.0f));
    p = VFMA(p, r, VSET1(1.0f / 24.0f));
    p = VFMA(p, r, VSET1(1.0f / 6.0f));
    p = VFMA(p, r, VSET1(0.5f));
    p = VFMA(p, r, VSET1(1.0f));
    p = VFMA(p, r, VSET1(1.0f));
    return VMUL(p, VPOW2I(n));
}
static inline vf v_sigmoid(vf x) { return VDIV(VSET1(1.0f), VADD(VSET1(1.0f), v_exp(VNEG(x)))); }
/* tanh: odd series for |x| < 0.1 (no cancellation), 1 - 2/(e^2|x| + 1) above. */
static inline vf v_tanh(vf x) {
    vf ax = VABS(x);
    vf x2 = VMUL(x, x);
    vf small = VFMA(x2, VSET1(62.0f / 2835.0f), VSET1(-17.0f / 315.0f));
    small = VFMA(small, x2, VSET1(2.0f / 15.0f));
    small = VFMA(small, x2, VSET1(-1.0f / 3.0f));
    small = VFMA(VMUL(small, x2), ax, ax);
    vf e = v_exp(VMUL(ax, VSET1(2.0f)));
    vf big = VSUB(VSET1(1.0f), VDIV(VSET1(2.0f), VADD(e, VSET1(1.0f))));
    vf t = VSEL_LT(ax, VSET1(0.1f), small, big);
    return VSEL_LT(x, VZERO(), VNEG(t), t);
}
/* erf: Maclaurin series for |x| < 0.5, Abramowitz-Stegun 7.1.26 (abs. error 1.5e-7) above. */
static inline vf v_erf(vf x) {
    vf ax = VABS(x);
    vf x2 = VMUL(x, x);
    /* series: x (1 - x^2/3 + x^4/10 - x^6/42 + x^8/216 - x^10/1320) * 2/sqrt(pi) */
    vf q = VFMA(x2, VSET1(-1.0f / 1320.0f), VSET1(1.0f / 216.0f));
    q = VFMA(q, x2, VSET1(-1.0f / 42.0f));
    q = VFMA(q, x2, VSET1(1.0f / 10.0f));
    q = VFMA(q, x2, VSET1(-1.0f / 3.0f));
    q = VFMA(q, x2, VSET1(1.0f));
    vf small = VMUL(VMUL(q, ax), VSET1(1.12837916709551257f));
    vf t = VDIV(VSET1(1.0f), VFMA(ax, VSET1(0.3275911f), VSET1(1.0f)));
    vf p = VFMA(t, VSET1(1.061405429f), VSET1(-1.453152027f));
    p = VFMA(p, t, VSET1(1.421413741f));
    p = VFMA(p, t, VSET1(-0.284496736f));
    p = VFMA(p, t, VSET1(0.254829592f));
    p = VMUL(p, t);
    vf big = VSUB(VSET1(1.0f), VMUL(p, v_exp(VNEG(x2))));
    vf r = VSEL_LT(ax, VSET1(0.5f), small, big);
    return VSEL_LT(x, VZERO(), VNEG(r), r);
}
static inline vf v_relu(vf x) { return VMAX(x, VZERO()); }
static inline vf v_leaky(vf x, float a) { return VSEL_LT(x, VZERO(), VMUL(x, VSET1(a)), x); }
static inline vf v_prelu(vf x, vf s) { return VSEL_LT(x, VZERO(), VMUL(x, s), x); }
static inline vf v_clip(vf x, float lo, float hi) { return VMIN(VMAX(x, VSET1(lo)), VSET1(hi)); }
static inline vf v_hardsigmoid(vf x, float a, float b) {
    return VMIN(VMAX(VFMA(x, VSET1(a), VSET1(b)), VZERO()), VSET1(1.0f));
}
static inline vf v_hardswish(vf x) { return VMUL(x, v_hardsigmoid(x, 1.0f / 6.0f, 0.5f)); }
static inline vf v_gelu(vf x) {
    return VMUL(VMUL(x, VSET1(0.5f)), VADD(VSET1(1.0f), v_erf(VMUL(x, VSET1(0.70710678118654752f)))));
}
static inline vf v_gelu_tanh(vf x) {
    vf u = VMUL(VSET1(0.79788456080286536f), VFMA(VMUL(VMUL(x, x), x), VSET1(0.044715f), x));
    return VMUL(VMUL(x, VSET1(0.5f)), VADD(VSET1(1.0f), v_tanh(u)));
}
static inline vf v_swish(vf x, float a) { return VMUL(x, v_sigmoid(VMUL(x, VSET1(a)))); }
static inline vf v_recip(vf x) { return VDIV(VSET1(1.0f), x); }

static inline float s_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
static inline float s_relu(float x) { return x > 0.0f ? x : 0.0f; }
static inline float s_leaky(float x, float a) { return x < 0.0f ? x * a : x; }
static inline float s_prelu(float x, float s) { return x < 0.0f ? x * s : x; }
static inline float s_clip(float x, float lo, float hi) { return fminf(fmaxf(x, lo), hi); }
static inline float s_hardsigmoid(float x, float a, float b) { return fminf(fmaxf(a * x + b, 0.0f), 1.0f); }
static inline float s_hardswish(float x) { return x * s_hardsigmoid(x, 1.0f / 6.0f, 0.5f); }
static inline float s_gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
static inline float s_gelu_tanh(float x) {
    return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
}
static inline float s_swish(float x, float a) { return x * s_sigmoid(a * x); }
static inline float s_recip(float x) { return 1.0f / x; }
static inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }
"#;

/// The prelude for `target`.
pub fn prelude(target: &Target) -> String {
    let isa = match target.isa() {
        Isa::Avx512 => AVX512,
        Isa::Avx2 => AVX2,
        Isa::Neon => NEON,
    };
    format!(
        "/* generated by carbide-backend-cpu for {} */\n{isa}{MATH}",
        target.name()
    )
}
