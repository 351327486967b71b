"""RandAugment's per-pixel work in one fused GPU kernel: every image's colour ops in turn, then its affine resampling.

npvit registers it with autograd's kernel registry (``autograd.kernels.register``) on
importing ``npvit.data``, so it is gated, self-checked against its twin and switched off
like autograd's own kernels; the twin runs augment.py's colour ops themselves.

RandAugment (Cubuk et al. 2019) gives each image its own few ops. Run as array ops,
each colour op is a gather of the images that drew it, a few elementwise ops, a clip
and a scatter, and the geometric ops one bilinear resampling: about a hundred launches
for a batch that draws them all. Here one block per image does it all: it loads the
image (uint8 or float) as float32, applies its colour ops in the order of its row of
``codes`` (each clipped to [0, 255]; the per-image reductions, contrast's mean grey
level and autocontrast's per-channel extremes, are block reductions, sharpness's 3x3
smoothing stencil reads the previous op's image), and if ``moved`` resamples it
through its ``matrix`` bilinearly, ``fill`` where a neighbour falls outside. Two
scratch images per block hold an op's input and output, since an op reads pixels that
other threads write (a channel's grey level, a neighbour).

The codes are augment.py's ``COLOUR_OPS``' positions plus one (0: no op); ``params``
holds each op's enhance factor, posterize's bits or solarize's threshold. Each op follows
PIL's ImageEnhance / ImageOps as npvit's CPU path (augment.py) writes them, and
the kernel takes every float32 operation in that path's order with no fused
multiply-add (``__fmul_rn``, ``__fadd_rn``), so it reproduces it exactly but for
contrast's mean, which a block sums in another order than NumPy's pairwise sum.

Tolerance (the same for every input dtype: the input is converted exactly and all the
work is float32): 1e-3 absolute on the [0, 255] scale. The mean's summation order moves
a contrast-adjusted value by a few float32 units in the last place of 255 (1.5e-5
each), well inside; a wrong kernel misses by grey levels. Where such a value then
lies within those few units of a rounding boundary of posterize or of solarize's
threshold, the two may differ by a step there; the self-check's images put posterize
and solarize where their inputs are whole numbers, so its verdict does not depend on
that, and a training batch is still a faithful RandAugment of its images.
"""
from __future__ import annotations

import numpy as np

from autograd.kernels import Kernel, Source, register

from .augment import _COLOUR_OPS, COLOUR_OPS, _per_example
from .core import array_module

THREADS = 256

SOURCE = Source("rand_augment", common=r"""
__device__ __forceinline__ float ld(unsigned char v) { return (float)v; }
__device__ __forceinline__ float clip255(float v) { return fminf(fmaxf(v, 0.0f), 255.0f); }

// ITU-R 601-2 luminance at pixel p, as PIL's convert('L'); a one-channel image is its own grey
__device__ __forceinline__ float grey_at(const float* img, int channels, int hw, int p) {
    if (channels == 1) return img[p];
    return __fadd_rn(__fadd_rn(__fmul_rn(img[p], 0.299f), __fmul_rn(img[hw + p], 0.587f)),
                     __fmul_rn(img[2 * hw + p], 0.114f));
}

// degenerate + factor (v - degenerate): ImageEnhance's blend
__device__ __forceinline__ float blend(float degenerate, float v, float factor) {
    return __fadd_rn(degenerate, __fmul_rn(factor, __fsub_rn(v, degenerate)));
}

// one colour op (code as COLOUR_OPS' position + 1) at pixel p of channel img, clipped
__device__ float colour_op(int code, float param, const float* image, const float* img, int channels, int H, int W,
                           int p, float mean, float lo, float hi) {
    const float v = img[p];
    float r = v;
    if (code == 1) {  // autocontrast: a constant channel stays as it is
        r = hi <= lo ? v : __fmul_rn(__fsub_rn(v, lo), __fdiv_rn(255.0f, __fsub_rn(hi, lo)));
    } else if (code == 2) {  // brightness
        r = blend(0.0f, v, param);
    } else if (code == 3) {  // color
        r = blend(grey_at(image, channels, H * W, p), v, param);
    } else if (code == 4) {  // contrast
        r = blend(mean, v, param);
    } else if (code == 5) {  // sharpness: PIL's SMOOTH (centre 5, the rest 1, over 13); border pixels kept
        const int y = p / W, x = p % W;
        float degenerate = v;
        if (y > 0 && y < H - 1 && x > 0 && x < W - 1) {
            float smooth = __fmul_rn(4.0f, v);
            for (int dy = -1; dy <= 1; ++dy)
                for (int dx = -1; dx <= 1; ++dx) smooth = __fadd_rn(smooth, img[p + dy * W + dx]);
            degenerate = __fdiv_rn(smooth, 13.0f);
        }
        r = blend(degenerate, v, param);
    } else if (code == 6) {  // posterize to param bits
        const float step = ldexpf(1.0f, 8 - (int)param);
        r = __fmul_rn(floorf(__fdiv_rn(rintf(v), step)), step);
    } else if (code == 7) {  // solarize at threshold param
        r = v >= param ? __fsub_rn(255.0f, v) : v;
    }
    return clip255(r);
}

// bilinear sample of channel img at output pixel p through m = [[a, b, tx], [c, d, ty]] (from the centre)
__device__ float resample(const float* m, const float* img, int H, int W, int p, float fill) {
    const float cx = 0.5f * (float)(W - 1), cy = 0.5f * (float)(H - 1);
    const float u = __fsub_rn((float)(p % W), cx), w = __fsub_rn((float)(p / W), cy);
    const float sx = __fadd_rn(__fadd_rn(__fadd_rn(__fmul_rn(m[0], u), __fmul_rn(m[1], w)), m[2]), cx);
    const float sy = __fadd_rn(__fadd_rn(__fadd_rn(__fmul_rn(m[3], u), __fmul_rn(m[4], w)), m[5]), cy);
    const float bx = floorf(sx), by = floorf(sy), fx = __fsub_rn(sx, bx), fy = __fsub_rn(sy, by);
    float total = 0.0f;
    for (int k = 0; k < 4; ++k) {  // neighbours (dy, dx) = (0, 0), (0, 1), (1, 0), (1, 1), added in that order
        const int dy = k >> 1, dx = k & 1;
        const float nx = bx + (float)dx, ny = by + (float)dy;
        const bool inside = nx >= 0.0f && nx < (float)W && ny >= 0.0f && ny < (float)H;
        const float pixel = inside ? img[(int)ny * W + (int)nx] : fill;
        const float part = __fmul_rn(__fmul_rn(dy ? fy : __fsub_rn(1.0f, fy), dx ? fx : __fsub_rn(1.0f, fx)), pixel);
        total = k ? __fadd_rn(total, part) : part;
    }
    return total;
}

// one block per image b: load, colour ops slot by slot (ping-pong between two scratch images), resample, clip
template <typename In>
__device__ void rand_augment_image(const In* x, const int* codes, const float* params, const float* matrix,
                                   const int* moved, float* out, float* scratch, int channels, int H, int W,
                                   int slots, float fill) {
    const int b = blockIdx.x, hw = H * W, n = channels * hw;
    const long long at = (long long)b * n;
    float* src = scratch + at;
    float* dst = scratch + (long long)gridDim.x * n + at;
    for (int i = threadIdx.x; i < n; i += blockDim.x) src[i] = ld(x[at + i]);
    __syncthreads();
    for (int s = 0; s < slots; ++s) {
        const int code = codes[b * slots + s];
        const float param = params[b * slots + s];
        if (code == 0) continue;  // the same for the whole block, so the barriers below are safe
        float mean = 0.0f;
        if (code == 4) {
            float part = 0.0f;
            for (int p = threadIdx.x; p < hw; p += blockDim.x) part += grey_at(src, channels, hw, p);
            mean = __fdiv_rn(block_sum(part), (float)hw);
        }
        for (int c = 0; c < channels; ++c) {
            float lo = 0.0f, hi = 0.0f;
            if (code == 1) {
                float low = INFINITY, high = -INFINITY;
                for (int p = threadIdx.x; p < hw; p += blockDim.x) {
                    low = fminf(low, src[c * hw + p]);
                    high = fmaxf(high, src[c * hw + p]);
                }
                lo = -block_max(-low);
                hi = block_max(high);
            }
            for (int p = threadIdx.x; p < hw; p += blockDim.x)
                dst[c * hw + p] = colour_op(code, param, src, src + c * hw, channels, H, W, p, mean, lo, hi);
        }
        __syncthreads();
        float* t = src; src = dst; dst = t;
    }
    const bool warp = moved[b] != 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        out[at + i] = clip255(warp ? resample(matrix + 6 * b, src + (i / hw) * hw, H, W, i % hw, fill) : src[i]);
}
""", body=r"""
extern "C" __global__ void NAME(rand_augment)(const scalar_t* x, const int* codes, const float* params,
                                              const float* matrix, const int* moved, float* out, float* scratch,
                                              int channels, int H, int W, int slots, float fill) {
    rand_augment_image(x, codes, params, matrix, moved, out, scratch, channels, H, W, slots, fill);
}

// uint8 images, the data sets' own; the same in every dtype's module, the launcher takes float32's
extern "C" __global__ void NAME(rand_augment_u8)(const unsigned char* x, const int* codes, const float* params,
                                                 const float* matrix, const int* moved, float* out, float* scratch,
                                                 int channels, int H, int W, int slots, float fill) {
    rand_augment_image(x, codes, params, matrix, moved, out, scratch, channels, H, W, slots, fill);
}
""")


def _resample(x, matrix, fill):
    """Bilinear resampling of float32 x (B, C, H, W) through (B, 2, 3) matrices, neighbours added in the kernel's order."""
    xp = array_module(x)
    B, C, H, W = x.shape
    u = xp.arange(W, dtype=xp.float32) - (W - 1) / 2  # (W,)
    v = (xp.arange(H, dtype=xp.float32) - (H - 1) / 2)[:, None]  # (H, 1)
    m = matrix[:, :, :, None, None]  # (B, 2, 3, 1, 1)
    sx = m[:, 0, 0] * u + m[:, 0, 1] * v + m[:, 0, 2] + xp.float32((W - 1) / 2)  # (B, H, W)
    sy = m[:, 1, 0] * u + m[:, 1, 1] * v + m[:, 1, 2] + xp.float32((H - 1) / 2)
    bx, by = xp.floor(sx), xp.floor(sy)
    fx, fy = sx - bx, sy - by
    b, c = xp.arange(B).reshape(-1, 1, 1, 1), xp.arange(C).reshape(1, -1, 1, 1)
    total = None
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        nx, ny = bx + dx, by + dy  # (B, H, W)
        inside = ((nx >= 0) & (nx < W) & (ny >= 0) & (ny < H))[:, None]  # (B, 1, H, W)
        pixel = x[b, c, xp.clip(ny, 0, H - 1).astype(xp.int64)[:, None], xp.clip(nx, 0, W - 1).astype(xp.int64)[:, None]]
        weight = ((fy if dy else 1 - fy) * (fx if dx else 1 - fx))[:, None]  # (B, 1, H, W)
        part = weight * xp.where(inside, pixel, fill)
        total = part if total is None else total + part
    return total


def rand_augment_forward(x, codes, params, matrix, moved, fill):
    """The twin: images ``x`` (B, C, H, W) through their colour ops ``codes`` (B, S) with ``params`` (B, S),
    then those with ``moved`` (B,) through their ``matrix`` (B, 2, 3); float32 (B, C, H, W) on [0, 255].

    The colour ops are augment.py's own. Every op runs on the whole batch and each image
    keeps its own op's result (no index lists, so no sync on a GPU); the ops work image
    by image, so each image's values are those of running its ops on it alone. The parameters are taken in float32 whatever
    they come in, as the kernel and the CPU path compute.
    """
    xp = array_module(x)
    x, params, matrix = x.astype(xp.float32), params.astype(xp.float32), matrix.astype(xp.float32)
    for s in range(codes.shape[1]):
        for code, op in enumerate(COLOUR_OPS, 1):
            took = _per_example(codes[:, s] == code)
            x = xp.where(took, xp.clip(_COLOUR_OPS[op](x, params[:, s]), 0.0, 255.0), x)
    x = xp.where(_per_example(moved != 0), _resample(x, matrix, fill), x)
    return xp.clip(x, 0.0, 255.0)


def _launch(function, x, codes, params, matrix, moved, fill):
    xp = array_module(x)
    x = xp.ascontiguousarray(x)
    B, C, H, W = x.shape
    out = xp.empty((B, C, H, W), dtype=xp.float32)
    scratch = xp.empty((2, B, C, H, W), dtype=xp.float32)  # each block's op input and output
    dtype, base = (np.float32, "rand_augment_u8") if x.dtype == np.uint8 else (x.dtype, "rand_augment")
    function(dtype, base)((B,), (THREADS,), (
        x, xp.ascontiguousarray(codes), xp.ascontiguousarray(params), xp.ascontiguousarray(matrix),
        xp.ascontiguousarray(moved), out, scratch, np.int32(C), np.int32(H), np.int32(W), np.int32(codes.shape[1]),
        np.float32(fill)))
    return out


def _sample(rng, dtype):
    """Every op on some image of 6x7 colour images and of a grey one, some images moved, on pixels in [0, 255].

    posterize and solarize come first in a row or after ops that keep whole numbers, so
    that their rounding and threshold see the values the twin sees (see the tolerance).
    """
    def case(x, rows):
        B = len(x)
        codes = np.array(rows, np.int32)  # (B, 2)
        params = np.where(codes == 6, 4.0, np.where(codes == 7, 100.0, rng.uniform(0.1, 1.9, codes.shape)))
        angle = np.deg2rad(rng.uniform(-30, 30, B))
        matrix = np.stack([np.stack([np.cos(angle), -np.sin(angle), rng.uniform(-3, 3, B)], -1),
                           np.stack([np.sin(angle), np.cos(angle), rng.uniform(-3, 3, B)], -1)], 1)
        return (x, codes, params.astype(np.float32), matrix.astype(np.float32),
                (np.arange(B) % 2).astype(np.int32), 128.0)

    rows = [[1, 2], [2, 3], [3, 4], [4, 5], [5, 0], [6, 1], [7, 4], [6, 7], [0, 0]]
    colour = rng.integers(0, 256, (len(rows), 3, 6, 7))
    colour[4, 1] = 77  # a constant channel: autocontrast leaves it
    cases = [case(colour.astype(dtype), rows), case(rng.integers(0, 256, (3, 1, 5, 5)).astype(dtype), rows[:3])]
    if dtype == np.float32:
        cases.append(case(colour.astype(np.uint8), rows))
    return cases


register(Kernel("rand_augment", SOURCE, _launch, rand_augment_forward, _sample,
                tolerances={name: (1e-3, 0.0) for name in ("float32", "float16", "bfloat16")}))
