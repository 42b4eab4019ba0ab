// Tile transforms of the Winograd F(4x4, 3x3) convolution (lmt_fast/runtime/winograd.py), on the CPU.
// Torch-free, like the other kernels in csrc/cpu.
//
// A 3x3 stride-1 "valid" conv is split into 4x4 output tiles; tile (i, j) reads the 6x6 input patch at
// rows 4i..4i+5 and columns 4j..4j+5. The conv is then
//     v = B^T d B          per input tile d and input channel       (winograd_input_transform)
//     m = sum_c v u        36 GEMMs (tiles x C_in) by (C_in x C_out), done by the caller (torch.bmm)
//     y = A^T m A + bias   per tile and output channel              (winograd_output_transform)
// Tiles are numbered t = (sample * tiles_h + i) * tiles_w + j; the 36 transformed points
// p = 6 * row + column. v and m are point-major, (36, tiles, channels), so that each point's GEMM reads
// one contiguous block; the planes may be further apart than tiles * channels (see point_stride).
#pragma once

#include <cstdint>

namespace lmt {
namespace cpu {

template <typename T>
struct WinogradInputArgs {
  const T* x;                             // NHWC, channel stride 1
  int64_t n, h, w, c;                     // x's sizes
  int64_t stride_n, stride_h, stride_w;   // x's strides, in elements (any layout with channels innermost)
  int64_t pad;                            // reflect padding of x on all four sides, 0 <= pad < min(h, w)
  int64_t tiles_h, tiles_w;               // tiles per sample; patches past the padded image read zeros
  T* v;                                   // (36, n * tiles_h * tiles_w, c): contiguous but for the
  int64_t point_stride;                   // elements from one point's (tiles, c) plane to the next
};

// v = B^T d B for every tile and channel, d read from x as if it were reflect-padded by `pad`
// (F.pad(x, (pad,) * 4, mode="reflect")) and then extended with zeros to whole tiles.
template <typename T>
void winograd_input_transform(const WinogradInputArgs<T>& args);

template <typename T>
struct WinogradOutputArgs {
  const T* m;                    // (36, n * tiles_h * tiles_w, k): contiguous but for the
  int64_t point_stride;          // elements from one point's (tiles, k) plane to the next
  const T* bias;                 // (k), or nullptr for none
  int64_t n, k;                  // samples, output channels
  int64_t out_h, out_w;          // output size; the tiles may cover more, that part is not written
  int64_t tiles_h, tiles_w;
  T* y;                          // (n, out_h, out_w, k), contiguous (NHWC)
};

// y = A^T m A + bias for every tile and channel; only the pixels inside out_h x out_w are written.
template <typename T>
void winograd_output_transform(const WinogradOutputArgs<T>& args);

}  // namespace cpu
}  // namespace lmt
