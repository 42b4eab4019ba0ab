// The tile transforms of Winograd F(4x4, 3x3) (see lmt/cpu_winograd.h): one pass each over the activations.
//
// Done as matrix products in torch, the input side costs a pad, a gather copy of the overlapping 6x6 tiles
// and a (36 x 36) by (36 x tiles * C) product: 36 multiply-adds per value where B^T, mostly zeros and
// small integers applied along rows and then columns, needs about 6 operations. The output side is a
// (16 x 36) product, a bias add and a crop. Here a task owns one tile: it reads the tile's pixels straight
// from x (the padding done by index arithmetic), transforms them in two 1-D passes through a small buffer
// and writes the 36 points (or the 16 pixels). Channels are contiguous in NHWC, so every inner loop runs
// over a chunk of channels, vectorised, with the tile's values for that chunk in L1.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "lmt/cpu_common.h"
#include "lmt/cpu_winograd.h"

namespace lmt {
namespace cpu {

namespace {

constexpr int kOut = 4;              // output tile side
constexpr int kSpan = 6;             // input tile side
constexpr int kPoints = kSpan * kSpan;
constexpr int64_t kChunkBytes = 256;  // channels per step: a tile's 36 points x 256 B (9 KB) stay in L1

template <typename T>
constexpr int64_t kChunk = kChunkBytes / int64_t(sizeof(T));

// The length of a whole chunk as a compile-time constant: those loops compile without remainder handling.
template <typename T>
using FullChunk = std::integral_constant<int64_t, kChunk<T>>;

// Reads of the zeros past the padded image point here (and writes of pixels past the output's edge into
// a per-thread scratch chunk): the loops stay free of branches.
template <typename T>
alignas(64) const T kZeros[kChunk<T>] = {};

// out[i][j] = (B^T z)[i] over j < len: the 1-D input transform of six lines z[0..5] of a tile, with the
// zeros of B^T skipped and the shared terms shared.
template <typename T, typename Len>
LMT_INLINE void input_lines(const T* const z[kSpan], T* const out[kSpan], Len len) {
  const T *z0 = z[0], *z1 = z[1], *z2 = z[2], *z3 = z[3], *z4 = z[4], *z5 = z[5];
  T *o0 = out[0], *o1 = out[1], *o2 = out[2], *o3 = out[3], *o4 = out[4], *o5 = out[5];
#pragma omp simd
  for (int64_t j = 0; j < len; ++j) {
    const T even1 = z4[j] - T(4) * z2[j], odd1 = z3[j] - T(4) * z1[j];  // points +-1
    const T even2 = z4[j] - z2[j], odd2 = T(2) * (z3[j] - z1[j]);       // points +-2
    o0[j] = T(4) * z0[j] - T(5) * z2[j] + z4[j];
    o1[j] = even1 + odd1;
    o2[j] = even1 - odd1;
    o3[j] = even2 + odd2;
    o4[j] = even2 - odd2;
    o5[j] = T(4) * z1[j] - T(5) * z3[j] + z5[j];
  }
}

// out[i][j] = (A^T z)[i] (+ offset[j] when kOffset) over j < len: the 1-D output transform of six lines.
template <bool kOffset, typename T, typename Len>
LMT_INLINE void output_lines(const T* const z[kSpan], const T* offset, T* const out[kOut], Len len) {
  const T *z0 = z[0], *z1 = z[1], *z2 = z[2], *z3 = z[3], *z4 = z[4], *z5 = z[5];
  T *o0 = out[0], *o1 = out[1], *o2 = out[2], *o3 = out[3];
#pragma omp simd
  for (int64_t j = 0; j < len; ++j) {
    const T sum1 = z1[j] + z2[j], diff1 = z1[j] - z2[j];  // points +-1
    const T sum2 = z3[j] + z4[j], diff2 = z3[j] - z4[j];  // points +-2
    const T b = kOffset ? offset[j] : T(0);
    o0[j] = z0[j] + sum1 + sum2 + b;
    o1[j] = diff1 + T(2) * diff2 + b;
    o2[j] = sum1 + T(4) * sum2 + b;
    o3[j] = diff1 + T(8) * diff2 + z5[j] + b;
  }
}

// Where padded row (or column) `padded` of the input comes from: reflected like F.pad(mode="reflect")
// within the padded extent, -1 past it (the zeros that complete the last tiles).
inline int64_t source_index(int64_t padded, int64_t pad, int64_t size) {
  if (padded >= size + 2 * pad) return -1;
  const int64_t i = padded - pad;
  if (i < 0) return -i;
  return i < size ? i : 2 * (size - 1) - i;
}

struct TileIndex {
  int64_t sample, row, col;  // row, col: the tile's position in tiles
};

inline TileIndex tile_index(int64_t tile, int64_t tiles_h, int64_t tiles_w) {
  const int64_t per_sample = tiles_h * tiles_w;
  const int64_t in_sample = tile % per_sample;
  return {tile / per_sample, in_sample / tiles_w, in_sample % tiles_w};
}

// The first channel of each of the tile's 36 input pixels (row-major), nullptr for the zeros past the
// padded image.
template <typename T>
void locate_input_pixels(const WinogradInputArgs<T>& a, TileIndex at, const T* pixels[kPoints]) {
  int64_t rows[kSpan], cols[kSpan];
  for (int r = 0; r < kSpan; ++r) {
    const int64_t src = source_index(at.row * kOut + r, a.pad, a.h);
    rows[r] = src < 0 ? -1 : at.sample * a.stride_n + src * a.stride_h;
  }
  for (int b = 0; b < kSpan; ++b) {
    const int64_t src = source_index(at.col * kOut + b, a.pad, a.w);
    cols[b] = src < 0 ? -1 : src * a.stride_w;
  }
  for (int r = 0; r < kSpan; ++r) {
    for (int b = 0; b < kSpan; ++b)
      pixels[r * kSpan + b] = rows[r] < 0 || cols[b] < 0 ? nullptr : a.x + rows[r] + cols[b];
  }
}

// B^T d B for channels [first, first + len) of one tile: pass 1 transforms the 6 columns of d into
// `buffer` (point (row r, column b) at buffer + (6r + b) * chunk), pass 2 the 6 rows of that into v.
template <typename T, typename Len>
LMT_INLINE void transform_input_chunk(const T* const pixels[kPoints], int64_t first, Len len, T* buffer,
                                      T* out, int64_t point_stride) {
  constexpr int64_t chunk = kChunk<T>;
  for (int b = 0; b < kSpan; ++b) {
    const T* column[kSpan];
    T* transformed[kSpan];
    for (int r = 0; r < kSpan; ++r) {
      const T* pixel = pixels[r * kSpan + b];
      column[r] = pixel == nullptr ? kZeros<T> : pixel + first;
      transformed[r] = buffer + (r * kSpan + b) * chunk;
    }
    input_lines(column, transformed, len);
  }
  for (int r = 0; r < kSpan; ++r) {
    const T* row[kSpan];
    T* points[kSpan];
    for (int b = 0; b < kSpan; ++b) {
      row[b] = buffer + (r * kSpan + b) * chunk;
      points[b] = out + (r * kSpan + b) * point_stride + first;
    }
    input_lines(row, points, len);
  }
}

template <typename T>
LMT_VECTOR_CLONES void transform_input_tile(const WinogradInputArgs<T>& a, int64_t tile, T* buffer) {
  const T* pixels[kPoints];
  locate_input_pixels(a, tile_index(tile, a.tiles_h, a.tiles_w), pixels);
  T* out = a.v + tile * a.c;
  const int64_t point_stride = a.point_stride;
  int64_t first = 0;
  for (; first + kChunk<T> <= a.c; first += kChunk<T>)
    transform_input_chunk(pixels, first, FullChunk<T>{}, buffer, out, point_stride);
  if (first < a.c) transform_input_chunk(pixels, first, a.c - first, buffer, out, point_stride);
}

// The first channel of each of the tile's 16 output pixels (row-major), nullptr for those outside the
// image. Returns how many of the tile's rows lie inside it.
template <typename T>
int locate_output_pixels(const WinogradOutputArgs<T>& a, TileIndex at, T* pixels[kOut * kOut]) {
  const int rows = int(std::min<int64_t>(kOut, a.out_h - at.row * kOut));
  const int cols = int(std::min<int64_t>(kOut, a.out_w - at.col * kOut));
  for (int r = 0; r < kOut; ++r) {
    const int64_t row_start = (at.sample * a.out_h + at.row * kOut + r) * a.out_w + at.col * kOut;
    for (int q = 0; q < kOut; ++q)
      pixels[r * kOut + q] = r < rows && q < cols ? a.y + (row_start + q) * a.k : nullptr;
  }
  return rows;
}

// A^T m A + bias for channels [first, first + len) of one tile (m: the tile's point 0). Pass 1 transforms
// the 6 columns of m into `buffer` (row r, column b at buffer + (6r + b) * chunk), pass 2 the first `rows`
// rows of that into y; pixels past the right edge are written to `discard`.
template <typename T, typename Len>
LMT_INLINE void transform_output_chunk(const T* m, int64_t point_stride, const T* bias,
                                       T* const pixels[kOut * kOut], int rows, int64_t first, Len len,
                                       T* buffer, T* discard) {
  constexpr int64_t chunk = kChunk<T>;
  for (int b = 0; b < kSpan; ++b) {
    const T* column[kSpan];
    T* transformed[kOut];
    for (int r = 0; r < kSpan; ++r) column[r] = m + (r * kSpan + b) * point_stride + first;
    for (int r = 0; r < kOut; ++r) transformed[r] = buffer + (r * kSpan + b) * chunk;
    output_lines<false>(column, static_cast<const T*>(nullptr), transformed, len);
  }
  for (int r = 0; r < rows; ++r) {
    const T* row[kSpan];
    T* y[kOut];
    for (int b = 0; b < kSpan; ++b) row[b] = buffer + (r * kSpan + b) * chunk;
    for (int q = 0; q < kOut; ++q) {
      T* pixel = pixels[r * kOut + q];
      y[q] = pixel == nullptr ? discard : pixel + first;
    }
    if (bias == nullptr) {
      output_lines<false>(row, static_cast<const T*>(nullptr), y, len);
    } else {
      output_lines<true>(row, bias + first, y, len);
    }
  }
}

template <typename T>
LMT_VECTOR_CLONES void transform_output_tile(const WinogradOutputArgs<T>& a, int64_t tile, T* buffer, T* discard) {
  T* pixels[kOut * kOut];
  const int rows = locate_output_pixels(a, tile_index(tile, a.tiles_h, a.tiles_w), pixels);
  const int64_t point_stride = a.point_stride;
  const T* m = a.m + tile * a.k;
  int64_t first = 0;
  for (; first + kChunk<T> <= a.k; first += kChunk<T>)
    transform_output_chunk(m, point_stride, a.bias, pixels, rows, first, FullChunk<T>{}, buffer, discard);
  if (first < a.k)
    transform_output_chunk(m, point_stride, a.bias, pixels, rows, first, a.k - first, buffer, discard);
}

}  // namespace

template <typename T>
void winograd_input_transform(const WinogradInputArgs<T>& args) {
  const int64_t tiles = args.n * args.tiles_h * args.tiles_w;
#pragma omp parallel if (detail::worth_parallel(tiles * kPoints * args.c))
  {
    alignas(64) T buffer[kPoints * kChunk<T>];
#pragma omp for schedule(static)
    for (int64_t tile = 0; tile < tiles; ++tile) transform_input_tile(args, tile, buffer);
  }
}

template <typename T>
void winograd_output_transform(const WinogradOutputArgs<T>& args) {
  const int64_t tiles = args.n * args.tiles_h * args.tiles_w;
#pragma omp parallel if (detail::worth_parallel(tiles * kPoints * args.k))
  {
    alignas(64) T buffer[kPoints * kChunk<T>];
    alignas(64) T discard[kChunk<T>];
#pragma omp for schedule(static)
    for (int64_t tile = 0; tile < tiles; ++tile) transform_output_tile(args, tile, buffer, discard);
  }
}

template void winograd_input_transform<float>(const WinogradInputArgs<float>&);
template void winograd_input_transform<double>(const WinogradInputArgs<double>&);
template void winograd_output_transform<float>(const WinogradOutputArgs<float>&);
template void winograd_output_transform<double>(const WinogradOutputArgs<double>&);

}  // namespace cpu
}  // namespace lmt
