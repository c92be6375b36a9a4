// The ELM layer scan's time loops in C++ (elm_core/native/__init__.py builds and loads this file).
//
// The same computation as the Python loops of elm_core/fast.py (_LayerScan, its docstring gives the
// algebra and the buffer layouts), for float32 on CPU with one hidden MLP layer: each step is one
// parallel pass over the neurons that runs a neuron's whole chain (synapse gather, both MLP layers,
// sigmoid, memory update, readout, high-pass) for every sample, instead of about ten tensor operations
// over all neurons. The recurrent input is gathered from the sparse W_rec by hand ("sparse" mode), or
// added by one matrix product per step ("fused" mode). The backward loop carries the state gradients
// step by step and accumulates the per-neuron weight gradients and W_rec's value gradient as it goes;
// a dense M's gradient is one product over all steps afterwards, in Python.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <vector>

namespace {

constexpr int64_t kNone = 0, kFused = 1, kSparse = 2;

// exp(x) for the sigmoid: Cody-Waite range reduction and a degree-6 polynomial, branch-free so that
// the compiler vectorises the loops that call it (std::exp would stay scalar). Relative error about
// 2e-7 on [-87, 88]; beyond that range the input is clamped (sigmoid is 0 or 1 to float precision).
inline float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  float r = std::fma(n, -0.693359375f, x);
  r = std::fma(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p * r, r, r) + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

template <typename T>
T* ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->data_ptr<T>() : nullptr;
}

// Neurons per parallel task: about 32k multiply-adds, so that a small layer runs on one thread
// rather than paying for waking the others every step.
int64_t grain_size(int64_t work_per_neuron) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_neuron)); }

void check_cpu_f32(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(), "elm_native: ", name,
              " must be a contiguous float32 CPU tensor");
}

// Loops over the features run on whole vectors of 8 or 16 floats (GCC / Clang vector extensions:
// one AVX2 or AVX-512 register, or two of the narrower kind), the samples in chunks of kBLane: every
// buffer and weight is zero-padded to those multiples, so that the loops have no scalar remainder
// (at d_m 15 an unpadded loop spends more time in its remainder than in its vector part).
constexpr int64_t kBLane = 8;
typedef float Vec8 __attribute__((vector_size(8 * sizeof(float))));
typedef float Vec16 __attribute__((vector_size(16 * sizeof(float))));
typedef Vec8 VecB;

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// A feature dimension's padded width: a multiple of 16 where that takes fewer vectors than
// multiples of 8 (d 9..16, 17..24 -> 16, 32), else of 8 (d <= 8 -> 8)
inline int64_t padded(int64_t d) { return (d + 15) / 16 < (d + 7) / 8 ? round_up(d, 16) : round_up(d, 8); }

template <typename V>
inline V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename V>
inline void store(float* p, V v) {
  std::memcpy(p, &v, sizeof v);
}

// C[r, a] (+)= sum over k < K of A(r, k) W[k, a], A(r, k) = A[r ars + k aks], for r < rows and a < cols
// (a multiple of the vector width): a register-blocked micro-kernel, a 4-row block of C stays in four
// vector registers while k runs.
template <typename V>
inline void gemm_v(float* __restrict C, int64_t ldc, const float* __restrict A, int64_t ars, int64_t aks,
                   const float* __restrict W, int64_t ldw, int64_t rows, int64_t cols, int64_t K, bool accumulate) {
  constexpr int64_t L = sizeof(V) / sizeof(float);
  const int64_t rows4 = rows / 4 * 4;
  for (int64_t r0 = 0; r0 < rows4; r0 += 4) {
    for (int64_t a0 = 0; a0 < cols; a0 += L) {
      float* c = C + r0 * ldc + a0;
      V c0 = {}, c1 = {}, c2 = {}, c3 = {};
      if (accumulate) c0 = load<V>(c), c1 = load<V>(c + ldc), c2 = load<V>(c + 2 * ldc), c3 = load<V>(c + 3 * ldc);
      const float *x0 = A + r0 * ars, *x1 = x0 + ars, *x2 = x1 + ars, *x3 = x2 + ars;
      const float* w = W + a0;
      for (int64_t k = 0; k < K; ++k, w += ldw) {
        const V wk = load<V>(w);
        const int64_t o = k * aks;
        c0 += x0[o] * wk;
        c1 += x1[o] * wk;
        c2 += x2[o] * wk;
        c3 += x3[o] * wk;
      }
      store(c, c0), store(c + ldc, c1), store(c + 2 * ldc, c2), store(c + 3 * ldc, c3);
    }
  }
  for (int64_t r = rows4; r < rows; ++r) {
    for (int64_t a0 = 0; a0 < cols; a0 += L) {
      float* c = C + r * ldc + a0;
      V c0 = accumulate ? load<V>(c) : V{};
      const float* x = A + r * ars;
      const float* w = W + a0;
      for (int64_t k = 0; k < K; ++k, w += ldw) c0 += x[k * aks] * load<V>(w);
      store(c, c0);
    }
  }
}

inline void gemm(float* C, int64_t ldc, const float* A, int64_t ars, int64_t aks, const float* W, int64_t ldw,
                 int64_t rows, int64_t cols, int64_t K, bool accumulate) {
  if (cols % 16 == 0) {
    gemm_v<Vec16>(C, ldc, A, ars, aks, W, ldw, rows, cols, K, accumulate);
  } else {
    gemm_v<Vec8>(C, ldc, A, ars, aks, W, ldw, rows, cols, K, accumulate);
  }
}

// dst[r, 0:cols] = src[r, 0:cols] for r < rows: rows of different strides, copied inline (the rows are
// short: a call to memcpy per row costs more than the copy; -fno-tree-loop-distribute-patterns keeps
// the compiler from making these loops such calls)
inline void copy_rows(float* __restrict dst, int64_t ldd, const float* __restrict src, int64_t lds, int64_t rows,
                      int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t a = 0; a < cols; ++a) dst[r * ldd + a] = src[r * lds + a];
}

// out[0:len] = sum over e in [e0, e1) of val[e] * src[idx[e] * len + 0:len], len a multiple of kBLane:
// a row of a sparse product, accumulated in registers (two chains, to hide the multiply-add latency)
inline void gather_rows(float* __restrict out, const float* __restrict val, const int64_t* __restrict idx,
                        int64_t e0, int64_t e1, const float* __restrict src, int64_t len) {
  for (int64_t b0 = 0; b0 < len; b0 += kBLane) {
    VecB acc0 = {}, acc1 = {};
    int64_t e = e0;
    for (; e + 1 < e1; e += 2) {
      acc0 += val[e] * load<VecB>(src + idx[e] * len + b0);
      acc1 += val[e + 1] * load<VecB>(src + idx[e + 1] * len + b0);
    }
    if (e < e1) acc0 += val[e] * load<VecB>(src + idx[e] * len + b0);
    store(out + b0, acc0 + acc1);
  }
}

// out (n, ld) = a (n, batch) times mask (n, batch) if any, each row padded to ld: the source a sparse
// product gathers from
inline void masked_rows(float* __restrict out, int64_t ld, const float* __restrict a, const float* __restrict mask,
                        int64_t n, int64_t batch) {
  for (int64_t src = 0; src < n; ++src)
    for (int64_t bb = 0; bb < batch; ++bb) {
      const int64_t q = src * batch + bb;
      out[src * ld + bb] = mask != nullptr ? a[q] * mask[q] : a[q];
    }
}

// w zero-padded along its last dimension to `to`, contiguous
at::Tensor pad_last(const at::Tensor& w, int64_t to) {
  return w.size(-1) == to ? w.contiguous() : at::constant_pad_nd(w, {0, to - w.size(-1)}).contiguous();
}


// "Tiny" neurons: a layer without recurrence and without a hidden MLP layer (u = z0, so d1 = d_m), of
// d_m <= kTinyMaxDm (the readout layer, d_m 3). Padding each sample's d_m features to a vector would
// leave most lanes empty, so these loops run flat over a neuron's (B, d_m) block, q = b d_m + j, where
// the memory update, the sigmoid and the state gradients are element-wise; the first layer's
// (d_m x d_m) product mixes the features of one sample only, so it is a sum over its 2 d_m - 1
// diagonals, z[q] += md[q + delta] W_delta[q] (W_delta zero where j + delta leaves the sample). Every
// per-feature weight repeats along q with period d_m: kept as patterns of lcm(d_m, kBLane) floats,
// read a vector at a time.
constexpr int64_t kTinyMaxDm = 8, kMargin = 8;  // kMargin >= kTinyMaxDm - 1: room for the shifted loads

struct Tiny {
  int64_t d_m, L, Lp, P, nd, npat;  // L = B d_m, Lp its vector multiple, P the pattern length
  std::vector<float> pat;           // (N, npat, P)
  Tiny(int64_t n, int64_t batch, int64_t d_m_, int64_t n_fixed)
      : d_m(d_m_), L(batch * d_m_), Lp(round_up(batch * d_m_, kBLane)), nd(2 * d_m_ - 1), npat(n_fixed + nd) {
    int64_t a = d_m, b = kBLane;
    while (b != 0) a %= b, std::swap(a, b);
    P = d_m * kBLane / a;
    pat.assign(n * npat * P, 0.0f);
  }
  const float* at(int64_t i, int64_t k) const { return pat.data() + (i * npat + k) * P; }
  // pattern k of neuron i: f(j), j = q % d_m
  template <typename F>
  void set(int64_t i, int64_t k, F f) {
    float* p = pat.data() + (i * npat + k) * P;
    for (int64_t q = 0; q < P; ++q) p[q] = f(q % d_m);
  }
  // the offset of diagonal d (0 <= d < nd)
  int64_t delta(int64_t d) const { return d - (d_m - 1); }
};

// A neuron's activity from its readout o: the high-pass p = o - r_t = kr (o - r_{t-1}) (r updated), if
// any, plus the bias; relu or identity
inline float activity(float o, float& r, float bias, bool has_kr, float kr, bool relu) {
  float act = bias + o;
  if (has_kr) {
    const float d = o - r;
    r += (1.0f - kr) * d;
    act = bias + kr * d;
  }
  return relu && act < 0.0f ? 0.0f : act;
}

// d loss / d o from d loss / d p through the high-pass (p = o - r_t, r_t = kr r_{t-1} + (1 - kr) o),
// dr updated; without one, o passes straight through
inline float highpass_grad(float dp, float& dr, bool has_kr, float kr) {
  if (!has_kr) return dp;
  const float dout = dp + (1.0f - kr) * (dr - dp);
  dr -= dout;
  return dout;
}

inline void copy_padded(float* dst, const float* src, int64_t len, int64_t padded_len) {
  std::memcpy(dst, src, len * sizeof(float));
  for (int64_t q = len; q < padded_len; ++q) dst[q] = 0.0f;
}

}  // namespace

// Forward over all steps. Writes m_out (T, N, B, d_m), a_out (T, N, B) and, when kept, the saved
// tensors of the backward; returns the final high-pass state r (N, B).
at::Tensor scan_forward(int64_t mode, const std::optional<at::Tensor>& P, const std::optional<at::Tensor>& table,
                        const std::optional<at::Tensor>& tokens, const std::optional<at::Tensor>& R,
                        const std::optional<at::Tensor>& crow, const std::optional<at::Tensor>& col,
                        const at::Tensor& W0T, const std::optional<at::Tensor>& W1T, const std::optional<at::Tensor>& b1,
                        const at::Tensor& km,
                        const at::Tensor& c, const at::Tensor& wy, const at::Tensor& b, std::optional<double> kr,
                        bool relu, const std::optional<at::Tensor>& rec_mask, const at::Tensor& a0,
                        const at::Tensor& m0, const at::Tensor& r0, at::Tensor m_out, at::Tensor a_out,
                        const std::optional<at::Tensor>& X, const std::optional<at::Tensor>& MD,
                        const std::optional<at::Tensor>& S, const std::optional<at::Tensor>& Z) {
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&W0T, &km, &c, &wy, &b, &a0, &m0, &r0, &m_out, &a_out})
    check_cpu_f32(*t, "input");
  const int64_t steps = m_out.size(0), n = m_out.size(1), batch = m_out.size(2), d_m = m_out.size(3);
  const int64_t dx = W0T.size(1), d1 = W0T.size(2), d_tree = dx - d_m, nd1 = n * d1;
  const bool hidden = W1T.has_value();  // one hidden MLP layer, or none (then d1 = d_m and u = z0)
  TORCH_CHECK(hidden ? W1T->size(1) == d1 && W1T->size(2) == d_m : d1 == d_m,
              "elm_native: at most one hidden MLP layer, of width d1");
  const int64_t d1p = padded(d1), dmp = padded(d_m), bp_ = round_up(batch, kBLane);
  const bool keep = S.has_value(), has_kr = kr.has_value();
  const float krf = has_kr ? static_cast<float>(*kr) : 0.0f;

  // padded weights (N, ..., d1p | dmp)
  const at::Tensor W0P = pad_last(W0T, d1p);
  const at::Tensor W1P = hidden ? pad_last(*W1T, dmp) : at::Tensor();
  const at::Tensor b1P = hidden ? pad_last(b1->reshape({n, d_m}), dmp) : at::Tensor();
  const at::Tensor kmP = pad_last(km.reshape({n, d_m}), dmp);
  const at::Tensor cP = pad_last(c.reshape({n, d_m}), dmp), wyP = pad_last(wy, dmp);
  const float *W0p = W0P.data_ptr<float>(), *W1p = hidden ? W1P.data_ptr<float>() : nullptr;
  const float* b1p = hidden ? b1P.data_ptr<float>() : nullptr;
  const float *kmp = kmP.data_ptr<float>(), *cp = cP.data_ptr<float>(), *wyp = wyP.data_ptr<float>();

  at::Tensor r = r0.clone();
  float* rp = r.data_ptr<float>();
  const float *bp = b.data_ptr<float>(), *a0p = a0.data_ptr<float>(), *m0p = m0.data_ptr<float>();
  float *mp = m_out.data_ptr<float>(), *ap = a_out.data_ptr<float>();
  const float *Pp = ptr<float>(P), *tabp = ptr<float>(table), *maskp = ptr<float>(rec_mask);
  // P (T, B, N d1) may be a view of rows padded to ldp: a matrix product writes rows of a multiple of
  // 16 floats faster (fast.py pads them when no backward follows)
  const int64_t ldp = P.has_value() ? P->stride(1) : nd1;
  TORCH_CHECK(!P.has_value() || (P->stride(2) == 1 && P->stride(0) == batch * ldp && ldp >= nd1),
              "elm_native: P must be (T, B, N d1) with unit-stride rows laid out one after the other");
  const int64_t* tokp = ptr<int64_t>(tokens);
  const float* valp = mode == kSparse ? ptr<float>(R) : nullptr;
  const int64_t *crowp = ptr<int64_t>(crow), *colp = ptr<int64_t>(col);
  float *Xp = ptr<float>(X), *MDp = ptr<float>(MD), *Sp = ptr<float>(S), *Zp = ptr<float>(Z);
  const bool x_per_step = Xp != nullptr && X->size(0) == steps;

  // "sparse": a_{t-1} masked and padded to (N, bp_), gathered by the synapses
  std::vector<float> a_src(mode == kSparse ? n * bp_ : 0, 0.0f);
  // "fused": the drive of a step plus a_{t-1} M^T, one product a step into this buffer
  at::Tensor fused_buf, a_in;
  if (mode == kFused) {
    fused_buf = at::empty({batch, nd1}, m_out.options());
    a_in = at::empty({batch, n}, m_out.options());
  }
  const int64_t grain = grain_size(batch * (dx * d1 + d1 * d_m));
  // tiny neurons: patterns km, -c, 2c, w_y, then the first layer's memory diagonals W_delta
  const bool tiny = mode == kNone && !hidden && d_m <= kTinyMaxDm;
  std::optional<Tiny> ty;
  if (tiny) {
    ty.emplace(n, batch, d_m, 4);
    const float *kmr = km.data_ptr<float>(), *cr = c.data_ptr<float>(), *wyr = wy.data_ptr<float>();
    const float* w0 = W0T.data_ptr<float>();  // (N, dx, d1): row d_tree + j, column a
    for (int64_t i = 0; i < n; ++i) {
      ty->set(i, 0, [&](int64_t j) { return kmr[i * d_m + j]; });
      ty->set(i, 1, [&](int64_t j) { return -cr[i * d_m + j]; });
      ty->set(i, 2, [&](int64_t j) { return 2.0f * cr[i * d_m + j]; });
      ty->set(i, 3, [&](int64_t j) { return wyr[i * d_m + j]; });
      for (int64_t d = 0; d < ty->nd; ++d)  // z[b, a] += md[b, a + delta] W0[a, a + delta]
        ty->set(i, 4 + d, [&](int64_t a) {
          const int64_t j = a + ty->delta(d);
          return j >= 0 && j < d_m ? w0[(i * dx + d_tree + j) * d1 + a] : 0.0f;
        });
    }
  }

  for (int64_t t = 0; t < steps; ++t) {
    const float* a_prev = t == 0 ? a0p : ap + (t - 1) * n * batch;  // (N, B)
    const float* m_prev = t == 0 ? m0p : mp + (t - 1) * n * batch * d_m;
    const float* drive = nullptr;  // row b, neuron i: drive + b * ldd + i * d1
    int64_t ldd = nd1;
    if (mode == kFused) {
      at::Tensor a_prev_t = t == 0 ? a0 : a_out[t - 1];
      if (maskp != nullptr) {
        at::mul_out(a_in, a_prev_t.t(), rec_mask->t());
      } else {
        a_in.copy_(a_prev_t.t());
      }
      at::Tensor flat = P.has_value() ? (*P)[t] : at::index_select(*table, 0, (*tokens)[t]);
      at::addmm_out(fused_buf, flat, a_in, *R);
      drive = fused_buf.data_ptr<float>();
    } else if (Pp != nullptr) {
      drive = Pp + t * batch * ldp;
      ldd = ldp;
    }
    if (mode == kSparse) masked_rows(a_src.data(), bp_, a_prev, maskp, n, batch);
    const int64_t* tok_t = tokp != nullptr ? tokp + t * batch : nullptr;

    if (tiny) {
      at::parallel_for(0, n, grain, [&](int64_t lo, int64_t hi) {
        const int64_t Lp = ty->Lp, L = ty->L;
        std::vector<float> buf(2 * kMargin + 4 * Lp, 0.0f);
        float *md = buf.data() + kMargin, *Zb = md + Lp + kMargin, *Sb = Zb + Lp, *Mb = Sb + Lp;
        for (int64_t i = lo; i < hi; ++i) {
          const int64_t blk = t * n * batch + i * batch;
          copy_padded(md, m_prev + i * L, L, Lp);
          for (int64_t bb = 0; bb < batch; ++bb) {
            const float* src = drive != nullptr ? drive + bb * ldd + i * d1 : tabp + tok_t[bb] * nd1 + i * d1;
            for (int64_t a = 0; a < d_m; ++a) Zb[bb * d_m + a] = src[a];
          }
          const float *kmq = ty->at(i, 0), *ncq = ty->at(i, 1), *c2q = ty->at(i, 2), *wyq = ty->at(i, 3);
          for (int64_t q0 = 0; q0 < Lp; q0 += kBLane) {  // md = km m - c
            const int64_t po = q0 % ty->P;
            store(md + q0, load<VecB>(kmq + po) * load<VecB>(md + q0) + load<VecB>(ncq + po));
          }
          for (int64_t q0 = 0; q0 < Lp; q0 += kBLane) {  // z = drive + md W0_memory, by diagonals
            const int64_t po = q0 % ty->P;
            VecB z = load<VecB>(Zb + q0);
            for (int64_t d = 0; d < ty->nd; ++d) z += load<VecB>(ty->at(i, 4 + d) + po) * load<VecB>(md + q0 + ty->delta(d));
            store(Zb + q0, z);
          }
          for (int64_t q = 0; q < Lp; ++q) Sb[q] = sigmoid(Zb[q]);
          for (int64_t q0 = 0; q0 < Lp; q0 += kBLane) {  // m = md + 2 c s; Zb: the terms of o = w_y . m
            const int64_t po = q0 % ty->P;
            const VecB mv = load<VecB>(md + q0) + load<VecB>(c2q + po) * load<VecB>(Sb + q0);
            store(Mb + q0, mv);
            store(Zb + q0, mv * load<VecB>(wyq + po));
          }
          for (int64_t bb = 0; bb < batch; ++bb) {
            float o = 0.0f;
            for (int64_t j = 0; j < d_m; ++j) o += Zb[bb * d_m + j];
            ap[blk + bb] = activity(o, rp[i * batch + bb], bp[i], has_kr, krf, relu);
          }
          std::memcpy(mp + blk * d_m, Mb, L * sizeof(float));
          if (MDp != nullptr) std::memcpy(MDp + blk * d_m, md, L * sizeof(float));
          if (keep) std::memcpy(Sp + blk * d_m, Sb, L * sizeof(float));
        }
      });
      continue;
    }
    // Per neuron, all samples at once; the products run as register-blocked micro-kernels over
    // buffers zero-padded to (bp_ samples) x (d1p | dmp features), whose padding stays zero.
    at::parallel_for(0, n, grain, [&](int64_t lo, int64_t hi) {
      std::vector<float> buf(dx * bp_ + 2 * bp_ * d1p + 3 * bp_ * dmp, 0.0f);
      float *Xk = buf.data(), *Z0 = Xk + dx * bp_, *HH = Z0 + bp_ * d1p, *MD_ = HH + bp_ * d1p;
      float *U = MD_ + bp_ * dmp, *Mn = U + bp_ * dmp;
      for (int64_t i = lo; i < hi; ++i) {
        const float* W0i = W0p + i * dx * d1p;
        const float *kmi = kmp + i * dmp, *ci = cp + i * dmp, *wyi = wyp + i * dmp;
        const int64_t blk = t * n * batch + i * batch;  // (t, i, 0) in (T, N, B)
        const float* mprev = m_prev + i * batch * d_m;
        for (int64_t bb = 0; bb < batch; ++bb) {
          float* md = MD_ + bb * dmp;
          for (int64_t j = 0; j < d_m; ++j) md[j] = kmi[j] * mprev[bb * d_m + j] - ci[j];  // km m - c
        }
        if (drive != nullptr) {
          copy_rows(Z0, d1p, drive + i * d1, ldd, batch, d1);
        } else {
          for (int64_t bb = 0; bb < batch; ++bb) copy_rows(Z0 + bb * d1p, d1p, tabp + tok_t[bb] * nd1 + i * d1, nd1, 1, d1);
        }
        if (mode == kSparse) {  // Xk (dx, bp_): [W_rec a_{t-1}; md^T], the first layer's whole input, k-major
          for (int64_t k = 0; k < d_tree; ++k) {
            const int64_t row = i * d_tree + k;
            gather_rows(Xk + k * bp_, valp, colp, crowp[row], crowp[row + 1], a_src.data(), bp_);
          }
          for (int64_t bb = 0; bb < batch; ++bb)
            for (int64_t j = 0; j < d_m; ++j) Xk[(d_tree + j) * bp_ + bb] = MD_[bb * dmp + j];
          if (keep) copy_rows(Xp + ((x_per_step ? t : 0) * n + i) * dx * batch, batch, Xk, bp_, dx, batch);
          gemm(Z0, d1p, Xk, 1, bp_, W0i, d1p, bp_, d1p, dx, true);
        } else {  // only the memory feeds the first layer here
          gemm(Z0, d1p, MD_, dmp, 1, W0i + d_tree * d1p, d1p, bp_, d1p, d_m, true);
        }
        if (hidden) {  // u = b1 + relu(z0)^2 W1
          for (int64_t q = 0; q < bp_ * d1p; ++q) {
            const float h = Z0[q] > 0.0f ? Z0[q] : 0.0f;
            Z0[q] = h;
            HH[q] = h * h;
          }
          if (keep) copy_rows(Zp + blk * d1, d1, Z0, d1p, batch, d1);  // the backward squares it again
          for (int64_t bb = 0; bb < batch; ++bb) copy_rows(U + bb * dmp, dmp, b1p + i * dmp, dmp, 1, dmp);
          gemm(U, dmp, HH, d1p, 1, W1p + i * d1 * dmp, dmp, bp_, dmp, d1, true);
        } else {  // u = z0
          std::memcpy(U, Z0, bp_ * dmp * sizeof(float));
        }
        for (int64_t q = 0; q < batch * dmp; ++q) U[q] = sigmoid(U[q]);
        for (int64_t bb = 0; bb < batch; ++bb) {
          const float *md = MD_ + bb * dmp, *u = U + bb * dmp;
          float* mn = Mn + bb * dmp;
          float o = 0.0f;
          for (int64_t j = 0; j < dmp; ++j) {
            mn[j] = md[j] + 2.0f * ci[j] * u[j];
            o += mn[j] * wyi[j];
          }
          ap[blk + bb] = activity(o, rp[i * batch + bb], bp[i], has_kr, krf, relu);
        }
        copy_rows(mp + blk * d_m, d_m, Mn, dmp, batch, d_m);
        if (MDp != nullptr) copy_rows(MDp + blk * d_m, d_m, MD_, dmp, batch, d_m);
        if (keep) copy_rows(Sp + blk * d_m, d_m, U, dmp, batch, d_m);
      }
    });
  }
  return r;
}

// Backward over all steps, t = T-1..0.
// In: the forward's saved tensors (S, Z, m_out, a_out, and X in "sparse" mode or MD otherwise);
// DPRE (T, N, B) holds the external gradient of the pre-activation (already masked) and gets the
// recurrent one added; dr (N, B) and dm (N, B, d_m) carry the state gradients in and out.
// Out: d loss / d z0 (the drive's gradient) into G (T, B, N d1) and, for token input, added into the
// table's gradient gtable (I, N d1) at row tokens[t, b] (either or both), and the weight gradients,
// accumulated per neuron inside the loop: gW0T (N, dx, d1) (in "sparse" mode every row, else the memory rows), gW1
// (N, d_m, d1) and gb1 (N, d_m) of the hidden layer, gwy (N, d_m), gvals (nnz) the values of W_rec.
// Returns d loss / d a_0 (N, B) masked by rec_mask (empty in "none" mode).
at::Tensor scan_backward(int64_t mode, const std::optional<at::Tensor>& R, const std::optional<at::Tensor>& crow,
                         const std::optional<at::Tensor>& col, const std::optional<at::Tensor>& crow_t,
                         const std::optional<at::Tensor>& col_t, const std::optional<at::Tensor>& vals_t,
                         const at::Tensor& W0k, const std::optional<at::Tensor>& Ws2, const at::Tensor& km,
                         const at::Tensor& c, const at::Tensor& wy, std::optional<double> kr,
                         const std::optional<at::Tensor>& rec_mask, const std::optional<at::Tensor>& relu_mask,
                         const at::Tensor& S, const std::optional<at::Tensor>& Z,
                         const std::optional<at::Tensor>& X, const std::optional<at::Tensor>& MD,
                         const at::Tensor& m_out, const at::Tensor& a0, const at::Tensor& a_out,
                         const std::optional<at::Tensor>& g_m, const std::optional<at::Tensor>& tokens,
                         at::Tensor DPRE, const std::optional<at::Tensor>& G, const std::optional<at::Tensor>& gtable,
                         at::Tensor dr,
                         at::Tensor dm, at::Tensor gW0T, const std::optional<at::Tensor>& gW1,
                         const std::optional<at::Tensor>& gb1, at::Tensor gwy, const std::optional<at::Tensor>& gvals) {
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&W0k, &km, &c, &wy, &S, &m_out, &a0, &a_out,
                                                                      &DPRE, &dr, &dm, &gW0T, &gwy})
    check_cpu_f32(*t, "input");
  const int64_t steps = S.size(0), n = S.size(1), batch = S.size(2), d_m = S.size(3);
  const int64_t d1 = W0k.size(1), dx = W0k.size(2), d_tree = dx - d_m, nd1 = n * d1;
  const int64_t k0 = mode == kSparse ? 0 : d_tree;  // the inputs of the first layer that matter: [k0, dx)
  const int64_t d1p = padded(d1), dmp = padded(d_m), nkp = padded(dx - k0);
  const int64_t nk = dx - k0, bp_ = round_up(batch, kBLane);
  const bool has_kr = kr.has_value(), hidden = Ws2.has_value();
  const float krf = has_kr ? static_cast<float>(*kr) : 0.0f;
  // padded weights: W0k's needed columns (N, d1, nkp), Ws2 (N, d_m, d1p)
  const at::Tensor W0P = pad_last(W0k.narrow(2, k0, dx - k0), nkp);
  const at::Tensor WsP = hidden ? pad_last(*Ws2, d1p) : at::Tensor();
  const float *W0p = W0P.data_ptr<float>(), *Wsp = hidden ? WsP.data_ptr<float>() : nullptr;
  const float *kmp = km.data_ptr<float>(), *cp = c.data_ptr<float>(), *wyp = wy.data_ptr<float>();
  const float *Sp = S.data_ptr<float>(), *Zp = ptr<float>(Z), *Xp = ptr<float>(X);
  const float *MDp = ptr<float>(MD), *mp = m_out.data_ptr<float>(), *a0p = a0.data_ptr<float>();
  const float *ap = a_out.data_ptr<float>(), *gmp = ptr<float>(g_m), *maskp = ptr<float>(relu_mask);
  const float* recp = ptr<float>(rec_mask);
  float *dpp = DPRE.data_ptr<float>(), *drp = dr.data_ptr<float>();
  // d loss / d z0 (the drive's gradient): into G (T, B, N d1) if given, and for token input added
  // straight into the table's gradient gtable (I, N d1) if given, row tokens[t, b]: each neuron owns
  // its d1 columns, so the neurons' threads never write the same element
  float *Gp = ptr<float>(G), *gtp = ptr<float>(gtable);
  const int64_t* tokp = ptr<int64_t>(tokens);
  TORCH_CHECK(Gp != nullptr || gtp != nullptr, "elm_native: the backward needs G or the table's gradient");
  TORCH_CHECK(gtp == nullptr || tokp != nullptr, "elm_native: the table's gradient needs the tokens");
  TORCH_CHECK(mode != kFused || Gp != nullptr, "elm_native: the fused backward needs G");
  for (const std::optional<at::Tensor>* t : {&G, &gtable}) if (t->has_value()) check_cpu_f32(**t, "gradient");
  float* dmp_ = dm.data_ptr<float>();
  const int64_t *crowp = ptr<int64_t>(crow), *colp = ptr<int64_t>(col);
  const int64_t *crowtp = ptr<int64_t>(crow_t), *coltp = ptr<int64_t>(col_t);
  const float* valtp = ptr<float>(vals_t);
  float* gvp = ptr<float>(gvals);
  const bool x_per_step = Xp != nullptr && X->size(0) == steps;
  TORCH_CHECK(mode != kSparse || x_per_step, "elm_native: the backward needs every step's branch inputs");

  // accumulators padded to d1p columns: gW0T (N, nk, d1p), gW1 (N, d_m, d1p); gb1, gwy (N, d_m)
  std::vector<float> acc_w0(n * nk * d1p, 0.0f), acc_w1(hidden ? n * d_m * d1p : 0, 0.0f);
  float *gb1p = ptr<float>(gb1), *gwyp = gwy.data_ptr<float>();
  // "sparse": this step's branch gradients (N d_tree, bp_) and a_{t-1} masked (N, bp_), padded
  std::vector<float> dbr_pad(mode == kSparse ? n * d_tree * bp_ : 0, 0.0f);
  std::vector<float> a_src(mode == kSparse ? n * bp_ : 0, 0.0f);
  // "sparse": the gradient of W_rec's values, gvals[e] = sum over (t, b) of dBR_t[row e, b] a_{t-1}[col e, b],
  // accumulated step by step while both are in cache, kBLane partial sums per nonzero (summed at the end).
  // Keeping every step's dBR for one pass after the loop cost more: its strided writes missed the TLB.
  std::vector<VecB> gacc(mode == kSparse ? crowp[n * d_tree] : 0, VecB{});
  at::Tensor da_buf[2];
  at::Tensor da;  // d loss / d a_t, arriving from step t + 1 (masked by rec_mask)
  if (mode != kNone) {
    da_buf[0] = at::empty({n, batch}, S.options());
    da_buf[1] = at::empty({n, batch}, S.options());
  }
  const int64_t grain = grain_size(batch * (2 * dx * d1 + 4 * d1 * d_m));
  // tiny neurons (see struct Tiny): patterns km, 2c, w_y, then the diagonals V_delta of W0k's memory
  // block for d loss / d md = g W0k_m; per-neuron flat accumulators (N, 1 + nd, Lp) for gwy and the
  // diagonals of gW0's memory rows, summed over the samples after the loop
  const bool tiny = mode == kNone && !hidden && d_m <= kTinyMaxDm;
  std::optional<Tiny> ty;
  std::vector<float> tacc;
  if (tiny) {
    ty.emplace(n, batch, d_m, 3);
    const float* w0k = W0k.data_ptr<float>();  // (N, d1, dx): row a, column d_tree + j
    for (int64_t i = 0; i < n; ++i) {
      ty->set(i, 0, [&](int64_t j) { return kmp[i * d_m + j]; });
      ty->set(i, 1, [&](int64_t j) { return 2.0f * cp[i * d_m + j]; });
      ty->set(i, 2, [&](int64_t j) { return wyp[i * d_m + j]; });
      for (int64_t d = 0; d < ty->nd; ++d)  // dmd[b, j] += g[b, j + delta] W0k[j + delta, j]
        ty->set(i, 3 + d, [&](int64_t j) {
          const int64_t a = j + ty->delta(d);
          return a >= 0 && a < d_m ? w0k[(i * d1 + a) * dx + d_tree + j] : 0.0f;
        });
    }
    tacc.assign(n * (1 + ty->nd) * ty->Lp, 0.0f);
  }

  for (int64_t t = steps - 1; t >= 0; --t) {
    const float* dap = da.defined() ? da.data_ptr<float>() : nullptr;
    if (mode == kSparse) masked_rows(a_src.data(), bp_, t == 0 ? a0p : ap + (t - 1) * n * batch, recp, n, batch);
    if (tiny) {
      at::parallel_for(0, n, grain, [&](int64_t lo, int64_t hi) {
        const int64_t Lp = ty->Lp, L = ty->L, nd = ty->nd;
        std::vector<float> buf(4 * kMargin + 8 * Lp, 0.0f);
        float *md = buf.data() + kMargin, *g = md + Lp + 2 * kMargin, *sb = g + Lp + kMargin, *mb = sb + Lp;
        float *gmb = mb + Lp, *dmb = gmb + Lp, *dor = dmb + Lp, *dmv = dor + Lp;
        for (int64_t i = lo; i < hi; ++i) {
          const int64_t blk = t * n * batch + i * batch;
          for (int64_t bb = 0; bb < batch; ++bb) {
            const float dout = highpass_grad(dpp[blk + bb], drp[i * batch + bb], has_kr, krf);
            for (int64_t j = 0; j < d_m; ++j) dor[bb * d_m + j] = dout;
          }
          copy_padded(md, MDp + blk * d_m, L, Lp);
          copy_padded(sb, Sp + blk * d_m, L, Lp);
          copy_padded(mb, mp + blk * d_m, L, Lp);
          copy_padded(dmb, dmp_ + i * L, L, Lp);
          if (gmp != nullptr) copy_padded(gmb, gmp + blk * d_m, L, Lp);
          float* acc = tacc.data() + i * (1 + nd) * Lp;  // gwy terms, then the gW0 diagonals
          const float *kmq = ty->at(i, 0), *c2q = ty->at(i, 1), *wyq = ty->at(i, 2);
          for (int64_t q0 = 0; q0 < Lp; q0 += kBLane) {
            const int64_t po = q0 % ty->P;
            const VecB dov = load<VecB>(dor + q0), sv = load<VecB>(sb + q0);
            store(acc + q0, load<VecB>(acc + q0) + dov * load<VecB>(mb + q0));
            VecB v = load<VecB>(dmb + q0) + load<VecB>(wyq + po) * dov;
            if (gmp != nullptr) v += load<VecB>(gmb + q0);
            store(dmv + q0, v);
            store(g + q0, load<VecB>(c2q + po) * sv * (1.0f - sv) * v);  // d loss / d u = d loss / d z0
          }
          for (int64_t bb = 0; bb < batch; ++bb) {
            if (Gp != nullptr)
              for (int64_t a = 0; a < d_m; ++a) Gp[t * batch * nd1 + bb * nd1 + i * d1 + a] = g[bb * d_m + a];
            if (gtp != nullptr) {
              float* row = gtp + tokp[t * batch + bb] * nd1 + i * d1;
              for (int64_t a = 0; a < d_m; ++a) row[a] += g[bb * d_m + a];
            }
          }
          for (int64_t d = 0; d < nd; ++d) {  // gW0[a, a + delta] += sum over b of md[b, a + delta] g[b, a]
            float* ad = acc + (1 + d) * Lp;
            const int64_t dl = ty->delta(d);
            for (int64_t q0 = 0; q0 < Lp; q0 += kBLane)
              store(ad + q0, load<VecB>(ad + q0) + load<VecB>(md + q0 + dl) * load<VecB>(g + q0));
          }
          for (int64_t q0 = 0; q0 < Lp; q0 += kBLane) {  // dm_{t-1} = g W0k_m + km dm
            const int64_t po = q0 % ty->P;
            VecB v = load<VecB>(kmq + po) * load<VecB>(dmv + q0);
            for (int64_t d = 0; d < nd; ++d) v += load<VecB>(ty->at(i, 3 + d) + po) * load<VecB>(g + q0 + ty->delta(d));
            store(dmb + q0, v);
          }
          std::memcpy(dmp_ + i * L, dmb, L * sizeof(float));
        }
      });
      continue;
    }
    at::parallel_for(0, n, grain, [&](int64_t lo, int64_t hi) {
      std::vector<float> buf(2 * bp_ * dmp + 2 * bp_ * d1p + bp_ * nkp + bp_, 0.0f);
      float *DMV = buf.data(), *GU = DMV + bp_ * dmp, *G0 = GU + bp_ * dmp, *HHb = G0 + bp_ * d1p;
      float *DH = HHb + bp_ * d1p, *DOUT = DH + bp_ * nkp;
      for (int64_t i = lo; i < hi; ++i) {
        const float* W0i = W0p + i * d1 * nkp;
        const float *kmi = kmp + i * d_m, *ci = cp + i * d_m, *wyi = wyp + i * d_m;
        const int64_t blk = t * n * batch + i * batch;  // (t, i, 0) in (T, N, B)
        float* gwyi = gwyp + i * d_m;
        // d loss / d u (GU), or straight d loss / d z0 (G0) without a hidden layer
        float* gu_buf = hidden ? GU : G0;
        const int64_t gu_ld = hidden ? dmp : d1p;
        for (int64_t bb = 0; bb < batch; ++bb) {
          const int64_t nb = i * batch + bb, row = blk + bb;
          float dp = dpp[row];
          if (dap != nullptr) dp += maskp != nullptr ? dap[nb] * maskp[row] : dap[nb];
          dpp[row] = dp;
          const float dout = highpass_grad(dp, drp[nb], has_kr, krf);
          DOUT[bb] = dout;
          const float *s = Sp + row * d_m, *gm = gmp != nullptr ? gmp + row * d_m : nullptr;
          const float *dmi = dmp_ + nb * d_m, *m = mp + row * d_m;
          float *dmv = DMV + bb * dmp, *gu = gu_buf + bb * gu_ld;
          for (int64_t j = 0; j < d_m; ++j) {
            gwyi[j] += dout * m[j];
            dmv[j] = dmi[j] + wyi[j] * dout + (gm != nullptr ? gm[j] : 0.0f);
            gu[j] = 2.0f * ci[j] * s[j] * (1.0f - s[j]) * dmv[j];
          }
        }
        if (hidden) {
          gemm(G0, d1p, GU, dmp, 1, Wsp + i * d_m * d1p, d1p, bp_, d1p, d_m, false);  // 2 dL / d relu(z0)^2
          float* gb1i = gb1p + i * d_m;
          for (int64_t bb = 0; bb < batch; ++bb)
            for (int64_t j = 0; j < d_m; ++j) gb1i[j] += GU[bb * dmp + j];
          const float* z = Zp + blk * d1;
          for (int64_t bb = 0; bb < batch; ++bb)  // relu(z0)^2 from the saved relu(z0): storing it cost more
            for (int64_t a = 0; a < d1; ++a) HHb[bb * d1p + a] = z[bb * d1 + a] * z[bb * d1 + a];
          // gW1 (d_m, d1) += GU^T HH, a sum over the samples
          gemm(acc_w1.data() + i * d_m * d1p, d1p, GU, 1, dmp, HHb, d1p, d_m, d1p, batch, true);
          for (int64_t bb = 0; bb < batch; ++bb)
            for (int64_t a = 0; a < d1; ++a) G0[bb * d1p + a] *= z[bb * d1 + a];
        }
        if (Gp != nullptr) copy_rows(Gp + t * batch * nd1 + i * d1, nd1, G0, d1p, batch, d1);
        if (gtp != nullptr)
          for (int64_t bb = 0; bb < batch; ++bb) {
            float* row = gtp + tokp[t * batch + bb] * nd1 + i * d1;
            for (int64_t a = 0; a < d1; ++a) row[a] += G0[bb * d1p + a];
          }
        // gW0T (dx - k0, d1) += IN^T G0, a sum over the samples of this step's first-layer inputs: the
        // branch inputs and memory X (dx, B) in "sparse" mode, else the memory MD (B, d_m)
        float* gw0i = acc_w0.data() + i * nk * d1p;
        if (mode == kSparse) {
          gemm(gw0i, d1p, Xp + (t * n + i) * dx * batch, batch, 1, G0, d1p, dx, d1p, batch, true);
        } else {
          gemm(gw0i, d1p, MDp + blk * d_m, 1, d_m, G0, d1p, d_m, d1p, batch, true);
        }
        gemm(DH, nkp, G0, d1p, 1, W0i, nkp, bp_, nkp, d1, false);
        // DH[b, k - k0] = d loss / d (first layer input k); the memory part follows at d_tree - k0
        if (mode == kSparse) {  // this neuron's branch rows of dBR: for the transposed gather and gvals
          float* pad = dbr_pad.data() + i * d_tree * bp_;
          for (int64_t k = 0; k < d_tree; ++k) {
            float* pr = pad + k * bp_;
            for (int64_t bb = 0; bb < batch; ++bb) pr[bb] = DH[bb * nkp + k];
            const int64_t row = i * d_tree + k;
            for (int64_t e = crowp[row]; e < crowp[row + 1]; ++e) {
              const float* a = a_src.data() + colp[e] * bp_;
              VecB acc = gacc[e];
              for (int64_t b0 = 0; b0 < bp_; b0 += kBLane) acc += load<VecB>(pr + b0) * load<VecB>(a + b0);
              gacc[e] = acc;
            }
          }
        }
        for (int64_t bb = 0; bb < batch; ++bb) {
          float* dmi = dmp_ + (i * batch + bb) * d_m;
          const float *dh = DH + bb * nkp + (d_tree - k0), *dmv = DMV + bb * dmp;
          for (int64_t j = 0; j < d_m; ++j) dmi[j] = dh[j] + kmi[j] * dmv[j];
        }
      }
    });
    if (mode == kNone) continue;
    at::Tensor next = da_buf[(steps - 1 - t) % 2 == 0 ? 1 : 0];
    if (mode == kSparse) {
      float* np = next.data_ptr<float>();
      at::parallel_for(0, n, grain_size(bp_ * 2 * d_tree), [&](int64_t lo, int64_t hi) {
        std::vector<float> acc(bp_);
        for (int64_t src = lo; src < hi; ++src) {
          gather_rows(acc.data(), valtp, coltp, crowtp[src], crowtp[src + 1], dbr_pad.data(), bp_);
          for (int64_t bb = 0; bb < batch; ++bb)
            np[src * batch + bb] = recp != nullptr ? acc[bb] * recp[src * batch + bb] : acc[bb];
        }
      });
    } else {  // da = M^T-shaped R (N_src, N d1) @ G_t^T
      at::mm_out(next, *R, (*G)[t].t());
      if (rec_mask.has_value()) next.mul_(*rec_mask);
    }
    da = next;
  }
  if (mode == kSparse) {
    for (int64_t e = 0; e < static_cast<int64_t>(gacc.size()); ++e) {
      float sum = 0.0f;
      for (int64_t l = 0; l < kBLane; ++l) sum += gacc[e][l];
      gvp[e] = sum;
    }
  }
  if (tiny) {  // the flat accumulators, summed over the samples
    const int64_t Lp = ty->Lp, nd = ty->nd;
    for (int64_t i = 0; i < n; ++i) {
      const float* acc = tacc.data() + i * (1 + nd) * Lp;
      for (int64_t q = 0; q < ty->L; ++q) {
        const int64_t a = q % d_m;
        gwyp[i * d_m + a] += acc[q];
        for (int64_t d = 0; d < nd; ++d) {
          const int64_t j = a + ty->delta(d);
          if (j >= 0 && j < d_m) acc_w0[(i * nk + j) * d1p + a] += acc[(1 + d) * Lp + q];
        }
      }
    }
  }
  // the accumulators, unpadded
  float* gw0 = gW0T.data_ptr<float>();  // (N, dx, d1): rows [k0, dx)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < dx - k0; ++k)
      std::memcpy(gw0 + (i * dx + k0 + k) * d1, acc_w0.data() + (i * nk + k) * d1p, d1 * sizeof(float));
  if (hidden) {
    float* gw1 = gW1->data_ptr<float>();  // (N, d_m, d1)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < d_m; ++j)
        std::memcpy(gw1 + (i * d_m + j) * d1, acc_w1.data() + (i * d_m + j) * d1p, d1 * sizeof(float));
  }
  return da.defined() ? da : at::empty({0}, S.options());
}

TORCH_LIBRARY(elm_native, m) {
  m.def(
      "scan_forward(int mode, Tensor? P, Tensor? table, Tensor? tokens, Tensor? R, Tensor? crow, Tensor? col, "
      "Tensor W0T, Tensor? W1T, Tensor? b1, Tensor km, Tensor c, Tensor wy, Tensor b, float? kr, bool relu, "
      "Tensor? rec_mask, Tensor a0, Tensor m0, Tensor r0, Tensor(a!) m_out, Tensor(b!) a_out, Tensor(c!)? X, "
      "Tensor(d!)? MD, Tensor(e!)? S, Tensor(f!)? Z) -> Tensor");
  m.def(
      "scan_backward(int mode, Tensor? R, Tensor? crow, Tensor? col, Tensor? crow_t, Tensor? col_t, "
      "Tensor? vals_t, Tensor W0k, Tensor? Ws2, Tensor km, Tensor c, Tensor wy, float? kr, Tensor? rec_mask, "
      "Tensor? relu_mask, Tensor S, Tensor? Z, Tensor? X, Tensor? MD, Tensor m_out, Tensor a0, "
      "Tensor a_out, Tensor? g_m, Tensor? tokens, Tensor(a!) DPRE, Tensor(b!)? G, Tensor(j!)? gtable, "
      "Tensor(c!) dr, Tensor(d!) dm, "
      "Tensor(e!) gW0T, Tensor(f!)? gW1, Tensor(g!)? gb1, Tensor(h!) gwy, Tensor(i!)? gvals) -> Tensor");
}

TORCH_LIBRARY_IMPL(elm_native, CPU, m) {
  m.impl("scan_forward", &scan_forward);
  m.impl("scan_backward", &scan_backward);
}
